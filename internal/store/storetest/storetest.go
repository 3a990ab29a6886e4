// Package storetest is the contract that every store.Store backend passes:
// one suite, run by each backend's own tests against a real database, so
// that SQLite and PostgreSQL behave the same to the rest of Signet.
//
// Where store.go leaves a detail open, the suite pins down the behaviour
// the rest of Signet relies on:
//   - times are kept to the millisecond (the suite's times are whole
//     milliseconds) and read back as the same instants;
//   - lists (projects, devices, relays) come in ID order;
//   - Devices of an unknown project, and Readings of one, are empty, not
//     errors; creating a device in an unknown project is ErrNotFound;
//   - a reading whose device is unknown or in another project fails its
//     whole batch with ErrInvalid, storing nothing;
//   - LastReading is the device's last stored reading (highest ID), not the
//     one with the latest clock;
//   - a reader following the ID cursor while batches are appended sees
//     every reading exactly once: IDs become visible in ID order.
package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// Run runs the contract. open must return a new, empty store on every call;
// Run closes it when the subtest that asked for it ends. Subtests run in
// parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []storeTest{
		{"Projects", testProjects},
		{"Devices", testDevices},
		{"DeviceEnabled", testDeviceEnabled},
		{"DeviceStatus", testDeviceStatus},
		{"Relays", testRelays},
		{"Tokens", testTokens},
		{"ClaimTokens", testClaimTokens},
		{"DeviceKey", testDeviceKey},
		{"DeviceChanges", testDeviceChanges},
		{"SessionState", testSessionState},
		{"AppendReadings", testAppendReadings},
		{"AppendAtomic", testAppendAtomic},
		{"ReadingRoundTrip", testReadingRoundTrip},
		{"ReadingsFilter", testReadingsFilter},
		{"ReadingsLimit", testReadingsLimit},
		{"ReadingsPagination", testReadingsPagination},
		{"LastReading", testLastReading},
		{"Concurrent", testConcurrent},
	}
	runAll(t, open, tests)
}

// storeTest is one test of a contract suite.
type storeTest struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// runAll runs tests in parallel, each on a new store from open, closed
// when the test ends.
func runAll(t *testing.T, open func(t *testing.T) store.Store, tests []storeTest) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// t0 is the suite's epoch: whole milliseconds, UTC.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func testProjects(t *testing.T, s store.Store) {
	ctx := t.Context()
	b := store.Project{ID: "bravo", Name: "Brewery", Created: at(1)}
	a := store.Project{ID: "alpha", Name: "Åbo bar", Created: at(2)}
	for _, p := range []store.Project{b, a} {
		if err := s.CreateProject(ctx, p); err != nil {
			t.Fatalf("CreateProject(%q): %v", p.ID, err)
		}
	}
	err := s.CreateProject(ctx, store.Project{ID: "alpha", Name: "again", Created: at(3)})
	wantErr(t, err, store.ErrConflict, "CreateProject of a taken id")
	wantErr(t, s.CreateProject(ctx, store.Project{Name: "no id"}), store.ErrInvalid, "CreateProject without id")

	got, err := s.Project(ctx, "alpha")
	if err != nil {
		t.Fatalf("Project: %v", err)
	}
	same(t, "Project(alpha)", got, a)
	_, err = s.Project(ctx, "charlie")
	wantErr(t, err, store.ErrNotFound, "Project of an unknown id")

	ps, err := s.Projects(ctx)
	if err != nil {
		t.Fatalf("Projects: %v", err)
	}
	same(t, "Projects", ps, []store.Project{a, b})
}

func testDevices(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p1")
	createProject(t, s, "p2")
	d1 := store.Device{ProjectID: "p1", PublicKey: key(1), Name: "keg 1", Enabled: true, Created: at(10)}
	d2 := store.Device{ProjectID: "p2", PublicKey: key(2), Name: "keg 2", Enabled: false, Created: at(20)}
	d3 := store.Device{ProjectID: "p1", PublicKey: key(3), Name: "", Enabled: true, Created: at(30)}
	for _, d := range []*store.Device{&d1, &d2, &d3} {
		d.ID = 999 // ignored
		id, err := s.CreateDevice(ctx, *d)
		if err != nil {
			t.Fatalf("CreateDevice(%q): %v", d.Name, err)
		}
		if id <= 0 {
			t.Fatalf("CreateDevice(%q) = id %d, want > 0", d.Name, id)
		}
		d.ID = id
	}
	if d1.ID == d2.ID || d2.ID == d3.ID || d1.ID == d3.ID {
		t.Fatalf("device ids not distinct: %d %d %d", d1.ID, d2.ID, d3.ID)
	}

	// A key is one device, whichever project it is offered to.
	for _, p := range []string{"p1", "p2"} {
		_, err := s.CreateDevice(ctx, store.Device{ProjectID: p, PublicKey: key(1), Name: "clone"})
		wantErr(t, err, store.ErrConflict, "CreateDevice with a registered key in "+p)
	}
	_, err := s.CreateDevice(ctx, store.Device{ProjectID: "nope", PublicKey: key(4)})
	wantErr(t, err, store.ErrNotFound, "CreateDevice in an unknown project")
	_, err = s.CreateDevice(ctx, store.Device{ProjectID: "p1"})
	wantErr(t, err, store.ErrInvalid, "CreateDevice with a zero key")
	_, err = s.CreateDevice(ctx, store.Device{PublicKey: key(5)})
	wantErr(t, err, store.ErrInvalid, "CreateDevice without project")

	for _, d := range []store.Device{d1, d2, d3} {
		got, err := s.Device(ctx, d.ID)
		if err != nil {
			t.Fatalf("Device(%d): %v", d.ID, err)
		}
		same(t, "Device", got, d)
		got, err = s.DeviceByKey(ctx, d.PublicKey)
		if err != nil {
			t.Fatalf("DeviceByKey(%d): %v", d.ID, err)
		}
		same(t, "DeviceByKey", got, d)
	}
	_, err = s.Device(ctx, d1.ID+d2.ID+d3.ID+100)
	wantErr(t, err, store.ErrNotFound, "Device of an unknown id")
	_, err = s.DeviceByKey(ctx, key(4))
	wantErr(t, err, store.ErrNotFound, "DeviceByKey of an unknown key")

	ds, err := s.Devices(ctx, "p1")
	if err != nil {
		t.Fatalf("Devices(p1): %v", err)
	}
	same(t, "Devices(p1)", ds, []store.Device{d1, d3})
	ds, err = s.Devices(ctx, "nope")
	if err != nil || len(ds) != 0 {
		t.Errorf("Devices(unknown project) = %v, %v; want none, nil", ds, err)
	}
	ds, _, err = s.DevicesChangedSince(ctx, 0)
	if err != nil {
		t.Fatalf("DevicesChangedSince(0): %v", err)
	}
	same(t, "DevicesChangedSince(0)", ds, []store.Device{d1, d2, d3})
}

func testDeviceEnabled(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	d := createDevice(t, s, "p", 1)
	other := createDevice(t, s, "p", 2)
	for _, enabled := range []bool{false, true, false} {
		if err := s.SetDeviceEnabled(ctx, d.ID, enabled); err != nil {
			t.Fatalf("SetDeviceEnabled(%v): %v", enabled, err)
		}
		got := getDevice(t, s, d.ID)
		if got.Enabled != enabled {
			t.Errorf("after SetDeviceEnabled(%v), Enabled = %v", enabled, got.Enabled)
		}
	}
	if got := getDevice(t, s, other.ID); !got.Enabled {
		t.Errorf("another device was disabled too")
	}
	wantErr(t, s.SetDeviceEnabled(ctx, other.ID+100, false), store.ErrNotFound, "SetDeviceEnabled of an unknown device")
}

func testDeviceStatus(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	d := createDevice(t, s, "p", 1)
	other := createDevice(t, s, "p", 2)
	same(t, "status of a new device", d.Status, store.DeviceStatus{})

	st := store.DeviceStatus{
		LastSeen: at(5000),
		Health:   &wire.Health{Battery: 87, Plugged: true, Uptime: 1<<40 + 3, Firmware: "1.4.2-rc1", Dropped: 12},
		Relays: []store.Hearing{ // best signal first, as given
			{RelayID: "cellar", Received: at(4990), RSSI: -61, SNR: 9.75},
			{RelayID: "", Received: at(4995), RSSI: -97, SNR: -3.5},
			{RelayID: "roof", Received: at(4999), RSSI: -118, SNR: -14.25},
		},
	}
	if err := s.SetDeviceStatus(ctx, d.ID, st); err != nil {
		t.Fatalf("SetDeviceStatus: %v", err)
	}
	d.Status = st
	same(t, "Device after SetDeviceStatus", getDevice(t, s, d.ID), d)
	byKey, err := s.DeviceByKey(ctx, d.PublicKey)
	if err != nil {
		t.Fatalf("DeviceByKey: %v", err)
	}
	same(t, "DeviceByKey after SetDeviceStatus", byKey, d)
	all, _, err := s.DevicesChangedSince(ctx, 0)
	if err != nil {
		t.Fatalf("DevicesChangedSince(0): %v", err)
	}
	same(t, "DevicesChangedSince(0) after SetDeviceStatus", all, []store.Device{d, other})
	list, err := s.Devices(ctx, "p")
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	same(t, "Devices after SetDeviceStatus", list, []store.Device{d, other})

	// A later status replaces the whole status, absent parts included.
	st2 := store.DeviceStatus{LastSeen: at(9000), Health: &wire.Health{Battery: 0, Uptime: 5}}
	if err := s.SetDeviceStatus(ctx, d.ID, st2); err != nil {
		t.Fatalf("SetDeviceStatus: %v", err)
	}
	same(t, "status after a second SetDeviceStatus", getDevice(t, s, d.ID).Status, st2)
	if err := s.SetDeviceStatus(ctx, d.ID, store.DeviceStatus{}); err != nil {
		t.Fatalf("SetDeviceStatus(zero): %v", err)
	}
	same(t, "status after SetDeviceStatus(zero)", getDevice(t, s, d.ID).Status, store.DeviceStatus{})

	wantErr(t, s.SetDeviceStatus(ctx, other.ID+100, st), store.ErrNotFound, "SetDeviceStatus of an unknown device")
}

func testRelays(t *testing.T, s store.Store) {
	ctx := t.Context()
	r2 := store.RelayInfo{ID: "relay-2", Name: "roof", Enabled: true, Created: at(2)}
	r1 := store.RelayInfo{ID: "relay-1", Name: "cellar", Enabled: false, Created: at(1)}
	for _, r := range []store.RelayInfo{r2, r1} {
		if err := s.CreateRelay(ctx, r); err != nil {
			t.Fatalf("CreateRelay(%q): %v", r.ID, err)
		}
	}
	wantErr(t, s.CreateRelay(ctx, store.RelayInfo{ID: "relay-1", Name: "again"}), store.ErrConflict, "CreateRelay of a taken id")
	wantErr(t, s.CreateRelay(ctx, store.RelayInfo{Name: "no id"}), store.ErrInvalid, "CreateRelay without id")

	got, err := s.Relay(ctx, "relay-1")
	if err != nil {
		t.Fatalf("Relay: %v", err)
	}
	same(t, "Relay", got, r1)
	_, err = s.Relay(ctx, "relay-3")
	wantErr(t, err, store.ErrNotFound, "Relay of an unknown id")

	if err := s.SetRelayEnabled(ctx, "relay-1", true); err != nil {
		t.Fatalf("SetRelayEnabled: %v", err)
	}
	r1.Enabled = true
	st := store.RelayStatus{
		Online:      true,
		LastSeen:    at(7777),
		Uptime:      36*time.Hour + 5*time.Second + 7*time.Nanosecond,
		BufferFill:  1234,
		BufferDrops: 1<<40 + 1,
		Uplink:      "cellular",
		SignalDBm:   -93,
		Version:     "0.9.1",
	}
	if err := s.SetRelayStatus(ctx, "relay-1", st); err != nil {
		t.Fatalf("SetRelayStatus: %v", err)
	}
	r1.Status = st
	got, err = s.Relay(ctx, "relay-1")
	if err != nil {
		t.Fatalf("Relay: %v", err)
	}
	same(t, "Relay after SetRelayStatus", got, r1)
	rs, err := s.Relays(ctx)
	if err != nil {
		t.Fatalf("Relays: %v", err)
	}
	same(t, "Relays", rs, []store.RelayInfo{r1, r2})

	if err := s.SetRelayStatus(ctx, "relay-1", store.RelayStatus{}); err != nil {
		t.Fatalf("SetRelayStatus(zero): %v", err)
	}
	got, err = s.Relay(ctx, "relay-1")
	if err != nil {
		t.Fatalf("Relay: %v", err)
	}
	same(t, "Relay status after SetRelayStatus(zero)", got.Status, store.RelayStatus{})

	wantErr(t, s.SetRelayEnabled(ctx, "relay-3", true), store.ErrNotFound, "SetRelayEnabled of an unknown relay")
	wantErr(t, s.SetRelayStatus(ctx, "relay-3", st), store.ErrNotFound, "SetRelayStatus of an unknown relay")
}

func testSessionState(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p1")
	d1 := createDevice(t, s, "p1", 1)
	d2 := createDevice(t, s, "p1", 2)
	for _, st := range []struct {
		id  int64
		val string
	}{{d1.ID, "a"}, {d2.ID, "b"}, {d1.ID, "c"}} {
		if err := s.SaveSessionState(ctx, st.id, "epoch", []byte(st.val)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveSessionState(ctx, d1.ID, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got, err := s.SessionStates(ctx, "epoch")
	if err != nil || len(got) != 2 || string(got[d1.ID]) != "c" || string(got[d2.ID]) != "b" {
		t.Fatalf("session states: %v, %v", got, err)
	}
	wantErr(t, s.SaveSessionState(ctx, 999999, "epoch", []byte("x")), store.ErrNotFound, "an unknown device")
	wantErr(t, s.SaveSessionState(ctx, d1.ID, "", []byte("x")), store.ErrInvalid, "no kind")
}

func testDeviceKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p1")
	d1 := createDevice(t, s, "p1", 1)
	d2 := createDevice(t, s, "p1", 2)
	if err := s.SetDeviceKey(ctx, d1.ID, key(50)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.DeviceByKey(ctx, key(50)); err != nil || got.ID != d1.ID {
		t.Fatalf("lookup by the new key: %+v, %v", got, err)
	}
	if _, err := s.DeviceByKey(ctx, key(1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("the old key still finds the device")
	}
	wantErr(t, s.SetDeviceKey(ctx, d1.ID, d2.PublicKey), store.ErrConflict, "taking another device's key")
	wantErr(t, s.SetDeviceKey(ctx, 999999, key(51)), store.ErrNotFound, "an unknown device")
	wantErr(t, s.SetDeviceKey(ctx, d1.ID, wire.PublicKey{}), store.ErrInvalid, "a zero key")
}

func testClaimTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p1")
	h1, h2, h3 := []byte("claim-1-hash-32-bytes-long-xxxxx"), []byte("claim-2-hash-32-bytes-long-xxxxx"), []byte("claim-3-hash-32-bytes-long-xxxxx")
	if err := s.CreateClaimToken(ctx, store.ClaimToken{Hash: h1, ProjectID: "p1", Uses: 2, Expires: at(10_000)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateClaimToken(ctx, store.ClaimToken{Hash: h2, ProjectID: "p1", Uses: 1, Expires: at(10_000), Approve: true}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.CreateClaimToken(ctx, store.ClaimToken{Hash: h1, ProjectID: "p1", Uses: 1, Expires: at(10_000)}), store.ErrConflict, "a hash stored twice")
	wantErr(t, s.CreateClaimToken(ctx, store.ClaimToken{Hash: h3, ProjectID: "nope", Uses: 1, Expires: at(10_000)}), store.ErrNotFound, "a token for an unknown project")
	wantErr(t, s.CreateClaimToken(ctx, store.ClaimToken{Hash: h3, ProjectID: "p1", Uses: 0, Expires: at(10_000)}), store.ErrInvalid, "a token with no uses")

	d1, err := s.ClaimDevice(ctx, h1, key(101), "claimed", at(1))
	if err != nil || !d1.Enabled || d1.ProjectID != "p1" || d1.ID == 0 {
		t.Fatalf("first claim: %+v, %v", d1, err)
	}
	if got := getDevice(t, s, d1.ID); got.PublicKey != key(101) || !got.Enabled {
		t.Fatalf("claimed device not stored: %+v", got)
	}
	_, err = s.ClaimDevice(ctx, h1, key(101), "", at(2))
	wantErr(t, err, store.ErrConflict, "claiming an already registered key")
	if _, err := s.ClaimDevice(ctx, h1, key(102), "", at(3)); err != nil {
		t.Fatalf("second use (the conflict must not have spent one): %v", err)
	}
	_, err = s.ClaimDevice(ctx, h1, key(103), "", at(4))
	wantErr(t, err, store.ErrNotFound, "a used-up token")
	d2, err := s.ClaimDevice(ctx, h2, key(104), "", at(5))
	if err != nil || d2.Enabled {
		t.Fatalf("a token asking for approval must create a disabled device: %+v, %v", d2, err)
	}
	if err := s.CreateClaimToken(ctx, store.ClaimToken{Hash: h3, ProjectID: "p1", Uses: 5, Expires: at(100)}); err != nil {
		t.Fatal(err)
	}
	_, err = s.ClaimDevice(ctx, h3, key(105), "", at(100))
	wantErr(t, err, store.ErrNotFound, "an expired token")
	_, err = s.ClaimDevice(ctx, []byte("unknown"), key(106), "", at(1))
	wantErr(t, err, store.ErrNotFound, "an unknown token")
	if _, err := s.DeviceByKey(ctx, key(105)); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a refused claim registered the device")
	}
}

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	if n, err := s.CountTokens(ctx); err != nil || n != 0 {
		t.Fatalf("CountTokens of a new store = %d, %v; want 0, nil", n, err)
	}
	h1 := sha256.Sum256([]byte("token one"))
	h2 := sha256.Sum256([]byte("token two"))
	tok1 := store.Token{Name: "bootstrap", Hash: h1[:], Created: at(1)}
	tok2 := store.Token{Name: "ci", Hash: h2[:], Created: at(2)}
	for _, tok := range []*store.Token{&tok1, &tok2} {
		id, err := s.CreateToken(ctx, *tok)
		if err != nil {
			t.Fatalf("CreateToken(%q): %v", tok.Name, err)
		}
		if id <= 0 {
			t.Fatalf("CreateToken(%q) = id %d, want > 0", tok.Name, id)
		}
		tok.ID = id
	}
	if tok1.ID == tok2.ID {
		t.Fatalf("token ids not distinct: %d", tok1.ID)
	}
	_, err := s.CreateToken(ctx, store.Token{Name: "dup", Hash: h1[:], Created: at(3)})
	wantErr(t, err, store.ErrConflict, "CreateToken of a stored hash")
	noSecret(t, err, h1[:])

	for _, tok := range []store.Token{tok1, tok2} {
		got, err := s.TokenByHash(ctx, tok.Hash)
		if err != nil {
			t.Fatalf("TokenByHash(%q): %v", tok.Name, err)
		}
		same(t, "TokenByHash", got, tok)
	}
	h3 := sha256.Sum256([]byte("token three"))
	_, err = s.TokenByHash(ctx, h3[:])
	wantErr(t, err, store.ErrNotFound, "TokenByHash of an unknown hash")
	noSecret(t, err, h3[:])

	if n, err := s.CountTokens(ctx); err != nil || n != 2 {
		t.Fatalf("CountTokens = %d, %v; want 2, nil", n, err)
	}
}

// noSecret fails if err's text shows secret in any usual encoding.
func noSecret(t *testing.T, err error, secret []byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, enc := range []string{
		string(secret),
		hex.EncodeToString(secret),
		strings.ToUpper(hex.EncodeToString(secret)),
		base64.StdEncoding.EncodeToString(secret),
		base64.RawURLEncoding.EncodeToString(secret),
		fmt.Sprint(secret),
		fmt.Sprintf("%q", secret),
	} {
		if strings.Contains(msg, enc) {
			t.Errorf("error %q shows the token hash", msg)
			return
		}
	}
}

func testAppendReadings(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	a := createDevice(t, s, "p", 1)
	b := createDevice(t, s, "p", 2)

	if got, err := s.AppendReadings(ctx, store.Append{}); err != nil || len(got) != 0 {
		t.Fatalf("AppendReadings(empty) = %v, %v; want none, nil", got, err)
	}

	first := []store.Reading{
		newReading(a, 1, at(100), hear("r1", at(100), -70)),
		newReading(a, 2, at(200), hear("r1", at(200), -71)),
		newReading(b, 1, at(250), hear("r2", at(250), -80), hear("", at(251), -90)),
		newReading(a, 3, at(300), hear("r1", at(300), -72)),
	}
	got := appendOK(t, s, store.Append{Readings: first})
	checkInserted(t, got, first, 0)

	dupA3 := newReading(a, 3, at(400), hear("r2", at(400), -60))
	dupA3.Value = -1 // the first copy stored wins
	a4 := newReading(a, 4, at(500), hear("r1", at(500), -73))
	a4again := newReading(a, 4, at(501), hear("r3", at(501), -95))
	b2 := newReading(b, 2, at(600))
	second := store.Append{
		Readings: []store.Reading{dupA3, a4, a4again, b2},
		Hearings: []store.LateHearing{
			{DeviceID: a.ID, Seq: 1, Hearing: hear("r2", at(150), -66)},
			{DeviceID: a.ID, Seq: 2, Hearing: hear("r1", at(210), -50)}, // r1 again: kept once
			{DeviceID: b.ID, Seq: 2, Hearing: hear("r1", at(610), -77)}, // a reading in this same batch
		},
	}
	got2 := appendOK(t, s, second)
	checkInserted(t, got2, []store.Reading{a4, b2}, got[len(got)-1].ID)

	// A batch of nothing but known readings and late hearings inserts
	// nothing and still records the hearings.
	got3 := appendOK(t, s, store.Append{
		Readings: []store.Reading{newReading(a, 1, at(700), hear("r3", at(700), -99))},
		Hearings: []store.LateHearing{{DeviceID: b.ID, Seq: 1, Hearing: hear("r1", at(710), -88)}},
	})
	if len(got3) != 0 {
		t.Errorf("a batch of stored readings inserted %d", len(got3))
	}

	stored := readAll(t, s, store.ReadingQuery{ProjectID: "p"})
	want := []store.Reading{first[0], first[1], first[2], first[3], a4, b2}
	want[0].Heard = []store.Hearing{hear("r1", at(100), -70), hear("r2", at(150), -66), hear("r3", at(700), -99)}
	want[1].Heard = []store.Hearing{hear("r1", at(200), -71)}
	want[2].Heard = []store.Hearing{hear("r2", at(250), -80), hear("", at(251), -90), hear("r1", at(710), -88)}
	want[3].Heard = []store.Hearing{hear("r1", at(300), -72), hear("r2", at(400), -60)}
	want[4].Heard = []store.Hearing{hear("r1", at(500), -73), hear("r3", at(501), -95)}
	want[5].Heard = []store.Hearing{hear("r1", at(610), -77)}
	ids := append(idsOf(got), idsOf(got2)...)
	for i := range want {
		want[i].ID = ids[i]
	}
	same(t, "stored readings", stored, want)
}

// checkInserted checks what AppendReadings returned: want's readings, in
// order, with IDs above after and strictly increasing.
func checkInserted(t *testing.T, got, want []store.Reading, after int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("AppendReadings inserted %d readings, want %d", len(got), len(want))
	}
	prev := after
	for i := range got {
		if got[i].ID <= prev {
			t.Fatalf("inserted reading %d has ID %d, not above %d", i, got[i].ID, prev)
		}
		prev = got[i].ID
		w := want[i]
		w.ID = got[i].ID
		same(t, fmt.Sprintf("inserted reading %d", i), got[i], w)
	}
}

func testAppendAtomic(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	createProject(t, s, "q")
	a := createDevice(t, s, "p", 1)
	other := createDevice(t, s, "q", 2)

	unknown := newReading(store.Device{ID: a.ID + other.ID + 100, ProjectID: "p"}, 1, at(20))
	misfiled := newReading(other, 1, at(20))
	misfiled.ProjectID = "p" // a device's readings belong to its own project only
	for name, bad := range map[string]store.Reading{"unknown device": unknown, "device of another project": misfiled} {
		_, err := s.AppendReadings(ctx, store.Append{Readings: []store.Reading{
			newReading(a, 1, at(10), hear("r1", at(10), -70)),
			bad,
			newReading(a, 2, at(30)),
		}})
		wantErr(t, err, store.ErrInvalid, "AppendReadings with a reading of an "+name)
	}
	_, err := s.AppendReadings(ctx, store.Append{
		Readings: []store.Reading{newReading(a, 1, at(10))},
		Hearings: []store.LateHearing{{DeviceID: unknown.DeviceID, Seq: 1, Hearing: hear("r1", at(11), -70)}},
	})
	wantErr(t, err, store.ErrInvalid, "AppendReadings with a late hearing of an unknown device")
	noReading := newReading(a, 1, at(10))
	noReading.Received = time.Time{}
	_, err = s.AppendReadings(ctx, store.Append{Readings: []store.Reading{noReading}})
	wantErr(t, err, store.ErrInvalid, "AppendReadings of a reading without Received")

	for _, p := range []string{"p", "q"} {
		if rs := readAll(t, s, store.ReadingQuery{ProjectID: p}); len(rs) != 0 {
			t.Errorf("failed batches left %d readings in project %s", len(rs), p)
		}
	}
	// The failed batches took nothing: the readings can still be stored,
	// and none of the failed batches' hearings was kept.
	got := appendOK(t, s, store.Append{Readings: []store.Reading{newReading(a, 1, at(40)), newReading(a, 2, at(50))}})
	if len(got) != 2 {
		t.Fatalf("after failed batches, inserted %d readings, want 2", len(got))
	}
	rs := readAll(t, s, store.ReadingQuery{ProjectID: "p"})
	if len(rs) != 2 || len(rs[0].Heard) != 0 {
		t.Errorf("after failed batches, stored %+v; want 2 readings without hearings", rs)
	}
}

func testReadingRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	d := createDevice(t, s, "p", 1)
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	in := []store.Reading{{
		DeviceID: d.ID, ProjectID: d.ProjectID, Seq: 1,
		DeviceTime: at(-1234), Received: at(5),
		Kind: wire.KindPour, Value: 0, Name: "tap 2", Unit: "ml",
		Pour: &wire.Pour{
			Start: at(-5000).UnixMilli(), Duration: 4200,
			Tilt:   []int16{0, 150, -32768, 32767, 900, -1},
			Volume: 333.25,
		},
		Sealed: allBytes,
		Raw:    []byte{0xa4, 0x00, 0x01, 0xff, 0x00, 0x00},
		Heard: []store.Hearing{
			{RelayID: "", Received: at(5), RSSI: 0, SNR: 0},
			{RelayID: "relay-α", Received: at(8), RSSI: -120, SNR: -7.25},
		},
	}, {
		// Sequences and device clocks are whatever the device sent.
		DeviceID: d.ID, ProjectID: d.ProjectID, Seq: math.MaxUint64,
		DeviceTime: time.UnixMilli(math.MaxInt64), Received: at(6),
		Kind: wire.KindNumeric, Value: -1.5e300, Name: "Druck", Unit: "hPa",
		Raw:   []byte("\x00"),
		Heard: []store.Hearing{{RelayID: "r", Received: at(6), RSSI: math.MinInt16, SNR: 1e-3}},
	}, {
		DeviceID: d.ID, ProjectID: d.ProjectID, Seq: 1 << 63,
		DeviceTime: time.Time{}, Received: at(7), // device clock unknown
		Kind: wire.KindHumidity, Value: 0.1 + 0.2, Name: "",
		Raw: []byte{0x01},
	}, {
		DeviceID: d.ID, ProjectID: d.ProjectID, Seq: 1<<63 - 1,
		DeviceTime: time.UnixMilli(-86_400_123), Received: at(8),
		Kind: wire.KindTemperature, Value: -273.15, Name: "probe 2",
		Sealed: []byte{0}, Raw: []byte{0x02, 0x03},
	}}
	got := appendOK(t, s, store.Append{Readings: in})
	checkInserted(t, got, in, 0)
	want := slices.Clone(got)

	same(t, "Readings", readAll(t, s, store.ReadingQuery{ProjectID: "p"}), want)
	dev := readAll(t, s, store.ReadingQuery{ProjectID: "p", DeviceID: d.ID})
	same(t, "Readings of the device", dev, want)
	last, err := s.LastReading(ctx, d.ID)
	if err != nil {
		t.Fatalf("LastReading: %v", err)
	}
	same(t, "LastReading", last, want[len(want)-1])
}

func testReadingsFilter(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	createProject(t, s, "q")
	a := createDevice(t, s, "p", 1)
	b := createDevice(t, s, "p", 2)
	c := createDevice(t, s, "q", 3)
	var batch []store.Reading
	for i := range 30 {
		// a and b alternate, one second apart; c follows each, in q.
		d := a
		if i%2 == 1 {
			d = b
		}
		batch = append(batch, newReading(d, uint64(i/2+1), at(i*1000)), newReading(c, uint64(i+1), at(i*1000+1)))
	}
	got := appendOK(t, s, store.Append{Readings: batch})
	pick := func(keep func(r store.Reading) bool) []store.Reading {
		var out []store.Reading
		for _, r := range got {
			if keep(r) {
				out = append(out, r)
			}
		}
		return out
	}
	inP := func(r store.Reading) bool { return r.ProjectID == "p" }

	q := func(q store.ReadingQuery) []store.Reading {
		t.Helper()
		rs, err := s.Readings(ctx, q)
		if err != nil {
			t.Fatalf("Readings(%+v): %v", q, err)
		}
		return rs
	}
	same(t, "project p", q(store.ReadingQuery{ProjectID: "p"}), pick(inP))
	same(t, "project q", q(store.ReadingQuery{ProjectID: "q"}), pick(func(r store.Reading) bool { return r.ProjectID == "q" }))
	same(t, "device a", q(store.ReadingQuery{ProjectID: "p", DeviceID: a.ID}), pick(func(r store.Reading) bool { return r.DeviceID == a.ID }))
	if rs := q(store.ReadingQuery{ProjectID: "p", DeviceID: c.ID}); len(rs) != 0 {
		t.Errorf("project p, device of project q: %d readings, want none", len(rs))
	}
	if rs := q(store.ReadingQuery{ProjectID: "nope"}); len(rs) != 0 {
		t.Errorf("unknown project: %d readings, want none", len(rs))
	}

	// From is inclusive, To exclusive, both on Received.
	from, to := at(10_000), at(20_000)
	inRange := func(r store.Reading) bool { return !r.Received.Before(from) && r.Received.Before(to) }
	same(t, "project p in [10s, 20s)", q(store.ReadingQuery{ProjectID: "p", From: from, To: to}),
		pick(func(r store.Reading) bool { return inP(r) && inRange(r) }))
	same(t, "device b in [10s, 20s)", q(store.ReadingQuery{ProjectID: "p", DeviceID: b.ID, From: from, To: to}),
		pick(func(r store.Reading) bool { return r.DeviceID == b.ID && inRange(r) }))
	same(t, "project p from 25s", q(store.ReadingQuery{ProjectID: "p", From: at(25_000)}),
		pick(func(r store.Reading) bool { return inP(r) && !r.Received.Before(at(25_000)) }))
	same(t, "project p before 3s", q(store.ReadingQuery{ProjectID: "p", To: at(3_000)}),
		pick(func(r store.Reading) bool { return inP(r) && r.Received.Before(at(3_000)) }))
	// Bounds finer than a millisecond: [0.5ms, 1000.5ms) holds the reading at 1000ms only.
	same(t, "project p in [0.5ms, 1000.5ms)", q(store.ReadingQuery{ProjectID: "p", From: t0.Add(500 * time.Microsecond), To: at(1000).Add(500 * time.Microsecond)}),
		pick(func(r store.Reading) bool { return inP(r) && r.Received.Equal(at(1000)) }))
	if rs := q(store.ReadingQuery{ProjectID: "p", From: from, To: from}); len(rs) != 0 {
		t.Errorf("empty range: %d readings, want none", len(rs))
	}

	// Cursor and limit.
	pAll := pick(inP)
	page1 := q(store.ReadingQuery{ProjectID: "p", Limit: 7})
	same(t, "first page of 7", page1, pAll[:7])
	page2 := q(store.ReadingQuery{ProjectID: "p", Limit: 7, AfterID: page1[6].ID})
	same(t, "second page of 7", page2, pAll[7:14])
	if rs := q(store.ReadingQuery{ProjectID: "p", AfterID: pAll[len(pAll)-1].ID}); len(rs) != 0 {
		t.Errorf("after the last reading: %d readings, want none", len(rs))
	}

	for name, bad := range map[string]store.ReadingQuery{
		"no project":     {},
		"negative limit": {ProjectID: "p", Limit: -1},
		"To before From": {ProjectID: "p", From: to, To: from},
	} {
		_, err := s.Readings(ctx, bad)
		wantErr(t, err, store.ErrInvalid, "Readings with "+name)
	}
}

func testReadingsLimit(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	d := createDevice(t, s, "p", 1)
	batch := make([]store.Reading, 1100)
	for i := range batch {
		batch[i] = newReading(d, uint64(i+1), at(i))
	}
	got := appendOK(t, s, store.Append{Readings: batch})
	for _, tc := range []struct{ limit, want int }{{0, 100}, {1, 1}, {999, 999}, {1000, 1000}, {1001, 1000}, {1 << 30, 1000}} {
		rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", Limit: tc.limit})
		if err != nil {
			t.Fatalf("Readings(Limit %d): %v", tc.limit, err)
		}
		if len(rs) != tc.want {
			t.Errorf("Readings(Limit %d) returned %d, want %d", tc.limit, len(rs), tc.want)
			continue
		}
		if !slices.Equal(idsOf(rs), idsOf(got[:tc.want])) {
			t.Errorf("Readings(Limit %d) did not return the first %d readings", tc.limit, tc.want)
		}
	}
}

func testReadingsPagination(t *testing.T, s store.Store) {
	const (
		n       = 2400
		devices = 3
		batch   = 400
		overlap = 50
	)
	createProject(t, s, "p")
	createProject(t, s, "q")
	var ds []store.Device
	for i := range devices {
		ds = append(ds, createDevice(t, s, "p", i+1))
	}
	noise := createDevice(t, s, "q", 99)
	all := make([]store.Reading, n)
	for i := range all {
		all[i] = newReading(ds[i%devices], uint64(i/devices+1), at(i*1000), hear("r", at(i*1000), -70))
	}
	var inserted []store.Reading
	for start := 0; start < n; start += batch {
		// Each batch repeats the end of the one before (skipped) and
		// interleaves readings of another project.
		b := all[max(0, start-overlap):min(n, start+batch)]
		var rs []store.Reading
		for i, r := range b {
			rs = append(rs, r)
			if i%5 == 0 {
				rs = append(rs, newReading(noise, uint64(start+i+1), r.Received))
			}
		}
		for _, r := range appendOK(t, s, store.Append{Readings: rs}) {
			if r.ProjectID == "p" {
				inserted = append(inserted, r)
			}
		}
	}
	if len(inserted) != n {
		t.Fatalf("inserted %d readings of project p, want %d", len(inserted), n)
	}

	walk := func(name string, q store.ReadingQuery, keep func(store.Reading) bool) {
		t.Helper()
		var want []int64
		for _, r := range inserted {
			if keep(r) {
				want = append(want, r.ID)
			}
		}
		var got []int64
		for pages := 0; ; pages++ {
			if pages > n {
				t.Fatalf("%s: no end after %d pages", name, pages)
			}
			rs, err := s.Readings(t.Context(), q)
			if err != nil {
				t.Fatalf("%s: Readings(%+v): %v", name, q, err)
			}
			if len(rs) > q.Limit {
				t.Fatalf("%s: page of %d readings, limit %d", name, len(rs), q.Limit)
			}
			if len(rs) == 0 {
				break
			}
			for _, r := range rs {
				if !keep(r) {
					t.Fatalf("%s: reading %d (device %d seq %d) does not match the query", name, r.ID, r.DeviceID, r.Seq)
				}
				got = append(got, r.ID)
			}
			q.AfterID = rs[len(rs)-1].ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: walked %d readings, want %d: gaps, repeats or disorder", name, len(got), len(want))
		}
	}
	walk("project", store.ReadingQuery{ProjectID: "p", Limit: 333}, func(r store.Reading) bool { return r.ProjectID == "p" })
	d := ds[1]
	from, to := at(100_000), at(1_900_000)
	walk("device in range", store.ReadingQuery{ProjectID: "p", DeviceID: d.ID, From: from, To: to, Limit: 97},
		func(r store.Reading) bool {
			return r.DeviceID == d.ID && !r.Received.Before(from) && r.Received.Before(to)
		})
	walk("project in range", store.ReadingQuery{ProjectID: "p", From: from, Limit: 1000},
		func(r store.Reading) bool { return r.ProjectID == "p" && !r.Received.Before(from) })
}

func testLastReading(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	a := createDevice(t, s, "p", 1)
	b := createDevice(t, s, "p", 2)
	_, err := s.LastReading(ctx, a.ID)
	wantErr(t, err, store.ErrNotFound, "LastReading of a device without readings")
	_, err = s.LastReading(ctx, a.ID+b.ID+100)
	wantErr(t, err, store.ErrNotFound, "LastReading of an unknown device")

	appendOK(t, s, store.Append{Readings: []store.Reading{
		newReading(a, 1, at(1)), newReading(a, 2, at(2)), newReading(a, 10, at(3), hear("r1", at(3), -70)),
	}})
	got := appendOK(t, s, store.Append{Readings: []store.Reading{
		newReading(a, 7, at(4), hear("r2", at(4), -75)), // a lower seq, stored later
		newReading(b, 1, at(5)),
	}})
	wantLast := got[0]
	// A repeat of an older reading changes nothing but its hearings.
	appendOK(t, s, store.Append{
		Readings: []store.Reading{newReading(a, 2, at(6))},
		Hearings: []store.LateHearing{{DeviceID: a.ID, Seq: 7, Hearing: hear("r3", at(7), -90)}},
	})
	wantLast.Heard = []store.Hearing{hear("r2", at(4), -75), hear("r3", at(7), -90)}
	last, err := s.LastReading(ctx, a.ID)
	if err != nil {
		t.Fatalf("LastReading: %v", err)
	}
	same(t, "LastReading", last, wantLast)
}

func testConcurrent(t *testing.T, s store.Store) {
	const (
		writers = 6
		perDev  = 150
		batch   = 25
	)
	ctx := t.Context()
	createProject(t, s, "p")
	ds := []store.Device{createDevice(t, s, "p", 1), createDevice(t, s, "p", 2)}
	total := perDev * len(ds)

	// A follower tails the ID cursor while the writers append.
	type seen struct {
		ids []int64
		err error
	}
	followed := make(chan seen, 1)
	stop := make(chan struct{})
	go func() {
		var out seen
		defer func() { followed <- out }()
		var after int64
		deadline := time.Now().Add(20 * time.Second)
		for len(out.ids) < total {
			if time.Now().After(deadline) {
				out.err = fmt.Errorf("follower saw %d of %d readings by its deadline", len(out.ids), total)
				return
			}
			rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", AfterID: after, Limit: 50})
			if err != nil {
				out.err = err
				return
			}
			for _, r := range rs {
				out.ids = append(out.ids, r.ID)
			}
			if len(rs) > 0 {
				after = rs[len(rs)-1].ID
				continue
			}
			select {
			case <-stop:
				// Writers are done; one more pass catches the rest.
				if rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", AfterID: after, Limit: 1000}); err == nil && len(rs) == 0 {
					return
				}
			case <-time.After(time.Millisecond):
			}
		}
	}()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		inserted []store.Reading
	)
	for w := range writers {
		wg.Go(func() {
			// Every writer appends every reading, in its own order, heard
			// by its own relay.
			relay := fmt.Sprintf("relay-%d", w)
			var rs []store.Reading
			for _, d := range ds {
				for seq := 1; seq <= perDev; seq++ {
					rs = append(rs, newReading(d, uint64(seq), at(seq), hear(relay, at(seq), int16(-60-w))))
				}
			}
			rand.New(rand.NewPCG(uint64(w), 1)).Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
			for start := 0; start < len(rs); start += batch {
				got, err := s.AppendReadings(ctx, store.Append{Readings: rs[start:min(len(rs), start+batch)]})
				if err != nil {
					t.Errorf("writer %d: AppendReadings: %v", w, err)
					return
				}
				for i := 1; i < len(got); i++ {
					if got[i].ID <= got[i-1].ID {
						t.Errorf("writer %d: IDs %d then %d in one batch", w, got[i-1].ID, got[i].ID)
					}
				}
				mu.Lock()
				inserted = append(inserted, got...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)

	type key struct {
		dev int64
		seq uint64
	}
	byKey := make(map[key]int64)
	for _, r := range inserted {
		k := key{r.DeviceID, r.Seq}
		if id, dup := byKey[k]; dup {
			t.Errorf("device %d seq %d inserted twice, as %d and %d", r.DeviceID, r.Seq, id, r.ID)
		}
		byKey[k] = r.ID
	}
	if len(byKey) != total {
		t.Errorf("inserted %d distinct readings, want %d", len(byKey), total)
	}

	stored := readAll(t, s, store.ReadingQuery{ProjectID: "p"})
	if len(stored) != total {
		t.Errorf("stored %d readings, want %d", len(stored), total)
	}
	for _, r := range stored {
		if id := byKey[key{r.DeviceID, r.Seq}]; id != r.ID {
			t.Errorf("device %d seq %d stored as %d, inserted as %d", r.DeviceID, r.Seq, r.ID, id)
		}
		if len(r.Heard) != writers {
			t.Errorf("device %d seq %d heard by %d relays, want %d (one per writer)", r.DeviceID, r.Seq, len(r.Heard), writers)
		}
	}

	f := <-followed
	if f.err != nil {
		t.Fatalf("follower: %v", f.err)
	}
	if want := idsOf(stored); !slices.Equal(f.ids, want) {
		t.Errorf("follower saw %d readings, %d stored: the cursor skipped or repeated readings", len(f.ids), len(want))
	}
}

// ---- Helpers ----

func createProject(t *testing.T, s store.Store, id string) {
	t.Helper()
	if err := s.CreateProject(t.Context(), store.Project{ID: id, Name: "project " + id, Created: t0}); err != nil {
		t.Fatalf("CreateProject(%q): %v", id, err)
	}
}

// createDevice registers device n (its key derived from n) and returns it
// as stored.
func createDevice(t *testing.T, s store.Store, projectID string, n int) store.Device {
	t.Helper()
	id, err := s.CreateDevice(t.Context(), store.Device{
		ProjectID: projectID, PublicKey: key(n), Name: fmt.Sprintf("device %d", n), Enabled: true, Created: t0,
	})
	if err != nil {
		t.Fatalf("CreateDevice(%d): %v", n, err)
	}
	return getDevice(t, s, id)
}

func getDevice(t *testing.T, s store.Store, id int64) store.Device {
	t.Helper()
	d, err := s.Device(t.Context(), id)
	if err != nil {
		t.Fatalf("Device(%d): %v", id, err)
	}
	return d
}

func key(n int) wire.PublicKey {
	return wire.PublicKey(sha256.Sum256(fmt.Appendf(nil, "storetest device %d", n)))
}

// newReading is a temperature reading of d with a distinct raw body.
func newReading(d store.Device, seq uint64, received time.Time, heard ...store.Hearing) store.Reading {
	return store.Reading{
		DeviceID:   d.ID,
		ProjectID:  d.ProjectID,
		Seq:        seq,
		DeviceTime: received.Add(-1500 * time.Millisecond),
		Received:   received,
		Kind:       wire.KindTemperature,
		Value:      4 + float64(seq%64)/8,
		Name:       "cellar",
		Unit:       "",
		Raw:        fmt.Appendf(nil, "\xa4\x01%08x\x02%08x\x00", d.ID, seq),
		Heard:      heard,
	}
}

func hear(relay string, at time.Time, rssi int16) store.Hearing {
	return store.Hearing{RelayID: relay, Received: at, RSSI: rssi, SNR: float32(rssi+100) / 4}
}

func appendOK(t *testing.T, s store.Store, a store.Append) []store.Reading {
	t.Helper()
	got, err := s.AppendReadings(t.Context(), a)
	if err != nil {
		t.Fatalf("AppendReadings: %v", err)
	}
	return got
}

// readAll pages through q to the end.
func readAll(t *testing.T, s store.Store, q store.ReadingQuery) []store.Reading {
	t.Helper()
	q.Limit = 1000
	var out []store.Reading
	for {
		rs, err := s.Readings(t.Context(), q)
		if err != nil {
			t.Fatalf("Readings(%+v): %v", q, err)
		}
		out = append(out, rs...)
		if len(rs) < q.Limit {
			return out
		}
		q.AfterID = rs[len(rs)-1].ID
	}
}

func idsOf(rs []store.Reading) []int64 {
	ids := make([]int64, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return ids
}

func wantErr(t *testing.T, err, kind error, what string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Errorf("%s: error %v, want %v", what, err, kind)
	}
}

// same compares got and want after normalize, which makes equal what the
// contract does not tell apart.
func same(t *testing.T, what string, got, want any) {
	t.Helper()
	g, w := normalize(reflect.ValueOf(got)), normalize(reflect.ValueOf(want))
	if !reflect.DeepEqual(g.Interface(), w.Interface()) {
		t.Errorf("%s:\n got  %+v\n want %+v", what, g.Interface(), w.Interface())
	}
}

var (
	timeType    = reflect.TypeFor[time.Time]()
	readingType = reflect.TypeFor[store.Reading]()
)

// normalize returns a deep copy of v in which times are UTC without a
// monotonic reading, empty slices are nil, and a reading's hearings are
// sorted by relay (their order is not part of the contract; a device
// status's relays keep theirs).
func normalize(v reflect.Value) reflect.Value {
	switch {
	case v.Type() == timeType:
		return reflect.ValueOf(v.Interface().(time.Time).UTC())
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return v
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(normalize(v.Elem()))
		return p
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			return reflect.Zero(v.Type())
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return reflect.ValueOf(bytes.Clone(v.Bytes())).Convert(v.Type())
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			s.Index(i).Set(normalize(v.Index(i)))
		}
		return s
	case v.Kind() == reflect.Struct:
		s := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			s.Field(i).Set(normalize(v.Field(i)))
		}
		if v.Type() == readingType {
			r := s.Addr().Interface().(*store.Reading)
			slices.SortFunc(r.Heard, func(a, b store.Hearing) int { return strings.Compare(a.RelayID, b.RelayID) })
		}
		return s
	}
	return v
}
