package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// appendReadingJSON appends the JSON of r, byte for byte what
// json.Marshal(newReadingJSON(r)) gives. The live stream encodes every
// stored reading once per subscriber, and encoding/json's reflection and
// its re-scan of each time.Time were a tenth of the server's CPU at a
// steady 10,000 readings/s (and most of the REST API's time per page of
// readings). This writes the common reading (a value, plain
// ASCII names, times in years 0–9999) directly and hands anything else to
// encoding/json, so the output never differs (TestReadingJSONMatches,
// FuzzReadingJSON).
func appendReadingJSON(b []byte, r store.Reading) ([]byte, error) {
	if out, ok := appendReadingFast(b, r); ok {
		return out, nil
	}
	data, err := json.Marshal(newReadingJSON(r))
	if err != nil {
		return b, err
	}
	return append(b, data...), nil
}

// appendReadingsPage appends a page of readings as writeJSON(readingsPage)
// writes it, newline included, each reading by appendReadingJSON.
func appendReadingsPage(b []byte, rs []store.Reading, next string) ([]byte, error) {
	b = append(b, `{"readings":[`...)
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendReadingJSON(b, r); err != nil {
			return b, fmt.Errorf("reading %d: %w", r.ID, err)
		}
	}
	b = append(b, ']')
	if next != "" {
		c, err := json.Marshal(next)
		if err != nil {
			return b, err
		}
		b = append(append(b, `,"next_cursor":`...), c...)
	}
	return append(b, "}\n"...), nil
}

// appendReadingFast is appendReadingJSON's direct path; false (and b
// unchanged in content up to its length) when r needs encoding/json.
func appendReadingFast(b []byte, r store.Reading) ([]byte, bool) {
	kind := r.Kind.String()
	if r.Pour != nil || !plainFloat(r.Value, 64) || !plainString(r.ProjectID) || !plainString(kind) ||
		!plainString(r.Name) || !plainString(r.Unit) || !plainTime(r.DeviceTime) || !plainTime(r.Received) {
		return b, false
	}
	for _, h := range r.Heard {
		if !plainString(h.RelayID) || !plainTime(h.Received) || !plainFloat(float64(h.SNR), 32) {
			return b, false
		}
	}
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, r.ID, 10)
	b = append(b, `,"device_id":`...)
	b = strconv.AppendInt(b, r.DeviceID, 10)
	b = appendStringField(b, `,"project":`, r.ProjectID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = appendTimeField(b, `,"device_time":`, r.DeviceTime)
	b = appendTimeField(b, `,"received":`, r.Received)
	b = appendStringField(b, `,"kind":`, kind)
	b = append(b, `,"value":`...)
	b = appendFloat(b, r.Value, 64)
	if r.Name != "" {
		b = appendStringField(b, `,"name":`, r.Name)
	}
	if r.Unit != "" {
		b = appendStringField(b, `,"unit":`, r.Unit)
	}
	if len(r.Sealed) > 0 {
		b = append(b, `,"sealed":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.Sealed)
		b = append(b, '"')
	}
	b = append(b, `,"heard":[`...)
	for i, h := range r.Heard {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStringField(b, `{"relay":`, h.RelayID)
		b = appendTimeField(b, `,"received":`, h.Received)
		b = append(b, `,"rssi":`...)
		b = strconv.AppendInt(b, int64(h.RSSI), 10)
		b = append(b, `,"snr":`...)
		b = appendFloat(b, float64(h.SNR), 32)
		b = append(b, '}')
	}
	return append(b, "]}"...), true
}

func appendStringField(b []byte, name, s string) []byte {
	b = append(b, name...)
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendTimeField(b []byte, name string, t time.Time) []byte {
	b = append(b, name...)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// plainString reports whether encoding/json writes s as it is between
// quotes: printable ASCII without the characters it escapes (its HTML
// escaping included).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// plainTime reports whether t's JSON is its RFC 3339 form: encoding/json
// refuses years outside 0–9999.
func plainTime(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// plainFloat reports whether f has a JSON number (NaN and the infinities
// have none).
func plainFloat(f float64, bits int) bool {
	if bits == 32 {
		f = float64(float32(f))
	}
	return !math.IsNaN(f) && !math.IsInf(f, 0)
}

// appendFloat writes f as encoding/json does: the shortest form that reads
// back as the same float of that size, in exponent form only for very
// small or large magnitudes, with a one-digit negative exponent unpadded.
func appendFloat(b []byte, f float64, bits int) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// e-09 → e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
