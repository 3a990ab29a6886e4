package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/wire"
)

// TestServerKeyRollover: a device pins the server's key; the key is rotated
// (the server restarted with both keys); the device is answered with the old
// key, learns the new one over its authenticated session, and keeps working
// after the old key is retired. No reading is lost or stored twice.
func TestServerKeyRollover(t *testing.T) {
	dir, stream := t.TempDir(), uniqueStream()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpAddr := pc.LocalAddr().String()
	pc.Close()
	start := func() (*Server, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		srv, err := Open(ctx, Config{DataDir: dir, Listen: udpAddr, RelayListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Stream: stream})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Run(ctx) }()
		return srv, func() { cancel(); <-done }
	}
	ctx := context.Background()
	srv, stop := start()
	if err := srv.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	oldPub := srv.PublicKey()
	key, _ := wire.GenerateKey(nil)
	if _, err := srv.AddDevice(ctx, "p", key.Public(), ""); err != nil {
		t.Fatal(err)
	}
	tr, err := device.DialUDP(udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.New(device.Options{Key: key, ServerKey: oldPub, Transport: tr, Dir: t.TempDir(), NoSync: true,
		RetransmitAfter: 200 * time.Millisecond, HandshakeTimeout: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithCancel(ctx)
	ddone := make(chan struct{})
	go func() { defer close(ddone); _ = d.Run(dctx) }()
	defer func() { dcancel(); <-ddone; tr.Close() }()
	n := 0
	record := func(k int) {
		for range k {
			if _, err := d.Record(wire.Reading{Kind: wire.KindHumidity, Value: 40}); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	record(20)
	eventually(t, 20*time.Second, "readings acknowledged under the old key", func() bool { return d.Pending() == 0 })
	stop()

	newPub, err := RotateServerKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if newPub == oldPub {
		t.Fatal("rotation kept the key")
	}
	srv, stop = start()
	if srv.PublicKey() != newPub {
		t.Fatal("the restarted server does not use the new key")
	}
	record(20)
	eventually(t, 30*time.Second, "the device learned the new key", func() bool {
		return d.Stats().ServerKeyUpdates.Load() == 1 && d.Pending() == 0
	})
	stop()

	if err := FinishServerKeyRotation(dir); err != nil {
		t.Fatal(err)
	}
	srv, stop = start()
	defer stop()
	record(20)
	eventually(t, 30*time.Second, "readings acknowledged under the new key alone", func() bool { return d.Pending() == 0 })
	rs := allReadings(t, srv.Store())
	seen := map[uint64]bool{}
	for _, r := range rs {
		if seen[r.Seq] {
			t.Fatalf("seq %d stored twice", r.Seq)
		}
		seen[r.Seq] = true
	}
	if len(seen) != n {
		t.Fatalf("%d readings stored, want %d", len(seen), n)
	}
	// A device that never learned the new key is refused now.
	stale, _ := wire.NewInitiator(key, oldPub)
	msg, _, _ := stale.AppendInitiation(nil, wire.InitiationParams{SenderIndex: 9, Timestamp: uint64(time.Now().Add(time.Hour).UnixNano())})
	before := srv.Ingest().Stats().HandshakeFailures.Load()
	c, err := device.DialUDP(udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Send(ctx, msg)
	eventually(t, 5*time.Second, "the retired key refused", func() bool { return srv.Ingest().Stats().HandshakeFailures.Load() > before })
}
