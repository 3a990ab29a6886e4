package bench

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/edwards25519"

	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/wire"
)

const targetHandshakesPerCore = 5000

// handshake measures the server's handshake capacity with the cookie
// defence out of the way, then the legitimate devices' success while a
// flood of forged initiations turns it on.
func (r *run) handshake(ctx context.Context) error {
	r.prog.set(Handshake, "reference: X25519 on one core")
	x := x25519Rate(ctx, min(r.cfg.Duration, 2*time.Second))
	base := x25519BaseRate(ctx, min(r.cfg.Duration, time.Second))
	// A responder's handshake takes three variable-base X25519 operations
	// (es, ee, se: ss is computed once per device at registration) and one
	// fixed-base multiplication for its ephemeral key, which wire does
	// with edwards25519's precomputed table at about 40 % of a ladder.
	// Counting that as a fourth ladder would understate what the Diffie-
	// Hellman work allows, and flatter the ratio.
	dhFloor := 1 / (3/x + 1/base)
	r.figure(Figure{Name: "ref: X25519 work of a handshake, one core", Value: dhFloor, Unit: "handshakes/s", IsReference: true,
		Note: fmt.Sprintf("%.0f X25519 scalar multiplications (crypto/ecdh) and %.0f fixed-base multiplications (edwards25519 table, as wire makes ephemeral keys) per CPU second; a responder's handshake needs three and one", x, base)})

	// Capacity.
	dir, err := r.newDir("handshake")
	if err != nil {
		return err
	}
	defer removeAll(dir)
	r.prog.set(Handshake, "capacity: starting the server")
	sys, err := r.startSystem(ctx, dir, systemOpts{handshakeRate: 1e9})
	if err != nil {
		return err
	}
	n := r.cfg.HandshakeDevices
	var cpu0 time.Duration
	var hs0 uint64
	var t0 time.Time
	r.prog.setLive(Handshake, fmt.Sprintf("capacity: %d devices handshake at once", n), func() string {
		return fmt.Sprintf("(%d answered)", sys.srv.Ingest().Stats().Handshakes.Load())
	})
	fp, conn, err := r.startLoadgenHook(ctx, sys, dir, lgConfig{Targets: []string{sys.srv.UDPAddr()}, Devices: n,
		Sockets: 16, HandshakeRate: 1e6, HandshakeTimeout: time.Second, HandshakeTries: 20}, func() {
		cpu0, hs0, t0 = procstat.CPUTime(), sys.srv.Ingest().Stats().Handshakes.Load(), time.Now()
	})
	if err != nil {
		sys.stop()
		return err
	}
	cpu := procstat.CPUTime() - cpu0
	wall := time.Since(t0)
	hs := sys.srv.Ingest().Stats().Handshakes.Load() - hs0
	fp.stop()
	sys.stop()
	perCore := float64(hs) / cpu.Seconds()
	r.figure(Figure{Name: "handshakes per core", Value: perCore, Unit: "handshakes/s", Reference: "X25519 work",
		Ratio: ratio(perCore, dhFloor), Target: fmt.Sprintf("≥ %d", targetHandshakesPerCore), Met: atLeast(perCore, targetHandshakesPerCore),
		Note: fmt.Sprintf("%d handshakes answered by the server over %.2f s of its process's CPU time (cookie defence off: HandshakeRate raised)", hs, cpu.Seconds())})
	r.figure(Figure{Name: "handshakes, wall clock", Value: float64(hs) / wall.Seconds(), Unit: "handshakes/s",
		Note: fmt.Sprintf("%d devices in %v, the load generator (initiators: 4 X25519 each) sharing the %d cores; %d initiations", conn.Sessions, wall.Round(time.Millisecond), r.rep.Machine.Cores, conn.Initiations)})
	r.check("every device got a session", conn.Sessions == n, "%d of %d devices", conn.Sessions, n)

	// Under a flood.
	return r.handshakeFlood(ctx)
}

func (r *run) handshakeFlood(ctx context.Context) error {
	dir, err := r.newDir("flood")
	if err != nil {
		return err
	}
	defer removeAll(dir)
	r.prog.set(Handshake, "flood: starting the server (default handshake budget)")
	// The server asks for cookies once it answers more than its budget
	// (HandshakeRate, default 1000/s). A machine too slow to process that
	// many forged initiations never gets there; smoke mode, which must
	// see the defence work on any machine, lowers the budget.
	var budget float64
	if r.cfg.Smoke {
		budget = 100
	}
	sys, err := r.startSystem(ctx, dir, systemOpts{handshakeRate: budget})
	if err != nil {
		return err
	}
	defer sys.stop()
	st := sys.srv.Ingest().Stats()
	forge, err := r.startChild(ctx, "forge", forgeConfig{Target: sys.srv.UDPAddr(), ServerKey: sys.srv.PublicKey(), Sockets: DefaultFloodSockets})
	if err != nil {
		return err
	}
	defer forge.stop()
	if err := forge.recv(ctx, "ready", nil, nil); err != nil {
		return err
	}
	if err := forge.send(msgGo, nil); err != nil {
		return err
	}
	// Let the flood exhaust the handshake budget first.
	if err := waitFor(ctx, 10*time.Second, "the cookie defence to engage", func() bool { return st.CookiesSent.Load() > 0 }); err != nil {
		if ctx.Err() != nil {
			return err
		}
		r.note(fmt.Sprintf("handshake: the forged flood did not exhaust the server's handshake budget within 10 s (it processed %d initiations): this machine cannot open more than the budget per second, so the cookie defence stayed off", st.HandshakeFailures.Load()))
	}
	legit := max(10, r.cfg.HandshakeDevices/4)
	c0, l0, f0 := st.CookiesSent.Load(), st.HandshakesLimited.Load(), st.HandshakeFailures.Load()
	d0 := st.Datagrams.Load()
	start := time.Now()
	r.prog.setLive(Handshake, fmt.Sprintf("flood: %d legitimate devices connect", legit), func() string {
		return fmt.Sprintf("(%d cookie replies, %d forged refused)", st.CookiesSent.Load()-c0, st.HandshakeFailures.Load()-f0)
	})
	tries := 10
	if r.cfg.Smoke {
		tries = 3
	}
	fp, conn, err := r.startLoadgen(ctx, sys, dir, lgConfig{Targets: []string{sys.srv.UDPAddr()}, Devices: legit,
		Sockets: DefaultFloodSockets, HandshakeTimeout: time.Second, HandshakeTries: tries, Partial: true})
	if err != nil {
		return err
	}
	defer fp.stop()
	elapsed := time.Since(start)
	var fr forgeResult
	_ = forge.send("stop", nil)
	if err := forge.recv(ctx, msgResult, &fr, nil); err != nil {
		return err
	}
	received := st.Datagrams.Load() - d0
	success := float64(conn.Sessions) / float64(legit)
	r.figure(Figure{Name: "legitimate handshakes that succeeded under flood", Value: 100 * success, Unit: "%",
		Note: fmt.Sprintf("%d of %d devices got a session in %v (%d tries each, 1 s apart), %d cookie replies answered, while %d sockets sent %d forged initiations (%.0f/s); the server read %d datagrams meanwhile",
			conn.Sessions, legit, elapsed.Round(time.Millisecond), tries, conn.CookieReplies, DefaultFloodSockets, fr.Sent, float64(fr.Sent)/fr.Elapsed.Seconds(), received)})
	r.figure(Figure{Name: "legitimate handshakes under flood", Value: float64(conn.Sessions) / elapsed.Seconds(), Unit: "handshakes/s",
		Note: "bounded by the per-source limit under load (5/s per source address and port) times the devices' 32 sockets"})
	r.figure(Figure{Name: "cookie replies sent during the flood", Value: float64(st.CookiesSent.Load()-c0) / elapsed.Seconds(), Unit: "replies/s",
		Note: fmt.Sprintf("%d handshakes refused by the per-source limit, %d initiations refused (forged)", st.HandshakesLimited.Load()-l0, st.HandshakeFailures.Load()-f0)})
	if r.cfg.Smoke {
		r.check("cookie defence active during the flood", st.CookiesSent.Load() > c0, "%d cookie replies", st.CookiesSent.Load()-c0)
	}
	return nil
}

// x25519Rate is X25519 scalar multiplications per second of CPU time on
// one core (per CPU second, like the handshake figure, so that other
// load on a shared machine does not skew the comparison). Nothing else
// of the bench runs meanwhile.
func x25519Rate(ctx context.Context, d time.Duration) float64 {
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	pub := peer.PublicKey()
	n := 0
	start, cpu0 := time.Now(), procstat.CPUTime()
	for time.Since(start) < d && ctx.Err() == nil {
		for range 64 {
			_, _ = k.ECDH(pub)
		}
		n += 64
	}
	return float64(n) / (procstat.CPUTime() - cpu0).Seconds()
}

// x25519BaseRate is fixed-base multiplications per CPU second on one core,
// made as wire makes a responder's ephemeral public key: edwards25519's
// precomputed base-point table, mapped to the Montgomery u coordinate.
func x25519BaseRate(ctx context.Context, d time.Duration) float64 {
	var k [32]byte
	_, _ = rand.Read(k[:])
	n := 0
	start, cpu0 := time.Now(), procstat.CPUTime()
	for time.Since(start) < d && ctx.Err() == nil {
		for range 64 {
			s, _ := edwards25519.NewScalar().SetBytesWithClamping(k[:])
			k[0] ^= new(edwards25519.Point).ScalarBaseMult(s).BytesMontgomery()[0]
		}
		n += 64
	}
	return float64(n) / (procstat.CPUTime() - cpu0).Seconds()
}

type forgeConfig struct {
	Target    string         `json:"target"`
	ServerKey wire.PublicKey `json:"server_key"`
	Sockets   int            `json:"sockets"`
}

type forgeResult struct {
	Sent    uint64        `json:"sent"`
	Elapsed time.Duration `json:"elapsed"`
}

// childForge floods the server with initiations from keys it does not
// know: each carries a valid mac1 (anyone can compute it from the server's
// public key), so that without the cookie defence each would cost the
// server a Diffie-Hellman. It sends from many sockets and never reads
// what comes back, like an attacker spoofing sources.
func childForge(ctx context.Context, cio *childIO, raw json.RawMessage) error {
	var cfg forgeConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	addr, err := net.ResolveUDPAddr("udp", cfg.Target)
	if err != nil {
		return err
	}
	pool := make([][]byte, 256)
	for i := range pool {
		k, err := wire.GenerateKey(nil)
		if err != nil {
			return err
		}
		in, err := wire.NewInitiator(k, cfg.ServerKey)
		k.Zero()
		if err != nil {
			return err
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		dg, ph, err := in.AppendInitiation(nil, wire.InitiationParams{SenderIndex: binary.LittleEndian.Uint32(b[:]),
			Timestamp: uint64(time.Now().UnixNano()), Cookie: &wire.Cookie{}, Now: time.Now()})
		if err != nil {
			return err
		}
		ph.Zero()
		in.Zero()
		pool[i] = dg
	}
	var conns []*net.UDPConn
	for range max(1, cfg.Sockets) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		defer c.Close()
		conns = append(conns, c)
	}
	if err := cio.send("ready", nil); err != nil {
		return err
	}
	if err := cio.wait(ctx, msgGo, nil); err != nil {
		return err
	}
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = cio.wait(ctx, "stop", nil); stop() }()
	var sent atomic.Uint64
	start := time.Now()
	var wg sync.WaitGroup
	// Two senders, each cycling over half the sockets.
	for k := range 2 {
		wg.Go(func() {
			n := uint64(0)
			for i := k; fctx.Err() == nil; i += 2 {
				if _, err := conns[i%len(conns)].WriteToUDP(pool[i%len(pool)], addr); err == nil {
					n++
				}
			}
			sent.Add(n)
		})
	}
	wg.Wait()
	if err := cio.send(msgResult, forgeResult{Sent: sent.Load(), Elapsed: time.Since(start)}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
