package wire

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var updateVectors = flag.Bool("update", false, "rewrite the test vectors and golden files in testdata/")

const vectorFile = "../../testdata/wire/vectors.txt"

// countingReader yields 0, 1, 2, … so cookie secrets and nonces in the
// vectors are fixed.
type countingReader struct{ n byte }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

// vectors builds every datagram type from fixed keys, ephemerals, indexes,
// timestamps and payloads. docs/protocol.md explains each line.
func vectors(t *testing.T) []string {
	devKey, srvKey := fixedKey(1), fixedKey(40)
	devEph, srvEph := fixedKey(80), fixedKey(120)
	devPub, srvPub := devKey.Public(), srvKey.Public()
	var out []string
	add := func(name string, b []byte) { out = append(out, fmt.Sprintf("%s: %x", name, b)) }
	add("device_private", devKey[:])
	add("device_public", devPub[:])
	add("server_private", srvKey[:])
	add("server_public", srvPub[:])
	add("device_ephemeral_private", devEph[:])
	add("server_ephemeral_private", srvEph[:])

	in, err := NewInitiator(devKey, srvPub)
	if err != nil {
		t.Fatal(err)
	}
	r := NewResponder(srvKey)
	lookup := staticLookup(t, r, devPub)
	init, ph, err := in.AppendInitiation(nil, InitiationParams{SenderIndex: 0x11223344, Ephemeral: devEph, Timestamp: 1_700_000_000_000_000_000})
	if err != nil {
		t.Fatal(err)
	}
	add("initiation (sender index 0x11223344, timestamp 1700000000000000000, no extension, no cookie)", init)

	cc := NewCookieChecker(srvPub, &countingReader{})
	now := time.Unix(1_700_000_000, 0)
	reply, err := cc.AppendCookieReply(nil, init, []byte("source"), now)
	if err != nil {
		t.Fatal(err)
	}
	add("cookie_reply (cookie secret 00..1f, nonce 20..37, source \"source\")", reply)
	cookie, err := in.ConsumeCookieReply(ph, reply, now)
	if err != nil {
		t.Fatal(err)
	}
	add("cookie", cookie.Value[:])
	initC, _, err := in.AppendInitiation(nil, InitiationParams{SenderIndex: 0x11223344, Ephemeral: devEph, Timestamp: 1_700_000_000_000_000_001, Cookie: &cookie, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	add("initiation_with_cookie (timestamp 1700000000000000001)", initC)

	ini, err := r.ConsumeInitiation(init, lookup)
	if err != nil {
		t.Fatal(err)
	}
	resp, sk, err := r.AppendResponse(nil, ini, 0x55667788, srvEph)
	if err != nil {
		t.Fatal(err)
	}
	add("response (server sender index 0x55667788)", resp)
	dk, remote, err := in.ConsumeResponse(ph, resp)
	if err != nil {
		t.Fatal(err)
	}
	add("device_send_key", dk.Send[:])
	add("device_recv_key", dk.Recv[:])
	dev, srv := NewSession(&dk, 0x11223344, remote), NewSession(&sk, 0x55667788, 0x11223344)
	up, _ := dev.Seal(nil, []byte("uplink plaintext"))
	add("transport_up (counter 0, plaintext \"uplink plaintext\")", up)
	down, _ := srv.Seal(nil, []byte("ack"))
	add("transport_down (counter 0, plaintext \"ack\")", down)

	ep, key, err := in.AppendEpoch(nil, EpochParams{Index: 0x99aabbcc, Ephemeral: devEph, Timestamp: 1_700_000_000_000_000_002, Payload: []byte("first")})
	if err != nil {
		t.Fatal(err)
	}
	add("epoch (index 0x99aabbcc, timestamp 1700000000000000002, payload \"first\")", ep)
	add("epoch_key", key[:])
	es := NewEpochSession(&key, 0x99aabbcc, true)
	ed, _ := es.Seal(nil, []byte("second"))
	add("epoch_data (counter 0, plaintext \"second\")", ed)
	framed, _ := AppendFrame(nil, up)
	add("tcp_frame (of transport_up)", framed)
	return out
}

func TestVectors(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("# Signet device channel test vectors (docs/protocol.md). Regenerate: go test ./internal/wire -run TestVectors -update\n")
	for _, l := range vectors(t) {
		b.WriteString(l + "\n")
	}
	if *updateVectors {
		if err := os.MkdirAll(filepath.Dir(vectorFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorFile, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("datagrams differ from %s; if the change is intended, run with -update and review the diff", vectorFile)
	}
	// The vector file parses as hex, so a C test can use it directly.
	for _, l := range bytes.Split(bytes.TrimSpace(want), []byte("\n"))[1:] {
		i := bytes.LastIndex(l, []byte(": "))
		if _, err := hex.DecodeString(string(l[i+2:])); err != nil {
			t.Fatalf("bad line %q", l)
		}
	}
}
