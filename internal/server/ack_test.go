package server

import (
	"testing"
	"time"

	"github.com/signet-io/signet/device"
)

// TestServerAckInterval: Config.AckInterval reaches ingest. A device's
// first reading is acknowledged once stored; its second, stored within the
// interval of that acknowledgement, waits for the interval.
func TestServerAckInterval(t *testing.T) {
	const interval = 2 * time.Second
	srv := startServer(t, t.TempDir(), func(c *Config) { c.AckInterval = interval })
	// The device resends only after the test: every ACK it gets is the
	// server's answer to a stored reading, not to a repeat.
	d := deviceBehind(t, srv, srv.UDPAddr(), func(o *device.Options) { o.RetransmitAfter = time.Minute })
	// acked waits (polling closely: the gap between two ACKs is the
	// measurement) until the device holds no unacknowledged reading.
	acked := func(what string) time.Time {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for d.Pending() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s to be acknowledged", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Now()
	}
	recordSome(t, d, 1)
	first := acked("the first reading")
	recordSome(t, d, 1)
	if gap := acked("the second reading").Sub(first); gap < interval/2 {
		t.Errorf("the second acknowledgement came %v after the first, within the interval (%v)", gap, interval)
	}
}
