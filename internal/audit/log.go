package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// Defaults of Config.
const (
	DefaultCheckpointEvery    = 100
	DefaultCheckpointInterval = 10 * time.Second
)

const (
	// maxBatch bounds the entries written in one transaction.
	maxBatch = 256
	// queueLen bounds the entries waiting for the writer; Record blocks
	// beyond it.
	queueLen = 1024
	// maxAttempts bounds retries after another process appended first.
	maxAttempts = 8
	// storeTimeout bounds one write of the writer.
	storeTimeout = 30 * time.Second
)

// checkpointRound is how many checkpoints checkpointAll stores in one call
// (a variable so that tests can make rounds small).
var checkpointRound = store.MaxAuditAppend

// Config configures a Log.
type Config struct {
	// Store keeps the entries (required).
	Store store.AuditStore
	// Key signs checkpoints. Nil: entries are recorded but not signed; a
	// process that has the key (the server) signs them at its next
	// checkpoint.
	Key ed25519.PrivateKey
	// CheckpointEvery: an organisation's chain is checkpointed, in the same
	// transaction, once this many of its entries are unsigned. Zero is
	// DefaultCheckpointEvery; 1 signs every entry.
	CheckpointEvery int
	// CheckpointInterval: every interval, every organisation's unsigned
	// head (also those written by other processes) is checkpointed. Zero
	// is DefaultCheckpointInterval; negative turns the timer off (Close
	// and Checkpoint still sign).
	CheckpointInterval time.Duration
	// Logger receives one line per checkpoint (a copy of the chain's heads
	// outside the database: see docs/audit.md); nil discards.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// ErrClosed is Record's error after Close.
var ErrClosed = errors.New("audit: log closed")

// Log is the audit log: it implements Recorder. Appends are serialized by
// one writer goroutine, which writes the entries waiting at that moment in
// one transaction (group commit): many requests recording at once cost one
// disk sync, not one each.
type Log struct {
	cfg  Config
	pub  ed25519.PublicKey // nil without a key
	reqs chan *request
	done chan struct{}

	mu     sync.RWMutex // held for reading while sending to reqs
	closed bool

	// The writer's state, touched by the writer goroutine only.
	heads    map[string]head // cached organisation heads
	unsigned map[string]int  // entries appended here since the org's last checkpoint
	lastCP   *head           // cached last checkpoint (num, hash); nil: unknown
}

type head struct {
	seq  int64 // or checkpoint number
	hash Hash
}

type request struct {
	entry      Entry
	checkpoint bool // a Checkpoint call rather than an entry
	done       chan error
}

// Open starts a log over cfg.Store. With a key it first checkpoints what
// is unsigned (entries of a process that had no key, or that stopped
// before its checkpoint).
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Store == nil {
		return nil, errors.New("audit: Config.Store is required")
	}
	if cfg.Key != nil && len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("audit: Config.Key is not an Ed25519 private key")
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Log{cfg: cfg, reqs: make(chan *request, queueLen), done: make(chan struct{}),
		heads: map[string]head{}, unsigned: map[string]int{}}
	if cfg.Key != nil {
		l.pub = cfg.Key.Public().(ed25519.PublicKey)
		if err := l.checkpointAll(ctx); err != nil {
			return nil, err
		}
	}
	go l.run()
	return l, nil
}

// PublicKey is the key that verifies the log's checkpoints (nil for a log
// opened without a key).
func (l *Log) PublicKey() ed25519.PublicKey { return l.pub }

// Record appends e to its organisation's chain and returns once it is
// stored. Time is set to now when zero; times are kept to the millisecond.
// An entry without Actor or Action, with a field over its bound (MaxField,
// MaxDetail) or not valid UTF-8 is refused. An error means the entry was
// not recorded.
func (l *Log) Record(ctx context.Context, e Entry) error {
	if e.Time.IsZero() {
		e.Time = l.cfg.Now()
	}
	e.Time = time.UnixMilli(e.Time.UnixMilli()).UTC()
	if err := e.validate(); err != nil {
		return fmt.Errorf("audit: %w: %w", store.ErrInvalid, err)
	}
	return l.submit(ctx, &request{entry: e, done: make(chan error, 1)})
}

// Checkpoint signs the head of every organisation's chain that has entries
// newer than its last checkpoint, including entries other processes wrote.
// A log without a key returns an error.
func (l *Log) Checkpoint(ctx context.Context) error {
	if l.cfg.Key == nil {
		return errors.New("audit: no audit key: cannot sign a checkpoint")
	}
	return l.submit(ctx, &request{checkpoint: true, done: make(chan error, 1)})
}

// submit hands r to the writer and waits for its answer. Once queued, the
// request is answered whatever ctx does, so that the error tells the truth
// about whether the entry was stored.
func (l *Log) submit(ctx context.Context, r *request) error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		l.mu.RUnlock()
		return fmt.Errorf("audit: %w", ctx.Err())
	}
	l.mu.RUnlock()
	return <-r.done
}

// Close stops the writer after the queued entries are stored and, with a
// key, signs a last checkpoint, so that a clean shutdown leaves nothing
// unsigned. It is safe to call more than once.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.mu.Unlock()
	<-l.done
	if l.cfg.Key == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	return l.checkpointAll(ctx)
}

// run is the writer.
func (l *Log) run() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.cfg.Key != nil && l.cfg.CheckpointInterval > 0 {
		t := time.NewTicker(l.cfg.CheckpointInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case r, ok := <-l.reqs:
			if !ok {
				return
			}
			l.serve(r)
		case <-tick:
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			if err := l.checkpointAll(ctx); err != nil {
				l.cfg.Logger.Error("audit checkpoint failed; retrying at the next interval", "err", err)
			}
			cancel()
		}
	}
}

// serve handles r and whatever else is waiting, entries in one batch.
func (l *Log) serve(first *request) {
	batch := []*request{}
	var cps []*request
	add := func(r *request) {
		if r.checkpoint {
			cps = append(cps, r)
		} else {
			batch = append(batch, r)
		}
	}
	add(first)
drain:
	for len(batch) < maxBatch {
		select {
		case r, ok := <-l.reqs:
			if !ok {
				break drain
			}
			add(r)
		default:
			break drain
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if len(batch) > 0 {
		err := l.appendBatch(ctx, batch)
		for _, r := range batch {
			r.done <- err
		}
	}
	if len(cps) > 0 {
		err := l.checkpointAll(ctx)
		for _, r := range cps {
			r.done <- err
		}
	}
}

// appendBatch chains and stores the entries of batch in one transaction,
// with the checkpoints that are due, retrying (with fresh heads) when
// another process appended first.
func (l *Log) appendBatch(ctx context.Context, batch []*request) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		var recs []store.AuditEntry
		var cps []store.AuditCheckpoint
		var heads map[string]head
		var last *head
		recs, cps, heads, last, err = l.build(ctx, batch)
		if err == nil {
			err = l.cfg.Store.AppendAudit(ctx, recs, cps)
		}
		if err == nil {
			for org, h := range heads {
				l.heads[org] = h
				l.unsigned[org] += countOrg(batch, org)
			}
			for _, c := range cps {
				l.unsigned[c.Org] = 0
				l.logCheckpoint(c)
			}
			if last != nil {
				l.lastCP = last
			}
			return nil
		}
		// Another process appended (ErrConflict), or the store failed in a
		// way that leaves its state unknown: forget what may have changed.
		for _, r := range batch {
			delete(l.heads, r.entry.Org)
		}
		l.lastCP = nil
		if !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	return fmt.Errorf("audit: record: %w", err)
}

func countOrg(batch []*request, org string) int {
	n := 0
	for _, r := range batch {
		if r.entry.Org == org {
			n++
		}
	}
	return n
}

// build chains batch onto the cached heads. It changes no state: the
// caller adopts the new heads once the store has them.
func (l *Log) build(ctx context.Context, batch []*request) ([]store.AuditEntry, []store.AuditCheckpoint, map[string]head, *head, error) {
	heads := map[string]head{}
	recs := make([]store.AuditEntry, 0, len(batch))
	added := map[string]int{}
	for _, r := range batch {
		org := r.entry.Org
		h, ok := heads[org]
		if !ok {
			var err error
			if h, err = l.head(ctx, org); err != nil {
				return nil, nil, nil, nil, err
			}
		}
		rec := Record{Entry: r.entry, Seq: h.seq + 1, Prev: h.hash}
		rec.Hash = HashEntry(&rec)
		recs = append(recs, toStore(&rec))
		heads[org] = head{rec.Seq, rec.Hash}
		added[org]++
	}
	if l.cfg.Key == nil {
		return recs, nil, heads, nil, nil
	}
	var due []store.AuditEntry
	// The last entry of each organisation whose unsigned count is due, in
	// batch order (deterministic).
	seen := map[string]bool{}
	for i := len(recs) - 1; i >= 0; i-- {
		org := recs[i].Org
		if seen[org] {
			continue
		}
		seen[org] = true
		if l.unsigned[org]+added[org] >= l.cfg.CheckpointEvery {
			due = append(due, recs[i])
		}
	}
	if len(due) == 0 {
		return recs, nil, heads, nil, nil
	}
	cps, last, err := l.sign(ctx, due)
	return recs, cps, heads, last, err
}

// head is org's cached head, loaded from the store if need be.
func (l *Log) head(ctx context.Context, org string) (head, error) {
	if h, ok := l.heads[org]; ok {
		return h, nil
	}
	e, err := l.cfg.Store.AuditHead(ctx, org)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return head{}, nil
	case err != nil:
		return head{}, err
	}
	h := head{seq: e.Seq}
	if len(e.Hash) != len(h.hash) {
		return head{}, fmt.Errorf("audit: stored head of %q has a %d-byte hash", org, len(e.Hash))
	}
	copy(h.hash[:], e.Hash)
	l.heads[org] = h
	return h, nil
}

// sign makes checkpoints for the given heads, chained after the last
// stored checkpoint. It returns the new last checkpoint.
func (l *Log) sign(ctx context.Context, heads []store.AuditEntry) ([]store.AuditCheckpoint, *head, error) {
	last := l.lastCP
	if last == nil {
		c, err := l.cfg.Store.LastAuditCheckpoint(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
			last = &head{}
		case err != nil:
			return nil, nil, err
		default:
			cp, err := fromStoreCheckpoint(&c)
			if err != nil {
				return nil, nil, err
			}
			last = &head{seq: cp.Num, hash: cp.Hash()}
		}
	}
	now := time.UnixMilli(l.cfg.Now().UnixMilli()).UTC()
	keyID := KeyIDOf(l.pub)
	out := make([]store.AuditCheckpoint, 0, len(heads))
	h := *last
	for _, e := range heads {
		c := Checkpoint{Num: h.seq + 1, Prev: h.hash, Org: e.Org, Seq: e.Seq, Time: now, Key: keyID}
		copy(c.Head[:], e.Hash)
		c.Sig = ed25519.Sign(l.cfg.Key, c.Statement())
		out = append(out, toStoreCheckpoint(&c))
		h = head{seq: c.Num, hash: c.Hash()}
	}
	return out, &h, nil
}

// checkpointAll signs every unsigned head in the store, in rounds of at
// most store.MaxAuditAppend checkpoints. It runs on the writer goroutine,
// or before it starts or after it stopped.
func (l *Log) checkpointAll(ctx context.Context) error {
	const maxRounds = 64 // bounds the work while other processes keep appending
	conflicts := 0
	for round := 0; round < maxRounds; round++ {
		heads, err := l.cfg.Store.AuditUnsigned(ctx)
		if err != nil {
			return fmt.Errorf("audit: checkpoint: %w", err)
		}
		if len(heads) == 0 {
			return nil
		}
		heads = heads[:min(len(heads), checkpointRound)]
		cps, last, err := l.sign(ctx, heads)
		if err == nil {
			err = l.cfg.Store.AppendAudit(ctx, nil, cps)
		}
		if err == nil {
			l.lastCP = last
			for _, c := range cps {
				l.unsigned[c.Org] = 0
				l.logCheckpoint(c)
			}
			continue
		}
		l.lastCP = nil
		if !errors.Is(err, store.ErrConflict) || conflicts >= maxAttempts {
			return fmt.Errorf("audit: checkpoint: %w", err)
		}
		conflicts++
	}
	return nil // the rest is signed at the next checkpoint
}

func (l *Log) logCheckpoint(c store.AuditCheckpoint) {
	l.cfg.Logger.Info("audit checkpoint", "num", c.Num, "org", c.Org, "seq", c.Seq, "head", fmt.Sprintf("%x", c.Head))
}

// List returns org's entries with Seq > afterSeq in order; limit 0 is 100,
// at most 1000. It is what the API shows an organisation: only its own
// chain, which it can verify with Checkpoints and the public key.
func (l *Log) List(ctx context.Context, org string, afterSeq int64, limit int) ([]Record, error) {
	return List(ctx, l.cfg.Store, org, afterSeq, limit)
}

// Checkpoints returns org's checkpoints with Num > afterNum in order; limit
// as for List.
func (l *Log) Checkpoints(ctx context.Context, org string, afterNum int64, limit int) ([]Checkpoint, error) {
	return Checkpoints(ctx, l.cfg.Store, org, afterNum, limit)
}

// List is Log.List on a store, for readers that do not record (the admin
// command, the API on a node without the audit key).
func List(ctx context.Context, st store.AuditStore, org string, afterSeq int64, limit int) ([]Record, error) {
	es, err := st.AuditEntries(ctx, org, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(es))
	for i := range es {
		if out[i], err = fromStore(&es[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Checkpoints is Log.Checkpoints on a store.
func Checkpoints(ctx context.Context, st store.AuditStore, org string, afterNum int64, limit int) ([]Checkpoint, error) {
	cs, err := st.AuditOrgCheckpoints(ctx, org, afterNum, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Checkpoint, len(cs))
	for i := range cs {
		if out[i], err = fromStoreCheckpoint(&cs[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func toStore(r *Record) store.AuditEntry {
	return store.AuditEntry{Org: r.Org, Seq: r.Seq, Time: r.Time, Actor: r.Actor, Action: r.Action, Target: r.Target,
		Source: r.Source, Detail: r.Detail, Prev: append([]byte(nil), r.Prev[:]...), Hash: append([]byte(nil), r.Hash[:]...)}
}

// errStored is the error for a stored row that cannot even be read as an
// entry (a hash of the wrong size): someone changed the database.
var errStored = errors.New("audit: malformed stored row")

func fromStore(e *store.AuditEntry) (Record, error) {
	r := Record{Entry: Entry{Org: e.Org, Actor: e.Actor, Action: e.Action, Target: e.Target, Source: e.Source, Detail: e.Detail, Time: e.Time}, Seq: e.Seq}
	if len(e.Prev) != len(r.Prev) || len(e.Hash) != len(r.Hash) {
		return r, fmt.Errorf("%w: entry %q/%d", errStored, e.Org, e.Seq)
	}
	copy(r.Prev[:], e.Prev)
	copy(r.Hash[:], e.Hash)
	return r, nil
}

func toStoreCheckpoint(c *Checkpoint) store.AuditCheckpoint {
	return store.AuditCheckpoint{Num: c.Num, Prev: append([]byte(nil), c.Prev[:]...), Org: c.Org, Seq: c.Seq,
		Head: append([]byte(nil), c.Head[:]...), Time: c.Time, KeyID: append([]byte(nil), c.Key[:]...), Sig: c.Sig}
}

func fromStoreCheckpoint(s *store.AuditCheckpoint) (Checkpoint, error) {
	c := Checkpoint{Num: s.Num, Org: s.Org, Seq: s.Seq, Time: s.Time, Sig: s.Sig}
	if len(s.Prev) != len(c.Prev) || len(s.Head) != len(c.Head) || len(s.KeyID) != len(c.Key) {
		return c, fmt.Errorf("%w: checkpoint %d", errStored, s.Num)
	}
	copy(c.Prev[:], s.Prev)
	copy(c.Head[:], s.Head)
	copy(c.Key[:], s.KeyID)
	return c, nil
}
