package api

import (
	"os"
	"testing"

	"github.com/signet-io/signet/internal/auth"
)

// TestMain makes password hashing cheap, so that the suite, which signs up
// and logs in many times, stays fast under -race; internal/auth tests the
// production parameters.
func TestMain(m *testing.M) {
	auth.DefaultPasswordParams = auth.PasswordParams{Memory: 256, Time: 1, Threads: 1}
	os.Exit(m.Run())
}
