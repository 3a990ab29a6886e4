package sqlite

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// queryStore fills a store with readings of three devices of project "p",
// in arrival order, every tenth batch a relay's buffer flushed late: its
// readings were heard (received) up to an hour before readings stored
// earlier. It returns the readings as stored.
func queryStore(t *testing.T, n int) (*Store, []int64, []store.Reading) {
	t.Helper()
	ctx := t.Context()
	s, ids := perfStore(t)
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.UnixMilli(1_700_000_000_000).UTC()
	seqs := make([]uint64, len(ids))
	var stored []store.Reading
	for b := 0; len(stored) < n; b++ {
		var batch []store.Reading
		for i := range 50 {
			d := rng.IntN(len(ids))
			seqs[d]++
			received := base.Add(time.Duration(b*50+i) * time.Second)
			if b%10 == 9 {
				received = received.Add(-time.Duration(rng.IntN(3600)) * time.Second)
			}
			batch = append(batch, store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seqs[d], Received: received,
				Raw: []byte{0xa0}, Heard: []store.Hearing{{RelayID: "r", Received: received}}})
		}
		got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, got...)
	}
	if _, err := s.w.ExecContext(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	return s, ids, stored
}

// TestRangeQueryPlans: a range query reads the range's readings through
// the (key, received) index and never walks the device's or the project's
// history through the (key, id) index, which is what SQLite chooses for
// the same SQL without the names of the indexes.
func TestRangeQueryPlans(t *testing.T) {
	s, ids, stored := queryStore(t, 3000)
	from, to := stored[1000].Received, stored[1100].Received
	plan := func(q string, args []any) string {
		t.Helper()
		rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("explain: %v\n%s", err, q)
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	has := func(what, got string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: plan lacks %q:\n%s", what, w, got)
			}
		}
	}
	lacks := func(what, got string, bad ...string) {
		t.Helper()
		for _, b := range bad {
			if strings.Contains(got, b) {
				t.Errorf("%s: plan has %q:\n%s", what, b, got)
			}
		}
	}
	for _, c := range []struct {
		name       string
		q          store.ReadingQuery
		byID, byRx string
	}{
		{"project", store.ReadingQuery{ProjectID: "p", From: from, To: to}, "readings_project_id", "readings_project_received"},
		{"project to", store.ReadingQuery{ProjectID: "p", To: to}, "readings_project_id", "readings_project_received"},
	} {
		rq, err := newRangeQuery(c.q)
		if err != nil {
			t.Fatal(err)
		}
		// The window: the range in the received index (index only, no
		// row read), then the page's rows by ID.
		p := rq.windowPage(0, 100)
		got := plan(p.sql(), p.args)
		has(c.name+" window", got, "USING COVERING INDEX "+c.byRx+" (", "USING INTEGER PRIMARY KEY (rowid=?)")
		lacks(c.name+" window", got, c.byID, "SCAN readings")
		q, args := rq.windowCountSQL()
		got = plan(q, args)
		has(c.name+" count", got, "USING COVERING INDEX "+c.byRx+" (")
		lacks(c.name+" count", got, c.byID, "SCAN readings")
		// The walk: from the cursor to its end in the ID index.
		p = rq.walkPage(5, 500, 100)
		got = plan(p.sql(), p.args)
		has(c.name+" walk", got, "USING INDEX "+c.byID+" (", "id>? AND id<?)")
		lacks(c.name+" walk", got, c.byRx, "SCAN readings", "TEMP B-TREE FOR ORDER BY")
		q, args = rq.walkEndSQL(200)
		got = plan(q, args)
		has(c.name+" walk end", got, "USING COVERING INDEX "+c.byID+" (")
	}
	// A device's range: the ID bounds from the spans, each one index
	// descent, then a walk between them in the device's ID index.
	for _, q := range []string{spanBeforeSQL, spanPastSQL} {
		got := plan(q, []any{from.UnixMilli()})
		has("span bound", got, "USING INDEX reading_spans_run_max (run_max")
		lacks("span bound", got, "TEMP B-TREE", "SCAN")
	}
	got := plan(lateSpanSQL, []any{to.UnixMilli(), 5})
	has("late spans", got, "USING INDEX reading_spans_late (first_id>?)")
	lacks("late spans", got, "TEMP B-TREE")
	// A device's readings up to the device index's mark: the index from
	// the cursor, each reading by its ID.
	rq, _ := newRangeQuery(store.ReadingQuery{ProjectID: "p", DeviceID: ids[1], From: from, To: to})
	p := rq.indexedPage(5, 500, 100)
	got = plan(p.sql(), p.args)
	has("device range", got, "SEARCH device_readings USING PRIMARY KEY (dev=? AND rid>? AND rid<?)", "USING INTEGER PRIMARY KEY (rowid=?)")
	lacks("device range", got, "SCAN readings", "SCAN device_readings", "device_readings_seq", "TEMP B-TREE")
	// Above the mark: the readings by ID.
	p = rq.tailPage(500, 0, 100)
	got = plan(p.sql(), p.args)
	has("device tail", got, "SEARCH readings USING INTEGER PRIMARY KEY (rowid>?)")
	lacks("device tail", got, "TEMP B-TREE FOR ORDER BY", "device_readings")
	// An append's check of its readings against the device index: one
	// probe of the unique key each.
	got = plan(lookupSeqsSQL(2), []any{ids[0], 1, ids[1], 2})
	has("stored already", got, "VALUES CLAUSE", "SEARCH device_readings USING COVERING INDEX device_readings_seq (dev=? AND dseq=?)")
	lacks("stored already", got, "SCAN device_readings", "TEMP B-TREE")
	// Without a time range, the same two from the cursor.
	rq, _ = newRangeQuery(store.ReadingQuery{ProjectID: "p", DeviceID: ids[0]})
	p = rq.indexedPage(0, 500, 100)
	got = plan(p.sql(), p.args)
	has("device page", got, "SEARCH device_readings USING PRIMARY KEY (dev=? AND rid>? AND rid<?)")
	lacks("device page", got, "SCAN readings", "SCAN device_readings", "TEMP B-TREE")
}

// TestSpanSlackMatchesIndex: the slack of the late spans' partial index
// (migration 00009) is spanSlackMillis, which the queries repeat.
func TestSpanSlackMatchesIndex(t *testing.T) {
	s, _ := perfStore(t)
	var def string
	if err := s.r.QueryRowContext(t.Context(), `SELECT sql FROM sqlite_master WHERE name = 'reading_spans_late'`).Scan(&def); err != nil {
		t.Fatal(err)
	}
	if want := "prev_max - " + strconv.Itoa(spanSlackMillis); !strings.Contains(def, want) {
		t.Fatalf("reading_spans_late is %q; want %q in it", def, want)
	}
}

// TestReadingSpans: with small spans and readings stored in every
// disorder (late by a few milliseconds, by more than the slack, by an
// hour, a batch of old readings in bulk), the ID range of every time range
// holds every reading of the range.
func TestReadingSpans(t *testing.T) {
	ctx := t.Context()
	s, ids := perfStore(t)
	s.spanIDs = 16
	rng := rand.New(rand.NewPCG(5, 6))
	base := int64(1_700_000_000_000)
	seqs := make([]uint64, len(ids))
	var stored []store.Reading
	clock := base
	for b := range 240 {
		var batch []store.Reading
		for range 1 + rng.IntN(12) {
			d := rng.IntN(len(ids))
			seqs[d]++
			clock += int64(rng.IntN(400))
			received := clock - int64(rng.IntN(900)) // queueing, within the slack
			switch {
			case b%53 == 52:
				received = clock - 3_600_000 + int64(rng.IntN(1000)) // a late batch
			case rng.IntN(300) == 0:
				received = clock - spanSlackMillis - int64(rng.IntN(5000))
			}
			batch = append(batch, store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seqs[d],
				Received: time.UnixMilli(received), Raw: []byte{0xa0}})
		}
		got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, got...)
	}
	var spans, late int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE min_recv < prev_max - `+
		strconv.Itoa(spanSlackMillis)+`) FROM reading_spans`).Scan(&spans, &late); err != nil {
		t.Fatal(err)
	}
	if spans < 20 || late < 3 {
		t.Fatalf("%d spans, %d late: the test does not exercise them", spans, late)
	}
	for range 400 {
		a := stored[rng.IntN(len(stored))].Received.UnixMilli() + int64(rng.IntN(3)) - 1
		b := a + int64(rng.IntN(60_000))
		from, to := a, b
		switch rng.IntN(4) {
		case 0:
			from = math.MinInt64
		case 1:
			to = math.MaxInt64
		}
		lo, hi, err := s.idRange(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range stored {
			ms := r.Received.UnixMilli()
			if ms >= from && ms < to && (r.ID <= lo || hi != 0 && r.ID > hi) {
				t.Fatalf("[%d, %d): reading %d received %d is outside the IDs (%d, %d]", from, to, r.ID, ms, lo, hi)
			}
		}
	}
}

// TestRangeQueryStrategies: every way of reading a range (the window, a
// walk that fills the page, a walk finished by the window) answers what a
// scan of every reading answers, page after page, with readings heard long
// before they were stored.
func TestRangeQueryStrategies(t *testing.T) {
	ctx := t.Context()
	s, ids, stored := queryStore(t, 1200)
	rng := rand.New(rand.NewPCG(3, 4))
	match := func(q store.ReadingQuery, r store.Reading) bool {
		return r.ProjectID == q.ProjectID && (q.DeviceID == 0 || r.DeviceID == q.DeviceID) &&
			(q.From.IsZero() || !r.Received.Before(q.From)) && (q.To.IsZero() || r.Received.Before(q.To))
	}
	late := 0
	for i := 1; i < len(stored); i++ {
		if stored[i].Received.Before(stored[i-1].Received) {
			late++
		}
	}
	if late < 50 {
		t.Fatalf("only %d readings stored after a later-heard one", late)
	}
	for _, bounds := range []struct{ windowMax, walkPages int }{{windowMax, walkPages}, {0, 1}, {20, 1}, {200, 3}} {
		for range 12 {
			q := store.ReadingQuery{ProjectID: "p", Limit: 20 + rng.IntN(100)}
			if rng.IntN(3) > 0 {
				q.DeviceID = ids[rng.IntN(len(ids))]
			}
			a, b := stored[rng.IntN(len(stored))].Received, stored[rng.IntN(len(stored))].Received
			if b.Before(a) {
				a, b = b, a
			}
			switch rng.IntN(4) {
			case 0:
				q.From = a
			case 1:
				q.To = b
			default:
				q.From, q.To = a, b.Add(time.Millisecond)
			}
			var want []int64
			for _, r := range stored {
				if match(q, r) {
					want = append(want, r.ID)
				}
			}
			var got []int64
			for pages := 0; ; pages++ {
				if pages > len(stored) {
					t.Fatalf("%+v: no end", q)
				}
				rq, err := newRangeQuery(q)
				if err != nil {
					t.Fatal(err)
				}
				rq.windowMax, rq.walkPages = bounds.windowMax, bounds.walkPages
				rs, err := s.readings(ctx, rq)
				if err != nil {
					t.Fatalf("%+v: %v", q, err)
				}
				if len(rs) > q.Limit {
					t.Fatalf("%+v: %d readings", q, len(rs))
				}
				for _, r := range rs {
					got = append(got, r.ID)
					if len(r.Heard) != 1 || !r.Heard[0].Received.Equal(r.Received) {
						t.Fatalf("reading %d read back with hearings %+v", r.ID, r.Heard)
					}
				}
				if len(rs) < q.Limit {
					break
				}
				q.AfterID = rs[len(rs)-1].ID
			}
			if !slices.Equal(got, want) {
				t.Fatalf("bounds %+v, query %+v: got %d readings %v…, want %d %v…", bounds, q,
					len(got), got[:min(5, len(got))], len(want), want[:min(5, len(want))])
			}
		}
	}
}

// BenchmarkRangeQuery reads one device's readings by time range from a
// store of 400,000 readings of 200 devices (2,000 each, one every 10 s,
// interleaved in arrival order, as `signet bench query` generates them),
// reporting the process's CPU per page:
//
//   - dashboard: a window of 100 readings at a random place in the
//     device's history, one page of 100;
//   - export: the device's whole history as one range, paged through with
//     the cursor, 1,000 readings a page;
//   - tail: after 40,000 more readings not yet in the device index (above
//     its mark: about a second of them at half the bench's peak, what a
//     query meets while ingest runs), a device's newest 100 readings.
func BenchmarkRangeQuery(b *testing.B) {
	const (
		devices   = 200
		perDevice = 2000
		stepMs    = 10_000 / devices
	)
	ctx := b.Context()
	s, ids := benchStore(b, devices)
	base := time.UnixMilli(1_700_000_000_000).UTC()
	if _, err := s.w.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
		INSERT INTO readings (device_id, project_id, seq, device_time, received, kind, value, name, unit, raw,
			heard_relay, heard_received, heard_rssi, heard_snr)
		SELECT ? + i % ?, 'p', i / ? + 1, ? + i * ?, ? + i * ?, 1, 1000 + (i % 997) / 10.0, 'pressure', 'hPa',
			randomblob(40), 'relay-1', ? + i * ?, -70, 7.5
		FROM n`, devices*perDevice, ids[0], devices, devices, base.UnixMilli(), stepMs, base.UnixMilli(), stepMs,
		base.UnixMilli(), stepMs); err != nil {
		b.Fatal(err)
	}
	// The readings were written around the store: their spans and their
	// device index too, as the bench's generator and the next Open do.
	if err := BuildReadingSpans(ctx, s.w); err != nil {
		b.Fatal(err)
	}
	if err := BuildDeviceIndex(ctx, s.w); err != nil {
		b.Fatal(err)
	}
	// Statistics as the bench leaves them, and the WAL copied now rather
	// than by the checkpointer while queries are measured.
	for _, q := range []string{"ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)"} {
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	span := time.Duration(devices*perDevice*stepMs) * time.Millisecond
	rng := rand.New(rand.NewPCG(1, 2))
	measure := func(b *testing.B, page func() int) {
		cpu0 := procstat.CPUTime()
		pages, readings := 0, 0
		for b.Loop() {
			readings += page()
			pages++
		}
		b.ReportMetric(float64((procstat.CPUTime()-cpu0).Nanoseconds())/1000/float64(pages), "cpu-us/page")
		b.ReportMetric(float64(readings)/float64(pages), "readings/page")
	}
	b.Run("dashboard", func(b *testing.B) {
		window := 100 * 10 * time.Second
		measure(b, func() int {
			from := base.Add(time.Duration(rng.Int64N(int64(span - window))))
			rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", DeviceID: ids[rng.IntN(devices)],
				From: from, To: from.Add(window), Limit: 100})
			if err != nil {
				b.Fatal(err)
			}
			return len(rs)
		})
	})
	b.Run("export", func(b *testing.B) {
		q := store.ReadingQuery{ProjectID: "p", DeviceID: ids[0], From: base, To: base.Add(span), Limit: 1000}
		measure(b, func() int {
			rs, err := s.Readings(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			if len(rs) < q.Limit {
				q.AfterID = 0 // the end: start again
			} else {
				q.AfterID = rs[len(rs)-1].ID
			}
			return len(rs)
		})
	})
	b.Run("tail", func(b *testing.B) {
		const more = 40_000
		var top int64
		if err := s.w.QueryRowContext(ctx, `SELECT max(id) FROM readings`).Scan(&top); err != nil {
			b.Fatal(err)
		}
		if _, err := s.w.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
			INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit, raw)
			SELECT ? + i % ?, 'p', ? + i / ? + 1, ? + i * ?, 1, 1000, 'pressure', 'hPa', randomblob(40)
			FROM n`, more, ids[0], devices, perDevice, devices, base.Add(span).UnixMilli(), stepMs); err != nil {
			b.Fatal(err)
		}
		after := top - int64(10*devices) // the device's last 10 indexed readings, then the tail
		measure(b, func() int {
			rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", DeviceID: ids[rng.IntN(devices)], AfterID: after, Limit: 100})
			if err != nil {
				b.Fatal(err)
			}
			if len(rs) != 100 {
				b.Fatalf("%d readings, want 100", len(rs))
			}
			return len(rs)
		})
	})
}

// TestReadStmtsBounded: prepared reading queries are kept up to
// maxReadStmts; past that each is prepared for its one use, and works.
func TestReadStmtsBounded(t *testing.T) {
	ctx := t.Context()
	s, _ := perfStore(t)
	for i := range maxReadStmts + 10 {
		q := fmt.Sprintf("SELECT %d", i)
		for range 2 {
			var n int
			if err := s.scanRow(ctx, q, nil, &n); err != nil || n != i {
				t.Fatalf("%s = %d, %v", q, n, err)
			}
		}
	}
	if n := len(s.readStmts); n != maxReadStmts {
		t.Errorf("%d statements kept, want %d", n, maxReadStmts)
	}
}

// TestNoStat4Samples: a store opens without the STAT4 samples ANALYZE
// leaves (which would make SQLite compile every page query again each
// time it runs with new bounds), and keeps sqlite_stat1's averages, which
// the planner still uses.
func TestNoStat4Samples(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "stat4.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateProject(ctx, store.Project{ID: "p", Name: "stat4"}); err != nil {
		t.Fatal(err)
	}
	var key wire.PublicKey
	key[31] = 1
	id, err := s.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	var rs []store.Reading
	for i := range 500 {
		rs = append(rs, store.Reading{DeviceID: id, ProjectID: "p", Seq: uint64(i + 1), Received: time.UnixMilli(int64(i)),
			Kind: wire.KindTemperature, Value: 1})
	}
	if _, err := s.AppendReadings(ctx, store.Append{Readings: rs}); err != nil {
		t.Fatal(err)
	}
	count := func(s *Store, table string) int {
		t.Helper()
		var n int
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Statistics with samples, as a full ANALYZE (an operator's, or the
	// bench's bulk generator's) leaves them.
	for _, q := range []string{"PRAGMA analysis_limit = 0", "ANALYZE"} {
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(s, "sqlite_stat4"); n == 0 {
		t.Fatal("ANALYZE left no STAT4 samples: the test proves nothing on this build")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := count(s, "sqlite_stat4"); n != 0 {
		t.Errorf("%d STAT4 samples after opening", n)
	}
	if n := count(s, "sqlite_stat1"); n == 0 {
		t.Error("sqlite_stat1 is empty: the planner lost its statistics")
	}
}
