// Package bus carries authenticated uplinks from ingest to the store
// writer over NATS JetStream: an in-process server with its data in
// Signet's data directory by default, or an external NATS cluster for
// scale-out (several ingest nodes, one stream).
//
// A message is a batch of store.Append items in a flat binary format
// (codec.go). Publishing
// waits for JetStream's acknowledgement, so a batch is persisted in the
// stream before ingest forgets it; each message carries a JetStream message
// id so a publish retried after a lost acknowledgement is stored once.
// The store's unique key on (device, sequence) remains the final guard.
package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/signet-io/signet/internal/store"
)

// Config configures the bus. The zero value runs an embedded server with
// its data in a temporary place — set DataDir for durability.
type Config struct {
	// URL of an external NATS server with JetStream; "" embeds one.
	URL string
	// DataDir is where the embedded server keeps its stream.
	DataDir string
	// Stream is the JetStream stream name; default "SIGNET_UPLINKS".
	// Tests use unique names so runs against a shared NATS do not meet.
	Stream string
	// Logger; nil discards.
	Logger *slog.Logger
}

// Bus is a connection to the uplink stream.
type Bus struct {
	cfg     Config
	log     *slog.Logger
	srv     *server.Server // nil when external
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string
	node    string
	seq     atomic.Uint64
}

// Open connects to (or starts) NATS and makes sure the stream exists.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Stream == "" {
		cfg.Stream = "SIGNET_UPLINKS"
	}
	b := &Bus{cfg: cfg, log: cfg.Logger, subject: "signet.uplinks." + cfg.Stream}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	var node [6]byte
	_, _ = rand.Read(node[:])
	b.node = hex.EncodeToString(node[:])

	var err error
	if cfg.URL == "" {
		if cfg.DataDir == "" {
			return nil, errors.New("bus: DataDir is required for the embedded server")
		}
		b.srv, err = server.NewServer(&server.Options{
			ServerName: "signet-embedded",
			DontListen: true, // reachable only in-process
			JetStream:  true,
			StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
			NoSigs:     true,
			NoLog:      true,
			// Batches are acknowledged to devices only after the store
			// commits, so the stream need not fsync each message.
		})
		if err != nil {
			return nil, fmt.Errorf("bus: embedded NATS: %w", err)
		}
		b.srv.Start()
		if !b.srv.ReadyForConnections(10 * time.Second) {
			b.srv.Shutdown()
			return nil, errors.New("bus: embedded NATS did not start")
		}
		b.nc, err = nats.Connect("", nats.InProcessServer(b.srv), nats.Name("signet"))
	} else {
		b.nc, err = nats.Connect(cfg.URL, nats.Name("signet"), nats.MaxReconnects(-1))
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: connect: %w", err)
	}
	b.js, err = jetstream.New(b.nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.stream, err = b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       cfg.Stream,
		Subjects:   []string{b.subject},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.WorkQueuePolicy, // a batch leaves the stream once stored
		Duplicates: 2 * time.Minute,
		MaxAge:     7 * 24 * time.Hour,
		MaxBytes:   4 << 30,
		Discard:    jetstream.DiscardNew, // full: refuse, and devices resend later
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: stream %s: %w", cfg.Stream, err)
	}
	return b, nil
}

// encBufs recycles encoding buffers: the client copies a message into
// its own buffer before Publish returns.
var encBufs = sync.Pool{New: func() any { return new([]byte) }}

// Publish persists one batch in the stream and returns once JetStream has
// acknowledged it.
func (b *Bus) Publish(ctx context.Context, a *store.Append) error {
	buf := encBufs.Get().(*[]byte)
	defer encBufs.Put(buf)
	data, err := EncodeBatch((*buf)[:0], a)
	if err != nil {
		return err
	}
	*buf = data
	id := b.node + "-" + strconv.FormatUint(b.seq.Add(1), 36)
	if _, err := b.js.Publish(ctx, b.subject, data, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("bus: publish: %w", err)
	}
	return nil
}

// Consume hands batches to write until ctx ends. write gets every batch
// that has arrived since it last returned, up to maxMsgs messages (so the
// store can commit them in one transaction); the messages are acknowledged
// only after write returns nil, and redelivered on error.
//
// Messages are pulled ahead (up to two rounds of maxMsgs) and decoded on
// the client's delivery goroutine while write is busy with the previous
// round, and write is called as soon as anything is there: an idle
// writer never waits for a fetch to fill up or time out, and a busy one
// finds the next round decoded.
func (b *Bus) Consume(ctx context.Context, maxMsgs int, write func(ctx context.Context, batches []*store.Append) error) error {
	cons, err := b.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       consumerName,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4 * maxMsgs,
	})
	if err != nil {
		return fmt.Errorf("bus: consumer: %w", err)
	}
	type decoded struct {
		m jetstream.Msg
		a *store.Append
	}
	// The channel holds everything the pull may deliver ahead, so the
	// delivery goroutine never blocks on it for long.
	in := make(chan decoded, 2*maxMsgs)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		a, err := DecodeBatch(m.Data())
		if err != nil {
			// Only Signet publishes here; a message it cannot read
			// would block the stream forever, so it is dropped loudly.
			b.log.Error("bus: undecodable batch dropped", "err", err)
			_ = m.Term()
			return
		}
		select {
		case in <- decoded{m, a}:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(2*maxMsgs), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil {
			b.log.Warn("bus fetch failed", "err", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("bus: consume: %w", err)
	}
	defer cc.Stop()
	msgs := make([]jetstream.Msg, 0, maxMsgs)
	batches := make([]*store.Append, 0, maxMsgs)
	for {
		msgs, batches = msgs[:0], batches[:0]
		select {
		case <-ctx.Done():
			return nil
		case d := <-in:
			msgs, batches = append(msgs, d.m), append(batches, d.a)
		}
	drain:
		for len(msgs) < maxMsgs {
			select {
			case d := <-in:
				msgs, batches = append(msgs, d.m), append(batches, d.a)
			default:
				break drain
			}
		}
		if err := write(ctx, batches); err != nil {
			if ctx.Err() == nil {
				b.log.Error("store write failed; batches will be redelivered", "err", err)
			}
			for _, m := range msgs {
				_ = m.Nak()
			}
			select { // a store that keeps failing is not retried in a tight loop
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for _, m := range msgs {
			_ = m.Ack()
		}
	}
}

// consumerName is the store writers' durable consumer, shared by every node.
const consumerName = "store-writer"

// Pending reports how many batches the store writer has yet to store: in
// the stream and not yet delivered, or delivered and not yet acknowledged.
// With several server nodes on one stream it counts theirs too.
func (b *Bus) Pending(ctx context.Context) (uint64, error) {
	cons, err := b.stream.Consumer(ctx, consumerName)
	if err != nil {
		return 0, fmt.Errorf("bus: consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("bus: consumer info: %w", err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// DeleteStream removes the stream (tests against a shared NATS clean up).
func (b *Bus) DeleteStream(ctx context.Context) error {
	return b.js.DeleteStream(ctx, b.cfg.Stream)
}

// Close disconnects and stops the embedded server.
func (b *Bus) Close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// Revocations are broadcast on plain NATS (not JetStream): every server
// node subscribed at that moment drops the device's sessions at once, and a
// node that starts later loads the revoked state from the store anyway.
func (b *Bus) revocationSubject() string { return "signet.revoked." + b.cfg.Stream }

// PublishRevocation tells every server node that the device with this
// public key was revoked or disabled.
func (b *Bus) PublishRevocation(key []byte) error {
	if err := b.nc.Publish(b.revocationSubject(), key); err != nil {
		return fmt.Errorf("bus: publish revocation: %w", err)
	}
	return b.nc.Flush()
}

// SubscribeRevocations calls fn with the key of every device revoked from
// now on, on any node, until the returned function is called.
func (b *Bus) SubscribeRevocations(fn func(key []byte)) (func(), error) {
	sub, err := b.nc.Subscribe(b.revocationSubject(), func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe revocations: %w", err)
	}
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("bus: subscribe revocations: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
