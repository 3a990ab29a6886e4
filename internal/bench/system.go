package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, for the bench's own connections

	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/server"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// project is the project every scenario's devices belong to.
const project = "bench"

// system is a server and its relays, running in the bench process.
type system struct {
	r      *run
	dir    string
	cfg    server.Config
	srv    *server.Server
	token  string
	cancel context.CancelFunc
	done   chan struct{}
	relays []*relay.Relay
	rstops []func()
	db     *sql.DB // read-only, for counting
	logs   *tailBuffer
}

type systemOpts struct {
	relays int
	// handshakeRate is the server's HandshakeRate (0: its default).
	handshakeRate float64
	// fixedPorts chooses the ports before the server starts, so that it
	// can be restarted on the same ones (recovery).
	fixedPorts bool
	// dir, if set, is a data directory prepared beforehand (query).
	dir string
}

// newDir makes a temporary directory for a scenario.
func (r *run) newDir(name string) (string, error) {
	return os.MkdirTemp(r.cfg.Dir, "signet-bench-"+name+"-")
}

// startSystem opens and runs a server (and relays) in dir.
func (r *run) startSystem(ctx context.Context, dir string, o systemOpts) (*system, error) {
	s := &system{r: r, dir: dir, logs: &tailBuffer{max: 4 << 10}}
	var b [6]byte
	_, _ = rand.Read(b[:])
	s.cfg = server.Config{DataDir: filepath.Join(dir, "server"), Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0",
		HTTPListen: "127.0.0.1:0", Stream: "BENCH_" + hex.EncodeToString(b[:]), HandshakeRate: o.handshakeRate,
		Logger: slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if o.dir != "" {
		s.cfg.DataDir = o.dir
	}
	if o.fixedPorts {
		var err error
		if s.cfg.Listen, err = freeAddr("udp"); err != nil {
			return nil, err
		}
		if s.cfg.RelayListen, err = freeAddr("tcp"); err != nil {
			return nil, err
		}
		if s.cfg.HTTPListen, err = freeAddr("tcp"); err != nil {
			return nil, err
		}
	}
	if err := s.startServer(ctx); err != nil {
		return nil, err
	}
	if err := s.srv.AddProject(ctx, project, "bench"); err != nil {
		s.stop()
		return nil, err
	}
	for i := range o.relays {
		if err := s.addRelay(ctx, fmt.Sprintf("relay-%d", i+1)); err != nil {
			s.stop()
			return nil, err
		}
	}
	if err := waitFor(ctx, 30*time.Second, "relays connected", func() bool {
		for _, rl := range s.relays {
			if !rl.Connected() {
				return false
			}
		}
		return true
	}); err != nil {
		s.stop()
		return nil, err
	}
	db, err := sql.Open("sqlite", filepath.Join(s.cfg.DataDir, "signet.db")+"?_pragma=query_only(1)&_pragma=busy_timeout(10000)")
	if err != nil {
		s.stop()
		return nil, err
	}
	db.SetMaxOpenConns(2)
	s.db = db
	return s, nil
}

// startServer opens the server on s.cfg and runs it.
func (s *system) startServer(ctx context.Context) error {
	srv, err := server.Open(ctx, s.cfg)
	if err != nil {
		return fmt.Errorf("bench: starting the server: %w", err)
	}
	if t := srv.BootstrapToken(); t != "" {
		s.token = t
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(sctx) }()
	s.srv, s.cancel, s.done = srv, cancel, done
	return nil
}

// stopServer stops the server (the relays keep running and buffer).
func (s *system) stopServer() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.cancel = nil
	}
}

func (s *system) addRelay(ctx context.Context, id string) error {
	dir := filepath.Join(s.dir, id)
	files, err := s.srv.AddRelay(ctx, id, dir)
	if err != nil {
		return err
	}
	cert, pool, err := relay.LoadTLS(files.Cert, files.Key, files.CA)
	if err != nil {
		return err
	}
	rl, err := relay.New(relay.Config{Listen: "127.0.0.1:0", Server: s.srv.RelayAddr(), Certificate: cert, CAs: pool,
		DataDir: filepath.Join(dir, "buffer"), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rl.Run(rctx) }()
	s.relays = append(s.relays, rl)
	s.rstops = append(s.rstops, func() { cancel(); <-done })
	return nil
}

// relayAddrs are the relays' UDP addresses.
func (s *system) relayAddrs() []string {
	var out []string
	for _, rl := range s.relays {
		out = append(out, rl.Addr().String())
	}
	return out
}

// stop stops everything and closes the counting connection.
func (s *system) stop() {
	for _, f := range s.rstops {
		f()
	}
	s.stopServer()
	if s.db != nil {
		s.db.Close()
	}
}

// register registers keys as enabled devices of the project, in bulk (one
// transaction on a connection of the bench's own: one transaction per
// device would take an fsync each), and makes the server load them. It
// returns the store ids in key order.
func (s *system) register(ctx context.Context, keys []wire.PublicKey) ([]int64, error) {
	ids, err := bulkDevices(ctx, filepath.Join(s.cfg.DataDir, "signet.db"), keys)
	if err != nil {
		s.r.log.Warn("bulk registration failed; registering one by one", "err", err)
		ids = ids[:0]
		for i, k := range keys {
			id, err := s.srv.Store().CreateDevice(ctx, store.Device{ProjectID: project, PublicKey: k,
				Name: "bench-" + strconv.Itoa(i), Enabled: true, Created: time.Now()})
			if err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
	}
	// AddDevice reloads the registry, which picks up the whole batch.
	sentinel, err := wire.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	defer sentinel.Zero()
	if _, err := s.srv.AddDevice(ctx, project, sentinel.Public(), "bench-sentinel"); err != nil {
		return nil, fmt.Errorf("bench: loading the devices: %w", err)
	}
	return ids, nil
}

// bulkDevices inserts devices into the store file at path in one
// transaction.
func bulkDevices(ctx context.Context, path string, keys []wire.PublicKey) ([]int64, error) {
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(30000)&_pragma=foreign_keys(1)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO devices (project_id, public_key, name, enabled, created) VALUES (?, ?, ?, 1, ?) RETURNING id`)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	now := time.Now().UnixMilli()
	ids := make([]int64, 0, len(keys))
	for i, k := range keys {
		var id int64
		if err := st.QueryRowContext(ctx, project, k[:], "bench-"+strconv.Itoa(i), now).Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, tx.Commit()
}

// count is the readings stored in the project.
func (s *system) count(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM readings WHERE project_id = ?`, project).Scan(&n)
	return n, err
}

// committed is the readings the store's writer has inserted and committed
// since the server started (its own count, which the bench's fresh store
// makes the count of its rows), or count when the store keeps no such
// count. Unlike count it costs the running system nothing: a COUNT(*) over
// a hundred thousand readings, at half time of a run, held a core for long
// enough that most of the worst latencies of the run were in the 100 ms
// after it (docs/performance.md, sixth round of 3 December).
func (s *system) committed(ctx context.Context) (int64, error) {
	if st, ok := s.srv.Store().(interface{ AppendStats() sqlite.AppendStats }); ok {
		a := st.AppendStats()
		return a.Readings - a.Duplicates, nil
	}
	return s.count(ctx)
}

// waitStored waits until want readings are stored, asking the writer's own
// count while it is short (committed) and the rows themselves once it is
// not; it returns the rows stored.
func (s *system) waitStored(ctx context.Context, want int64, d time.Duration) (int64, error) {
	var stored int64
	err := waitFor(ctx, d, "every reading sent stored", func() bool {
		if c, err := s.committed(ctx); err == nil && c < want {
			return false
		}
		stored, _ = s.count(ctx)
		return stored >= want
	})
	return stored, err
}

// lastID is the highest ID of the project's readings (0 if none).
func (s *system) lastID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT max(id) FROM readings WHERE project_id = ?`, project).Scan(&id)
	return id.Int64, err
}

// countWhere is the readings stored of the devices marked true in set.
func (s *system) countWhere(ctx context.Context, set map[int64]bool) (int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, COUNT(*) FROM readings WHERE project_id = ? GROUP BY device_id`, project)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var total int64
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return 0, err
		}
		if set[id] {
			total += n
		}
	}
	return total, rows.Err()
}

// deviceCheck compares what each device sent with what is stored: each
// device i must have exactly sequences 1..sent[i], each once. missing
// counts readings sent and not stored, extra readings stored that were
// never sent or stored twice.
type deviceCheck struct {
	devices, exact int
	missing, extra int64
	// examples describes the first few devices that are not exact.
	examples []string
}

func (s *system) checkDevices(ctx context.Context, ids []int64, sent []uint64) (deviceCheck, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq)
		FROM readings WHERE project_id = ? GROUP BY device_id`, project)
	if err != nil {
		return deviceCheck{}, err
	}
	defer rows.Close()
	type agg struct{ n, distinct, lo, hi int64 }
	got := make(map[int64]agg, len(ids))
	for rows.Next() {
		var id int64
		var a agg
		if err := rows.Scan(&id, &a.n, &a.distinct, &a.lo, &a.hi); err != nil {
			return deviceCheck{}, err
		}
		got[id] = a
	}
	if err := rows.Err(); err != nil {
		return deviceCheck{}, err
	}
	c := deviceCheck{devices: len(ids)}
	for i, id := range ids {
		want := int64(sent[i])
		a := got[id]
		delete(got, id)
		switch {
		case a.n == want && a.distinct == a.n && (want == 0 || (a.lo == 1 && a.hi == want)):
			c.exact++
		default:
			if a.distinct < want {
				c.missing += want - a.distinct
			}
			c.extra += a.n - a.distinct
			if a.hi > want {
				c.extra += a.hi - want
			}
			if len(c.examples) < 5 {
				c.examples = append(c.examples, s.describeDevice(ctx, id, want))
			}
		}
	}
	for _, a := range got {
		c.extra += a.n // readings of devices the bench did not drive
	}
	return c, nil
}

// describeDevice lists what a device lacks of 1..want, has outside it,
// and has twice.
func (s *system) describeDevice(ctx context.Context, id, want int64) string {
	rows, err := s.db.QueryContext(ctx, `SELECT seq FROM readings WHERE device_id = ? ORDER BY seq`, id)
	if err != nil {
		return fmt.Sprintf("device %d: %v", id, err)
	}
	defer rows.Close()
	have := map[int64]bool{}
	var extra, twice []int64
	for rows.Next() {
		var seq int64
		if rows.Scan(&seq) == nil {
			if have[seq] && len(twice) < 10 {
				twice = append(twice, seq)
			}
			have[seq] = true
			if seq < 1 || seq > want {
				extra = append(extra, seq)
			}
		}
	}
	var missing []int64
	for seq := int64(1); seq <= want && len(missing) < 10; seq++ {
		if !have[seq] {
			missing = append(missing, seq)
		}
	}
	return fmt.Sprintf("device %d lacks sequences %v, has unexpected %v, has twice %v", id, missing, extra, twice)
}

func (c deviceCheck) ok() bool { return c.exact == c.devices && c.missing == 0 && c.extra == 0 }

func (c deviceCheck) String() string {
	s := fmt.Sprintf("%d of %d devices stored exactly 1..sent; %d readings missing, %d unexpected", c.exact, c.devices, c.missing, c.extra)
	if len(c.examples) > 0 {
		s += " (" + strings.Join(c.examples, "; ") + ")"
	}
	return s
}

// latencies collects latency samples, bounded, each with the time it was
// taken (since benchEpoch).
type latencies struct {
	mu      sync.Mutex
	samples []time.Duration
	at      []time.Duration
}

const maxSamples = 4 << 20

// benchEpoch is the origin of the sample times.
var benchEpoch = time.Now()

func (l *latencies) add(d time.Duration) {
	at := time.Since(benchEpoch)
	l.mu.Lock()
	if len(l.samples) < maxSamples {
		l.samples = append(l.samples, d)
		l.at = append(l.at, at)
	}
	l.mu.Unlock()
}

type percentiles struct {
	n              int
	p50, p99, p999 time.Duration
	max            time.Duration
}

// quantile is the q-quantile of sorted, which is not empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*q))]
}

func (l *latencies) percentiles() percentiles {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	l.mu.Unlock()
	p := percentiles{n: len(s)}
	if p.n == 0 {
		return p
	}
	slices.Sort(s)
	p.p50, p.p99, p.p999, p.max = quantile(s, 0.5), quantile(s, 0.99), quantile(s, 0.999), s[p.n-1]
	return p
}

// tail is a tail's worst window: of the samples at or above the p99, the
// share taken in the tailWindow that holds most of them, when that window
// began (since the first sample), and the p99 of the samples taken
// outside it.
type tail struct {
	share   float64
	at      time.Duration
	p99Rest time.Duration
}

// tailWindow is the window of time in which tail looks for the tail's
// worst moment.
const tailWindow = 100 * time.Millisecond

// tail finds the window with most of the samples at or above p99 (the
// samples' p99, from percentiles), and the p99 without it: a p99 over a
// few seconds is the worst 1 % of them, which one stall and the backlog
// behind it can make up alone.
func (l *latencies) tail(p99 time.Duration) tail {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	at := slices.Clone(l.at)
	l.mu.Unlock()
	var t tail
	if len(s) == 0 {
		return t
	}
	first := slices.Min(at)
	window := func(i int) int { return int((at[i] - first) / tailWindow) }
	counts := map[int]int{}
	above := 0
	for i, d := range s {
		if d >= p99 {
			counts[window(i)]++
			above++
		}
	}
	worst, most := 0, -1
	for w, n := range counts {
		if n > most || n == most && w < worst {
			worst, most = w, n
		}
	}
	t.share, t.at = float64(most)/float64(above), time.Duration(worst)*tailWindow
	var rest []time.Duration
	for i, d := range s {
		if window(i) != worst {
			rest = append(rest, d)
		}
	}
	if len(rest) > 0 {
		slices.Sort(rest)
		t.p99Rest = quantile(rest, 0.99)
	}
	return t
}

// hubWatch follows the server's live hub (what feeds SSE, published right
// after each commit): the time from the relay's receive to there is the
// time to durable. The hub cuts a subscriber that falls a buffer behind,
// and the readings published before it subscribes again have no sample,
// so n may never reach the count stored; last, the highest reading ID
// delivered, tells when the hub has published everything (it publishes
// in commit order).
type hubWatch struct {
	lat      latencies
	n, cut   atomic.Int64
	last     atomic.Int64
	stopOnce sync.Once
	stopC    chan struct{}
	exited   chan struct{}
}

func watchHub(srv *server.Server) *hubWatch {
	h := &hubWatch{stopC: make(chan struct{}), exited: make(chan struct{})}
	ch, cancel := srv.Subscribe(project)
	go func() {
		defer close(h.exited)
		for {
			select {
			case <-h.stopC:
				cancel()
				return
			case rd, ok := <-ch:
				if !ok {
					h.cut.Add(1)
					ch, cancel = srv.Subscribe(project)
					continue
				}
				if len(rd.Heard) > 0 {
					h.lat.add(time.Since(rd.Heard[0].Received))
				}
				h.n.Add(1)
				if rd.ID > h.last.Load() {
					h.last.Store(rd.ID)
				}
			}
		}
	}()
	return h
}

func (h *hubWatch) stop() { h.stopOnce.Do(func() { close(h.stopC); <-h.exited }) }

// sseWatch is an SSE client of the project's live stream that resumes
// with Last-Event-ID after a disconnect, as every client must. It starts
// with Last-Event-ID 0, so it receives every reading of the project even
// if its first connection takes hold after the load started. It counts
// events, duplicates, and the latency from the relay's receive.
type sseWatch struct {
	lat    latencies
	n      atomic.Int64
	dups   atomic.Int64
	conns  atomic.Int64
	mu     sync.Mutex
	seen   map[[2]int64]struct{}
	cancel context.CancelFunc
	exited chan struct{}
}

func watchSSE(apiURL, token string) *sseWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &sseWatch{seen: map[[2]int64]struct{}{}, cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(w.exited)
		var last int64
		for ctx.Err() == nil {
			w.conns.Add(1)
			_ = w.once(ctx, apiURL, token, &last)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

type sseReading struct {
	DeviceID int64  `json:"device_id"`
	Seq      uint64 `json:"seq"`
	Heard    []struct {
		Received time.Time `json:"received"`
	} `json:"heard"`
}

// parseSSEReading reads the fields the bench needs from a reading event.
// The bench's SSE client shares the cores with the server it measures, and
// decoding every event with encoding/json was an eighth of the bench
// process's CPU at half the peak: it finds the fields in the server's own
// field order, and hands anything unexpected to encoding/json.
func parseSSEReading(data []byte) (sseReading, error) {
	if rd, ok := scanSSEReading(data); ok {
		return rd, nil
	}
	var rd sseReading
	err := json.Unmarshal(data, &rd)
	return rd, err
}

func scanSSEReading(data []byte) (rd sseReading, ok bool) {
	rest := data
	// field returns what follows `"name":` after rest's start, up to the
	// next ',' or '}' outside a string (numbers and times have neither).
	field := func(name string) ([]byte, bool) {
		i := bytes.Index(rest, []byte(`"`+name+`":`))
		if i < 0 {
			return nil, false
		}
		rest = rest[i+len(name)+3:]
		j := bytes.IndexAny(rest, ",}")
		if j < 0 {
			return nil, false
		}
		return rest[:j], true
	}
	dev, ok1 := field("device_id")
	seq, ok2 := field("seq")
	if !ok1 || !ok2 || !bytes.HasPrefix(data, []byte(`{"id":`)) {
		return rd, false
	}
	var err1, err2 error
	rd.DeviceID, err1 = strconv.ParseInt(string(dev), 10, 64)
	rd.Seq, err2 = strconv.ParseUint(string(seq), 10, 64)
	if err1 != nil || err2 != nil {
		return rd, false
	}
	i := bytes.Index(rest, []byte(`"heard":[`))
	if i < 0 {
		return rd, false
	}
	rest = rest[i+len(`"heard":[`):]
	if bytes.HasPrefix(rest, []byte("]}")) {
		return rd, true
	}
	// The first hearing: {"relay":"…","received":"…",…}. A relay ID with
	// a quote or a backslash in it is escaped: encoding/json decides.
	if !bytes.HasPrefix(rest, []byte(`{"relay":"`)) {
		return rd, false
	}
	rest = rest[len(`{"relay":"`):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 || !bytes.HasPrefix(rest[j:], []byte(`","received":"`)) {
		return rd, false
	}
	rest = rest[j+len(`","received":"`):]
	if j = bytes.IndexByte(rest, '"'); j < 0 {
		return rd, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
	if err != nil {
		return rd, false
	}
	rd.Heard = append(rd.Heard, struct {
		Received time.Time `json:"received"`
	}{t})
	return rd, true
}

func (w *sseWatch) once(ctx context.Context, apiURL, token string, last *int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/api/v1/projects/"+project+"/stream", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(*last, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id int64
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if data != nil && id > *last {
				now := time.Now()
				rd, err := parseSSEReading(data)
				if err != nil {
					return err
				}
				k := [2]int64{rd.DeviceID, int64(rd.Seq)}
				w.mu.Lock()
				if _, ok := w.seen[k]; ok {
					w.dups.Add(1)
				}
				w.seen[k] = struct{}{}
				w.mu.Unlock()
				if len(rd.Heard) > 0 {
					w.lat.add(now.Sub(rd.Heard[0].Received))
				}
				w.n.Add(1)
				*last = id
			}
			data = nil
		case bytes.HasPrefix(line, []byte("id:")):
			id, _ = strconv.ParseInt(strings.TrimSpace(string(line[3:])), 10, 64)
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data[:0], bytes.TrimPrefix(line[5:], []byte(" "))...)
		}
	}
	return sc.Err()
}

func (w *sseWatch) stop() { w.cancel(); <-w.exited }

// waitFor polls cond until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: timed out after %v waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// freeAddr returns a free loopback address for network ("udp" or "tcp").
func freeAddr(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// memory is the live heap after a full collection and the resident set.
func memory() (heap, rss uint64) {
	runtime.GC()
	// A second collection, and every free page returned to the system:
	// the bench process has run other scenarios before, and pages they
	// freed but the runtime kept would otherwise take in the memory being
	// measured without the RSS moving (31 bytes per session in one run).
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, procstat.RSS()
}
