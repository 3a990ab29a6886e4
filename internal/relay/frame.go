package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/signet-io/signet/internal/wire"
)

// The relay protocol runs over one TLS 1.3 connection per relay, with
// mutual certificate authentication and the ALPN protocol name ALPN. Both
// directions carry frames:
//
//	frame:  offset  size  field
//	        0       4     n: length of what follows, uint32 big-endian, 1 ≤ n ≤ MaxFrameSize
//	        4       1     type
//	        5       n-1   body
//
// Integers are big-endian; a float32 is its IEEE 754 bits as a uint32.
//
//	type 1 uplink, relay → server: one datagram a device sent to the relay
//	        0       1     h: handle length, 1 ≤ h ≤ MaxHandleSize
//	        1       h     link handle (opaque to the server)
//	        1+h     8     receive time, int64 Unix nanoseconds, relay clock
//	        9+h     2     RSSI, int16 dBm
//	        11+h    4     SNR, float32 dB, finite
//	        15+h    d     the datagram, exactly as received, 1 ≤ d ≤ wire.MaxDatagramSize
//
//	type 2 downlink, server → relay: one datagram for a device
//	        0       1     h: handle length, 1 ≤ h ≤ MaxHandleSize
//	        1       h     link handle, as received in an uplink
//	        1+h     d     the datagram, 1 ≤ d ≤ wire.MaxDatagramSize
//
//	type 3 health, relay → server: a CBOR map (see Health), at most MaxHealthSize bytes
//
//	type 4 ack, server → relay
//	        0       8     count: uint64, the relay frames (uplink, health and
//	                      renew) the server has handled on this connection so far
//
//	type 5 renew, relay → server (signet-relay/2 only): a new certificate, please
//	        0       c     PKCS #10 certificate request, DER, 1 ≤ c ≤ pki.MaxCSRSize
//
//	type 6 certificate, server → relay: the answer to a renew or enrol frame
//	        0       1     status: 0 issued, else refused (Status…)
//	        status 0:
//	        1       …     1 to MaxChainLen certificates, leaf first, each:
//	                      uint16 length (1 ≤ l ≤ MaxCertSize) | DER
//	        otherwise:
//	        1       m     why, UTF-8, 0 ≤ m ≤ MaxMessageSize, for logs and people
//
//	type 7 enrol, relay → server (signet-enroll/1 only): the first certificate
//	        0       1     t: token length, 1 ≤ t ≤ pki.MaxTokenLen
//	        1       t     the enrolment token
//	        1+t     c     PKCS #10 certificate request, DER, 1 ≤ c ≤ pki.MaxCSRSize
//
// Frames of types 1 to 4 are at most MaxFrameSize long; the certificate
// frames (5 to 7) at most MaxControlFrameSize.
//
// The link handle is the relay's name for where a device's datagram came
// from (this relay encodes the device's UDP address and a MAC over it, so it
// sends downlinks only to addresses it heard from). The server never parses
// it: it keeps it as part of the way back to the device and returns it with
// every downlink.
//
// The ack lets a relay delete buffered uplinks only once the server has
// handled them, so a connection that dies mid-stream loses nothing: the
// relay sends again everything not acknowledged, and the device channel
// drops the copies (replay windows, handshake timestamps, reading
// sequences). An ack never decreases and never exceeds the frames sent.
//
// A frame of an unknown type, or one that fails its parser, is a protocol
// error: the receiver closes the connection. New frame types come with a new
// ALPN name, not silently.

// TLS application protocol names (ALPN). A connection that negotiated none
// of them is refused by either side.
const (
	// ALPN is this version of the relay protocol: frames 1 to 6, with
	// certificate renewal over the live connection.
	ALPN = "signet-relay/2"
	// ALPNv1 is the first version, without renewal (frames 1 to 4). The
	// server still accepts relays that speak only it.
	ALPNv1 = "signet-relay/1"
	// EnrolALPN is enrolment: a relay without a certificate connects with
	// server authentication only, sends one enrol frame and gets one
	// certificate frame back.
	EnrolALPN = "signet-enroll/1"
)

// Frame types.
const (
	FrameUplink      byte = 1
	FrameDownlink    byte = 2
	FrameHealth      byte = 3
	FrameAck         byte = 4
	FrameRenew       byte = 5
	FrameCertificate byte = 6
	FrameEnrol       byte = 7
)

// Status of a certificate frame.
const (
	StatusIssued byte = 0
	// StatusInvalid: the request (token or CSR) is malformed or asks for
	// what a relay may not have.
	StatusInvalid byte = 1
	// StatusTokenUnknown, StatusTokenUsed, StatusTokenExpired: the
	// enrolment token is not known, was used, or expired.
	StatusTokenUnknown byte = 2
	StatusTokenUsed    byte = 3
	StatusTokenExpired byte = 4
	// StatusRefused: the request is well-formed but the policy says no
	// (relay disabled or revoked, token cancelled, renewal too soon).
	StatusRefused byte = 5
	// StatusUnavailable: the server could not do it now; try later.
	StatusUnavailable byte = 6
)

// Limits of the frame format.
const (
	// MaxHandleSize bounds a link handle: room for an IPv6 address, a
	// port and a MAC.
	MaxHandleSize = 32
	// MaxHealthSize bounds the CBOR of a health report.
	MaxHealthSize = 1024
	// uplinkFixed is the uplink body without handle and datagram.
	uplinkFixed = 1 + 8 + 2 + 4
	// MaxFrameSize bounds the length field: the largest uplink (type,
	// fixed part, largest handle, largest datagram), 1280 bytes.
	MaxFrameSize = 1 + uplinkFixed + MaxHandleSize + wire.MaxDatagramSize
	// FrameHeaderSize is the length field.
	FrameHeaderSize = 4
	// MaxControlFrameSize bounds the length field of certificate frames
	// (renew, certificate, enrol).
	MaxControlFrameSize = 4096
	// MaxCertSize bounds one certificate in a certificate frame, and
	// MaxChainLen their number (leaf, issuing CA, root).
	MaxCertSize = 2048
	MaxChainLen = 4
	// MaxMessageSize bounds the reason in a refusal.
	MaxMessageSize = 512
)

// ErrFrame is wrapped by every error about a malformed frame. After it the
// stream cannot be trusted to be in sync and the connection is closed.
var ErrFrame = errors.New("relay: malformed frame")

// Uplink is a device datagram with what the relay saw of its reception.
type Uplink struct {
	Handle   []byte
	Received time.Time
	RSSI     int16   // dBm
	SNR      float32 // dB
	Datagram []byte
}

func checkHandle(h []byte) error {
	if len(h) == 0 || len(h) > MaxHandleSize {
		return fmt.Errorf("%w: handle of %d bytes", ErrFrame, len(h))
	}
	return nil
}

func checkDatagram(d []byte) error {
	if len(d) == 0 || len(d) > wire.MaxDatagramSize {
		return fmt.Errorf("%w: datagram of %d bytes", ErrFrame, len(d))
	}
	return nil
}

func beginFrame(dst []byte, typ byte, bodyLen int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+bodyLen))
	return append(dst, typ)
}

// AppendUplink appends the uplink frame for u, length prefix included.
func AppendUplink(dst []byte, u *Uplink) ([]byte, error) {
	if err := checkHandle(u.Handle); err != nil {
		return dst, err
	}
	if err := checkDatagram(u.Datagram); err != nil {
		return dst, err
	}
	if math.IsNaN(float64(u.SNR)) || math.IsInf(float64(u.SNR), 0) {
		return dst, fmt.Errorf("%w: SNR not finite", ErrFrame)
	}
	dst = beginFrame(dst, FrameUplink, uplinkFixed+len(u.Handle)+len(u.Datagram))
	dst = append(dst, byte(len(u.Handle)))
	dst = append(dst, u.Handle...)
	var ns int64
	if !u.Received.IsZero() {
		ns = u.Received.UnixNano()
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(ns))
	dst = binary.BigEndian.AppendUint16(dst, uint16(u.RSSI))
	dst = binary.BigEndian.AppendUint32(dst, math.Float32bits(u.SNR))
	return append(dst, u.Datagram...), nil
}

// ParseUplink decodes the body of an uplink frame (after the type byte).
// Handle and Datagram alias body.
func ParseUplink(body []byte) (Uplink, error) {
	if len(body) < 1 {
		return Uplink{}, fmt.Errorf("%w: empty uplink", ErrFrame)
	}
	h := int(body[0])
	if h == 0 || h > MaxHandleSize || len(body) < uplinkFixed+h {
		return Uplink{}, fmt.Errorf("%w: uplink handle", ErrFrame)
	}
	u := Uplink{Handle: body[1 : 1+h : 1+h]}
	rest := body[1+h:]
	if ns := int64(binary.BigEndian.Uint64(rest)); ns != 0 {
		u.Received = time.Unix(0, ns)
	}
	u.RSSI = int16(binary.BigEndian.Uint16(rest[8:]))
	u.SNR = math.Float32frombits(binary.BigEndian.Uint32(rest[10:]))
	if math.IsNaN(float64(u.SNR)) || math.IsInf(float64(u.SNR), 0) {
		return Uplink{}, fmt.Errorf("%w: SNR not finite", ErrFrame)
	}
	u.Datagram = rest[14:]
	if err := checkDatagram(u.Datagram); err != nil {
		return Uplink{}, err
	}
	return u, nil
}

// Downlink is a datagram for the device behind a link handle.
type Downlink struct {
	Handle   []byte
	Datagram []byte
}

// AppendDownlink appends the downlink frame for d, length prefix included.
func AppendDownlink(dst []byte, d *Downlink) ([]byte, error) {
	if err := checkHandle(d.Handle); err != nil {
		return dst, err
	}
	if err := checkDatagram(d.Datagram); err != nil {
		return dst, err
	}
	dst = beginFrame(dst, FrameDownlink, 1+len(d.Handle)+len(d.Datagram))
	dst = append(dst, byte(len(d.Handle)))
	dst = append(dst, d.Handle...)
	return append(dst, d.Datagram...), nil
}

// ParseDownlink decodes the body of a downlink frame. Handle and Datagram
// alias body.
func ParseDownlink(body []byte) (Downlink, error) {
	if len(body) < 1 {
		return Downlink{}, fmt.Errorf("%w: empty downlink", ErrFrame)
	}
	h := int(body[0])
	if h == 0 || h > MaxHandleSize || len(body) < 1+h {
		return Downlink{}, fmt.Errorf("%w: downlink handle", ErrFrame)
	}
	d := Downlink{Handle: body[1 : 1+h : 1+h], Datagram: body[1+h:]}
	if err := checkDatagram(d.Datagram); err != nil {
		return Downlink{}, err
	}
	return d, nil
}

// AppendAck appends an ack frame for count handled frames.
func AppendAck(dst []byte, count uint64) []byte {
	dst = beginFrame(dst, FrameAck, 8)
	return binary.BigEndian.AppendUint64(dst, count)
}

// ParseAck decodes the body of an ack frame.
func ParseAck(body []byte) (uint64, error) {
	if len(body) != 8 {
		return 0, fmt.Errorf("%w: ack of %d bytes", ErrFrame, len(body))
	}
	return binary.BigEndian.Uint64(body), nil
}

// AppendHealth appends a health frame for h.
func AppendHealth(dst []byte, h *Health) ([]byte, error) {
	b, err := encodeHealth(h)
	if err != nil {
		return dst, err
	}
	dst = beginFrame(dst, FrameHealth, len(b))
	return append(dst, b...), nil
}

// FrameReader reads frames from a stream into one buffer of
// MaxControlFrameSize bytes, so a peer can make it allocate nothing and read
// no more than that for a frame (and no more than MaxFrameSize for any but
// the certificate frames).
type FrameReader struct {
	r   io.Reader
	buf [MaxControlFrameSize]byte
}

// NewFrameReader reads frames from r, which should be buffered.
func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r} }

// Next returns the next frame's type and body; the body is valid until the
// following call. At a clean end of stream it returns io.EOF; a length out
// of range wraps ErrFrame; a stream cut inside a frame is
// io.ErrUnexpectedEOF.
func (f *FrameReader) Next() (typ byte, body []byte, err error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxControlFrameSize {
		return 0, nil, fmt.Errorf("%w: frame length %d", ErrFrame, n)
	}
	// The type first, so that only certificate frames may be longer than
	// MaxFrameSize.
	if _, err := io.ReadFull(f.r, f.buf[:1]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	if typ := f.buf[0]; n > MaxFrameSize && typ != FrameRenew && typ != FrameCertificate && typ != FrameEnrol {
		return 0, nil, fmt.Errorf("%w: frame length %d for type %d", ErrFrame, n, typ)
	}
	if _, err := io.ReadFull(f.r, f.buf[1:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return f.buf[0], f.buf[1:n:n], nil
}
