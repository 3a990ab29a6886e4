package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/sim"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

func uniqueStream() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "TEST_" + hex.EncodeToString(b[:])
}

// startServer runs a server on free loopback ports in dir, its Config
// changed by opts.
func startServer(t *testing.T, dir string, opts ...func(*Config)) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Stream: uniqueStream()}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := srv.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	return srv
}

// startRelay registers a relay on srv and runs it in-process.
func startRelay(t *testing.T, srv *Server, id string) *relay.Relay {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := filepath.Join(t.TempDir(), id)
	files, err := srv.AddRelay(ctx, id, dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, pool, err := relay.LoadTLS(files.Cert, files.Key, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(relay.Config{Listen: "127.0.0.1:0", Server: srv.RelayAddr(), Certificate: cert, CAs: pool,
		DataDir: filepath.Join(dir, "buffer"), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// allReadings pages through every reading of project p.
func allReadings(t *testing.T, st store.Store) []store.Reading {
	t.Helper()
	var out []store.Reading
	var after int64
	for {
		page, err := st.Readings(context.Background(), store.ReadingQuery{ProjectID: "p", AfterID: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out
		}
		after = page[len(page)-1].ID
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Second)
	}
}

// TestFleetThroughOverlappingRelays: 200 devices, 3 relays with overlapping
// coverage (each device heard by two), 10,000 readings: every reading is
// stored exactly once and lists every relay that heard it.
func TestFleetThroughOverlappingRelays(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet test; skipped with -short")
	}
	srv := startServer(t, t.TempDir())
	var relayAddrs, relayIDs []string
	for i := range 3 {
		r := startRelay(t, srv, fmt.Sprintf("r%d", i))
		relayAddrs = append(relayAddrs, r.Addr().String())
		relayIDs = append(relayIDs, r.ID())
	}
	const devices, perDevice = 200, 50
	var mu sync.Mutex
	heardBy := map[int64][]string{} // device id → the relays in its range
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fleet, wait, err := sim.StartFleet(ctx, sim.FleetConfig{
		Devices: devices, Dir: t.TempDir(), ServerKey: srv.PublicKey(), Relays: relayAddrs, InRange: 2,
		Rate: 25, Count: perDevice,
		Register: func(ctx context.Context, i int, pub wire.PublicKey, kind wire.Kind) error {
			id, err := srv.AddDevice(ctx, "p", pub, "")
			mu.Lock()
			heardBy[id] = []string{relayIDs[i%3], relayIDs[(i+1)%3]}
			mu.Unlock()
			return err
		},
		Options: func(o *device.Options) { o.RetransmitAfter = time.Second },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wait() }()
	defer func() {
		st := srv.Ingest().Stats()
		t.Logf("ingest: handshakes %d epochs %d dup %d replays %d unknown %d decrypt %d expired %d ratelimited %d deliverfail %d hsfail %d hsreplay %d",
			st.Handshakes.Load(), st.Epochs.Load(), st.Duplicates.Load(), st.Replays.Load(), st.UnknownSession.Load(), st.DecryptFailures.Load(),
			st.Expired.Load(), st.RateLimited.Load(), st.DeliverFailures.Load(), st.HandshakeFailures.Load(), st.HandshakeReplays.Load())
		if t.Failed() {
			per := map[int64]int{}
			for _, r := range allReadings(t, srv.Store()) {
				per[r.DeviceID]++
			}
			for id, n := range per {
				if n != perDevice {
					t.Logf("device %d: %d readings", id, n)
				}
			}
		}
	}()
	eventually(t, 30*time.Second, "10,000 readings stored", func() bool {
		n := len(allReadings(t, srv.Store()))
		t.Logf("%d stored, %d pending", n, fleet.Pending())
		return n >= devices*perDevice && fleet.Pending() == 0
	})
	// Late hearings are written with the batches after the first copy.
	time.Sleep(500 * time.Millisecond)
	rs := allReadings(t, srv.Store())
	if len(rs) != devices*perDevice {
		t.Fatalf("%d readings stored, want %d", len(rs), devices*perDevice)
	}
	seen := map[[2]uint64]bool{}
	incomplete := 0
	for _, r := range rs {
		k := [2]uint64{uint64(r.DeviceID), r.Seq}
		if seen[k] || r.Seq < 1 || r.Seq > perDevice {
			t.Fatalf("device %d seq %d stored twice or out of range", r.DeviceID, r.Seq)
		}
		seen[k] = true
		got := map[string]bool{}
		for _, h := range r.Heard {
			got[h.RelayID] = true
		}
		for _, want := range heardBy[r.DeviceID] {
			if !got[want] {
				if incomplete < 5 {
					t.Logf("device %d (%v) seq %d heard only by %v", r.DeviceID, r.Kind, r.Seq, r.Heard)
				}
				incomplete++
				break
			}
		}
		if len(got) > 2 {
			t.Fatalf("reading %d heard by %v, but only two relays are in range", r.ID, r.Heard)
		}
	}
	// A copy that reaches the server after its datagram left the recent
	// cache cannot be attributed; with this load there must be none.
	if incomplete > 0 {
		t.Fatalf("%d of %d readings do not list both relays that heard them", incomplete, len(rs))
	}
	st := srv.Ingest().Stats()
	t.Logf("handshakes %d, epochs %d, duplicates %d, replays %d, acks %d", st.Handshakes.Load(), st.Epochs.Load(), st.Duplicates.Load(), st.Replays.Load(), st.Acks.Load())
}
