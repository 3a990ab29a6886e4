package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

const targetBytesPerSession = 512

// fleet registers a large fleet, gives every device a session, and has
// each send at a low rate while the server's memory is watched. The
// devices talk to the server's own UDP port, so that the process's
// memory is the server's alone (a relay in the same process would add its
// own per-device state).
func (r *run) fleet(ctx context.Context) error {
	for _, n := range r.cfg.FleetSizes {
		if err := r.fleetStep(ctx, n); err != nil {
			return err
		}
	}
	if !r.cfg.Smoke && !slices.Contains(r.cfg.FleetSizes, 1_000_000) {
		missing := "1,000,000"
		if !slices.Contains(r.cfg.FleetSizes, 100_000) {
			missing = "100,000 and 1,000,000"
		}
		r.note(fmt.Sprintf("fleet: ran %v devices, not the issue's %s: those take minutes on %d cores (keys, registration and handshakes cost about eight X25519 operations per device); run them with --fleet 100000,1000000", r.cfg.FleetSizes, missing, r.rep.Machine.Cores))
	}
	return nil
}

func (r *run) fleetStep(ctx context.Context, n int) error {
	dir, err := r.newDir("fleet")
	if err != nil {
		return err
	}
	defer removeAll(dir)
	label := fmt.Sprintf("%d devices", n)
	r.prog.set(Fleet, label+": starting the server")
	sys, err := r.startSystem(ctx, dir, systemOpts{handshakeRate: 1e9})
	if err != nil {
		return err
	}
	defer sys.stop()
	heap0, rss0 := r.liveFloor(ctx)
	var heap1, rss1 uint64
	var regAt time.Time
	r.prog.setLive(Fleet, label+": generating keys, registering, handshaking", func() string {
		return fmt.Sprintf("(%d sessions)", sys.srv.Ingest().Stats().Handshakes.Load())
	})
	period := r.cfg.FleetPeriod
	if r.cfg.Smoke {
		period = r.cfg.FleetDuration / 2
	}
	period = min(period, r.cfg.FleetDuration/2)
	rate := float64(n) / period.Seconds()
	fp, conn, err := r.startLoadgenHook(ctx, sys, dir, lgConfig{Targets: []string{sys.srv.UDPAddr()}, Devices: n,
		// Paced near what two cores answer; a long timeout, so that a
		// response queued behind others is not taken for a loss (an
		// initiation sent again costs the server a handshake more).
		Sockets: 16, HandshakeRate: 3000, HandshakeTimeout: 10 * time.Second, HandshakeTries: 30,
		Window: 4, Rate: rate, Duration: r.cfg.FleetDuration, Drain: 60 * time.Second}, func() {
		heap1, rss1 = r.liveFloor(ctx)
		regAt = time.Now()
	})
	if err != nil {
		return err
	}
	defer fp.stop()
	hsTime := time.Since(regAt)
	heap2, rss2 := r.liveFloor(ctx)
	perDev := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }

	// Low-rate traffic; the memory sampled (the floor of several samples,
	// each after a collection) at the end of the first pass over the fleet
	// (the warm-up: every device's first reading creates its per-device
	// state) and four times after.
	type sample struct {
		at        time.Duration
		heap, rss uint64
	}
	var samples []sample
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5 {
			sleepUntil(ctx, start.Add(period+(r.cfg.FleetDuration-period)*time.Duration(i)/4))
			if ctx.Err() != nil {
				return
			}
			h, s := r.liveFloor(ctx)
			samples = append(samples, sample{time.Since(start), h, s})
		}
	}()
	r.prog.setLive(Fleet, label+": sending at a low rate, memory watched", func() string {
		return fmt.Sprintf("(%d readings sent)", fp.sent())
	})
	gen, sent, err := fp.run(ctx)
	<-done
	if err != nil {
		return err
	}
	want := sum(sent)
	_, _ = sys.waitStored(ctx, want, 60*time.Second)
	stored, _ := sys.count(ctx)
	elapsed := time.Since(start)
	check, err := sys.checkDevices(ctx, fp.ids, sent)
	if err != nil {
		return err
	}

	r.figure(Figure{Name: fmt.Sprintf("server RSS per idle device session, %s", label), Value: perDev(rss1, rss2), Unit: "bytes",
		Target: fmt.Sprintf("≤ %d", targetBytesPerSession), Met: atMost(perDev(rss1, rss2), targetBytesPerSession),
		Note: fmt.Sprintf("process resident set %d → %d MiB over %d handshakes in %v (cookie defence off: HandshakeRate raised); RSS after every free page went back to the system (debug.FreeOSMemory): the live heap, its partly used pages, goroutine stacks and SQLite's own memory", rss1>>20, rss2>>20, conn.Sessions, hsTime.Round(time.Millisecond))})
	r.figure(Figure{Name: fmt.Sprintf("server live heap per idle device session, %s", label), Value: perDev(heap1, heap2), Unit: "bytes",
		Target: fmt.Sprintf("≤ %d", targetBytesPerSession), Met: atMost(perDev(heap1, heap2), targetBytesPerSession),
		Note: "live heap after a full collection (the floor of samples over one housekeeping period), before and after the handshakes"})
	r.figure(Figure{Name: fmt.Sprintf("server live heap per registered device, %s", label), Value: perDev(heap0, heap1), Unit: "bytes",
		Note: fmt.Sprintf("registry entry before any session; RSS %d → %d MiB", rss0>>20, rss1>>20)})
	r.figure(Figure{Name: fmt.Sprintf("stored readings, %s at a low rate", label), Value: float64(stored) / elapsed.Seconds(), Unit: "readings/s",
		Note: fmt.Sprintf("paced at %.0f/s (each device once every %v) for %v; %d stored in %v, until the last was stored", rate, period, r.cfg.FleetDuration, stored, elapsed.Round(time.Millisecond))})
	if len(samples) >= 3 {
		// From the end of the warm-up to the end.
		a, b := samples[0], samples[len(samples)-1]
		growth := perDev(a.heap, b.heap)
		r.figure(Figure{Name: fmt.Sprintf("heap growth after warm-up, %s", label), Value: growth, Unit: "bytes/device",
			Target: "≈ 0 (flat)", Met: boolp(growth <= 0.05*math.Abs(perDev(heap1, heap2))+16),
			Note: fmt.Sprintf("live heap %d → %d MiB from %v to %v of sending; RSS %d → %d MiB", a.heap>>20, b.heap>>20,
				a.at.Round(time.Second), b.at.Round(time.Second), a.rss>>20, b.rss>>20)})
	}
	// A reading never acknowledged is still the device's (it would send
	// it again), not one the server lost; the count tells an overload
	// that outlasted the generator's drain from a loss.
	r.check(fmt.Sprintf("exactly once, %s", label), check.ok() && conn.Sessions == n, "%v; %d of %d devices had a session; %d resent; %d never acknowledged when the generator stopped",
		check, conn.Sessions, n, gen.Resent, gen.Unacked)
	return nil
}

// housekeepingPeriod is how often the server saves device statuses and
// reloads its registry (server.housekeeping).
const housekeepingPeriod = 2 * time.Second

// liveFloor is the smallest live heap of several samples, each after a
// full collection, spread over a little more than one housekeeping period,
// with the RSS of that sample. A single sample may land while the
// housekeeping holds a snapshot of every registered device (the registry
// reload reads the whole devices table) or a status flush: transient, but
// some 200 bytes per device at 20,000 devices, which moved the per-session
// figure by as much from run to run (605 bytes in one run, 282 in the
// next, with the registered-device figure moving the other way). The floor
// is the memory the server keeps. Smoke runs judge no figure and take one
// sample.
func (r *run) liveFloor(ctx context.Context) (heap, rss uint64) {
	samples := 6
	if r.cfg.Smoke {
		samples = 1
	}
	for i := range samples {
		if i > 0 {
			sleepUntil(ctx, time.Now().Add(housekeepingPeriod*6/5/time.Duration(samples-1)))
		}
		h, r := memory()
		if i == 0 || h < heap {
			heap, rss = h, r
		}
	}
	return heap, rss
}
