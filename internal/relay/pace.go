package relay

import "time"

// flushGap is the least time between two flushes of a relay connection's
// writer, on either end. At a moderate rate a writer is woken for nearly
// every frame (an uplink, the server's ack of it, a device's ACK), and each
// flush is a TLS record, a write and a wake-up of the reader at the other
// end. Waiting until flushGap has passed since the last flush sends what
// arrived meanwhile together; a frame after a quiet spell goes out at once.
// A reading's latency grows by at most flushGap per hop. At half the bench's
// peak, 200 µs lowered the p99 relay → SSE in four of five interleaved
// pairs; a whole millisecond raised it (docs/performance.md).
const flushGap = 200 * time.Microsecond

// pacer spaces a writer's flushes at least gap apart.
type pacer struct {
	gap   time.Duration
	last  time.Time
	timer *time.Timer
}

// wait returns once gap has passed since the last flush, or when done is
// closed.
func (p *pacer) wait(done <-chan struct{}) {
	d := p.gap - time.Since(p.last)
	if d <= 0 {
		return
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
	case <-done:
		p.timer.Stop()
	}
}

// flushed records a flush.
func (p *pacer) flushed() { p.last = time.Now() }
