package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/signet-io/signet/internal/store"
)

// testDeviceChanges: DevicesChangedSince lists what a server must act on
// (devices created, enabled, disabled, re-keyed), each device once and as
// it is now, and nothing else: not the status every active device gets
// every two seconds, which would make every reload read the whole fleet.
func testDeviceChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	changed := func(since int64, want ...store.Device) int64 {
		t.Helper()
		got, next, err := s.DevicesChangedSince(ctx, since)
		if err != nil {
			t.Fatalf("DevicesChangedSince(%d): %v", since, err)
		}
		same(t, fmt.Sprintf("DevicesChangedSince(%d)", since), got, want)
		switch {
		case len(want) == 0 && next != since:
			t.Errorf("DevicesChangedSince(%d) with no change: next %d, want %d", since, next, since)
		case len(want) > 0 && next <= since:
			t.Errorf("DevicesChangedSince(%d) with changes: next %d, want > %d", since, next, since)
		}
		return next
	}
	changed(0) // an empty store

	createProject(t, s, "p1")
	createProject(t, s, "p2")
	d1 := createDevice(t, s, "p1", 1)
	d2 := createDevice(t, s, "p2", 2)
	n1 := changed(0, d1, d2)
	changed(n1)

	// Not changes: the status flush, a remote-access setting, a device
	// enabled that was enabled.
	if err := s.SetDeviceStatus(ctx, d1.ID, store.DeviceStatus{LastSeen: at(5)}); err != nil {
		t.Fatal(err)
	}
	d1 = getDevice(t, s, d1.ID)
	if err := s.SetDeviceRemoteAccess(ctx, d2.ID, store.RemoteReadOnly); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDeviceEnabled(ctx, d2.ID, true); err != nil {
		t.Fatal(err)
	}
	changed(n1)

	// A revocation, then a key rotation.
	if err := s.SetDeviceEnabled(ctx, d2.ID, false); err != nil {
		t.Fatal(err)
	}
	d2 = getDevice(t, s, d2.ID)
	n2 := changed(n1, d2)
	changed(n2)
	if err := s.SetDeviceKey(ctx, d1.ID, key(50)); err != nil {
		t.Fatal(err)
	}
	d1 = getDevice(t, s, d1.ID)
	n3 := changed(n2, d1)

	// A claimed device, a created one and a re-enabled one, together and
	// in ID order; from an older number, every device changed since, once
	// and as it is now.
	if err := s.CreateClaimToken(ctx, store.ClaimToken{Hash: []byte("device-changes-claim-hash-32-byt"), ProjectID: "p1", Uses: 1, Expires: at(10_000)}); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimDevice(ctx, []byte("device-changes-claim-hash-32-byt"), key(51), "", at(1))
	if err != nil {
		t.Fatal(err)
	}
	claimed = getDevice(t, s, claimed.ID)
	d3 := createDevice(t, s, "p1", 3)
	if err := s.SetDeviceEnabled(ctx, d2.ID, true); err != nil {
		t.Fatal(err)
	}
	d2 = getDevice(t, s, d2.ID)
	n4 := changed(n3, d2, claimed, d3)
	changed(n1, d1, d2, claimed, d3)
	changed(0, d1, d2, claimed, d3)
	changed(n4)

	// A follower that passes next back while others write ends with the
	// registry as stored (half the devices end disabled): no change falls
	// between two reads.
	const devices, flips = 20, 30
	var ids []int64
	for i := range devices {
		ids = append(ids, createDevice(t, s, "p2", 100+i).ID)
	}
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range flips {
				for j, id := range ids {
					if j%2 == w {
						if err := s.SetDeviceEnabled(ctx, id, (i+j)%2 == 1); err != nil {
							t.Error(err)
							return
						}
					}
				}
			}
		})
	}
	view := map[int64]bool{}
	since := int64(0)
	follow := func() {
		devs, next, err := s.DevicesChangedSince(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.IsSortedFunc(devs, func(a, b store.Device) int { return int(a.ID - b.ID) }) {
			t.Error("DevicesChangedSince: not in ID order")
		}
		for _, d := range devs {
			view[d.ID] = d.Enabled
		}
		since = next
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		follow()
	}
	follow()
	all, _, err := s.DevicesChangedSince(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		if view[d.ID] != d.Enabled {
			t.Errorf("follower has device %d enabled=%v, stored %v", d.ID, view[d.ID], d.Enabled)
		}
	}
}
