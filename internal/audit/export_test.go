package audit

// SetCheckpointRound changes how many checkpoints one round of
// checkpointAll stores, and returns a function that restores it.
func SetCheckpointRound(n int) (restore func()) {
	old := checkpointRound
	checkpointRound = n
	return func() { checkpointRound = old }
}
