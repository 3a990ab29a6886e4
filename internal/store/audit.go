package store

import (
	"context"
	"time"
)

// The audit log's storage (internal/audit and docs/audit.md). The store keeps
// rows and enforces the shape of each organisation's chain (sequence numbers
// without gaps, one row per number); the hashes and signatures that make the
// chain tamper-evident are computed and checked by internal/audit, so that a
// backend cannot vouch for itself.

// MaxAuditAppend bounds one AppendAudit call, entries plus checkpoints.
const MaxAuditAppend = 1024

// AuditEntry is one stored entry of an organisation's audit chain.
type AuditEntry struct {
	Org string
	// Seq numbers the organisation's entries 1, 2, 3, … without gaps.
	Seq    int64
	Time   time.Time // whole milliseconds
	Actor  string
	Action string
	Target string
	Source string
	Detail string
	// Prev is the hash of the organisation's entry Seq-1 (32 zero bytes
	// for entry 1); Hash is this entry's own (see internal/audit).
	Prev, Hash []byte
}

// AuditCheckpoint is a signed statement that an organisation's chain had a
// given head. Checkpoints of every organisation form one chain of their own
// (Num 1, 2, 3, …, each holding the hash of the one before), so that deleting
// a whole organisation's log, or a checkpoint in the middle, shows.
type AuditCheckpoint struct {
	Num  int64
	Prev []byte // hash of checkpoint Num-1; 32 zero bytes for the first
	Org  string
	Seq  int64  // the organisation's entry the checkpoint vouches for
	Head []byte // that entry's hash
	Time time.Time
	// KeyID names the audit key that signed; Sig is the Ed25519 signature.
	KeyID, Sig []byte
}

// AuditStore keeps audit entries and checkpoints. Nothing in it is ever
// updated or deleted. Every method is safe for concurrent use, also by
// several processes on the same database (the server and the admin
// command).
type AuditStore interface {
	// AppendAudit stores entries and then checkpoints in one transaction:
	// all or none. Each entry must be its organisation's next (Seq one more
	// than the last stored, counting earlier entries of the same call) and
	// each checkpoint the next checkpoint (Num likewise), else the call is
	// ErrConflict: another writer got there first, and the caller reloads
	// the heads and tries again. A checkpoint must name a stored (or
	// appended) entry with Hash equal to its Head, and every byte field
	// must be non-empty, else ErrInvalid; so is a call with more than
	// MaxAuditAppend items.
	AppendAudit(ctx context.Context, entries []AuditEntry, checkpoints []AuditCheckpoint) error
	// AuditEntries lists an organisation's entries with Seq > afterSeq in
	// Seq order; limit 0 is 100, at most 1000.
	AuditEntries(ctx context.Context, org string, afterSeq int64, limit int) ([]AuditEntry, error)
	// AuditHead is an organisation's last entry, or ErrNotFound.
	AuditHead(ctx context.Context, org string) (AuditEntry, error)
	// AuditOrgs lists every organisation that has an entry or a
	// checkpoint, in order.
	AuditOrgs(ctx context.Context) ([]string, error)
	// AuditUnsigned returns, for every organisation whose last entry is
	// newer than its last checkpoint (or that has none), that last entry,
	// in Org order.
	AuditUnsigned(ctx context.Context) ([]AuditEntry, error)
	// AuditCheckpoints lists checkpoints with Num > afterNum in Num order,
	// of every organisation; limit as for AuditEntries.
	AuditCheckpoints(ctx context.Context, afterNum int64, limit int) ([]AuditCheckpoint, error)
	// AuditOrgCheckpoints lists one organisation's checkpoints with Num >
	// afterNum in Num order; limit as for AuditEntries.
	AuditOrgCheckpoints(ctx context.Context, org string, afterNum int64, limit int) ([]AuditCheckpoint, error)
	// LastAuditCheckpoint is the checkpoint with the highest Num, or
	// ErrNotFound.
	LastAuditCheckpoint(ctx context.Context) (AuditCheckpoint, error)
}
