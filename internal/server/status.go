package server

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/store"
)

// statusTracker keeps each device's last seen time, health and the relays
// that heard it recently in memory, and writes the changed ones to the
// store every few seconds instead of on every datagram.
type statusTracker struct {
	mu    sync.Mutex
	devs  map[int64]*devStatus
	dirty map[int64]bool
}

type devStatus struct {
	st     store.DeviceStatus
	relays map[string]store.Hearing
}

func newStatusTracker() *statusTracker {
	return &statusTracker{devs: map[int64]*devStatus{}, dirty: map[int64]bool{}}
}

// recentRelay is how long a relay counts as hearing a device.
const recentRelay = 10 * time.Minute

func (t *statusTracker) observe(ev ingest.Event) {
	if ev.Info.ID == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.devs[ev.Info.ID]
	if d == nil {
		d = &devStatus{relays: map[string]store.Hearing{}}
		t.devs[ev.Info.ID] = d
	}
	// An event that only says another relay heard something already
	// delivered is no sign of life: it updates the network status only.
	if len(ev.Readings) > 0 || ev.Health != nil || ev.CommandResult != nil {
		d.st.LastSeen = ev.Received
	}
	if ev.Health != nil {
		h := *ev.Health
		d.st.Health = &h
	}
	d.relays[ev.Meta.Relay] = store.Hearing{RelayID: ev.Meta.Relay, Received: ev.Received, RSSI: ev.Meta.RSSI, SNR: ev.Meta.SNR}
	t.dirty[ev.Info.ID] = true
}

// batchStatusStore is a store that writes many statuses in one
// transaction (sqlite.Store): with a thousand devices, one commit every
// flush instead of a thousand, each an fsync on the connection that also
// stores the readings.
type batchStatusStore interface {
	SetDeviceStatuses(ctx context.Context, sts map[int64]store.DeviceStatus) error
}

// statusChunk bounds the statuses written in one transaction.
const statusChunk = 128

// flush writes the changed statuses, its chunks spread over spread (0: one
// after the other). Spreading keeps the write connection's queue short: at
// half the ingest peak, eight chunks back to back every 2 s held the
// readings waiting behind them for 15–126 ms (docs/performance.md). When
// ctx ends, the rest is written at once: the writes themselves do not
// stop with ctx, or the statuses taken off the dirty set would be lost.
func (t *statusTracker) flush(ctx context.Context, st store.Store, log *slog.Logger, spread time.Duration) {
	t.mu.Lock()
	type upd struct {
		id int64
		st store.DeviceStatus
	}
	var ups []upd
	now := time.Now()
	for id := range t.dirty {
		d := t.devs[id]
		s := d.st
		for r, h := range d.relays {
			if now.Sub(h.Received) > recentRelay {
				delete(d.relays, r)
				continue
			}
			s.Relays = append(s.Relays, h)
		}
		slices.SortFunc(s.Relays, func(a, b store.Hearing) int { return int(b.RSSI) - int(a.RSSI) })
		ups = append(ups, upd{id, s})
	}
	clear(t.dirty)
	t.mu.Unlock()
	wctx := context.WithoutCancel(ctx)
	if bs, ok := st.(batchStatusStore); ok {
		// In chunks, so that the readings waiting for the write
		// connection get it between them: a thousand updates in one
		// transaction would hold every reading back for its whole time.
		chunks := (len(ups) + statusChunk - 1) / statusChunk
		for len(ups) > 0 {
			n := min(len(ups), statusChunk)
			sts := make(map[int64]store.DeviceStatus, n)
			for _, u := range ups[:n] {
				sts[u.id] = u.st
			}
			ups = ups[n:]
			if err := bs.SetDeviceStatuses(wctx, sts); err != nil {
				log.Warn("saving device statuses", "devices", len(sts), "err", err)
			}
			if len(ups) > 0 && spread > 0 && ctx.Err() == nil {
				pause(ctx, spread/time.Duration(chunks))
			}
		}
		return
	}
	for _, u := range ups {
		if err := st.SetDeviceStatus(wctx, u.id, u.st); err != nil {
			log.Warn("saving device status", "device", u.id, "err", err)
		}
	}
}

// pause waits for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
