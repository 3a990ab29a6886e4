package auth

import (
	"bytes"
	"encoding/base32"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// oathtoolTOTP asks the real oathtool (OATH Toolkit, Debian package oathtool) for the code of secret at t.
func oathtoolTOTP(t *testing.T, bin, secret string, at time.Time) string {
	t.Helper()
	out, err := exec.Command(bin, "--totp=sha1", "--digits=6", "--time-step-size=30s", "--base32",
		"--now", at.UTC().Format("2006-01-02 15:04:05 UTC"), secret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestTOTPAgainstOathtool(t *testing.T) {
	bin, err := exec.LookPath("oathtool")
	if err != nil {
		t.Skip("oathtool not installed (Debian package oathtool: apt-get install oathtool); this test checks our codes against it")
	}
	secret, uri, err := NewTOTP("Signet", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret); err != nil || len(raw) != 20 {
		t.Fatalf("secret %d bytes, err %v; want 20 bytes of base32", len(raw), err)
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Query().Get("secret") != secret ||
		u.Query().Get("issuer") != "Signet" || !strings.Contains(u.Path, "alice@example.com") {
		t.Fatalf("uri %q", uri)
	}

	times := []time.Time{
		time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC),  // first second of a step
		time.Date(2026, 12, 2, 10, 0, 29, 0, time.UTC), // last second of it
		time.Date(2031, 7, 19, 23, 59, 47, 0, time.UTC),
		time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC), // past 2^31 seconds
	}
	for _, at := range times {
		code := oathtoolTOTP(t, bin, secret, at)
		wantStep := at.Unix() / 30
		step, ok := CheckTOTP(secret, code, at, 0)
		if !ok || step != wantStep {
			t.Fatalf("oathtool's code %s at %v: ok=%v step=%d; want step %d", code, at, ok, step, wantStep)
		}
		// The same code again, with the stored step: refused, however soon.
		if _, ok := CheckTOTP(secret, code, at, step); ok {
			t.Fatalf("code %s accepted twice", code)
		}
		if _, ok := CheckTOTP(secret, code, at.Add(10*time.Second), step); ok {
			t.Fatalf("code %s accepted twice, 10 s later", code)
		}
		// Clock drift of one step either way is tolerated, two are not.
		if s, ok := CheckTOTP(secret, code, at.Add(30*time.Second), 0); !ok || s != wantStep {
			t.Fatalf("code %s one step late: ok=%v", code, ok)
		}
		if s, ok := CheckTOTP(secret, code, at.Add(-30*time.Second), 0); !ok || s != wantStep {
			t.Fatalf("code %s one step early: ok=%v", code, ok)
		}
		if _, ok := CheckTOTP(secret, code, at.Add(61*time.Second), 0); ok {
			t.Fatalf("code %s accepted two steps late", code)
		}
		// An older code after a newer one was used is refused too.
		older := oathtoolTOTP(t, bin, secret, at.Add(-30*time.Second))
		if older != code {
			if _, ok := CheckTOTP(secret, older, at, step); ok {
				t.Fatalf("older code %s accepted after the newer one", older)
			}
		}
		// Wrong and malformed codes.
		wrong := []byte(code)
		wrong[5] = '0' + (wrong[5]-'0'+1)%10
		for _, bad := range []string{string(wrong), "", "12345", "1234567", "abcdef", code + "0"} {
			if _, ok := CheckTOTP(secret, bad, at, 0); ok {
				t.Fatalf("code %q accepted (right code %s)", bad, code)
			}
		}
		// People type spaces.
		if _, ok := CheckTOTP(secret, " "+code[:3]+" "+code[3:]+" ", at, 0); !ok {
			t.Fatalf("code %q with spaces refused", code)
		}
		// Another secret's code does not work.
		other, _, _ := NewTOTP("Signet", "bob@example.com")
		if oc := oathtoolTOTP(t, bin, other, at); oc != code {
			if _, ok := CheckTOTP(secret, oc, at, 0); ok {
				t.Fatal("another secret's code accepted")
			}
		}
	}
}

// RFC 6238 appendix B, SHA-1 (the 8-digit values truncated to 6 digits, as RFC 4226 truncation does).
func TestTOTPRFC6238Vectors(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))
	for unix, code := range map[int64]string{
		59:          "287082",
		1111111109:  "081804",
		1111111111:  "050471",
		1234567890:  "005924",
		2000000000:  "279037",
		20000000000: "353130",
	} {
		at := time.Unix(unix, 0)
		if step, ok := CheckTOTP(secret, code, at, 0); !ok || step != unix/30 {
			t.Errorf("RFC 6238 vector at %d: %s not accepted", unix, code)
		}
	}
	if _, ok := CheckTOTP("not base32!", "287082", time.Unix(59, 0), 0); ok {
		t.Error("malformed secret accepted a code")
	}
}

func TestTOTPQRCode(t *testing.T) {
	_, uri, err := NewTOTP("Signet", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	pngBytes, err := TOTPQRCode(uri, 256)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Fatalf("QR code %v, want 256×256", b)
	}
	if _, err := TOTPQRCode("https://example.com/", 256); err == nil {
		t.Fatal("a non-otpauth URI was rendered")
	}
	// Read it back with a real QR decoder (Debian package zbar-tools), as a phone would.
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		t.Skip("zbarimg (Debian package zbar-tools) not installed; decoded only as PNG")
	}
	f := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(f, pngBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(zbar, "--quiet", "--raw", f).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != uri {
		t.Fatalf("QR code decodes to %q, want %q", got, uri)
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes, hashes, err := NewRecoveryCodes(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 10 || len(hashes) != 10 {
		t.Fatalf("%d codes, %d hashes", len(codes), len(hashes))
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if len(c) != 19 || strings.Count(c, "-") != 3 || seen[c] {
			t.Fatalf("code %q malformed or repeated", c)
		}
		seen[c] = true
		if strings.Contains(strings.Join(hashes, ","), strings.ReplaceAll(c, "-", "")) {
			t.Fatal("hashes contain a code")
		}
		for _, typed := range []string{c, strings.ToUpper(c), strings.ReplaceAll(c, "-", ""), strings.ReplaceAll(c, "-", " ")} {
			if idx, ok := CheckRecoveryCode(hashes, typed); !ok || idx != i {
				t.Fatalf("code %d typed as %q: idx=%d ok=%v", i, typed, idx, ok)
			}
		}
	}
	// Used once: the caller removes the hash, and the code no longer works.
	idx, ok := CheckRecoveryCode(hashes, codes[3])
	if !ok {
		t.Fatal("code 3 refused")
	}
	hashes = append(hashes[:idx], hashes[idx+1:]...)
	if _, ok := CheckRecoveryCode(hashes, codes[3]); ok {
		t.Fatal("removed code accepted")
	}
	if idx, ok := CheckRecoveryCode(hashes, codes[4]); !ok || idx != 3 {
		t.Fatalf("code 4 after removal: idx=%d ok=%v", idx, ok)
	}
	other, _, _ := NewRecoveryCodes(1)
	for _, bad := range []string{other[0], "", "aaaa-aaaa-aaaa-aaaa", codes[0][:18], codes[0] + "a", "0000-0000-0000-0000", strings.Repeat("a", 1000)} {
		if _, ok := CheckRecoveryCode(hashes, bad); ok {
			t.Fatalf("%q accepted", bad)
		}
	}
	if _, _, err := NewRecoveryCodes(0); err == nil {
		t.Fatal("0 codes made")
	}
}

func TestTokens(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, hash, err := NewToken("sgn_sa_")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, "sgn_sa_") || len(tok) != len("sgn_sa_")+43 || strings.ContainsAny(tok[7:], "+/=") {
			t.Fatalf("token %q", tok)
		}
		if !bytes.Equal(hash, HashToken(tok)) || len(hash) != 32 {
			t.Fatal("hash is not HashToken(token)")
		}
		if seen[tok] {
			t.Fatal("repeated token")
		}
		seen[tok] = true
	}
	a, b := HashToken("sgn_x_abc"), HashToken("sgn_y_abc")
	if bytes.Equal(a, b) {
		t.Fatal("the prefix is not part of the hash")
	}
	if _, _, err := NewToken(strings.Repeat("p", 33)); err == nil {
		t.Fatal("overlong prefix accepted")
	}
}
