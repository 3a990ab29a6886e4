package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/wire"
)

// TestDeviceKeyRotation: a device rolls to a new key mid-stream, announced
// on its current session; every reading is stored exactly once, the store
// holds the new key, and the old key no longer gets a session.
func TestDeviceKeyRotation(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	oldKey, _ := wire.GenerateKey(nil)
	id, err := srv.AddDevice(ctx, "p", oldKey.Public(), "")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := device.DialUDP(srv.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	var rotated atomic.Value
	dir := t.TempDir()
	d, err := device.New(device.Options{Key: oldKey, ServerKey: srv.PublicKey(), Transport: tr, Dir: dir, NoSync: true,
		RetransmitAfter: 200 * time.Millisecond, HandshakeTimeout: 100 * time.Millisecond,
		OnKeyRotated: func(k device.PrivateKey) { rotated.Store(k) }})
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(dctx) }()
	t.Cleanup(func() { cancel(); <-done; tr.Close() })

	record := func(n int) {
		for range n {
			if _, err := d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 20}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	record(100)
	if err := d.RotateKey(); err != nil {
		t.Fatal(err)
	}
	record(100)
	eventually(t, 20*time.Second, "the rotation confirmed", func() bool {
		st := srv.Ingest().Stats()
		t.Logf("rotations %d refused %d, device rotations %d", st.Rotations.Load(), st.RotationsRefused.Load(), d.Stats().Rotations.Load())
		return rotated.Load() != nil
	})
	record(100)
	eventually(t, 20*time.Second, "all readings acknowledged", func() bool { return d.Pending() == 0 })
	newKey := rotated.Load().(device.PrivateKey)
	dev, err := srv.Store().Device(ctx, id)
	if err != nil || dev.PublicKey != newKey.Public() {
		t.Fatalf("the store does not hold the new key: %v", err)
	}
	rs := allReadings(t, srv.Store())
	seen := map[uint64]bool{}
	for _, r := range rs {
		if seen[r.Seq] {
			t.Fatalf("seq %d stored twice", r.Seq)
		}
		seen[r.Seq] = true
	}
	if len(seen) != 300 {
		t.Fatalf("%d readings stored, want 300", len(seen))
	}
	// The old key is refused now.
	eventually(t, 10*time.Second, "the old key dropped", func() bool {
		ss, err := srv.Ingest().Connected(oldKey.Public()), error(nil)
		return err == nil && !ss && srv.Ingest().Connected(newKey.Public())
	})
	in, _ := wire.NewInitiator(oldKey, srv.PublicKey())
	msg, _, _ := in.AppendInitiation(nil, wire.InitiationParams{SenderIndex: 1, Timestamp: uint64(time.Now().Add(time.Hour).UnixNano())})
	before := srv.Ingest().Stats().HandshakeFailures.Load()
	c, err := device.DialUDP(srv.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Send(ctx, msg)
	eventually(t, 5*time.Second, "the old key's handshake refused", func() bool {
		return srv.Ingest().Stats().HandshakeFailures.Load() > before
	})
}
