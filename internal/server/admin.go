package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/manifest"
	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// Admin edits a server's data directory from another process (the admin
// command). A running server applies the changes within two seconds.
type Admin struct {
	store   store.Store
	ca      *pki.CA
	keyring *secrets.Keyring // nil without a master key
	audit   *audit.Log
	actor   string // "cli:USER"
}

// OpenAdmin opens the store and CA of a data directory, with the data
// directory's master key if it has one (DefaultMasterKey).
func OpenAdmin(ctx context.Context, dataDir string) (*Admin, error) {
	return OpenAdminWith(ctx, dataDir, DefaultMasterKey(dataDir))
}

// OpenAdminWith is OpenAdmin with the master key named.
func OpenAdminWith(ctx context.Context, dataDir string, mk secrets.Config) (*Admin, error) {
	// An installation may be prepared before its server first starts.
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	a := &Admin{}
	var caOpts []pki.Option
	if mk.Configured() {
		kr, err := secrets.LoadKeyring(mk)
		if err != nil {
			return nil, err
		}
		a.keyring = kr
		caOpts = append(caOpts, pki.WithSealer(kr))
	}
	st, err := sqlite.Open(ctx, filepath.Join(dataDir, "signet.db"))
	if err != nil {
		a.Close()
		return nil, err
	}
	a.store = st
	// Loaded with the master key when there is one, so that the command's
	// entries are signed when it closes; without it they are signed by the
	// server's next checkpoint.
	if a.audit, err = audit.OpenDir(ctx, dataDir, st, a.Sealer(), audit.Config{CheckpointInterval: -1}); err != nil {
		a.Close()
		return nil, err
	}
	a.actor = audit.LocalActor()
	if a.ca, err = pki.InitDevCA(filepath.Join(dataDir, "ca"), caOpts...); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Sealer is the master key's keyring, nil without a master key.
func (a *Admin) Sealer() secrets.Sealer {
	if a.keyring == nil {
		return nil
	}
	return a.keyring
}

// Close signs the audit log's last checkpoint, closes the store and
// forgets the master key.
func (a *Admin) Close() error {
	var errs []error
	if a.audit != nil {
		errs = append(errs, a.audit.Close())
	}
	if a.keyring != nil {
		a.keyring.Zero()
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}

// Record logs a change the operator made at the server's terminal (actor
// "cli:USER", source "cli") in org's audit log. The methods below call it
// after their change succeeded; an error means the change stands but is
// not in the log, and the command must say so.
func (a *Admin) Record(ctx context.Context, org, action, target, detail string) error {
	err := a.audit.Record(ctx, audit.Entry{Org: org, Actor: a.actor, Action: action, Target: target, Source: "cli", Detail: detail})
	if err != nil {
		return fmt.Errorf("the change was made, but recording it in the audit log failed: %w", err)
	}
	return nil
}

// AuditLog is the command's audit log, for admin commands that write
// through other means.
func (a *Admin) AuditLog() *audit.Log { return a.audit }

// projectOrg is the organisation of a project (DefaultOrg for a store that
// keeps none).
func (a *Admin) projectOrg(ctx context.Context, project string) string {
	if acc, ok := a.store.(store.Access); ok {
		if org, err := acc.ProjectOrg(ctx, project); err == nil {
			return org
		}
	}
	return store.DefaultOrg
}

func deviceTarget(project string, id int64) string {
	return "project:" + project + "/device:" + strconv.FormatInt(id, 10)
}

// AddProject creates a project.
func (a *Admin) AddProject(ctx context.Context, id, name string) error {
	if err := a.store.CreateProject(ctx, store.Project{ID: id, Name: name, Created: time.Now()}); err != nil {
		return err
	}
	return a.Record(ctx, store.DefaultOrg, "project.add", "project:"+id, "name "+strconv.Quote(name))
}

// AddDevice registers an enabled device.
func (a *Admin) AddDevice(ctx context.Context, project string, key wire.PublicKey, name string) (int64, error) {
	if _, err := a.store.Project(ctx, project); err != nil {
		return 0, err
	}
	id, err := a.store.CreateDevice(ctx, store.Device{ProjectID: project, PublicKey: key, Name: name, Enabled: true, Created: time.Now()})
	if err != nil {
		return 0, err
	}
	return id, a.Record(ctx, a.projectOrg(ctx, project), "device.add", deviceTarget(project, id), "key "+key.String()+", name "+strconv.Quote(name))
}

// SetDeviceEnabled enables or disables a device.
func (a *Admin) SetDeviceEnabled(ctx context.Context, id int64, enabled bool) error {
	d, err := a.store.Device(ctx, id)
	if err != nil {
		return err
	}
	if err := a.store.SetDeviceEnabled(ctx, id, enabled); err != nil {
		return err
	}
	action := "device.disable"
	if enabled {
		action = "device.enable"
	}
	return a.Record(ctx, a.projectOrg(ctx, d.ProjectID), action, deviceTarget(d.ProjectID, id), "")
}

// AddRelay registers a relay and writes its files.
func (a *Admin) AddRelay(ctx context.Context, id, dir string) (RelayFiles, error) {
	f, err := AddRelay(ctx, a.store, a.ca, id, dir)
	if err != nil {
		return f, err
	}
	return f, a.Record(ctx, store.DefaultOrg, "relay.add", "relay:"+id, "certificate and key written to "+dir)
}

// SetRelayEnabled enables or disables a relay.
func (a *Admin) SetRelayEnabled(ctx context.Context, id string, enabled bool) error {
	if err := a.store.SetRelayEnabled(ctx, id, enabled); err != nil {
		return err
	}
	action := "relay.disable"
	if enabled {
		action = "relay.enable"
	}
	return a.Record(ctx, store.DefaultOrg, action, "relay:"+id, "")
}

// CreateClaimToken makes a claim token for project (see the package
// function).
func (a *Admin) CreateClaimToken(ctx context.Context, project string, uses int, ttl time.Duration, approve bool) (string, error) {
	tok, err := CreateClaimToken(ctx, a.store, project, uses, ttl, approve)
	if err != nil {
		return "", err
	}
	return tok, a.Record(ctx, a.projectOrg(ctx, project), "claim.create", "project:"+project,
		fmt.Sprintf("%d uses, valid %v, approval %v", uses, ttl, approve))
}

// ImportDevices registers the devices of a verified factory manifest in
// project, disabled unless enable. Keys registered already are skipped. It
// returns how many were added.
func (a *Admin) ImportDevices(ctx context.Context, project string, m manifest.Manifest, enable bool) (int, error) {
	if _, err := a.store.Project(ctx, project); err != nil {
		return 0, err
	}
	n := 0
	var werr error
	for _, d := range m.Devices {
		_, err := a.store.CreateDevice(ctx, store.Device{ProjectID: project, PublicKey: d.Key, Name: d.Serial, Enabled: enable, Created: time.Now()})
		switch {
		case errors.Is(err, store.ErrConflict):
		case err != nil:
			werr = err
		default:
			n++
		}
		if werr != nil {
			break
		}
	}
	if n > 0 {
		rerr := a.Record(ctx, a.projectOrg(ctx, project), "device.import", "project:"+project,
			fmt.Sprintf("%d devices from a factory manifest, enabled %v", n, enable))
		werr = errors.Join(werr, rerr)
	}
	return n, werr
}
