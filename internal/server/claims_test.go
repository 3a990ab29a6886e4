package server

import (
	"context"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// runDevice starts a device with its own fresh key against srv's UDP port.
func runClaimingDevice(t *testing.T, srv *Server, token string) (*device.Device, wire.PublicKey) {
	t.Helper()
	key, _ := wire.GenerateKey(nil)
	tr, err := device.DialUDP(srv.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.New(device.Options{Key: key, ServerKey: srv.PublicKey(), Transport: tr, Dir: t.TempDir(), NoSync: true,
		ClaimToken: token, RetransmitAfter: 200 * time.Millisecond, HandshakeTimeout: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return d, key.Public()
}

func TestDevicesClaimThemselves(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	tok, err := srv.CreateClaimToken(ctx, "p", 2, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	// Two devices enrol with the same token (two uses), a third is refused.
	d1, k1 := runClaimingDevice(t, srv, tok)
	d2, k2 := runClaimingDevice(t, srv, tok)
	for _, d := range []*device.Device{d1, d2} {
		if _, err := d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 21}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "both claimed devices acknowledged", func() bool { return d1.Pending() == 0 && d2.Pending() == 0 })
	for _, k := range []wire.PublicKey{k1, k2} {
		dev, err := srv.Store().DeviceByKey(ctx, k)
		if err != nil || dev.ProjectID != "p" || !dev.Enabled {
			t.Fatalf("claimed device: %+v, %v", dev, err)
		}
	}
	d3, k3 := runClaimingDevice(t, srv, tok)
	_, _ = d3.Record(wire.Reading{Kind: wire.KindTemperature, Value: 21})
	eventually(t, 10*time.Second, "the used-up token refused", func() bool { return srv.Ingest().Stats().ClaimsRefused.Load() > 0 })
	if _, err := srv.Store().DeviceByKey(ctx, k3); err == nil {
		t.Fatal("a used-up token registered a device")
	}
	if d3.Stats().Handshakes.Load() != 0 {
		t.Fatal("a device with a used-up token got a session")
	}
	// Without any token an unknown device gets nothing.
	d4, _ := runClaimingDevice(t, srv, "")
	_, _ = d4.Record(wire.Reading{Kind: wire.KindTemperature, Value: 21})
	time.Sleep(500 * time.Millisecond)
	if d4.Stats().Handshakes.Load() != 0 {
		t.Fatal("an unknown device without a token got a session")
	}
}

func TestClaimedDeviceWaitsForApproval(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	tok, err := srv.CreateClaimToken(ctx, "p", 1, time.Hour, true)
	if err != nil {
		t.Fatal(err)
	}
	d, k := runClaimingDevice(t, srv, tok)
	_, _ = d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 21})
	var dev store.Device
	eventually(t, 10*time.Second, "the device registered, disabled", func() bool {
		dev, err = srv.Store().DeviceByKey(ctx, k)
		return err == nil
	})
	if dev.Enabled {
		t.Fatal("a device claimed with an approval token is enabled")
	}
	time.Sleep(500 * time.Millisecond)
	if d.Stats().Handshakes.Load() != 0 || d.Pending() != 1 {
		t.Fatal("a device waiting for approval got a session")
	}
	if err := srv.SetDeviceEnabled(ctx, dev.ID, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the approved device's reading acknowledged", func() bool { return d.Pending() == 0 })
}

func TestExpiredClaimTokenIsRefused(t *testing.T) {
	srv := startServer(t, t.TempDir())
	tok, err := srv.CreateClaimToken(context.Background(), "p", 5, time.Millisecond, false)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	d, k := runClaimingDevice(t, srv, tok)
	_, _ = d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 21})
	eventually(t, 10*time.Second, "the expired token refused", func() bool { return srv.Ingest().Stats().ClaimsRefused.Load() > 0 })
	if _, err := srv.Store().DeviceByKey(context.Background(), k); err == nil {
		t.Fatal("an expired token registered a device")
	}
}
