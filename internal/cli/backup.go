package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/backup"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/server"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// masterKeyFlags registers the flags that say where the master key is.
func masterKeyFlags(fs *flag.FlagSet) (file *string, fromEnv *bool) {
	file = fs.String("master-key", "", "master key file (default DIR/master.key)")
	fromEnv = fs.Bool("master-key-env", false, "take the master key from $"+secrets.EnvVar+" (and $"+secrets.PreviousEnvVar+" during a rotation) instead of a file")
	return file, fromEnv
}

func masterKeyConfig(data, file string, fromEnv bool) (secrets.Config, error) {
	if fromEnv {
		if file != "" {
			return secrets.Config{}, fmt.Errorf("%w: --master-key and --master-key-env exclude each other", errUsage)
		}
		return secrets.Config{FromEnv: true}, nil
	}
	if file == "" {
		file = secrets.DefaultKeyFile(data)
	}
	return secrets.Config{KeyFile: file}, nil
}

// recordInstallation records an operator's installation-wide change (no
// organisation) in the audit log of the data directory, with the master
// key mk, or the directory's own (server.DefaultMasterKey) if mk is not
// configured. The change has been made: an error says it is not in the log.
func recordInstallation(ctx context.Context, data string, mk secrets.Config, action, target, detail string) error {
	if !mk.Configured() {
		mk = server.DefaultMasterKey(data)
	}
	a, err := server.OpenAdminWith(ctx, data, mk)
	if err != nil {
		return fmt.Errorf("the change was made, but the audit log did not open: %w", err)
	}
	defer a.Close()
	return a.Record(ctx, "", action, target, detail)
}

// dataKeyring loads the data directory's master key as the server would
// find it (server.DefaultMasterKey), or returns nil if it has none. The
// caller zeroes it.
func dataKeyring(data string) (*secrets.Keyring, error) {
	mk := server.DefaultMasterKey(data)
	if !mk.Configured() {
		return nil, nil
	}
	return secrets.LoadKeyring(mk)
}

func runAdminMasterKeyInit(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "admin master-key init", "admin master-key init --data DIR [--master-key FILE | --print]", `
Creates the master key that seals the server's secrets at rest (the CA's
and the server's private keys, webhook and TOTP secrets, session state):
each secret is encrypted with its own data key, and the data keys with the
master key. A copy of the database or of the data directory without the
master key reveals none of them.

The key is written to DIR/master.key (or --master-key FILE), mode 0600. To
keep it out of the data directory altogether, use --master-key elsewhere
(another disk, a secrets mount), or --print to print it once for
$SIGNET_MASTER_KEY and write no file.

Keep a copy of the master key somewhere safe and apart from the backups:
backups leave it out on purpose, and without it the secrets in a backup
cannot be recovered.`)
	data := fs.String("data", "", "the server's data directory (required unless --master-key or --print)")
	file := fs.String("master-key", "", "master key file to create (default DIR/master.key)")
	printOnly := fs.Bool("print", false, "print a new key for $"+secrets.EnvVar+" instead of writing a file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *printOnly {
		if *file != "" {
			return fmt.Errorf("%w: --print writes no file; drop --master-key", errUsage)
		}
		k, err := secrets.GenerateMasterKey()
		if err != nil {
			return err
		}
		defer k.Zero()
		fmt.Fprintln(e.stdout, k.Export())
		fmt.Fprintf(e.stderr, "master key %s: set it as %s for the server and the admin commands (signet ... --master-key-env).\n", k.ID(), secrets.EnvVar)
		return nil
	}
	if *file == "" && *data == "" {
		return fmt.Errorf("%w: --data or --master-key is required", errUsage)
	}
	path := *file
	if path == "" {
		path = secrets.DefaultKeyFile(*data)
	}
	k, err := secrets.CreateMasterKey(path)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists: a data directory has one master key; to replace it use \"signet admin rotate-master-key\"", path)
	}
	if err != nil {
		return err
	}
	defer k.Zero()
	fmt.Fprintf(e.stdout, "master key %s written to %s (mode 0600)\n", k.ID(), path)
	fmt.Fprintln(e.stdout, "Keep a copy somewhere safe, apart from the backups: without it the sealed secrets cannot be recovered.")
	return nil
}

func runAdminRotateMasterKey(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "admin rotate-master-key", "admin rotate-master-key --data DIR [--master-key FILE | --master-key-env] [flags]", `
Replaces the master key and rewraps every sealed secret's data key under the
new one: the secrets themselves are not re-encrypted, so it is quick, and it
runs while the server does.

With a key file: the current key is saved as FILE.previous, a new key
replaces FILE, and after --settle (time for running servers, which reload
their keys every 2 s, to start sealing with the new key) every sealed value
in the database and every sealed file in the data directory is rewrapped, in
one transaction for the database. The old key file is then renamed
FILE.<old key id>.retired: delete it once no backup made before the rotation
is needed (restoring such a backup needs that key). Running servers keep the
old key in memory until they restart. If the rotation is interrupted, run it
again: it finishes the rotation it started.

With --master-key-env: first put the new key (signet admin master-key init
--print) in $SIGNET_MASTER_KEY and the old one in $SIGNET_MASTER_KEY_PREVIOUS
and restart the servers; then run this with both set; then remove
$SIGNET_MASTER_KEY_PREVIOUS.`)
	data := fs.String("data", "", "the server's data directory (required)")
	file, fromEnv := masterKeyFlags(fs)
	settle := fs.Duration("settle", secrets.DefaultSettle, "wait between publishing the new key and rewrapping (0: no server is running)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	cfg, err := masterKeyConfig(*data, *file, *fromEnv)
	if err != nil {
		return err
	}
	if *settle < 0 {
		return fmt.Errorf("%w: --settle must not be negative", errUsage)
	}
	rc := secrets.RotateConfig{Keys: cfg, Settle: *settle}
	if *settle == 0 {
		rc.Settle = -1 // RotateConfig's zero means the default
	}
	if rc.Files, err = sealedFiles(*data); err != nil {
		return err
	}
	// The store's sealed columns (sqlite.Store.RewrapSecrets).
	db := filepath.Join(*data, "signet.db")
	if _, err := os.Stat(db); err == nil {
		st, err := sqlite.Open(ctx, db)
		if err != nil {
			return err
		}
		defer st.Close()
		rc.Walks = append(rc.Walks, func(rewrap func([]byte) ([]byte, error)) error {
			return st.RewrapSecrets(ctx, rewrap)
		})
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if !*fromEnv && rc.Settle > 0 {
		fmt.Fprintf(e.stderr, "publishing a new master key; rewrapping in %v, once running servers have loaded it\n", rc.Settle)
	}
	r, err := secrets.RotateMasterKey(ctx, rc)
	if err != nil {
		return err
	}
	verb := "rotated"
	if r.Resumed {
		verb = "rotated (an interrupted rotation was finished)"
	}
	if err := recordInstallation(ctx, *data, cfg, "master-key.rotate", "master-key", fmt.Sprintf("%s -> %s, %d sealed values rewrapped", r.Old, r.New, r.Rewrapped)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "master key %s: %s -> %s; %d sealed values rewrapped\n", verb, r.Old, r.New, r.Rewrapped)
	if r.Retired != "" {
		fmt.Fprintf(e.stdout, "the old key is kept at %s: delete it once no backup made before now is needed\n", r.Retired)
	} else {
		fmt.Fprintf(e.stdout, "remove $%s now; keep the old key while a backup made before now may be needed\n", secrets.PreviousEnvVar)
	}
	return nil
}

// sealedFiles lists the sealed files of a data directory (the server key,
// the CA keys, and whatever else is sealed), leaving out the database and
// the bus.
func sealedFiles(data string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(data, p); rel == "jetstream" || strings.HasPrefix(rel, "signet.db") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		sealed, err := secrets.IsSealedFile(p)
		if err != nil {
			return err
		}
		if sealed {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sealed files in %s: %w", data, err)
	}
	return out, nil
}

func runBackupKeygen(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "admin backup keygen", "admin backup keygen --out FILE", `
Creates the key pair that backups are encrypted to (an age key pair,
post-quantum hybrid) and prints the public half, the recipient, which
"signet admin backup --recipient" takes. The secret half, the identity, is
written to FILE (mode 0600): it is the only way to restore a backup. Keep it
offline, away from the server and from where the backups are stored.

The age command line tool reads FILE too (age -d -i FILE).`)
	out := fs.String("out", "", "identity file to create (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	identity, recipient, err := backup.GenerateIdentity()
	if err != nil {
		return err
	}
	if err := backup.WriteIdentityFile(*out, identity, recipient); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, recipient)
	fmt.Fprintf(e.stderr, "identity written to %s (keep it offline); the recipient above is for \"signet admin backup --recipient\"\n", *out)
	return nil
}

func runAdminBackup(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "admin backup", "admin backup --data DIR (--recipient AGE1… | --recipient-file FILE) [--out FILE]", `
Writes an encrypted backup of a server's data directory while the server
runs: a consistent snapshot of the database, the server key and the CA,
encrypted to a backup recipient (from "signet admin backup keygen", or any
age recipient). The bus (jetstream/) is left out: devices and relays resend
what it held. The master key is left out too: keep it separately, since
restoring needs the backup identity and the master key that was current
when the backup was made.

The file is written next to FILE and renamed when complete, so FILE is a
whole backup or nothing; "-" writes to standard output.`)
	data := fs.String("data", "", "the server's data directory (required)")
	recipient := fs.String("recipient", "", "recipient to encrypt to: age1pq1… or age1…")
	recipientFile := fs.String("recipient-file", "", "file holding the recipient (an age recipients file)")
	out := fs.String("out", "", `backup file to create, or "-" for standard output (default signet-backup-<UTC time>.age)`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	if *out == "" {
		*out = backupName(time.Now())
	}
	if (*recipient == "") == (*recipientFile == "") {
		return fmt.Errorf("%w: give one of --recipient and --recipient-file", errUsage)
	}
	r := *recipient
	if *recipientFile != "" {
		b, err := readSmallFile(*recipientFile, 64<<10)
		if err != nil {
			return fmt.Errorf("--recipient-file: %w", err)
		}
		r = string(b)
	}
	rcpt, err := backup.ParseRecipient(r)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	db := filepath.Join(*data, "signet.db")
	if _, err := os.Stat(db); err != nil {
		return fmt.Errorf("no database in %s: %w", *data, err)
	}
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		return err
	}
	defer st.Close()

	if *out == "-" {
		if err := backup.Backup(ctx, *data, st.Snapshot, rcpt, e.stdout); err != nil {
			return err
		}
		return recordInstallation(ctx, *data, secrets.Config{}, "backup.create", "stdout", "")
	}
	n, err := writeNewFile(*out, func(w io.Writer) error {
		return backup.Backup(ctx, *data, st.Snapshot, rcpt, w)
	})
	if err != nil {
		return err
	}
	if err := recordInstallation(ctx, *data, secrets.Config{}, "backup.create", *out, fmt.Sprintf("%d bytes", n)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "backup written to %s (%d bytes)\n", *out, n)
	fmt.Fprintln(e.stdout, "Restoring it needs the backup identity and the master key, neither of which is in it.")
	return nil
}

func runAdminRestore(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "admin restore", "admin restore --backup FILE --identity FILE --data DIR", `
Restores a backup made by "signet admin backup" into DIR, which must not
exist or be empty: restore never overwrites. The whole backup is decrypted,
authenticated and checked in a temporary directory next to DIR before it is
moved into place; a damaged or altered backup restores nothing.

Then put the master key in place (DIR/master.key, mode 0600, or
$SIGNET_MASTER_KEY): the one that was current when the backup was made, or
its retired copy. Start the server on DIR; devices and relays resend what
the server had not acknowledged.`)
	file := fs.String("backup", "", "backup file (required)")
	identity := fs.String("identity", "", `identity file from "signet admin backup keygen" (required)`)
	data := fs.String("data", "", "directory to restore into; must not exist or be empty (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" || *identity == "" || *data == "" {
		return fmt.Errorf("%w: --backup, --identity and --data are required", errUsage)
	}
	id, err := backup.ReadIdentity(*identity)
	if err != nil {
		return err
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := backup.Restore(ctx, f, id, *data); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "restored into %s\n", *data)
	fmt.Fprintf(e.stdout, "Next: put the master key in place (%s, mode 0600, or $%s), then start the server.\n",
		secrets.DefaultKeyFile(*data), secrets.EnvVar)
	return nil
}

// writeNewFile creates path (which must not exist) from write: the data go
// to a temporary file beside it, synced and moved into place only when
// write succeeds, so path is complete or absent. It returns the size.
func writeNewFile(path string, write func(io.Writer) error) (int64, error) {
	if _, err := os.Lstat(path); err == nil {
		return 0, fmt.Errorf("%s exists; choose another name", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful link, only the temporary name goes
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return 0, err
	}
	werr := write(f)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return 0, err
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return 0, err
	}
	// A link never replaces a file that appeared meanwhile.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("%s exists; choose another name", path)
		}
		if err := os.Rename(tmp, path); err != nil {
			return 0, err
		}
	}
	return st.Size(), nil
}

func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// backupName is a default file name for a backup made now.
func backupName(now time.Time) string {
	return "signet-backup-" + now.UTC().Format("20060102-150405") + ".age"
}
