package auth

import (
	"crypto/sha256"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ThrottleConfig sets the login throttle. Zero fields take the defaults in brackets.
type ThrottleConfig struct {
	// MaxPerAccount failed logins for one account within Window lock that account for Lockout [5]. This
	// stops guessing one account's password from many sources. It also lets anyone lock an account out
	// for Lockout, which is why the lockout is short and visible rather than permanent.
	MaxPerAccount int
	// MaxPerSource failed logins from one source (see SourceKey) within Window lock that source out of
	// every account for Lockout [20]. This stops one source spraying a common password over many accounts.
	MaxPerSource int
	// Window is how long failures are remembered [15m]; Lockout how long a lock lasts [15m].
	Window, Lockout time.Duration
	// MaxEntries bounds the accounts and the sources remembered (each) [100000]. When full, expired
	// entries go first, then the least recently failed ones that are not locked.
	MaxEntries int
}

func (c ThrottleConfig) withDefaults() ThrottleConfig {
	if c.MaxPerAccount <= 0 {
		c.MaxPerAccount = 5
	}
	if c.MaxPerSource <= 0 {
		c.MaxPerSource = 20
	}
	if c.Window <= 0 {
		c.Window = 15 * time.Minute
	}
	if c.Lockout <= 0 {
		c.Lockout = 15 * time.Minute
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100_000
	}
	return c
}

// Throttle counts failed logins per account and per source in memory. It is safe for concurrent use.
// Keys are stored as 16-byte hashes, so a long or hostile account name costs no more than a short one,
// and the number of entries is bounded (MaxEntries each), so a flood of distinct names or addresses
// cannot exhaust memory: about 100 bytes an entry, 20 MB for both tables at the default bound.
type Throttle struct {
	cfg      ThrottleConfig
	mu       sync.Mutex
	accounts throttleTable
	sources  throttleTable
}

type throttleKey [16]byte

type throttleEntry struct {
	first       time.Time // start of the current window
	last        time.Time // last failure
	failures    int
	lockedUntil time.Time
}

type throttleTable struct {
	m         map[throttleKey]*throttleEntry
	lastSweep time.Time
}

// NewThrottle returns a Throttle with cfg (zero fields take defaults).
func NewThrottle(cfg ThrottleConfig) *Throttle {
	cfg = cfg.withDefaults()
	return &Throttle{
		cfg:      cfg,
		accounts: throttleTable{m: make(map[throttleKey]*throttleEntry)},
		sources:  throttleTable{m: make(map[throttleKey]*throttleEntry)},
	}
}

// Config returns the configuration in force, defaults filled in.
func (t *Throttle) Config() ThrottleConfig { return t.cfg }

// Allow reports whether a login attempt for account from source may be checked at all. When it may not,
// retryAfter says how long until the later of the two locks ends; show it to the person ("try again in
// 14 minutes") and send it as Retry-After. Allow counts nothing; call Failure or Success afterwards.
// An empty account or source is not throttled on that side.
func (t *Throttle) Allow(account, source string, now time.Time) (ok bool, retryAfter time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var until time.Time
	if account != "" {
		if e := t.accounts.m[accountKey(account)]; e != nil && now.Before(e.lockedUntil) {
			until = e.lockedUntil
		}
	}
	if source != "" {
		if e := t.sources.m[sourceKey(source)]; e != nil && now.Before(e.lockedUntil) && e.lockedUntil.After(until) {
			until = e.lockedUntil
		}
	}
	if until.IsZero() {
		return true, 0
	}
	return false, until.Sub(now)
}

// Failure records a failed login (wrong password, wrong TOTP code, unknown account: count them all, or
// the difference tells which accounts exist).
func (t *Throttle) Failure(account, source string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if account != "" {
		t.accounts.fail(accountKey(account), now, t.cfg.MaxPerAccount, t.cfg)
	}
	if source != "" {
		t.sources.fail(sourceKey(source), now, t.cfg.MaxPerSource, t.cfg)
	}
}

// Success forgets the account's failures after a complete, successful login. The source's failures are
// kept on purpose: otherwise an attacker could reset its per-source count by logging in to an account of
// its own between guesses at others.
func (t *Throttle) Success(account, source string) {
	_ = source
	t.mu.Lock()
	defer t.mu.Unlock()
	if account != "" {
		delete(t.accounts.m, accountKey(account))
	}
}

// Len returns how many accounts and sources are remembered (for metrics and tests).
func (t *Throttle) Len() (accounts, sources int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.accounts.m), len(t.sources.m)
}

func (tt *throttleTable) fail(k throttleKey, now time.Time, max int, cfg ThrottleConfig) {
	e := tt.m[k]
	if e == nil {
		tt.makeRoom(now, cfg)
		e = &throttleEntry{first: now}
		tt.m[k] = e
	}
	if now.Before(e.lockedUntil) {
		// Failures while locked are not even checked by a caller that honours Allow; they extend nothing,
		// so a lock always ends Lockout after it began.
		e.last = now
		return
	}
	if now.Sub(e.first) >= cfg.Window {
		e.first, e.failures = now, 0
	}
	e.failures++
	e.last = now
	if e.failures >= max {
		e.lockedUntil = now.Add(cfg.Lockout)
		e.first, e.failures = now, 0
	}
}

func (e *throttleEntry) expired(now time.Time, cfg ThrottleConfig) bool {
	return !now.Before(e.lockedUntil) && now.Sub(e.last) >= cfg.Window
}

// makeRoom keeps the table below MaxEntries. Expired entries are swept once a minute, or once a second
// while the table is full (a sweep walks the whole table, so not on every call of a flood); if it is still full, the least recently failed unlocked entry among a sample is evicted
// (the sample keeps the cost constant; map iteration order is random enough for this). Locked entries
// are evicted only when the sample has nothing else, which needs MaxEntries locked keys at once.
func (tt *throttleTable) makeRoom(now time.Time, cfg ThrottleConfig) {
	full := len(tt.m) >= cfg.MaxEntries
	if since := now.Sub(tt.lastSweep); since >= time.Minute || (full && since >= time.Second) || since < 0 {
		tt.lastSweep = now
		for k, e := range tt.m {
			if e.expired(now, cfg) {
				delete(tt.m, k)
			}
		}
	}
	for len(tt.m) >= cfg.MaxEntries {
		var victim throttleKey
		var best *throttleEntry
		n := 0
		for k, e := range tt.m {
			if best == nil || evictBefore(e, best, now) {
				victim, best = k, e
			}
			if n++; n >= 32 {
				break
			}
		}
		delete(tt.m, victim)
	}
}

// evictBefore reports whether e should be evicted before f: unlocked before locked, then the one whose
// last failure is older.
func evictBefore(e, f *throttleEntry, now time.Time) bool {
	el, fl := now.Before(e.lockedUntil), now.Before(f.lockedUntil)
	if el != fl {
		return !el
	}
	return e.last.Before(f.last)
}

func accountKey(account string) throttleKey {
	return hashKey("a", strings.ToLower(strings.TrimSpace(account)))
}

func sourceKey(source string) throttleKey { return hashKey("s", SourceKey(source)) }

func hashKey(kind, s string) throttleKey {
	sum := sha256.Sum256([]byte(kind + "\x00" + s))
	var k throttleKey
	copy(k[:], sum[:])
	return k
}

// SourceKey reduces a client address ("192.0.2.1", "[2001:db8::1]:443", "2001:db8::1") to the unit the
// throttle counts: the IPv4 address, or the IPv6 /64, since one host usually holds a whole /64 and could
// otherwise use a fresh address for every guess. Strings that are not addresses are used as they are.
func SourceKey(source string) string {
	s := strings.TrimSpace(source)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		s = ap.Addr().String()
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return s
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
