package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/procstat"
)

// newIdleRelay is a relay that is never run: its UDP socket and handle
// codec are ready, nothing reads or connects.
func newIdleRelay(t testing.TB, listen string) *Relay {
	t.Helper()
	ca, err := pki.InitDevCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Listen: listen, Server: "127.0.0.1:1", Certificate: relayCert(t, ca, "gw-1"), CAs: ca.Pool(),
		DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.udp.Close(); r.spool.close() })
	return r
}

// TestDownlinkBatch: downlinks gathered from the server's frames reach
// their devices, in order, whether a batch fills up or is flushed; a
// handle this relay did not issue, a datagram no server sends and a
// datagram the system refuses are each counted as dropped, and the rest
// of their batch is still sent. On a dual-stack socket an IPv4 device is
// reached too.
func TestDownlinkBatch(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			r := newIdleRelay(t, listen)
			var devs [2]*net.UDPConn
			var handles [2][]byte
			for i := range devs {
				c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				devs[i] = c
				handles[i] = r.handles.encode(nil, c.LocalAddr().(*net.UDPAddr).AddrPort())
			}
			refused := r.handles.encode(nil, netip.MustParseAddrPort("127.0.0.1:0"))
			forged := bytes.Clone(handles[0])
			forged[len(forged)-1] ^= 1
			notServer := transportDatagram(1, 60)
			notServer[0] = 1 // an initiation: devices send those, servers do not

			out := r.newDownlinks()
			const toFirst = udpBatch + 5 // one batch fills and is sent by add
			for i := range toFirst {
				out.add(Downlink{Handle: handles[0], Datagram: transportDatagram(uint64(i), 60)})
				switch i {
				case 3:
					out.add(Downlink{Handle: refused, Datagram: transportDatagram(99, 60)})
				case 4:
					out.add(Downlink{Handle: forged, Datagram: transportDatagram(99, 60)})
				case 5:
					out.add(Downlink{Handle: handles[1], Datagram: notServer})
				case 6:
					out.add(Downlink{Handle: handles[1], Datagram: transportDatagram(1000, 60)})
				}
			}
			out.flush()
			out.flush() // nothing left: a no-op

			buf := make([]byte, 2048)
			for i := range toFirst {
				devs[0].SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := devs[0].Read(buf)
				if err != nil {
					t.Fatalf("device 0, datagram %d: %v", i, err)
				}
				if want := transportDatagram(uint64(i), 60); !bytes.Equal(buf[:n], want) {
					t.Fatalf("device 0, datagram %d: got sequence %x", i, buf[5:13])
				}
			}
			devs[1].SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := devs[1].Read(buf)
			if err != nil || !bytes.Equal(buf[:n], transportDatagram(1000, 60)) {
				t.Fatalf("device 1: %v", err)
			}
			if got := r.stats.Downlinks.Load(); got != toFirst+1 {
				t.Errorf("Downlinks = %d, want %d", got, toFirst+1)
			}
			if got := r.stats.DownlinkDrops.Load(); got != 3 {
				t.Errorf("DownlinkDrops = %d, want 3 (refused, forged handle, not a server's datagram)", got)
			}
		})
	}
}

// TestFrameBuffered: the reader sends what it gathered before it could
// wait, that is unless a whole frame is already buffered.
func TestFrameBuffered(t *testing.T) {
	f := AppendAck(nil, 7)
	two := append(bytes.Clone(f), f...)
	for _, c := range []struct {
		in   []byte
		read int // bytes consumed first
		want bool
	}{
		{nil, 0, false},
		{f[:2], 0, false},
		{f[:len(f)-1], 0, false},
		{f, 0, true},
		{two, len(f), true},
		{two[:len(two)-1], len(f), false},
	} {
		br := bufio.NewReaderSize(bytes.NewReader(c.in), 64)
		if c.read > 0 {
			if _, err := br.Discard(c.read); err != nil {
				t.Fatal(err)
			}
		} else if len(c.in) > 0 {
			br.Peek(len(c.in)) // fill the buffer
		}
		if got := frameBuffered(br); got != c.want {
			t.Errorf("%d bytes buffered after %d read: frameBuffered = %v, want %v", len(c.in)-c.read, c.read, got, c.want)
		}
	}
}

// BenchmarkDownlinks is the relay's path from the server's downlink frames
// to the devices: b.N 60-byte datagrams to 64 device sockets, sent in
// batches of up to batch datagrams per system call (1: a call each, what
// the relay did before it gathered them). A goroutine reads the devices'
// sockets so the kernel does not drop what they cannot queue;
// cpu-us/datagram is the whole process, that reader included.
func BenchmarkDownlinks(b *testing.B) {
	for _, batch := range []int{1, 8, udpBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			r := newIdleRelay(b, "127.0.0.1:0")
			var handles [][]byte
			var got atomic.Int64
			for range 64 {
				c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				handles = append(handles, r.handles.encode(nil, c.LocalAddr().(*net.UDPAddr).AddrPort()))
				go func() {
					buf := make([]byte, 2048)
					for {
						if _, err := c.Read(buf); err != nil {
							return
						}
						got.Add(1)
					}
				}()
			}
			dg := transportDatagram(1, 60)
			out := r.newDownlinks()
			cpu0 := procstat.CPUTime()
			sent := 0
			for b.Loop() {
				out.add(Downlink{Handle: handles[sent%len(handles)], Datagram: dg})
				sent++
				if sent%batch == 0 {
					out.flush()
				}
				// Rounds the sockets' buffers hold: what is measured is
				// sending, not the kernel dropping.
				if sent%1024 == 0 {
					waitReceived(b, &got, int64(sent))
				}
			}
			out.flush()
			waitReceived(b, &got, int64(sent))
			b.ReportMetric(float64((procstat.CPUTime()-cpu0).Nanoseconds())/1000/float64(sent), "cpu-us/datagram")
		})
	}
}

func waitReceived(b *testing.B, got *atomic.Int64, want int64) {
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("the devices received %d of %d datagrams", got.Load(), want)
		}
		time.Sleep(20 * time.Microsecond)
	}
}
