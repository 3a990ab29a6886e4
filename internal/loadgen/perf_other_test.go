//go:build !unix

package loadgen

func contextSwitches() int64 { return 0 }
