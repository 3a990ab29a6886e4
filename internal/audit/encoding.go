package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// The canonical encodings that are hashed and signed (docs/audit.md has the
// same tables). Every integer is big-endian; every string is a 4-byte length
// and that many bytes of UTF-8; times are Unix milliseconds (int64).
//
// Entry, version 1 (the entry's hash is SHA-256 of these bytes):
//
//	"signet/audit/v1 entry" 0x00   22 bytes, domain separation
//	org                           u32 length, bytes
//	seq                           u64
//	time                          i64, Unix ms
//	actor, action, target,        u32 length, bytes, each
//	source, detail
//	prev                          32 bytes: hash of entry seq-1 of the same
//	                              organisation; zero for seq 1
//
// Checkpoint statement, version 1 (Ed25519 signs these bytes; the
// checkpoint's hash, which the next checkpoint holds, is their SHA-256):
//
//	"signet/audit/v1 checkpoint" 0x00   27 bytes
//	num                           u64, checkpoint number (global)
//	prev                          32 bytes: hash of checkpoint num-1; zero
//	                              for num 1
//	org                           u32 length, bytes
//	seq                           u64
//	head                          32 bytes: hash of the org's entry seq
//	time                          i64, Unix ms
//	key id                        8 bytes: first 8 bytes of SHA-256 of the
//	                              Ed25519 public key
//
// Lengths make the encodings injective (no two different entries encode to
// the same bytes), and DecodeEntry accepts exactly what EncodeEntry makes.

const (
	entryDomain      = "signet/audit/v1 entry\x00"
	checkpointDomain = "signet/audit/v1 checkpoint\x00"
)

// Bounds of an entry's fields in bytes. An entry is a line for a human, not
// a document; the bounds keep one request from filling the log.
const (
	MaxField  = 1024 // Org, Actor, Action, Target, Source
	MaxDetail = 8192
)

// Hash is a SHA-256 hash in the chain.
type Hash [32]byte

// String is the hash in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads a hash in hex.
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, errors.New("audit: a hash is 64 hex digits")
	}
	copy(h[:], b)
	return h, nil
}

// KeyID names an audit key: the first 8 bytes of SHA-256 of its public key.
type KeyID [8]byte

func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// KeyIDOf is pub's KeyID.
func KeyIDOf(pub ed25519.PublicKey) KeyID {
	sum := sha256.Sum256(pub)
	return KeyID(sum[:8])
}

// Fingerprint is the SHA-256 of pub in hex, for operators to compare with a
// copy kept elsewhere.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// Record is an entry in its organisation's chain.
type Record struct {
	Entry
	// Seq numbers the organisation's entries 1, 2, 3, …
	Seq int64
	// Prev is the hash of entry Seq-1 (zero for 1); Hash is this one's.
	Prev, Hash Hash
}

// Checkpoint is a signed statement that organisation Org's chain had the
// entry Seq with hash Head. Checkpoints of all organisations form one chain
// of their own by number.
type Checkpoint struct {
	Num  int64
	Prev Hash
	Org  string
	Seq  int64
	Head Hash
	Time time.Time
	Key  KeyID
	Sig  []byte
}

// Statement is the signed bytes of the checkpoint.
func (c *Checkpoint) Statement() []byte {
	b := make([]byte, 0, len(checkpointDomain)+8+32+4+len(c.Org)+8+32+8+8)
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Num))
	b = append(b, c.Prev[:]...)
	b = appendString(b, c.Org)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Seq))
	b = append(b, c.Head[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Time.UnixMilli()))
	b = append(b, c.Key[:]...)
	return b
}

// Hash is the checkpoint's hash, which checkpoint Num+1 holds as Prev.
func (c *Checkpoint) Hash() Hash { return sha256.Sum256(c.Statement()) }

// Verify reports whether pub signed the checkpoint.
func (c *Checkpoint) Verify(pub ed25519.PublicKey) bool {
	return len(pub) == ed25519.PublicKeySize && c.Key == KeyIDOf(pub) &&
		len(c.Sig) == ed25519.SignatureSize && ed25519.Verify(pub, c.Statement(), c.Sig)
}

// EncodeEntry is the canonical encoding of r (its Hash field is not part of
// it); r's fields must be valid (see Entry.validate).
func EncodeEntry(r *Record) []byte {
	e := &r.Entry
	n := len(entryDomain) + 4*6 + 8 + 8 + 32 + len(e.Org) + len(e.Actor) + len(e.Action) + len(e.Target) + len(e.Source) + len(e.Detail)
	b := make([]byte, 0, n)
	b = append(b, entryDomain...)
	b = appendString(b, e.Org)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixMilli()))
	for _, s := range []string{e.Actor, e.Action, e.Target, e.Source, e.Detail} {
		b = appendString(b, s)
	}
	return append(b, r.Prev[:]...)
}

// HashEntry is SHA-256 of EncodeEntry(r).
func HashEntry(r *Record) Hash { return sha256.Sum256(EncodeEntry(r)) }

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// errEncoding is DecodeEntry's one error: what is wrong is in the wrapping
// text, for the person reading a verify report.
var errEncoding = errors.New("audit: not a canonical entry encoding")

// DecodeEntry parses an entry's canonical encoding, as a verifier outside
// Signet would (an exported entry, a test vector). It accepts exactly the
// bytes EncodeEntry produces for a valid entry: known domain, no trailing
// bytes, fields within their bounds and valid UTF-8, a positive sequence
// number. The Record's Hash is set to SHA-256 of b.
func DecodeEntry(b []byte) (Record, error) {
	var r Record
	if len(b) < len(entryDomain) || string(b[:len(entryDomain)]) != entryDomain {
		return r, fmt.Errorf("%w: unknown domain", errEncoding)
	}
	d := decoder{b: b[len(entryDomain):]}
	r.Org = d.str(MaxField)
	r.Seq = int64(d.u64())
	ms := int64(d.u64())
	r.Actor = d.str(MaxField)
	r.Action = d.str(MaxField)
	r.Target = d.str(MaxField)
	r.Source = d.str(MaxField)
	r.Detail = d.str(MaxDetail)
	copy(r.Prev[:], d.take(32))
	switch {
	case d.err != nil:
		return Record{}, d.err
	case len(d.b) != 0:
		return Record{}, fmt.Errorf("%w: %d trailing bytes", errEncoding, len(d.b))
	case r.Seq <= 0:
		return Record{}, fmt.Errorf("%w: sequence number %d", errEncoding, r.Seq)
	}
	r.Time = time.UnixMilli(ms).UTC()
	if err := r.Entry.validate(); err != nil {
		return Record{}, fmt.Errorf("%w: %v", errEncoding, err)
	}
	r.Hash = sha256.Sum256(b)
	return r, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = fmt.Errorf("%w: truncated", errEncoding)
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u64() uint64 {
	b := d.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *decoder) str(max int) string {
	lb := d.take(4)
	if lb == nil {
		return ""
	}
	n := binary.BigEndian.Uint32(lb)
	if n > uint32(max) {
		d.err = fmt.Errorf("%w: a field of %d bytes (at most %d)", errEncoding, n, max)
		return ""
	}
	return string(d.take(int(n)))
}

// validate checks what Record requires of an entry before it is chained.
func (e *Entry) validate() error {
	if e.Actor == "" || e.Action == "" {
		return errors.New("an entry needs an actor and an action")
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"org", e.Org, MaxField}, {"actor", e.Actor, MaxField}, {"action", e.Action, MaxField},
		{"target", e.Target, MaxField}, {"source", e.Source, MaxField}, {"detail", e.Detail, MaxDetail},
	} {
		if len(f.v) > f.max {
			return fmt.Errorf("%s has %d bytes, more than %d", f.name, len(f.v), f.max)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s is not valid UTF-8", f.name)
		}
	}
	return nil
}
