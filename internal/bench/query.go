package bench

import (
	"context"
	crand "crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// queryInterval is how often each generated device "reads"; a query's
// window covers queryPage of its readings.
const (
	queryInterval = 10 * time.Second
	queryPage     = 100
)

// queryData describes a generated store.
type queryData struct {
	ids      []int64
	from, to time.Time // the received times of the first and last reading
	total    int64
	took     time.Duration
}

// generateReadings fills the store file at path with total readings (and a
// relay's hearing each, as ingest stores them) from devices devices, in
// arrival order: every device reads every queryInterval, interleaved. It
// writes with SQL of its own (SQLite generates the rows from a counter),
// the journal off and the secondary indexes built afterwards, which is
// what makes ten million rows take minutes rather than an hour; the
// schema and indexes are the store's own (migrated by sqlite.Open), and
// its device index, the unique key on (device, sequence) included, is
// built once the rows are in (sqlite.BuildDeviceIndex).
func generateReadings(ctx context.Context, path string, devices, total int, progress func(done int)) (queryData, error) {
	var q queryData
	start := time.Now()
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return q, err
	}
	if err := st.CreateProject(ctx, store.Project{ID: project, Name: "query", Created: time.Now()}); err != nil {
		st.Close()
		return q, err
	}
	if err := st.Close(); err != nil {
		return q, err
	}
	keys := make([]wire.PublicKey, devices)
	for i := range keys {
		_, _ = crand.Read(keys[i][:])
	}
	if q.ids, err = bulkDevices(ctx, path, keys); err != nil {
		return q, err
	}
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(0)&_pragma=synchronous(OFF)&_pragma=cache_size(-262144)&_pragma=temp_store(MEMORY)")
	if err != nil {
		return q, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "PRAGMA journal_mode=OFF"); err != nil {
		return q, err
	}
	// The secondary indexes are built after the rows (a sort, much
	// faster than growing them row by row), with the store's own
	// definitions.
	var indexes []string
	rows, err := db.QueryContext(ctx, `SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings' AND sql IS NOT NULL`)
	if err != nil {
		return q, err
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return q, err
		}
		indexes = append(indexes, s)
	}
	rows.Close()
	for _, s := range indexes {
		name := strings.Fields(strings.TrimPrefix(strings.TrimSpace(s), "CREATE INDEX"))[0]
		if _, err := db.ExecContext(ctx, "DROP INDEX "+name); err != nil {
			return q, err
		}
	}
	_, raw, err := sampleDatagram(1)
	if err != nil {
		return q, err
	}
	// The rows are made by SQLite itself from a counter: device ids are
	// consecutive (one bulk insert), reading i is device i mod devices'
	// reading i / devices + 1, received at base + i × step.
	for i := 1; i < len(q.ids); i++ {
		if q.ids[i] != q.ids[0]+int64(i) {
			return q, errors.New("bench: generated devices' ids are not consecutive")
		}
	}
	perDevice := (total + devices - 1) / devices
	base := time.Now().Add(-time.Duration(perDevice) * queryInterval).Truncate(time.Second)
	step := queryInterval.Milliseconds() / int64(devices)
	if step == 0 {
		return q, errors.New("bench: too many query devices for the reading interval")
	}
	q.from = base
	q.to = base.Add(time.Duration(int64(total)*step) * time.Millisecond)
	const chunk = 500_000
	for lo := 0; lo < total; lo += chunk {
		hi := min(total, lo+chunk)
		if _, err := db.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
			INSERT INTO readings (device_id, project_id, seq, device_time, received, kind, value, name, unit, raw)
			SELECT ? + i % ?, ?, i / ? + 1, ? + i * ? - 5, ? + i * ?, ?, 1000 + (i % 997) / 10.0, 'pressure', 'hPa', ?
			FROM n`,
			lo, hi, q.ids[0], devices, project, devices, base.UnixMilli(), step, base.UnixMilli(), step,
			int64(wire.KindNumeric), raw); err != nil {
			return q, err
		}
		progress(hi)
	}
	for _, s := range indexes {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return q, err
		}
	}
	// One relay's hearing per reading, as ingest stores them, inserted in
	// key order.
	if _, err := db.ExecContext(ctx, `INSERT INTO hearings (device_id, seq, relay_id, received, rssi, snr)
		SELECT device_id, seq, 'relay-1', received, -70 - seq % 30, 7.5 FROM readings ORDER BY device_id, seq`); err != nil {
		return q, err
	}
	// The readings' ID spans, which the store keeps as it appends and
	// finds a device's time range with.
	if err := sqlite.BuildReadingSpans(ctx, db); err != nil {
		return q, err
	}
	// And their device index (migration 00010).
	if err := sqlite.BuildDeviceIndex(ctx, db); err != nil {
		return q, err
	}
	// Leave the file as the server expects it: WAL, statistics fresh.
	for _, s := range []string{"PRAGMA journal_mode=WAL", "ANALYZE"} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return q, err
		}
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM readings`).Scan(&q.total); err != nil {
		return q, err
	}
	q.took = time.Since(start)
	return q, nil
}

type queryConfig struct {
	API      string        `json:"api"`
	Token    string        `json:"token"`
	IDs      []int64       `json:"ids"`
	From     time.Time     `json:"from"`
	To       time.Time     `json:"to"`
	Window   time.Duration `json:"window"`
	Clients  int           `json:"clients"`
	Duration time.Duration `json:"duration"`
}

type queryResult struct {
	Queries, Errors, Empty, Readings int64
	Elapsed                          time.Duration
	P50, P99, P999                   time.Duration
	FirstError                       string `json:",omitempty"`
}

// randomQuery picks a device and a window of its readings.
func randomQuery(rng *rand.Rand, ids []int64, from, to time.Time, window time.Duration) (int64, time.Time, time.Time) {
	id := ids[rng.IntN(len(ids))]
	span := to.Sub(from) - window
	at := from
	if span > 0 {
		at = from.Add(time.Duration(rng.Int64N(int64(span))))
	}
	return id, at, at.Add(window)
}

// childQuery runs API clients that ask for one device's readings in a time
// window, as a dashboard does, and measures each answer.
func childQuery(ctx context.Context, cio *childIO, raw json.RawMessage) error {
	var cfg queryConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	if err := cio.wait(ctx, msgGo, nil); err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients}, Timeout: 30 * time.Second}
	var lat latencies
	var res queryResult
	var mu sync.Mutex
	var queries, errs, empty, readings atomic.Int64
	stop := time.Now().Add(cfg.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range max(1, cfg.Clients) {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for time.Now().Before(stop) && ctx.Err() == nil {
				id, from, to := randomQuery(rng, cfg.IDs, cfg.From, cfg.To, cfg.Window)
				v := url.Values{"device": {strconv.FormatInt(id, 10)}, "from": {from.UTC().Format(time.RFC3339Nano)},
					"to": {to.UTC().Format(time.RFC3339Nano)}, "limit": {strconv.Itoa(queryPage)}}
				t0 := time.Now()
				n, err := getReadings(ctx, hc, cfg.API+"/api/v1/projects/"+project+"/readings?"+v.Encode(), cfg.Token, id)
				lat.add(time.Since(t0))
				queries.Add(1)
				switch {
				case err != nil:
					errs.Add(1)
					mu.Lock()
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
					mu.Unlock()
				case n == 0:
					empty.Add(1)
				}
				readings.Add(int64(n))
			}
		})
	}
	wg.Wait()
	p := lat.percentiles()
	res.Queries, res.Errors, res.Empty, res.Readings = queries.Load(), errs.Load(), empty.Load(), readings.Load()
	res.Elapsed, res.P50, res.P99, res.P999 = time.Since(start), p.p50, p.p99, p.p999
	if err := cio.send(msgResult, res); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// getReadings fetches one page and checks every reading is the device's.
func getReadings(ctx context.Context, hc *http.Client, u, token string, device int64) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s", resp.Status)
	}
	var page struct {
		Readings []struct {
			DeviceID int64 `json:"device_id"`
		} `json:"readings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return 0, err
	}
	for _, rd := range page.Readings {
		if rd.DeviceID != device {
			return 0, fmt.Errorf("a reading of device %d in device %d's answer", rd.DeviceID, device)
		}
	}
	return len(page.Readings), nil
}

// storeQueries is the reference: the same queries straight on the store,
// in process, with as many concurrent callers.
func storeQueries(ctx context.Context, st store.Store, cfg queryConfig) (queryResult, error) {
	var lat latencies
	var queries, readings atomic.Int64
	var firstErr error
	var mu sync.Mutex
	stop := time.Now().Add(cfg.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range max(1, cfg.Clients) {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c)+100, uint64(time.Now().UnixNano())))
			for time.Now().Before(stop) && ctx.Err() == nil {
				id, from, to := randomQuery(rng, cfg.IDs, cfg.From, cfg.To, cfg.Window)
				t0 := time.Now()
				rs, err := st.Readings(ctx, store.ReadingQuery{ProjectID: project, DeviceID: id, From: from, To: to, Limit: queryPage})
				lat.add(time.Since(t0))
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				queries.Add(1)
				readings.Add(int64(len(rs)))
			}
		})
	}
	wg.Wait()
	p := lat.percentiles()
	return queryResult{Queries: queries.Load(), Readings: readings.Load(), Elapsed: time.Since(start), P50: p.p50, P99: p.p99, P999: p.p999}, firstErr
}

func (r *run) query(ctx context.Context) error {
	dir, err := r.newDir("query")
	if err != nil {
		return err
	}
	defer removeAll(dir)
	total, devices := r.cfg.QueryReadings, r.cfg.QueryDevices
	dataDir := filepath.Join(dir, "server")
	r.prog.set(Query, fmt.Sprintf("generating %d readings of %d devices into the store", total, devices))
	var done atomic.Int64
	r.prog.setLive(Query, fmt.Sprintf("generating %d readings of %d devices into the store", total, devices), func() string {
		return fmt.Sprintf("(%d written)", done.Load())
	})
	if err := mkdirAll(dataDir); err != nil {
		return err
	}
	qd, err := generateReadings(ctx, filepath.Join(dataDir, "signet.db"), devices, total, func(n int) { done.Store(int64(n)) })
	if err != nil {
		return fmt.Errorf("generating readings: %w", err)
	}
	r.figure(Figure{Name: "readings generated in bulk", Value: float64(qd.total), Unit: "readings",
		Note: fmt.Sprintf("%d devices, one reading each every %v, with a relay's hearing each, written in %v (%.0f/s, journal off)", devices, queryInterval, qd.took.Round(time.Second), float64(qd.total)/qd.took.Seconds())})
	r.prog.set(Query, "starting the server on the generated store")
	sys, err := r.startSystem(ctx, dir, systemOpts{dir: dataDir})
	if err != nil {
		return err
	}
	defer sys.stop()
	qc := queryConfig{API: sys.srv.APIURL(), Token: sys.token, IDs: qd.ids, From: qd.from, To: qd.to,
		Window: queryPage * queryInterval, Clients: r.cfg.QueryClients, Duration: r.cfg.Duration}
	r.prog.set(Query, fmt.Sprintf("reference: the same queries on the store, %d callers in process", qc.Clients))
	ref, err := storeQueries(ctx, sys.srv.Store(), qc)
	if err != nil {
		return err
	}
	refRate := float64(ref.Queries) / ref.Elapsed.Seconds()
	r.figure(Figure{Name: "ref: store queries (no HTTP)", Value: refRate, Unit: "queries/s", IsReference: true,
		Note: fmt.Sprintf("p50 %.2f ms, p99 %.2f ms; %.0f readings per answer", ms(ref.P50), ms(ref.P99), float64(ref.Readings)/float64(max(1, ref.Queries)))})
	ch, err := r.startChild(ctx, "query", qc)
	if err != nil {
		return err
	}
	defer ch.stop()
	r.prog.set(Query, fmt.Sprintf("%d API clients query readings by device and time range", qc.Clients))
	if err := ch.send(msgGo, nil); err != nil {
		return err
	}
	var res queryResult
	if err := ch.recv(ctx, msgResult, &res, nil); err != nil {
		return err
	}
	ok := res.Queries - res.Errors
	rate := float64(ok) / res.Elapsed.Seconds()
	r.figure(Figure{Name: "queries by device and time range (API)", Value: rate, Unit: "queries/s", Reference: "store queries",
		Ratio: ratio(rate, refRate), Note: fmt.Sprintf("%d clients in a child process over HTTP, one page of up to %d readings each (%.0f on average); store of %d readings",
			qc.Clients, queryPage, float64(res.Readings)/float64(max(1, ok)), qd.total)})
	r.figure(Figure{Name: "p50 query latency (API)", Value: ms(res.P50), Unit: "ms"})
	r.figure(Figure{Name: "p99 query latency (API)", Value: ms(res.P99), Unit: "ms"})
	r.figure(Figure{Name: "p999 query latency (API)", Value: ms(res.P999), Unit: "ms"})
	r.check("every query answered with the device's readings", res.Errors == 0 && res.Queries > 0 && res.Empty < res.Queries/10+1,
		"%d queries, %d errors (%s), %d empty answers", res.Queries, res.Errors, res.FirstError, res.Empty)
	if total < 10_000_000 && !r.cfg.Smoke {
		r.note(fmt.Sprintf("query: the store held %d readings, fewer than the issue's 10,000,000 (--query-readings)", total))
	}
	return nil
}
