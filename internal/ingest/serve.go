package ingest

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

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

// ServeUDP answers devices on conn until ctx ends (then it closes conn).
// This is the server's embedded relay: devices may send to it directly.
func (s *Server) ServeUDP(ctx context.Context, conn *net.UDPConn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// Ride out bursts of datagrams rather than let the kernel drop them;
	// the kernel may cap the size, which is fine.
	_ = conn.SetReadBuffer(4 << 20)
	buf := make([]byte, wire.MaxDatagramSize+1)
	for {
		n, addr, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.Handle(ctx, buf[:n], udpLink{conn: conn, addr: addr}, Meta{Received: time.Now()})
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
