package bus

import (
	"reflect"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

func sampleAppend() *store.Append {
	at := time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.UTC)
	return &store.Append{
		Readings: []store.Reading{
			{DeviceID: 7, ProjectID: "p", Seq: 1 << 40, DeviceTime: at.Add(-time.Second), Received: at,
				Kind: wire.KindTemperature, Value: -21.25, Name: "inside", Unit: "°C", Raw: []byte{0xa1, 1, 2},
				Heard: []store.Hearing{{RelayID: "r1", Received: at, RSSI: -120, SNR: -7.5}}},
			// Zero times, a pour, sealed bytes that are empty (not nil), no
			// hearing, and several.
			{DeviceID: 1, ProjectID: "project-two", Seq: 2, Received: at, Kind: wire.KindPour,
				Pour:   &wire.Pour{Start: 123, Duration: 4000, Tilt: []int16{1, -2, 3}, Volume: 330},
				Sealed: []byte{}, Raw: []byte{0xa0}},
			{DeviceID: 1, ProjectID: "project-two", Seq: 3, Received: at, DeviceTime: time.UnixMilli(-1 << 62).UTC(),
				Heard: []store.Hearing{{RelayID: "", Received: at}, {RelayID: "r2", Received: at.Add(time.Millisecond), RSSI: 5, SNR: 1}}},
		},
		Hearings: []store.LateHearing{{DeviceID: 7, Seq: 1 << 40, Hearing: store.Hearing{RelayID: "r3", Received: at, RSSI: -1, SNR: 2}}},
	}
}

func TestBatchRoundTrip(t *testing.T) {
	for _, a := range []*store.Append{sampleAppend(), {}, {Hearings: sampleAppend().Hearings}} {
		data, err := EncodeBatch(nil, a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBatch(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, a) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, a)
		}
		// Every truncation is refused, never misread.
		for i := range data {
			if _, err := DecodeBatch(data[:i]); err == nil && i > 0 {
				t.Fatalf("truncated to %d of %d bytes: decoded", i, len(data))
			}
		}
		if _, err := DecodeBatch(append(data, 0)); err == nil {
			t.Fatal("trailing byte accepted")
		}
	}
}

// TestBatchReadsOldFormat: batches an older server left in the stream
// (CBOR, RFC 3339 times) still decode.
func TestBatchReadsOldFormat(t *testing.T) {
	em, err := cbor.EncOptions{Time: cbor.TimeRFC3339Nano}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	a := sampleAppend()
	a.Readings[2].DeviceTime = time.Time{} // the old format had no room for it
	data, err := em.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Readings) != 3 || got.Readings[0].Seq != a.Readings[0].Seq || !got.Readings[0].Received.Equal(a.Readings[0].Received) ||
		got.Readings[1].Pour.Volume != 330 || len(got.Hearings) != 1 {
		t.Fatalf("old format decoded as %+v", got)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	data, err := EncodeBatch(nil, sampleAppend())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte{batchVersion, 0, 0})
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeBatch(data)
		if err != nil || len(data) == 0 || data[0] != batchVersion {
			return
		}
		// What decodes re-encodes to the same bytes.
		again, err := EncodeBatch(nil, a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := DecodeBatch(again)
		if err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("re-encoding changed the batch: %v", err)
		}
	})
}

// benchAppend is a publisher's batch at full load: 2,000 one-reading
// uplinks, each heard by one relay.
func benchAppend() *store.Append {
	now := time.Now()
	raw := make([]byte, 64)
	a := &store.Append{Readings: make([]store.Reading, 2000)}
	for i := range a.Readings {
		a.Readings[i] = store.Reading{DeviceID: int64(i%1000 + 1), ProjectID: "p", Seq: uint64(i), DeviceTime: now, Received: now,
			Kind: wire.KindTemperature, Value: 21.5, Name: "inside", Unit: "C", Raw: raw,
			Heard: []store.Hearing{{RelayID: "relay-1", Received: now, RSSI: -80, SNR: 7.5}}}
	}
	return a
}

// BenchmarkBatchCodec compares the bus's binary batch format with the CBOR
// it replaced, per reading.
func BenchmarkBatchCodec(b *testing.B) {
	a := benchAppend()
	em, err := cbor.EncOptions{Time: cbor.TimeRFC3339Nano}.EncMode()
	if err != nil {
		b.Fatal(err)
	}
	per := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(a.Readings)), "ns/reading")
	}
	b.Run("encode=binary", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = EncodeBatch(buf[:0], a)
		}
		per(b)
	})
	b.Run("encode=cbor", func(b *testing.B) {
		for b.Loop() {
			_, _ = em.Marshal(a)
		}
		per(b)
	})
	bin, _ := EncodeBatch(nil, a)
	old, _ := em.Marshal(a)
	b.Run("decode=binary", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeBatch(bin); err != nil {
				b.Fatal(err)
			}
		}
		per(b)
	})
	b.Run("decode=cbor", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeBatch(old); err != nil {
				b.Fatal(err)
			}
		}
		per(b)
	})
}
