// Package secrets keeps Signet's secrets at rest (DESIGN §4): session state
// that must survive a restart, webhook and TOTP secrets, the CA's private
// keys, the server key, the tokens' pepper. Each secret is sealed with its
// own fresh data key (AES-256-GCM), and the data key is wrapped by a master
// key that lives outside the database: a key file (mode 0600) or an
// environment variable. A copy of the database, or of the data directory
// without the master key, reveals none of them.
//
// Rotating the master key rewraps every data key and leaves every payload
// untouched, so it is cheap, and it runs while the server does: a Keyring
// holds the current master key and, during a rotation, the previous one.
//
// The envelope format is in envelope.go and docs/secrets.md; byte-exact
// vectors are in testdata/.
package secrets

import (
	"errors"
)

// Sealer is what packages that keep secrets take: a Keyring, or in tests
// anything that round-trips. aad (additional authenticated data) is not
// secret and not stored; it binds a sealed value to where it belongs (for
// example "webhooks.secret/42": table, column, row), so that a value copied
// into another row or column fails to open.
type Sealer interface {
	// Seal encrypts plaintext under a fresh data key, bound to aad.
	Seal(plaintext, aad []byte) ([]byte, error)
	// Open decrypts a value from Seal given the same aad. Every failure is
	// ErrDecrypt.
	Open(sealed, aad []byte) ([]byte, error)
}

// ErrDecrypt is the one error for a sealed value that does not open: wrong
// or unknown master key, wrong aad, damaged or truncated bytes, unknown
// version. Which check failed is not said (STYLE: opaque crypto failures);
// Keyring.Failures counts them.
var ErrDecrypt = errors.New("secrets: decryption failed")

// ErrNoMasterKey is returned by LoadKeyring for a Config that names no
// master key.
var ErrNoMasterKey = errors.New("secrets: no master key configured")

// ErrNotSealed is returned by OpenFile for a file that is not a sealed
// file (a key written in clear before a master key was configured).
var ErrNotSealed = errors.New("secrets: file is not sealed")

// MaxPlaintext bounds one sealed value. Secrets are small (keys, tokens,
// session state); the bound keeps a damaged length from becoming a large
// allocation and is far below AES-GCM's limit per message.
const MaxPlaintext = 16 << 20
