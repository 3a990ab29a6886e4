package pki

import "time"

// SetClock makes ca see time through now, for tests of expiry.
func SetClock(ca *CA, now func() time.Time) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.now = now
}
