package relay

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/procstat"
)

// BenchmarkRelayIntake is the relay's device-facing path alone: b.N
// 100-byte transport datagrams from 8 device sockets read from the UDP
// socket, named with a handle and appended to the buffer (the server is
// unreachable, so nothing is forwarded). cpu-us/datagram is the whole
// process, senders included; a machine shared with other work moves it
// less than the rate.
func BenchmarkRelayIntake(b *testing.B) {
	ca, err := pki.InitDevCA(filepath.Join(b.TempDir(), "ca"))
	if err != nil {
		b.Fatal(err)
	}
	r, err := New(Config{Listen: "127.0.0.1:0", Server: "127.0.0.1:1", Certificate: relayCert(b, ca, "bench"), CAs: ca.Pool(),
		DataDir: b.TempDir(), BufferMax: max(b.N, 1000), MinBackoff: time.Second, MaxBackoff: time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	to := r.Addr().(*net.UDPAddr)
	var socks []*net.UDPConn
	for range 8 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, c)
	}
	dg := transportDatagram(1, 100)
	// Sent in rounds the socket buffer holds, so that what is measured is
	// the relay's work, not the kernel dropping what it cannot queue.
	const round = 512
	cpu0 := procstat.CPUTime()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		for i := range min(round, b.N-sent) {
			if _, err := socks[i%len(socks)].WriteToUDP(dg, to); err != nil {
				b.Fatal(err)
			}
		}
		sent += min(round, b.N-sent)
		deadline := time.Now().Add(10 * time.Second)
		for r.Stats().Received.Load() < uint64(sent) {
			if time.Now().After(deadline) {
				b.Fatalf("the relay read %d of %d datagrams", r.Stats().Received.Load(), sent)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((procstat.CPUTime()-cpu0).Nanoseconds())/1000/float64(b.N), "cpu-us/datagram")
	if got := r.Buffered(); got != b.N {
		b.Fatalf("%d datagrams buffered, want %d", got, b.N)
	}
}
