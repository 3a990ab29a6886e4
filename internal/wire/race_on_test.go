//go:build race

package wire

// raceEnabled: the race detector changes allocations, so allocation
// counts are not judged under it.
const raceEnabled = true
