package wire

import (
	"encoding/binary"
	"math"
	"unicode/utf8"

	"github.com/x448/float16"
)

// DecodeUplink is DecodeMessage that also returns each reading of the
// message as the device encoded it (what RawReadings returns), one per
// reading of the message, copied: the result does not alias b.
//
// The uplink a server hears most, a message of readings alone, is parsed
// by hand in one pass: the general decoder's reflection was a third of
// ingest's CPU. The hand parser accepts only a narrow form of that message
// (definite lengths, keys in increasing order, no pour), and anything
// else, valid or not, goes to DecodeMessage and RawReadings, so the
// decoder's strictness is theirs: whatever the hand parser accepts,
// DecodeMessage accepts too and decodes to the same message
// (FuzzDecodeUplink checks exactly that).
func DecodeUplink(b []byte) (*Message, [][]byte, error) {
	if m, raws, ok := decodeReadingsOnly(b); ok {
		return m, raws, nil
	}
	m, err := DecodeMessage(b)
	if err != nil {
		return nil, nil, err
	}
	if m.Readings == nil {
		return m, nil, nil
	}
	raws, err := RawReadings(b)
	if err != nil {
		return nil, nil, err
	}
	if len(raws) != len(m.Readings.Readings) {
		// Not for a message DecodeMessage accepted; checked so that the
		// two decoders ever disagreeing is an invalid payload, not an
		// index out of range in the caller.
		return nil, nil, invalidPayload("readings: raw and decoded readings differ in number")
	}
	return m, raws, nil
}

// readingsOnly holds a message and its batch in one allocation.
type readingsOnly struct {
	m Message
	b ReadingBatch
}

// decodeReadingsOnly parses b if it is a message of readings alone in the
// narrow form DecodeUplink describes, and passes Validate. ok is false for
// anything else; it never judges b invalid, it only declines.
func decodeReadingsOnly(b []byte) (m *Message, raws [][]byte, ok bool) {
	p := fastParser{b: b}
	if p.head() != majorMap || p.arg != 1 || p.head() != majorUint || p.arg != 1 {
		return nil, nil, false
	}
	ro := new(readingsOnly)
	ro.m.Readings = &ro.b
	if p.head() != majorMap {
		return nil, nil, false
	}
	n := p.arg
	var start, end int // the readings' bytes
	last := uint64(0)
	for range n {
		key, ok := p.key(last)
		if !ok {
			return nil, nil, false
		}
		last = key
		switch key {
		case 1:
			if p.head() != majorUint {
				return nil, nil, false
			}
			ro.b.Base = p.arg
		case 2:
			if p.head() != majorArray || p.arg > MaxReadingsPerBatch {
				return nil, nil, false
			}
			if p.arg > 0 {
				ro.b.Readings = make([]Reading, p.arg)
				raws = make([][]byte, p.arg)
			}
			start = p.off
			for i := range ro.b.Readings {
				at := p.off
				if !p.reading(&ro.b.Readings[i]) {
					return nil, nil, false
				}
				raws[i] = b[at:p.off]
			}
			end = p.off
		default:
			return nil, nil, false
		}
	}
	for _, c := range b[p.off:] {
		if c != 0 {
			return nil, nil, false
		}
	}
	if ro.m.Validate() != nil {
		return nil, nil, false
	}
	if len(raws) > 0 {
		// The readings lie back to back: each one's copy starts where
		// the one before it ends.
		own := append([]byte(nil), b[start:end]...)
		off := 0
		for i, r := range raws {
			raws[i] = own[off : off+len(r) : off+len(r)]
			off += len(r)
		}
	}
	return &ro.m, raws, true
}

// CBOR major types (RFC 8949 §3.1), as fastParser.head returns them.
const (
	majorUint   = 0
	majorNegInt = 1
	majorBytes  = 2
	majorText   = 3
	majorArray  = 4
	majorMap    = 5
	majorFloat  = 7 // floats and simple values
	majorBad    = 8 // not a head fastParser accepts
)

// fastParser reads CBOR heads from b at off. Every method leaves the
// parser in a state where the caller only needs to check what it returns.
type fastParser struct {
	b   []byte
	off int
	arg uint64 // the last head's argument
	ai  byte   // the last head's additional information
}

// head reads one data item's head and returns its major type, with its
// argument in p.arg; majorBad for a truncated head, an indefinite length
// or reserved additional information. Floats keep their encoded width in
// p.ai and their bits in p.arg.
func (p *fastParser) head() byte {
	if p.off >= len(p.b) {
		return majorBad
	}
	c := p.b[p.off]
	major, ai := c>>5, c&0x1f
	p.ai = ai
	p.off++
	var width int
	switch {
	case ai < 24:
		p.arg = uint64(ai)
		return major
	case ai == 24:
		width = 1
	case ai == 25:
		width = 2
	case ai == 26:
		width = 4
	case ai == 27:
		width = 8
	default:
		return majorBad
	}
	if len(p.b)-p.off < width {
		return majorBad
	}
	rest := p.b[p.off : p.off+width]
	p.off += width
	switch width {
	case 1:
		p.arg = uint64(rest[0])
	case 2:
		p.arg = uint64(binary.BigEndian.Uint16(rest))
	case 4:
		p.arg = uint64(binary.BigEndian.Uint32(rest))
	default:
		p.arg = binary.BigEndian.Uint64(rest)
	}
	return major
}

// key reads a map key: an unsigned integer greater than last.
func (p *fastParser) key(last uint64) (uint64, bool) {
	if p.head() != majorUint || p.arg <= last {
		return 0, false
	}
	return p.arg, true
}

// span reads a byte or text string of the given major type and returns its
// content (aliasing b). Validate checks the lengths.
func (p *fastParser) span(major byte) ([]byte, bool) {
	if p.head() != major || p.arg > uint64(len(p.b)-p.off) {
		return nil, false
	}
	s := p.b[p.off : p.off+int(p.arg)]
	p.off += int(p.arg)
	return s, true
}

// text reads a text string of valid UTF-8.
func (p *fastParser) text() (string, bool) {
	s, ok := p.span(majorText)
	if !ok || !utf8.Valid(s) {
		return "", false
	}
	return string(s), true
}

// reading reads one reading map without a pour into r.
func (p *fastParser) reading(r *Reading) bool {
	if p.head() != majorMap {
		return false
	}
	n, last := p.arg, uint64(0)
	for range n {
		key, ok := p.key(last)
		if !ok {
			return false
		}
		last = key
		switch key {
		case 1:
			if p.head() != majorUint {
				return false
			}
			r.Seq = p.arg
		case 2:
			major := p.head()
			if major != majorUint && major != majorNegInt || p.arg > math.MaxInt64 {
				return false
			}
			r.Time = int64(p.arg)
			if major == majorNegInt {
				r.Time = -1 - r.Time
			}
		case 3:
			if p.head() != majorUint || p.arg > math.MaxUint8 {
				return false
			}
			r.Kind = Kind(p.arg)
		case 4:
			if p.head() != majorFloat {
				return false
			}
			var v float64
			switch p.ai {
			case 25:
				v = float64(float16.Frombits(uint16(p.arg)).Float32())
			case 26:
				v = float64(math.Float32frombits(uint32(p.arg)))
			case 27:
				v = math.Float64frombits(p.arg)
			default:
				return false // a simple value
			}
			r.Value = v // Validate refuses NaN and infinities
		case 5:
			if r.Name, ok = p.text(); !ok {
				return false
			}
		case 6:
			if r.Unit, ok = p.text(); !ok {
				return false
			}
		case 8:
			s, ok := p.span(majorBytes)
			if !ok {
				return false
			}
			r.Sealed = append([]byte(nil), s...) // nil when empty, as DecodeMessage gives
		default:
			return false // a pour, or not a key of a reading
		}
	}
	return true
}
