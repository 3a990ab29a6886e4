package wire

import (
	"encoding/binary"
	"errors"
	"io"
)

// Devices that cannot use UDP send the same datagrams over a TCP stream,
// each prefixed by its length as two big-endian bytes. Nothing else changes:
// the stream adds no security and the datagrams need none from it.

// FrameHeaderSize is the length prefix of a framed datagram.
const FrameHeaderSize = 2

// ErrFrame is returned for a frame that is empty or longer than
// MaxDatagramSize; the stream cannot be trusted to be in sync after it and
// must be closed.
var ErrFrame = errors.New("wire: bad frame length")

// AppendFrame appends datagram, length-prefixed, to dst.
func AppendFrame(dst, datagram []byte) ([]byte, error) {
	if len(datagram) == 0 || len(datagram) > MaxDatagramSize {
		return nil, ErrFrame
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(datagram)))
	return append(dst, datagram...), nil
}

// FrameReader reads length-prefixed datagrams from a stream. It never
// allocates per frame and never reads more than MaxDatagramSize for one.
type FrameReader struct {
	r   io.Reader
	buf [MaxDatagramSize]byte
}

// NewFrameReader reads frames from r; wrap r in a bufio.Reader to save
// system calls.
func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r} }

// Next returns the next datagram. The slice is valid until the next call.
func (f *FrameReader) Next() ([]byte, error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > MaxDatagramSize {
		return nil, ErrFrame
	}
	if _, err := io.ReadFull(f.r, f.buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return f.buf[:n], nil
}
