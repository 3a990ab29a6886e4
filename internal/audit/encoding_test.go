package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/audit"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// vector is one entry and one checkpoint over it, byte for byte, so that a
// verifier written outside Signet can be checked against them.
type vector struct {
	Org, Actor, Action, Target, Source, Detail string
	Seq                                        int64
	TimeMs                                     int64
	Prev                                       string // hex
	Encoding                                   string // hex of the canonical encoding
	Hash                                       string // hex, SHA-256 of Encoding

	KeySeed      string // hex, Ed25519 seed of the audit key
	PublicKey    string // hex
	KeyID        string // hex
	Checkpoint   int64  // checkpoint number
	CheckpointPv string // hex, the previous checkpoint's hash
	CheckpointMs int64
	Statement    string // hex of the signed bytes
	Signature    string // hex
	CheckpointH  string // hex, SHA-256 of Statement
}

func vectorInputs() []vector {
	return []vector{
		{Org: "acme", Actor: "user:42", Action: "device.revoke", Target: "project:p1/device:17", Source: "192.0.2.10",
			Detail: "lost in transit", Seq: 1, TimeMs: 1775000000123, Prev: hex.EncodeToString(make([]byte, 32)),
			KeySeed: hex.EncodeToString(bytes.Repeat([]byte{7}, 32)), Checkpoint: 1, CheckpointPv: hex.EncodeToString(make([]byte, 32)), CheckpointMs: 1775000001000},
		{Org: "", Actor: "cli:root", Action: "project.add", Target: "project:pub", Source: "cli",
			Detail: "", Seq: 9, TimeMs: -1, Prev: "a3" + hex.EncodeToString(bytes.Repeat([]byte{0x5c}, 31)),
			KeySeed: hex.EncodeToString(bytes.Repeat([]byte{0xfe}, 32)), Checkpoint: 300, CheckpointPv: hex.EncodeToString(bytes.Repeat([]byte{1}, 32)), CheckpointMs: 0},
		{Org: "ünïcode", Actor: "staff:ops-1", Action: "staff.grant", Target: "", Source: "2001:db8::1",
			Detail: "read-only, 2 h\nsecond line", Seq: 1 << 40, TimeMs: 1775000000000, Prev: hex.EncodeToString(bytes.Repeat([]byte{0xff}, 32)),
			KeySeed: hex.EncodeToString(bytes.Repeat([]byte{0}, 32)), Checkpoint: 2, CheckpointPv: hex.EncodeToString(bytes.Repeat([]byte{2}, 32)), CheckpointMs: 1775000000000},
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compute(t *testing.T, v vector) vector {
	r := audit.Record{Entry: audit.Entry{Org: v.Org, Actor: v.Actor, Action: v.Action, Target: v.Target, Source: v.Source,
		Detail: v.Detail, Time: time.UnixMilli(v.TimeMs)}, Seq: v.Seq}
	copy(r.Prev[:], mustHex(t, v.Prev))
	enc := audit.EncodeEntry(&r)
	v.Encoding = hex.EncodeToString(enc)
	h := sha256.Sum256(enc)
	v.Hash = hex.EncodeToString(h[:])
	if audit.HashEntry(&r) != audit.Hash(h) {
		t.Fatal("HashEntry is not SHA-256 of EncodeEntry")
	}
	key := ed25519.NewKeyFromSeed(mustHex(t, v.KeySeed))
	pub := key.Public().(ed25519.PublicKey)
	v.PublicKey = hex.EncodeToString(pub)
	id := audit.KeyIDOf(pub)
	v.KeyID = hex.EncodeToString(id[:])
	c := audit.Checkpoint{Num: v.Checkpoint, Org: v.Org, Seq: v.Seq, Head: h, Time: time.UnixMilli(v.CheckpointMs), Key: id}
	copy(c.Prev[:], mustHex(t, v.CheckpointPv))
	c.Sig = ed25519.Sign(key, c.Statement())
	v.Statement = hex.EncodeToString(c.Statement())
	v.Signature = hex.EncodeToString(c.Sig)
	ch := c.Hash()
	v.CheckpointH = hex.EncodeToString(ch[:])
	if !c.Verify(pub) {
		t.Fatal("checkpoint does not verify")
	}
	return v
}

// TestVectors checks the encodings against testdata/vectors.json
// (regenerate with -update, and say why in the commit: every stored
// audit log depends on them).
func TestVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	var got []vector
	for _, v := range vectorInputs() {
		got = append(got, compute(t, v))
	}
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []vector
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("%d vectors in %s, want %d", len(want), path, len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("vector %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
		// The encoding decodes to the entry it came from.
		r, err := audit.DecodeEntry(mustHex(t, want[i].Encoding))
		if err != nil {
			t.Fatalf("vector %d: DecodeEntry: %v", i, err)
		}
		if r.Org != want[i].Org || r.Seq != want[i].Seq || r.Time.UnixMilli() != want[i].TimeMs || r.Detail != want[i].Detail ||
			r.Hash.String() != want[i].Hash || hex.EncodeToString(r.Prev[:]) != want[i].Prev {
			t.Errorf("vector %d decodes to %+v", i, r)
		}
	}
	// The first vector's bytes, spelled out, as docs/audit.md shows them.
	enc := mustHex(t, want[0].Encoding)
	if !bytes.HasPrefix(enc, []byte("signet/audit/v1 entry\x00\x00\x00\x00\x04acme\x00\x00\x00\x00\x00\x00\x00\x01")) {
		t.Errorf("vector 0 encoding starts %q", enc[:40])
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	r := audit.Record{Entry: audit.Entry{Org: "o", Actor: "a", Action: "b", Time: time.UnixMilli(5)}, Seq: 3}
	good := audit.EncodeEntry(&r)
	if _, err := audit.DecodeEntry(good); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"empty":        nil,
		"domain":       append([]byte("signet/audit/v2 entry\x00"), good[22:]...),
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte{}, good...), 0),
		"no actor":     audit.EncodeEntry(&audit.Record{Entry: audit.Entry{Action: "b"}, Seq: 1}),
		"seq 0":        audit.EncodeEntry(&audit.Record{Entry: audit.Entry{Actor: "a", Action: "b"}, Seq: 0}),
		"invalid utf8": audit.EncodeEntry(&audit.Record{Entry: audit.Entry{Actor: "a\xc3", Action: "b"}, Seq: 1}),
		"huge length":  append(append([]byte("signet/audit/v1 entry\x00"), 0xff, 0xff, 0xff, 0xff), good[26:]...),
	}
	for name, b := range bad {
		if _, err := audit.DecodeEntry(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeEntry: DecodeEntry never panics, and what it accepts is
// canonical: encoding the result gives back the same bytes and hash.
func FuzzDecodeEntry(f *testing.F) {
	for _, v := range vectorInputs() {
		r := audit.Record{Entry: audit.Entry{Org: v.Org, Actor: v.Actor, Action: v.Action, Target: v.Target, Source: v.Source,
			Detail: v.Detail, Time: time.UnixMilli(v.TimeMs)}, Seq: v.Seq}
		f.Add(audit.EncodeEntry(&r))
	}
	f.Add([]byte("signet/audit/v1 entry\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := audit.DecodeEntry(b)
		if err != nil {
			return
		}
		if again := audit.EncodeEntry(&r); !bytes.Equal(again, b) {
			t.Fatalf("not canonical:\n in %x\nout %x", b, again)
		}
		if audit.HashEntry(&r) != r.Hash {
			t.Fatal("hash differs")
		}
	})
}
