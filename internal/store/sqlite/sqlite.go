// Package sqlite is the embedded Store: one SQLite file in the data
// directory, so that a single `signet server` needs no database service.
//
// It uses modernc.org/sqlite (SQLite translated to Go: no cgo, so the
// binary cross-compiles and stays static) and goose migrations embedded in
// the binary, applied on Open.
//
// SQLite allows one writer at a time, so the Store keeps exactly one write
// connection, through which every write is serialized, and a small pool of
// read-only connections that WAL mode lets run alongside it. Serializing
// appends on one connection also makes reading IDs become visible in ID
// order, so a client following the ID cursor never skips a reading.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

const (
	// readConns is the size of the read pool: enough for API queries and the
	// console to run while ingest writes, few enough that a burst of queries
	// cannot exhaust file descriptors or memory (each connection has its own
	// page cache).
	readConns = 4

	// busyTimeout is how long a connection waits for a lock held by another
	// process (an `signet admin` command on the same file, a backup) before
	// it fails. Within one process the write connection never waits on
	// itself.
	busyTimeout = 5 * time.Second

	// MaxAppend is store.MaxAppend, the bound of one AppendReadings call.
	MaxAppend = store.MaxAppend
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the SQLite implementation of store.Store.
type Store struct {
	w *sql.DB // one connection: every write
	r *sql.DB // readConns read-only connections

	// Multi-row inserts by number of rows, prepared once on the write
	// connection and reused by every AppendReadings transaction.
	insReadings map[int]*sql.Stmt
	// The device index (device_index.go): the writer's state, its inserts
	// of rows and lookups of (device, sequence) pairs by chunk size, the
	// mark's update and the highest reading ID.
	idx         deviceIndex
	insPairs    map[int]*sql.Stmt
	lookupSeqs  map[int]*sql.Stmt
	highSeqs    map[int]*sql.Stmt
	raiseMark   *sql.Stmt
	lastID      *sql.Stmt
	insHearings map[int]*sql.Stmt
	// The statements of reading spans (spans.go), and the IDs a span
	// covers at most (spanIDs; smaller in tests).
	extendSpan, newSpan *sql.Stmt
	spanIDs             int64

	// Reading queries, prepared on the read pool the first time each
	// shape is asked (readStmt).
	readMu    sync.Mutex
	readStmts map[string]*sql.Stmt

	// The checkpointer copies the WAL into the database file in the
	// background (ckpt is its own connection), so that no commit of the
	// write connection pays for more than a remainder of it (see
	// checkpoints). ckptTopUp, ckptTopUpGap and ckptTruncate are
	// ckptTopUpPages, ckptTopUpEvery and ckptTruncatePages, smaller in
	// tests; lastTopUp is the checkpointer's own; topUps and truncations count
	// the checkpoints that ran on the writer and that truncated, restarts
	// the times the WAL was seen to have started over, and walPages is
	// its size at the last checkpoint.
	ckpt         *sql.DB
	stopCkpt     context.CancelFunc
	ckptDone     chan struct{}
	ckptEvery    time.Duration
	ckptTopUp    int
	ckptTopUpGap time.Duration
	ckptTruncate int
	lastTopUp    time.Time
	topUps       atomic.Int64
	truncations  atomic.Int64
	restarts     atomic.Int64
	walPages     int // the checkpointer's own
	// topUpHeld and topUpLongest: how long the top-ups held the write
	// connection, in all and at most (nanoseconds).
	topUpHeld, topUpLongest atomic.Int64
	// rounds, roundsTook and roundLongest: the background passive
	// checkpoints, how long they took in all and at most (nanoseconds).
	rounds, roundsTook, roundLongest atomic.Int64
	// dbFile is the database file, read-only, for startWriteback.
	dbFile *os.File

	// The appends' counters (AppendStats): appends committed, their
	// readings and those stored already, and nanoseconds spent waiting for
	// the write connection, in their statements and in their commits.
	appends, appendReadings, appendDups    atomic.Int64
	appendWait, appendStmts, appendCommits atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and migrates
// it to the current schema. The path must name a file: an in-memory
// database would give the write and read connections different databases.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.HasPrefix(path, ":memory:") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: open %q: need the path of a file: %w", path, store.ErrInvalid)
	}
	// The driver splits its parameters off at the first '?'.
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlite: open %q: path contains '?': %w", path, store.ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	common := fmt.Sprintf("_busy_timeout=%d&_foreign_keys=1", busyTimeout.Milliseconds())

	s := &Store{}
	// synchronous=FULL: a commit is on disk when it returns, since ingest
	// acknowledges readings to devices, which then forget them. _txlock:
	// take the write lock at BEGIN, so that a transaction never fails half
	// way because another process wrote first. temp_store=MEMORY keeps the
	// statement journals of multi-row inserts off disk, and a 64 MiB cache
	// keeps a batch's index pages in memory until its commit rather than
	// spilling them to the WAL part way: together about 40% off an append.
	//
	// wal_autocheckpoint(0): the commit that crosses SQLite's default 1000
	// pages of WAL would copy them into the database file itself, an
	// eighth of an append's time; the checkpointer does it in the
	// background instead (see checkpoints).
	s.w, err = sql.Open("sqlite", abs+"?"+common+"&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate&_pragma=temp_store(MEMORY)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.setUp(ctx, abs, common); err != nil {
		s.closeAll()
		return nil, err
	}
	return s, nil
}

// setUp migrates the schema through the write connection, then prepares
// statements and opens the read pool.
func (s *Store) setUp(ctx context.Context, abs, common string) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	if err := migrate(ctx, s.w); err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", abs, err)
	}
	// Keep the query planner's statistics fresh, bounded in time by
	// analysis_limit, as SQLite recommends for long-lived connections.
	for _, q := range []string{"PRAGMA analysis_limit = 1000", "PRAGMA optimize = 0x10002"} {
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("sqlite: %s: %w", q, err)
		}
	}
	if err := dropStat4(ctx, s.w); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	var err error
	if s.insReadings, err = prepareChunks(ctx, s.w, maxChunkReadings, insertReadingsSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.insHearings, err = prepareChunks(ctx, s.w, maxChunkHearings, insertHearingsSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.extendSpan, err = s.w.PrepareContext(ctx, extendSpanSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.newSpan, err = s.w.PrepareContext(ctx, newSpanSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	s.spanIDs = spanIDs
	if s.insPairs, err = prepareChunks(ctx, s.w, maxChunkPairs, insertPairsSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.lookupSeqs, err = prepareChunks(ctx, s.w, maxChunkLookups, lookupSeqsSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.highSeqs, err = prepareChunks(ctx, s.w, maxChunkLookups, highSeqsSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.raiseMark, err = s.w.PrepareContext(ctx, raiseMarkSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.lastID, err = s.w.PrepareContext(ctx, lastIDSQL); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	s.idx.every, s.idx.slice = devIndexEvery, devIndexSlice
	s.idx.pendingKeys, s.idx.high = make(map[devSeq]struct{}), make(map[int64]uint64)
	if s.idx.state.last, err = buildDeviceIndex(ctx, s.w); err != nil {
		return fmt.Errorf("sqlite: device index of %s: %w", abs, err)
	}
	s.r, err = sql.Open("sqlite", abs+"?"+common+"&_query_only=1")
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.r.SetMaxOpenConns(readConns)
	s.r.SetMaxIdleConns(readConns)
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	// The checkpointer waits at most ckptBusy for the writer and readers:
	// a truncating checkpoint holds the write lock while it waits for
	// readers, and a long API query must not stall ingest behind it. A
	// checkpoint that gives up is tried again a second later.
	s.ckpt, err = sql.Open("sqlite", fmt.Sprintf("%s?_busy_timeout=%d&_foreign_keys=1&_synchronous=FULL", abs, ckptBusy.Milliseconds()))
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.ckpt.SetMaxOpenConns(1)
	s.ckpt.SetMaxIdleConns(1)
	s.ckpt.SetConnMaxLifetime(0)
	s.ckpt.SetConnMaxIdleTime(0)
	if err := s.ckpt.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	// The checkpointer's writeback hint (startWriteback) needs the file.
	if f, err := os.Open(abs); err == nil {
		s.dbFile = f
	}
	cctx, cancel := context.WithCancel(context.Background())
	s.stopCkpt, s.ckptDone = cancel, make(chan struct{})
	if s.ckptEvery == 0 {
		s.ckptEvery, s.ckptTopUp, s.ckptTopUpGap, s.ckptTruncate = ckptEvery, ckptTopUpPages, ckptTopUpEvery, ckptTruncatePages
	}
	go s.checkpoints(cctx)
	return nil
}

// Checkpoint policy. The WAL starts over from its beginning at the first
// commit after a checkpoint copied all of it, and only then: a WAL that is
// never wholly copied grows without end. A checkpoint running beside the
// writer (PASSIVE) blocks nobody, but the writer commits while it copies,
// so under steady ingest it never catches up. Making it catch up by force
// (RESTART or TRUNCATE) holds the write lock for as long as the copy and
// the database file's fsync take: every reading waits behind it. With one
// truncation per 64 MiB of WAL that was a stall of 60–100 ms every few
// seconds at 10,000 readings/s, which set the p99 latency of ingest.
//
// So the copy is done in two steps. Every ckptEvery a passive checkpoint on
// a connection of its own copies the bulk of the WAL beside the writer.
// When the WAL has passed ckptTopUpPages, a second passive checkpoint runs
// on the writer's own connection, between two appends: no commit can
// happen during it, so it copies only what was committed while the first
// one ran, the WAL is then wholly copied, and the next append starts it
// over. The writer pays for that remainder, not for the bulk: a few
// milliseconds, so at most once every ckptTopUpEvery. A reader inside a
// transaction at that moment keeps the WAL from starting over (under the
// bench about six top-ups in seven); if it still passes ckptTruncatePages,
// a truncating checkpoint waits for the readers (at most ckptBusy) and
// bounds the file.
const (
	ckptEvery         = 250 * time.Millisecond
	ckptBusy          = 100 * time.Millisecond
	ckptTopUpPages    = 4096 // 16 MiB of 4 KiB pages
	ckptTopUpEvery    = 2 * time.Second
	ckptTruncatePages = 65536 // 256 MiB
)

// checkpoints runs the checkpointer until ctx ends.
func (s *Store) checkpoints(ctx context.Context) {
	defer close(s.ckptDone)
	t := time.NewTicker(s.ckptEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// An error is a store being closed or a full disk: the writer
		// reports those.
		_ = s.checkpointOnce(ctx)
		_ = s.idleIndex(ctx)
	}
}

// checkpointOnce runs one round of the checkpoint policy.
func (s *Store) checkpointOnce(ctx context.Context) error {
	start := time.Now()
	pages, err := s.checkpoint(ctx, s.ckpt, "PASSIVE")
	took := time.Since(start)
	s.rounds.Add(1)
	s.roundsTook.Add(int64(took))
	storeMax(&s.roundLongest, int64(took))
	if err != nil {
		return err
	}
	// A passive checkpoint that does not reach the WAL's end (the writer
	// went on meanwhile) leaves the pages it copied unsynced, and the
	// top-up's fsync, on the write connection, then writes them all.
	// Starting their writeback now leaves the top-up less to wait for.
	if s.dbFile != nil {
		_ = startWriteback(s.dbFile)
	}
	if pages < s.walPages {
		s.restarts.Add(1)
	}
	s.walPages = pages
	if pages < s.ckptTopUp || time.Since(s.lastTopUp) < s.ckptTopUpGap {
		return nil
	}
	s.lastTopUp = time.Now()
	s.topUps.Add(1)
	if pages, err = s.topUpOnce(ctx); err != nil || pages < s.ckptTruncate {
		return err
	}
	s.truncations.Add(1)
	_, err = s.checkpoint(ctx, s.ckpt, "TRUNCATE")
	return err
}

// topUpOnce runs the top-up's passive checkpoint on the write connection,
// once the append in progress has let go of it, and records how long it
// held the connection: every append waits that long.
func (s *Store) topUpOnce(ctx context.Context) (int, error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	pages, err := s.checkpoint(ctx, conn, "PASSIVE")
	held := time.Since(start)
	s.topUpHeld.Add(int64(held))
	storeMax(&s.topUpLongest, int64(held))
	return pages, err
}

// storeMax raises *m to v if v is larger.
func storeMax(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

// CheckpointStats says what the checkpointer did since the store was
// opened.
type CheckpointStats struct {
	// TopUps is the checkpoints run on the write connection, and
	// TopUpHeld and TopUpLongest how long they held it (every append
	// waits for them), in all and at most.
	TopUps                  int64
	TopUpHeld, TopUpLongest time.Duration
	// Restarts is the times the WAL was seen to start over, Truncations
	// the fallback truncating checkpoints.
	Restarts, Truncations int64
	// Rounds is the background checkpoints (on a connection of their
	// own, every ckptEvery), and RoundsTook and RoundLongest how long
	// they took, in all and at most. They block no one, but they take
	// CPU and disk from everyone.
	Rounds                   int64
	RoundsTook, RoundLongest time.Duration
}

// CheckpointStats returns the checkpointer's counters.
func (s *Store) CheckpointStats() CheckpointStats {
	return CheckpointStats{
		TopUps: s.topUps.Load(), TopUpHeld: time.Duration(s.topUpHeld.Load()), TopUpLongest: time.Duration(s.topUpLongest.Load()),
		Restarts: s.restarts.Load(), Truncations: s.truncations.Load(),
		Rounds: s.rounds.Load(), RoundsTook: time.Duration(s.roundsTook.Load()), RoundLongest: time.Duration(s.roundLongest.Load()),
	}
}

// querier is a connection pool or one connection of it.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// checkpoint runs one checkpoint in mode on db and returns the WAL's size
// in pages when it ran.
func (s *Store) checkpoint(ctx context.Context, db querier, mode string) (int, error) {
	var busy, log, done int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &log, &done); err != nil {
		return 0, err
	}
	return log, nil
}

// migrate applies the embedded migrations that the file lacks.
func migrate(ctx context.Context, db *sql.DB) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// dropStat4 deletes the samples a full ANALYZE keeps in sqlite_stat4
// (an operator's, or the bench's bulk generator's; the store's own
// optimize, with analysis_limit set, takes none), leaving sqlite_stat1's
// per-index averages. This build of SQLite has STAT4, and while an index
// has samples, a prepared statement that compares a bound parameter with
// its columns is compiled again whenever the value bound changes, so that
// the plan may follow the samples: every page of readings, prepared once
// and run with new bounds each time, was compiled again on every run (a
// tenth of the API's CPU under bench query). The hot queries name their
// indexes (INDEXED BY), so the samples could not change their plans
// anyway. Connections load the statistics when they open: this runs
// before the read pool opens.
func dropStat4(ctx context.Context, db *sql.DB) error {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat4'`).Scan(&n); err != nil || n == 0 {
		return err
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM sqlite_stat4`); err != nil {
		return fmt.Errorf("clear sqlite_stat4: %w", err)
	}
	// Reload this connection's statistics from the tables as they are now.
	_, err := db.ExecContext(ctx, `ANALYZE sqlite_schema`)
	return err
}

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// Let SQLite refresh planner statistics that the session showed
		// to be stale; cheap, and bounded by analysis_limit.
		_, err := s.w.Exec("PRAGMA optimize")
		s.closeErr = errors.Join(err, s.closeAll())
	})
	return s.closeErr
}

func (s *Store) closeAll() error {
	var errs []error
	if s.stopCkpt != nil {
		s.stopCkpt()
		<-s.ckptDone
	}
	if s.ckpt != nil {
		errs = append(errs, s.ckpt.Close())
	}
	if s.dbFile != nil {
		errs = append(errs, s.dbFile.Close())
	}
	for _, stmts := range []map[int]*sql.Stmt{s.insReadings, s.insHearings, s.insPairs, s.lookupSeqs, s.highSeqs} {
		for _, st := range stmts {
			errs = append(errs, st.Close())
		}
	}
	for _, st := range []*sql.Stmt{s.extendSpan, s.newSpan, s.raiseMark, s.lastID} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	s.readMu.Lock()
	for _, st := range s.readStmts {
		errs = append(errs, st.Close())
	}
	s.readStmts = nil
	s.readMu.Unlock()
	for _, db := range []*sql.DB{s.r, s.w} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// ---- Projects ----

func (s *Store) CreateProject(ctx context.Context, p store.Project) error {
	if p.ID == "" {
		return fmt.Errorf("sqlite: create project: empty id: %w", store.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO projects (id, name, created) VALUES (?, ?, ?)`,
		p.ID, p.Name, millis(createdOrNow(p.Created)))
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
		return fmt.Errorf("sqlite: create project %q: id taken: %w", p.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create project %q: %w", p.ID, err)
	}
	return nil
}

func (s *Store) Projects(ctx context.Context) ([]store.Project, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, created FROM projects ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list projects: %w", err)
	}
	defer rows.Close()
	var out []store.Project
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list projects: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list projects: %w", err)
	}
	return out, nil
}

func (s *Store) Project(ctx context.Context, id string) (store.Project, error) {
	p, err := scanProject(s.queryRow(ctx, `SELECT id, name, created FROM projects WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("sqlite: project %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("sqlite: project %q: %w", id, err)
	}
	return p, nil
}

func scanProject(sc scanner) (store.Project, error) {
	var p store.Project
	var created int64
	err := sc.Scan(&p.ID, &p.Name, &created)
	p.Created = time.UnixMilli(created).UTC()
	return p, err
}

// ---- Devices ----

const deviceCols = `id, project_id, public_key, name, enabled, created, last_seen, health, relays`

func (s *Store) CreateDevice(ctx context.Context, d store.Device) (int64, error) {
	switch {
	case d.ProjectID == "":
		return 0, fmt.Errorf("sqlite: create device: empty project id: %w", store.ErrInvalid)
	case d.PublicKey == wire.PublicKey{}:
		return 0, fmt.Errorf("sqlite: create device: zero public key: %w", store.ErrInvalid)
	}
	health, relays, err := encodeStatus(d.Status)
	if err != nil {
		return 0, fmt.Errorf("sqlite: create device: %w", err)
	}
	var id int64
	err = s.w.QueryRowContext(ctx, `INSERT INTO devices
		(project_id, public_key, name, enabled, created, last_seen, health, relays)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		d.ProjectID, d.PublicKey[:], d.Name, d.Enabled, millis(createdOrNow(d.Created)),
		nullMillis(d.Status.LastSeen), health, relays).Scan(&id)
	switch {
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE):
		return 0, fmt.Errorf("sqlite: create device: public key already registered: %w", store.ErrConflict)
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY):
		return 0, fmt.Errorf("sqlite: create device: project %q: %w", d.ProjectID, store.ErrNotFound)
	case err != nil:
		return 0, fmt.Errorf("sqlite: create device: %w", err)
	}
	return id, nil
}

func (s *Store) Device(ctx context.Context, id int64) (store.Device, error) {
	d, err := scanDevice(s.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("sqlite: device %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("sqlite: device %d: %w", id, err)
	}
	return d, nil
}

func (s *Store) DeviceByKey(ctx context.Context, key wire.PublicKey) (store.Device, error) {
	d, err := scanDevice(s.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE public_key = ?`, key[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("sqlite: device by key: %w", store.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("sqlite: device by key: %w", err)
	}
	return d, nil
}

// Devices lists a project's devices in ID order; an unknown project has
// none.
func (s *Store) Devices(ctx context.Context, projectID string) ([]store.Device, error) {
	return s.devices(ctx, `SELECT `+deviceCols+` FROM devices WHERE project_id = ? ORDER BY id`, projectID)
}

func (s *Store) devices(ctx context.Context, q string, args ...any) ([]store.Device, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list devices: %w", err)
	}
	defer rows.Close()
	var out []store.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list devices: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list devices: %w", err)
	}
	return out, nil
}

func scanDevice(sc scanner) (store.Device, error) {
	var (
		d              store.Device
		key            []byte
		created        int64
		lastSeen       sql.NullInt64
		health, relays sql.NullString
	)
	if err := sc.Scan(&d.ID, &d.ProjectID, &key, &d.Name, &d.Enabled, &created, &lastSeen, &health, &relays); err != nil {
		return d, err
	}
	if len(key) != wire.KeySize {
		return d, fmt.Errorf("device %d: stored public key has %d bytes", d.ID, len(key))
	}
	copy(d.PublicKey[:], key)
	d.Created = time.UnixMilli(created).UTC()
	d.Status.LastSeen = fromNullMillis(lastSeen)
	if health.Valid {
		d.Status.Health = new(wire.Health)
		if err := json.Unmarshal([]byte(health.String), d.Status.Health); err != nil {
			return d, fmt.Errorf("device %d: stored health: %w", d.ID, err)
		}
	}
	if relays.Valid {
		var hs []hearingJSON
		if err := json.Unmarshal([]byte(relays.String), &hs); err != nil {
			return d, fmt.Errorf("device %d: stored relays: %w", d.ID, err)
		}
		d.Status.Relays = make([]store.Hearing, len(hs))
		for i, h := range hs {
			d.Status.Relays[i] = h.hearing()
		}
	}
	return d, nil
}

func (s *Store) SetDeviceEnabled(ctx context.Context, id int64, enabled bool) error {
	res, err := s.w.ExecContext(ctx, `UPDATE devices SET enabled = ? WHERE id = ?`, enabled, id)
	return updated(res, err, fmt.Sprintf("set device %d enabled", id))
}

func (s *Store) SetDeviceStatus(ctx context.Context, id int64, st store.DeviceStatus) error {
	health, relays, err := encodeStatus(st)
	if err != nil {
		return fmt.Errorf("sqlite: set device %d status: %w", id, err)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE devices SET last_seen = ?, health = ?, relays = ? WHERE id = ?`,
		nullMillis(st.LastSeen), health, relays, id)
	return updated(res, err, fmt.Sprintf("set device %d status", id))
}

// SetDeviceStatuses sets the statuses of many devices in one transaction:
// one commit (one fsync) for a whole flush of the server's status tracker,
// rather than one per device competing with the readings for the write
// connection. A device that does not exist is skipped.
func (s *Store) SetDeviceStatuses(ctx context.Context, sts map[int64]store.DeviceStatus) error {
	if len(sts) == 0 {
		return nil
	}
	type row struct {
		id             int64
		health, relays any
	}
	rows := make([]row, 0, len(sts))
	for id, st := range sts {
		health, relays, err := encodeStatus(st)
		if err != nil {
			return fmt.Errorf("sqlite: set device %d status: %w", id, err)
		}
		rows = append(rows, row{id, health, relays})
	}
	// A status is what the devices said last, not something anyone was
	// promised would survive a power cut: it is committed without its
	// own fsync (synchronous=NORMAL for this transaction), and becomes
	// durable with the next append's, which syncs the WAL up to and past
	// it. An fsync per chunk held every waiting reading back for it:
	// eight per flush with a thousand devices, 157 with 20,000.
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: set device statuses: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
		return fmt.Errorf("sqlite: set device statuses: %w", err)
	}
	defer func() {
		// Every append relies on FULL: a connection left without it
		// is not given back.
		if _, err := conn.ExecContext(context.Background(), "PRAGMA synchronous = FULL"); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: set device statuses: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	st, err := tx.PrepareContext(ctx, `UPDATE devices SET last_seen = ?, health = ?, relays = ? WHERE id = ?`)
	if err != nil {
		return fmt.Errorf("sqlite: set device statuses: %w", err)
	}
	defer st.Close()
	for _, r := range rows {
		if _, err := st.ExecContext(ctx, nullMillis(sts[r.id].LastSeen), r.health, r.relays, r.id); err != nil {
			return fmt.Errorf("sqlite: set device %d status: %w", r.id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: set device statuses: commit: %w", err)
	}
	return nil
}

// hearingJSON is a Hearing in a device's stored status. It has its own
// field names so that renaming a Go field cannot orphan stored data, and
// keeps times in Unix milliseconds like every other column.
type hearingJSON struct {
	RelayID  string  `json:"relay"`
	Received *int64  `json:"received,omitempty"` // Unix ms; nil for the zero time
	RSSI     int16   `json:"rssi"`
	SNR      float32 `json:"snr"`
}

func (h hearingJSON) hearing() store.Hearing {
	out := store.Hearing{RelayID: h.RelayID, RSSI: h.RSSI, SNR: h.SNR}
	if h.Received != nil {
		out.Received = time.UnixMilli(*h.Received).UTC()
	}
	return out
}

// encodeStatus encodes the JSON columns of a device status; nil for
// absent values, so that they read back as absent.
func encodeStatus(st store.DeviceStatus) (health, relays any, err error) {
	if st.Health != nil {
		b, err := json.Marshal(st.Health)
		if err != nil {
			return nil, nil, fmt.Errorf("encode health: %w: %w", store.ErrInvalid, err)
		}
		health = string(b)
	}
	if len(st.Relays) > 0 {
		hs := make([]hearingJSON, len(st.Relays))
		for i, h := range st.Relays {
			hs[i] = hearingJSON{RelayID: h.RelayID, RSSI: h.RSSI, SNR: h.SNR}
			if !h.Received.IsZero() {
				ms := h.Received.UnixMilli()
				hs[i].Received = &ms
			}
		}
		b, err := json.Marshal(hs)
		if err != nil {
			return nil, nil, fmt.Errorf("encode relays: %w: %w", store.ErrInvalid, err)
		}
		relays = string(b)
	}
	return health, relays, nil
}

// ---- Relays ----

const relayCols = `id, name, enabled, created, online, last_seen, uptime, buffer_fill, buffer_drops, uplink, signal_dbm, version`

func (s *Store) CreateRelay(ctx context.Context, r store.RelayInfo) error {
	if r.ID == "" {
		return fmt.Errorf("sqlite: create relay: empty id: %w", store.ErrInvalid)
	}
	st := r.Status
	_, err := s.w.ExecContext(ctx, `INSERT INTO relays (`+relayCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Name, r.Enabled, millis(createdOrNow(r.Created)),
		st.Online, nullMillis(st.LastSeen), int64(st.Uptime), st.BufferFill, int64(st.BufferDrops),
		st.Uplink, st.SignalDBm, st.Version)
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
		return fmt.Errorf("sqlite: create relay %q: id taken: %w", r.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create relay %q: %w", r.ID, err)
	}
	return nil
}

func (s *Store) Relay(ctx context.Context, id string) (store.RelayInfo, error) {
	r, err := scanRelay(s.queryRow(ctx, `SELECT `+relayCols+` FROM relays WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("sqlite: relay %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("sqlite: relay %q: %w", id, err)
	}
	return r, nil
}

func (s *Store) Relays(ctx context.Context) ([]store.RelayInfo, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+relayCols+` FROM relays ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list relays: %w", err)
	}
	defer rows.Close()
	var out []store.RelayInfo
	for rows.Next() {
		r, err := scanRelay(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list relays: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list relays: %w", err)
	}
	return out, nil
}

func scanRelay(sc scanner) (store.RelayInfo, error) {
	var (
		r               store.RelayInfo
		created, uptime int64
		drops           int64
		lastSeen        sql.NullInt64
	)
	st := &r.Status
	err := sc.Scan(&r.ID, &r.Name, &r.Enabled, &created, &st.Online, &lastSeen, &uptime,
		&st.BufferFill, &drops, &st.Uplink, &st.SignalDBm, &st.Version)
	r.Created = time.UnixMilli(created).UTC()
	st.LastSeen = fromNullMillis(lastSeen)
	st.Uptime = time.Duration(uptime)
	st.BufferDrops = uint64(drops)
	return r, err
}

func (s *Store) SetRelayEnabled(ctx context.Context, id string, enabled bool) error {
	res, err := s.w.ExecContext(ctx, `UPDATE relays SET enabled = ? WHERE id = ?`, enabled, id)
	return updated(res, err, fmt.Sprintf("set relay %q enabled", id))
}

func (s *Store) SetRelayStatus(ctx context.Context, id string, st store.RelayStatus) error {
	res, err := s.w.ExecContext(ctx, `UPDATE relays SET online = ?, last_seen = ?, uptime = ?,
		buffer_fill = ?, buffer_drops = ?, uplink = ?, signal_dbm = ?, version = ? WHERE id = ?`,
		st.Online, nullMillis(st.LastSeen), int64(st.Uptime), st.BufferFill, int64(st.BufferDrops),
		st.Uplink, st.SignalDBm, st.Version, id)
	return updated(res, err, fmt.Sprintf("set relay %q status", id))
}

// ---- Tokens ----
//
// Errors about tokens never include the hash: a log line must not help
// anyone present a token.

func (s *Store) CreateToken(ctx context.Context, t store.Token) (int64, error) {
	if len(t.Hash) == 0 {
		return 0, fmt.Errorf("sqlite: create token %q: empty hash: %w", t.Name, store.ErrInvalid)
	}
	var id int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO tokens (name, hash, created) VALUES (?, ?, ?) RETURNING id`,
		t.Name, t.Hash, millis(createdOrNow(t.Created))).Scan(&id)
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE) {
		return 0, fmt.Errorf("sqlite: create token %q: hash already stored: %w", t.Name, store.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: create token %q: %w", t.Name, err)
	}
	return id, nil
}

// TokenByHash looks a token up by the SHA-256 of its secret. The lookup is
// an index search rather than a constant-time comparison; what it could
// leak through timing is about a hash of a random secret, not the secret.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (store.Token, error) {
	var t store.Token
	var created int64
	err := s.queryRow(ctx, `SELECT id, name, hash, created FROM tokens WHERE hash = ?`, hash).
		Scan(&t.ID, &t.Name, &t.Hash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Token{}, fmt.Errorf("sqlite: token by hash: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Token{}, fmt.Errorf("sqlite: token by hash: %w", err)
	}
	t.Created = time.UnixMilli(created).UTC()
	return t, nil
}

func (s *Store) CountTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.queryRow(ctx, `SELECT COUNT(*) FROM tokens`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count tokens: %w", err)
	}
	return n, nil
}

// ---- Helpers ----

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// isConstraint reports whether err is SQLite's constraint violation with
// the given extended code.
func isConstraint(err error, code int) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == code
}

// updated turns the result of an UPDATE of one row by key into the
// Store's errors: no row is ErrNotFound.
func updated(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s: %w", what, store.ErrNotFound)
	}
	return nil
}

// millis is t in Unix milliseconds, the resolution of every stored time:
// what device clocks send, and wide enough (±292 million years) that no
// device clock, however wrong, overflows it.
func millis(t time.Time) int64 { return t.UnixMilli() }

// nullMillis is millis, or NULL for the zero time ("never").
func nullMillis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func fromNullMillis(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMilli(n.Int64).UTC()
}

// truncMillis is t as it reads back from the store.
func truncMillis(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

func createdOrNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}
