package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

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

// Close closes the store and forgets the master key.
func (a *Admin) Close() error {
	if a.keyring != nil {
		a.keyring.Zero()
	}
	if a.store == nil {
		return nil
	}
	return a.store.Close()
}

// AddProject creates a project.
func (a *Admin) AddProject(ctx context.Context, id, name string) error {
	return a.store.CreateProject(ctx, store.Project{ID: id, Name: name, Created: time.Now()})
}

// AddDevice registers an enabled device.
func (a *Admin) AddDevice(ctx context.Context, project string, key wire.PublicKey, name string) (int64, error) {
	if _, err := a.store.Project(ctx, project); err != nil {
		return 0, err
	}
	return a.store.CreateDevice(ctx, store.Device{ProjectID: project, PublicKey: key, Name: name, Enabled: true, Created: time.Now()})
}

// SetDeviceEnabled enables or disables a device.
func (a *Admin) SetDeviceEnabled(ctx context.Context, id int64, enabled bool) error {
	return a.store.SetDeviceEnabled(ctx, id, enabled)
}

// AddRelay registers a relay and writes its files.
func (a *Admin) AddRelay(ctx context.Context, id, dir string) (RelayFiles, error) {
	return AddRelay(ctx, a.store, a.ca, id, dir)
}

// SetRelayEnabled enables or disables a relay.
func (a *Admin) SetRelayEnabled(ctx context.Context, id string, enabled bool) error {
	return a.store.SetRelayEnabled(ctx, id, enabled)
}

// CreateClaimToken makes a claim token for project (see the package
// function).
func (a *Admin) CreateClaimToken(ctx context.Context, project string, uses int, ttl time.Duration, approve bool) (string, error) {
	return CreateClaimToken(ctx, a.store, project, uses, ttl, approve)
}

// ImportDevices registers the devices of a verified factory manifest in
// project, disabled unless enable. Keys registered already are skipped. It
// returns how many were added.
func (a *Admin) ImportDevices(ctx context.Context, project string, m manifest.Manifest, enable bool) (int, error) {
	if _, err := a.store.Project(ctx, project); err != nil {
		return 0, err
	}
	n := 0
	for _, d := range m.Devices {
		_, err := a.store.CreateDevice(ctx, store.Device{ProjectID: project, PublicKey: d.Key, Name: d.Serial, Enabled: enable, Created: time.Now()})
		switch {
		case errors.Is(err, store.ErrConflict):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}
