package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// The plaintext of a transport datagram is one CBOR map (a Message) followed
// by zero or more 0x00 bytes of padding. docs/payload.md specifies the
// encoding for firmware authors; the limits below are part of it, so a value
// that passes Validate here is one every conforming device can decode.

// Limits on payload contents. They bound what a peer can make us allocate and
// keep every message small enough for one datagram.
const (
	// MaxReadingsPerBatch bounds ReadingBatch.Readings. In practice the
	// datagram size is the tighter limit; this one stops a hostile peer from
	// sending many tiny readings.
	MaxReadingsPerBatch = 128
	// MaxNameLen bounds Reading.Name in bytes.
	MaxNameLen = 32
	// MaxUnitLen bounds Reading.Unit in bytes.
	MaxUnitLen = 16
	// MaxSealedLen bounds Reading.Sealed in bytes.
	MaxSealedLen = 1024
	// MaxTiltSamples bounds Pour.Tilt.
	MaxTiltSamples = 64
	// MaxFirmwareLen bounds Health.Firmware in bytes.
	MaxFirmwareLen = 32
	// MaxSettings bounds the entries of Config.Settings and Command.Args, so
	// that a device can hold them in a fixed table.
	MaxSettings = 16
	// MaxSettingKeyLen bounds a key of Config.Settings or Command.Args in
	// bytes. Keys are never empty.
	MaxSettingKeyLen = 32
	// MaxSettingValueLen bounds a value of Config.Settings or Command.Args in
	// bytes. Values may be empty.
	MaxSettingValueLen = 64
	// MaxCommandNameLen bounds Command.Name in bytes. Names are never empty.
	MaxCommandNameLen = 32
	// MaxResultMessageLen bounds CommandResult.Message in bytes.
	MaxResultMessageLen = 128
)

// Decoder limits on the CBOR structure, checked before any value is built so
// that nesting and container sizes are bounded even for maps we would reject.
const (
	// The deepest legitimate path is Message > ReadingBatch > Readings >
	// Reading > Pour > Tilt: six levels; two spare.
	payloadMaxNesting = 8
	// The largest legitimate array is a batch of readings.
	payloadMaxArray = MaxReadingsPerBatch
	// The largest legitimate map is Config.Settings (16 entries); Reading has
	// eight keys.
	payloadMaxMapPairs = 2 * MaxSettings
	// AppendMessage keeps its scratch buffer for reuse only up to this size,
	// so one huge message does not pin memory forever.
	payloadMaxPooledBuf = 4096
)

// ErrInvalidPayload is wrapped by every error from DecodeMessage, Validate
// and AppendMessage's validation. The text after it names the rule that
// failed and where (a field path with indices), never the payload's bytes or
// values, so it is safe to log and to count.
var ErrInvalidPayload = errors.New("wire: invalid payload")

// Message is the plaintext of one transport datagram: one CBOR map,
// optionally followed by zero bytes (padding to a size bucket). Several parts
// may travel together (readings and health, an ack and a command), which
// saves datagrams on links where each one costs battery or airtime. At least
// one part is present.
type Message struct {
	Readings      *ReadingBatch  `cbor:"1,keyasint,omitempty"`
	Health        *Health        `cbor:"2,keyasint,omitempty"`
	Ack           *Ack           `cbor:"3,keyasint,omitempty"`
	Config        *Config        `cbor:"4,keyasint,omitempty"`
	Command       *Command       `cbor:"5,keyasint,omitempty"`
	CommandResult *CommandResult `cbor:"6,keyasint,omitempty"`
	// Rotate (device → server) announces the device's next key pair,
	// authenticated by the session of its current one (key 7 is reserved
	// for the sealed-reading epoch part, protocol.md §19).
	Rotate *KeyRotation `cbor:"9,keyasint,omitempty"`
}

// KeyRotation carries the public key a device rolls to. The server binds it
// to the device record; the device's next handshake uses it, and the old key
// stops working once it has.
type KeyRotation struct {
	NewKey []byte `cbor:"1,keyasint"` // 32 bytes, X25519
}

// ReadingBatch carries readings from a device's outbox. Base lets the server
// tell "lost in transit" from "dropped by the device": every sequence below
// Base is either acknowledged or gone for good, so the server stops waiting
// for it. A batch may be empty, to announce Base alone.
type ReadingBatch struct {
	// Base is the lowest sequence the device still holds.
	Base uint64 `cbor:"1,keyasint"`
	// Readings are in strictly increasing sequence order, each ≥ Base.
	Readings []Reading `cbor:"2,keyasint"`
}

// Kind says what a reading measures and so which fields it uses. Kinds are
// few and fixed so that dashboards and alerts can rely on units; anything
// else is KindNumeric with a name.
type Kind uint8

// Reading kinds. Zero is deliberately not a kind, so a missing field is
// caught.
const (
	KindTemperature Kind = 1 // Value in degrees Celsius
	KindHumidity    Kind = 2 // Value in percent relative humidity
	KindPour        Kind = 3 // Pour set; Value unused
	KindNumeric     Kind = 4 // generic named value: Name set, Unit optional
)

// String returns the kind's lower-case name, or Kind(n) for unknown kinds.
func (k Kind) String() string {
	switch k {
	case KindTemperature:
		return "temperature"
	case KindHumidity:
		return "humidity"
	case KindPour:
		return "pour"
	case KindNumeric:
		return "numeric"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= KindTemperature && k <= KindNumeric }

// Reading is one measurement. Seq is assigned by the device, starting at 1
// and never reused, so that retransmissions can be deduplicated and
// acknowledged cumulatively.
type Reading struct {
	Seq uint64 `cbor:"1,keyasint"`
	// Time is the device clock in Unix milliseconds. It may be wrong; the
	// server also records when it received the reading.
	Time  int64   `cbor:"2,keyasint"`
	Kind  Kind    `cbor:"3,keyasint"`
	Value float64 `cbor:"4,keyasint,omitempty"` // finite; absent means 0
	// Name identifies the quantity of a KindNumeric reading (required there)
	// or labels the channel of any other kind ("inside", "probe2").
	Name string `cbor:"5,keyasint,omitempty"`
	Unit string `cbor:"6,keyasint,omitempty"`
	// Pour is set for KindPour and only for it.
	Pour *Pour `cbor:"7,keyasint,omitempty"`
	// Sealed is a body encrypted to the device's owner, opaque to Signet.
	Sealed []byte `cbor:"8,keyasint,omitempty"`
}

// Pour describes one pour detected by a tilt sensor.
type Pour struct {
	Start    int64  `cbor:"1,keyasint"` // Unix milliseconds, device clock
	Duration uint32 `cbor:"2,keyasint"` // milliseconds
	// Tilt is the tilt profile in centidegrees, sampled evenly over Duration,
	// for devices that leave the volume estimate to the server.
	Tilt []int16 `cbor:"3,keyasint,omitempty"`
	// Volume is in millilitres, if the device computes it; finite, ≥ 0.
	Volume float32 `cbor:"4,keyasint,omitempty"`
}

// Health is a device's periodic report on itself, for the console and for
// alerts on flat batteries and dropped readings.
type Health struct {
	Battery  uint8  `cbor:"1,keyasint"`           // percent, 0..100
	Plugged  bool   `cbor:"2,keyasint,omitempty"` // on external power
	Uptime   uint64 `cbor:"3,keyasint"`           // seconds since boot
	Firmware string `cbor:"4,keyasint,omitempty"` // version string
	// Dropped counts readings the device discarded from a full outbox since
	// it was manufactured (or its counter was last reset), so the server can
	// tell a data gap from a lost datagram.
	Dropped uint64 `cbor:"5,keyasint,omitempty"`
}

// Ack tells a device which readings it may forget.
type Ack struct {
	// Seq is cumulative: every reading with sequence ≤ Seq is durably stored.
	Seq uint64 `cbor:"1,keyasint"`
}

// Config is the server's desired configuration for a device. Version
// increases with every change, so a device can ignore stale or repeated
// copies and report which version it runs.
type Config struct {
	Version        uint64 `cbor:"1,keyasint"`
	ReportInterval uint32 `cbor:"2,keyasint,omitempty"` // seconds; 0: keep the current value
	RekeyAfter     uint32 `cbor:"3,keyasint,omitempty"` // seconds; 0: keep the current value
	// Repeat is how many copies of each reading a transmit-only device
	// sends, since nothing acknowledges them; 0: keep the current value.
	Repeat uint8 `cbor:"4,keyasint,omitempty"`
	// Settings are device-specific; at most MaxSettings entries.
	Settings map[string]string `cbor:"5,keyasint,omitempty"`
	// ServerKey is the server's current static key (32 bytes), sent during
	// a server key rollover: the device pins it for its next handshakes.
	// It arrives on a session authenticated with the key it replaces.
	ServerKey []byte `cbor:"6,keyasint,omitempty"`
}

// Command asks a device to do something once. ID is chosen by the server and
// echoed in the CommandResult.
type Command struct {
	ID   uint64            `cbor:"1,keyasint"`
	Name string            `cbor:"2,keyasint"`           // 1..MaxCommandNameLen bytes
	Args map[string]string `cbor:"3,keyasint,omitempty"` // same limits as Config.Settings
}

// CommandResult reports the outcome of the Command with the same ID.
type CommandResult struct {
	ID      uint64 `cbor:"1,keyasint"`
	OK      bool   `cbor:"2,keyasint,omitempty"`
	Message string `cbor:"3,keyasint,omitempty"` // human-readable detail
}

// payloadEncMode produces Core Deterministic CBOR (RFC 8949 §4.2.1): shortest
// integer and float forms, definite lengths, sorted keys. Determinism makes
// the test vectors byte-exact and lets two encoders be compared. A nil
// Readings slice is written as an empty array, never null, because the
// decoder rejects null.
var payloadEncMode = mustPayloadEncMode()

func mustPayloadEncMode() cbor.UserBufferEncMode {
	opts := cbor.CoreDetEncOptions()
	opts.NilContainers = cbor.NilContainerAsEmpty
	opts.TagsMd = cbor.TagsForbidden
	em, err := opts.UserBufferEncMode()
	if err != nil {
		panic("wire: payload encoding options: " + err.Error())
	}
	return em
}

// payloadDecMode accepts exactly the data model of docs/payload.md and
// nothing else: no duplicate or unknown keys, no indefinite lengths, no tags,
// no null/undefined or other simple values besides false and true, no NaN or
// infinities, valid UTF-8 only, and tight structural limits.
var payloadDecMode = mustPayloadDecMode()

func mustPayloadDecMode() cbor.DecMode {
	// Only false (20) and true (21) are used; 24..31 are not simple values
	// the registry may name (they are malformed and always rejected).
	var reject []func(*cbor.SimpleValueRegistry) error
	for sv := range 256 {
		if sv == 20 || sv == 21 || (sv >= 24 && sv <= 31) {
			continue
		}
		reject = append(reject, cbor.WithRejectedSimpleValue(cbor.SimpleValue(sv)))
	}
	simple, err := cbor.NewSimpleValueRegistryFromDefaults(reject...)
	if err != nil {
		panic("wire: payload simple values: " + err.Error())
	}
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		MaxNestedLevels:   payloadMaxNesting,
		MaxArrayElements:  payloadMaxArray,
		MaxMapPairs:       payloadMaxMapPairs,
		NaN:               cbor.NaNDecodeForbidden,
		Inf:               cbor.InfDecodeForbidden,
		SimpleValues:      simple,
	}.DecMode()
	if err != nil {
		panic("wire: payload decoding options: " + err.Error())
	}
	return dm
}

// payloadBufPool holds scratch buffers for AppendMessage: the library encodes
// into a bytes.Buffer, and reusing one makes appending to a dst with enough
// capacity allocation-free.
var payloadBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// AppendMessage validates m and appends its Core Deterministic CBOR encoding
// to dst. It allocates only when dst lacks the capacity. Padding is the
// caller's business. On error dst is returned unchanged.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return dst, err
	}
	buf := payloadBufPool.Get().(*bytes.Buffer)
	buf.Reset()
	err := payloadEncMode.MarshalToBuffer(m, buf)
	if err == nil {
		dst = append(dst, buf.Bytes()...)
	}
	if buf.Cap() <= payloadMaxPooledBuf {
		payloadBufPool.Put(buf)
	}
	if err != nil {
		// Validate admits only encodable values, so this is a bug here.
		return dst, fmt.Errorf("wire: encode payload: %w", err)
	}
	return dst, nil
}

// DecodeMessage parses a transport plaintext: one CBOR map in the strict
// profile of docs/payload.md, then nothing but zero bytes. The result has
// passed Validate, and its empty slices and maps are nil, so that it equals
// what decoding its own re-encoding gives. Every error wraps
// ErrInvalidPayload.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) == 0 {
		return nil, invalidPayload("empty")
	}
	m := new(Message)
	rest, err := payloadDecMode.UnmarshalFirst(b, m)
	if err != nil {
		return nil, decodeFailure(err)
	}
	for _, c := range rest {
		if c != 0 {
			return nil, invalidPayload("non-zero byte after the message")
		}
	}
	m.normalize()
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// normalize replaces empty slices and maps by nil. The encoder omits empty
// optional fields, so this makes decode(encode(m)) equal to m for any
// decoded m.
func (m *Message) normalize() {
	if b := m.Readings; b != nil {
		if len(b.Readings) == 0 {
			b.Readings = nil
		}
		for i := range b.Readings {
			r := &b.Readings[i]
			if len(r.Sealed) == 0 {
				r.Sealed = nil
			}
			if r.Pour != nil && len(r.Pour.Tilt) == 0 {
				r.Pour.Tilt = nil
			}
		}
	}
	if c := m.Config; c != nil && len(c.Settings) == 0 {
		c.Settings = nil
	}
	if c := m.Command; c != nil && len(c.Args) == 0 {
		c.Args = nil
	}
}

// Validate checks every rule of docs/payload.md that the CBOR structure
// cannot express: at least one part, lengths, sequence order, kinds and the
// fields they require, finite numbers, valid UTF-8. AppendMessage calls it so
// that nothing we send is something we would refuse to receive.
func (m *Message) Validate() error {
	if m == nil {
		return invalidPayload("nil message")
	}
	if m.Readings == nil && m.Health == nil && m.Ack == nil && m.Config == nil &&
		m.Command == nil && m.CommandResult == nil && m.Rotate == nil {
		return invalidPayload("no part present")
	}
	if m.Readings != nil {
		if err := m.Readings.validate(); err != nil {
			return err
		}
	}
	if h := m.Health; h != nil {
		if h.Battery > 100 {
			return invalidPayload("health.battery: over 100 percent")
		}
		if err := checkText("health.firmware", h.Firmware, 0, MaxFirmwareLen); err != nil {
			return err
		}
	}
	if c := m.Config; c != nil {
		if err := checkStringMap("config.settings", c.Settings); err != nil {
			return err
		}
		if c.ServerKey != nil && (len(c.ServerKey) != KeySize || PublicKey(c.ServerKey) == (PublicKey{})) {
			return invalidPayload("config.serverKey: not a 32-byte key")
		}
	}
	if c := m.Command; c != nil {
		if err := checkText("command.name", c.Name, 1, MaxCommandNameLen); err != nil {
			return err
		}
		if err := checkStringMap("command.args", c.Args); err != nil {
			return err
		}
	}
	if r := m.CommandResult; r != nil {
		if err := checkText("commandResult.message", r.Message, 0, MaxResultMessageLen); err != nil {
			return err
		}
	}
	if r := m.Rotate; r != nil {
		if len(r.NewKey) != KeySize || PublicKey(r.NewKey) == (PublicKey{}) {
			return invalidPayload("rotate.newKey: not a 32-byte key")
		}
	}
	return nil
}

func (b *ReadingBatch) validate() error {
	if len(b.Readings) > MaxReadingsPerBatch {
		return invalidPayload(fmt.Sprintf("readings: more than %d", MaxReadingsPerBatch))
	}
	prev := uint64(0)
	for i := range b.Readings {
		r := &b.Readings[i]
		switch {
		case r.Seq == 0:
			return invalidReading(i, ".seq", "zero")
		case r.Seq < b.Base:
			return invalidReading(i, ".seq", "below base")
		case i > 0 && r.Seq <= prev:
			return invalidReading(i, ".seq", "not increasing")
		}
		prev = r.Seq
		if err := r.validate(i); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reading) validate(i int) error {
	if !r.Kind.valid() {
		return invalidReading(i, ".kind", "unknown")
	}
	if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
		return invalidReading(i, ".value", "not finite")
	}
	minName := 0
	if r.Kind == KindNumeric {
		minName = 1
	}
	if bad := textProblem(r.Name, minName, MaxNameLen); bad != "" {
		return invalidReading(i, ".name", bad)
	}
	if bad := textProblem(r.Unit, 0, MaxUnitLen); bad != "" {
		return invalidReading(i, ".unit", bad)
	}
	if len(r.Sealed) > MaxSealedLen {
		return invalidReading(i, ".sealed", fmt.Sprintf("longer than %d bytes", MaxSealedLen))
	}
	switch {
	case r.Kind == KindPour && r.Pour == nil:
		return invalidReading(i, ".pour", "missing for kind pour")
	case r.Kind != KindPour && r.Pour != nil:
		return invalidReading(i, ".pour", "set for a kind other than pour")
	case r.Pour == nil:
		return nil
	}
	p := r.Pour
	if len(p.Tilt) > MaxTiltSamples {
		return invalidReading(i, ".pour.tilt", fmt.Sprintf("more than %d samples", MaxTiltSamples))
	}
	v := float64(p.Volume)
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return invalidReading(i, ".pour.volume", "not finite and non-negative")
	}
	return nil
}

// checkText checks a string field's UTF-8 and its length in bytes, which is
// what a device's fixed buffers care about.
func checkText(field, s string, minLen, maxLen int) error {
	if bad := textProblem(s, minLen, maxLen); bad != "" {
		return invalidPayload(field + ": " + bad)
	}
	return nil
}

// textProblem is checkText without the error, for callers that build the
// field path only on failure (Validate must not allocate on success).
func textProblem(s string, minLen, maxLen int) string {
	switch {
	case len(s) < minLen:
		return "empty"
	case len(s) > maxLen:
		return fmt.Sprintf("longer than %d bytes", maxLen)
	case !utf8.ValidString(s):
		return "invalid UTF-8"
	}
	return ""
}

func checkStringMap(field string, kv map[string]string) error {
	if len(kv) > MaxSettings {
		return invalidPayload(fmt.Sprintf("%s: more than %d entries", field, MaxSettings))
	}
	for k, v := range kv {
		// Name the field, not the key: the key is payload content.
		if err := checkText(field+" key", k, 1, MaxSettingKeyLen); err != nil {
			return err
		}
		if err := checkText(field+" value", v, 0, MaxSettingValueLen); err != nil {
			return err
		}
	}
	return nil
}

// payloadError is an ErrInvalidPayload with a reason. The decoder's own error,
// if any, stays reachable through errors.As for tests and debugging, but its
// text is not part of Error(): the library's messages may quote map keys and
// numbers from the payload.
type payloadError struct {
	reason string
	cause  error
}

func (e *payloadError) Error() string { return ErrInvalidPayload.Error() + ": " + e.reason }

func (e *payloadError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrInvalidPayload}
	}
	return []error{ErrInvalidPayload, e.cause}
}

func invalidPayload(reason string) error { return &payloadError{reason: reason} }

// invalidReading names field (".seq", ".pour.tilt") of the i-th reading.
func invalidReading(i int, field, reason string) error {
	return &payloadError{reason: fmt.Sprintf("readings[%d]%s: %s", i, field, reason)}
}

// decodeFailure turns a CBOR library error into a payloadError whose text is
// chosen here and names no payload content.
func decodeFailure(err error) error {
	var (
		dup   *cbor.DupMapKeyError
		unk   *cbor.UnknownFieldError
		typ   *cbor.UnmarshalTypeError
		indef *cbor.IndefiniteLengthError
		tag   *cbor.TagsMdError
		nest  *cbor.MaxNestedLevelError
		arr   *cbor.MaxArrayElementsError
		pairs *cbor.MaxMapPairsError
		unacc *cbor.UnacceptableDataItemError
		sem   *cbor.SemanticError
	)
	reason := "malformed CBOR"
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		reason = "truncated CBOR"
	case errors.As(err, &dup):
		reason = "duplicate map key"
	case errors.As(err, &unk):
		reason = "unknown map key"
	case errors.As(err, &typ):
		// CBORType and GoType are type names, never values.
		cborType := typ.CBORType
		if cborType == "primitives" { // the library's name for major type 7
			cborType = "float or simple value"
		}
		reason = "CBOR " + cborType + " does not fit " + typ.GoType
	case errors.As(err, &indef):
		reason = "indefinite-length item"
	case errors.As(err, &tag):
		reason = "CBOR tag"
	case errors.As(err, &nest):
		reason = fmt.Sprintf("nested deeper than %d levels", payloadMaxNesting)
	case errors.As(err, &arr):
		reason = fmt.Sprintf("array longer than %d", payloadMaxArray)
	case errors.As(err, &pairs):
		reason = fmt.Sprintf("map larger than %d pairs", payloadMaxMapPairs)
	case errors.As(err, &unacc):
		reason = "NaN, infinity or simple value other than false/true"
	case errors.As(err, &sem):
		reason = "invalid UTF-8 in text string"
	}
	return &payloadError{reason: reason, cause: err}
}
