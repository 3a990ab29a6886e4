package wire

import (
	"crypto/subtle"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// x25519 computes the RFC 7748 X25519 function into dst and reports whether
// the result is usable (not all zero, which a low-order peer point yields).
//
// It is the Montgomery ladder of the standard library's crypto/ecdh, on the
// same field arithmetic (filippo.io/edwards25519/field is that code, exported).
// We carry our own copy because crypto/ecdh.NewPrivateKey derives the public
// key eagerly, so every DH with a fresh scalar costs two ladders instead of
// one; the responder does three DHs per handshake and that doubling would
// halve its handshake rate. Tests cross-check it against crypto/ecdh.
func x25519(dst *[32]byte, scalar, point *[32]byte) bool {
	var e [32]byte
	copy(e[:], scalar[:])
	e[0] &= 248
	e[31] &= 127
	e[31] |= 64

	var x1, x2, z2, x3, z3, tmp0, tmp1 field.Element
	if _, err := x1.SetBytes(point[:]); err != nil {
		return false // unreachable: the length is fixed
	}
	x2.One()
	x3.Set(&x1)
	z3.One()

	swap := 0
	for pos := 254; pos >= 0; pos-- {
		b := int(e[pos/8]>>uint(pos&7)) & 1
		swap ^= b
		x2.Swap(&x3, swap)
		z2.Swap(&z3, swap)
		swap = b

		tmp0.Subtract(&x3, &z3)
		tmp1.Subtract(&x2, &z2)
		x2.Add(&x2, &z2)
		z2.Add(&x3, &z3)
		z3.Multiply(&tmp0, &x2)
		z2.Multiply(&z2, &tmp1)
		tmp0.Square(&tmp1)
		tmp1.Square(&x2)
		x3.Add(&z3, &z2)
		z2.Subtract(&z3, &z2)
		x2.Multiply(&tmp1, &tmp0)
		tmp1.Subtract(&tmp1, &tmp0)
		z2.Square(&z2)
		z3.Mult32(&tmp1, 121666)
		x3.Square(&x3)
		tmp0.Add(&tmp0, &z3)
		z3.Multiply(&x1, &z2)
		z2.Multiply(&tmp1, &tmp0)
	}
	x2.Swap(&x3, swap)
	z2.Swap(&z3, swap)

	z2.Invert(&z2)
	x2.Multiply(&x2, &z2)
	copy(dst[:], x2.Bytes())
	clear(e[:])

	var zero [32]byte
	return subtle.ConstantTimeCompare(dst[:], zero[:]) == 0
}

// x25519Base computes the public key of a private scalar. It uses the
// precomputed fixed-base tables of edwards25519 and maps the result to the
// Montgomery u coordinate, which is about twice as fast as a ladder on the
// base point; ephemeral keys are generated on every handshake.
func x25519Base(dst *[32]byte, scalar *[32]byte) {
	s, err := edwards25519.NewScalar().SetBytesWithClamping(scalar[:])
	if err != nil {
		panic("wire: clamped scalar rejected: " + err.Error()) // unreachable: length is fixed
	}
	p := new(edwards25519.Point).ScalarBaseMult(s)
	copy(dst[:], p.BytesMontgomery())
}
