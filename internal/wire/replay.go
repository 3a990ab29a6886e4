package wire

// The replay window follows RFC 6479: a ring of 64-bit blocks, of which all
// but one are always inside the window, so sliding forward clears whole
// blocks instead of shifting bits. 33 blocks give a window of exactly 2048
// counters in 272 bytes; the ring index is taken modulo 33 (a multiply, not
// a division) rather than masked, because a power-of-two ring of the same
// window would need 65 blocks and double a session's memory.

const (
	windowBlocks = 33
	blockBits    = 64
	// WindowSize is how far behind the highest counter seen a datagram may
	// arrive and still be accepted (once).
	WindowSize = (windowBlocks - 1) * blockBits

	// RejectAfterMessages: no session carries more datagrams than this; a
	// sender must rekey before (DESIGN §3).
	RejectAfterMessages = 1 << 32
	// RekeyAfterMessages is when a sender starts a new handshake, leaving
	// ample room to finish it before RejectAfterMessages.
	RekeyAfterMessages = RejectAfterMessages - 1<<20
)

// Window is a sliding replay window. It is not safe for concurrent use; a
// Session guards it.
type Window struct {
	last uint64
	ring [windowBlocks]uint64
}

// Check reports whether counter may be accepted: it is below the message
// limit, not too old and not seen before. It changes nothing, so it can run
// before decryption, with Accept after the tag verified.
func (w *Window) Check(counter uint64) bool {
	if counter >= RejectAfterMessages {
		return false
	}
	if counter > w.last {
		return true
	}
	if w.last-counter >= WindowSize {
		return false
	}
	return w.ring[(counter/blockBits)%windowBlocks]&(1<<(counter%blockBits)) == 0
}

// Accept records counter as seen and reports whether it was acceptable (a
// concurrent duplicate may have been accepted between Check and Accept).
func (w *Window) Accept(counter uint64) bool {
	if !w.Check(counter) {
		return false
	}
	if counter > w.last {
		cur := w.last / blockBits
		diff := counter/blockBits - cur
		if diff > windowBlocks {
			diff = windowBlocks
		}
		for i := cur + 1; i <= cur+diff; i++ {
			w.ring[i%windowBlocks] = 0
		}
		w.last = counter
	}
	w.ring[(counter/blockBits)%windowBlocks] |= 1 << (counter % blockBits)
	return true
}
