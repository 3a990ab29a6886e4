// Package outbox is the durable, bounded, on-disk queue of readings a device
// has taken but the server has not yet acknowledged.
//
// A device appends each reading before sending it and removes it only when
// the server's cumulative ACK covers its sequence number. After a crash or a
// power loss the device opens the outbox again and resends what is pending.
// When the outbox is full, the oldest reading is dropped to make room and the
// drop is counted, so the loss is visible, never silent.
//
// Sequence numbers are the device's reading sequence: the server's store
// deduplicates on them and sealed readings derive their nonce from them, so
// the outbox never assigns the same number twice, even after everything was
// acknowledged, compacted away and the device restarted.
//
// The outbox holds pending readings in memory as well as on disk; memory and
// disk use are bounded by Config.MaxRecords × Config.MaxRecordSize (disk at
// most about twice that, plus 64 KiB, between compactions). See format.go
// for the file formats.
//
// Only one Outbox may use a directory at a time; on Unix systems Open takes
// an exclusive lock on the directory to enforce this.
package outbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Errors callers can test for with errors.Is.
var (
	// ErrInvalid reports a request that can never succeed as made: a bad
	// Config, an oversized reading, an ACK for a sequence never assigned.
	ErrInvalid = errors.New("outbox: invalid request")
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("outbox: closed")
	// ErrCorrupt reports a log header or state file that is not a valid
	// outbox file. Open refuses to guess, because guessing wrong could reuse
	// sequence numbers; a torn or corrupt log tail is not ErrCorrupt, it is
	// repaired.
	ErrCorrupt = errors.New("outbox: corrupt file")
)

// File names inside Config.Dir.
const (
	logName   = "outbox.log"
	stateName = "outbox.state"
	tmpSuffix = ".tmp"
)

// Defaults and limits for Config.
const (
	DefaultMaxRecords    = 10000
	DefaultMaxRecordSize = 1024

	// compactMinDead is the size of the dead log prefix (acked or dropped
	// records) below which the log is never rewritten: small logs are not
	// worth the I/O.
	compactMinDead = 64 << 10
)

// Config configures an Outbox. The zero value of every field but Dir is a
// sensible default.
type Config struct {
	// Dir holds the log and the state file. It is created with mode 0700
	// if missing.
	Dir string
	// MaxRecords bounds the number of pending readings; zero means
	// DefaultMaxRecords. When full, Append drops the oldest reading and
	// counts it in Dropped. Lowering it between runs drops the excess
	// oldest readings at Open, also counted.
	MaxRecords int
	// MaxRecordSize bounds one reading in bytes; zero means
	// DefaultMaxRecordSize, and at most 16 MiB is allowed. A larger Append
	// is an error.
	MaxRecordSize int
	// NoSync skips fsync. The zero value syncs on every Append and Ack so
	// that what they report survives power loss. With NoSync, a power loss
	// can lose readings whose sequence was already returned and then assign
	// those sequences again, so it is only for simulations and benchmarks.
	NoSync bool
	// Logger receives warnings about repaired files and failed compactions.
	// Reading contents are never logged. Nil means no logging.
	Logger *slog.Logger
}

// Record is one pending reading.
type Record struct {
	Seq  uint64
	Data []byte
}

// Outbox is a durable queue of readings. It is safe for concurrent use.
type Outbox struct {
	mu      sync.Mutex
	cfg     Config
	logger  *slog.Logger
	dir     *os.File // held open for directory fsync and the lock
	f       *os.File // the log
	size    int64    // length of the log; everything in it is valid
	recs    []entry  // pending records, oldest first
	next    uint64
	dropped uint64
	saved   state  // what the state file on disk holds
	scratch []byte // encoding buffer for Append
	err     error  // sticky: set when the log may no longer match memory
	closed  bool
}

// entry is a pending record and where it lives in the log.
type entry struct {
	seq  uint64
	off  int64
	data []byte // never modified after Append; Pending hands out copies
}

// Open opens the outbox in cfg.Dir, creating it if needed, and recovers from
// a crash: a torn or corrupt log tail is truncated away and every complete
// record before it is kept.
func Open(cfg Config) (*Outbox, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("outbox: open: empty Dir: %w", ErrInvalid)
	}
	if cfg.MaxRecords < 0 || cfg.MaxRecordSize < 0 || cfg.MaxRecordSize > maxRecordData {
		return nil, fmt.Errorf("outbox: open: MaxRecords %d, MaxRecordSize %d out of range: %w",
			cfg.MaxRecords, cfg.MaxRecordSize, ErrInvalid)
	}
	if cfg.MaxRecords == 0 {
		cfg.MaxRecords = DefaultMaxRecords
	}
	if cfg.MaxRecordSize == 0 {
		cfg.MaxRecordSize = DefaultMaxRecordSize
	}
	o := &Outbox{cfg: cfg, logger: cfg.Logger}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if err := o.open(); err != nil {
		if o.f != nil {
			o.f.Close()
		}
		if o.dir != nil {
			o.dir.Close()
		}
		return nil, fmt.Errorf("outbox: open %s: %w", cfg.Dir, err)
	}
	return o, nil
}

func (o *Outbox) open() error {
	dir := o.cfg.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	o.dir = d
	if err := lockDir(d); err != nil {
		return fmt.Errorf("lock directory (in use by another outbox?): %w", err)
	}
	// Temp files are leftovers of a replacement that never got renamed.
	for _, name := range []string{logName + tmpSuffix, stateName + tmpSuffix} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}

	st := state{base: 1, next: 1}
	switch b, err := readSmallFile(filepath.Join(dir, stateName), stateFileLen); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if st, err = decodeState(b); err != nil {
			return err
		}
	}
	o.saved = st

	recs, end, size, err := o.readLog(st.base)
	if err != nil {
		return err
	}
	next, base, dropped := st.next, st.base, st.dropped
	if n := len(recs); n > 0 {
		last := recs[n-1]
		next = max(next, last.seq+1)
		base = max(base, last.base)
		dropped = max(dropped, last.dropped)
	}
	if end < size {
		// Read what is about to be discarded, to learn which sequences
		// it may have used; see maxSeqInTail.
		tail := make([]byte, min(size-end, tailScanMax))
		if _, err := o.f.ReadAt(tail, end); err != nil {
			return fmt.Errorf("read log tail: %w", err)
		}
		lost := maxSeqInTail(tail, next-1)
		if lost != 0 {
			next = lost + 1
		}
		o.logger.Warn("outbox: discarding torn or corrupt log tail",
			"dir", dir, "offset", end, "bytes", size-end, "next_seq", next)
	}

	// Keep what is not below the watermark, then enforce MaxRecords.
	i := sort.Search(len(recs), func(i int) bool { return recs[i].seq >= base })
	recs = recs[i:]
	if excess := len(recs) - o.cfg.MaxRecords; excess > 0 {
		dropped += uint64(excess)
		recs = recs[excess:]
		o.logger.Warn("outbox: dropped oldest readings above MaxRecords", "dir", dir, "count", excess)
	}
	o.recs = make([]entry, len(recs))
	for i, r := range recs {
		o.recs[i] = entry{seq: r.seq, off: r.off, data: r.data}
	}
	o.next, o.dropped = next, dropped

	// The state must record every skipped sequence and every drop before
	// the log stops proving them, so it is written before the truncation.
	if cur := o.state(); cur != o.saved {
		if err := o.writeState(cur); err != nil {
			return err
		}
	}
	switch {
	case o.f == nil:
		// No log yet: create it through a rename so it never exists torn.
		if err := o.compact(); err != nil {
			return err
		}
	case end < size:
		if err := o.f.Truncate(end); err != nil {
			return fmt.Errorf("truncate log: %w", err)
		}
		if err := o.sync(o.f); err != nil {
			return fmt.Errorf("sync log: %w", err)
		}
		o.size = end
	default:
		o.size = end
	}
	o.maybeCompact()
	return nil
}

// readLog opens the log and scans it. It leaves o.f nil if there is no log,
// or an empty one (which is what a crash could leave of a fresh log on a
// file system that does not order data and rename).
func (o *Outbox) readLog(skipBelow uint64) (recs []logRecord, end, size int64, err error) {
	f, err := os.OpenFile(filepath.Join(o.cfg.Dir, logName), os.O_RDWR, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, 0, nil
	}
	if err != nil {
		return nil, 0, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	if fi.Size() == 0 {
		f.Close()
		return nil, 0, 0, nil
	}
	o.f = f
	size = fi.Size()
	var hdr [logHeaderLen]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || string(hdr[:]) != logMagic {
		return nil, 0, 0, fmt.Errorf("%w: %s does not start with an outbox log header", ErrCorrupt, logName)
	}
	recs, end, err = scanLog(f, size, skipBelow)
	if err != nil {
		return nil, 0, 0, err
	}
	return recs, end, size, nil
}

// readSmallFile reads a file expected to hold at most limit bytes; a larger
// one is returned cut short, which its parser then rejects.
func readSmallFile(name string, limit int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, int64(limit)+1))
}

// Append stores a reading and returns its sequence number, which is one more
// than the last one ever assigned (the first is 1). Unless Config.NoSync is
// set, the reading is on stable storage when Append returns, so a sequence is
// never handed out before it is durable. If the outbox is full, the oldest
// pending reading is dropped and counted in Dropped.
//
// If the log cannot be synced, the outbox refuses further changes (the disk
// may hold the reading or not); Close it and Open it again to recover. The
// reading may then still be pending, so a retry can send it twice.
func (o *Outbox) Append(data []byte) (seq uint64, err error) {
	if len(data) > o.cfg.MaxRecordSize {
		return 0, fmt.Errorf("outbox: append: reading of %d bytes exceeds MaxRecordSize %d: %w",
			len(data), o.cfg.MaxRecordSize, ErrInvalid)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.usable(); err != nil {
		return 0, fmt.Errorf("outbox: append: %w", err)
	}
	seq = o.next
	if seq+1 >= seqLimit {
		return 0, fmt.Errorf("outbox: append: sequence numbers exhausted: %w", ErrInvalid)
	}
	drop := max(len(o.recs)-o.cfg.MaxRecords+1, 0)
	base := seq
	if drop < len(o.recs) {
		base = o.recs[drop].seq
	}
	dropped := o.dropped + uint64(drop)

	o.scratch = appendRecord(o.scratch[:0], seq, base, dropped, data)
	if _, err := o.f.WriteAt(o.scratch, o.size); err != nil {
		// Nothing was handed out yet: cut the partial record off and carry
		// on as if Append had not been called.
		if terr := o.f.Truncate(o.size); terr != nil {
			o.err = fmt.Errorf("log damaged by failed write and not repaired: %w", terr)
		}
		return 0, fmt.Errorf("outbox: append: write log: %w", err)
	}
	if err := o.sync(o.f); err != nil {
		o.err = fmt.Errorf("log sync failed: %w", err)
		return 0, fmt.Errorf("outbox: append: %w", o.err)
	}

	clear(o.recs[:drop]) // release the dropped data
	o.recs = append(o.recs[drop:], entry{seq: seq, off: o.size, data: append([]byte(nil), data...)})
	o.size += int64(len(o.scratch))
	o.next = seq + 1
	o.dropped = dropped
	o.maybeCompact()
	return seq, nil
}

// Pending returns up to max pending readings, oldest first; max <= 0 means
// all of them. The returned Data is a copy the caller may keep or modify.
func (o *Outbox) Pending(max int) []Record {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	recs := o.recs
	if max > 0 && max < len(recs) {
		recs = recs[:max]
	}
	if len(recs) == 0 {
		return nil
	}
	total := 0
	for _, e := range recs {
		total += len(e.data)
	}
	buf := make([]byte, total) // one allocation for all the copies
	out := make([]Record, len(recs))
	for i, e := range recs {
		n := copy(buf, e.data)
		out[i] = Record{Seq: e.seq, Data: buf[:n:n]}
		buf = buf[n:]
	}
	return out
}

// Ack applies the server's cumulative acknowledgement: every reading with a
// sequence up to and including seq is removed. An ACK at or below what was
// already removed is a no-op, so repeated and reordered ACKs are harmless.
// Unless Config.NoSync is set, the removal is on stable storage when Ack
// returns nil.
//
// An ACK for a sequence never assigned means the server and the device
// disagree; it is rejected with ErrInvalid and changes nothing. On any other
// error the outbox in memory is unchanged, though the ACK may have reached
// disk; either way is safe, since the server had the readings.
func (o *Outbox) Ack(seq uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.usable(); err != nil {
		return fmt.Errorf("outbox: ack %d: %w", seq, err)
	}
	if seq >= o.next {
		return fmt.Errorf("outbox: ack %d: beyond last assigned sequence %d: %w", seq, o.next-1, ErrInvalid)
	}
	n := sort.Search(len(o.recs), func(i int) bool { return o.recs[i].seq > seq })
	if n == 0 {
		return nil
	}
	st := state{base: o.next, next: o.next, dropped: o.dropped}
	if n < len(o.recs) {
		st.base = o.recs[n].seq
	}
	if err := o.writeState(st); err != nil {
		return fmt.Errorf("outbox: ack %d: %w", seq, err)
	}
	clear(o.recs[:n])
	o.recs = o.recs[n:]
	o.maybeCompact()
	return nil
}

// Base returns the lowest sequence still pending, or NextSeq if none is:
// every sequence below Base was acknowledged or dropped. A device can tell
// the server so, letting it move past readings that will never come.
func (o *Outbox) Base() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.base()
}

func (o *Outbox) base() uint64 {
	if len(o.recs) > 0 {
		return o.recs[0].seq
	}
	return o.next
}

// NextSeq returns the sequence the next Append will assign.
func (o *Outbox) NextSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.next
}

// Dropped returns how many readings were dropped, over the life of the
// directory, to make room in a full outbox.
func (o *Outbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// Len returns the number of pending readings.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.recs)
}

// Close releases the files and the directory lock. Everything Append and Ack
// reported is already on disk, so Close has nothing to flush.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	o.closed = true
	o.recs = nil
	err := errors.Join(o.f.Close(), o.dir.Close())
	if err != nil {
		return fmt.Errorf("outbox: close: %w", err)
	}
	return nil
}

// usable reports why the outbox cannot change, if it cannot.
func (o *Outbox) usable() error {
	if o.closed {
		return ErrClosed
	}
	return o.err
}

// state returns what the state file should hold now.
func (o *Outbox) state() state {
	return state{base: o.base(), next: o.next, dropped: o.dropped}
}

func (o *Outbox) sync(f *os.File) error {
	if o.cfg.NoSync {
		return nil
	}
	return f.Sync()
}

func (o *Outbox) syncDir() error {
	if o.cfg.NoSync {
		return nil
	}
	return syncDir(o.dir)
}

// writeState replaces the state file atomically.
func (o *Outbox) writeState(st state) error {
	tmp := filepath.Join(o.cfg.Dir, stateName+tmpSuffix)
	if err := o.writeFile(tmp, encodeState(st)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(o.cfg.Dir, stateName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state: %w", err)
	}
	if err := o.syncDir(); err != nil {
		return fmt.Errorf("write state: sync directory: %w", err)
	}
	o.saved = st
	return nil
}

func (o *Outbox) writeFile(name string, b []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = o.sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
	}
	return err
}

// maybeCompact rewrites the log once its dead prefix (acked and dropped
// records) is both larger than compactMinDead and more than half the file,
// which keeps disk use within about twice the live data while costing O(1)
// amortized I/O per record. A failure is logged and retried on the next
// change; the old log stays valid meanwhile.
func (o *Outbox) maybeCompact() {
	if o.err != nil {
		return
	}
	live := o.size
	if len(o.recs) > 0 {
		live = o.recs[0].off
	}
	dead := live - int64(logHeaderLen)
	if dead <= compactMinDead || dead*2 <= o.size {
		return
	}
	if err := o.compact(); err != nil {
		o.logger.Warn("outbox: compaction failed; will retry", "dir", o.cfg.Dir, "err", err)
	}
}

// compact writes the pending records to a new log and renames it over the
// old one (or creates the log, if there is none).
func (o *Outbox) compact() error {
	// Once the old log is gone, only the state file remembers the next
	// sequence and the drop count, so it must be current first.
	if cur := o.state(); cur != o.saved {
		if err := o.writeState(cur); err != nil {
			return fmt.Errorf("compact: %w", err)
		}
	}
	tmp := filepath.Join(o.cfg.Dir, logName+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	offs, size, err := o.writeLog(f)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(o.cfg.Dir, logName))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact: %w", err)
	}
	// The new log is in place: memory must follow it whatever happens next.
	if o.f != nil {
		o.f.Close()
	}
	o.f = f
	o.size = size
	for i := range o.recs {
		o.recs[i].off = offs[i]
	}
	if err := o.syncDir(); err != nil {
		// Until the rename is durable a crash may bring back the old log,
		// which is just as valid given the state file.
		return fmt.Errorf("compact: sync directory: %w", err)
	}
	return nil
}

// writeLog writes a complete log holding the pending records to f and syncs
// it. Every record carries the current base and drop count.
func (o *Outbox) writeLog(f *os.File) (offs []int64, size int64, err error) {
	w := bufio.NewWriterSize(f, 64<<10)
	base := o.base()
	offs = make([]int64, len(o.recs))
	size = int64(logHeaderLen)
	w.WriteString(logMagic)
	buf := o.scratch[:0]
	for i, e := range o.recs {
		buf = appendRecord(buf[:0], e.seq, base, o.dropped, e.data)
		w.Write(buf) // the first error sticks in w and is returned by Flush
		offs[i] = size
		size += int64(len(buf))
	}
	o.scratch = buf
	if err := w.Flush(); err != nil {
		return nil, 0, err
	}
	if err := o.sync(f); err != nil {
		return nil, 0, err
	}
	return offs, size, nil
}
