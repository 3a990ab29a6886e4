package outbox

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// On-disk layout. Both files are little-endian and checksummed with CRC-32C
// (Castagnoli), which is cheap on every CPU a device is likely to have.
//
// The log ("outbox.log") is an 8-byte header followed by records, appended
// and never modified in place:
//
//	header:  "SGNOBOX" 0x01            (file type + format version 1)
//	record:  offset  size  field
//	         0       4     n: length of data in bytes (at most 16 MiB)
//	         4       8     seq: the record's sequence number
//	         12      8     base: after this append, every sequence below base was acked or dropped
//	         20      8     dropped: total records dropped for lack of room, after this append
//	         28      n     data
//	         28+n    4     CRC-32C over bytes [0, 28+n)
//
// Carrying base and dropped in every record makes a drop durable in the same
// write as the append that caused it, so a full outbox costs no extra fsync
// per reading. In a valid log, seq strictly increases from record to record,
// base and dropped never decrease, and dropped < base <= seq < 2^63-1.
//
// The state file ("outbox.state") holds what the log cannot: the watermark
// after an ACK and the next sequence once compaction has removed the record
// that proved it. It is always replaced whole (temp file, fsync, rename,
// fsync directory), so it is either the old or the new version, never torn:
//
//	offset  size  field
//	0       8     "SGNOBST" 0x01
//	8       8     base
//	16      8     next: the next sequence to assign
//	24      8     dropped
//	32      4     CRC-32C over bytes [0, 32)
//
// with dropped < base <= next < 2^63.
const (
	logMagic   = "SGNOBOX\x01"
	stateMagic = "SGNOBST\x01"

	logHeaderLen  = len(logMagic)
	recHeaderLen  = 4 + 8 + 8 + 8
	recOverhead   = recHeaderLen + 4
	stateFileLen  = len(stateMagic) + 3*8 + 4
	maxRecordData = 16 << 20

	// seqLimit bounds sequences and counters read from disk. Real values are
	// nowhere near it (2^63 readings); refusing larger ones means seq+1 can
	// never overflow, whatever the files say.
	seqLimit = 1 << 63
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var le = binary.LittleEndian

// recHeader is the fixed part of a record, decoded.
type recHeader struct {
	n             uint32
	seq           uint64
	base, dropped uint64
}

func decodeRecHeader(b []byte) recHeader {
	return recHeader{
		n:       le.Uint32(b[0:]),
		seq:     le.Uint64(b[4:]),
		base:    le.Uint64(b[12:]),
		dropped: le.Uint64(b[20:]),
	}
}

// plausible reports whether h could begin a valid record following prev
// (nil for the first record), before its checksum is known.
func (h recHeader) plausible(prev *recHeader) bool {
	if h.n > maxRecordData || h.dropped >= h.base || h.base > h.seq || h.seq >= seqLimit-1 {
		return false
	}
	if prev != nil && (h.seq <= prev.seq || h.base < prev.base || h.dropped < prev.dropped) {
		return false
	}
	return true
}

// appendRecord appends the encoding of one record to dst.
func appendRecord(dst []byte, seq, base, dropped uint64, data []byte) []byte {
	start := len(dst)
	dst = le.AppendUint32(dst, uint32(len(data)))
	dst = le.AppendUint64(dst, seq)
	dst = le.AppendUint64(dst, base)
	dst = le.AppendUint64(dst, dropped)
	dst = append(dst, data...)
	return le.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// logRecord is a record read back from the log.
type logRecord struct {
	recHeader
	off  int64  // offset of the record in the log
	data []byte // nil if the record was skipped as already acked
}

// scanLog reads the records that follow the log header from r, which holds
// size bytes in total (header included), and stops at the first record that
// is incomplete or fails validation: a crash mid-append leaves exactly such a
// tail. It returns the valid records and the offset just past the last one.
// Data of records with seq < skipBelow is not kept, since they are known to
// be acknowledged. The error is non-nil only for I/O failures; a corrupt log
// is not an error here.
func scanLog(r io.Reader, size int64, skipBelow uint64) (recs []logRecord, end int64, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	end = int64(logHeaderLen)
	var hdr [recHeaderLen]byte
	var prev *recHeader
	for size-end >= recOverhead {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, 0, fmt.Errorf("read log record header at %d: %w", end, err)
		}
		h := decodeRecHeader(hdr[:])
		if !h.plausible(prev) || int64(h.n) > size-end-recOverhead {
			break
		}
		// n is bounded by both maxRecordData and the bytes actually present,
		// so this allocation cannot be inflated by a corrupt length.
		body := make([]byte, int(h.n)+4)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil, 0, fmt.Errorf("read log record at %d: %w", end, err)
		}
		crc := crc32.Update(crc32.Checksum(hdr[:], castagnoli), castagnoli, body[:h.n])
		if crc != le.Uint32(body[h.n:]) {
			break
		}
		rec := logRecord{recHeader: h, off: end}
		if h.seq >= skipBelow {
			rec.data = body[:h.n:h.n]
		}
		recs = append(recs, rec)
		prev = &recs[len(recs)-1].recHeader
		end += recOverhead + int64(h.n)
	}
	return recs, end, nil
}

// Limits on the search of a discarded tail; see maxSeqInTail.
const (
	tailScanMax    = 16 << 20 // bytes of tail examined
	tailScanBudget = 64 << 20 // bytes checksummed in total
)

// maxSeqInTail returns the highest sequence above after carried by any
// checksum-valid record found at any offset of tail, or 0 if there is none.
//
// A torn final append leaves no such record: its sequence was never returned
// to the caller. But if a record in the middle of the log went bad, the valid
// records behind it are discarded with the tail, and their sequences may
// already have been sent — and used as nonces for sealed readings. Skipping
// past them keeps sequences from ever being reused. The search is bounded by
// tailScanMax and tailScanBudget so a pathological file cannot stall Open.
func maxSeqInTail(tail []byte, after uint64) uint64 {
	if len(tail) > tailScanMax {
		tail = tail[:tailScanMax]
	}
	var best uint64
	budget := tailScanBudget
	for i := 0; i+recOverhead <= len(tail) && budget > 0; i++ {
		b := tail[i:]
		h := decodeRecHeader(b)
		if h.seq <= after || h.seq <= best || !h.plausible(nil) || int64(h.n) > int64(len(b)-recOverhead) {
			continue
		}
		n := int(h.n)
		budget -= recHeaderLen + n
		if crc32.Checksum(b[:recHeaderLen+n], castagnoli) == le.Uint32(b[recHeaderLen+n:]) {
			best = h.seq
		}
	}
	return best
}

// state is the content of the state file.
type state struct {
	base, next, dropped uint64
}

func (s state) valid() bool {
	return s.dropped < s.base && s.base <= s.next && s.next < seqLimit
}

func encodeState(s state) []byte {
	b := make([]byte, 0, stateFileLen)
	b = append(b, stateMagic...)
	b = le.AppendUint64(b, s.base)
	b = le.AppendUint64(b, s.next)
	b = le.AppendUint64(b, s.dropped)
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// errBadState is wrapped, with ErrCorrupt, by decodeState.
var errBadState = errors.New("state file is not a valid outbox state")

func decodeState(b []byte) (state, error) {
	if len(b) != stateFileLen || string(b[:len(stateMagic)]) != stateMagic ||
		crc32.Checksum(b[:stateFileLen-4], castagnoli) != le.Uint32(b[stateFileLen-4:]) {
		return state{}, fmt.Errorf("%w: %w", ErrCorrupt, errBadState)
	}
	s := state{
		base:    le.Uint64(b[8:]),
		next:    le.Uint64(b[16:]),
		dropped: le.Uint64(b[24:]),
	}
	if !s.valid() {
		return state{}, fmt.Errorf("%w: %w", ErrCorrupt, errBadState)
	}
	return s, nil
}
