package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/manifest"
	"github.com/signet-io/signet/internal/server"
	"github.com/signet-io/signet/internal/wire"
)

// runManufacturer is the manufacturer's side of factory manifests: a key
// pair, and signing the list of keys the devices generated at the factory.
func runManufacturer(ctx context.Context, e *env, args []string) error {
	usage := `Usage: signet manufacturer <keygen|sign> [flags]

  keygen --out DIR                       manufacturer.key (0600) and manufacturer.pub
  sign --key FILE --keys FILE --name NAME --out FILE
                                         sign a list of device public keys (one per line)

A project that trusts the manufacturer's public key imports the signed
manifest with "signet admin device import-manifest".
`
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(e.stderr, usage)
		if len(args) == 0 {
			return fmt.Errorf("%w: manufacturer needs a subcommand", errUsage)
		}
		return nil
	}
	fs := newFlags(e, "manufacturer "+args[0], "manufacturer "+args[0]+" [flags]", usage)
	out := fs.String("out", "", "output directory (keygen) or file (sign)")
	keyFile := fs.String("key", "", "manufacturer.key")
	keys := fs.String("keys", "", "device public keys, one per line (optionally followed by a serial)")
	name := fs.String("name", "", "manufacturer name")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "keygen":
		if *out == "" {
			return fmt.Errorf("%w: --out is required", errUsage)
		}
		pub, priv, err := manifest.GenerateKey()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(*out, 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(*out, "manufacturer.key"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(base64.StdEncoding.EncodeToString(priv.Seed()) + "\n")
		if err := f.Close(); err != nil || werr != nil {
			return fmt.Errorf("writing manufacturer.key: %v %v", werr, err)
		}
		p := base64.StdEncoding.EncodeToString(pub)
		if err := os.WriteFile(filepath.Join(*out, "manufacturer.pub"), []byte(p+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "manufacturer public key (give it to the projects that trust you):\n  %s\n", p)
	case "sign":
		if *keyFile == "" || *keys == "" || *name == "" || *out == "" {
			return fmt.Errorf("%w: --key, --keys, --name and --out are required", errUsage)
		}
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		clear(b)
		if err != nil || len(seed) != ed25519.SeedSize {
			return fmt.Errorf("%w: %s is not a manufacturer key", errUsage, *keyFile)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		clear(seed)
		list, err := os.ReadFile(*keys)
		if err != nil {
			return err
		}
		m := manifest.Manifest{Manufacturer: *name, Created: time.Now().UTC()}
		for i, line := range strings.Split(string(list), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			k, err := wire.ParsePublicKey(f[0])
			if err != nil {
				return fmt.Errorf("%w: %s line %d: %v", errUsage, *keys, i+1, err)
			}
			d := manifest.Device{Key: k}
			if len(f) > 1 {
				d.Serial = f[1]
			}
			m.Devices = append(m.Devices, d)
		}
		data, err := manifest.Sign(m, priv)
		clear(priv)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "signed manifest of %d devices: %s\n", len(m.Devices), *out)
	default:
		return fmt.Errorf("%w: unknown manufacturer subcommand %q", errUsage, args[0])
	}
	return nil
}

// importManifest registers the devices of a verified manifest in project,
// disabled unless enable (customers enable devices before they talk).
func importManifest(ctx context.Context, e *env, a *server.Admin, project, file, trusted string, enable bool) error {
	pub, err := manifest.ParsePublicKey(trusted)
	if err != nil {
		return fmt.Errorf("%w: --manufacturer-key: %v", errUsage, err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	m, err := manifest.Verify(data, pub)
	if err != nil {
		return err
	}
	n, err := a.ImportDevices(ctx, project, m, enable)
	if err != nil {
		return err
	}
	state := "disabled until enabled (signet admin device enable, or the API)"
	if enable {
		state = "enabled"
	}
	fmt.Fprintf(e.stdout, "imported %d of %d devices from %s's manifest into %s, %s (already registered: %d)\n",
		n, len(m.Devices), m.Manufacturer, project, state, len(m.Devices)-n)
	return nil
}
