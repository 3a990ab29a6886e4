package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/bus"
	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// errBusy is returned to ingest when the pipeline's queue is full: the
// readings are not acknowledged, so the device sends them again later.
var errBusy = errors.New("server: uplink queue full")

// Feed receives every batch of newly stored readings, in ID order (the
// live stream's hub). It may keep the slice: the pipeline never touches it
// again.
type Feed interface {
	Publish(readings []store.Reading)
}

// pipeline carries authenticated uplinks from ingest through the bus into
// the store, and reports back to ingest which readings are durable so the
// devices are acknowledged only then.
//
//	ingest.Deliver → queue → batcher → JetStream → consumer → store (one
//	transaction per fetch) → after → feed (SSE) and ingest.Settle (ACK)
//
// What follows a commit (the live stream, the devices' acknowledgements)
// runs on a goroutine of its own, in commit order, so the store writer
// starts its next transaction at once: at a moderate rate a commit is a
// few milliseconds and what follows it about a tenth of that again.
type pipeline struct {
	bus    *bus.Bus
	store  store.Store
	ingest *ingest.Server
	feed   Feed
	log    *slog.Logger
	status *statusTracker

	queue chan queued
	// after carries committed appends to the goroutine that feeds the
	// live stream and acknowledges the devices.
	after chan committed
	// MaxBatch bounds the readings in one bus message; FlushEvery bounds
	// how long a reading waits for companions.
	maxBatch   int
	flushEvery time.Duration
}

// committed is one committed append: the readings newly stored, and
// every reading of the append (duplicates the store skipped included),
// which the devices are sent acknowledgements for.
type committed struct {
	inserted, all []store.Reading
}

// afterQueue bounds the commits waiting for their acknowledgements: past
// it the store writer waits, so a slow feed slows ingest rather than
// growing without end.
const afterQueue = 64

type queued struct {
	readings []store.Reading
	late     []store.LateHearing
}

func newPipeline(b *bus.Bus, st store.Store, in *ingest.Server, feed Feed, status *statusTracker, log *slog.Logger) *pipeline {
	return &pipeline{
		bus: b, store: st, ingest: in, feed: feed, status: status, log: log,
		queue:      make(chan queued, 8192),
		after:      make(chan committed, afterQueue),
		maxBatch:   2000,
		flushEvery: 2 * time.Millisecond,
	}
}

// deliver is ingest's Deliver: it converts the event and queues it without
// blocking.
func (p *pipeline) deliver(ctx context.Context, ev ingest.Event) error {
	p.status.observe(ev)
	if ev.CommandResult != nil {
		p.log.Info("command result", "device", ev.Info.ID, "command", ev.CommandResult.ID, "ok", ev.CommandResult.OK)
	}
	if len(ev.Readings) == 0 && len(ev.HeardAgain) == 0 {
		return nil
	}
	h := store.Hearing{RelayID: ev.Meta.Relay, Received: ev.Meta.Received, RSSI: ev.Meta.RSSI, SNR: ev.Meta.SNR}
	if h.Received.IsZero() {
		h.Received = ev.Received
	}
	var q queued
	for i, r := range ev.Readings {
		q.readings = append(q.readings, toStore(ev, r, ev.Raw[i], h))
	}
	for _, seq := range ev.HeardAgain {
		q.late = append(q.late, store.LateHearing{DeviceID: ev.Info.ID, Seq: seq, Hearing: h})
	}
	select {
	case p.queue <- q:
		return nil
	default:
		return errBusy
	}
}

func toStore(ev ingest.Event, r wire.Reading, raw []byte, h store.Hearing) store.Reading {
	return store.Reading{
		DeviceID: ev.Info.ID, ProjectID: ev.Info.Project, Seq: r.Seq,
		DeviceTime: time.UnixMilli(r.Time), Received: ev.Received,
		Kind: r.Kind, Value: r.Value, Name: r.Name, Unit: r.Unit, Pour: r.Pour, Sealed: r.Sealed,
		Raw: raw, Heard: []store.Hearing{h},
	}
}

// drainFor bounds how long a stopping server goes on storing what the bus
// holds; what is left stays in the stream for the next start.
const drainFor = 5 * time.Second

// run runs the batcher and the store writer until ctx ends. Then the
// batcher publishes what it holds, and the writer goes on until the bus
// has nothing left for it (at most drainFor), so that a restart finds
// nothing half done.
func (p *pipeline) run(ctx context.Context) {
	wctx, stopWriter := context.WithCancel(context.Background())
	defer stopWriter()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for c := range p.after {
			p.settleCommitted(c)
		}
	}()
	go func() {
		defer wg.Done()
		// The writer is the only sender on after: once it returns,
		// what it committed is acknowledged and the stage ends.
		defer close(p.after)
		if err := p.bus.Consume(wctx, 64, p.write); err != nil {
			p.log.Error("store writer stopped", "err", err)
		}
	}()
	p.batch(ctx)
	deadline := time.Now().Add(drainFor)
	for time.Now().Before(deadline) {
		qctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n, err := p.bus.Pending(qctx)
		cancel()
		if err != nil || n == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopWriter()
	wg.Wait()
}

// batch gathers queued uplinks into bus messages.
func (p *pipeline) batch(ctx context.Context) {
	var cur store.Append
	n := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// add adds q to the batch and reports whether the batch is full.
	add := func(q queued) bool {
		cur.Readings = append(cur.Readings, q.readings...)
		cur.Hearings = append(cur.Hearings, q.late...)
		n += len(q.readings) + len(q.late)
		return n >= p.maxBatch
	}
	pubCtx := ctx
	flush := func() {
		if n == 0 {
			return
		}
		if err := p.bus.Publish(pubCtx, &cur); err != nil {
			p.log.Warn("publishing uplinks failed; devices will resend", "err", err)
			p.settle(cur.Readings, false)
		}
		// Publish encoded the batch: its slices are reused, cleared so
		// they keep nothing alive.
		clear(cur.Readings)
		clear(cur.Hearings)
		cur.Readings, cur.Hearings, n = cur.Readings[:0], cur.Hearings[:0], 0
	}
	for {
		select {
		case <-ctx.Done():
			// The server stopped intake before ctx ended: whatever is
			// queued is all there will be. It goes to the bus, whose
			// stream keeps it until the store writer takes it.
			var cancel context.CancelFunc
			pubCtx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				select {
				case q := <-p.queue:
					if add(q) {
						flush()
					}
				default:
					flush()
					return
				}
			}
		case q := <-p.queue:
			if n == 0 {
				timer.Reset(p.flushEvery)
			}
			if add(q) {
				timer.Stop()
				flush()
			}
		case <-timer.C:
			flush()
		}
	}
}

// write stores the batches fetched from the bus in one transaction, then
// feeds the live stream and acknowledges the devices.
//
// Batches are merged into as few store appends as store.MaxAppend allows;
// one bus batch alone is never larger (the publisher flushes at maxBatch).
func (p *pipeline) write(ctx context.Context, batches []*store.Append) error {
	if len(batches) == 1 { // nothing to merge
		return p.commit(ctx, *batches[0])
	}
	// Merge into one append (copying each reading once), cut where
	// store.MaxAppend says.
	var all store.Append
	grow := func(from int) {
		nr, nh := 0, 0
		for _, a := range batches[from:] {
			if nr+nh+len(a.Readings)+len(a.Hearings) > store.MaxAppend {
				break
			}
			nr, nh = nr+len(a.Readings), nh+len(a.Hearings)
		}
		all = store.Append{Readings: make([]store.Reading, 0, nr), Hearings: make([]store.LateHearing, 0, nh)}
	}
	grow(0)
	for i, a := range batches {
		if len(all.Readings)+len(all.Hearings)+len(a.Readings)+len(a.Hearings) > store.MaxAppend {
			if err := p.commit(ctx, all); err != nil {
				return err
			}
			grow(i)
		}
		all.Readings = append(all.Readings, a.Readings...)
		all.Hearings = append(all.Hearings, a.Hearings...)
	}
	return p.commit(ctx, all)
}

// commit stores one append and hands it to the stage that feeds the live
// stream and acknowledges the devices.
func (p *pipeline) commit(ctx context.Context, all store.Append) error {
	if len(all.Readings)+len(all.Hearings) == 0 {
		return nil
	}
	inserted, err := p.store.AppendReadings(ctx, all)
	if err != nil {
		return err
	}
	// Duplicates the store skipped are stored too: they are acknowledged
	// with the rest.
	p.after <- committed{inserted: inserted, all: all.Readings}
	return nil
}

// settleCommitted feeds the live stream with the newly stored readings of
// one commit and acknowledges every reading of it to the devices.
func (p *pipeline) settleCommitted(c committed) {
	if len(c.inserted) > 0 && p.feed != nil {
		p.feed.Publish(c.inserted)
	}
	p.settle(c.all, true)
}

// settle reports readings to ingest grouped by device.
func (p *pipeline) settle(rs []store.Reading, durable bool) {
	byDev := map[int64][]uint64{}
	for _, r := range rs {
		byDev[r.DeviceID] = append(byDev[r.DeviceID], r.Seq)
	}
	for id, seqs := range byDev {
		p.ingest.Settle(id, seqs, durable)
	}
}
