package loadgen

import (
	"net"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/procstat"
)

// BenchmarkUDPLoopback is the floor of the device→relay hop on this
// machine: one 96-byte datagram (a one-reading uplink) sent and received
// over loopback, one system call each way, as the generator and the relay
// do. Every uplink crosses it twice more as an ACK comes back, so the rate
// of uplinks a relay can forward on one socket is below a third of it.
func BenchmarkUDPLoopback(b *testing.B) {
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	_ = rx.SetReadBuffer(4 << 20)
	got := make(chan int)
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for {
			_ = rx.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	dg := make([]byte, 96)
	cpu0 := procstat.CPUTime()
	for b.Loop() {
		if _, err := tx.Write(dg); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := b.Elapsed()
	n := <-got // after a second of silence
	cpu := procstat.CPUTime() - cpu0
	b.ReportMetric(float64(n)/elapsed.Seconds(), "received/s")
	b.ReportMetric(float64(n)/float64(b.N), "delivered")
	b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(max(n, 1)), "cpu-us/datagram")
}
