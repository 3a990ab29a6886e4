package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/loadgen"
	"github.com/signet-io/signet/internal/wire"
)

// maxFleet bounds the devices of one load generator process.
const maxFleet = loadgen.MaxDevices

// maxPaced bounds a paced rate of the ingest scenario (readings/s): more
// than ten times what a 2-core machine stores at full speed.
const maxPaced = 1_000_000

// lgConfig configures a load generator child: one loadgen.Generator per
// target, the devices (and rate, count) split evenly over them.
type lgConfig struct {
	Targets          []string       `json:"targets"`
	ServerKey        wire.PublicKey `json:"server_key"`
	Devices          int            `json:"devices"`
	Batch            int            `json:"batch"`
	Window           int            `json:"window"`
	Rate             float64        `json:"rate"`
	Duration         time.Duration  `json:"duration"`
	Count            int64          `json:"count"`
	Sockets          int            `json:"sockets"`
	Senders          int            `json:"senders"`
	HandshakeRate    float64        `json:"handshake_rate"`
	HandshakeTimeout time.Duration  `json:"handshake_timeout"`
	HandshakeTries   int            `json:"handshake_tries"`
	RetransmitAfter  time.Duration  `json:"retransmit_after"`
	Drain            time.Duration  `json:"drain"`
	// KeysFile receives the devices' public keys (32 bytes each, in
	// device order) before the handshakes; SentFile, at the end, the
	// highest sequence each device sent (8 bytes each, little endian).
	KeysFile string `json:"keys_file"`
	SentFile string `json:"sent_file"`
	// Partial tolerates devices that get no session (the flood): Connect
	// reports how many did instead of failing.
	Partial bool `json:"partial"`
}

type lgConnected struct {
	Devices       int           `json:"devices"`
	Sessions      int           `json:"sessions"`
	Initiations   uint64        `json:"initiations"`
	CookieReplies uint64        `json:"cookie_replies"`
	Elapsed       time.Duration `json:"elapsed"`
	Err           string        `json:"err,omitempty"`
}

type lgProgress struct {
	Readings, Acked uint64
}

type lgResult struct {
	Readings, Acked, Unacked, Datagrams, Resent uint64
	Generating, Draining                        time.Duration
	Err                                         string `json:",omitempty"`
}

// Messages of the load generator's conversation, in order.
const (
	msgKeys       = "keys"       // child: the keys are in KeysFile
	msgRegistered = "registered" // parent: the server knows them
	msgConnected  = "connected"  // child: lgConnected
	msgRun        = "run"        // parent: start sending readings
	msgProgress   = "progress"   // child: lgProgress, twice a second
	msgResult     = "result"     // child: lgResult; SentFile is written
)

func split(total, parts, k int) int {
	n := total / parts
	if k < total%parts {
		n++
	}
	return n
}

func childLoadgen(ctx context.Context, cio *childIO, raw json.RawMessage) error {
	var cfg lgConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	if len(cfg.Targets) == 0 || cfg.Devices < len(cfg.Targets) {
		return errors.New("loadgen: need a target and at least a device per target")
	}
	var gens []*loadgen.Generator
	defer func() {
		for _, g := range gens {
			g.Close()
		}
	}()
	n := len(cfg.Targets)
	for k, t := range cfg.Targets {
		g, err := loadgen.New(loadgen.Config{
			Target: t, ServerKey: cfg.ServerKey, Devices: split(cfg.Devices, n, k), Batch: cfg.Batch, Window: cfg.Window,
			Rate: cfg.Rate / float64(n), Duration: cfg.Duration, Count: int64(split(int(cfg.Count), n, k)),
			Sockets: cfg.Sockets, Senders: cfg.Senders, HandshakeRate: cfg.HandshakeRate / float64(n),
			HandshakeTimeout: cfg.HandshakeTimeout, HandshakeTries: cfg.HandshakeTries,
			RetransmitAfter: cfg.RetransmitAfter, Drain: cfg.Drain,
		})
		if err != nil {
			return err
		}
		gens = append(gens, g)
	}
	keys := make([]byte, 0, 32*cfg.Devices)
	for _, g := range gens {
		for i := range g.Devices() {
			k := g.PublicKey(i)
			keys = append(keys, k[:]...)
		}
	}
	if err := os.WriteFile(cfg.KeysFile, keys, 0o600); err != nil {
		return err
	}
	if err := cio.send(msgKeys, nil); err != nil {
		return err
	}
	if err := cio.wait(ctx, msgRegistered, nil); err != nil {
		return err
	}
	start := time.Now()
	errs := make([]error, len(gens))
	var wg sync.WaitGroup
	for k, g := range gens {
		wg.Go(func() { errs[k] = g.Connect(ctx) })
	}
	wg.Wait()
	c := lgConnected{Devices: cfg.Devices, Elapsed: time.Since(start)}
	for _, g := range gens {
		st := g.Stats()
		c.Sessions += int(st.Handshakes.Load())
		c.Initiations += st.Initiations.Load()
		c.CookieReplies += st.CookieReplies.Load()
	}
	if err := errors.Join(errs...); err != nil {
		c.Err = err.Error()
		if !cfg.Partial {
			return err
		}
	}
	if err := cio.send(msgConnected, c); err != nil {
		return err
	}
	if err := cio.wait(ctx, msgRun, nil); err != nil {
		return err
	}
	results := make([]loadgen.Result, len(gens))
	done := make(chan struct{})
	for k, g := range gens {
		wg.Go(func() { results[k], errs[k] = g.Run(ctx) })
	}
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
progress:
	for {
		select {
		case <-done:
			break progress
		case <-tick.C:
			var p lgProgress
			for _, g := range gens {
				p.Readings += g.Stats().Readings.Load()
				p.Acked += g.Stats().Acks.Load()
			}
			_ = cio.send(msgProgress, p)
		}
	}
	var res lgResult
	for _, r := range results {
		res.Readings += r.Readings
		res.Acked += r.Acked
		res.Unacked += r.Unacked
		res.Datagrams += r.Datagrams
		res.Resent += r.Resent
		res.Generating = max(res.Generating, r.Generating)
		res.Draining = max(res.Draining, r.Draining)
	}
	if err := errors.Join(errs...); err != nil {
		res.Err = err.Error()
	}
	sent := make([]byte, 0, 8*cfg.Devices)
	for _, g := range gens {
		for i := range g.Devices() {
			sent = binary.LittleEndian.AppendUint64(sent, g.Sent(i))
		}
	}
	if err := os.WriteFile(cfg.SentFile, sent, 0o600); err != nil {
		return err
	}
	if err := cio.send(msgResult, res); err != nil {
		return err
	}
	<-ctx.Done() // until the parent lets go
	return nil
}

// fleetProc is a load generator child seen from the bench.
type fleetProc struct {
	c        *child
	cfg      lgConfig
	ids      []int64
	progress lgProgress
	mu       sync.Mutex
}

// startLoadgen starts a load generator child for cfg on sys, registers its
// devices and waits for their handshakes.
func (r *run) startLoadgen(ctx context.Context, sys *system, dir string, cfg lgConfig) (*fleetProc, lgConnected, error) {
	return r.startLoadgenHook(ctx, sys, dir, cfg, nil)
}

// startLoadgenHook is startLoadgen calling registered, if set, once the
// devices are registered, just before their handshakes start.
func (r *run) startLoadgenHook(ctx context.Context, sys *system, dir string, cfg lgConfig, registered func()) (*fleetProc, lgConnected, error) {
	var conn lgConnected
	cfg.ServerKey = sys.srv.PublicKey()
	cfg.KeysFile = dir + "/keys.bin"
	cfg.SentFile = dir + "/sent.bin"
	c, err := r.startChild(ctx, "loadgen", cfg)
	if err != nil {
		return nil, conn, err
	}
	f := &fleetProc{c: c, cfg: cfg}
	fail := func(err error) (*fleetProc, lgConnected, error) { c.stop(); return nil, conn, err }
	if err := c.recv(ctx, msgKeys, nil, nil); err != nil {
		return fail(err)
	}
	b, err := os.ReadFile(cfg.KeysFile)
	if err != nil {
		return fail(err)
	}
	if len(b) != 32*cfg.Devices {
		return fail(fmt.Errorf("bench: %d bytes of keys for %d devices", len(b), cfg.Devices))
	}
	keys := make([]wire.PublicKey, cfg.Devices)
	for i := range keys {
		copy(keys[i][:], b[32*i:])
	}
	if f.ids, err = sys.register(ctx, keys); err != nil {
		return fail(err)
	}
	if registered != nil {
		registered()
	}
	if err := c.send(msgRegistered, nil); err != nil {
		return fail(err)
	}
	if err := c.recv(ctx, msgConnected, &conn, nil); err != nil {
		return fail(err)
	}
	return f, conn, nil
}

// run starts the readings and waits for the child's result; the progress
// is kept in f.progress meanwhile.
func (f *fleetProc) run(ctx context.Context) (lgResult, []uint64, error) {
	var res lgResult
	if err := f.c.send(msgRun, nil); err != nil {
		return res, nil, err
	}
	err := f.c.recv(ctx, msgResult, &res, func(m message) {
		if m.Kind == msgProgress {
			var p lgProgress
			if json.Unmarshal(m.Data, &p) == nil {
				f.mu.Lock()
				f.progress = p
				f.mu.Unlock()
			}
		}
	})
	if err != nil {
		return res, nil, err
	}
	b, err := os.ReadFile(f.cfg.SentFile)
	if err != nil {
		return res, nil, err
	}
	sent := make([]uint64, len(b)/8)
	for i := range sent {
		sent[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return res, sent, nil
}

func (f *fleetProc) sent() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.progress.Readings
}

func (f *fleetProc) stop() { f.c.stop() }

func sum(xs []uint64) int64 {
	var n int64
	for _, x := range xs {
		n += int64(x)
	}
	return n
}
