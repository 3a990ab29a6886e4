package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/signet-io/signet/internal/store"
)

// VerifyOptions says what Verify checks.
type VerifyOptions struct {
	// PublicKey verifies the checkpoints' signatures (required).
	PublicKey ed25519.PublicKey
	// With OneOrg, only organisation Org's chain and its checkpoints'
	// signatures are checked: what an organisation can check of its own
	// log. Otherwise every organisation and the chain of checkpoints.
	Org    string
	OneOrg bool
	// Anchor, if Num is not zero, is a checkpoint recorded earlier outside
	// the database (Verify's output, the server's log): it must still be
	// there, unchanged. It catches a log cut back to before it.
	Anchor Anchor
}

// Anchor names a checkpoint by number and hash.
type Anchor struct {
	Num  int64
	Hash Hash
}

func (a Anchor) String() string { return strconv.FormatInt(a.Num, 10) + ":" + a.Hash.String() }

// ParseAnchor reads "NUM:HASH" (the form Verify's report prints).
func ParseAnchor(s string) (Anchor, error) {
	n, h, ok := strings.Cut(s, ":")
	num, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || num <= 0 {
		return Anchor{}, errors.New("audit: an anchor is NUM:HASH, a checkpoint number and its hash in hex")
	}
	hash, err := ParseHash(h)
	if err != nil {
		return Anchor{}, err
	}
	return Anchor{num, hash}, nil
}

// Report is what Verify found.
type Report struct {
	Key  KeyID
	Orgs []OrgReport
	// Checkpoints counts the checkpoints of the checkpoint chain that
	// verified (with OneOrg, the organisation's).
	Checkpoints int64
	// Last is the last of them; nil if none.
	Last *Checkpoint
	// Problems lists the first break in each chain; empty when the log
	// verifies.
	Problems []Problem
}

// OK reports whether the log verified.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// OrgReport is one organisation's chain.
type OrgReport struct {
	Org string
	// Entries is how many entries were read before the first problem (all
	// of them if none).
	Entries int64
	Head    Hash
	// Signed is the last entry a valid checkpoint vouches for; the entries
	// after it (Entries-Signed) are not signed yet, so nothing can prove
	// they were not altered or that newer ones were not removed.
	Signed int64
	// LastCheckpoint is the checkpoint that vouches for Signed.
	LastCheckpoint int64
	// Checkpoints counts the organisation's checkpoints that verified.
	Checkpoints int
	// Broken is set when the chain has a problem (in Report.Problems);
	// Entries then counts the entries before it.
	Broken bool
}

// Problem is a break in a chain: the first entry (Seq) or checkpoint
// (Checkpoint) that does not verify, and why.
type Problem struct {
	Org        string
	Seq        int64 // the entry, or 0
	Checkpoint int64 // the checkpoint, or 0
	What       string
}

func (p Problem) String() string {
	if p.Seq > 0 {
		return fmt.Sprintf("%s, entry %d: %s", OrgName(p.Org), p.Seq, p.What)
	}
	if p.Org == "" {
		return fmt.Sprintf("checkpoint #%d: %s", p.Checkpoint, p.What)
	}
	return fmt.Sprintf("checkpoint #%d (%s): %s", p.Checkpoint, OrgName(p.Org), p.What)
}

// OrgName names an organisation's log for people: "" is the installation's
// own.
func OrgName(org string) string {
	if org == "" {
		return "the installation's log"
	}
	return fmt.Sprintf("organisation %q", org)
}

// pageSize is how many rows Verify reads at a time.
const pageSize = 1000

// Verify checks the audit log in st: every organisation's hash chain, the
// checkpoints' signatures and the entries they vouch for, and the chain of
// checkpoints. A broken log is a Report with Problems, not an error; an
// error means the store could not be read.
func Verify(ctx context.Context, st store.AuditStore, opts VerifyOptions) (*Report, error) {
	if len(opts.PublicKey) != ed25519.PublicKeySize {
		return nil, errors.New("audit: verify needs the audit public key")
	}
	r := &Report{Key: KeyIDOf(opts.PublicKey)}
	orgs := []string{opts.Org}
	if !opts.OneOrg {
		var err error
		if orgs, err = st.AuditOrgs(ctx); err != nil {
			return nil, err
		}
	}
	for _, org := range orgs {
		or, last, probs, err := verifyOrg(ctx, st, opts.PublicKey, org)
		if err != nil {
			return nil, err
		}
		r.Orgs = append(r.Orgs, or)
		r.Problems = append(r.Problems, probs...)
		if opts.OneOrg {
			r.Last, r.Checkpoints = last, int64(or.Checkpoints)
		}
	}
	if !opts.OneOrg {
		if err := verifyCheckpointChain(ctx, st, r); err != nil {
			return nil, err
		}
	}
	if opts.Anchor.Num != 0 {
		if err := checkAnchor(ctx, st, opts.Anchor, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// verifyOrg walks one organisation's entries and checkpoints.
func verifyOrg(ctx context.Context, st store.AuditStore, pub ed25519.PublicKey, org string) (OrgReport, *Checkpoint, []Problem, error) {
	or := OrgReport{Org: org}
	var probs []Problem
	keyID := KeyIDOf(pub)
	// The organisation's checkpoints that verify, by the entry they name.
	at := map[int64][]Checkpoint{}
	var valid []Checkpoint
	cpBroken := false
	for after := int64(0); after >= 0; {
		page, err := st.AuditOrgCheckpoints(ctx, org, after, pageSize)
		if err != nil {
			return or, nil, nil, err
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].Num
		if len(page) < pageSize {
			after = -1 // the last page
		}
		for i := range page {
			if cpBroken {
				continue
			}
			c, err := fromStoreCheckpoint(&page[i])
			what := ""
			switch {
			case err != nil:
				what = "malformed: a hash or key id of the wrong size"
			case c.Key != keyID:
				what = fmt.Sprintf("signed by key %s, not by the audit key %s", c.Key, keyID)
			case !c.Verify(pub):
				what = "its signature does not verify: the checkpoint was altered or forged"
			case len(valid) > 0 && c.Seq < valid[len(valid)-1].Seq:
				what = fmt.Sprintf("names entry %d, before the entry %d of the checkpoint before it", c.Seq, valid[len(valid)-1].Seq)
			}
			if what != "" {
				probs = append(probs, Problem{Org: org, Checkpoint: page[i].Num, What: what})
				cpBroken = true
				continue
			}
			at[c.Seq] = append(at[c.Seq], c)
			valid = append(valid, c)
		}
	}

	expected := int64(1)
	var prev Hash
	broken := false
walk:
	for after := int64(0); after >= 0; {
		page, err := st.AuditEntries(ctx, org, after, pageSize)
		if err != nil {
			return or, nil, nil, err
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].Seq
		if len(page) < pageSize || after < 0 {
			after = -1 // the last page
		}
		for i := range page {
			e := &page[i]
			fail := func(seq int64, format string, args ...any) {
				probs = append(probs, Problem{Org: org, Seq: seq, What: fmt.Sprintf(format, args...)})
				broken = true
			}
			if e.Seq != expected {
				fail(expected, "missing: entries %d to %d were deleted (the next stored entry is %d)", expected, e.Seq-1, e.Seq)
				break walk
			}
			rec, err := fromStore(e)
			if err != nil {
				fail(e.Seq, "malformed: a stored hash of the wrong size")
				break walk
			}
			if err := rec.Entry.validate(); err != nil {
				fail(e.Seq, "altered: %v", err)
				break walk
			}
			h := HashEntry(&rec)
			if h != rec.Hash {
				fail(e.Seq, "altered: its fields do not match its hash (changed, or moved here from another position)")
				break walk
			}
			if rec.Prev != prev {
				if e.Seq == 1 {
					fail(1, "does not start the chain (its previous-entry hash is not zero): earlier entries were removed, or it was moved here")
				} else {
					fail(e.Seq, "does not follow entry %d (its previous-entry hash differs): entry %d was altered and re-hashed, or entry %d was moved, inserted or replaced",
						e.Seq-1, e.Seq-1, e.Seq)
				}
				break walk
			}
			for _, c := range at[e.Seq] {
				if c.Head != h {
					fail(e.Seq, "does not match the signed checkpoint #%d: this entry or one after entry %d was altered and the chain re-hashed",
						c.Num, or.Signed)
					break walk
				}
				or.Signed, or.LastCheckpoint = e.Seq, c.Num
			}
			prev = h
			or.Entries, or.Head = e.Seq, h
			expected++
		}
	}
	if !broken {
		// Checkpoints beyond the last entry: the end of the log was cut.
		for _, c := range valid {
			if c.Seq > or.Entries {
				probs = append(probs, Problem{Org: org, Seq: or.Entries + 1,
					What: fmt.Sprintf("missing: entries %d to %d were deleted (signed checkpoint #%d vouches for entry %d)", or.Entries+1, c.Seq, c.Num, c.Seq)})
				break
			}
		}
	}
	or.Checkpoints = len(valid)
	or.Broken = len(probs) > 0
	var last *Checkpoint
	if len(valid) > 0 {
		last = &valid[len(valid)-1]
	}
	return or, last, probs, nil
}

// verifyCheckpointChain walks the checkpoints of every organisation in
// number order: numbers without gaps, each holding its predecessor's hash.
func verifyCheckpointChain(ctx context.Context, st store.AuditStore, r *Report) error {
	expected := int64(1)
	var prev Hash
	for after := int64(0); ; {
		page, err := st.AuditCheckpoints(ctx, after, pageSize)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].Num
		for i := range page {
			c, err := fromStoreCheckpoint(&page[i])
			fail := func(num int64, format string, args ...any) {
				r.Problems = append(r.Problems, Problem{Org: c.Org, Checkpoint: num, What: fmt.Sprintf(format, args...)})
			}
			switch {
			case err != nil:
				fail(c.Num, "malformed: a hash or key id of the wrong size")
				return nil
			case c.Num != expected:
				c.Org = "" // unknown: it is gone
				fail(expected, "missing: checkpoints %d to %d were deleted (the next stored is #%d)", expected, c.Num-1, c.Num)
				return nil
			case c.Prev != prev:
				if c.Num == 1 {
					fail(1, "does not start the checkpoint chain (its previous hash is not zero)")
				} else {
					fail(c.Num, "does not follow checkpoint #%d (its previous hash differs): one of them was altered, or checkpoints were removed or reordered", c.Num-1)
				}
				return nil
			}
			prev = c.Hash()
			expected++
			r.Checkpoints = c.Num
			r.Last = &c
		}
	}
}

func checkAnchor(ctx context.Context, st store.AuditStore, a Anchor, r *Report) error {
	page, err := st.AuditCheckpoints(ctx, a.Num-1, 1)
	if err != nil {
		return err
	}
	if len(page) == 0 || page[0].Num != a.Num {
		r.Problems = append(r.Problems, Problem{Checkpoint: a.Num,
			What: "the anchored checkpoint is missing: the log was cut back to before it"})
		return nil
	}
	c, err := fromStoreCheckpoint(&page[0])
	if err != nil || c.Hash() != a.Hash {
		r.Problems = append(r.Problems, Problem{Org: c.Org, Checkpoint: a.Num,
			What: fmt.Sprintf("differs from the anchor %s recorded earlier: the checkpoint chain was rewritten", a)})
	}
	return nil
}

// VerifyRecords checks one organisation's chain from its entries and
// checkpoints as the API hands them out (Log.List, Log.Checkpoints), so
// that an organisation can check its own log away from the server: steps
// as Verify with OneOrg. recs must be the whole chain from entry 1, in
// order; cps the organisation's checkpoints in order.
func VerifyRecords(org string, recs []Record, cps []Checkpoint, pub ed25519.PublicKey) (*Report, error) {
	m := &memChain{}
	for i := range recs {
		m.entries = append(m.entries, toStore(&recs[i]))
	}
	for i := range cps {
		m.checkpoints = append(m.checkpoints, toStoreCheckpoint(&cps[i]))
	}
	return Verify(context.Background(), m, VerifyOptions{PublicKey: pub, Org: org, OneOrg: true})
}

// memChain is the part of an AuditStore that verifying one organisation
// reads, over slices.
type memChain struct {
	store.AuditStore // nil: the other methods are never called
	entries          []store.AuditEntry
	checkpoints      []store.AuditCheckpoint
}

func (m *memChain) AuditEntries(_ context.Context, org string, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	var out []store.AuditEntry
	for _, e := range m.entries {
		if e.Org == org && e.Seq > afterSeq && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memChain) AuditOrgCheckpoints(_ context.Context, org string, afterNum int64, limit int) ([]store.AuditCheckpoint, error) {
	var out []store.AuditCheckpoint
	for _, c := range m.checkpoints {
		if c.Org == org && c.Num > afterNum && len(out) < limit {
			out = append(out, c)
		}
	}
	return out, nil
}
