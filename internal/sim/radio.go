package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Radio is a device.Transport that behaves like a sensor's radio: every
// datagram it sends is heard by each relay in range (several relays with
// overlapping coverage hear the same transmission), and it hears downlinks
// from any of them.
type Radio struct {
	conn   *net.UDPConn
	relays []*net.UDPAddr
}

// NewRadio returns a radio in range of the relays at the given UDP
// addresses.
func NewRadio(relays []string) (*Radio, error) {
	if len(relays) == 0 {
		return nil, errors.New("sim: a radio needs at least one relay in range")
	}
	r := &Radio{}
	for _, a := range relays {
		ua, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			return nil, fmt.Errorf("sim: relay address %s: %w", a, err)
		}
		r.relays = append(r.relays, ua)
	}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if r.relays[0].IP != nil && !r.relays[0].IP.IsLoopback() {
		local = nil
	}
	c, err := net.ListenUDP("udp", local)
	if err != nil {
		return nil, err
	}
	r.conn = c
	return r, nil
}

// Send transmits a datagram to every relay in range; it fails only if no
// relay could be reached.
func (r *Radio) Send(ctx context.Context, b []byte) error {
	var errs []error
	for _, a := range r.relays {
		if _, err := r.conn.WriteToUDP(b, a); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(r.relays) {
		return errors.Join(errs...)
	}
	return nil
}

// Recv waits for a downlink from any relay.
func (r *Radio) Recv(ctx context.Context, buf []byte) (int, error) {
	stop := context.AfterFunc(ctx, func() { r.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
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
		return 0, err
	}
}

// Close releases the radio's socket.
func (r *Radio) Close() error { return r.conn.Close() }
