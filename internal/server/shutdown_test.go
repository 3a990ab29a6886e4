package server

import (
	"context"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
)

// TestShutdownKeepsHandledReadings: readings that ingest has handled but
// the pipeline has not yet published when the server stops are not lost.
// Transmit-only devices (sending each datagram once here) cannot resend, so
// only an orderly shutdown — intake first, then the pipeline, publishing
// what it holds to the bus — keeps them. The batcher is slowed down so the
// readings are certainly still in it at the stop.
func TestShutdownKeepsHandledReadings(t *testing.T) {
	ctx := context.Background()
	cfg := Config{DataDir: t.TempDir(), Listen: freeUDPAddr(t), RelayListen: freeTCPAddr(t), HTTPListen: freeTCPAddr(t),
		Stream: uniqueStream()}
	sctx, cancel := context.WithCancel(ctx)
	srv, err := Open(sctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv.pipe.flushEvery = time.Hour // held in the batcher until the stop
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(sctx) }()
	stop := func() { cancel(); <-done }
	defer stop()
	if err := srv.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	const devices, each = 3, 5
	want := map[int64]int{}
	var ds []*device.Device
	for range devices {
		tr, err := device.DialUDP(srv.UDPAddr())
		if err != nil {
			t.Fatal(err)
		}
		d, id := startTestDevice(t, srv, tr, func(o *device.Options) { o.TransmitOnly, o.Repeat = true, 1 })
		ds = append(ds, d)
		want[id] = each
	}
	for _, d := range ds {
		recordReadings(t, d, each)
	}
	st := srv.Ingest().Stats()
	eventually(t, 30*time.Second, "every reading sent", func() bool {
		for _, d := range ds {
			if d.Pending() != 0 {
				return false
			}
		}
		return true
	})
	// Sent is not handled: wait until ingest has handed every reading to
	// the pipeline (a datagram waiting in the socket when the server
	// stops is lost for a transmit-only device, which is not what this
	// test is about).
	eventually(t, 30*time.Second, "every reading handled by ingest", func() bool {
		return st.Delivered.Load() >= devices*each
	})
	if n := len(allReadings(t, srv.Store())); n != 0 {
		t.Fatalf("%d readings stored before the stop; the batcher should hold them", n)
	}
	stop()

	srv, _ = runServerAt(t, cfg)
	eventually(t, 30*time.Second, "the held readings stored after the restart", func() bool {
		return len(allReadings(t, srv.Store())) >= devices*each
	})
	checkStoredOnce(t, allReadings(t, srv.Store()), want)
}
