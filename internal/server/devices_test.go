package server

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// openServer opens a server in dir without running it: no housekeeping
// reloads the registry behind the test's back.
func openServer(t *testing.T, dir string) *Server {
	t.Helper()
	srv, err := Open(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Stream: uniqueStream()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.close)
	return srv
}

// countingStore counts the devices the registry reads from the store.
type countingStore struct {
	store.Store
	read atomic.Int64
}

func (c *countingStore) DevicesChangedSince(ctx context.Context, since int64) ([]store.Device, int64, error) {
	ds, next, err := c.Store.DevicesChangedSince(ctx, since)
	c.read.Add(int64(len(ds)))
	return ds, next, err
}

func (c *countingStore) Device(ctx context.Context, id int64) (store.Device, error) {
	c.read.Add(1)
	return c.Store.Device(ctx, id)
}

// registered tells whether ingest answers key's handshakes.
func registered(t *testing.T, srv *Server, key wire.PublicKey) bool {
	t.Helper()
	err := srv.ingest.Send(t.Context(), key, &wire.Message{Command: &wire.Command{}})
	switch {
	case errors.Is(err, ingest.ErrNoSession):
		return true
	case errors.Is(err, ingest.ErrUnknownDevice):
		return false
	}
	t.Fatalf("Send to a device without a session: %v", err)
	return false
}

func testKeys(t *testing.T, n int) []wire.PublicKey {
	t.Helper()
	keys := make([]wire.PublicKey, n)
	for i := range keys {
		k, err := wire.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k.Public()
		k.Zero()
	}
	return keys
}

// TestReloadReadsOnlyChanges: the registry follows devices written by
// another process (the admin command, a bulk insert on a connection of its
// own) and reads from the store only the devices that changed, not the
// whole fleet every two seconds.
func TestReloadReadsOnlyChanges(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	srv := openServer(t, dir)
	cs := &countingStore{Store: srv.store}
	srv.store = cs
	admin, err := OpenAdmin(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}

	// Registered in bulk, past every Store method, as the bench does.
	const fleet = 300
	keys := testKeys(t, fleet)
	db, err := sql.Open("sqlite", filepath.Join(dir, "signet.db")+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, fleet)
	for i, k := range keys {
		if err := tx.QueryRowContext(ctx, `INSERT INTO devices (project_id, public_key, name, enabled, created)
			VALUES ('p', ?, '', 1, 0) RETURNING id`, k[:]).Scan(&ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	reload := func(want int64, what string) {
		t.Helper()
		cs.read.Store(0)
		if err := srv.loadDevices(ctx); err != nil {
			t.Fatal(err)
		}
		if got := cs.read.Load(); got != want {
			t.Errorf("%s: the reload read %d devices, want %d", what, got, want)
		}
	}
	reload(fleet, "after the bulk registration")
	for _, k := range keys {
		if !registered(t, srv, k) {
			t.Fatal("a device registered in bulk is not answered")
		}
	}
	reload(0, "with nothing changed")

	// Status updates, as the server writes every two seconds, are not
	// changes.
	for _, id := range ids[:50] {
		if err := admin.store.SetDeviceStatus(ctx, id, store.DeviceStatus{LastSeen: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	reload(0, "after status updates")

	// Disabled by the admin command: dropped; enabled again: answered.
	if err := admin.SetDeviceEnabled(ctx, ids[7], false); err != nil {
		t.Fatal(err)
	}
	reload(1, "after one device was disabled")
	if registered(t, srv, keys[7]) {
		t.Fatal("the device disabled by the admin command is still answered")
	}
	if !registered(t, srv, keys[8]) {
		t.Fatal("a device still enabled was dropped")
	}
	if err := admin.SetDeviceEnabled(ctx, ids[7], true); err != nil {
		t.Fatal(err)
	}
	nk := testKeys(t, 1)[0]
	if _, err := admin.AddDevice(ctx, "p", nk, "late"); err != nil {
		t.Fatal(err)
	}
	reload(2, "after one device was enabled and one added")
	if !registered(t, srv, keys[7]) || !registered(t, srv, nk) {
		t.Fatal("a device enabled or added by the admin command is not answered")
	}
	reload(0, "with nothing changed")
}

// TestLateRevocationBroadcast: a revocation broadcast that arrives after
// the reload that read the device enabled again (another node disabled
// and re-enabled it) drops the device at once, and the next reload
// registers it again as the store has it.
func TestLateRevocationBroadcast(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	srv := openServer(t, dir)
	if err := srv.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	key := testKeys(t, 1)[0]
	id, err := srv.AddDevice(ctx, "p", key, "")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := OpenAdmin(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, enabled := range []bool{false, true} {
		if err := admin.SetDeviceEnabled(ctx, id, enabled); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.loadDevices(ctx); err != nil {
		t.Fatal(err)
	}
	srv.revoked(key[:]) // the broadcast of the disable, late
	if registered(t, srv, key) {
		t.Fatal("a revoked device is still answered")
	}
	if err := srv.loadDevices(ctx); err != nil {
		t.Fatal(err)
	}
	if !registered(t, srv, key) {
		t.Fatal("the device enabled again in the store stays dropped after a late revocation broadcast")
	}
}

// TestAdminDisableEndsSession: a device disabled by the admin command in
// another process loses its session through the running server's
// housekeeping, and gets one again once enabled.
func TestAdminDisableEndsSession(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	srv := startServer(t, dir)
	tr, err := device.DialUDP(srv.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	d, id := startTestDevice(t, srv, tr, func(o *device.Options) {
		o.RetransmitAfter, o.HandshakeTimeout = 200*time.Millisecond, 100*time.Millisecond
	})
	record := func() {
		t.Helper()
		if _, err := d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 20}); err != nil {
			t.Fatal(err)
		}
	}
	record()
	waitFor(t, 20*time.Second, "a session and the reading acknowledged", func() bool {
		return srv.Ingest().Connected(d.PublicKey()) && d.Pending() == 0
	})

	admin, err := OpenAdmin(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.SetDeviceEnabled(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the disabled device's session to end", func() bool { return !srv.Ingest().Connected(d.PublicKey()) })
	if err := admin.SetDeviceEnabled(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	record()
	waitFor(t, 20*time.Second, "a new session and the reading acknowledged", func() bool {
		return srv.Ingest().Connected(d.PublicKey()) && d.Pending() == 0
	})
}
