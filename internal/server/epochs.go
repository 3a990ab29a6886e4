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

const epochStateKind = "epoch"

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

func (s *Server) sealEpoch(id int64, st ingest.EpochState) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(s.stateKey[:])
	if err != nil {
		return nil, err
	}
	var pt [4 + 32 + 32 + 8 + 8]byte
	binary.LittleEndian.PutUint32(pt[0:], st.Index)
	copy(pt[4:], st.Key[:])
	copy(pt[36:], st.Ephemeral[:])
	binary.BigEndian.PutUint64(pt[68:], st.Timestamp)
	binary.BigEndian.PutUint64(pt[76:], uint64(st.Opened.UnixMilli()))
	defer clear(pt[:])
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, 1+chacha20poly1305.NonceSizeX+len(pt)+aead.Overhead())
	out[0] = 1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], pt[:], stateAD(id)), nil
}

func (s *Server) openEpoch(id int64, b []byte) (ingest.EpochState, error) {
	var st ingest.EpochState
	aead, err := chacha20poly1305.NewX(s.stateKey[:])
	if err != nil || len(b) < 1+chacha20poly1305.NonceSizeX || b[0] != 1 {
		return st, errBadState
	}
	pt, err := aead.Open(nil, b[1:1+chacha20poly1305.NonceSizeX], b[1+chacha20poly1305.NonceSizeX:], stateAD(id))
	if err != nil || len(pt) != 84 {
		return st, errBadState
	}
	defer clear(pt)
	st.Index = binary.LittleEndian.Uint32(pt[0:])
	copy(st.Key[:], pt[4:36])
	copy(st.Ephemeral[:], pt[36:68])
	st.Timestamp = binary.BigEndian.Uint64(pt[68:])
	st.Opened = time.UnixMilli(int64(binary.BigEndian.Uint64(pt[76:])))
	return st, nil
}

func stateAD(id int64) []byte { return []byte("epoch/" + strconv.FormatInt(id, 10)) }

// saveEpoch is ingest's OnEpoch hook.
func (s *Server) saveEpoch(info ingest.DeviceInfo, st ingest.EpochState) {
	if info.ID == 0 {
		return
	}
	sealed, err := s.sealEpoch(info.ID, st)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.store.SaveSessionState(ctx, info.ID, epochStateKind, sealed)
		cancel()
	}
	if err != nil {
		s.log.Error("transmit-only epoch not persisted; it will not survive a restart", "device", info.ID, "err", err)
	}
}

// restoreEpochs brings back the transmit-only epochs saved before a
// restart.
func (s *Server) restoreEpochs(ctx context.Context) error {
	states, err := s.store.SessionStates(ctx, epochStateKind)
	if err != nil {
		return err
	}
	s.knownMu.Lock()
	keys := make(map[int64]wire.PublicKey, len(s.deviceKeys))
	for id, k := range s.deviceKeys {
		if s.known[id] {
			keys[id] = k
		}
	}
	s.knownMu.Unlock()
	for id, b := range states {
		pub, ok := keys[id]
		if !ok {
			continue
		}
		st, err := s.openEpoch(id, b)
		if err != nil {
			s.log.Warn("saved epoch does not open; ignored", "device", id)
			continue
		}
		_ = s.ingest.RestoreEpoch(pub, st)
		clear(st.Key[:])
	}
	return nil
}
