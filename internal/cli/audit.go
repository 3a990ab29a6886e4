package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/server"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// runAdminAudit is "signet admin audit verify|list" (docs/audit.md).
func runAdminAudit(ctx context.Context, e *env, args []string) error {
	usage := `Usage: signet admin audit <action> --data DIR [flags]

  verify [--org ORG] [--anchor NUM:HASH] [--key-fingerprint HEX]
        check every organisation's hash chain, the checkpoints' signatures
        and the chain of checkpoints; name the first broken entry
  list [--org ORG] [--limit N] [--after SEQ] [--json]
        print an organisation's entries (default: the installation's own
        log, its newest N entries)
  checkpoint [--master-key FILE | --master-key-env]
        sign every organisation's unsigned entries now (a running server
        does this every few seconds; this is for a stopped one)

verify needs no secret: the audit public key is DIR/audit.pub. It exits 1
when the log does not verify. Entries newer than the last checkpoint are
not signed yet (a running server signs them within seconds); nothing can
prove that such entries were not changed, or newer ones removed. Record the
anchor and the key fingerprint verify prints somewhere else: --anchor later
proves that nothing up to that checkpoint was removed, and --key-fingerprint
that the key was not replaced along with the log.
`
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(e.stderr, usage)
		if len(args) > 0 {
			return nil
		}
		return fmt.Errorf("%w: admin audit needs an action (verify or list)", errUsage)
	}
	action := args[0]
	if action != "verify" && action != "list" && action != "checkpoint" {
		return fmt.Errorf("%w: unknown admin audit action %q", errUsage, action)
	}
	fs := newFlags(e, "admin audit "+action, "admin audit "+action+" --data DIR [flags]", usage)
	data := fs.String("data", "", "the server's data directory (required)")
	org := fs.String("org", "", "the organisation (\"\" is the installation's own log)")
	anchor := fs.String("anchor", "", "verify: NUM:HASH of a checkpoint recorded earlier, which must still be there")
	fingerprint := fs.String("key-fingerprint", "", "verify: the audit key fingerprint recorded earlier")
	limit := fs.Int("limit", 50, "list: how many entries (at most 1000)")
	after := fs.Int64("after", -1, "list: the entries after this sequence number (default: the newest --limit)")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	mkFile, mkEnv := masterKeyFlags(fs)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	orgSet := false
	fs.Visit(func(f *flag.Flag) { orgSet = orgSet || f.Name == "org" })
	// Opening a store creates a database: do not create an empty one where
	// the operator meant an existing log.
	dbPath := filepath.Join(*data, "signet.db")
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("no database in %s: %w", *data, err)
	}
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	defer st.Close()
	if action == "checkpoint" {
		mk := server.DefaultMasterKey(*data)
		if *mkFile != "" || *mkEnv {
			if mk, err = masterKeyConfig(*data, *mkFile, *mkEnv); err != nil {
				return err
			}
		}
		return checkpointAudit(ctx, e, st, *data, mk)
	}
	if action == "list" {
		if *limit <= 0 || *limit > 1000 {
			return fmt.Errorf("%w: --limit must be 1 to 1000", errUsage)
		}
		return listAudit(ctx, e, st, *org, *after, *limit, *asJSON)
	}
	opts := audit.VerifyOptions{Org: *org, OneOrg: orgSet}
	if *anchor != "" {
		if opts.Anchor, err = audit.ParseAnchor(*anchor); err != nil {
			return fmt.Errorf("%w: --anchor: %v", errUsage, err)
		}
	}
	if opts.PublicKey, err = audit.ReadPublicKey(*data); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no audit public key in %s (%s): a server that has run once writes it", *data, audit.PublicKeyFile)
		}
		return err
	}
	return verifyAudit(ctx, e, st, opts, *fingerprint)
}

func verifyAudit(ctx context.Context, e *env, st store.AuditStore, opts audit.VerifyOptions, fingerprint string) error {
	fp := audit.Fingerprint(opts.PublicKey)
	fmt.Fprintf(e.stdout, "audit key %s, fingerprint %s\n", audit.KeyIDOf(opts.PublicKey), fp)
	if fingerprint != "" {
		want := strings.ToLower(strings.ReplaceAll(fingerprint, ":", ""))
		if want != fp {
			return fmt.Errorf("the audit public key has fingerprint %s, not %s: it was replaced, and the log may have been re-signed with it", fp, want)
		}
	}
	rep, err := audit.Verify(ctx, st, opts)
	if err != nil {
		return err
	}
	for _, o := range rep.Orgs {
		printOrgReport(e, o)
	}
	if rep.Last != nil {
		c := rep.Last
		what := "checkpoints"
		if opts.OneOrg {
			what = "checkpoints of " + audit.OrgName(opts.Org)
		}
		fmt.Fprintf(e.stdout, "%s: %d verified; the last #%d (%s, entry %d, %s)\n", what, rep.Checkpoints, c.Num,
			audit.OrgName(c.Org), c.Seq, c.Time.UTC().Format(time.RFC3339))
		fmt.Fprintf(e.stdout, "anchor %s\n  (record it elsewhere; \"verify --anchor %s\" then proves that nothing up to it was removed)\n",
			audit.Anchor{Num: c.Num, Hash: c.Hash()}, audit.Anchor{Num: c.Num, Hash: c.Hash()})
	} else {
		fmt.Fprintln(e.stdout, "no checkpoint yet")
	}
	if rep.OK() {
		fmt.Fprintln(e.stdout, "OK: every entry and checkpoint verifies")
		return nil
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(e.stdout, "BROKEN: %s\n", p)
	}
	n := ""
	if len(rep.Problems) > 1 {
		n = fmt.Sprintf(" (%d chains broken)", len(rep.Problems))
	}
	return fmt.Errorf("the audit log does not verify%s: %s", n, rep.Problems[0])
}

func printOrgReport(e *env, o audit.OrgReport) {
	if o.Broken {
		fmt.Fprintf(e.stdout, "%s: BROKEN after %s that verify (see below)\n", audit.OrgName(o.Org), entries(o.Entries))
		return
	}
	fmt.Fprintf(e.stdout, "%s: %s", audit.OrgName(o.Org), entries(o.Entries))
	if o.Entries > 0 {
		fmt.Fprintf(e.stdout, ", head %s", o.Head.String()[:16])
	}
	if o.LastCheckpoint > 0 {
		fmt.Fprintf(e.stdout, "; signed up to entry %d (checkpoint #%d)", o.Signed, o.LastCheckpoint)
	}
	fmt.Fprintln(e.stdout)
	if n := o.Entries - o.Signed; n > 0 {
		fmt.Fprintf(e.stdout, "  %s not signed yet: until a checkpoint signs them, their change or removal cannot be detected\n", entries(n))
	}
}

func entries(n int64) string {
	if n == 1 {
		return "1 entry"
	}
	return strconv.FormatInt(n, 10) + " entries"
}

func listAudit(ctx context.Context, e *env, st store.AuditStore, org string, after int64, limit int, asJSON bool) error {
	if after < 0 {
		head, err := st.AuditHead(ctx, org)
		if errors.Is(err, store.ErrNotFound) {
			fmt.Fprintf(e.stderr, "%s is empty\n", audit.OrgName(org))
			return nil
		}
		if err != nil {
			return err
		}
		after = max(head.Seq-int64(limit), 0)
	}
	recs, err := audit.List(ctx, st, org, after, limit)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if asJSON {
			if err := printJSONLine(e, auditJSON{Org: r.Org, Seq: r.Seq, Time: r.Time.UTC().Format(time.RFC3339Nano), Actor: r.Actor,
				Action: r.Action, Target: r.Target, Source: r.Source, Detail: r.Detail, Hash: r.Hash.String()}); err != nil {
				return err
			}
			continue
		}
		line := fmt.Sprintf("%6d  %s  %-16s %-20s %s", r.Seq, r.Time.UTC().Format("2006-01-02 15:04:05.000"), r.Actor, r.Action, r.Target)
		if r.Source != "" {
			line += "  from " + r.Source
		}
		if r.Detail != "" {
			line += "  " + strconv.Quote(r.Detail)
		}
		fmt.Fprintln(e.stdout, line)
	}
	return nil
}

// auditJSON is an entry in "list --json".
type auditJSON struct {
	Org    string `json:"org"`
	Seq    int64  `json:"seq"`
	Time   string `json:"time"`
	Actor  string `json:"actor"`
	Action string `json:"action"`
	Target string `json:"target,omitempty"`
	Source string `json:"source,omitempty"`
	Detail string `json:"detail,omitempty"`
	Hash   string `json:"hash"`
}

// checkpointAudit signs what is unsigned, with the audit key opened by the
// master key if the data directory has one.
func checkpointAudit(ctx context.Context, e *env, st *sqlite.Store, data string, mk secrets.Config) error {
	var sealer secrets.Sealer
	if mk.Configured() {
		kr, err := secrets.LoadKeyring(mk)
		if err != nil {
			return err
		}
		defer kr.Zero()
		sealer = kr
	}
	key, err := audit.LoadKey(data, sealer)
	switch {
	case errors.Is(err, audit.ErrNoKey):
		return fmt.Errorf("no audit key in %s: nothing was ever signed; the server creates the key when it starts", data)
	case errors.Is(err, audit.ErrKeySealed):
		return fmt.Errorf("the audit key is sealed: give the master key (--master-key FILE or --master-key-env)")
	case err != nil:
		return err
	}
	pending, err := st.AuditUnsigned(ctx)
	if err != nil {
		return err
	}
	// Open signs what is unsigned; Close would sign anything recorded since.
	l, err := audit.Open(ctx, audit.Config{Store: st, Key: key, CheckpointInterval: -1})
	if err != nil {
		return err
	}
	if err := l.Close(); err != nil {
		return err
	}
	if len(pending) == 0 {
		fmt.Fprintln(e.stdout, "nothing to sign: every entry is covered by a checkpoint")
		return nil
	}
	for _, h := range pending {
		fmt.Fprintf(e.stdout, "signed %s up to entry %d\n", audit.OrgName(h.Org), h.Seq)
	}
	return nil
}
