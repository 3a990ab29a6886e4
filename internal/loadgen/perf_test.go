package loadgen_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/loadgen"
	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/wire"
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

// BenchmarkRunCPU is the generator's own CPU per datagram at a fixed rate,
// the figure that matters when it shares the machine with the server it
// measures. The server is a real ingest server in a child process (this
// test binary, run as TestSinkProcess), so the process CPU time measured
// here is the generator's alone: pacing, sealing, sending, and reading
// and opening the acknowledgement of every datagram. b.N is the readings
// of the run, one per datagram.
func BenchmarkRunCPU(b *testing.B) {
	for _, r := range []float64{5000, 17000} {
		b.Run(fmt.Sprintf("rate=%d", int(r)), func(b *testing.B) { benchmarkRunCPU(b, r) })
	}
}

func benchmarkRunCPU(b *testing.B, r float64) {
	sink := startSinkProcess(b)
	g, err := loadgen.New(loadgen.Config{
		Target: sink.addr, ServerKey: sink.key, Devices: 1000, Register: sink.register,
		Rate: r, Count: int64(b.N), HandshakeRate: 20000,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+time.Duration(float64(b.N)/r*float64(time.Second)))
	defer cancel()
	if err := g.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0, cs0, t0 := procstat.CPUTime(), contextSwitches(), time.Now()
	res, err := g.Run(ctx)
	cpu, cs, wall := procstat.CPUTime()-cpu0, contextSwitches()-cs0, time.Since(t0)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(max(res.Datagrams, 1)), "cpu-us/datagram")
	b.ReportMetric(float64(cs)/float64(max(res.Datagrams, 1)), "ctxsw/datagram")
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%")
	b.ReportMetric(float64(res.Datagrams)/res.Generating.Seconds(), "datagrams/s")
	b.ReportMetric(float64(res.Resent), "resent")
}

type sinkProcess struct {
	addr string
	key  wire.PublicKey
	in   io.WriteCloser
	out  *bufio.Reader
}

// startSinkProcess starts an ingest server in a child process; it stops
// when the benchmark ends.
func startSinkProcess(b *testing.B) *sinkProcess {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestSinkProcess$")
	cmd.Env = append(os.Environ(), "LOADGEN_SINK_PROCESS=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	s := &sinkProcess{in: in, out: bufio.NewReader(out)}
	line, err := s.out.ReadString('\n')
	var hexKey string
	if _, err2 := fmt.Sscan(line, &s.addr, &hexKey); err != nil || err2 != nil {
		b.Fatalf("sink process said %q: %v %v", line, err, err2)
	}
	k, err := hex.DecodeString(hexKey)
	if err != nil || len(k) != len(s.key) {
		b.Fatalf("sink process key %q", hexKey)
	}
	copy(s.key[:], k)
	return s
}

func (s *sinkProcess) register(ctx context.Context, keys []wire.PublicKey) error {
	buf := binary.LittleEndian.AppendUint32(nil, uint32(len(keys)))
	for _, k := range keys {
		buf = append(buf, k[:]...)
	}
	if _, err := s.in.Write(buf); err != nil {
		return err
	}
	line, err := s.out.ReadString('\n')
	if err != nil || line != "registered\n" {
		return fmt.Errorf("sink process: %q, %v", line, err)
	}
	return nil
}

// TestSinkProcess is BenchmarkRunCPU's server, when run as its child: it
// prints its address and key, registers the keys it reads from stdin,
// acknowledges every reading, and ends with its stdin.
func TestSinkProcess(t *testing.T) {
	if os.Getenv("LOADGEN_SINK_PROCESS") == "" {
		t.Skip("the child process of BenchmarkRunCPU")
	}
	srv, addr := serveIngest(t, ingest.Config{HandshakeRate: 1e6, DeviceRate: 1e6,
		Deliver: func(context.Context, ingest.Event) error { return nil }})
	pub := srv.PublicKey()
	fmt.Printf("%s %x\n", addr, pub[:])
	in := bufio.NewReader(os.Stdin)
	var id int64
	for {
		var n [4]byte
		if _, err := io.ReadFull(in, n[:]); err != nil {
			return // stdin closed: the benchmark is over
		}
		for range binary.LittleEndian.Uint32(n[:]) {
			var k wire.PublicKey
			if _, err := io.ReadFull(in, k[:]); err != nil {
				t.Fatal(err)
			}
			id++
			if err := srv.AddDevice(k, ingest.DeviceInfo{ID: id, Project: "p"}); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Println("registered")
	}
}
