package wire

import (
	"runtime"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/signet-io/signet/internal/procstat"
)

// BenchmarkOpen64 is the per-datagram server cost: parse the header, check
// the replay window, decrypt and authenticate a 64-byte payload, update the
// window. Target on a 2-core machine: ≤ 300 ns.
func BenchmarkOpen64(b *testing.B) {
	p := newPair(b)
	dev, srv := p.handshake(b, 1)
	const chunk = 4096
	msgs := make([][]byte, chunk)
	out := make([]byte, 0, MaxDatagramSize)
	payload := make([]byte, 64)
	b.SetBytes(64)
	b.ReportAllocs()
	for i := 0; i < b.N; {
		b.StopTimer()
		for j := range msgs {
			msgs[j], _ = dev.Seal(msgs[j][:0], payload)
		}
		b.StartTimer()
		for j := 0; j < chunk && i < b.N; j, i = j+1, i+1 {
			if _, ok := ParseHeader(msgs[j]); !ok {
				b.Fatal("header")
			}
			if _, err := srv.Open(out[:0], msgs[j]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkSeal64(b *testing.B) {
	p := newPair(b)
	dev, _ := p.handshake(b, 1)
	out := make([]byte, 0, MaxDatagramSize)
	payload := make([]byte, 64)
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		out, _ = dev.Seal(out[:0], payload)
	}
}

func initiations(b *testing.B, p *pair, n int) [][]byte {
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i], _, _ = p.in.AppendInitiation(nil, InitiationParams{SenderIndex: uint32(i), Timestamp: uint64(i)})
	}
	return msgs
}

// BenchmarkResponderHandshake is the server's cost of one handshake: mac1
// check, message 1, message 2. Target: ≥ 5,000 per second per core.
func BenchmarkResponderHandshake(b *testing.B) {
	p := newPair(b)
	msgs := initiations(b, p, 64)
	out := make([]byte, 0, MaxDatagramSize)
	i := 0
	b.ReportAllocs()
	cpu0 := procstat.CPUTime()
	for b.Loop() {
		m := msgs[i%len(msgs)]
		i++
		if !p.cc.CheckMAC1(m) {
			b.Fatal("mac1")
		}
		ini, err := p.r.ConsumeInitiation(m, p.lookup)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err = p.r.AppendResponse(out[:0], ini, uint32(i), PrivateKey{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
	reportCPU(b, cpu0)
}

// reportCPU reports the process's CPU time per operation since cpu0: on a
// machine shared with other work it moves less than the wall clock.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64((procstat.CPUTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkX25519 is one variable-base scalar multiplication (the
// Montgomery ladder), the floor under each of the responder's three
// Diffie-Hellman operations per handshake (es, ee, se).
func BenchmarkX25519(b *testing.B) {
	k, _ := GenerateKey(nil)
	peer, _ := GenerateKey(nil)
	pub := peer.Public()
	var out [32]byte
	cpu0 := procstat.CPUTime()
	for b.Loop() {
		x25519(&out, (*[32]byte)(&k), (*[32]byte)(&pub))
	}
	reportCPU(b, cpu0)
}

// BenchmarkX25519Base is the fixed-base multiplication that makes the
// responder's ephemeral public key, its fourth scalar multiplication.
func BenchmarkX25519Base(b *testing.B) {
	k, _ := GenerateKey(nil)
	var out [32]byte
	cpu0 := procstat.CPUTime()
	for b.Loop() {
		x25519Base(&out, (*[32]byte)(&k))
	}
	reportCPU(b, cpu0)
}

// BenchmarkFlynnResponderHandshake is the same work done by
// github.com/flynn/noise, for comparison.
func BenchmarkFlynnResponderHandshake(b *testing.B) {
	p := newPair(b)
	msgs := initiations(b, p, 64)
	srvPub := p.srv.Public()
	kp := noise.DHKey{Private: p.srv[:], Public: srvPub[:]}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		m := msgs[i%len(msgs)]
		i++
		hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: flynnSuite, Pattern: noise.HandshakeIK, Prologue: []byte(Prologue), StaticKeypair: kp})
		if err != nil {
			b.Fatal(err)
		}
		if _, _, _, err := hs.ReadMessage(nil, m[1+indexSize:len(m)-2*macSize]); err != nil {
			b.Fatal(err)
		}
		if _, _, _, err := hs.WriteMessage(nil, []byte{1, 2, 3, 4}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

func BenchmarkInitiatorHandshake(b *testing.B) {
	p := newPair(b)
	out := make([]byte, 0, MaxDatagramSize)
	for b.Loop() {
		_, _, _ = p.in.AppendInitiation(out[:0], InitiationParams{SenderIndex: 1, Timestamp: 1})
	}
}

// BenchmarkMAC1Reject is what a forged handshake costs a server that is
// defending itself: one keyed BLAKE2s over the message.
func BenchmarkMAC1Reject(b *testing.B) {
	p := newPair(b)
	m := initiations(b, p, 1)[0]
	m[len(m)-2*macSize] ^= 1
	for b.Loop() {
		if p.cc.CheckMAC1(m) {
			b.Fatal("accepted")
		}
	}
}

// sessionBytes returns the heap bytes one server-side session costs,
// counted from allocations (deterministic, unlike live heap sampling).
func sessionBytes(t testing.TB) float64 {
	const n = 1000
	keys := Keys{Send: [32]byte{1}, Recv: [32]byte{2}}
	sessions := make([]*Session, n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range sessions {
		sessions[i] = NewSession(&keys, uint32(i), uint32(i))
	}
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(sessions)
	return float64(after.TotalAlloc-before.TotalAlloc) / n
}

// TestSessionStateSize holds the design limit: a session's server-side
// state (keys, counters, replay window) in at most 512 bytes.
func TestSessionStateSize(t *testing.T) {
	if got := sessionBytes(t); got > 512 {
		t.Fatalf("a session costs %.0f bytes, limit 512", got)
	}
}

func BenchmarkSessionState(b *testing.B) {
	for b.Loop() {
		b.ReportMetric(sessionBytes(b), "B/session")
	}
}
