package wire

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// DefaultRekeyAfter is T, the nominal session lifetime (DESIGN §3).
const DefaultRekeyAfter = 2 * time.Hour

// Timers is the rekey policy both ends share. The zero value is the
// default.
type Timers struct {
	// RekeyAfter is T: each session ends after a random time in [T/2, T].
	// Zero means DefaultRekeyAfter.
	RekeyAfter time.Duration
	// Overlap is how long the previous session stays valid after a new
	// one is in use, so datagrams in flight during a rekey are not lost.
	// Zero means min(T/8, 30 s).
	Overlap time.Duration
}

// T returns the effective nominal lifetime.
func (t Timers) T() time.Duration {
	if t.RekeyAfter <= 0 {
		return DefaultRekeyAfter
	}
	return t.RekeyAfter
}

// Lifetime draws a session's lifetime, uniform in [T/2, T], from crypto/rand,
// so that no observer can predict when a device's keys change.
func (t Timers) Lifetime() time.Duration {
	half := t.T() / 2
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return half + time.Duration(binary.LittleEndian.Uint64(b[:])%uint64(half+1))
}

// RejectAfter is the age past which a receiver refuses a session's
// datagrams whatever the sender thinks: 1.5 T.
func (t Timers) RejectAfter() time.Duration { return t.T() + t.T()/2 }

// OverlapFor returns the effective overlap.
func (t Timers) OverlapFor() time.Duration {
	if t.Overlap > 0 {
		return t.Overlap
	}
	return min(t.T()/8, 30*time.Second)
}
