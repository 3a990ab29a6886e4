package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
)

// updatePayload reports whether -update was given (the flag is declared
// once for the package, in vectors_test.go).
func updatePayload() bool { return *updateVectors }

const payloadGoldenDir = "../../testdata/payload"

// 2026-01-01T00:00:00Z in Unix milliseconds.
const payloadT0 = 1767225600000

// payloadExample is a named message whose encoding is a golden vector.
type payloadExample struct {
	name string
	msg  *Message
}

// payloadExamples returns fresh copies, so a test may modify them.
func payloadExamples() []payloadExample {
	return []payloadExample{
		{"uplink", &Message{
			Readings: &ReadingBatch{Base: 41, Readings: []Reading{
				{Seq: 41, Time: payloadT0, Kind: KindTemperature, Value: 21.5},
				{Seq: 42, Time: payloadT0 + 60_000, Kind: KindHumidity, Value: 48.25},
			}},
			Health: &Health{Battery: 87, Uptime: 86400, Firmware: "1.4.2"},
		}},
		{"downlink", &Message{
			Ack:    &Ack{Seq: 42},
			Config: &Config{Version: 3, ReportInterval: 300, Settings: map[string]string{"led": "off"}},
		}},
		{"command", &Message{
			Command: &Command{ID: 7, Name: "reboot", Args: map[string]string{"delay": "5"}},
		}},
		{"result", &Message{
			CommandResult: &CommandResult{ID: 7, OK: true},
		}},
		{"pour", &Message{
			Readings: &ReadingBatch{Base: 1, Readings: []Reading{{
				Seq: 1, Time: payloadT0, Kind: KindPour,
				Pour: &Pour{Start: payloadT0 - 2500, Duration: 2500, Tilt: []int16{0, 1500, 4500, 9000, -150}, Volume: 44.5},
			}}},
		}},
		{"full", &Message{
			Readings: &ReadingBatch{Base: 1000, Readings: []Reading{
				{Seq: 1000, Time: payloadT0, Kind: KindTemperature, Value: -3.2, Name: "outside"},
				{Seq: 1001, Time: payloadT0, Kind: KindHumidity, Value: 55},
				{Seq: 1003, Time: payloadT0 + 1, Kind: KindPour, Pour: &Pour{Start: payloadT0 - 1200, Duration: 1200, Tilt: []int16{100, 2000, -30}}},
				{Seq: 1004, Time: -1, Kind: KindNumeric, Value: 1013.25, Name: "pressure", Unit: "hPa"},
				{Seq: 70000, Time: payloadT0 + 2, Kind: KindNumeric, Name: "sealed", Sealed: []byte{0xde, 0xad, 0xbe, 0xef}},
			}},
			Health:        &Health{Battery: 100, Plugged: true, Uptime: 4294967296, Firmware: "2.0.0-rc1", Dropped: 3},
			Ack:           &Ack{Seq: 999},
			Config:        &Config{Version: 12, ReportInterval: 60, RekeyAfter: 7200, Repeat: 3, Settings: map[string]string{"led": "on", "b": "", "unit": "°C"}},
			Command:       &Command{ID: 1 << 40, Name: "calibrate", Args: map[string]string{"offset": "-0.5"}},
			CommandResult: &CommandResult{ID: 6, Message: "sensor not found"},
		}},
	}
}

func mustAppendPayload(t testing.TB, m *Message) []byte {
	t.Helper()
	b, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("AppendMessage: %v", err)
	}
	return b
}

func mustHexPayload(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestPayloadRoundTrip(t *testing.T) {
	// Every example, and every part of the full example on its own.
	cases := payloadExamples()
	full := cases[len(cases)-1].msg
	cases = append(cases,
		payloadExample{"readings-only", &Message{Readings: full.Readings}},
		payloadExample{"empty-batch", &Message{Readings: &ReadingBatch{Base: 5}}},
		payloadExample{"health-only", &Message{Health: full.Health}},
		payloadExample{"health-zero", &Message{Health: &Health{}}},
		payloadExample{"ack-only", &Message{Ack: full.Ack}},
		payloadExample{"config-only", &Message{Config: full.Config}},
		payloadExample{"config-zero", &Message{Config: &Config{}}},
		payloadExample{"command-only", &Message{Command: full.Command}},
		payloadExample{"result-only", &Message{CommandResult: full.CommandResult}},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := mustAppendPayload(t, c.msg)
			got, err := DecodeMessage(b)
			if err != nil {
				t.Fatalf("DecodeMessage(%x): %v", b, err)
			}
			if !reflect.DeepEqual(got, c.msg) {
				t.Errorf("round trip changed the message:\n got %+v\nwant %+v", got, c.msg)
			}
			// Appending must not disturb what dst already holds.
			prefix := []byte("prefix")
			b2, err := AppendMessage(prefix, c.msg)
			if err != nil || !bytes.Equal(b2[:len(prefix)], []byte("prefix")) || !bytes.Equal(b2[len(prefix):], b) {
				t.Errorf("AppendMessage(prefix) = %x, %v; want prefix then %x", b2, err, b)
			}
		})
	}
}

// TestPayloadGolden pins the encoding of every example byte for byte; the
// files are what docs/payload.md and device firmware tests are checked
// against. Regenerate with: go test ./internal/wire -run PayloadGolden -update
func TestPayloadGolden(t *testing.T) {
	for _, ex := range payloadExamples() {
		t.Run(ex.name, func(t *testing.T) {
			got := mustAppendPayload(t, ex.msg)
			path := filepath.Join(payloadGoldenDir, ex.name+".hex")
			if updatePayload() {
				if err := os.MkdirAll(payloadGoldenDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(wrapPayloadHex(got)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			text, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			want := mustHexPayload(t, string(text))
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding of %s changed:\n got %x\nwant %x", ex.name, got, want)
			}
			dec, err := DecodeMessage(want)
			if err != nil {
				t.Fatalf("DecodeMessage(golden): %v", err)
			}
			if !reflect.DeepEqual(dec, ex.msg) {
				t.Errorf("golden decodes to\n%+v\nwant\n%+v", dec, ex.msg)
			}
		})
	}
}

// wrapPayloadHex formats b as lower-case hex, 32 bytes a line.
func wrapPayloadHex(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		n := min(len(b), 32)
		sb.WriteString(hex.EncodeToString(b[:n]))
		sb.WriteByte('\n')
		b = b[n:]
	}
	return sb.String()
}

// TestPayloadDocExamples decodes every ```hex block of docs/payload.md (hex
// before any '#' on each line) and checks that it is a golden example, so the
// document a firmware author works from cannot drift from the code.
func TestPayloadDocExamples(t *testing.T) {
	f, err := os.Open("../../docs/payload.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	golden := map[string]string{}
	for _, ex := range payloadExamples() {
		golden[string(mustAppendPayload(t, ex.msg))] = ex.name
	}
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```hex":
			cur = new(strings.Builder)
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			code, _, _ := strings.Cut(line, "#")
			cur.WriteString(code)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(blocks) < 3 {
		t.Fatalf("found %d hex blocks in docs/payload.md, want at least 3", len(blocks))
	}
	for i, blk := range blocks {
		b := mustHexPayload(t, blk)
		if _, err := DecodeMessage(b); err != nil {
			t.Errorf("block %d: %v", i+1, err)
			continue
		}
		if _, ok := golden[string(b)]; !ok {
			t.Errorf("block %d (%x) is not the encoding of any golden example", i+1, b)
		}
	}
}

// TestPayloadValidate checks each rule of Validate: breaking it is rejected
// by Validate, by AppendMessage, and (encoded without validation) by
// DecodeMessage.
func TestPayloadValidate(t *testing.T) {
	temp := func(seq uint64) Reading { return Reading{Seq: seq, Time: payloadT0, Kind: KindTemperature, Value: 20} }
	batch := func(rs ...Reading) *Message { return &Message{Readings: &ReadingBatch{Base: 1, Readings: rs}} }
	long := func(n int) string { return strings.Repeat("x", n) }
	manySettings := func(n int) map[string]string {
		kv := map[string]string{}
		for i := range n {
			kv[string(rune('a'+i))] = "v"
		}
		return kv
	}
	tooMany := make([]Reading, MaxReadingsPerBatch+1)
	for i := range tooMany {
		tooMany[i] = temp(uint64(i + 1))
	}

	cases := []struct {
		name   string
		msg    *Message
		reason string // substring of the error
	}{
		{"nil", nil, "nil message"},
		{"no part", &Message{}, "no part"},
		{"too many readings", batch(tooMany...), "readings: more than 128"},
		{"seq zero", &Message{Readings: &ReadingBatch{Readings: []Reading{temp(0)}}}, "readings[0].seq: zero"},
		{"seq below base", &Message{Readings: &ReadingBatch{Base: 10, Readings: []Reading{temp(10), temp(9)}}}, "readings[1].seq: below base"},
		{"seq repeated", batch(temp(1), temp(2), temp(2)), "readings[2].seq: not increasing"},
		{"seq decreasing", batch(temp(1), temp(3), temp(2)), "readings[2].seq: not increasing"},
		{"kind zero", batch(Reading{Seq: 1}), "readings[0].kind: unknown"},
		{"kind unknown", batch(Reading{Seq: 1, Kind: 5}), "readings[0].kind: unknown"},
		{"value NaN", batch(Reading{Seq: 1, Kind: KindTemperature, Value: math.NaN()}), "readings[0].value: not finite"},
		{"value +Inf", batch(Reading{Seq: 1, Kind: KindHumidity, Value: math.Inf(1)}), "readings[0].value: not finite"},
		{"value -Inf", batch(Reading{Seq: 1, Kind: KindNumeric, Name: "n", Value: math.Inf(-1)}), "readings[0].value: not finite"},
		{"numeric without name", batch(Reading{Seq: 1, Kind: KindNumeric, Value: 1}), "readings[0].name: empty"},
		{"name too long", batch(Reading{Seq: 1, Kind: KindNumeric, Name: long(MaxNameLen + 1)}), "readings[0].name: longer than 32"},
		{"name invalid UTF-8", batch(Reading{Seq: 1, Kind: KindNumeric, Name: "\xff"}), "readings[0].name: invalid UTF-8"},
		{"unit too long", batch(Reading{Seq: 1, Kind: KindTemperature, Unit: long(MaxUnitLen + 1)}), "readings[0].unit: longer than 16"},
		{"sealed too long", batch(Reading{Seq: 1, Kind: KindTemperature, Sealed: make([]byte, MaxSealedLen+1)}), "readings[0].sealed: longer than 1024"},
		{"pour without pour", batch(Reading{Seq: 1, Kind: KindPour}), "readings[0].pour: missing"},
		{"pour on temperature", batch(Reading{Seq: 1, Kind: KindTemperature, Pour: &Pour{}}), "readings[0].pour: set for a kind other"},
		{"tilt too long", batch(Reading{Seq: 1, Kind: KindPour, Pour: &Pour{Tilt: make([]int16, MaxTiltSamples+1)}}), "readings[0].pour.tilt: more than 64"},
		{"volume NaN", batch(Reading{Seq: 1, Kind: KindPour, Pour: &Pour{Volume: float32(math.NaN())}}), "readings[0].pour.volume: not finite"},
		{"volume Inf", batch(Reading{Seq: 1, Kind: KindPour, Pour: &Pour{Volume: float32(math.Inf(1))}}), "readings[0].pour.volume: not finite"},
		{"volume negative", batch(Reading{Seq: 1, Kind: KindPour, Pour: &Pour{Volume: -1}}), "readings[0].pour.volume: not finite"},
		{"battery over 100", &Message{Health: &Health{Battery: 101}}, "health.battery"},
		{"firmware too long", &Message{Health: &Health{Firmware: long(MaxFirmwareLen + 1)}}, "health.firmware: longer than 32"},
		{"too many settings", &Message{Config: &Config{Settings: manySettings(MaxSettings + 1)}}, "config.settings: more than 16"},
		{"empty setting key", &Message{Config: &Config{Settings: map[string]string{"": "v"}}}, "config.settings key: empty"},
		{"setting key too long", &Message{Config: &Config{Settings: map[string]string{long(MaxSettingKeyLen + 1): "v"}}}, "config.settings key: longer than 32"},
		{"setting value too long", &Message{Config: &Config{Settings: map[string]string{"k": long(MaxSettingValueLen + 1)}}}, "config.settings value: longer than 64"},
		{"setting value invalid UTF-8", &Message{Config: &Config{Settings: map[string]string{"k": "\xc3\x28"}}}, "config.settings value: invalid UTF-8"},
		{"command name empty", &Message{Command: &Command{ID: 1}}, "command.name: empty"},
		{"command name too long", &Message{Command: &Command{ID: 1, Name: long(MaxCommandNameLen + 1)}}, "command.name: longer than 32"},
		{"too many args", &Message{Command: &Command{ID: 1, Name: "x", Args: manySettings(MaxSettings + 1)}}, "command.args: more than 16"},
		{"arg value too long", &Message{Command: &Command{ID: 1, Name: "x", Args: map[string]string{"k": long(MaxSettingValueLen + 1)}}}, "command.args value: longer than 64"},
		{"result message too long", &Message{CommandResult: &CommandResult{Message: long(MaxResultMessageLen + 1)}}, "commandResult.message: longer than 128"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.msg.Validate()
			if !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("Validate() = %v; want ErrInvalidPayload mentioning %q", err, c.reason)
			}
			dst := []byte{1, 2, 3}
			out, err := AppendMessage(dst, c.msg)
			if !errors.Is(err, ErrInvalidPayload) || !bytes.Equal(out, dst) {
				t.Fatalf("AppendMessage = %x, %v; want dst unchanged and ErrInvalidPayload", out, err)
			}
			if c.msg == nil || c.msg.Readings != nil && len(c.msg.Readings.Readings) > MaxReadingsPerBatch {
				return // not encodable as a message / rejected earlier by the decoder's array limit
			}
			// The same bytes from a peer that does not validate.
			b, err := payloadEncMode.Marshal(c.msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if _, err := DecodeMessage(b); !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("DecodeMessage(%x) = %v; want ErrInvalidPayload", b, err)
			}
		})
	}
}

// TestPayloadLimitsInclusive checks that every limit is an inclusive maximum:
// a message exactly at all limits is valid and survives a round trip.
func TestPayloadLimitsInclusive(t *testing.T) {
	kv := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			k := string(rune('a'+i)) + strings.Repeat("k", MaxSettingKeyLen-1)
			m[k] = strings.Repeat("v", MaxSettingValueLen)
		}
		return m
	}
	rs := make([]Reading, MaxReadingsPerBatch)
	for i := range rs {
		rs[i] = Reading{Seq: uint64(i + 1), Kind: KindHumidity, Value: 100}
	}
	rs[0] = Reading{
		Seq: 1, Kind: KindNumeric, Value: -math.MaxFloat64,
		Name: strings.Repeat("n", MaxNameLen), Unit: strings.Repeat("u", MaxUnitLen), Sealed: make([]byte, MaxSealedLen),
	}
	rs[1] = Reading{
		Seq: 2, Kind: KindPour, Time: math.MinInt64,
		Pour: &Pour{Start: math.MaxInt64, Duration: math.MaxUint32, Tilt: make([]int16, MaxTiltSamples), Volume: math.MaxFloat32},
	}
	rs[1].Pour.Tilt[0], rs[1].Pour.Tilt[1] = math.MinInt16, math.MaxInt16
	m := &Message{
		Readings:      &ReadingBatch{Base: 1, Readings: rs},
		Health:        &Health{Battery: 100, Plugged: true, Uptime: math.MaxUint64, Firmware: strings.Repeat("f", MaxFirmwareLen), Dropped: math.MaxUint64},
		Ack:           &Ack{Seq: math.MaxUint64},
		Config:        &Config{Version: math.MaxUint64, ReportInterval: math.MaxUint32, RekeyAfter: math.MaxUint32, Repeat: math.MaxUint8, Settings: kv(MaxSettings)},
		Command:       &Command{ID: math.MaxUint64, Name: strings.Repeat("c", MaxCommandNameLen), Args: kv(MaxSettings)},
		CommandResult: &CommandResult{ID: math.MaxUint64, OK: true, Message: strings.Repeat("m", MaxResultMessageLen)},
	}
	b := mustAppendPayload(t, m)
	got, err := DecodeMessage(b)
	if err != nil {
		t.Fatalf("DecodeMessage: %v", err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip at the limits changed the message")
	}
}

// TestPayloadDecodeCopies checks that a decoded message does not alias its
// input, which the caller reuses for the next datagram.
func TestPayloadDecodeCopies(t *testing.T) {
	in := mustAppendPayload(t, payloadExamples()[len(payloadExamples())-1].msg)
	m, err := DecodeMessage(in)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(m.Readings.Readings[4].Sealed)
	clear(in)
	if got := m.Readings.Readings[4].Sealed; !bytes.Equal(got, want) {
		t.Errorf("Sealed changed with the input buffer: %x, want %x", got, want)
	}
}

func TestPayloadPadding(t *testing.T) {
	b := mustAppendPayload(t, payloadExamples()[0].msg)
	want, _ := DecodeMessage(b)
	for _, n := range []int{1, 2, 7, 64, 1000} {
		padded := append(bytes.Clone(b), make([]byte, n)...)
		got, err := DecodeMessage(padded)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("with %d zero bytes: %v", n, err)
		}
	}
	for _, tail := range []string{"01", "ff", "0000000001", "a0", "00a10300"} {
		_, err := DecodeMessage(append(bytes.Clone(b), mustHexPayload(t, tail)...))
		if !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), "non-zero byte after the message") {
			t.Errorf("trailing %s: err = %v; want non-zero trailing byte rejected", tail, err)
		}
	}
}

// TestPayloadStrictDecoding feeds hand-built CBOR that a lax decoder would
// accept. "a1 03 a1 01 05" is {3: {1: 5}}, an Ack of 5, the base of most cases.
func TestPayloadStrictDecoding(t *testing.T) {
	if _, err := DecodeMessage(mustHexPayload(t, "a1 03 a1 01 05")); err != nil {
		t.Fatalf("base case: %v", err)
	}
	cases := []struct {
		name, hex, reason string
	}{
		{"empty", "", "empty"},
		{"only padding", "00 00", "does not fit"},
		{"truncated", "a1 03 a1 01", "truncated"},
		{"truncated uint", "a1 03 a1 01 1a 00 01", "truncated"},
		{"top-level array", "81 a1 03 a1 01 05", "does not fit"},
		{"top-level text", "63 61 63 6b", "does not fit"},
		{"empty map", "a0", "no part"},
		{"duplicate top-level key", "a2 03 a1 01 05 03 a1 01 06", "duplicate map key"},
		{"duplicate key non-shortest", "a2 03 a1 01 05 18 03 a1 01 06", "duplicate map key"},
		{"duplicate inner key", "a1 03 a2 01 05 01 06", "duplicate map key"},
		// {4: {1: 1, 5: {"secret": "a", "secret": "b"}}}: the key must not be echoed.
		{"duplicate settings key", "a1 04 a2 01 01 05 a2 66 736563726574 61 61 66 736563726574 61 62", "duplicate map key"},
		{"unknown top-level key", "a1 07 a1 01 05", "unknown map key"},
		{"unknown inner key", "a1 03 a2 01 05 02 00", "unknown map key"},
		{"unknown key zero", "a1 00 a1 01 05", "unknown map key"},
		{"negative key", "a1 22 a1 01 05", "unknown map key"},
		{"text key", "a1 61 33 a1 01 05", "unknown map key"},
		{"text key by field name", "a1 63 41 63 6b a1 01 05", "unknown map key"}, // "Ack"
		{"byte string key", "a1 41 03 a1 01 05", "does not fit"},
		{"float key", "a1 f9 4200 a1 01 05", "unknown map key"},
		{"indefinite map", "bf 03 a1 01 05 ff", "indefinite-length"},
		{"indefinite inner map", "a1 03 bf 01 05 ff", "indefinite-length"},
		{"indefinite array", "a1 01 a2 01 01 02 9f ff", "indefinite-length"},
		{"indefinite text", "a1 05 a2 01 01 02 7f 61 78 ff", "indefinite-length"},
		{"indefinite bytes", "a1 01 a2 01 01 02 81 a4 01 01 02 00 03 01 08 5f 41 00 ff", "indefinite-length"},
		{"tag on value", "a1 03 a1 01 c1 05", "CBOR tag"},
		{"tag on message", "d9 d9f7 a1 03 a1 01 05", "CBOR tag"},
		{"bignum", "a1 03 a1 01 c2 41 05", "CBOR tag"},
		{"null part", "a1 03 f6", "simple value"},
		{"null value", "a1 03 a1 01 f6", "simple value"},
		{"undefined value", "a1 03 a1 01 f7", "simple value"},
		{"simple value 0", "a1 03 a1 01 e0", "simple value"},
		{"simple value 255", "a1 03 a1 01 f8 ff", "simple value"},
		{"invalid UTF-8 text", "a1 05 a2 01 01 02 61 ff", "invalid UTF-8"},
		{"overlong UTF-8 text", "a1 05 a2 01 01 02 62 c0 af", "invalid UTF-8"},
		{"bytes for text", "a1 05 a2 01 01 02 41 78", "does not fit"},
		{"text for bytes", "a1 01 a2 01 01 02 81 a4 01 01 02 00 03 01 08 61 78", "does not fit"},
		{"float for uint", "a1 03 a1 01 f9 4500", "does not fit"},
		{"negative for uint", "a1 03 a1 01 20", "does not fit"},
		{"uint64 overflow of int64", "a1 01 a2 01 01 02 81 a3 01 01 02 1b 8000000000000000 03 01", "does not fit"},
		{"kind overflow", "a1 01 a2 01 01 02 81 a3 01 01 02 00 03 19 0101", "does not fit"},
		{"battery overflow", "a1 02 a2 01 19 0100 03 00", "does not fit"},
		{"int for bool", "a1 06 a2 01 01 02 01", "does not fit"},
		{"NaN value", "a1 01 a2 01 01 02 81 a4 01 01 02 00 03 01 04 f9 7e00", "NaN"},
		{"infinite value", "a1 01 a2 01 01 02 81 a4 01 01 02 00 03 01 04 fa 7f800000", "NaN, infinity"},
		{"float64 overflows volume", "a1 01 a2 01 01 02 81 a4 01 01 02 00 03 03 07 a3 01 00 02 00 04 fb 7fefffffffffffff", "does not fit"},
		{"nested too deeply", "a1 01 a2 01 01 02 81 a4 01 01 02 00 03 03 07 a3 01 00 02 00 03 81 81 81 81 00", "nested deeper"},
		{"array too long", "a1 01 a2 01 01 02 98 81", "array longer"},
		{"map too large", "a1 04 b8 21", "map larger"},
		{"reserved additional info", "a1 03 a1 01 1c", "malformed"},
		{"break outside indefinite", "a1 03 a1 01 ff", "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := mustHexPayload(t, c.hex)
			m, err := DecodeMessage(b)
			if !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("DecodeMessage(%x) = %+v, %v; want ErrInvalidPayload", b, m, err)
			}
			if m != nil {
				t.Errorf("DecodeMessage returned a message with its error")
			}
			if !strings.Contains(err.Error(), c.reason) {
				t.Errorf("error %q does not mention %q", err, c.reason)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q echoes payload content", err)
			}
		})
	}
}

// TestPayloadLenientEncoding pins what docs/payload.md promises decoders
// accept beyond the deterministic form: firmware CBOR libraries differ in
// integer widths, float widths and key order.
func TestPayloadLenientEncoding(t *testing.T) {
	want := &Message{Readings: &ReadingBatch{Base: 1, Readings: []Reading{{Seq: 1, Time: 2, Kind: KindTemperature, Value: 21.5}}}}
	for _, c := range []struct{ name, hex string }{
		{"deterministic", "a1 01 a2 01 01 02 81 a4 01 01 02 02 03 01 04 f9 4d60"},
		{"float32", "a1 01 a2 01 01 02 81 a4 01 01 02 02 03 01 04 fa 41ac0000"},
		{"float64", "a1 01 a2 01 01 02 81 a4 01 01 02 02 03 01 04 fb 4035800000000000"},
		{"wide integers", "a1 01 a2 01 18 01 02 81 a4 19 0001 01 1a 00000002 02 1b 0000000000000003 01 04 f9 4d60"},
		{"unsorted keys", "a1 01 a2 02 81 a4 04 f9 4d60 03 01 02 02 01 01 01 01"},
		{"padded", "a1 01 a2 01 01 02 81 a4 01 01 02 02 03 01 04 f9 4d60 00 00 00"},
	} {
		got, err := DecodeMessage(mustHexPayload(t, c.hex))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, %v", c.name, got, err)
		}
	}
	// An integer where a float is expected, and absent optional keys.
	got, err := DecodeMessage(mustHexPayload(t, "a1 01 a2 01 01 02 81 a4 01 01 02 02 03 01 04 15"))
	if err != nil || got.Readings.Readings[0].Value != 21 {
		t.Errorf("integer value: got %+v, %v", got, err)
	}
	// Empty containers decode as absent.
	got, err = DecodeMessage(mustHexPayload(t, "a1 04 a2 01 01 05 a0"))
	if err != nil || got.Config.Settings != nil {
		t.Errorf("empty settings: got %+v, %v", got, err)
	}
}

func TestPayloadKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindTemperature: "temperature", KindHumidity: "humidity", KindPour: "pour", KindNumeric: "numeric", 0: "Kind(0)", 9: "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

// payloadRaceEnabled reports whether the race detector is on; it makes
// sync.Pool drop entries at random, so allocation counts mean nothing.
func payloadRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func TestPayloadAppendDoesNotAllocate(t *testing.T) {
	if payloadRaceEnabled() {
		t.Skip("sync.Pool is randomised under the race detector")
	}
	m := payloadBenchMessage()
	dst := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if dst, err = AppendMessage(dst[:0], m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendMessage into a large enough dst: %v allocations, want 0", allocs)
	}
}

// payloadBenchMessage is a typical uplink: four temperature readings.
func payloadBenchMessage() *Message {
	rs := make([]Reading, 4)
	for i := range rs {
		rs[i] = Reading{Seq: 1000 + uint64(i), Time: payloadT0 + int64(i)*60_000, Kind: KindTemperature, Value: 21.5 + 0.1*float64(i)}
	}
	return &Message{Readings: &ReadingBatch{Base: 1000, Readings: rs}}
}

func BenchmarkAppendMessage(b *testing.B) {
	m := payloadBenchMessage()
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = AppendMessage(dst[:0], m); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(dst)))
}

func BenchmarkDecodeMessage(b *testing.B) {
	enc := mustAppendPayload(b, payloadBenchMessage())
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMessage(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRawReadingsAreTheReceivedBytes(t *testing.T) {
	m := &Message{Health: &Health{Battery: 50}, Readings: &ReadingBatch{Base: 1, Readings: []Reading{
		{Seq: 1, Time: 5, Kind: KindTemperature, Value: 21.5},
		{Seq: 2, Time: 6, Kind: KindNumeric, Name: "co2", Value: 400},
	}}}
	b, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	raws, err := RawReadings(Pad(b, 64))
	if err != nil || len(raws) != 2 {
		t.Fatalf("RawReadings: %v, %d", err, len(raws))
	}
	for i, raw := range raws {
		var r Reading
		if err := payloadDecMode.Unmarshal(raw, &r); err != nil || r.Seq != m.Readings.Readings[i].Seq {
			t.Fatalf("raw reading %d does not decode to the reading: %v", i, err)
		}
		if !bytes.Contains(b, raw) {
			t.Fatalf("raw reading %d is not a slice of the message", i)
		}
	}
}
