package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/signet-io/signet/internal/loadgen"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// References: what the machine can do without Signet in the way, with the
// same payload sizes, sockets, cores and duration as the figures they are
// compared with.

// sampleDatagram returns a transport datagram carrying batch readings the
// way the load generator makes them (loadgen.ReadingSize bytes each), and
// its plaintext.
func sampleDatagram(batch int) (dg, pt []byte, err error) {
	name := "p"
	rs := make([]wire.Reading, batch)
	for n := 1; n <= wire.MaxNameLen; n++ {
		name = strings.Repeat("p", n)
		one, _ := wire.AppendMessage(nil, &wire.Message{Readings: &wire.ReadingBatch{Base: 1, Readings: []wire.Reading{benchReading(1000, name)}}})
		two, _ := wire.AppendMessage(nil, &wire.Message{Readings: &wire.ReadingBatch{Base: 1, Readings: []wire.Reading{benchReading(1000, name), benchReading(1001, name)}}})
		if len(two)-len(one) >= loadgen.ReadingSize {
			break
		}
	}
	for i := range rs {
		rs[i] = benchReading(uint64(1000+i), name)
	}
	pt, err = wire.AppendMessage(nil, &wire.Message{Readings: &wire.ReadingBatch{Base: 1, Readings: rs}})
	if err != nil {
		return nil, nil, err
	}
	var k wire.Keys
	k.Send[0], k.Recv[0] = 1, 2
	s := wire.NewSession(&k, 1, 2)
	defer s.Zero()
	dg, err = s.Seal(nil, pt)
	return dg, pt, err
}

func benchReading(seq uint64, name string) wire.Reading {
	return wire.Reading{Seq: seq, Time: 1_700_000_000_000 + int64(seq), Kind: wire.KindNumeric,
		Value: 1000 + float64(seq%997)/10 + 0.01, Name: name, Unit: "hPa"}
}

// chachaRef measures ChaCha20-Poly1305 opens per second of a datagram's
// ciphertext, on every core, for d.
func chachaRef(ctx context.Context, batch int, d time.Duration) (float64, error) {
	_, pt, err := sampleDatagram(batch)
	if err != nil {
		return 0, err
	}
	var key [chacha20poly1305.KeySize]byte
	_, _ = rand.Read(key[:])
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return 0, err
	}
	hdr := make([]byte, wire.TransportHeaderSize)
	nonce := make([]byte, chacha20poly1305.NonceSize)
	ct := aead.Seal(nil, nonce, pt, hdr)
	var total atomic.Int64
	var failed atomic.Bool
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, 0, len(pt))
			n := int64(0)
			for ctx.Err() == nil {
				for range 256 {
					if _, err := aead.Open(buf[:0], nonce, ct, hdr); err != nil {
						failed.Store(true)
					}
				}
				n += 256
				if time.Now().After(stop) {
					break
				}
			}
			total.Add(n)
		})
	}
	start := time.Now()
	wg.Wait()
	if failed.Load() {
		return 0, errors.New("bench: a reference open failed")
	}
	return float64(total.Load()) / time.Since(start).Seconds(), ctx.Err()
}

// insertRef measures readings per second appended to a fresh store of the
// same schema (unique key and indexes included, same durability), with
// one relay's hearing each, in appends of store.MaxAppend, for d: the
// store's ceiling with no network, bus or decryption in front.
func (r *run) insertRef(ctx context.Context, d time.Duration, devices int) (float64, error) {
	dir, err := r.newDir("insert")
	if err != nil {
		return 0, err
	}
	defer removeAll(dir)
	path := filepath.Join(dir, "ref.db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	if err := st.CreateProject(ctx, store.Project{ID: project, Name: "ref", Created: time.Now()}); err != nil {
		return 0, err
	}
	keys := make([]wire.PublicKey, devices)
	for i := range keys {
		_, _ = rand.Read(keys[i][:])
	}
	ids, err := bulkDevices(ctx, path, keys)
	if err != nil {
		return 0, err
	}
	_, pt, err := sampleDatagram(1)
	if err != nil {
		return 0, err
	}
	seqs := make([]uint64, devices)
	per := store.MaxAppend
	if r.cfg.Smoke {
		per = 1024 // one append must not outlast the smoke run
	}
	batch := make([]store.Reading, 0, per)
	start := time.Now()
	stop := start.Add(d)
	var stored int64
	for i := 0; time.Now().Before(stop) && ctx.Err() == nil; {
		batch = batch[:0]
		now := time.Now()
		for range per {
			k := i % devices
			seqs[k]++
			i++
			batch = append(batch, store.Reading{DeviceID: ids[k], ProjectID: project, Seq: seqs[k],
				DeviceTime: now, Received: now, Kind: wire.KindNumeric, Value: 1000.01, Name: "pppp", Unit: "hPa",
				Raw: pt, Heard: []store.Hearing{{RelayID: "relay-1", Received: now, RSSI: -70, SNR: 7.5}}})
		}
		ins, err := st.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			return 0, err
		}
		stored += int64(len(ins))
	}
	elapsed := time.Since(start)
	return float64(stored) / elapsed.Seconds(), nil
}

// udpFloodConfig configures the raw UDP sender child.
type udpFloodConfig struct {
	Targets  []string      `json:"targets"`
	Sockets  int           `json:"sockets"`
	Size     int           `json:"size"`
	Duration time.Duration `json:"duration"`
}

type udpFloodResult struct {
	Sent uint64 `json:"sent"`
}

// udpRef measures datagrams of size per second received on loopback by
// receivers sockets (one goroutine each, as a relay has), sent from a
// child process over senders sockets as fast as it can, for d.
func (r *run) udpRef(ctx context.Context, receivers, senders, size int, d time.Duration) (float64, error) {
	var conns []*net.UDPConn
	var targets []string
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range receivers {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		_ = c.SetReadBuffer(4 << 20)
		conns = append(conns, c)
		targets = append(targets, c.LocalAddr().String())
	}
	var got atomic.Int64
	var counting atomic.Bool
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if n == size && counting.Load() {
					got.Add(1)
				}
			}
		})
	}
	ch, err := r.startChild(ctx, "udpflood", udpFloodConfig{Targets: targets, Sockets: senders, Size: size, Duration: d})
	if err != nil {
		return 0, err
	}
	defer ch.stop()
	counting.Store(true)
	start := time.Now()
	if err := ch.send(msgGo, nil); err != nil {
		return 0, err
	}
	var res udpFloodResult
	if err := ch.recv(ctx, msgResult, &res, nil); err != nil {
		return 0, err
	}
	time.Sleep(50 * time.Millisecond) // the last datagrams in the socket buffers
	counting.Store(false)
	elapsed := time.Since(start)
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	r.log.Debug("udp reference", "sent", res.Sent, "received", got.Load())
	return float64(got.Load()) / elapsed.Seconds(), nil
}

func childUDPFlood(ctx context.Context, cio *childIO, raw json.RawMessage) error {
	var cfg udpFloodConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	var addrs []*net.UDPAddr
	for _, t := range cfg.Targets {
		a, err := net.ResolveUDPAddr("udp", t)
		if err != nil {
			return err
		}
		addrs = append(addrs, a)
	}
	var conns []*net.UDPConn
	for range max(1, cfg.Sockets) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		_ = c.SetWriteBuffer(4 << 20)
		defer c.Close()
		conns = append(conns, c)
	}
	if err := cio.wait(ctx, msgGo, nil); err != nil {
		return err
	}
	var sent atomic.Uint64
	stop := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	for k, c := range conns {
		wg.Go(func() {
			b := make([]byte, cfg.Size)
			n := uint64(0)
			for i := k; ctx.Err() == nil; i++ {
				binary.LittleEndian.PutUint64(b, uint64(i))
				if _, err := c.WriteToUDP(b, addrs[i%len(addrs)]); err == nil {
					n++
				}
				if i%64 == 0 && time.Now().After(stop) {
					break
				}
			}
			sent.Add(n)
		})
	}
	wg.Wait()
	if err := cio.send(msgResult, udpFloodResult{Sent: sent.Load()}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
