package api

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// readingJSONCase is a reading built from a few fuzzable fields.
func readingJSONCase(id int64, seq uint64, value float64, snr float32, name, relay string, received int64, sealed []byte, pour bool) store.Reading {
	r := store.Reading{
		ID: id, DeviceID: id / 3, ProjectID: "proj-" + name, Seq: seq,
		DeviceTime: time.UnixMilli(received - 1500).In(time.FixedZone("x", 3600)),
		Received:   time.Unix(0, received*int64(time.Millisecond)+int64(seq%1000)),
		Kind:       wire.Kind(seq % 6), Value: value, Name: name, Unit: relay, Sealed: sealed,
	}
	if relay != "" {
		r.Heard = []store.Hearing{
			{RelayID: relay, Received: r.Received, RSSI: int16(seq), SNR: snr},
			{RelayID: "", Received: r.Received.Add(time.Millisecond), RSSI: -1, SNR: -snr},
		}
	}
	if pour {
		r.Pour = &wire.Pour{Start: received, Duration: 1200, Tilt: []int16{1, -2}, Volume: 3.5}
	}
	return r
}

func checkReadingJSON(t *testing.T, r store.Reading) {
	t.Helper()
	want, wantErr := json.Marshal(newReadingJSON(r))
	got, err := appendReadingJSON([]byte("prefix"), r)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v; encoding/json says %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], want) {
		t.Fatalf("reading %+v:\n got %s\nwant %s", r, got[len("prefix"):], want)
	}
}

func TestReadingJSONMatches(t *testing.T) {
	values := []float64{0, 1, -1, 21.5, 1e-7, 1e-6, 123456789, 1e20, 1e21, 1e300, -4.9e-324,
		math.MaxFloat64, math.NaN(), math.Inf(1), math.Inf(-1)}
	snrs := []float32{0, 7.5, -12.25, 1e-7, 3e38, float32(math.Inf(1)), float32(math.NaN())}
	names := []string{"", "inside", `a"b`, `back\slash`, "<tag>", "a&b", "tab\there", "ünïcode", "\u2028", "\xff"}
	fast := 0
	for i, v := range values {
		for j, snr := range snrs {
			for k, name := range names {
				r := readingJSONCase(int64(i*1000+j*10+k), uint64(i+j+k), v, snr, name, names[(k+1)%len(names)],
					1_700_000_000_000+int64(i), []byte(name), (i+j+k)%5 == 0)
				checkReadingJSON(t, r)
				if _, ok := appendReadingFast(nil, r); ok {
					fast++
				}
			}
		}
	}
	// Times encoding/json refuses, and zero times.
	for _, ts := range []time.Time{{}, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)} {
		r := readingJSONCase(1, 2, 3, 4, "n", "r", 0, nil, false)
		r.Received, r.DeviceTime = ts, ts
		checkReadingJSON(t, r)
	}
	if fast == 0 {
		t.Fatal("no case took the direct path")
	}
}

// TestReadingsPageMatches: a page of readings is what encoding/json's
// Encoder wrote for readingsPage, newline included; a reading it cannot
// encode is an error, not a truncated page.
func TestReadingsPageMatches(t *testing.T) {
	var rs []store.Reading
	for i := range 20 {
		rs = append(rs, readingJSONCase(int64(i+1), uint64(i), float64(i)/3, float32(i), "n", "relay-"+strconv.Itoa(i),
			1_700_000_000_000+int64(i), []byte{byte(i)}, i%7 == 6))
	}
	for _, c := range []struct {
		rs   []store.Reading
		next string
	}{{nil, ""}, {rs[:1], ""}, {rs, "abc-_Z"}, {rs, "<&>"}} {
		page := readingsPage{Readings: make([]readingJSON, 0, len(c.rs)), NextCursor: c.next}
		for _, r := range c.rs {
			page.Readings = append(page.Readings, newReadingJSON(r))
		}
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(page); err != nil {
			t.Fatal(err)
		}
		got, err := appendReadingsPage(nil, c.rs, c.next)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("page of %d, cursor %q:\n got %s\nwant %s", len(c.rs), c.next, got, want.Bytes())
		}
	}
	bad := append(rs[:2:2], readingJSONCase(99, 1, math.NaN(), 0, "n", "r", 0, nil, false))
	if _, err := appendReadingsPage(nil, bad, ""); err == nil {
		t.Fatal("a page with a NaN value was encoded")
	}
}

func FuzzReadingJSON(f *testing.F) {
	f.Add(int64(1), uint64(1), 21.5, float32(7.5), "inside", "relay-1", int64(1_700_000_000_000), []byte(nil), false)
	f.Add(int64(-5), uint64(1<<63), 1e-9, float32(-0.5), "<", "\x00", int64(-62_135_596_800_001), []byte{0, 1, 2}, true)
	f.Fuzz(func(t *testing.T, id int64, seq uint64, value float64, snr float32, name, relay string, received int64, sealed []byte, pour bool) {
		checkReadingJSON(t, readingJSONCase(id, seq, value, snr, name, relay, received, sealed, pour))
	})
}

func BenchmarkReadingJSON(b *testing.B) {
	now := time.Now()
	r := store.Reading{ID: 123456, DeviceID: 42, ProjectID: "bench", Seq: 9876, DeviceTime: now, Received: now,
		Kind: wire.KindTemperature, Value: 21.5, Name: "inside", Unit: "C",
		Heard: []store.Hearing{{RelayID: "relay-1", Received: now, RSSI: -80, SNR: 7.5}}}
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(newReadingJSON(r)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = appendReadingJSON(buf[:0], r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
