package ingest

import (
	"bufio"
	"context"
	"errors"
	"hash/maphash"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/signet-io/signet/internal/udpbatch"
	"github.com/signet-io/signet/internal/wire"
)

// udpFrom is a datagram's source as ServeUDP read it, in a hand-over its
// worker reuses: a TransientLink. What a device's record keeps (Keep) is a
// udpLink, or for an address with a zone (rare: IPv6 link-local) a copy of
// the udpFrom itself.
type udpFrom struct {
	conn *net.UDPConn
	addr netip.AddrPort
}

func (f udpFrom) Send(b []byte) error {
	_, err := f.conn.WriteToUDPAddrPort(b, f.addr)
	return err
}

func (f udpFrom) Key() string { return "udp/" + f.addr.String() }

// Keep implements TransientLink.
func (f *udpFrom) Keep(kept Link) Link {
	a := f.addr.Addr()
	if a.Zone() != "" {
		if k, ok := kept.(udpFrom); ok && k == *f {
			return kept
		}
		return *f
	}
	l := udpLink{conn: f.conn, ip: a.As16(), port: f.addr.Port(), v4: a.Is4()}
	if k, ok := kept.(udpLink); ok && k == l {
		return kept
	}
	return l
}

// udpLink is a kept way back to a device on the server's UDP port, in the
// 32-byte size class (a netip.AddrPort and the socket would take 48).
type udpLink struct {
	conn *net.UDPConn
	ip   [16]byte
	port uint16
	v4   bool // ip holds an IPv4 address, mapped
}

func (l udpLink) addrPort() netip.AddrPort {
	a := netip.AddrFrom16(l.ip)
	if l.v4 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, l.port)
}

func (l udpLink) Send(b []byte) error {
	_, err := l.conn.WriteToUDPAddrPort(b, l.addrPort())
	return err
}

func (l udpLink) Key() string { return "udp/" + l.addrPort().String() }

const (
	// udpReadBuffer is the socket receive buffer ServeUDP asks for, to ride
	// out bursts rather than let the kernel drop datagrams; the kernel caps
	// it at net.core.rmem_max, which is fine. Under a sustained flood no
	// buffer helps: what decides the share of datagrams read is how fast
	// the reader takes them (udpBatch).
	udpReadBuffer = 4 << 20
	// udpBatch is the most datagrams one read takes: recvmmsg on Linux
	// (one datagram per call elsewhere), so the cost of a system call and a
	// trip through the poller is shared by a burst.
	udpBatch = 32
	// maxUDPWorkers bounds ServeUDP's handling goroutines, and
	// udpWorkerQueue the reads (of up to udpBatch datagrams) each may
	// have waiting.
	maxUDPWorkers  = 8
	udpWorkerQueue = 8
)

// ServeUDP answers devices on conn until ctx ends (then it closes conn).
// This is the server's embedded relay: devices may send to it directly.
//
// One reader takes datagrams from the socket in batches and hands each to
// one of several workers (one per CPU, at most maxUDPWorkers), chosen by
// the datagram's source, so that handling (a handshake's Diffie-Hellman, a
// cookie reply, a store hand-off) never leaves the socket unread: a single
// goroutine that both read and handled is what let a flood of forged
// initiations crowd out legitimate ones. One source's datagrams all go to
// the same worker, in the order they arrived. That order matters: a
// transmit-only device sends the first datagram of an epoch (its
// handshake) and the next ones back to back, and data handled before its
// epoch is known is dropped, for good, since such a device never hears
// what was lost. A worker whose queue is full holds the reader up, and
// the socket's buffer, then the kernel, takes the excess.
func (s *Server) ServeUDP(ctx context.Context, conn *net.UDPConn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetReadBuffer(udpReadBuffer)
	workers := make([]chan *udpHandOver, min(max(runtime.GOMAXPROCS(0), 1), maxUDPWorkers))
	var wg sync.WaitGroup
	for i := range workers {
		workers[i] = make(chan *udpHandOver, udpWorkerQueue)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range workers[i] {
				for i := range h.ds[:h.n] {
					d := &h.ds[i]
					s.Handle(ctx, d.buf[:d.n], &d.from, d.meta)
					udpBuffers.Put(d.buf)
				}
				clear(h.ds[:h.n])
				h.n = 0
				udpHandOvers.Put(h)
			}
		}()
	}
	err := s.readUDP(ctx, conn, workers)
	// Intake has stopped: what the workers hold is handled before
	// ServeUDP returns, so a server stopping in order loses none of it.
	for _, w := range workers {
		close(w)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// udpDatagram is a datagram on its way from ServeUDP's reader to a worker.
type udpDatagram struct {
	buf  *[wire.MaxDatagramSize + 1]byte
	n    int
	from udpFrom
	meta Meta
}

// udpHandOver carries one read's datagrams for one worker.
type udpHandOver struct {
	n  int
	ds [udpBatch]udpDatagram
}

// udpBuffers holds the buffers datagrams are read into; a worker returns
// each once handled (Handle keeps nothing of the datagram), and each
// hand-over to udpHandOvers.
var (
	udpBuffers   = sync.Pool{New: func() any { return new([wire.MaxDatagramSize + 1]byte) }}
	udpHandOvers = sync.Pool{New: func() any { return new(udpHandOver) }}
)

// readUDP is ServeUDP's reader: it hands each datagram to the worker its
// source maps to, until the socket is closed.
func (s *Server) readUDP(ctx context.Context, conn *net.UDPConn, workers []chan *udpHandOver) error {
	bc := udpbatch.New(conn)
	seed := maphash.MakeSeed()
	msgs := make([]ipv4.Message, udpBatch)
	bufs := make([]*[wire.MaxDatagramSize + 1]byte, udpBatch)
	batches := make([]*udpHandOver, len(workers))
	for i := range msgs {
		bufs[i] = udpBuffers.Get().(*[wire.MaxDatagramSize + 1]byte)
		msgs[i].Buffers = [][]byte{bufs[i][:]}
	}
	defer func() {
		for _, b := range bufs {
			udpBuffers.Put(b)
		}
	}()
	for {
		n, err := bc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		meta := Meta{Received: time.Now()}
		for i := range msgs[:n] {
			m := &msgs[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			addr := ua.AddrPort()
			w := maphash.Comparable(seed, addr) % uint64(len(workers))
			h := batches[w]
			if h == nil {
				h = udpHandOvers.Get().(*udpHandOver)
				batches[w] = h
			}
			h.ds[h.n] = udpDatagram{buf: bufs[i], n: m.N, from: udpFrom{conn: conn, addr: addr}, meta: meta}
			h.n++
			bufs[i] = udpBuffers.Get().(*[wire.MaxDatagramSize + 1]byte)
			m.Buffers[0] = bufs[i][:]
		}
		// One hand-over per worker and read. A busy worker holds the
		// reader up rather than have it read datagrams only to drop
		// them: the kernel drops what the socket cannot hold for
		// nothing, where reading costs CPU the workers need.
		for w, b := range batches {
			if b != nil {
				workers[w] <- b
				batches[w] = nil
			}
		}
	}
}

type tcpLink struct {
	mu   *sync.Mutex
	conn net.Conn
	key  string
}

func (l tcpLink) Send(b []byte) error {
	f, err := wire.AppendFrame(make([]byte, 0, wire.FrameHeaderSize+len(b)), b)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.conn.Write(f)
	return err
}

func (l tcpLink) Key() string { return l.key }

// maxTCPConns bounds the framed-TCP connections served at once.
const maxTCPConns = 4096

// ServeTCP answers devices that send framed datagrams over TCP (where UDP
// is blocked) until ctx ends.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxTCPConns)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		default:
			s.stats.Malformed.Add(1)
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer conn.Close()
			done := context.AfterFunc(ctx, func() { conn.Close() })
			defer done()
			link := tcpLink{mu: new(sync.Mutex), conn: conn, key: "tcp/" + conn.RemoteAddr().String()}
			fr := wire.NewFrameReader(bufio.NewReader(conn))
			for {
				dg, err := fr.Next()
				if err != nil {
					if errors.Is(err, wire.ErrFrame) {
						s.stats.Malformed.Add(1)
					}
					return
				}
				s.Handle(ctx, dg, link, Meta{Received: time.Now()})
			}
		}()
	}
}
