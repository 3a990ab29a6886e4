package ingest_test

import (
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/ingest"
)

// ackDevice starts a device registered under an ID (Settle finds devices by
// ID) that resends only after a long wait, so every acknowledgement it gets
// comes from Settle.
func ackDevice(t *testing.T, e *env) *device.Device {
	t.Helper()
	d := startDevice(t, e, udp(t, e.udp), false, func(o *device.Options) { o.RetransmitAfter = 10 * time.Second })
	if err := e.srv.AddDevice(d.PublicKey(), ingest.DeviceInfo{ID: 7}); err != nil {
		t.Fatal(err)
	}
	return d
}

// acks returns the server's count of acknowledgements sent once it is at
// least want. The server counts an acknowledgement after sending it, so the
// device may have taken it (and the test seen its outbox empty) before the
// count moves.
func acks(t *testing.T, e *env, want uint64) uint64 {
	t.Helper()
	eventually(t, 5*time.Second, "the acknowledgement counted", func() bool { return e.srv.Stats().Acks.Load() >= want })
	return e.srv.Stats().Acks.Load()
}

// TestAckPacing: a device's first stored reading is acknowledged at once;
// readings stored within AckInterval of that acknowledgement share one
// acknowledgement, sent when the interval is up.
func TestAckPacing(t *testing.T) {
	const interval = time.Second
	e := startServer(t, ingest.Config{Async: true, AckInterval: interval})
	d := ackDevice(t, e)
	record(t, d, 1)
	eventually(t, 5*time.Second, "the first reading acknowledged", func() bool { return d.Pending() == 0 })
	acked := time.Now() // no earlier than the acknowledgement
	if n := acks(t, e, 1); n != 1 {
		t.Fatalf("%d acknowledgements for the first reading, want 1", n)
	}
	for range 3 {
		record(t, d, 1)
		time.Sleep(20 * time.Millisecond)
	}
	eventually(t, 5*time.Second, "the three readings stored", func() bool {
		missing, _ := e.store.exactlyOnce(d.PublicKey(), 4)
		return missing == 0
	})
	eventually(t, 5*time.Second, "the three readings acknowledged", func() bool { return d.Pending() == 0 })
	// The acknowledgement came no sooner than the interval after the
	// first (less a tick, and less the poll that saw the first).
	if waited := time.Since(acked); waited < interval/2 {
		t.Errorf("the second acknowledgement came %v after the first, before the interval (%v)", waited, interval)
	}
	if n := acks(t, e, 2); n != 2 {
		t.Errorf("%d acknowledgements for 4 readings, want 2", n)
	}
	if missing, dup := e.store.exactlyOnce(d.PublicKey(), 4); missing+dup != 0 {
		t.Errorf("%d missing, %d duplicated", missing, dup)
	}
}

// TestAckAfterReadings: AckAfter readings stored since the last
// acknowledgement are acknowledged at once, whatever the interval.
func TestAckAfterReadings(t *testing.T) {
	e := startServer(t, ingest.Config{Async: true, AckInterval: time.Hour})
	d := ackDevice(t, e)
	record(t, d, 1)
	eventually(t, 5*time.Second, "the first reading acknowledged", func() bool { return d.Pending() == 0 })
	record(t, d, ingest.AckAfter)
	eventually(t, 5*time.Second, "AckAfter readings acknowledged", func() bool { return d.Pending() == 0 })
	if missing, dup := e.store.exactlyOnce(d.PublicKey(), 1+ingest.AckAfter); missing+dup != 0 {
		t.Errorf("%d missing, %d duplicated", missing, dup)
	}
}

// TestAckIntervalNegative: a negative AckInterval acknowledges every
// stored reading at once.
func TestAckIntervalNegative(t *testing.T) {
	e := startServer(t, ingest.Config{Async: true, AckInterval: -1})
	d := ackDevice(t, e)
	for i := range 3 {
		record(t, d, 1)
		eventually(t, 5*time.Second, "the reading acknowledged", func() bool { return d.Pending() == 0 })
		if n := acks(t, e, uint64(i+1)); n != uint64(i+1) {
			t.Fatalf("%d acknowledgements after %d readings, want one each", n, i+1)
		}
	}
}
