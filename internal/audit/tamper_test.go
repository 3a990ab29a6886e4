package audit_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/audit"
)

// tamperFixture writes a data directory whose audit log is, in order:
//
//	beta   entries 1-5, checkpoint #1 (beta/5, by Checkpoint)
//	acme   entries 1-33, checkpoints #2 (acme/10), #3 (acme/20), #4 (acme/30)
//	       (every 10 entries) and #5 (acme/33, by Close)
//	acme   entries 34-35, recorded without the key: not signed
//
// and returns the directory and checkpoint #5.
func tamperFixture(t *testing.T) (string, audit.Checkpoint) {
	dir := t.TempDir()
	st := openStore(t, dir)
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, audit.Config{Store: st, Key: key, CheckpointEvery: 10, CheckpointInterval: -1})
	t0 := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	rec := func(l *audit.Log, org string, i int) {
		t.Helper()
		err := l.Record(t.Context(), audit.Entry{Org: org, Actor: "user:alice", Action: "device.revoke",
			Target: "project:p1/device:" + string(rune('a'+i%26)), Source: "198.51.100.4", Time: t0.Add(time.Duration(i) * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		rec(l, "beta", i)
	}
	if err := l.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 33 {
		rec(l, "acme", i)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	unsigned := openLog(t, audit.Config{Store: st, CheckpointInterval: -1})
	rec(unsigned, "acme", 33)
	rec(unsigned, "acme", 34)
	unsigned.Close()
	cps, err := audit.Checkpoints(t.Context(), st, "acme", 4, 0)
	if err != nil || len(cps) != 1 || cps[0].Num != 5 || cps[0].Seq != 33 {
		t.Fatalf("fixture: checkpoints after #4: %+v, %v", cps, err)
	}
	rep := verify(t, st, dir, audit.VerifyOptions{})
	if !rep.OK() || rep.Checkpoints != 5 {
		t.Fatalf("fixture does not verify: %+v", rep)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, cps[0]
}

// copyDir copies the fixture's database and keys to a new directory.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// attacker opens the database file directly, as someone who copied or
// can write it would, and drops the triggers that keep Signet itself from
// changing audit rows.
func attacker(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, tr := range []string{"audit_entries_no_update", "audit_entries_no_delete", "audit_checkpoints_no_update", "audit_checkpoints_no_delete"} {
		exec(t, db, "DROP TRIGGER "+tr)
	}
	return db
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// rehash recomputes the stored prev and hash columns of org's entries from
// seq on, as an attacker who knows the format (docs/audit.md) would after
// changing one.
func rehash(t *testing.T, db *sql.DB, org string, from int64) {
	t.Helper()
	rows, err := db.Query(`SELECT seq, time, actor, action, target, source, detail, prev FROM audit_entries WHERE org = ? AND seq >= ? ORDER BY seq`, org, from)
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for rows.Next() {
		var r audit.Record
		var ms int64
		var prev []byte
		if err := rows.Scan(&r.Seq, &ms, &r.Actor, &r.Action, &r.Target, &r.Source, &r.Detail, &prev); err != nil {
			t.Fatal(err)
		}
		r.Org, r.Time = org, time.UnixMilli(ms)
		copy(r.Prev[:], prev)
		recs = append(recs, r)
	}
	rows.Close()
	if from > 1 && len(recs) > 0 {
		var prev []byte
		if err := db.QueryRow(`SELECT hash FROM audit_entries WHERE org = ? AND seq = ?`, org, from-1).Scan(&prev); err != nil {
			t.Fatal(err)
		}
		copy(recs[0].Prev[:], prev)
	}
	for i := range recs {
		if i > 0 {
			recs[i].Prev = recs[i-1].Hash
		}
		recs[i].Hash = audit.HashEntry(&recs[i])
		exec(t, db, `UPDATE audit_entries SET prev = ?, hash = ? WHERE org = ? AND seq = ?`, recs[i].Prev[:], recs[i].Hash[:], org, recs[i].Seq)
	}
}

// TestTamper changes the database file in the ways someone who can write
// it might, and checks that Verify names the first broken entry or
// checkpoint, and that what a hash chain cannot see (docs/audit.md) is
// indeed what it misses.
func TestTamper(t *testing.T) {
	fixture, lastCP := tamperFixture(t)
	anchor := audit.Anchor{Num: lastCP.Num, Hash: lastCP.Hash()}
	type want struct {
		org        string
		seq, cp    int64
		what       string
		undetected bool // a documented limit: no problem without an anchor
	}
	for _, tc := range []struct {
		name   string
		attack func(t *testing.T, db *sql.DB)
		opts   audit.VerifyOptions
		want   want
	}{
		{"alter an entry", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET actor = 'user:mallory' WHERE org = 'acme' AND seq = 7`)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 7, what: "altered"}},
		{"alter an entry's time", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET time = time - 3600000 WHERE org = 'beta' AND seq = 3`)
		}, audit.VerifyOptions{}, want{org: "beta", seq: 3, what: "altered"}},
		{"put text in a number column", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET time = 'yesterday' WHERE org = 'acme' AND seq = 5`)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 5, what: "altered"}},
		{"put text in a hash column", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET prev = 'not a hash' WHERE org = 'acme' AND seq = 5`)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 5, what: "malformed"}},
		{"alter an entry and its hash", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET action = 'login.ok' WHERE org = 'acme' AND seq = 7`)
			var r audit.Record
			var ms int64
			var prev []byte
			err := db.QueryRow(`SELECT seq, time, actor, action, target, source, detail, prev FROM audit_entries WHERE org = 'acme' AND seq = 7`).
				Scan(&r.Seq, &ms, &r.Actor, &r.Action, &r.Target, &r.Source, &r.Detail, &prev)
			if err != nil {
				t.Fatal(err)
			}
			r.Org, r.Time = "acme", time.UnixMilli(ms)
			copy(r.Prev[:], prev)
			h := audit.HashEntry(&r)
			exec(t, db, `UPDATE audit_entries SET hash = ? WHERE org = 'acme' AND seq = 7`, h[:])
		}, audit.VerifyOptions{}, want{org: "acme", seq: 8, what: "does not follow entry 7"}},
		{"alter an entry and re-hash the rest of the chain", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET target = 'project:p1' WHERE org = 'acme' AND seq = 7`)
			rehash(t, db, "acme", 7)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 10, what: "signed checkpoint #2"}},
		{"delete an entry", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'acme' AND seq = 12`)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 12, what: "missing: entries 12 to 12"}},
		{"delete an entry and renumber the rest", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'acme' AND seq = 12`)
			exec(t, db, `UPDATE audit_entries SET seq = -seq WHERE org = 'acme' AND seq > 12`)
			exec(t, db, `UPDATE audit_entries SET seq = -seq - 1 WHERE org = 'acme' AND seq < 0`)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 12, what: "altered"}},
		{"delete an entry, renumber and re-hash", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'acme' AND seq = 12`)
			exec(t, db, `UPDATE audit_entries SET seq = -seq WHERE org = 'acme' AND seq > 12`)
			exec(t, db, `UPDATE audit_entries SET seq = -seq - 1 WHERE org = 'acme' AND seq < 0`)
			rehash(t, db, "acme", 12)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 20, what: "signed checkpoint #3"}},
		{"swap two entries", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET seq = -1 WHERE org = 'acme' AND seq = 14`)
			exec(t, db, `UPDATE audit_entries SET seq = 14 WHERE org = 'acme' AND seq = 15`)
			exec(t, db, `UPDATE audit_entries SET seq = 15 WHERE org = 'acme' AND seq = -1`)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 14, what: "altered"}},
		{"swap two entries' contents and re-hash them", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET time = CASE seq WHEN 14 THEN (SELECT time FROM audit_entries WHERE org = 'acme' AND seq = 15)
				ELSE (SELECT time FROM audit_entries WHERE org = 'acme' AND seq = 14) END WHERE org = 'acme' AND seq IN (14, 15)`)
			rehash(t, db, "acme", 14)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 20, what: "signed checkpoint #3"}},
		{"cut the end of the log", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'acme' AND seq > 30`)
		}, audit.VerifyOptions{}, want{org: "acme", seq: 31, what: "missing: entries 31 to 33 were deleted (signed checkpoint #5"}},
		{"cut the end of the log and its last checkpoint", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'acme' AND seq > 30`)
			exec(t, db, `DELETE FROM audit_checkpoints WHERE num = 5`)
		}, audit.VerifyOptions{}, want{undetected: true}},
		{"cut the end of the log and its last checkpoint, with an anchor", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'acme' AND seq > 30`)
			exec(t, db, `DELETE FROM audit_checkpoints WHERE num = 5`)
		}, audit.VerifyOptions{Anchor: anchor}, want{cp: 5, what: "anchored checkpoint is missing"}},
		{"drop the unsigned entries", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'acme' AND seq > 33`)
		}, audit.VerifyOptions{Anchor: anchor}, want{undetected: true}},
		{"delete an organisation's log", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_entries WHERE org = 'beta'`)
			exec(t, db, `DELETE FROM audit_checkpoints WHERE org = 'beta'`)
		}, audit.VerifyOptions{}, want{cp: 1, what: "missing: checkpoints 1 to 1"}},
		{"delete a checkpoint", func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM audit_checkpoints WHERE num = 3`)
		}, audit.VerifyOptions{}, want{cp: 3, what: "missing: checkpoints 3 to 3"}},
		{"move a checkpoint", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_checkpoints SET seq = 9, head = (SELECT hash FROM audit_entries WHERE org = 'acme' AND seq = 9) WHERE num = 2`)
		}, audit.VerifyOptions{}, want{org: "acme", cp: 2, what: "signature does not verify"}},
		{"alter a checkpoint's link", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_checkpoints SET prev = (SELECT prev FROM audit_checkpoints WHERE num = 3) WHERE num = 4`)
		}, audit.VerifyOptions{}, want{org: "acme", cp: 4, what: "does not follow checkpoint #3"}},
		{"sign with another key", func(t *testing.T, db *sql.DB) {
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			cps, err := loadCheckpoint(db, 2)
			if err != nil {
				t.Fatal(err)
			}
			cps.Key = audit.KeyIDOf(pub)
			cps.Sig = ed25519.Sign(priv, cps.Statement())
			exec(t, db, `UPDATE audit_checkpoints SET key_id = ?, sig = ? WHERE num = 2`, cps.Key[:], cps.Sig)
		}, audit.VerifyOptions{}, want{org: "acme", cp: 2, what: "not by the audit key"}},
		{"alter an entry, one organisation verified", func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE audit_entries SET source = '10.0.0.1' WHERE org = 'beta' AND seq = 2`)
		}, audit.VerifyOptions{Org: "beta", OneOrg: true}, want{org: "beta", seq: 2, what: "altered"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := copyDir(t, fixture)
			db := attacker(t, dir)
			tc.attack(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			st := openStore(t, dir)
			rep := verify(t, st, dir, tc.opts)
			if tc.want.undetected {
				if !rep.OK() {
					t.Fatalf("problems %v where the chain cannot see the change", rep.Problems)
				}
				return
			}
			if rep.OK() {
				t.Fatalf("not detected; report %+v", rep)
			}
			for _, p := range rep.Problems {
				if p.Org == tc.want.org && p.Seq == tc.want.seq && p.Checkpoint == tc.want.cp && strings.Contains(p.What, tc.want.what) {
					return
				}
			}
			t.Fatalf("want a problem at org %q entry %d checkpoint %d about %q; got %q", tc.want.org, tc.want.seq, tc.want.cp, tc.want.what, rep.Problems)
		})
	}
}

func loadCheckpoint(db *sql.DB, num int64) (audit.Checkpoint, error) {
	var c audit.Checkpoint
	var prev, head, keyID []byte
	var ms int64
	err := db.QueryRow(`SELECT num, prev, org, seq, head, time, key_id, sig FROM audit_checkpoints WHERE num = ?`, num).
		Scan(&c.Num, &prev, &c.Org, &c.Seq, &head, &ms, &keyID, &c.Sig)
	copy(c.Prev[:], prev)
	copy(c.Head[:], head)
	copy(c.Key[:], keyID)
	c.Time = time.UnixMilli(ms).UTC()
	return c, err
}
