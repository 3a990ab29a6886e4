package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// Transmit-only epochs survive a restart: a transmit-only device cannot hear
// that the server forgot its epoch and would send into the void until the
// epoch ends (up to T). The state is sealed before it reaches the store
// (XChaCha20-Poly1305 under a key derived from the server's static key, with
// the device id as associated data), so a copy of the database alone reveals
// no epoch key.
//
//	version 1 | nonce (24) | seal(index u32 LE | key 32 | ephemeral 32 | timestamp u64 BE | opened unix ms i64 BE)

// With a master key, the state is sealed under it instead (secrets.Sealer:
// a data key per record, wrapped by the master key, rewrapped by
// "signet admin rotate-master-key") and stored under its own kind, which
// the store's RewrapSecrets knows by its ".sealed" suffix.
const (
	epochStateKind       = "epoch"
	epochSealedStateKind = "epoch" + store.SealedKindSuffix
)

var errBadState = errors.New("server: session state does not open")

// deriveStateKey derives the session-state sealing key from the server's
// static private key (a keyed BLAKE2s with its own label, so the key is
// never used for anything else).
func deriveStateKey(k *wire.PrivateKey) [32]byte {
	h, _ := blake2s.New256(k[:])
	h.Write([]byte("signet session state v1"))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// sealEpoch seals a device's epoch state and says under which kind it is
// stored.
func (s *Server) sealEpoch(id int64, st ingest.EpochState) (sealed []byte, kind string, err error) {
	var pt [epochStateSize]byte
	binary.LittleEndian.PutUint32(pt[0:], st.Index)
	copy(pt[4:], st.Key[:])
	copy(pt[36:], st.Ephemeral[:])
	binary.BigEndian.PutUint64(pt[68:], st.Timestamp)
	binary.BigEndian.PutUint64(pt[76:], uint64(st.Opened.UnixMilli()))
	defer clear(pt[:])
	if s.keyring != nil {
		b, err := s.keyring.Seal(pt[:], sealedStateAD(id))
		return b, epochSealedStateKind, err
	}
	aead, err := chacha20poly1305.NewX(s.stateKey[:])
	if err != nil {
		return nil, "", err
	}
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, 1+chacha20poly1305.NonceSizeX+len(pt)+aead.Overhead())
	out[0] = 1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, "", err
	}
	return aead.Seal(out, out[1:], pt[:], stateAD(id)), epochStateKind, nil
}

const epochStateSize = 4 + 32 + 32 + 8 + 8

func (s *Server) openEpoch(id int64, kind string, b []byte) (ingest.EpochState, error) {
	var st ingest.EpochState
	var pt []byte
	switch kind {
	case epochSealedStateKind:
		if s.keyring == nil {
			return st, errBadState
		}
		var err error
		if pt, err = s.keyring.Open(b, sealedStateAD(id)); err != nil {
			return st, errBadState
		}
	default:
		aead, err := chacha20poly1305.NewX(s.stateKey[:])
		if err != nil || len(b) < 1+chacha20poly1305.NonceSizeX || b[0] != 1 {
			return st, errBadState
		}
		if pt, err = aead.Open(nil, b[1:1+chacha20poly1305.NonceSizeX], b[1+chacha20poly1305.NonceSizeX:], stateAD(id)); err != nil {
			return st, errBadState
		}
	}
	defer clear(pt)
	if len(pt) != epochStateSize {
		return st, errBadState
	}
	st.Index = binary.LittleEndian.Uint32(pt[0:])
	copy(st.Key[:], pt[4:36])
	copy(st.Ephemeral[:], pt[36:68])
	st.Timestamp = binary.BigEndian.Uint64(pt[68:])
	st.Opened = time.UnixMilli(int64(binary.BigEndian.Uint64(pt[76:])))
	return st, nil
}

func stateAD(id int64) []byte { return []byte("epoch/" + strconv.FormatInt(id, 10)) }

// sealedStateAD binds a master-key-sealed state to its row: table, kind,
// device.
func sealedStateAD(id int64) []byte {
	return []byte("session_state." + epochSealedStateKind + "/" + strconv.FormatInt(id, 10))
}

// saveEpoch is ingest's OnEpoch hook.
func (s *Server) saveEpoch(info ingest.DeviceInfo, st ingest.EpochState) {
	if info.ID == 0 {
		return
	}
	sealed, kind, err := s.sealEpoch(info.ID, st)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.store.SaveSessionState(ctx, info.ID, kind, sealed)
		cancel()
	}
	if err != nil {
		s.log.Error("transmit-only epoch not persisted; it will not survive a restart", "device", info.ID, "err", err)
	}
}

// restoreEpochs brings back the transmit-only epochs saved before a
// restart.
func (s *Server) restoreEpochs(ctx context.Context) error {
	// Both kinds: a master key may have been set up since the state was
	// saved. The newer one wins.
	type saved struct {
		kind string
		b    []byte
	}
	states := map[int64][]saved{}
	for _, kind := range []string{epochStateKind, epochSealedStateKind} {
		m, err := s.store.SessionStates(ctx, kind)
		if err != nil {
			return err
		}
		for id, b := range m {
			states[id] = append(states[id], saved{kind, b})
		}
	}
	s.knownMu.Lock()
	keys := make(map[int64]wire.PublicKey, len(s.deviceKeys))
	for id, k := range s.deviceKeys {
		if s.known[id] {
			keys[id] = k
		}
	}
	s.knownMu.Unlock()
	for id, list := range states {
		pub, ok := keys[id]
		if !ok {
			continue
		}
		var best ingest.EpochState
		for _, sv := range list {
			st, err := s.openEpoch(id, sv.kind, sv.b)
			if err != nil {
				s.log.Warn("saved epoch does not open; ignored", "device", id, "kind", sv.kind)
				continue
			}
			if st.Opened.After(best.Opened) {
				clear(best.Key[:])
				best = st
			} else {
				clear(st.Key[:])
			}
		}
		if !best.Opened.IsZero() {
			_ = s.ingest.RestoreEpoch(pub, best)
			clear(best.Key[:])
		}
	}
	return nil
}
