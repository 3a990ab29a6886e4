package bus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// The batch format. CBOR with RFC 3339 times cost the publisher and the
// store writer about a tenth of the server's CPU at full load (reflection,
// time formatting and parsing), so batches are a flat binary record:
//
//	batch    = version(1) uvarint(n) reading* uvarint(m) late*
//	reading  = varint(device) str(project) uvarint(seq) time(device time)
//	           time(received) kind(1) float64(value) str(name) str(unit)
//	           bytes(pour CBOR) bytes(sealed) bytes(raw) uvarint(k) hearing*
//	late     = varint(device) uvarint(seq) hearing
//	hearing  = str(relay) time(received) varint(rssi) float32(snr)
//	time     = 0 (the zero time) | 1 varint(unix seconds) uvarint(nanoseconds)
//	str      = uvarint(len) bytes
//	bytes    = uvarint(len+1) bytes | 0 (nil)
//
// Integers are little-endian where fixed. The version byte can never start
// the CBOR map of the earlier format (major type 5, 0xa0–0xbf), so
// batches published by an older server still in the stream decode.
const batchVersion = 1

// Bounds on what a batch may claim before anything is allocated for it.
const (
	maxBatchItems = 1 << 20
	maxBatchField = 1 << 16
)

var errBatch = errors.New("bus: malformed batch")

// EncodeBatch appends the encoding of a to dst.
func EncodeBatch(dst []byte, a *store.Append) ([]byte, error) {
	b := append(dst, batchVersion)
	b = binary.AppendUvarint(b, uint64(len(a.Readings)))
	for i := range a.Readings {
		r := &a.Readings[i]
		b = binary.AppendVarint(b, r.DeviceID)
		b = appendStr(b, r.ProjectID)
		b = binary.AppendUvarint(b, r.Seq)
		b = appendTime(b, r.DeviceTime)
		b = appendTime(b, r.Received)
		b = append(b, byte(r.Kind))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(r.Value))
		b = appendStr(b, r.Name)
		b = appendStr(b, r.Unit)
		if r.Pour != nil {
			p, err := cbor.Marshal(r.Pour)
			if err != nil {
				return dst, fmt.Errorf("bus: encode pour: %w", err)
			}
			b = appendBytes(b, p)
		} else {
			b = appendBytes(b, nil)
		}
		b = appendBytes(b, r.Sealed)
		b = appendBytes(b, r.Raw)
		b = binary.AppendUvarint(b, uint64(len(r.Heard)))
		for _, h := range r.Heard {
			b = appendHearing(b, h)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(a.Hearings)))
	for _, lh := range a.Hearings {
		b = binary.AppendVarint(b, lh.DeviceID)
		b = binary.AppendUvarint(b, lh.Seq)
		b = appendHearing(b, lh.Hearing)
	}
	return b, nil
}

// DecodeBatch decodes a batch of either format. The byte slices of the
// result (Raw, Sealed) share data.
func DecodeBatch(data []byte) (*store.Append, error) {
	if len(data) == 0 || data[0] != batchVersion {
		var a store.Append
		if err := cbor.Unmarshal(data, &a); err != nil {
			return nil, fmt.Errorf("bus: decode batch: %w", err)
		}
		return &a, nil
	}
	d := decoder{b: data[1:]}
	a := new(store.Append)
	n := d.count()
	if n > 0 {
		a.Readings = make([]store.Reading, n)
	}
	// One backing array for every reading's first hearing: a reading is
	// almost always heard once when published.
	heard := make([]store.Hearing, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		r := &a.Readings[i]
		r.DeviceID = d.varint()
		r.ProjectID = d.str()
		r.Seq = d.uvarint()
		r.DeviceTime = d.time()
		r.Received = d.time()
		r.Kind = wire.Kind(d.byte())
		r.Value = math.Float64frombits(d.uint64())
		r.Name = d.str()
		r.Unit = d.str()
		if p := d.bytes(); p != nil && d.err == nil {
			r.Pour = new(wire.Pour)
			if err := cbor.Unmarshal(p, r.Pour); err != nil {
				return nil, fmt.Errorf("%w: pour: %w", errBatch, err)
			}
		}
		r.Sealed = d.bytes()
		r.Raw = d.bytes()
		k := d.count()
		if k == 1 {
			heard = append(heard, d.hearing())
			r.Heard = heard[len(heard)-1 : len(heard) : len(heard)]
			continue
		}
		for range k {
			if d.err != nil {
				break
			}
			r.Heard = append(r.Heard, d.hearing())
		}
	}
	m := d.count()
	if m > 0 && d.err == nil {
		a.Hearings = make([]store.LateHearing, m)
	}
	for i := 0; i < m && d.err == nil; i++ {
		lh := &a.Hearings[i]
		lh.DeviceID = d.varint()
		lh.Seq = d.uvarint()
		lh.Hearing = d.hearing()
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errBatch
	}
	if d.err != nil {
		return nil, d.err
	}
	return a, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	if p == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(p))+1)
	return append(b, p...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendHearing(b []byte, h store.Hearing) []byte {
	b = appendStr(b, h.RelayID)
	b = appendTime(b, h.Received)
	b = binary.AppendVarint(b, int64(h.RSSI))
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(h.SNR))
}

// decoder reads the binary format; the first error sticks and every later
// read returns a zero value.
type decoder struct {
	b   []byte
	err error
	// strs interns the strings of a batch: projects, names, units and
	// relays repeat across its readings.
	strs map[string]string
}

func (d *decoder) fail() { d.err, d.b = errBatch, nil }

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a number of items, bounded by the bytes left (every item
// takes at least one).
func (d *decoder) count() int {
	v := d.uvarint()
	if v > maxBatchItems || v > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) take(n uint64) []byte {
	if n > maxBatchField || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) str() string {
	p := d.take(d.uvarint())
	if len(p) == 0 {
		return ""
	}
	if s, ok := d.strs[string(p)]; ok {
		return s
	}
	s := string(p)
	if d.strs == nil {
		d.strs = make(map[string]string)
	}
	if len(d.strs) < 1024 {
		d.strs[s] = s
	}
	return s
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	return d.take(n - 1)
}

func (d *decoder) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= 1e9 {
			d.fail()
			return time.Time{}
		}
		return time.Unix(sec, int64(nsec)).UTC()
	}
	d.fail()
	return time.Time{}
}

func (d *decoder) hearing() store.Hearing {
	var h store.Hearing
	h.RelayID = d.str()
	h.Received = d.time()
	rssi := d.varint()
	if rssi < math.MinInt16 || rssi > math.MaxInt16 {
		d.fail()
	}
	h.RSSI = int16(rssi)
	if len(d.b) < 4 {
		d.fail()
		return h
	}
	h.SNR = math.Float32frombits(binary.LittleEndian.Uint32(d.b))
	d.b = d.b[4:]
	return h
}
