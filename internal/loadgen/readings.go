package loadgen

import (
	"fmt"
	"strings"

	"github.com/signet-io/signet/internal/wire"
)

// reading returns the reading with sequence seq. It depends on nothing
// else, so a resent reading is byte for byte the one first sent, as a real
// device's outbox would resend it.
func (g *Generator) reading(seq uint64) wire.Reading {
	return wire.Reading{
		Seq:  seq,
		Time: g.epochMs + int64(seq),
		Kind: wire.KindNumeric,
		// Tenths plus a hundredth: never exact in float32, so every value
		// takes the same nine bytes.
		Value: 1000 + float64(seq%997)/10 + 0.01,
		Name:  g.name,
		Unit:  "hPa",
	}
}

// appendReadings appends the plaintext carrying sequences lo..hi to dst,
// reusing *rs for the readings.
func (g *Generator) appendReadings(dst []byte, rs *[]wire.Reading, lo, hi uint64) ([]byte, error) {
	*rs = (*rs)[:0]
	for seq := lo; seq <= hi; seq++ {
		*rs = append(*rs, g.reading(seq))
	}
	return wire.AppendMessage(dst, &wire.Message{Readings: &wire.ReadingBatch{Base: 1, Readings: *rs}})
}

// appendBatch is appendReadings for n readings from seq, checking that
// they fit one datagram.
func (g *Generator) appendBatch(dst []byte, seq uint64, n int) ([]byte, error) {
	var rs []wire.Reading
	pt, err := g.appendReadings(dst, &rs, seq, seq+uint64(n)-1)
	if err != nil {
		return nil, fmt.Errorf("loadgen: Config.Batch: %w", err)
	}
	if len(pt) > wire.MaxPlaintext {
		return nil, fmt.Errorf("loadgen: Config.Batch: %d readings take %d bytes, more than the %d of a datagram",
			n, len(pt), wire.MaxPlaintext)
	}
	return pt, nil
}

// readingName returns the name that makes a reading with a four-digit
// sequence encode to ReadingSize bytes.
func readingName() string {
	g := &Generator{epochMs: 1_700_000_000_000}
	for n := 1; n <= wire.MaxNameLen; n++ {
		g.name = strings.Repeat("p", n)
		if readingLen(g, 1000) >= ReadingSize {
			return g.name
		}
	}
	return g.name
}

// readingLen is the encoded size of one reading: a message with two
// readings minus one with one.
func readingLen(g *Generator, seq uint64) int {
	var rs []wire.Reading
	one, _ := g.appendReadings(nil, &rs, seq, seq)
	two, _ := g.appendReadings(nil, &rs, seq, seq+1)
	return len(two) - len(one)
}
