package ingest_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/loadgen"
	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/wire"
)

// BenchmarkIngestUDP is ingest's hot path alone: b.N one-reading uplinks
// from 200 devices through the server's own UDP port (open, replay window,
// decode, dedup, ACK), delivered synchronously to a store that only counts.
// cpu-us/uplink is the whole process (generator included), which a machine
// shared with other work changes less than the rate.
func BenchmarkIngestUDP(b *testing.B) {
	key, _ := wire.GenerateKey(nil)
	var mu sync.Mutex
	delivered := 0
	srv, err := ingest.New(ingest.Config{Key: key, DeviceRate: 1e6, Deliver: func(ctx context.Context, ev ingest.Event) error {
		mu.Lock()
		delivered += len(ev.Readings)
		mu.Unlock()
		return nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.ServeUDP(ctx, uc) }()
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	defer func() { cancel(); uc.Close(); wg.Wait() }()

	g, err := loadgen.New(loadgen.Config{Target: uc.LocalAddr().String(), ServerKey: srv.PublicKey(), Devices: 200,
		Window: 16, Count: int64(max(b.N, 200)), RetransmitAfter: 5 * time.Second,
		Register: func(ctx context.Context, keys []wire.PublicKey) error {
			for i, k := range keys {
				if err := srv.AddDevice(k, ingest.DeviceInfo{ID: int64(i + 1), Project: "p"}); err != nil {
					return err
				}
			}
			return nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	if err := g.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	cpu0 := procstat.CPUTime()
	b.ResetTimer()
	res, err := g.Run(ctx)
	b.StopTimer()
	if err != nil {
		b.Fatalf("%v (%+v)", err, res)
	}
	cpu := procstat.CPUTime() - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(res.Readings), "cpu-us/uplink")
	b.ReportMetric(float64(res.Readings)/b.Elapsed().Seconds(), "uplinks/s")
	b.ReportMetric(float64(res.Resent), "resent")
}
