package wire

import (
	"bytes"
	"crypto/hmac"
	"testing"

	"github.com/flynn/noise"
)

var flynnSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

func fixedKey(b byte) PrivateKey {
	var k PrivateKey
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func dhKey(k PrivateKey) noise.DHKey {
	pub := k.Public()
	return noise.DHKey{Private: bytes.Clone(k[:]), Public: bytes.Clone(pub[:])}
}

// TestIKMatchesFlynnNoise checks that our IK handshake produces exactly the
// bytes and transport keys of github.com/flynn/noise for the same keys,
// ephemerals, prologue and payloads, in both directions.
func TestIKMatchesFlynnNoise(t *testing.T) {
	devKey, srvKey := fixedKey(1), fixedKey(40)
	devEph, srvEph := fixedKey(80), fixedKey(120)
	srvPub := srvKey.Public()
	payload := []byte("\x00\x00\x00\x00\x00\x00\x00\x2a\x07\x00\x00\x00extension")

	fi, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: flynnSuite, Pattern: noise.HandshakeIK, Initiator: true,
		Prologue: []byte(Prologue), StaticKeypair: dhKey(devKey), Random: bytes.NewReader(devEph[:]),
		PeerStatic: srvPub[:],
	})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: flynnSuite, Pattern: noise.HandshakeIK, Initiator: false,
		Prologue: []byte(Prologue), StaticKeypair: dhKey(srvKey), Random: bytes.NewReader(srvEph[:]),
	})
	if err != nil {
		t.Fatal(err)
	}
	flynnMsg1, _, _, err := fi.WriteMessage(nil, payload)
	if err != nil {
		t.Fatal(err)
	}

	in, err := NewInitiator(devKey, srvPub)
	if err != nil {
		t.Fatal(err)
	}
	dg, ph, err := in.AppendInitiation(nil, InitiationParams{SenderIndex: 7, Ephemeral: devEph, Timestamp: 42, Extension: []byte("extension")})
	if err != nil {
		t.Fatal(err)
	}
	ours := dg[1+indexSize : len(dg)-2*macSize]
	if !bytes.Equal(ours, flynnMsg1) {
		t.Fatalf("message 1 differs from flynn/noise:\nours  %x\nflynn %x", ours, flynnMsg1)
	}

	// The flynn responder reads our message; our responder answers; flynn
	// initiator must accept our answer and derive the same keys.
	if _, _, _, err := fr.ReadMessage(nil, ours); err != nil {
		t.Fatalf("flynn responder rejects our message 1: %v", err)
	}
	// Split yields (initiator→responder, responder→initiator) on both sides.
	flynnMsg2, frI2R, frR2I, err := fr.WriteMessage(nil, []byte{9, 0, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	r := NewResponder(srvKey)
	ini, err := r.ConsumeInitiation(dg, staticLookup(t, r, devKey.Public()))
	if err != nil {
		t.Fatal(err)
	}
	if ini.Timestamp != 42 || string(ini.Extension) != "extension" || ini.Static != devKey.Public() {
		t.Fatalf("initiation payload not recovered: %+v", ini)
	}
	resp, srvKeys, err := r.AppendResponse(nil, ini, 9, srvEph)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp[1+indexSize:], flynnMsg2) {
		t.Fatalf("message 2 differs from flynn/noise:\nours  %x\nflynn %x", resp[1+indexSize:], flynnMsg2)
	}
	_, fiSend, fiRecv, err := fi.ReadMessage(nil, flynnMsg2)
	if err != nil {
		t.Fatal(err)
	}
	devKeys, remote, err := in.ConsumeResponse(ph, resp)
	if err != nil || remote != 9 {
		t.Fatalf("ConsumeResponse: %v, remote %d", err, remote)
	}
	if devKeys.Send != fiSend.UnsafeKey() || devKeys.Recv != fiRecv.UnsafeKey() {
		t.Fatal("initiator transport keys differ from flynn/noise")
	}
	if srvKeys.Recv != fiSend.UnsafeKey() || srvKeys.Send != fiRecv.UnsafeKey() ||
		frI2R.UnsafeKey() != srvKeys.Recv || frR2I.UnsafeKey() != srvKeys.Send {
		t.Fatal("responder transport keys differ from flynn/noise")
	}
}

// TestXMatchesFlynnNoise does the same for the one-way X pattern of
// transmit-only devices.
func TestXMatchesFlynnNoise(t *testing.T) {
	devKey, srvKey, devEph := fixedKey(3), fixedKey(50), fixedKey(90)
	srvPub := srvKey.Public()
	payload := []byte("\x00\x00\x00\x00\x00\x00\x00\x05\x03\x00\x00\x00readings")
	fi, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: flynnSuite, Pattern: noise.HandshakeX, Initiator: true,
		Prologue: []byte(Prologue), StaticKeypair: dhKey(devKey), Random: bytes.NewReader(devEph[:]),
		PeerStatic: srvPub[:],
	})
	if err != nil {
		t.Fatal(err)
	}
	flynnMsg, fcs, _, err := fi.WriteMessage(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := NewInitiator(devKey, srvPub)
	dg, key, err := in.AppendEpoch(nil, EpochParams{Index: 3, Ephemeral: devEph, Timestamp: 5, Payload: []byte("readings")})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dg[1+indexSize:len(dg)-macSize], flynnMsg) {
		t.Fatal("X message differs from flynn/noise")
	}
	if key != fcs.UnsafeKey() {
		t.Fatal("X transport key differs from flynn/noise")
	}
	r := NewResponder(srvKey)
	ep, err := r.ConsumeEpoch(dg, staticLookup(t, r, devKey.Public()))
	if err != nil {
		t.Fatal(err)
	}
	if ep.Key != key || ep.Timestamp != 5 || string(ep.Payload) != "readings" || ep.Index != 3 {
		t.Fatalf("epoch not recovered: %+v", ep)
	}
}

// staticLookup returns a lookup that knows exactly one device.
func staticLookup(t testing.TB, r *Responder, dev PublicKey) func(PublicKey) (*[32]byte, bool) {
	ss, err := r.StaticSecret(dev)
	if err != nil {
		t.Fatal(err)
	}
	return func(p PublicKey) (*[32]byte, bool) {
		if p != dev {
			return nil, false
		}
		return &ss, true
	}
}

// TestHMACMatchesStdlib holds the stack-buffer HMAC-BLAKE2s and mixHash to
// crypto/hmac and a plain BLAKE2s state, on both sides of the length where
// they switch to a heap-allocated state.
func TestHMACMatchesStdlib(t *testing.T) {
	var key [32]byte
	data := make([]byte, 2*hashScratch+3)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	for n := 0; n <= len(data); n++ {
		key[n%32] ^= byte(n)
		split := n / 3
		m := hmac.New(newBlake2s, key[:])
		m.Write(data[:n])
		if got := hmacBLAKE2s(&key, data[:split], data[split:n]); !bytes.Equal(got[:], m.Sum(nil)) {
			t.Fatalf("HMAC of %d bytes differs from crypto/hmac", n)
		}
		s := symmetric{h: key}
		s.mixHash(data[:n])
		d := newBlake2s()
		d.Write(key[:])
		d.Write(data[:n])
		if !bytes.Equal(s.h[:], d.Sum(nil)) {
			t.Fatalf("mixHash of %d bytes differs from BLAKE2s", n)
		}
	}
}
