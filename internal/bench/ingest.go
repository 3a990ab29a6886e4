package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// Targets of the ingest scenario (docs/performance.md explains them).
const (
	targetUplinks      = 100_000
	targetCeilingRatio = 0.6
	targetMQTTRatio    = 1.5
	targetSSEP99       = 25 * time.Millisecond
)

// ingestResult is one run of readings through the relays into the store.
type ingestResult struct {
	stored  int64
	elapsed time.Duration // from the first reading sent to the last stored
	rate    float64       // stored readings per second over elapsed
	steady  float64       // stored per second over the second half of the generation
	// The machine over the same half: the share of its CPU time that was
	// busy (every process, the kernel's included) and busy CPU time per
	// reading stored; and the CPU time of this process (server, relays,
	// SSE client) per reading stored.
	cpuShare                      float64
	cpuPerReading, procPerReading time.Duration
	durable                       percentiles // relay receive → published after commit
	sse                           percentiles // relay receive → SSE client
	sseTail                       tail
	sseN                          int64
	sseDups                       int64
	cuts                          int64  // times the hub cut the latency subscriber
	acks                          uint64 // acknowledgements the server sent
	ckpt                          sqlite.CheckpointStats
	// The store writer's appends over the second half (writerOver long).
	writer     sqlite.AppendStats
	writerOver time.Duration
	check      deviceCheck
	gen        lgResult
}

// ingestRun runs the server with relays relays and the load generator
// for the configured duration, at rate readings/s (0: as fast as the
// server acknowledges), and counts what is stored.
func (r *run) ingestRun(ctx context.Context, label string, relays int, rate float64, withSSE bool) (ingestResult, error) {
	var res ingestResult
	dir, err := r.newDir("ingest")
	if err != nil {
		return res, err
	}
	defer removeAll(dir)
	r.prog.set(r.scenario, label+": starting the server and relays")
	sys, err := r.startSystem(ctx, dir, systemOpts{relays: relays, handshakeRate: 20000})
	if err != nil {
		return res, err
	}
	defer sys.stop()
	devices := max(r.cfg.Devices, relays)
	lg := lgConfig{Targets: sys.relayAddrs(), Devices: devices, Batch: r.cfg.Batch,
		Window: max(1, min(64, store.MaxAppend/devices)), Rate: rate, Duration: r.cfg.Duration,
		HandshakeRate: 4000, Drain: 60 * time.Second}
	r.prog.set(r.scenario, label+": registering and connecting the devices")
	fp, _, err := r.startLoadgen(ctx, sys, dir, lg)
	if err != nil {
		return res, err
	}
	defer fp.stop()
	hub := watchHub(sys.srv)
	defer hub.stop()
	var sse *sseWatch
	if withSSE {
		sse = watchSSE(sys.srv.APIURL(), sys.token)
		defer sse.stop()
	}
	start := time.Now()
	half, end := start.Add(r.cfg.Duration/2), start.Add(r.cfg.Duration)
	// The readings the store committed at half time and at the end of
	// generation (its writer's count: a COUNT(*) there would disturb what
	// is measured), and how busy the machine was in between. The channel
	// is buffered: an early return leaves nothing blocked and nothing
	// shared.
	type secondHalf struct {
		steady, cpuShare              float64
		cpuPerReading, procPerReading time.Duration
		writer                        sqlite.AppendStats
	}
	second := make(chan secondHalf, 1)
	appendStats := func() sqlite.AppendStats {
		if st, ok := sys.srv.Store().(interface{ AppendStats() sqlite.AppendStats }); ok {
			return st.AppendStats()
		}
		return sqlite.AppendStats{}
	}
	go func() {
		var h secondHalf
		sleepUntil(ctx, half)
		c1, _ := sys.committed(ctx)
		m1, ok1 := procstat.MachineCPU()
		p1 := procstat.CPUTime()
		w1 := appendStats()
		sleepUntil(ctx, end)
		c2, _ := sys.committed(ctx)
		m2, ok2 := procstat.MachineCPU()
		p2 := procstat.CPUTime()
		h.writer = appendStats().Sub(w1)
		h.steady = float64(c2-c1) / end.Sub(half).Seconds()
		if ok1 && ok2 && c2 > c1 {
			var busy time.Duration
			h.cpuShare, busy = m2.Since(m1)
			h.cpuPerReading = busy / time.Duration(c2-c1)
			h.procPerReading = (p2 - p1) / time.Duration(c2-c1)
		}
		second <- h
	}()
	r.prog.setLive(r.scenario, label+": sending", func() string {
		return fmt.Sprintf("(%d readings sent, %d delivered to the hub)", fp.sent(), hub.n.Load())
	})
	gen, sent, err := fp.run(ctx)
	if err != nil {
		return res, err
	}
	res.gen = gen
	want := sum(sent)
	if stored, err := sys.waitStored(ctx, want, 60*time.Second); err != nil {
		r.log.Warn("not every reading stored", "stored", stored, "sent", want)
	}
	res.elapsed = time.Since(start)
	h := <-second
	res.steady, res.cpuShare, res.cpuPerReading, res.procPerReading = h.steady, h.cpuShare, h.cpuPerReading, h.procPerReading
	res.writer, res.writerOver = h.writer, end.Sub(half)
	res.stored, _ = sys.count(ctx)
	res.rate = float64(res.stored) / res.elapsed.Seconds()
	res.acks = sys.srv.Ingest().Stats().Acks.Load()
	if st, ok := sys.srv.Store().(interface{ CheckpointStats() sqlite.CheckpointStats }); ok {
		res.ckpt = st.CheckpointStats()
	}
	if res.check, err = sys.checkDevices(ctx, fp.ids, sent); err != nil {
		return res, err
	}
	// Wait for the hub to publish the last reading stored (hubWatch: a
	// count would wait for readings a cut subscriber never sees).
	if last, err := sys.lastID(ctx); err == nil {
		if err := waitFor(ctx, 10*time.Second, "the live hub's last reading", func() bool { return hub.last.Load() >= last }); err != nil {
			r.log.Warn("latency samples may be missing", "err", err)
		}
	}
	hub.stop()
	res.durable, res.cuts = hub.lat.percentiles(), hub.cut.Load()
	if sse != nil {
		waitQuiet(ctx, 60*time.Second, 5*time.Second, func() int64 { return sse.n.Load() }, res.stored)
		sse.stop()
		res.sse, res.sseN, res.sseDups = sse.lat.percentiles(), sse.n.Load(), sse.dups.Load()
		res.sseTail = sse.lat.tail(res.sse.p99)
	}
	if gen.Err != "" {
		r.log.Warn("load generator", "err", gen.Err)
	}
	return res, nil
}

// How long the references that no figure is divided by run: the stock
// Mosquitto (recorded beside the tuned one) and the fsync latency (a p99
// from a thousand samples or more).
const (
	stockMQTTDuration = 2 * time.Second
	fsyncRefDuration  = time.Second
)

func (r *run) ingest(ctx context.Context) error {
	d := r.cfg.Duration
	batch := r.cfg.Batch
	dg, pt, err := sampleDatagram(batch)
	if err != nil {
		return err
	}
	unit := "uplinks/s"
	sizes := fmt.Sprintf("%d-byte datagrams (%d readings of ~%d bytes)", len(dg), batch, len(pt)/batch)

	r.prog.set(Ingest, "reference: ChaCha20-Poly1305 open rate")
	chacha, err := chachaRef(ctx, batch, d)
	if err != nil {
		return err
	}
	r.figure(Figure{Name: "ref: ChaCha20-Poly1305 opens", Value: chacha, Unit: unit, IsReference: true,
		Note: fmt.Sprintf("raw AEAD open of the same %d-byte ciphertext on %d cores", len(pt)+16, r.rep.Machine.GOMAXPROCS)})
	r.prog.set(Ingest, "reference: raw bulk insert into the same store schema")
	ins, err := r.insertRef(ctx, d, r.cfg.Devices)
	if err != nil {
		return err
	}
	insUplinks := ins / float64(batch)
	r.figure(Figure{Name: "ref: store bulk insert", Value: insUplinks, Unit: unit, IsReference: true,
		Note: fmt.Sprintf("%.0f readings/s through store.AppendReadings, %d per append, one hearing each, no network", ins, store.MaxAppend)})

	var mq mqttFigures
	mqOK := false
	if !r.cfg.NoMQTT {
		r.prog.set(Ingest, "reference: Mosquitto QoS 1, tuned")
		if mq, err = r.mqttRef(ctx, mosquittoTuned, len(pt), d); err != nil {
			r.note("MQTT reference skipped: " + err.Error())
		} else {
			mqOK = true
			r.figure(Figure{Name: "ref: Mosquitto QoS 1 (tuned)", Value: mq.rate, Unit: "msg/s", IsReference: true,
				Note: fmt.Sprintf("%d-byte payloads, publisher→subscriber, paho.mqtt.golang; %d received of %d acknowledged, %d duplicates", len(pt), mq.received, mq.published, mq.duplicates)})
			// The stock broker is recorded, not compared with: a shorter
			// run shows its cap and its drops as well, and keeps the
			// scenario within its minute.
			r.prog.set(Ingest, "reference: Mosquitto QoS 1, stock configuration")
			sd := min(d, stockMQTTDuration)
			if st, err := r.mqttRef(ctx, "", len(pt), sd); err == nil {
				r.figure(Figure{Name: "ref: Mosquitto QoS 1 (stock config)", Value: st.rate, Unit: "msg/s", IsReference: true,
					Note: fmt.Sprintf("max_inflight_messages 20, max_queued_messages 1000, over %v: %d received of %d acknowledged (%d dropped by the broker)", sd, st.received, st.published, int64(st.published)-st.received)})
			}
		}
	}

	var peak1 float64
	for _, n := range r.cfg.Relays {
		label := fmt.Sprintf("%d relay(s)", n)
		r.prog.set(Ingest, label+": reference: raw UDP loopback")
		udp, err := r.udpRef(ctx, n, n, len(dg), d)
		if err != nil {
			return err
		}
		r.figure(Figure{Name: fmt.Sprintf("ref: raw UDP loopback, %d socket(s)", n), Value: udp, Unit: "datagrams/s", IsReference: true,
			Note: fmt.Sprintf("%d-byte datagrams from %d sending socket(s) in a child process to %d receiving", len(dg), n, n)})
		ceiling := min(udp, chacha, insUplinks)
		ceilName := "UDP"
		switch ceiling {
		case chacha:
			ceilName = "ChaCha20-Poly1305"
		case insUplinks:
			ceilName = "store bulk insert"
		}
		res, err := r.ingestRun(ctx, label, n, 0, false)
		if err != nil {
			return err
		}
		up := res.rate / float64(batch)
		if n == r.cfg.Relays[0] {
			peak1 = res.rate
		}
		r.figure(Figure{Name: fmt.Sprintf("stored uplinks, %d relay(s)", n), Value: up, Unit: unit,
			Target: fmt.Sprintf("≥ %d", targetUplinks), Met: atLeast(up, targetUplinks),
			Note: fmt.Sprintf("%d readings counted in the store over %v (first sent → last stored); %d devices, %s",
				res.stored, res.elapsed.Round(time.Millisecond), max(r.cfg.Devices, n), sizes)})
		r.figure(Figure{Name: fmt.Sprintf("stored uplinks vs ceiling, %d relay(s)", n), Value: up, Unit: unit,
			Reference: "ceiling (" + ceilName + ")", Ratio: ratio(up, ceiling),
			Target: fmt.Sprintf("≥ %.0f%% of ceiling", 100*targetCeilingRatio), Met: atLeast(ratio(up, ceiling), targetCeilingRatio),
			Note: "the ceiling is the smallest of raw UDP, raw ChaCha20-Poly1305 and the store's bulk insert, measured in this run"})
		if mqOK {
			r.figure(Figure{Name: fmt.Sprintf("stored uplinks vs Mosquitto, %d relay(s)", n), Value: up, Unit: unit,
				Reference: "Mosquitto QoS 1 (tuned)", Ratio: ratio(up, mq.rate),
				Target: fmt.Sprintf("≥ %.1f× Mosquitto", targetMQTTRatio), Met: atLeast(ratio(up, mq.rate), targetMQTTRatio)})
		}
		r.figure(Figure{Name: fmt.Sprintf("steady stored uplinks, %d relay(s)", n), Value: res.steady / float64(batch), Unit: unit,
			Note: "readings the store committed over the second half of the generation (its writer's own count; the totals and the exactly-once check count the rows)"})
		r.cpuFigures(fmt.Sprintf("full speed, %d relay(s)", n), res)
		r.latencyFigures(fmt.Sprintf("full speed, %d relay(s)", n), "relay receive → durable", res.durable,
			fmt.Sprintf("mostly queueing: every device keeps its window of readings in flight; the live hub cut the sampling subscriber %d times (a commit bigger than its buffer), readings meanwhile have no sample", res.cuts))
		r.check(fmt.Sprintf("exactly once, %d relay(s)", n), res.check.ok(), "%v; %d resent by devices", res.check, res.gen.Resent)
	}

	if peak1 > 0 {
		r.prog.set(Ingest, "reference: fsync latency of this disk")
		fs, err := r.fsyncRef(ctx, min(d, fsyncRefDuration))
		if err != nil {
			return err
		}
		r.figure(Figure{Name: "ref: fsync of a 32 KiB append, p99", Value: ms(fs.p99), Unit: "ms", IsReference: true,
			Note: fmt.Sprintf("write + fsync in the bench's directory, nothing else of the bench running: p50 %.2f ms, max %.1f ms (%d samples); every reading waits for at least one", ms(fs.p50), ms(fs.max), fs.n)})
		rate := peak1 / 2
		res, err := r.pacedRun(ctx, fmt.Sprintf("half the peak (%.0f readings/s), %d relay(s)", rate, r.cfg.Relays[0]), rate, "")
		if err != nil {
			return err
		}
		if res.sse.n > 0 {
			r.figure(Figure{Name: "p99 relay receive → SSE at half the peak", Value: ms(res.sse.p99), Unit: "ms",
				Reference: "fsync p99", Ratio: ratio(ms(res.sse.p99), ms(fs.p99)),
				Target: fmt.Sprintf("≤ %d ms", targetSSEP99.Milliseconds()), Met: atMost(ms(res.sse.p99), ms(targetSSEP99)),
				Note: "times stored by the relay are whole milliseconds: up to 1 ms more than the true latency"})
		}
	}
	for _, rate := range r.cfg.Paced {
		if _, err := r.pacedRun(ctx, fmt.Sprintf("%d readings/s, %d relay(s)", rate, r.cfg.Relays[0]), float64(rate),
			fmt.Sprintf(" at %d readings/s", rate)); err != nil {
			return err
		}
	}
	return nil
}

// pacedRun sends rate readings/s with the first relay count and reports
// the machine's CPU and the latency to durable and to the SSE client,
// with the checks that nothing was lost or delivered twice. checkSuffix
// tells the checks of several paced runs apart.
func (r *run) pacedRun(ctx context.Context, label string, rate float64, checkSuffix string) (ingestResult, error) {
	res, err := r.ingestRun(ctx, label, r.cfg.Relays[0], rate, true)
	if err != nil {
		return res, err
	}
	r.cpuFigures(label, res)
	if res.stored > 0 {
		r.figure(Figure{Name: "server ACKs per stored reading, " + label, Value: float64(res.acks) / float64(res.stored), Unit: "ACKs",
			Note: "acknowledgements the server sent to the devices, each cumulative and paced per device (docs/payload.md, §4.6)"})
	}
	r.latencyFigures(label, "relay receive → durable", res.durable, "")
	r.latencyFigures(label, "relay receive → SSE client", res.sse, "")
	if c := res.ckpt; c.TopUps > 0 {
		r.figure(Figure{Name: "longest checkpoint top-up, " + label, Value: ms(c.TopUpLongest), Unit: "ms",
			Note: fmt.Sprintf("%d top-ups held the store's write connection %.1f ms in all; every append waits for them (docs/architecture.md, store); the WAL started over %d times",
				c.TopUps, ms(c.TopUpHeld), c.Restarts)})
	}
	if c := res.ckpt; c.Rounds > 0 {
		r.figure(Figure{Name: "longest background checkpoint, " + label, Value: ms(c.RoundLongest), Unit: "ms",
			Note: fmt.Sprintf("%d rounds took %.0f ms in all (%.1f ms on average) on a connection of their own: they block no append, but take CPU and disk from everything else (in a probe the worst latencies followed rounds of 30–100 ms: docs/performance.md, sixth round of 3 December)",
				c.Rounds, ms(c.RoundsTook), ms(c.RoundsTook)/float64(c.Rounds))})
	}
	r.writerFigure(label, res)
	if res.sse.n > 0 {
		r.figure(Figure{Name: "p99 relay receive → SSE client, its worst 100 ms left out, " + label, Value: ms(res.sseTail.p99Rest), Unit: "ms",
			Note: fmt.Sprintf("%.0f %% of the samples at or above the p99 were taken in one 100 ms, %.1f s into the run: a p99 over a short run can be one stall and its backlog",
				100*res.sseTail.share, res.sseTail.at.Seconds())})
	}
	r.check("exactly once, paced"+checkSuffix, res.check.ok(), "%v", res.check)
	r.check("SSE delivers every stored reading once"+checkSuffix, res.sseN == res.stored && res.sseDups == 0,
		"%d events for %d stored readings, %d duplicates", res.sseN, res.stored, res.sseDups)
	return res, nil
}

// cpuFigures reports how busy the whole machine was while a run stored
// readings (its second half), and its CPU time per reading stored: at
// half the peak, what is left of the machine for the queues to drain.
func (r *run) cpuFigures(cond string, res ingestResult) {
	if res.cpuPerReading == 0 {
		return // no /proc/stat
	}
	r.figure(Figure{Name: "machine CPU busy, " + cond, Value: 100 * res.cpuShare, Unit: "%",
		Note: fmt.Sprintf("every process on the machine (server, relays, load generators, the kernel's network work) over the second half of the run, on %d CPUs", runtime.NumCPU())})
	r.figure(Figure{Name: "machine CPU per stored reading, " + cond, Value: float64(res.cpuPerReading) / float64(time.Microsecond), Unit: "µs",
		Note: fmt.Sprintf("%.1f µs of it in the bench process (server, relays, SSE client), the rest in the load generators and the kernel's work for them",
			float64(res.procPerReading)/float64(time.Microsecond))})
}

// writerFigure reports how much of the second half of a run the store's
// writer spent in appends, and what a reading cost it there: the writer is
// the one stage that cannot use two cores, and a queue in front of a
// server that is busy most of the time has a long tail.
func (r *run) writerFigure(cond string, res ingestResult) {
	w := res.writer
	if w.Appends == 0 || w.Readings == 0 || res.writerOver <= 0 {
		return // not the SQLite store, or nothing appended
	}
	perReading := func(d time.Duration) float64 { return float64(d) / float64(w.Readings) / float64(time.Microsecond) }
	r.figure(Figure{Name: "store writer in appends, " + cond, Value: 100 * float64(w.Statements+w.Committing) / float64(res.writerOver), Unit: "%",
		Note: fmt.Sprintf("of the wall-clock time over the second half of the run: %d appends of %.0f readings on average, per reading %.1f µs of statements and %.1f µs of commit (WAL writes, fsync), a core's wait included; %.1f ms more waiting for the write connection (docs/performance.md)",
			w.Appends, float64(w.Readings)/float64(w.Appends), perReading(w.Statements), perReading(w.Committing), ms(w.Waiting))})
}

func (r *run) latencyFigures(cond, what string, p percentiles, note string) {
	if p.n == 0 {
		return
	}
	note += fmt.Sprintf(" (%d samples)", p.n)
	for _, q := range []struct {
		name string
		v    time.Duration
	}{{"p50", p.p50}, {"p99", p.p99}, {"p999", p.p999}} {
		r.figure(Figure{Name: fmt.Sprintf("%s %s, %s", q.name, what, cond), Value: ms(q.v), Unit: "ms",
			Note: strings.TrimSpace(note)})
		note = ""
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func boolp(b bool) *bool { return &b }

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

func removeAll(dir string) { _ = os.RemoveAll(dir) }

// waitQuiet waits until count reaches want, or stops moving for quiet,
// or d passes.
func waitQuiet(ctx context.Context, d, quiet time.Duration, count func() int64, want int64) {
	deadline := time.Now().Add(d)
	last, lastAt := count(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n := count()
		if n >= want {
			return
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > quiet {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fsyncRef is the latency of a durable append on the disk the store uses:
// 32 KiB written at the end of a file and fsync'd, repeatedly, for d
// (a commit of a few hundred readings writes about that much WAL). A
// reading is acknowledged and streamed only after its commit's fsync, so
// the disk's own p99 is a floor under the ingest latency's.
func (r *run) fsyncRef(ctx context.Context, d time.Duration) (percentiles, error) {
	dir, err := r.newDir("fsync")
	if err != nil {
		return percentiles{}, err
	}
	defer removeAll(dir)
	f, err := os.Create(filepath.Join(dir, "wal"))
	if err != nil {
		return percentiles{}, err
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	var lat latencies
	for end := time.Now().Add(d); time.Now().Before(end) && ctx.Err() == nil; {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return percentiles{}, err
		}
		if err := f.Sync(); err != nil {
			return percentiles{}, err
		}
		lat.add(time.Since(t))
	}
	return lat.percentiles(), ctx.Err()
}
