//go:build !unix

package loadgen_test

func contextSwitches() int64 { return 0 }
