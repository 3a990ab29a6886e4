package audit

import (
	"context"
	"time"
)

// Entry is one event for the audit log: who did what to which target,
// when and from where. Record fills Time and the chain fields; callers fill
// the rest. No field may hold a secret (a token, a password, a TOTP code).
type Entry struct {
	// Org is the organisation whose log the entry belongs to; "" is the
	// installation's own log (staff and operator actions with no tenant).
	Org string
	// Actor names who acted: "user:ID", "service:ID", "staff:ID",
	// "cli:OSUSER", "system".
	Actor string
	// Action is a dotted verb, e.g. "device.revoke", "login.fail",
	// "staff.grant", "relay.add".
	Action string
	// Target is what was acted on, e.g. "project:p1/device:17"; may be "".
	Target string
	// Source is where the request came from: the client address, or "cli".
	Source string
	// Detail is free text for a human (never a secret); may be "".
	Detail string
	// Time is when it happened; Record sets it when zero.
	Time time.Time
}

// Recorder is what the API, the CLI and the server call to log an event.
// An error means the event was not recorded; a write that cannot be
// audited must fail.
type Recorder interface {
	Record(ctx context.Context, e Entry) error
}
