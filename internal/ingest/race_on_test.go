//go:build race

package ingest_test

// raceEnabled: the race detector changes what allocations cost, so memory
// budgets are not judged under it.
const raceEnabled = true
