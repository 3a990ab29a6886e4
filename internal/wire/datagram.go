package wire

import (
	"encoding/binary"
	"errors"
)

// Datagram types: the first byte of every datagram. docs/protocol.md gives
// each layout byte by byte.
const (
	TypeInitiation  byte = 1 // device → server: IK message 1
	TypeResponse    byte = 2 // server → device: IK message 2
	TypeCookieReply byte = 3 // server → device: "retry with this cookie"
	TypeTransport   byte = 4 // either way: data under a two-way session
	TypeEpoch       byte = 5 // transmit-only device → server: X message opening an epoch
	TypeEpochData   byte = 6 // transmit-only device → server: data under an epoch key
)

const (
	tagSize       = 16 // ChaCha20-Poly1305 tag
	macSize       = 16 // BLAKE2s-128 mac1 / mac2 / cookie
	indexSize     = 4
	counterSize   = 8
	timestampSize = 8

	// TransportHeaderSize is type, receiver index and counter.
	TransportHeaderSize = 1 + indexSize + counterSize
	// TransportOverhead is everything a transport datagram adds to its
	// plaintext: 29 bytes (the design allows 32).
	TransportOverhead = TransportHeaderSize + tagSize

	// MaxDatagramSize bounds every datagram, received or sent: 1232 bytes,
	// so that with a 40-byte IPv6 header and an 8-byte UDP header it fits
	// the IPv6 minimum MTU of 1280 and is never fragmented.
	MaxDatagramSize = 1232
	// MaxPlaintext is the largest transport payload.
	MaxPlaintext = MaxDatagramSize - TransportOverhead
	// MaxEpochPayload is the largest first plaintext of a transmit-only
	// epoch (it shares its datagram with the handshake).
	MaxEpochPayload = MaxDatagramSize - epochMinSize
	// MaxExtension bounds the opaque extension a device may put after the
	// timestamp in its initiation (a claim token, for instance).
	MaxExtension = 256

	// msg1Fixed is the Noise message 1 without payload plaintext: e, s
	// encrypted, payload tag.
	msg1Fixed = KeySize + KeySize + tagSize + tagSize

	// msg1Prefix is the plaintext every first message starts with: the
	// timestamp and the sender's index again, so that the index in clear
	// is authenticated too.
	msg1Prefix = timestampSize + indexSize

	initiationMinSize = 1 + indexSize + msg1Fixed + msg1Prefix + 2*macSize
	initiationMaxSize = initiationMinSize + MaxExtension
	// ResponseSize is the size of a handshake response.
	ResponseSize    = 1 + indexSize + KeySize + indexSize + tagSize
	cookieNonceSize = 24
	// CookieReplySize is the size of a cookie reply.
	CookieReplySize = 1 + indexSize + cookieNonceSize + macSize + tagSize
	epochMinSize    = 1 + indexSize + msg1Fixed + msg1Prefix + macSize
)

// Header is the routing part of a datagram that anyone on the path can see:
// its type and, for every type but the first-message types, the index the
// receiver chose for the session. It never names a device.
type Header struct {
	Type     byte
	Receiver uint32 // receiver index (transport, response, cookie reply); the sender's index for TypeInitiation and TypeEpoch
	Counter  uint64 // transport types only
}

// ParseHeader reads the clear header of b and checks the size for its type.
// It is all a relay or the server's dispatcher looks at before choosing a
// session; everything behind it is authenticated later.
func ParseHeader(b []byte) (Header, bool) {
	if len(b) < 1 || len(b) > MaxDatagramSize {
		return Header{}, false
	}
	h := Header{Type: b[0]}
	switch h.Type {
	case TypeInitiation:
		if len(b) < initiationMinSize || len(b) > initiationMaxSize {
			return Header{}, false
		}
		h.Receiver = binary.LittleEndian.Uint32(b[1:])
	case TypeResponse:
		if len(b) != ResponseSize {
			return Header{}, false
		}
		h.Receiver = binary.LittleEndian.Uint32(b[1:])
	case TypeCookieReply:
		if len(b) != CookieReplySize {
			return Header{}, false
		}
		h.Receiver = binary.LittleEndian.Uint32(b[1:])
	case TypeTransport, TypeEpochData:
		if len(b) < TransportOverhead {
			return Header{}, false
		}
		h.Receiver = binary.LittleEndian.Uint32(b[1:])
		h.Counter = binary.LittleEndian.Uint64(b[1+indexSize:])
	case TypeEpoch:
		if len(b) < epochMinSize {
			return Header{}, false
		}
		h.Receiver = binary.LittleEndian.Uint32(b[1:])
	default:
		return Header{}, false
	}
	return h, true
}

// Pad appends zero bytes to b until its length is a multiple of bucket (no
// bucket: b unchanged), so that a reading's kind cannot be guessed from the
// datagram size. Payload decoders accept trailing zeros.
func Pad(b []byte, bucket int) []byte {
	if bucket <= 1 {
		return b
	}
	n := (bucket - len(b)%bucket) % bucket
	if len(b)+n+TransportOverhead > MaxDatagramSize {
		n = MaxPlaintext - len(b)
		if n < 0 {
			n = 0
		}
	}
	for range n {
		b = append(b, 0)
	}
	return b
}

var errExtensionTooLong = errors.New("wire: handshake payload too long")
