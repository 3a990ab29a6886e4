package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
)

func uniqueStream(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "TEST_" + hex.EncodeToString(b[:])
}

// roundTrip publishes n batches and checks the consumer sees each reading
// once, with one redelivery forced by a failing write.
func roundTrip(t *testing.T, cfg Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if cfg.URL != "" {
		defer b.DeleteStream(context.Background())
	}
	const n = 200
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.UTC)
	for i := range n {
		a := &store.Append{Readings: []store.Reading{{DeviceID: 1, Seq: uint64(i + 1), Raw: []byte{0xa0}, Value: float64(i), Received: stamp}}}
		if err := b.Publish(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[uint64]int{}
	failed := false
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, 64, func(ctx context.Context, batches []*store.Append) error {
			mu.Lock()
			defer mu.Unlock()
			if !failed {
				failed = true
				return errors.New("store down")
			}
			for _, a := range batches {
				for _, r := range a.Readings {
					seen[r.Seq]++
					if !r.Received.Equal(stamp) {
						t.Errorf("time lost precision on the bus: %v", r.Received)
					}
				}
			}
			return nil
		})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumed %d of %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ccancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for seq, c := range seen {
		if c != 1 {
			t.Fatalf("reading %d consumed %d times", seq, c)
		}
	}
}

func TestEmbedded(t *testing.T) {
	roundTrip(t, Config{DataDir: t.TempDir(), Stream: uniqueStream(t)})
}

// TestExternalNATS runs against the NATS with JetStream on this machine's
// standard port (a service the CI machine provides), in a stream of its own.
func TestExternalNATS(t *testing.T) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:4222", time.Second)
	if err != nil {
		if testing.Short() {
			t.Skip("no NATS on 127.0.0.1:4222")
		}
		t.Fatalf("external NATS not reachable on 127.0.0.1:4222: %v", err)
	}
	c.Close()
	roundTrip(t, Config{URL: "nats://127.0.0.1:4222", Stream: uniqueStream(t)})
}
