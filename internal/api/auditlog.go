package api

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/audit"
)

// AuditLister reads one organisation's audit chain and its signed
// checkpoints; *audit.Log implements it. The API serves them to the
// organisation's people, who can check the chain themselves
// (audit.VerifyRecords) with the public key.
type AuditLister interface {
	List(ctx context.Context, org string, afterSeq int64, limit int) ([]audit.Record, error)
	Checkpoints(ctx context.Context, org string, afterNum int64, limit int) ([]audit.Checkpoint, error)
	PublicKey() ed25519.PublicKey
}

type auditJSON struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Source string    `json:"source,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Prev   string    `json:"prev"` // hex SHA-256 of entry seq-1
	Hash   string    `json:"hash"` // hex SHA-256 of this entry
}

type auditPage struct {
	Entries []auditJSON `json:"entries"`
	// Next is the "after" of the next page; absent on the last page.
	Next int64 `json:"next,omitempty"`
}

type checkpointJSON struct {
	Num  int64     `json:"num"`
	Prev string    `json:"prev"`
	Seq  int64     `json:"seq"`
	Head string    `json:"head"`
	Time time.Time `json:"time"`
	Key  string    `json:"key"`
	Sig  []byte    `json:"sig"` // standard base64 Ed25519 signature
}

type checkpointPage struct {
	Checkpoints []checkpointJSON `json:"checkpoints"`
	Next        int64            `json:"next,omitempty"`
	// PublicKey is the server's audit key (standard base64), which signs
	// every checkpoint; compare it with the one the operator published.
	PublicKey []byte `json:"public_key,omitempty"`
}

// pageParams reads after and limit.
func pageParams(r *http.Request) (after int64, limit int, err error) {
	q := r.URL.Query()
	if s := q.Get("after"); s != "" {
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, invalid("after must be a sequence number")
		}
		after = n
	}
	limit = defaultLimit
	if s := q.Get("limit"); s != "" {
		n, perr := strconv.Atoi(s)
		if perr != nil || n < 1 || n > maxLimit {
			return 0, 0, invalid("limit must be an integer from 1 to 1000")
		}
		limit = n
	}
	return after, limit, nil
}

// orgAudit serves the organisation's audit log to its people, staff
// accesses included.
func (a *API) orgAudit(w http.ResponseWriter, r *http.Request) error {
	if a.auditLog == nil {
		return unavailable("the audit log is not available on this server")
	}
	after, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	es, err := a.auditLog.List(r.Context(), r.PathValue("org"), after, limit)
	if err != nil {
		return err
	}
	page := auditPage{Entries: make([]auditJSON, 0, len(es))}
	for _, e := range es {
		page.Entries = append(page.Entries, auditJSON{Seq: e.Seq, Time: e.Time.UTC(), Actor: e.Actor, Action: e.Action,
			Target: e.Target, Source: e.Source, Detail: e.Detail, Prev: hex.EncodeToString(e.Prev[:]),
			Hash: hex.EncodeToString(e.Hash[:])})
	}
	if len(es) == limit {
		page.Next = es[len(es)-1].Seq
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// orgAuditCheckpoints serves the signed checkpoints of the organisation's
// chain and the key that signs them.
func (a *API) orgAuditCheckpoints(w http.ResponseWriter, r *http.Request) error {
	if a.auditLog == nil {
		return unavailable("the audit log is not available on this server")
	}
	after, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	cs, err := a.auditLog.Checkpoints(r.Context(), r.PathValue("org"), after, limit)
	if err != nil {
		return err
	}
	page := checkpointPage{Checkpoints: make([]checkpointJSON, 0, len(cs)), PublicKey: a.auditLog.PublicKey()}
	for _, c := range cs {
		page.Checkpoints = append(page.Checkpoints, checkpointJSON{Num: c.Num, Prev: hex.EncodeToString(c.Prev[:]),
			Seq: c.Seq, Head: hex.EncodeToString(c.Head[:]), Time: c.Time.UTC(), Key: hex.EncodeToString(c.Key[:]), Sig: c.Sig})
	}
	if len(cs) == limit {
		page.Next = cs[len(cs)-1].Num
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}
