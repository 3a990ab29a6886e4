package auth

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/procstat"
)

// productionParams are the defaults the package ships with; TestMain lowers DefaultPasswordParams so the
// suite stays fast under -race, and the benchmark and the vector test use these.
var productionParams = DefaultPasswordParams

var cheapParams = PasswordParams{Memory: 256, Time: 1, Threads: 1}

func TestMain(m *testing.M) {
	DefaultPasswordParams = cheapParams
	os.Exit(m.Run())
}

func TestProductionParams(t *testing.T) {
	// The documented parameters (docs/access.md); a change here must come with a new measurement.
	if productionParams != (PasswordParams{Memory: 64 * 1024, Time: 3, Threads: 2}) {
		t.Fatalf("production parameters changed to %+v", productionParams)
	}
}

var phcRE = regexp.MustCompile(`^\$argon2id\$v=19\$m=256,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestPasswordRoundTrip(t *testing.T) {
	const pw = "tangerine-otter-cobalt"
	h1, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if !phcRE.MatchString(h1) {
		t.Fatalf("hash %q is not the PHC form with the current parameters", h1)
	}
	h2, _ := HashPassword(pw)
	if h1 == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	ok, rehash, err := CheckPassword(h1, pw)
	if err != nil || !ok || rehash {
		t.Fatalf("CheckPassword(right) = %v, %v, %v", ok, rehash, err)
	}
	for _, wrong := range []string{"", "tangerine-otter-cobalT", "tangerine-otter-cobalt ", "tangerine-otter-coba"} {
		if ok, _, err := CheckPassword(h1, wrong); ok || err != nil {
			t.Errorf("CheckPassword(%q) = %v, %v; want false, nil", wrong, ok, err)
		}
	}
}

// The reference implementation (phc-winner-argon2) made these; our parser and argon2 must agree with it.
func TestPasswordReferenceVectors(t *testing.T) {
	f, err := os.Open("testdata/argon2id-vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pw, enc, _ := strings.Cut(line, "\t")
		ok, _, err := CheckPassword(enc, pw)
		if err != nil || !ok {
			t.Errorf("vector %q: ok=%v err=%v", enc, ok, err)
		}
		if ok, _, _ := CheckPassword(enc, pw+"!"); ok {
			t.Errorf("vector %q accepts a wrong password", enc)
		}
		h, err := parsePHC(enc)
		if err != nil {
			t.Fatal(err)
		}
		if got := encodePHC(h.params, h.salt, h.key); got != enc {
			t.Errorf("re-encoding %q gave %q", enc, got)
		}
		n++
	}
	if n < 4 {
		t.Fatalf("only %d vectors read", n)
	}
}

// Our hashes must verify with the reference CLI too (so stored hashes are portable). Needs the Debian
// package argon2.
func TestPasswordAgainstReferenceCLI(t *testing.T) {
	bin, err := exec.LookPath("argon2")
	if err != nil {
		t.Skip("argon2 (Debian package argon2) not installed; apt-get install argon2")
	}
	const pw = "violet-harbour-seventeen"
	enc, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := parsePHC(enc)
	// The CLI takes the salt as a string; use a salt made of printable bytes so it can be passed.
	h.salt = []byte("printable-salt-16")
	want := encodePHC(h.params, h.salt, derive(pw, h.salt, h.params, keyLen))
	cmd := exec.Command(bin, string(h.salt), "-id", "-t", fmt.Sprint(h.params.Time), "-k", fmt.Sprint(h.params.Memory),
		"-p", fmt.Sprint(h.params.Threads), "-l", fmt.Sprint(keyLen), "-e")
	cmd.Stdin = strings.NewReader(pw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("reference CLI: %s\nours:          %s", got, want)
	}
}

func TestPasswordRehash(t *testing.T) {
	defer func(p PasswordParams) { DefaultPasswordParams = p }(DefaultPasswordParams)
	const pw = "lantern-pebble-quartz"
	old, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	for _, raised := range []PasswordParams{
		{Memory: 512, Time: 1, Threads: 1},
		{Memory: 256, Time: 2, Threads: 1},
		{Memory: 256, Time: 1, Threads: 2},
	} {
		DefaultPasswordParams = raised
		ok, rehash, err := CheckPassword(old, pw)
		if err != nil || !ok || !rehash {
			t.Fatalf("after raising to %+v: ok=%v rehash=%v err=%v; want old hash to verify and need a rehash", raised, ok, rehash, err)
		}
		if ok, rehash, _ := CheckPassword(old, "wrong"); ok || rehash {
			t.Fatal("wrong password reported a rehash")
		}
		fresh, err := HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		if ok, rehash, _ := CheckPassword(fresh, pw); !ok || rehash {
			t.Fatalf("fresh hash under %+v: ok=%v rehash=%v", raised, ok, rehash)
		}
	}
	// Lowering the defaults never asks to rehash a stronger hash.
	DefaultPasswordParams = PasswordParams{Memory: 64, Time: 1, Threads: 1}
	if ok, rehash, _ := CheckPassword(old, pw); !ok || rehash {
		t.Fatalf("stronger hash: ok=%v rehash=%v", ok, rehash)
	}
}

func TestCheckPasswordMalformed(t *testing.T) {
	good, _ := HashPassword("x")
	parts := strings.Split(good, "$")
	salt, key := parts[4], parts[5]
	bad := []string{
		"",
		"password",
		"$argon2i$v=19$m=256,t=1,p=1$" + salt + "$" + key,
		"$argon2d$v=19$m=256,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=16$m=256,t=1,p=1$" + salt + "$" + key,
		"$argon2id$m=256,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$t=1,m=256,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=256,t=1$" + salt + "$" + key,
		"$argon2id$v=19$m=256,t=0,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=256,t=1,p=0$" + salt + "$" + key,
		"$argon2id$v=19$m=4,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=4194304,t=1,p=1$" + salt + "$" + key, // 4 GiB: refused before allocating
		"$argon2id$v=19$m=256,t=1000000,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=256,t=1,p=256$" + salt + "$" + key,
		"$argon2id$v=19$m=0256,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=+256,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=256,t=1,p=1$" + salt + "=$" + key,
		"$argon2id$v=19$m=256,t=1,p=1$" + salt + "$" + key + "==",
		"$argon2id$v=19$m=256,t=1,p=1$" + "c2FsdA" + "$" + key, // 4-byte salt
		"$argon2id$v=19$m=256,t=1,p=1$" + salt + "$" + "a2V5",  // 3-byte key
		"$argon2id$v=19$m=256,t=1,p=1$" + salt + "$" + key + "$",
		"$argon2id$v=19$m=256,t=1,p=1$" + salt + "$" + key[:len(key)-1] + "!",
		good + strings.Repeat("A", 300),
	}
	for _, enc := range bad {
		ok, rehash, err := CheckPassword(enc, "x")
		if !errors.Is(err, ErrBadHash) || ok || rehash {
			t.Errorf("CheckPassword(%q) = %v, %v, %v; want ErrBadHash", enc, ok, rehash, err)
		}
		if err != nil && strings.Contains(err.Error(), salt) {
			t.Errorf("error %q leaks the hash", err)
		}
	}
}

func FuzzParsePHC(f *testing.F) {
	f.Add("$argon2id$v=19$m=65536,t=3,p=2$c29tZXNhbHQxNmJ5dGVzIQ$r2lf2prQBO/fUJ5rJ4cDSl8z5KfKvOYw43ip8XFTIgs")
	f.Add("$argon2id$v=19$m=64,t=2,p=4$c2FsdHNhbHQ$yw54D2CFkQ7Bhhp6Cg+M8A")
	f.Add("$argon2id$v=19$m=1048576,t=64,p=255$c2FsdHNhbHQ$yw54D2CFkQ7Bhhp6Cg+M8A")
	f.Add("$argon2i$v=19$m=65536,t=3,p=2$$")
	f.Add("$$$$$")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parsePHC(s)
		if err != nil {
			if !errors.Is(err, ErrBadHash) {
				t.Fatalf("unexpected error kind %v", err)
			}
			return
		}
		// Whatever parses is within the limits and is the canonical encoding of itself.
		p := h.params
		if p.Memory > maxMemory || p.Time < 1 || p.Time > maxTime || p.Threads < 1 || p.Memory < 8*uint32(p.Threads) {
			t.Fatalf("out-of-range parameters accepted: %+v", p)
		}
		if len(h.salt) < minSaltLen || len(h.salt) > maxSaltLen || len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
			t.Fatalf("lengths accepted: salt %d key %d", len(h.salt), len(h.key))
		}
		if got := encodePHC(h.params, h.salt, h.key); got != s {
			t.Fatalf("accepted a non-canonical form %q (canonical %q)", s, got)
		}
	})
}

func TestCommonPasswordList(t *testing.T) {
	if n := CommonPasswordCount(); n < 10000 {
		t.Fatalf("shipped list has %d entries, want ≥ 10000", n)
	}
	for _, pw := range []string{"password", "123456", "qwerty", "iloveyou", "trustno1"} {
		if _, ok := commonPasswords()[pw]; !ok {
			t.Errorf("list lacks %q", pw)
		}
	}
}

func TestValidatePassword(t *testing.T) {
	accept := []struct {
		pw      string
		related []string
	}{
		{"tangerine-otter-cobalt", nil},
		{"Grüße aus Köln, 2026!", nil},
		{"zq8#Lw2!pR5v", nil},
		{"correct-walrus-lamp-9", []string{"jane.doe@example.com", "Jane Doe"}},
		{strings.Repeat("abcdefgh", 32), nil}, // exactly 256 bytes
	}
	for _, c := range accept {
		if err := ValidatePassword(c.pw, c.related...); err != nil {
			t.Errorf("ValidatePassword(%q) = %v; want accepted", c.pw, err)
		}
	}
	refuse := []struct {
		pw      string
		related []string
		why     string
	}{
		{"short-pw", nil, "at least 12"},
		{"Grüße aus K", nil, "at least 12"}, // 11 characters, more bytes
		{strings.Repeat("abcdefgh", 32) + "x", nil, "longer than 256"},
		{"qwertyuiopasdfgh\xff", nil, "UTF-8"},
		{"tab\tinside-the-password", nil, "control"},
		{"aaaaaaaaaaaaaaaa", nil, "too few different"},
		{"abababababababab", nil, "too few different"},
		{"qazwsxedcrfv", nil, "commonly used"},     // on the list as it is
		{"1QAZ2WSX3EDC", nil, "commonly used"},     // case does not help
		{"password12345678", nil, "commonly used"}, // list entry + digits
		{"!!iloveyou2024!!", nil, "commonly used"}, // + punctuation both sides
		{"dragondragon", nil, "commonly used"},     // repeated
		{"Sunshine2025!", nil, "commonly used"},
		{"my-name-is-jane.doe!", []string{"jane.doe@example.com"}, "personal"},
		{"examplecorp-rules-1", []string{"jane@examplecorp.io"}, "personal"},
		{"smithsonian-1-2-3", []string{"Jane Smith"}, "personal"},
	}
	for _, c := range refuse {
		err := ValidatePassword(c.pw, c.related...)
		if !errors.Is(err, ErrWeakPassword) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("ValidatePassword(%q) = %v; want ErrWeakPassword saying %q", c.pw, err, c.why)
			continue
		}
		if strings.Contains(err.Error(), c.pw) {
			t.Errorf("error %q repeats the password", err)
		}
	}
}

// BenchmarkHashPassword measures the shipped parameters (docs/access.md quotes the result):
//
//	go test -run '^$' -bench HashPassword -benchtime 20x ./internal/auth
func BenchmarkHashPassword(b *testing.B) {
	for _, p := range []PasswordParams{productionParams, {Memory: 64 * 1024, Time: 2, Threads: 2}, {Memory: 128 * 1024, Time: 3, Threads: 2}, {Memory: 46 * 1024, Time: 1, Threads: 1}} {
		b.Run(fmt.Sprintf("m=%dMiB,t=%d,p=%d", p.Memory/1024, p.Time, p.Threads), func(b *testing.B) {
			defer func(old PasswordParams) { DefaultPasswordParams = old }(DefaultPasswordParams)
			DefaultPasswordParams = p
			cpu0 := procstat.CPUTime()
			for b.Loop() {
				if _, err := HashPassword("tangerine-otter-cobalt"); err != nil {
					b.Fatal(err)
				}
			}
			// CPU time is what the hash costs the server, and unlike wall time it does not grow when
			// other processes share the cores.
			b.ReportMetric(float64((procstat.CPUTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}
