// Package udpbatch reads and writes several UDP datagrams per system call
// (recvmmsg and sendmmsg on Linux, one datagram per call elsewhere),
// through golang.org/x/net's ipv4 or ipv6 packet connection, whichever
// the socket's address family needs. The message type is the same for
// both.
package udpbatch

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Conn reads and writes batches of datagrams. WriteBatch returns how many
// datagrams it sent; when the first one fails it returns -1 (or 0) with
// the error, which callers must not add to a count.
type Conn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// New wraps c for batched I/O. A socket bound to an IPv6 address (a
// dual-stack wildcard included) needs the ipv6 package; IPv4 peers of a
// dual-stack socket are written as IPv4 addresses, which Linux accepts.
func New(c *net.UDPConn) Conn {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		return ipv6.NewPacketConn(c)
	}
	return ipv4.NewPacketConn(c)
}
