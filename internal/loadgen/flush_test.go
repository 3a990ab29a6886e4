package loadgen

import (
	"errors"
	"log/slog"
	"testing"

	"golang.org/x/net/ipv4"
)

// scriptedConn writes as many datagrams per call as its script says, a
// negative number failing the first one left.
type scriptedConn struct {
	script  []int
	written [][]byte
}

func (c *scriptedConn) ReadBatch([]ipv4.Message, int) (int, error) { return 0, errors.New("unused") }

func (c *scriptedConn) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	n := len(ms)
	if len(c.script) > 0 {
		n, c.script = c.script[0], c.script[1:]
	}
	if n < 0 {
		return 0, errors.New("refused")
	}
	n = min(n, len(ms))
	for _, m := range ms[:n] {
		c.written = append(c.written, m.Buffers[0])
	}
	return n, nil
}

// TestFlushPartialWrites: the kernel takes part of a batch, then refuses
// one datagram; each datagram is counted by what became of it, and the
// refused new readings are new again.
func TestFlushPartialWrites(t *testing.T) {
	conn := &scriptedConn{script: []int{2, -1, 1}}
	g := &Generator{log: slog.New(slog.DiscardHandler)}
	devs := []*device{{}, {}, {}, {}}
	devs[0].sent.Store(10)
	s := &sender{g: g, count: 5, issued: 7}
	q := &sendQueue{conn: conn}
	add := func(d *device, lo, hi uint64, fresh bool) {
		q.msgs[q.n].Buffers = [][]byte{{byte(q.n)}}
		q.out[q.n] = queued{d: d, lo: lo, hi: hi, fresh: fresh}
		q.n++
	}
	add(devs[0], 9, 10, false) // written
	add(devs[1], 1, 2, true)   // written
	add(devs[2], 1, 3, true)   // refused
	add(devs[3], 1, 1, true)   // written
	add(devs[0], 11, 11, true) // written
	s.flush(q)
	if q.n != 0 || len(conn.written) != 4 {
		t.Fatalf("queue %d, %d written; want 0, 4", q.n, len(conn.written))
	}
	for i, want := range []uint64{11, 2, 0, 1} {
		if got := devs[i].sent.Load(); got != want {
			t.Errorf("device %d: sent %d, want %d", i, got, want)
		}
	}
	st := &g.stats
	if st.Datagrams.Load() != 4 || st.Readings.Load() != 4 || st.Resent.Load() != 2 || st.SendErrors.Load() != 1 {
		t.Errorf("datagrams %d readings %d resent %d errors %d; want 4 4 2 1",
			st.Datagrams.Load(), st.Readings.Load(), st.Resent.Load(), st.SendErrors.Load())
	}
	if s.issued != 4 || s.count != 8 {
		t.Errorf("issued %d, count %d; want the 3 refused readings back: 4, 8", s.issued, s.count)
	}
	if !s.progress || !s.outstanding {
		t.Error("a pass that sent new readings made no progress")
	}
}
