package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// PasswordParams are the argon2id cost parameters. They are written into every hash, so they can be raised
// later: hashes made with lower parameters still verify, and CheckPassword reports that they need a rehash.
type PasswordParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over the memory
	Threads uint8  // lanes
}

// DefaultPasswordParams are the parameters new hashes get. 64 MiB, 3 passes, 2 lanes takes about 150 ms on
// one core of the reference machine (docs/access.md has the measurement): slow enough that an offline
// guess costs real memory and time, fast enough that a login does not feel slow. Tests of other packages
// may lower it once, before any goroutine hashes (for example in TestMain); it is not safe to change
// while passwords are being hashed.
var DefaultPasswordParams = PasswordParams{Memory: 64 * 1024, Time: 3, Threads: 2}

// MaxConcurrentHashes bounds how many argon2id computations run at once (each holds Memory KiB), so a
// burst of logins cannot exhaust the server's memory: the rest wait their turn.
const MaxConcurrentHashes = 4

var hashSlots = make(chan struct{}, MaxConcurrentHashes)

const (
	saltLen = 16
	keyLen  = 32

	// Limits on parameters read from a stored hash: a corrupted or planted hash must not make a login
	// allocate gigabytes or spin for minutes.
	maxMemory  = 1 << 20 // KiB = 1 GiB
	maxTime    = 64
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
)

// ErrBadHash is returned by CheckPassword for a stored hash it cannot parse. It never says more, because
// a stored hash is a secret.
var ErrBadHash = errors.New("auth: stored password hash is malformed")

// HashPassword hashes pw with argon2id and DefaultPasswordParams and a fresh 16-byte salt, and returns the
// PHC string: $argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash> (unpadded standard base64).
func HashPassword(pw string) (string, error) {
	p := DefaultPasswordParams
	if p.Memory < 8*uint32(p.Threads) || p.Time < 1 || p.Threads < 1 || p.Memory > maxMemory || p.Time > maxTime {
		return "", fmt.Errorf("auth: invalid password parameters m=%d t=%d p=%d", p.Memory, p.Time, p.Threads)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := derive(pw, salt, p, keyLen)
	return encodePHC(p, salt, key), nil
}

// CheckPassword reports whether pw matches the PHC string encoded. needsRehash is true when pw matched
// and the hash was made with parameters weaker than DefaultPasswordParams; the caller should then store
// HashPassword(pw). err is non-nil only for a hash that cannot be parsed (ErrBadHash).
func CheckPassword(encoded, pw string) (ok, needsRehash bool, err error) {
	h, err := parsePHC(encoded)
	if err != nil {
		return false, false, err
	}
	key := derive(pw, h.salt, h.params, uint32(len(h.key)))
	if subtle.ConstantTimeCompare(key, h.key) != 1 {
		return false, false, nil
	}
	d := DefaultPasswordParams
	weaker := h.params.Memory < d.Memory || h.params.Time < d.Time || h.params.Threads < d.Threads ||
		len(h.salt) < saltLen || len(h.key) < keyLen
	return true, weaker, nil
}

// EqualizePasswordTiming spends the time of one CheckPassword with the current parameters and discards
// the result. Call it when a login names an account that does not exist (or has no password), so the
// answer takes as long as for a real account and does not reveal which accounts exist.
func EqualizePasswordTiming(pw string) {
	var salt [saltLen]byte
	derive(pw, salt[:], DefaultPasswordParams, keyLen)
}

func derive(pw string, salt []byte, p PasswordParams, n uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	threads := p.Threads
	if threads < 1 {
		threads = 1
	}
	return argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, threads, n)
}

type phc struct {
	params PasswordParams
	salt   []byte
	key    []byte
}

var b64 = base64.RawStdEncoding

func encodePHC(p PasswordParams, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// parsePHC parses the argon2id PHC string strictly: exactly the form encodePHC writes, version 19,
// parameters in the order m, t, p and within limits. Anything else is ErrBadHash.
func parsePHC(s string) (phc, error) {
	var h phc
	// encoding/base64 skips \r and \n even in strict mode, so a hash with a
	// line break inside its salt or key would decode as if it had none.
	if len(s) > 256 || strings.ContainsAny(s, "\r\n") {
		return h, ErrBadHash
	}
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, ErrBadHash
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return h, ErrBadHash
	}
	m, ok1 := paramValue(kv[0], "m=", maxMemory)
	t, ok2 := paramValue(kv[1], "t=", maxTime)
	p, ok3 := paramValue(kv[2], "p=", 255)
	if !ok1 || !ok2 || !ok3 || t < 1 || p < 1 || m < 8*p {
		return h, ErrBadHash
	}
	h.params = PasswordParams{Memory: uint32(m), Time: uint32(t), Threads: uint8(p)}
	var err error
	if h.salt, err = b64.Strict().DecodeString(parts[4]); err != nil || len(h.salt) < minSaltLen || len(h.salt) > maxSaltLen {
		return phc{}, ErrBadHash
	}
	if h.key, err = b64.Strict().DecodeString(parts[5]); err != nil || len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
		return phc{}, ErrBadHash
	}
	return h, nil
}

// paramValue parses "name=decimal" with no sign, no leading zeros and value ≤ max.
func paramValue(s, name string, max uint64) (uint64, bool) {
	v, ok := strings.CutPrefix(s, name)
	if !ok || v == "" || len(v) > 10 || (len(v) > 1 && v[0] == '0') {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > max {
		return 0, false
	}
	return n, true
}
