package cli

import (
	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// refused sums every counter of datagrams the server refused.
func refused(st *ingest.Stats) uint64 {
	return st.Malformed.Load() + st.HandshakeFailures.Load() + st.HandshakeReplays.Load() + st.UnknownSession.Load() +
		st.DecryptFailures.Load() + st.Replays.Load() + st.Expired.Load() + st.BadPayloads.Load() + st.RateLimited.Load()
}

// wireReading turns a stored reading back into the device's form, for
// printing.
func wireReading(r store.Reading) wire.Reading {
	return wire.Reading{Seq: r.Seq, Kind: r.Kind, Value: r.Value, Name: r.Name, Unit: r.Unit, Pour: r.Pour}
}
