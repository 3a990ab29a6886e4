package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/audit"
)

// AuditRecord is one entry of an organisation's log as the API shows it.
type AuditRecord struct {
	Seq int64
	audit.Entry
}

// AuditLister reads an organisation's audit log (internal/audit's Log,
// adapted by the server): entries after afterSeq, in order, at most limit.
type AuditLister interface {
	List(ctx context.Context, org string, afterSeq int64, limit int) ([]AuditRecord, error)
}

type auditJSON struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Source string    `json:"source,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

type auditPage struct {
	Entries []auditJSON `json:"entries"`
	// Next is the "after" of the next page; absent on the last page.
	Next int64 `json:"next,omitempty"`
}

// orgAudit serves the organisation's audit log to its people, staff
// accesses included.
func (a *API) orgAudit(w http.ResponseWriter, r *http.Request) error {
	if a.auditLog == nil {
		return unavailable("the audit log is not available on this server")
	}
	q := r.URL.Query()
	var after int64
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return invalid("after must be a sequence number")
		}
		after = n
	}
	limit := defaultLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return invalid("limit must be an integer from 1 to 1000")
		}
		limit = n
	}
	es, err := a.auditLog.List(r.Context(), r.PathValue("org"), after, limit)
	if err != nil {
		return err
	}
	page := auditPage{Entries: make([]auditJSON, 0, len(es))}
	for _, e := range es {
		page.Entries = append(page.Entries, auditJSON{Seq: e.Seq, Time: e.Time.UTC(), Actor: e.Actor, Action: e.Action,
			Target: e.Target, Source: e.Source, Detail: e.Detail})
	}
	if len(es) == limit {
		page.Next = es[len(es)-1].Seq
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// auditRecords is what internal/audit's Log offers to read a chain.
type auditRecords interface {
	List(ctx context.Context, org string, afterSeq int64, limit int) ([]audit.Record, error)
}

// AuditLogOf adapts an *audit.Log to AuditLister, for Config.AuditLog.
func AuditLogOf(l auditRecords) AuditLister { return auditAdapter{l} }

type auditAdapter struct{ l auditRecords }

func (a auditAdapter) List(ctx context.Context, org string, afterSeq int64, limit int) ([]AuditRecord, error) {
	rs, err := a.l.List(ctx, org, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	out := make([]AuditRecord, len(rs))
	for i, r := range rs {
		out[i] = AuditRecord{Seq: r.Seq, Entry: r.Entry}
	}
	return out, nil
}
