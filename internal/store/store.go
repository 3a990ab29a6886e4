// Package store is Signet's storage: one Store interface that every backend
// (SQLite embedded by default, PostgreSQL for scale-out) implements and that
// the contract suite in storetest checks.
//
// Readings are appended in arrival order with a unique key on (device,
// reading sequence): that key is the final guard of exactly-once storage,
// whatever the bus or the ingest nodes did.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/signet-io/signet/internal/wire"
)

// Error kinds, mapped to HTTP status and exit codes in one place each
// (internal/api, internal/cli). Backends wrap them with %w.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)

// MaxAppend bounds one AppendReadings call, readings plus late hearings
// counted together, so that one transaction cannot hold the write lock (and
// every device's acknowledgement) for long.
const MaxAppend = 16384

// SealedKindSuffix ends the kind of a session state (SaveSessionState) that
// is a secrets envelope sealed under the master key: RewrapSecrets rewraps
// those, and leaves other kinds alone.
const SealedKindSuffix = ".sealed"

// Project groups devices; the live stream and most queries are per project.
type Project struct {
	ID      string // short random id, chosen by the caller
	Name    string
	Created time.Time
}

// Device is a registered sensor. Its identity is its public key.
type Device struct {
	ID        int64 // assigned by the store
	ProjectID string
	PublicKey wire.PublicKey
	Name      string
	Enabled   bool
	Created   time.Time
	Status    DeviceStatus
}

// DeviceStatus is what the server last saw of a device.
type DeviceStatus struct {
	LastSeen time.Time    // zero: never
	Health   *wire.Health // last health report, nil if none
	Relays   []Hearing    // the relays that heard it last, best signal first
}

// Hearing is one relay (or the server's own UDP port, relay id "") having
// heard a datagram: the "network status" of a reading.
type Hearing struct {
	RelayID  string
	Received time.Time
	RSSI     int16   // dBm
	SNR      float32 // dB
}

// Reading is a stored reading: the device's own reading, the raw CBOR as
// received, and which relays heard it.
type Reading struct {
	// ID is assigned by the store on insert, strictly increasing in
	// arrival order across the whole store: it is the cursor of queries and
	// the event id of the live stream.
	ID        int64
	DeviceID  int64
	ProjectID string
	Seq       uint64
	// DeviceTime is the device's clock; Received the server's.
	DeviceTime time.Time
	Received   time.Time
	Kind       wire.Kind
	Value      float64
	Name, Unit string
	Pour       *wire.Pour
	Sealed     []byte
	// Raw is the reading's CBOR exactly as the device sent it.
	Raw []byte
	// Heard lists every relay that heard the reading (filled by queries).
	Heard []Hearing
}

// RelayInfo is a registered relay.
type RelayInfo struct {
	ID      string // also the certificate's common name
	Name    string
	Enabled bool
	Created time.Time
	Status  RelayStatus
}

// RelayStatus is the relay's own report plus the server's view.
type RelayStatus struct {
	Online      bool
	LastSeen    time.Time
	Uptime      time.Duration
	BufferFill  int    // datagrams buffered on disk
	BufferDrops uint64 // datagrams dropped from a full buffer, total
	Uplink      string // connection type: ethernet, wifi, cellular
	SignalDBm   int16  // uplink signal strength
	Version     string
}

// Token is an API bearer token; only its hash is stored.
type Token struct {
	ID      int64
	Name    string
	Hash    []byte // SHA-256 of the token
	Created time.Time
}

// ClaimToken lets devices enrol themselves into a project: each use binds
// one device's own, freshly generated key to a new device record. Only the
// token's hash is stored.
type ClaimToken struct {
	Hash      []byte // SHA-256 of the token
	ProjectID string
	Uses      int       // uses left
	Expires   time.Time // after this the token is refused
	// Approve makes claimed devices wait, disabled, until someone enables
	// them; otherwise they may talk at once.
	Approve bool
	Created time.Time
}

// ReadingQuery selects readings of one project, optionally one device, in
// a time range of Received, in ID order, after a cursor.
type ReadingQuery struct {
	ProjectID string
	DeviceID  int64     // 0: all devices of the project
	From, To  time.Time // zero: unbounded; From inclusive, To exclusive
	AfterID   int64     // cursor: only readings with a larger ID
	Limit     int       // 0: 100; at most 1000
}

// Append is one batch for the store writer: new readings and further
// hearings of readings that may already be stored.
type Append struct {
	Readings []Reading // Heard holds the hearing(s) known at publish time
	Hearings []LateHearing
}

// LateHearing is a relay that heard a reading after it was first stored.
type LateHearing struct {
	DeviceID int64
	Seq      uint64
	Hearing  Hearing
}

// Store is the storage interface. Every method is safe for concurrent use.
type Store interface {
	CreateProject(ctx context.Context, p Project) error
	Projects(ctx context.Context) ([]Project, error)
	Project(ctx context.Context, id string) (Project, error)

	// CreateDevice registers a device; d.ID is ignored and returned.
	// A key registered twice is ErrConflict.
	CreateDevice(ctx context.Context, d Device) (int64, error)
	Device(ctx context.Context, id int64) (Device, error)
	DeviceByKey(ctx context.Context, key wire.PublicKey) (Device, error)
	Devices(ctx context.Context, projectID string) ([]Device, error)
	// DevicesChangedSince lists, in ID order, the devices created after
	// change number since or whose project, key or enabled flag changed
	// after it, whoever wrote them (this process, another process on the
	// same database), and returns the number to pass next time: since on
	// no change. since 0 lists every device. It is how a server follows
	// the registry every two seconds without reading every device:
	// numbers grow in commit order, so a caller that passes next back
	// misses nothing. A status update, a rename or a remote-access setting
	// is not a change.
	DevicesChangedSince(ctx context.Context, since int64) ([]Device, int64, error)
	SetDeviceEnabled(ctx context.Context, id int64, enabled bool) error
	// SetDeviceKey replaces a device's key (key rotation); its readings and
	// settings stay. A key that belongs to another device is ErrConflict.
	SetDeviceKey(ctx context.Context, id int64, key wire.PublicKey) error
	SetDeviceStatus(ctx context.Context, id int64, st DeviceStatus) error

	// AppendReadings stores a batch in one transaction. Readings whose
	// (device, seq) is already stored are skipped, not errors; their
	// hearings are still recorded. It returns the readings actually
	// inserted, with their IDs, in order. A batch of more than MaxAppend
	// readings and hearings together is ErrInvalid: the caller splits it.
	AppendReadings(ctx context.Context, a Append) ([]Reading, error)
	Readings(ctx context.Context, q ReadingQuery) ([]Reading, error)
	// LastReading returns a device's most recent reading, or ErrNotFound.
	LastReading(ctx context.Context, deviceID int64) (Reading, error)

	CreateRelay(ctx context.Context, r RelayInfo) error
	Relay(ctx context.Context, id string) (RelayInfo, error)
	Relays(ctx context.Context) ([]RelayInfo, error)
	SetRelayEnabled(ctx context.Context, id string, enabled bool) error
	SetRelayStatus(ctx context.Context, id string, st RelayStatus) error

	CreateClaimToken(ctx context.Context, t ClaimToken) error
	// ClaimDevice spends one use of the claim token with this hash to
	// register key as a new device of the token's project (enabled unless
	// the token asks for approval), in one transaction. An unknown,
	// expired or used-up token is ErrNotFound; a key already registered is
	// ErrConflict and spends nothing.
	ClaimDevice(ctx context.Context, hash []byte, key wire.PublicKey, name string, now time.Time) (Device, error)

	// SaveSessionState stores a device's sealed session state of a kind
	// (e.g. its transmit-only epoch), replacing the previous one, so it
	// survives a restart. The store never sees it in clear.
	SaveSessionState(ctx context.Context, deviceID int64, kind string, sealed []byte) error
	// SessionStates returns every device's sealed state of a kind.
	SessionStates(ctx context.Context, kind string) (map[int64][]byte, error)

	CreateToken(ctx context.Context, t Token) (int64, error)
	TokenByHash(ctx context.Context, hash []byte) (Token, error)
	// CountTokens lets the server know whether to print a bootstrap token.
	CountTokens(ctx context.Context) (int, error)

	// Access is tenancy, users, sessions, service accounts and staff
	// grants (access.go).
	Access

	Close() error
}
