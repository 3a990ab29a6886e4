package relay

import (
	"fmt"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Health is what a relay reports about itself: on connect and every
// Config.HealthEvery. It lets operators see a relay that is losing data
// (buffer drops), cut off (buffer fill rising) or on a weak uplink, without
// the relay learning anything about the devices behind it.
//
// Encoded as a CBOR map with small integer keys (the numbers in the tags).
// A server ignores keys it does not know, so a newer relay can report more
// to an older server; every other rule (no duplicate keys, no tags, no
// indefinite lengths, valid UTF-8, the limits below) is strict.
type Health struct {
	// Uptime is seconds since the relay process started.
	Uptime uint64 `cbor:"1,keyasint"`
	// BufferFill is the uplinks waiting in the on-disk buffer, not yet
	// acknowledged by the server.
	BufferFill uint64 `cbor:"2,keyasint"`
	// BufferMax is the buffer's capacity in uplinks.
	BufferMax uint64 `cbor:"3,keyasint"`
	// BufferDrops is the total of uplinks dropped, oldest first, because
	// the buffer was full. It survives restarts.
	BufferDrops uint64 `cbor:"4,keyasint"`
	// UplinkType names the relay's own network ("ethernet", "wifi",
	// "cellular"); empty when unknown.
	UplinkType string `cbor:"5,keyasint,omitempty"`
	// UplinkSignal is the signal of that network in dBm; 0 when unknown
	// or wired.
	UplinkSignal int16 `cbor:"6,keyasint,omitempty"`
	// Version is the relay software version.
	Version string `cbor:"7,keyasint,omitempty"`
	// Received counts device datagrams received since start.
	Received uint64 `cbor:"8,keyasint,omitempty"`
	// Malformed counts device datagrams dropped since start because they
	// were too large or failed the header check.
	Malformed uint64 `cbor:"9,keyasint,omitempty"`
	// DownlinkDrops counts downlinks from the server not sent on since
	// start (unknown handle, malformed datagram, socket error).
	DownlinkDrops uint64 `cbor:"10,keyasint,omitempty"`
}

// Limits on Health strings.
const (
	MaxUplinkTypeLen = 32
	MaxVersionLen    = 64
)

// The CBOR modes are built once; the options are constants, so failing to
// build them is a programming error.
var (
	healthEnc = must(func() (cbor.EncMode, error) {
		eo := cbor.CoreDetEncOptions()
		eo.TagsMd = cbor.TagsForbidden
		return eo.EncMode()
	}())
	healthDec = must(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		MaxNestedLevels:   4,
		MaxArrayElements:  32,
		MaxMapPairs:       32,
		NaN:               cbor.NaNDecodeForbidden,
		Inf:               cbor.InfDecodeForbidden,
	}.DecMode())
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func (h *Health) validate() error {
	switch {
	case len(h.UplinkType) > MaxUplinkTypeLen:
		return fmt.Errorf("%w: health uplink type longer than %d bytes", ErrFrame, MaxUplinkTypeLen)
	case len(h.Version) > MaxVersionLen:
		return fmt.Errorf("%w: health version longer than %d bytes", ErrFrame, MaxVersionLen)
	case !utf8.ValidString(h.UplinkType) || !utf8.ValidString(h.Version):
		return fmt.Errorf("%w: health strings not UTF-8", ErrFrame)
	}
	return nil
}

func encodeHealth(h *Health) ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	b, err := healthEnc.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("relay: encode health: %w", err)
	}
	if len(b) > MaxHealthSize {
		return nil, fmt.Errorf("%w: health of %d bytes", ErrFrame, len(b))
	}
	return b, nil
}

// ParseHealth decodes the body of a health frame.
func ParseHealth(body []byte) (Health, error) {
	if len(body) == 0 || len(body) > MaxHealthSize {
		return Health{}, fmt.Errorf("%w: health of %d bytes", ErrFrame, len(body))
	}
	var h Health
	if err := healthDec.Unmarshal(body, &h); err != nil {
		// The decoder's message may quote the input; say only where.
		return Health{}, fmt.Errorf("%w: health is not valid CBOR for its schema", ErrFrame)
	}
	if err := h.validate(); err != nil {
		return Health{}, err
	}
	return h, nil
}
