package device

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/wire"
)

// Transport carries datagrams between a device and a relay or the server.
// UDP is the default; TCP framing is for networks that block UDP; a radio
// driver implements the same two calls.
type Transport interface {
	// Send transmits one datagram; it may be lost.
	Send(ctx context.Context, datagram []byte) error
	// Recv blocks until a datagram arrives or ctx ends, and copies it into
	// buf. Transmit-only radios return an error that wraps
	// ErrTransmitOnly.
	Recv(ctx context.Context, buf []byte) (int, error)
	Close() error
}

// ErrTransmitOnly is returned by Recv of a transport that cannot receive.
var ErrTransmitOnly = errors.New("device: transport cannot receive")

type udpTransport struct{ conn *net.UDPConn }

// DialUDP returns a transport that sends datagrams to addr (host:port).
func DialUDP(addr string) (Transport, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("device: resolve %s: %w", addr, err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("device: dial %s: %w", addr, err)
	}
	return &udpTransport{conn: c}, nil
}

func (t *udpTransport) Send(ctx context.Context, b []byte) error {
	_, err := t.conn.Write(b)
	return err
}

func (t *udpTransport) Recv(ctx context.Context, buf []byte) (int, error) {
	stop := context.AfterFunc(ctx, func() { t.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		n, err := t.conn.Read(buf)
		if err == nil {
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		// ICMP port unreachable surfaces as a read error on a connected
		// UDP socket while the server is down; it is not fatal.
		return 0, err
	}
}

func (t *udpTransport) Close() error { return t.conn.Close() }

// tcpTransport sends framed datagrams over one TCP connection, dialling
// again (with backoff, on Send) whenever it breaks.
type tcpTransport struct {
	addr string

	mu   sync.Mutex
	conn net.Conn
	fr   *wire.FrameReader
	gen  int
	cond chan struct{} // closed and replaced when a new connection is up
	shut bool
}

// DialTCP returns a transport that sends datagrams framed over TCP to addr.
// The first connection is made at once so configuration errors show early.
func DialTCP(addr string) (Transport, error) {
	t := &tcpTransport{addr: addr, cond: make(chan struct{})}
	if err := t.redial(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *tcpTransport) redial() error {
	c, err := net.DialTimeout("tcp", t.addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("device: dial %s: %w", t.addr, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shut {
		c.Close()
		return net.ErrClosed
	}
	if t.conn != nil {
		t.conn.Close()
	}
	t.conn, t.fr = c, wire.NewFrameReader(bufio.NewReader(c))
	t.gen++
	close(t.cond)
	t.cond = make(chan struct{})
	return nil
}

func (t *tcpTransport) Send(ctx context.Context, b []byte) error {
	f, err := wire.AppendFrame(nil, b)
	if err != nil {
		return err
	}
	t.mu.Lock()
	c := t.conn
	t.mu.Unlock()
	if c != nil {
		if _, err = c.Write(f); err == nil {
			return nil
		}
	}
	if err := t.redial(); err != nil {
		return err
	}
	t.mu.Lock()
	c = t.conn
	t.mu.Unlock()
	_, err = c.Write(f)
	return err
}

func (t *tcpTransport) Recv(ctx context.Context, buf []byte) (int, error) {
	for {
		t.mu.Lock()
		c, fr, gen, cond := t.conn, t.fr, t.gen, t.cond
		shut := t.shut
		t.mu.Unlock()
		if shut {
			return 0, net.ErrClosed
		}
		stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
		dg, err := fr.Next()
		stop()
		if err == nil {
			return copy(buf, dg), nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		// The connection broke: wait for Send to dial a new one.
		t.mu.Lock()
		if t.gen == gen && t.conn == c {
			c.Close()
		}
		t.mu.Unlock()
		select {
		case <-cond:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (t *tcpTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.shut = true
	if t.conn != nil {
		return t.conn.Close()
	}
	return nil
}
