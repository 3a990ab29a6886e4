package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The spool is the relay's on-disk queue of uplinks: a write-ahead log that
// every uplink frame goes through. The UDP reader appends; the connection
// sends in order from the oldest record the server has not acknowledged;
// the server's acks delete. While the server is reachable records live for
// milliseconds (and mostly never leave the page cache); while it is not,
// they accumulate up to a bound, beyond which the oldest are dropped and
// counted. Going through the log even when connected keeps one order for
// everything and loses nothing when a connection dies with frames in
// flight.
//
// Durability: appends are written at once but synced only every second
// (Relay.syncLoop), so the spool survives the relay process dying (kill -9)
// completely and a power loss up to the last second or so.
//
// Layout, in the directory "spool" under Config.DataDir:
//
//	<base>.seg  segments, base = sequence of the first record, 16 hex digits
//	  header:   "SGNRSPL" 0x01 | base uint64
//	  record:   n uint32 | CRC-32C over n and data, uint32 | data (n bytes: one uplink frame)
//	spool.state head uint64 | dropped uint64 after "SGNRSST" 0x01, then CRC-32C
//
// all little-endian. Records are numbered from their segment's base. A
// segment takes up to segRecords records and is deleted when every record
// in it is acknowledged or dropped. The state file records the head (the
// first record neither acknowledged nor dropped) and the drop total; it is
// replaced whole and written lazily, so after a crash up to a second of
// acknowledged records may be sent again, which the device channel
// tolerates by design.
const (
	segMagic      = "SGNRSPL\x01"
	stateMagic    = "SGNRSST\x01"
	segHeaderLen  = len(segMagic) + 8
	recHeaderLen  = 8
	stateLen      = len(stateMagic) + 16 + 4
	segSuffix     = ".seg"
	stateName     = "spool.state"
	segRecords    = 4096
	maxRecordData = FrameHeaderSize + MaxFrameSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type spool struct {
	syncMu  sync.Mutex // held by Sync, outside mu
	mu      sync.Mutex
	dir     string
	lock    *os.File // the directory, held open for the lock and directory syncs
	max     int
	log     *slog.Logger
	segs    []*segment // oldest first; the last takes appends
	head    uint64     // first record neither acknowledged nor dropped
	next    uint64     // sequence of the next append
	dropped uint64
	saved   [2]uint64 // head and dropped as in the state file
	dirty   bool      // appends not yet synced
	newSeg  bool      // segments created since the directory was synced
	scratch []byte
	ready   chan struct{} // poked on append
	// recent keeps a copy of the last appended records, so the sender
	// reads a record it is about to forward from memory rather than with
	// two reads of the segment file; the file remains the durable copy
	// and serves everything older (a backlog, a restart).
	recent [recentRecords]recentRecord
	// ahead is a span of one segment file read at once, for a sender
	// working through records older than the tail (a backlog after an
	// outage, or a sender behind under load): a read per span rather than
	// two per record.
	ahead readAhead
}

// readAheadSize is the span the sender reads of a segment file at once: some
// 450 one-reading uplinks, and more than the largest record.
const readAheadSize = 64 << 10

// A record always fits in the read-ahead buffer.
var _ [readAheadSize - recHeaderLen - maxRecordData]struct{}

type readAhead struct {
	seg *segment // nil: empty
	off int64    // file offset of buf[0]
	buf []byte   // cap readAheadSize
}

// recentRecords is the size of the spool's in-memory tail.
const recentRecords = 4096

type recentRecord struct {
	seq   uint64
	valid bool
	frame []byte
}

type segment struct {
	base uint64
	f    *os.File
	offs []uint32 // offset of each record
	size int64
}

func (s *segment) end() uint64 { return s.base + uint64(len(s.offs)) }

func segName(base uint64) string { return fmt.Sprintf("%016x%s", base, segSuffix) }

// openSpool opens (or creates) the spool in dir, holding at most max
// records, and recovers from a crash: a torn record at a segment's end is
// cut off, and everything before it kept.
func openSpool(dir string, max int, log *slog.Logger) (*spool, error) {
	if max <= 0 {
		return nil, errors.New("relay: spool capacity must be positive")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: spool: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("relay: spool: %w", err)
	}
	if err := lockDir(d); err != nil {
		d.Close()
		return nil, fmt.Errorf("relay: spool %s is in use by another relay: %w", dir, err)
	}
	s := &spool{dir: dir, lock: d, max: max, log: log, ready: make(chan struct{}, 1),
		ahead: readAhead{buf: make([]byte, 0, readAheadSize)}}
	if err := s.open(); err != nil {
		s.close()
		return nil, fmt.Errorf("relay: spool %s: %w", dir, err)
	}
	return s, nil
}

func (s *spool) open() error {
	st, err := os.ReadFile(filepath.Join(s.dir, stateName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if h, dr, ok := decodeSpoolState(st); ok {
			s.head, s.dropped = h, dr
		} else {
			// The state only saves resending and remembers the drop
			// count; losing it costs duplicates, which the server drops.
			s.log.Warn("relay: spool state unreadable; resending everything buffered", "dir", s.dir)
		}
	}
	s.saved = [2]uint64{s.head, s.dropped}

	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var bases []uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(s.dir, name))
			continue
		}
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		b, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 16, 64)
		if err != nil || len(name) != 16+len(segSuffix) {
			continue
		}
		bases = append(bases, b)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	for _, b := range bases {
		seg, err := s.openSegment(b)
		if err != nil {
			return err
		}
		if seg == nil {
			continue
		}
		if n := len(s.segs); n > 0 && seg.base < s.segs[n-1].end() {
			// Overlapping segments: not something this code writes.
			s.log.Warn("relay: spool segment overlaps its predecessor; discarding it", "file", segName(b))
			seg.f.Close()
			_ = os.Remove(filepath.Join(s.dir, segName(b)))
			continue
		}
		s.segs = append(s.segs, seg)
	}
	if n := len(s.segs); n > 0 {
		s.next = s.segs[n-1].end()
		s.head = max(s.head, s.segs[0].base)
	} else {
		s.next = max(s.head, 1)
	}
	s.head = min(max(s.head, 1), s.next)
	if excess := int(s.next-s.head) - s.max; excess > 0 {
		s.head += uint64(excess)
		s.dropped += uint64(excess)
		s.log.Warn("relay: spool holds more than its capacity; dropped the oldest", "count", excess)
	}
	s.collect()
	if n := len(s.segs); n == 0 || len(s.segs[n-1].offs) >= segRecords {
		if err := s.addSegment(); err != nil {
			return err
		}
	}
	return nil
}

// openSegment opens and scans one segment. A segment with a bad header is
// removed (nil, nil); a torn or corrupt tail is truncated.
func (s *spool) openSegment(base uint64) (*segment, error) {
	name := filepath.Join(s.dir, segName(base))
	f, err := os.OpenFile(name, os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	offs, end, size, err := scanSegment(f, base)
	if err != nil {
		f.Close()
		if errors.Is(err, errSegHeader) {
			s.log.Warn("relay: spool segment has a bad header; discarding it", "file", name)
			return nil, os.Remove(name)
		}
		return nil, err
	}
	if end < size {
		s.log.Warn("relay: spool segment has a torn or corrupt tail; cutting it off", "file", name, "offset", end, "bytes", size-end)
		if err := f.Truncate(end); err != nil {
			f.Close()
			return nil, err
		}
	}
	return &segment{base: base, f: f, offs: offs, size: end}, nil
}

var errSegHeader = errors.New("bad segment header")

// scanSegment reads a segment's records and returns their offsets and the
// end of the last valid one; it stops at the first record that is
// incomplete or fails its checksum.
func scanSegment(r io.ReaderAt, base uint64) (offs []uint32, end, size int64, err error) {
	sr := io.NewSectionReader(r, 0, 1<<62)
	data, err := io.ReadAll(io.LimitReader(sr, int64(segHeaderLen+segRecords*(recHeaderLen+maxRecordData)+1)))
	if err != nil {
		return nil, 0, 0, err
	}
	size = int64(len(data))
	if len(data) < segHeaderLen || string(data[:len(segMagic)]) != segMagic ||
		binary.LittleEndian.Uint64(data[len(segMagic):]) != base {
		return nil, 0, size, errSegHeader
	}
	offs, end = scanRecords(data)
	return offs, end, size, nil
}

// scanRecords returns the offsets of the valid records after the header of
// seg, and the offset just past the last one.
func scanRecords(seg []byte) (offs []uint32, end int64) {
	off := segHeaderLen
	for len(offs) < segRecords && off+recHeaderLen <= len(seg) {
		n := int(binary.LittleEndian.Uint32(seg[off:]))
		if n == 0 || n > maxRecordData || off+recHeaderLen+n > len(seg) {
			break
		}
		if recordCRC(seg[off:off+4], seg[off+recHeaderLen:off+recHeaderLen+n]) != binary.LittleEndian.Uint32(seg[off+4:]) {
			break
		}
		offs = append(offs, uint32(off))
		off += recHeaderLen + n
	}
	return offs, int64(off)
}

func recordCRC(lenField, data []byte) uint32 {
	c := crc32.Update(0, castagnoli, lenField)
	return crc32.Update(c, castagnoli, data)
}

func (s *spool) addSegment() error {
	name := filepath.Join(s.dir, segName(s.next))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	hdr := binary.LittleEndian.AppendUint64([]byte(segMagic), s.next)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		f.Close()
		os.Remove(name)
		return err
	}
	s.segs = append(s.segs, &segment{base: s.next, f: f, size: int64(len(hdr))})
	s.newSeg = true
	return nil
}

// collect deletes segments, but the last, whose records are all below head.
func (s *spool) collect() {
	for len(s.segs) > 1 && s.segs[0].end() <= s.head {
		seg := s.segs[0]
		seg.f.Close()
		if s.ahead.seg == seg {
			s.ahead.seg = nil
		}
		if err := os.Remove(filepath.Join(s.dir, segName(seg.base))); err != nil {
			s.log.Warn("relay: removing spent spool segment", "err", err)
		}
		s.segs[0] = nil
		s.segs = s.segs[1:]
	}
}

// Append adds an uplink frame, dropping the oldest record if the spool is
// full.
func (s *spool) Append(frame []byte) error {
	one := [1][]byte{frame}
	_, err := s.AppendBatch(one[:])
	return err
}

// AppendBatch adds frames to the end of the buffer, in order (dropping the
// oldest records if the spool is full), with one write per segment they
// land in: the relay reads device datagrams in batches, and a write per
// datagram was a system call per uplink. It returns how many frames were
// added; on an error the rest were not.
func (s *spool) AppendBatch(frames [][]byte) (int, error) {
	for _, f := range frames {
		if len(f) == 0 || len(f) > maxRecordData {
			return 0, fmt.Errorf("relay: spool record of %d bytes", len(f))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return 0, errors.New("relay: spool closed")
	}
	done := 0
	for done < len(frames) {
		if tail := s.segs[len(s.segs)-1]; len(tail.offs) >= segRecords {
			if err := s.addSegment(); err != nil {
				return done, fmt.Errorf("relay: spool: new segment: %w", err)
			}
		}
		tail := s.segs[len(s.segs)-1]
		chunk := frames[done:min(len(frames), done+segRecords-len(tail.offs))]
		b := s.scratch[:0]
		for _, f := range chunk {
			at := len(b)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
			b = binary.LittleEndian.AppendUint32(b, recordCRC(b[at:at+4], f))
			b = append(b, f...)
		}
		s.scratch = b
		if _, err := tail.f.WriteAt(b, tail.size); err != nil {
			_ = tail.f.Truncate(tail.size) // a partial record would fail its checksum anyway
			return done, fmt.Errorf("relay: spool write: %w", err)
		}
		for _, f := range chunk {
			tail.offs = append(tail.offs, uint32(tail.size))
			tail.size += int64(recHeaderLen + len(f))
			rc := &s.recent[s.next%recentRecords]
			rc.seq, rc.valid, rc.frame = s.next, true, append(rc.frame[:0], f...)
			s.next++
		}
		s.dirty = true
		done += len(chunk)
	}
	if over := int(s.next-s.head) - s.max; over > 0 {
		s.head += uint64(over)
		s.dropped += uint64(over)
		s.collect()
	}
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return done, nil
}

// Next copies into buf the first readable record at or after seq (and at or
// after the head) and returns its sequence; ok is false when there is none.
func (s *spool) Next(seq uint64, buf []byte) (got uint64, frame []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return 0, nil, false
	}
	seq = max(seq, s.head)
	for seq < s.next {
		i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].end() > seq })
		if i == len(s.segs) {
			return 0, nil, false
		}
		seg := s.segs[i]
		seq = max(seq, seg.base) // skip a gap left by a lost segment
		if seq >= seg.end() {
			return 0, nil, false // only the tail can be empty
		}
		if rc := &s.recent[seq%recentRecords]; rc.valid && rc.seq == seq {
			return seq, append(buf[:0], rc.frame...), true
		}
		off := int64(seg.offs[seq-seg.base])
		frame, err := s.read(seg, off, buf)
		if err == nil {
			return seq, frame, true
		}
		s.log.Warn("relay: unreadable spool record skipped", "seq", seq, "err", err)
		seq++
	}
	return 0, nil, false
}

func (s *spool) read(seg *segment, off int64, buf []byte) ([]byte, error) {
	hdr, err := s.span(seg, off, recHeaderLen)
	if err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(hdr))
	if n == 0 || n > maxRecordData {
		return nil, errors.New("bad record length")
	}
	rec, err := s.span(seg, off, recHeaderLen+n)
	if err != nil {
		return nil, err
	}
	data := rec[recHeaderLen:]
	if recordCRC(rec[:4], data) != binary.LittleEndian.Uint32(rec[4:]) {
		return nil, errors.New("checksum mismatch")
	}
	return append(buf[:0], data...), nil
}

// span returns n bytes of seg's file at off from the read-ahead buffer,
// filling it from off first when they are not all in it. Records are
// never rewritten once appended, and the buffer holds no byte past the
// segment's size when it was filled, so it never goes stale.
func (s *spool) span(seg *segment, off int64, n int) ([]byte, error) {
	ra := &s.ahead
	if ra.seg != seg || off < ra.off || off+int64(n) > ra.off+int64(len(ra.buf)) {
		size := min(int64(cap(ra.buf)), seg.size-off)
		if size < int64(n) {
			return nil, io.ErrUnexpectedEOF
		}
		ra.seg = nil
		if _, err := seg.f.ReadAt(ra.buf[:size], off); err != nil {
			return nil, err
		}
		ra.seg, ra.off, ra.buf = seg, off, ra.buf[:size]
	}
	i := off - ra.off
	return ra.buf[i : i+int64(n)], nil
}

// Ack records that the server has every record up to and including seq.
func (s *spool) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil || seq < s.head {
		return
	}
	s.head = min(seq+1, s.next)
	s.collect()
}

// Len is the number of records neither acknowledged nor dropped.
func (s *spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.next - s.head)
}

// Dropped is the total of records dropped for lack of room, across
// restarts.
func (s *spool) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Sync makes appends durable (when anything is still pending: acknowledged
// records need no fsync) and saves the state if it changed.
//
// The fsyncs run without the spool's lock: Append and Next go on
// meanwhile, where holding it stalled every uplink of the relay for as long
// as the disk took (tens of milliseconds on a busy one, once a second).
// Records appended during the fsyncs stay dirty for the next Sync.
func (s *spool) Sync() error {
	s.syncMu.Lock() // one Sync at a time
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.lock == nil {
		s.mu.Unlock()
		return nil
	}
	var files []*os.File
	var dir *os.File
	if s.dirty && s.next > s.head {
		for _, seg := range s.segs {
			if seg.end() > s.head { // segments fully acknowledged need no sync
				files = append(files, seg.f)
			}
		}
		if s.newSeg {
			dir, s.newSeg = s.lock, false
		}
		s.dirty = false
	}
	s.mu.Unlock()
	var errs []error
	for _, f := range files {
		// A segment collected meanwhile was acknowledged: nothing to keep.
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if dir != nil {
		if err := syncDir(dir); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock != nil {
		errs = append(errs, s.saveStateLocked())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("relay: spool sync: %w", err)
	}
	return nil
}

func (s *spool) syncLocked() error {
	if s.lock == nil {
		return nil
	}
	var errs []error
	if s.dirty && s.next > s.head {
		for _, seg := range s.segs {
			if seg.end() > s.head { // segments fully acknowledged need no sync
				errs = append(errs, seg.f.Sync())
			}
		}
		if s.newSeg {
			errs = append(errs, syncDir(s.lock))
			s.newSeg = false
		}
		s.dirty = false
	}
	errs = append(errs, s.saveStateLocked())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("relay: spool sync: %w", err)
	}
	return nil
}

// saveStateLocked writes the head and drop count if they changed.
func (s *spool) saveStateLocked() error {
	cur := [2]uint64{s.head, s.dropped}
	if cur == s.saved {
		return nil
	}
	name := filepath.Join(s.dir, stateName)
	if err := os.WriteFile(name+".tmp", encodeSpoolState(s.head, s.dropped), 0o600); err != nil {
		return err
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		return err
	}
	s.saved = cur
	return nil
}

// close syncs and releases the files and the directory lock.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	err := s.syncLocked()
	for _, seg := range s.segs {
		seg.f.Close()
	}
	s.segs = nil
	s.lock.Close()
	s.lock = nil
	return err
}

func encodeSpoolState(head, dropped uint64) []byte {
	b := append(make([]byte, 0, stateLen), stateMagic...)
	b = binary.LittleEndian.AppendUint64(b, head)
	b = binary.LittleEndian.AppendUint64(b, dropped)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeSpoolState(b []byte) (head, dropped uint64, ok bool) {
	if len(b) != stateLen || string(b[:len(stateMagic)]) != stateMagic ||
		crc32.Checksum(b[:stateLen-4], castagnoli) != binary.LittleEndian.Uint32(b[stateLen-4:]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]), true
}
