package wire

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// Initiator is a device's side of the handshake, prepared once for its
// static key and the server key pinned at provisioning. Everything that does
// not change between handshakes (the static-static secret, the hash state
// after the pre-messages, the MAC keys) is computed here once.
type Initiator struct {
	static    PrivateKey
	staticPub PublicKey
	server    PublicKey
	ss        [32]byte
	ik, x     symmetric
	mac1Key   [32]byte
	cookieKey [32]byte
}

// NewInitiator prepares the handshakes of a device with key static towards
// the server key server. It fails for a server key that is not a usable
// X25519 point.
func NewInitiator(static PrivateKey, server PublicKey) (*Initiator, error) {
	in := &Initiator{static: static, staticPub: static.Public(), server: server}
	ss, err := dh(&in.static, &in.server)
	if err != nil {
		return nil, err
	}
	in.ss = ss
	in.ik = initSymmetric(protocolIK, &server)
	in.x = initSymmetric(protocolX, &server)
	in.mac1Key = labelKey(labelMAC1, &server)
	in.cookieKey = labelKey(labelCookie, &server)
	return in, nil
}

// PublicKey returns the device's public key, its identity on the server.
func (in *Initiator) PublicKey() PublicKey { return in.staticPub }

// Zero overwrites the secrets the initiator holds.
func (in *Initiator) Zero() {
	in.static.Zero()
	clear(in.ss[:])
	in.ik.zero()
	in.x.zero()
}

// InitiationParams are the per-handshake inputs of an initiation.
type InitiationParams struct {
	// SenderIndex is the random index the device picks for the new
	// session; the server puts it in every datagram it sends on it.
	SenderIndex uint32
	// Ephemeral is the handshake's ephemeral key; zero means a fresh one
	// from crypto/rand (fixed ones are for test vectors only).
	Ephemeral PrivateKey
	// Timestamp must be larger than in any earlier initiation of this
	// device; the server refuses the rest as replays.
	Timestamp uint64
	// Extension is opaque data for the server (at most MaxExtension
	// bytes), encrypted and authenticated with the handshake.
	Extension []byte
	// Cookie, if valid, is echoed as mac2 so a loaded server proceeds.
	Cookie *Cookie
	// Now is the time used to judge the cookie.
	Now time.Time
}

// PendingHandshake is an initiation waiting for its response.
type PendingHandshake struct {
	SenderIndex uint32
	sym         symmetric
	e           PrivateKey
	mac1        [macSize]byte
}

// Zero overwrites the handshake secrets of an abandoned handshake.
func (p *PendingHandshake) Zero() {
	p.sym.zero()
	p.e.Zero()
}

func ephemeral(k PrivateKey) (PrivateKey, error) {
	if k != (PrivateKey{}) {
		return k, nil
	}
	return GenerateKey(rand.Reader)
}

// AppendInitiation appends a handshake initiation datagram to dst.
func (in *Initiator) AppendInitiation(dst []byte, p InitiationParams) ([]byte, *PendingHandshake, error) {
	if len(p.Extension) > MaxExtension {
		return nil, nil, errExtensionTooLong
	}
	e, err := ephemeral(p.Ephemeral)
	if err != nil {
		return nil, nil, err
	}
	ph := &PendingHandshake{SenderIndex: p.SenderIndex, sym: in.ik, e: e}
	start := len(dst)
	dst = append(dst, TypeInitiation, 0, 0, 0, 0)
	putIndex(dst[start+1:], p.SenderIndex)
	payload := appendPrefix(make([]byte, 0, msg1Prefix+len(p.Extension)), p.Timestamp, p.SenderIndex)
	payload = append(payload, p.Extension...)
	dst, err = writeMessage1(dst, &ph.sym, &ph.e, &in.static, &in.staticPub, &in.server, &in.ss, payload)
	if err != nil {
		return nil, nil, err
	}
	ph.mac1 = mac(in.mac1Key[:], dst[start:])
	dst = append(dst, ph.mac1[:]...)
	if p.Cookie.Valid(p.Now) {
		m2 := mac(p.Cookie.Value[:], dst[start:])
		dst = append(dst, m2[:]...)
	} else {
		dst = append(dst, make([]byte, macSize)...)
	}
	return dst, ph, nil
}

// ConsumeResponse completes the handshake p with the response msg and
// returns the session keys and the server's index for the session.
func (in *Initiator) ConsumeResponse(p *PendingHandshake, msg []byte) (Keys, uint32, error) {
	h, ok := ParseHeader(msg)
	if !ok || h.Type != TypeResponse || h.Receiver != p.SenderIndex {
		return Keys{}, 0, ErrDecrypt
	}
	sym := p.sym // work on a copy: a forged response must not spoil p
	defer sym.zero()
	var re PublicKey
	copy(re[:], msg[1+indexSize:])
	sym.mixHash(re[:])
	ee, err := dh(&p.e, &re)
	if err != nil {
		return Keys{}, 0, err
	}
	sym.mixKey(ee[:])
	clear(ee[:])
	se, err := dh(&in.static, &re)
	if err != nil {
		return Keys{}, 0, err
	}
	sym.mixKey(se[:])
	clear(se[:])
	var idx [indexSize]byte
	if _, err := sym.decryptAndHash(idx[:0], msg[1+indexSize+KeySize:]); err != nil {
		return Keys{}, 0, err
	}
	remote := binary.LittleEndian.Uint32(idx[:])
	k1, k2 := sym.split()
	p.Zero()
	return Keys{Send: k1, Recv: k2}, remote, nil
}

// EpochParams are the inputs of a transmit-only epoch.
type EpochParams struct {
	// Index is the random index the device picks for the epoch; its
	// epoch-data datagrams carry it.
	Index uint32
	// Ephemeral as in InitiationParams.
	Ephemeral PrivateKey
	// Timestamp as in InitiationParams; it orders epochs too.
	Timestamp uint64
	// Payload is the first plaintext of the epoch (readings), encrypted in
	// the epoch datagram itself.
	Payload []byte
}

// AppendEpoch appends the datagram that opens a transmit-only epoch (Noise
// X: the device's first and only handshake message) and returns the key
// that encrypts the rest of the epoch.
func (in *Initiator) AppendEpoch(dst []byte, p EpochParams) ([]byte, [32]byte, error) {
	var key [32]byte
	if len(p.Payload) > MaxEpochPayload {
		return nil, key, errExtensionTooLong
	}
	e, err := ephemeral(p.Ephemeral)
	if err != nil {
		return nil, key, err
	}
	defer e.Zero()
	sym := in.x
	defer sym.zero()
	start := len(dst)
	dst = append(dst, TypeEpoch, 0, 0, 0, 0)
	putIndex(dst[start+1:], p.Index)
	payload := appendPrefix(make([]byte, 0, msg1Prefix+len(p.Payload)), p.Timestamp, p.Index)
	payload = append(payload, p.Payload...)
	dst, err = writeMessage1(dst, &sym, &e, &in.static, &in.staticPub, &in.server, &in.ss, payload)
	if err != nil {
		return nil, key, err
	}
	m1 := mac(in.mac1Key[:], dst[start:])
	dst = append(dst, m1[:]...)
	key, _ = sym.split()
	return dst, key, nil
}

// Responder is the server's side of the handshake for one static key.
type Responder struct {
	static PrivateKey
	pub    PublicKey
	ik, x  symmetric
}

// NewResponder prepares handshakes for the server key static.
func NewResponder(static PrivateKey) *Responder {
	r := &Responder{static: static, pub: static.Public()}
	r.ik = initSymmetric(protocolIK, &r.pub)
	r.x = initSymmetric(protocolX, &r.pub)
	return r
}

// PublicKey returns the server's public key, the one devices pin.
func (r *Responder) PublicKey() PublicKey { return r.pub }

// StaticSecret computes the static-static secret between the server and a
// device key. The server computes it once per registered device and keeps
// it with the device (as WireGuard does per peer), so that a handshake
// costs three Diffie-Hellman operations instead of four.
func (r *Responder) StaticSecret(device PublicKey) ([32]byte, error) {
	return dh(&r.static, &device)
}

// Initiation is a verified handshake initiation: the device is known, the
// message is authentic, and the responder can answer it.
type Initiation struct {
	SenderIndex uint32
	Static      PublicKey
	Timestamp   uint64
	Extension   []byte
	ephemeral   PublicKey
	sym         symmetric
}

// Zero wipes the handshake state of an initiation the server refuses after
// all (a replayed timestamp, a device removed meanwhile).
func (in *Initiation) Zero() { in.sym.zero() }

// ConsumeInitiation authenticates an initiation datagram (whose mac1 the
// caller has already checked). lookup maps the decrypted device key to the
// device's static secret, or reports it unknown. The returned Initiation's
// timestamp must still be checked against the device's last one.
func (r *Responder) ConsumeInitiation(msg []byte, lookup func(PublicKey) (*[32]byte, bool)) (*Initiation, error) {
	h, ok := ParseHeader(msg)
	if !ok || h.Type != TypeInitiation {
		return nil, ErrDecrypt
	}
	in := &Initiation{SenderIndex: h.Receiver, sym: r.ik}
	m, err := readMessage1(&in.sym, msg[1+indexSize:len(msg)-2*macSize], &r.static, lookup)
	if err != nil {
		in.sym.zero()
		return nil, err
	}
	ts, ok := readPrefix(m.payload, h.Receiver)
	if !ok {
		in.sym.zero()
		return nil, ErrDecrypt
	}
	in.Static = m.static
	in.ephemeral = m.ephemeral
	in.Timestamp = ts
	if len(m.payload) > msg1Prefix {
		in.Extension = m.payload[msg1Prefix:]
	}
	return in, nil
}

// AppendResponse appends the response to in and returns the session keys.
// senderIndex is the server's random index for the new session; eph as in
// InitiationParams.
func (r *Responder) AppendResponse(dst []byte, in *Initiation, senderIndex uint32, eph PrivateKey) ([]byte, Keys, error) {
	defer in.sym.zero()
	e, err := ephemeral(eph)
	if err != nil {
		return nil, Keys{}, err
	}
	defer e.Zero()
	start := len(dst)
	dst = append(dst, TypeResponse, 0, 0, 0, 0)
	putIndex(dst[start+1:], in.SenderIndex)
	var ePub PublicKey
	x25519Base((*[32]byte)(&ePub), (*[32]byte)(&e))
	dst = append(dst, ePub[:]...)
	in.sym.mixHash(ePub[:])
	ee, err := dh(&e, &in.ephemeral)
	if err != nil {
		return nil, Keys{}, err
	}
	in.sym.mixKey(ee[:])
	clear(ee[:])
	se, err := dh(&e, &in.Static)
	if err != nil {
		return nil, Keys{}, err
	}
	in.sym.mixKey(se[:])
	clear(se[:])
	var idx [indexSize]byte
	putIndex(idx[:], senderIndex)
	dst = in.sym.encryptAndHash(dst, idx[:])
	k1, k2 := in.sym.split()
	return dst, Keys{Send: k2, Recv: k1}, nil
}

// Epoch is a verified transmit-only epoch opening.
type Epoch struct {
	Index     uint32
	Static    PublicKey
	Timestamp uint64
	// Ephemeral identifies the epoch: the device repeats its opening
	// datagram, and copies carry the same ephemeral key.
	Ephemeral PublicKey
	Payload   []byte
	// Key decrypts the epoch's data datagrams.
	Key [32]byte
}

// ConsumeEpoch authenticates an epoch datagram (mac1 already checked).
func (r *Responder) ConsumeEpoch(msg []byte, lookup func(PublicKey) (*[32]byte, bool)) (*Epoch, error) {
	h, ok := ParseHeader(msg)
	if !ok || h.Type != TypeEpoch {
		return nil, ErrDecrypt
	}
	sym := r.x
	defer sym.zero()
	m, err := readMessage1(&sym, msg[1+indexSize:len(msg)-macSize], &r.static, lookup)
	if err != nil {
		return nil, err
	}
	ts, ok := readPrefix(m.payload, h.Receiver)
	if !ok {
		return nil, ErrDecrypt
	}
	ep := &Epoch{Index: h.Receiver, Static: m.static, Ephemeral: m.ephemeral, Timestamp: ts}
	ep.Payload = m.payload[msg1Prefix:]
	ep.Key, _ = sym.split()
	return ep, nil
}

func appendPrefix(dst []byte, ts uint64, index uint32) []byte {
	dst = binary.BigEndian.AppendUint64(dst, ts)
	return binary.LittleEndian.AppendUint32(dst, index)
}

// readPrefix returns the timestamp of a first message's plaintext and checks
// that the index in clear is the one the sender authenticated.
func readPrefix(payload []byte, clearIndex uint32) (uint64, bool) {
	if len(payload) < msg1Prefix || binary.LittleEndian.Uint32(payload[timestampSize:]) != clearIndex {
		return 0, false
	}
	return binary.BigEndian.Uint64(payload), true
}
