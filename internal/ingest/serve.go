package ingest

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/signet-io/signet/internal/wire"
)

type udpLink struct {
	conn *net.UDPConn
	addr netip.AddrPort
}

func (l udpLink) Send(b []byte) error {
	_, err := l.conn.WriteToUDPAddrPort(b, l.addr)
	return err
}

func (l udpLink) Key() string { return "udp/" + l.addr.String() }

const (
	// udpReadBuffer is the socket receive buffer ServeUDP asks for, to ride
	// out bursts rather than let the kernel drop datagrams; the kernel caps
	// it at net.core.rmem_max, which is fine. Under a sustained flood no
	// buffer helps: what decides the share of datagrams read is how fast
	// the readers take them (udpBatch, readers).
	udpReadBuffer = 4 << 20
	// udpBatch is the most datagrams one read takes: recvmmsg on Linux
	// (one datagram per call elsewhere), so the cost of a system call and a
	// trip through the poller is shared by a burst.
	udpBatch = 32
	// maxUDPReaders bounds ServeUDP's reader goroutines.
	maxUDPReaders = 8
)

// ServeUDP answers devices on conn until ctx ends (then it closes conn).
// This is the server's embedded relay: devices may send to it directly.
//
// One reader per CPU (GOMAXPROCS, at most maxUDPReaders) takes datagrams
// from the socket in batches and handles them itself, so that handling
// (a handshake's Diffie-Hellman, a cookie reply, a store hand-off) on one
// goroutine does not leave the socket unread: a single reader that also
// handles is what let a flood of forged initiations crowd out legitimate
// ones. Two datagrams of one device may therefore be handled at once, in
// either order; Handle is safe for that (relay connections call it
// concurrently anyway): sessions lock themselves, the replay window
// accepts reordering within its width, and a device's handshakes are
// ordered by their timestamps under the device's lock.
func (s *Server) ServeUDP(ctx context.Context, conn *net.UDPConn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetReadBuffer(udpReadBuffer)
	readers := min(max(runtime.GOMAXPROCS(0), 1), maxUDPReaders)
	errs := make(chan error, readers)
	for range readers {
		go func() { errs <- s.readUDP(ctx, conn) }()
	}
	var first error
	for range readers {
		if err := <-errs; err != nil && first == nil {
			first = err
			conn.Close() // stops the other readers
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return first
}

// readUDP is one of ServeUDP's readers.
func (s *Server) readUDP(ctx context.Context, conn *net.UDPConn) error {
	bc := newBatchConn(conn)
	msgs := make([]ipv4.Message, udpBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, wire.MaxDatagramSize+1)}
	}
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
			s.Handle(ctx, m.Buffers[0][:m.N], udpLink{conn: conn, addr: ua.AddrPort()}, meta)
		}
	}
}

// batchConn reads (and writes) several datagrams per system call.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// newBatchConn wraps conn for batched I/O with the x/net package of its
// address family (the message type is the same for both).
func newBatchConn(conn *net.UDPConn) batchConn {
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		return ipv6.NewPacketConn(conn)
	}
	return ipv4.NewPacketConn(conn)
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
