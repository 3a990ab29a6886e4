package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/sim"
	"github.com/signet-io/signet/internal/wire"
)

// The recovery scenario: a fleet of real devices (the device SDK, each
// with its durable outbox) sends through two relays with overlapping
// coverage; the server stops for the outage while the devices keep
// recording and the relays buffer; then it starts again on the same data
// directory and ports, and the bench times how long until every reading
// recorded is stored, counting losses and duplicates in the store and at
// an SSE client that stayed subscribed throughout (resuming with
// Last-Event-ID).

const (
	recoveryRate   = 5.0 // readings per second per device
	recoveryBefore = 2 * time.Second
)

type fleetConfig struct {
	Dir       string         `json:"dir"`
	ServerKey wire.PublicKey `json:"server_key"`
	Relays    []string       `json:"relays"`
	Devices   int            `json:"devices"`
	Rate      float64        `json:"rate"`
	Count     int            `json:"count"`
	// TwoWayOnly leaves out the transmit-only pour sensors.
	TwoWayOnly bool `json:"two_way_only"`
}

type fleetProgress struct {
	Pending int `json:"pending"`
}

// childFleet runs a simulated fleet whose keys the parent created and
// registered, reporting the readings awaiting acknowledgement.
func childFleet(ctx context.Context, cio *childIO, raw json.RawMessage) error {
	var cfg fleetConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	fleet, wait, err := sim.StartFleet(ctx, sim.FleetConfig{Devices: cfg.Devices, Dir: cfg.Dir, ServerKey: cfg.ServerKey,
		Relays: cfg.Relays, InRange: min(2, len(cfg.Relays)), Rate: cfg.Rate, Count: cfg.Count,
		// Every fourth device, from the third, is transmit-only (recovery
		// relies on this order).
		Kinds:   []wire.Kind{wire.KindTemperature, wire.KindHumidity, wire.KindPour, wire.KindNumeric},
		Options: func(o *device.Options) { o.RetransmitAfter = 500 * time.Millisecond }})
	if err != nil {
		return err
	}
	defer wait()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = cio.send(msgProgress, fleetProgress{Pending: fleet.Pending()})
		}
	}
}

func (r *run) recovery(ctx context.Context) error {
	dir, err := r.newDir("recovery")
	if err != nil {
		return err
	}
	defer removeAll(dir)
	r.prog.set(Recovery, "starting the server and two relays")
	sys, err := r.startSystem(ctx, dir, systemOpts{relays: 2, fixedPorts: true})
	if err != nil {
		return err
	}
	defer sys.stop()
	n := r.cfg.RecoveryDevices
	// The devices record until half way through the outage.
	count := int(recoveryRate * (recoveryBefore + r.cfg.Outage/2).Seconds())
	total := int64(n * count)
	fleetDir := filepath.Join(dir, "fleet")
	keys := make([]wire.PublicKey, n)
	for i := range n {
		k, err := device.LoadOrCreateKey(filepath.Join(fleetDir, fmt.Sprintf("device-%d", i), "device.key"))
		if err != nil {
			return err
		}
		keys[i] = k.Public()
		k.Zero()
	}
	ids, err := sys.register(ctx, keys)
	if err != nil {
		return err
	}
	sse := watchSSE(sys.srv.APIURL(), sys.token)
	defer sse.stop()
	ch, err := r.startChild(ctx, "fleet", fleetConfig{Dir: fleetDir, ServerKey: sys.srv.PublicKey(), Relays: sys.relayAddrs(),
		Devices: n, Rate: recoveryRate, Count: count, TwoWayOnly: r.cfg.Smoke})
	if err != nil {
		return err
	}
	defer ch.stop()
	var pending atomic.Int64
	pending.Store(-1)
	go func() {
		_ = ch.recv(ctx, "never", nil, func(m message) {
			var p fleetProgress
			if m.Kind == msgProgress && json.Unmarshal(m.Data, &p) == nil {
				pending.Store(int64(p.Pending))
			}
		})
	}()
	start := time.Now()
	stored := func() int64 { c, _ := sys.count(ctx); return c }
	r.prog.setLive(Recovery, fmt.Sprintf("%d devices record %d readings each", n, count), func() string {
		return fmt.Sprintf("(%d stored)", stored())
	})
	sleepUntil(ctx, start.Add(recoveryBefore))
	before := stored()
	r.prog.set(Recovery, fmt.Sprintf("server down for %v", r.cfg.Outage))
	sys.stopServer()
	down := time.Now()
	sleepUntil(ctx, down.Add(r.cfg.Outage))
	var buffered int
	for _, rl := range sys.relays {
		buffered += rl.Buffered()
	}
	pendingAtRestart := pending.Load()
	if err := sys.startServer(ctx); err != nil {
		return err
	}
	restarted := time.Now()
	r.prog.setLive(Recovery, "server back: draining outboxes and relay buffers", func() string {
		return fmt.Sprintf("(%d of %d stored, %d awaiting acknowledgement)", stored(), total, pending.Load())
	})
	// Two-way devices (the sim fleet makes every fourth, from the third,
	// a transmit-only pour sensor) drain through their outboxes and
	// acknowledgements; transmit-only ones through the relays' buffers
	// and their repeats.
	twoWay := map[int64]bool{}
	for i, id := range ids {
		twoWay[id] = i%4 != 2 || r.cfg.Smoke
	}
	if r.cfg.Smoke {
		r.note("recovery: smoke mode leaves out the transmit-only devices, whose readings can take tens of seconds to drain")
	}
	var drainTwoWay time.Duration
	drained := waitFor(ctx, 120*time.Second, "every reading stored and acknowledged", func() bool {
		if drainTwoWay == 0 && pending.Load() == 0 {
			if tw, _ := sys.countWhere(ctx, twoWay); tw >= int64(count)*int64(countTrue(twoWay)) {
				drainTwoWay = time.Since(restarted)
			}
		}
		return stored() >= total && drainTwoWay > 0
	}) == nil
	drain := time.Since(restarted)
	waitQuiet(ctx, 60*time.Second, 5*time.Second, func() int64 { return sse.n.Load() }, total)
	// Anything late would show now.
	time.Sleep(200 * time.Millisecond)
	final := stored()
	sent := make([]uint64, n)
	for i := range sent {
		sent[i] = uint64(count)
	}
	check, err := sys.checkDevices(ctx, ids, sent)
	if err != nil {
		return err
	}
	how := fmt.Sprintf("from the restart until all %d readings were stored and acknowledged", total)
	if !drained {
		how = fmt.Sprintf("NOT DRAINED: %d of %d readings stored when the bench gave up, %v after the restart", final, total, drain.Round(time.Second))
	}
	r.figure(Figure{Name: fmt.Sprintf("drain time after a %v outage", r.cfg.Outage), Value: drain.Seconds(), Unit: "s",
		Note: fmt.Sprintf("%s; at the restart the relays held %d datagrams and the devices %d unacknowledged readings; %d were stored before the outage",
			how, buffered, pendingAtRestart, before)})
	lost := check.missing
	dups := check.extra + sse.dups.Load()
	if drainTwoWay > 0 && !r.cfg.Smoke {
		r.figure(Figure{Name: "drain time, two-way devices only", Value: drainTwoWay.Seconds(), Unit: "s",
			Note: fmt.Sprintf("%d devices that hear acknowledgements: outbox resent after a new handshake; the other %d are transmit-only (pour sensors), whose readings come from the relays' buffers and the devices' repeats", countTrue(twoWay), n-countTrue(twoWay))})
	}
	r.figure(Figure{Name: "readings lost", Value: float64(lost), Unit: "readings", Target: "0", Met: boolp(lost == 0)})
	r.figure(Figure{Name: "readings duplicated", Value: float64(dups), Unit: "readings", Target: "0", Met: boolp(dups == 0),
		Note: fmt.Sprintf("in the store (unexpected sequences) and at the SSE client (%d events for %d readings, %d reconnects)", sse.n.Load(), final, sse.conns.Load()-1)})
	r.check("nothing lost or duplicated across the outage", drained && check.ok() && sse.dups.Load() == 0 && sse.n.Load() == total,
		"%v; SSE client got %d events for %d readings, %d duplicates", check, sse.n.Load(), total, sse.dups.Load())
	return nil
}

func countTrue(m map[int64]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }
