//go:build race

package bench

// raceEnabled: the race detector slows the server and the load generators
// (this test binary) several times; the smoke test shrinks further.
const raceEnabled = true
