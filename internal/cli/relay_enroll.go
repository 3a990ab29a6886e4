package cli

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/server"
)

// The commands of the relay PKI (docs/pki.md): the CA (admin ca …),
// enrolment tokens and revocation (admin relay add|revoke|certs), and a
// relay's side of enrolment (relay enroll).

// runAdminCA is "signet admin ca init|rotate|crl|status".
func runAdminCA(ctx context.Context, e *env, args []string) error {
	usage := `Usage: signet admin ca <action> --data DIR [flags]

  init [--root-key-out FILE] [--name NAME]   create the root and issuing CAs
  rotate [--root-key FILE] [--revoke-previous]
                                            a new issuing CA under the same root
  crl [--root-key FILE]                     re-sign the root's CRL (yearly, if
                                            no rotation happened)
  status                                    CAs, expiries, certificates issued

The CA lives in the data directory's "ca" directory. The server needs only
the issuing CA's key; the root key signs issuing CAs and nothing else, so
it can be kept offline: "init --root-key-out FILE" writes it there instead,
and "rotate" and "crl" read it from --root-key. A server started without
"ca init" creates a CA with the root key inside the data directory.
`
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(e.stderr, usage)
		if len(args) > 0 {
			return nil
		}
		return fmt.Errorf("%w: admin ca needs an action", errUsage)
	}
	action := args[0]
	fs := newFlags(e, "admin ca "+action, "admin ca "+action+" --data DIR [flags]", usage)
	data := fs.String("data", "", "the server's data directory (required)")
	rootKeyOut := fs.String("root-key-out", "", "init: write the root key here, not into the data directory")
	name := fs.String("name", "", "init: name in the CA certificates (default Signet)")
	rootKey := fs.String("root-key", "", "rotate, crl: the root key (default: inside the CA directory)")
	revokePrevious := fs.Bool("revoke-previous", false, "rotate: revoke the current issuing CA at once instead of an overlap (its key is compromised)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	dir := server.CADir(*data)
	// The CA's keys are sealed under the data directory's master key, if
	// it has one (docs/secrets.md).
	var sealer secrets.Sealer
	var opts []pki.Option
	kr, err := dataKeyring(*data)
	if err != nil {
		return err
	}
	if kr != nil {
		defer kr.Zero()
		sealer = kr
		opts = append(opts, pki.WithSealer(kr))
	}
	switch action {
	case "init":
		ca, err := pki.Init(dir, pki.InitConfig{RootKeyFile: *rootKeyOut, Name: *name, Sealer: sealer})
		if err != nil {
			return err
		}
		if err := recordInstallation(ctx, *data, secrets.Config{}, "ca.init", "ca", "root "+fingerprint(ca.Root())); err != nil {
			return err
		}
		keyAt := filepath.Join(dir, pki.RootKeyFile)
		if *rootKeyOut != "" {
			keyAt = *rootKeyOut + " (keep it offline; the server does not need it)"
		}
		fmt.Fprintf(e.stdout, "CA created in %s\n  root     %s, until %s\n  issuing  %s, until %s\n  root key %s\n  root fingerprint (SHA-256) %s\n",
			dir, ca.Root().Subject.CommonName, day(ca.Root().NotAfter), ca.Issuing().Subject.CommonName, day(ca.Issuing().NotAfter),
			keyAt, fingerprint(ca.Root()))
	case "rotate", "crl":
		ca, err := pki.Open(dir, opts...)
		if err != nil {
			return err
		}
		keyFile := cmpOr(*rootKey, filepath.Join(dir, pki.RootKeyFile))
		key, err := pki.ReadSealedKey(keyFile, sealer)
		if err != nil {
			return fmt.Errorf("the root key is needed (--root-key): %w", err)
		}
		if action == "crl" {
			if err := ca.SignRootCRL(key); err != nil {
				return err
			}
			if err := recordInstallation(ctx, *data, secrets.Config{}, "ca.crl", "ca", "root CRL re-signed"); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "root CRL re-signed, valid for a year\n")
			return nil
		}
		old := ca.Issuing()
		next, err := ca.Rotate(key, pki.RotateConfig{RevokePrevious: *revokePrevious})
		if err != nil {
			return err
		}
		detail := fmt.Sprintf("issuing CA %s -> %s", old.SerialNumber.Text(16), next.SerialNumber.Text(16))
		if *revokePrevious {
			detail += ", previous revoked"
		}
		if err := recordInstallation(ctx, *data, secrets.Config{}, "ca.rotate", "ca", detail); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "issuing CA rotated: %s (serial %s, until %s)\n", next.Subject.CommonName, next.SerialNumber.Text(16), day(next.NotAfter))
		if *revokePrevious {
			fmt.Fprintf(e.stdout, "the previous issuing CA (serial %s) is revoked: every certificate it issued stops working; relays must enrol again\n", old.SerialNumber.Text(16))
		} else {
			fmt.Fprintf(e.stdout, "the previous issuing CA (serial %s) stays valid until %s; relays move to the new one as they renew\n", old.SerialNumber.Text(16), day(old.NotAfter))
		}
		fmt.Fprintf(e.stdout, "a running server picks it up within two seconds\n")
	case "status":
		ca, err := pki.Open(dir, opts...)
		if err != nil {
			return err
		}
		return printCAStatus(e, ca)
	default:
		return fmt.Errorf("%w: unknown admin ca action %q", errUsage, action)
	}
	return nil
}

func printCAStatus(e *env, ca *pki.CA) error {
	now := time.Now()
	root := ca.Root()
	fmt.Fprintf(e.stdout, "root     %s, until %s, fingerprint %s\n", root.Subject.CommonName, day(root.NotAfter), fingerprint(root))
	if _, err := os.Stat(filepath.Join(ca.Dir(), pki.RootKeyFile)); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(e.stdout, "         root key offline\n")
	}
	for i, c := range ca.Issuers() {
		role := "current"
		if i > 0 {
			role = "overlap"
		}
		fmt.Fprintf(e.stdout, "issuing  %s (%s), serial %s, until %s\n", c.Subject.CommonName, role, c.SerialNumber.Text(16), day(c.NotAfter))
		if i == 0 && c.NotAfter.Sub(now) < 90*24*time.Hour {
			fmt.Fprintf(e.stdout, "         expires in %d days: rotate it now (signet admin ca rotate)\n", int(c.NotAfter.Sub(now).Hours()/24))
		}
	}
	certs, err := ca.Certificates()
	if err != nil {
		return err
	}
	live, revoked := map[string]int{}, map[string]int{}
	for _, c := range certs {
		switch {
		case !c.Revoked.IsZero():
			revoked[c.Kind]++
		case now.Before(c.NotAfter):
			live[c.Kind]++
		}
	}
	fmt.Fprintf(e.stdout, "issued   %d relay and %d server certificates valid, %d revoked on the CRLs\n",
		live[pki.KindRelay], live[pki.KindServer], revoked[pki.KindRelay]+revoked[pki.KindServer])
	return nil
}

// runAdminRelay is "signet admin relay add|revoke|certs".
func runAdminRelay(ctx context.Context, e *env, action string, args []string) error {
	usage := `Usage: signet admin relay <action> --data DIR --id ID [flags]

  add --id ID [--ttl 24h]        register a relay and print a one-time
                                 enrolment token for "signet relay enroll"
  add --id ID --out DIR          development: write a certificate, a key
                                 made here and the CA to DIR instead
  revoke --id ID [--reason R]    revoke the relay's certificates and tokens;
                                 a running server cuts it within two seconds
  certs [--id ID]                the certificates issued to relays

A token works once, until it expires; only its hash is stored. A newer
token for the same relay replaces an unused older one.
`
	fs := newFlags(e, "admin relay "+action, "admin relay "+action+" --data DIR --id ID [flags]", usage)
	data := fs.String("data", "", "the server's data directory (required)")
	id := fs.String("id", "", "relay id")
	ttl := fs.Duration("ttl", pki.DefaultTokenLifetime, "add: how long the token is valid (at most 720h)")
	out := fs.String("out", "", "add: development shortcut, write the relay's files to this directory")
	reason := fs.String("reason", "unspecified", "revoke: unspecified, key-compromise, superseded, cessation or affiliation-changed")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	if *id == "" && action != "certs" {
		return fmt.Errorf("%w: --id is required", errUsage)
	}
	code, ok := revocationReasons[*reason]
	if !ok {
		return fmt.Errorf("%w: unknown --reason %q", errUsage, *reason)
	}
	if action != "add" && action != "revoke" && action != "certs" {
		return fmt.Errorf("%w: unknown admin relay action %q", errUsage, action)
	}
	a, err := server.OpenAdmin(ctx, *data)
	if err != nil {
		return err
	}
	defer a.Close()
	switch action {
	case "add":
		if *out != "" {
			f, err := a.AddRelay(ctx, *id, *out)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "relay %s: %s, %s, %s\n", *id, f.Cert, f.Key, f.CA)
			return nil
		}
		tok, err := a.AddRelayToken(ctx, *id, *ttl)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Enrolment token for relay %s (works once, until %s; shown once):\n  %s\n\nOn the relay:\n  signet relay enroll --server HOST:PORT --dir DIR --token %s\n",
			tok.RelayID, tok.Expires.UTC().Format(time.RFC3339), tok.Token, tok.Token)
		if tok.Disabled {
			fmt.Fprintf(e.stdout, "\nRelay %s is disabled: enable it (signet admin relay enable) before it enrols.\n", tok.RelayID)
		}
	case "revoke":
		revoked, err := a.RevokeRelay(ctx, *id, code)
		if err != nil {
			return err
		}
		for _, r := range revoked {
			fmt.Fprintf(e.stdout, "revoked certificate %s of relay %s (valid until %s)\n", r.Serial.Text(16), r.Subject, day(r.NotAfter))
		}
		fmt.Fprintf(e.stdout, "relay %s: %d certificates revoked, unused tokens cancelled; a running server cuts it within two seconds\n", *id, len(revoked))
	case "certs":
		certs, err := a.CA().Certificates()
		if err != nil {
			return err
		}
		sort.SliceStable(certs, func(i, j int) bool { return certs[i].Subject < certs[j].Subject })
		for _, c := range certs {
			if c.Kind != pki.KindRelay || *id != "" && c.Subject != *id {
				continue
			}
			st := "valid"
			switch {
			case !c.Revoked.IsZero():
				st = "revoked " + c.Revoked.UTC().Format(time.RFC3339)
			case time.Now().After(c.NotAfter):
				st = "expired"
			}
			fmt.Fprintf(e.stdout, "%-20s %-32s issued %s until %s  %s\n", c.Subject, c.Serial.Text(16), day(c.Issued), day(c.NotAfter), st)
		}
	}
	return nil
}

var revocationReasons = map[string]int{
	"unspecified":         pki.ReasonUnspecified,
	"key-compromise":      pki.ReasonKeyCompromise,
	"affiliation-changed": pki.ReasonAffiliationChanged,
	"superseded":          pki.ReasonSuperseded,
	"cessation":           pki.ReasonCessationOfOperation,
}

// runRelayEnroll is "signet relay enroll".
func runRelayEnroll(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "relay enroll", "relay enroll --server HOST:PORT --dir DIR --token TOKEN", `
Enrols this relay with a one-time token from "signet admin relay add": it
generates the relay's key here (it never leaves this machine), checks that
the server belongs to the CA whose fingerprint is in the token, and gets
the relay's certificate. DIR then holds relay.crt, relay.key and ca.crt,
as "signet relay --dir DIR" wants them; the relay renews its certificate
by itself from then on.

A token works once and expires; ask for a new one if it was used or is
too old. Once used it is worthless, but until then it may rather come from
a file (--token-file) or $SIGNET_ENROL_TOKEN than the command line.`)
	serverAddr := fs.String("server", "", "the server's relay endpoint, host:port (required)")
	dir := fs.String("dir", "", "relay directory to write relay.crt, relay.key and ca.crt to (required)")
	token := fs.String("token", "", "the enrolment token")
	tokenFile := fs.String("token-file", "", "read the enrolment token from this file instead")
	id := fs.String("id", "", "the relay id the token must be for (optional)")
	force := fs.Bool("force", false, "replace an existing relay identity in DIR")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *serverAddr == "" || *dir == "" {
		return fmt.Errorf("%w: --server and --dir are required", errUsage)
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		*token = strings.TrimSpace(string(b))
	}
	if *token == "" {
		*token = strings.TrimSpace(os.Getenv("SIGNET_ENROL_TOKEN"))
	}
	if *token == "" {
		return fmt.Errorf("%w: no enrolment token: --token, --token-file or $SIGNET_ENROL_TOKEN", errUsage)
	}
	cf, kf, caf := filepath.Join(*dir, "relay.crt"), filepath.Join(*dir, "relay.key"), filepath.Join(*dir, "ca.crt")
	if _, err := os.Stat(kf); err == nil && !*force {
		return fmt.Errorf("%s already holds a relay identity; use --force to replace it", *dir)
	}
	en, err := relay.Enrol(ctx, relay.EnrolConfig{Server: *serverAddr, Token: *token, ID: *id})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if err := en.WriteFiles(cf, kf, caf); err != nil {
		return err
	}
	leaf := en.Chain[0]
	fmt.Fprintf(e.stdout, "relay %s enrolled: certificate %s until %s, in %s\nstart it with: signet relay --server %s --dir %s\n",
		en.ID, leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339), *dir, *serverAddr, *dir)
	return nil
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

func fingerprint(c *x509.Certificate) string {
	fp := pki.Fingerprint(c)
	return base64.RawURLEncoding.EncodeToString(fp[:])
}
