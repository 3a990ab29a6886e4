package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/server"
	"github.com/signet-io/signet/internal/wire"
)

func runServer(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "server", "server --data DIR [flags]", `
Runs a Signet server: the device channel on UDP (and optionally framed
TCP), the relay endpoint (mutual TLS), the bus, the store and the API.
Everything lives in the data directory: the SQLite database, the server's
key (devices pin its public half), a development CA for relays and the
embedded NATS JetStream.

On the first start it prints a one-time API token; keep it. Register
devices and relays with "signet admin"; the server picks them up within
two seconds.`)
	data := fs.String("data", "", "data directory (required)")
	listen := fs.String("listen", ":7850", "UDP address for devices")
	listenTCP := fs.String("listen-tcp", "", "TCP address for framed datagrams (empty: off)")
	relayListen := fs.String("relay-listen", ":7851", "TLS address for relays")
	httpListen := fs.String("http", "127.0.0.1:7880", "API address")
	natsURL := fs.String("nats-url", "", "external NATS JetStream URL (empty: embedded)")
	rekey := fs.Duration("rekey", 0, "session lifetime T (default 2h)")
	ackInterval := fs.Duration("ack-interval", ingest.DefaultAckInterval, "least time between two ACKs to a device that sends often; its readings stored meanwhile share the next (0: an ACK for every stored batch)")
	verbose := fs.Bool("v", false, "log at info level")
	masterKey := fs.String("master-key", "", "master key file sealing the server's secrets (default DIR/master.key if it exists, or $SIGNET_MASTER_KEY)")
	masterKeyEnv := fs.Bool("master-key-env", false, "read the master key from $SIGNET_MASTER_KEY instead")
	oidcIssuer := fs.String("oidc-issuer", "", "OpenID Connect issuer URL for single sign-on (e.g. Azure AD's); the client secret comes from $SIGNET_OIDC_CLIENT_SECRET")
	oidcClient := fs.String("oidc-client-id", "", "OpenID Connect client id")
	oidcRedirect := fs.String("oidc-redirect-url", "", "OpenID Connect redirect URL, https://HOST/api/v1/auth/oidc/callback")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	if *ackInterval < 0 {
		return fmt.Errorf("%w: --ack-interval must not be negative", errUsage)
	}
	if *ackInterval == 0 {
		*ackInterval = -1 // ingest.Config: none
	}
	var oidc auth.OIDCConfig
	if *oidcIssuer != "" {
		if *oidcClient == "" || *oidcRedirect == "" {
			return fmt.Errorf("%w: --oidc-issuer needs --oidc-client-id and --oidc-redirect-url", errUsage)
		}
		oidc = auth.OIDCConfig{Issuer: *oidcIssuer, ClientID: *oidcClient, RedirectURL: *oidcRedirect,
			ClientSecret: os.Getenv("SIGNET_OIDC_CLIENT_SECRET")}
	}
	mk := secrets.Config{KeyFile: *masterKey, FromEnv: *masterKeyEnv}
	if !mk.Configured() {
		mk = server.DefaultMasterKey(*data)
	}
	log := e.log
	if *verbose {
		log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := server.Open(ctx, server.Config{
		DataDir: *data, Listen: *listen, ListenTCP: *listenTCP, RelayListen: *relayListen,
		HTTPListen: *httpListen, NATSURL: *natsURL, Timers: wire.Timers{RekeyAfter: *rekey}, AckInterval: *ackInterval, Logger: log,
		MasterKey: mk, OIDC: oidc,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Signet server running.\n  API        %s\n  devices    udp %s\n  relays     tls %s\n  server key %s\n",
		srv.APIURL(), srv.UDPAddr(), srv.RelayAddr(), srv.PublicKey())
	if t := srv.TCPAddr(); t != "" {
		fmt.Fprintf(e.stdout, "  devices    framed tcp %s\n", t)
	}
	if tok := srv.BootstrapToken(); tok != "" {
		fmt.Fprintf(e.stdout, "\nAPI token (shown once, only its hash is stored):\n  %s\n", tok)
	}
	return srv.Run(ctx)
}

func runRelay(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "enroll" {
		return runRelayEnroll(ctx, e, args[1:])
	}
	fs := newFlags(e, "relay", "relay --server HOST:PORT --dir DIR [flags]", `
Runs a relay: it receives device datagrams on UDP and forwards them,
untouched, to the server over one mutually authenticated TLS 1.3
connection, and sends the server's downlinks back to the devices. It holds
no key that could read a reading. While the server is unreachable it keeps
datagrams in a bounded on-disk buffer and forwards them when it is back.

DIR must hold relay.crt, relay.key and ca.crt, as written by
"signet relay enroll" (or, for development, "signet admin relay add --out").
The relay renews its certificate by itself before it expires.

  signet relay enroll --server HOST:PORT --dir DIR --token TOKEN
                      enrols a new relay with a token from "signet admin relay add"`)
	serverAddr := fs.String("server", "", "the server's relay endpoint, host:port (required)")
	dir := fs.String("dir", "", "relay directory with relay.crt, relay.key, ca.crt and the buffer (required)")
	listen := fs.String("listen", ":7860", "UDP address for devices")
	buffer := fs.Int("buffer", 0, "datagrams kept while the server is unreachable (default 100000)")
	uplink := fs.String("uplink", "", "the relay's own connection type to report: ethernet, wifi or cellular")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *serverAddr == "" || *dir == "" {
		return fmt.Errorf("%w: --server and --dir are required", errUsage)
	}
	cert, pool, err := relay.LoadTLS(filepath.Join(*dir, "relay.crt"), filepath.Join(*dir, "relay.key"), filepath.Join(*dir, "ca.crt"))
	if err != nil {
		return err
	}
	r, err := relay.New(relay.Config{Listen: *listen, Server: *serverAddr, Certificate: cert, CAs: pool,
		CertFile: filepath.Join(*dir, "relay.crt"), KeyFile: filepath.Join(*dir, "relay.key"),
		DataDir: filepath.Join(*dir, "buffer"), BufferMax: *buffer, Version: version(), Logger: e.log,
		Uplink: func() (string, int16) { return *uplink, 0 }})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "relay %s listening on udp %s, forwarding to %s\n", r.ID(), r.Addr(), *serverAddr)
	return r.Run(ctx)
}

func runAdmin(ctx context.Context, e *env, args []string) error {
	usage := `Usage: signet admin <object> <action> --data DIR [flags]

  project add --id ID [--name NAME]
  device add --project ID --key KEY [--name NAME]
  device import --project ID --file FILE     (one public key per line)
  device import-manifest --project ID --manifest FILE --manufacturer-key KEY [--enable]
  device disable|enable --id N
  ca init | ca rotate | ca crl | ca status   (Signet's PKI; docs/pki.md)
  audit verify | audit list | audit checkpoint
                                             (the hash-chained audit log; docs/audit.md)
  org create --id ID | org add-project --org ORG --id ID
  user invite --email EMAIL (--org ORG [--project ID --role ROLE] [--org-admin] | --staff)
  user approve --email EMAIL | mfa reset --email EMAIL
  staff grant --org ORG --project ID --staff-email EMAIL [--write] [--ttl 4h] | staff revoke --org ORG --id N
                                             (people and access; docs/access.md)
  relay add --id ID                          (one-time enrolment token for "signet relay enroll")
  relay add --id ID --out DIR                (development: certificate, key and CA written here)
  relay revoke --id ID | relay certs         (revoke every certificate of a relay; list them)
  relay disable|enable --id ID
  server-key rotate | server-key finish     (server key rollover; restart the server after each)
  claim create --project ID [--uses N] [--ttl 24h] [--approve]
                                             (a token devices enrol themselves with)
  master-key init | rotate-master-key        (secrets at rest; docs/secrets.md)
  backup keygen | backup --out FILE | restore --backup FILE --identity FILE
                                             (encrypted backups; docs/secrets.md)

The admin commands work on the server's data directory; a running server
applies them within two seconds (a disabled device or relay is cut off).
`
	if len(args) > 0 {
		switch args[0] {
		case "backup":
			if len(args) > 1 && args[1] == "keygen" {
				return runBackupKeygen(ctx, e, args[2:])
			}
			return runAdminBackup(ctx, e, args[1:])
		case "restore":
			return runAdminRestore(ctx, e, args[1:])
		case "rotate-master-key":
			return runAdminRotateMasterKey(ctx, e, args[1:])
		case "master-key":
			if len(args) > 1 && args[1] == "init" {
				return runAdminMasterKeyInit(ctx, e, args[2:])
			}
		case "ca":
			return runAdminCA(ctx, e, args[1:])
		case "audit":
			return runAdminAudit(ctx, e, args[1:])
		case "org", "user", "mfa", "staff":
			if len(args) > 1 {
				return runAdminAccess(ctx, e, args[0], args[1], args[2:])
			}
		case "relay":
			if len(args) > 1 && (args[1] == "add" || args[1] == "revoke" || args[1] == "certs") {
				return runAdminRelay(ctx, e, args[1], args[2:])
			}
		}
	}
	if len(args) < 2 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(e.stderr, usage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return fmt.Errorf("%w: admin needs an object and an action", errUsage)
	}
	obj, action := args[0], args[1]
	fs := newFlags(e, "admin "+obj+" "+action, "admin "+obj+" "+action+" --data DIR [flags]", usage)
	data := fs.String("data", "", "the server's data directory (required)")
	id := fs.String("id", "", "id of the project, device or relay")
	name := fs.String("name", "", "display name")
	project := fs.String("project", "", "project id")
	key := fs.String("key", "", "device public key (base64)")
	file := fs.String("file", "", "file of device public keys, one per line")
	uses := fs.Int("uses", 1, "devices a claim token may enrol")
	ttl := fs.Duration("ttl", 24*time.Hour, "claim token lifetime")
	approve := fs.Bool("approve", false, "claimed devices wait, disabled, for approval")
	manifestFile := fs.String("manifest", "", "a factory manifest signed by a manufacturer")
	manufacturerKey := fs.String("manufacturer-key", "", "the manufacturer public key the project trusts (base64)")
	enable := fs.Bool("enable", false, "imported devices may talk at once")
	if err := parse(fs, args[2:]); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	switch obj + " " + action {
	case "server-key rotate":
		pub, err := server.RotateServerKey(*data)
		if err != nil {
			return err
		}
		if err := recordInstallation(ctx, *data, secrets.Config{}, "server-key.rotate", "server-key", pub.String()); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "new server key %s\nRestart the server: it answers the old and the new key, and tells each device the new one.\nWhen every device has talked since, run: signet admin server-key finish --data %s (and restart)\n", pub, *data)
		return nil
	case "server-key finish":
		if err := server.FinishServerKeyRotation(*data); err != nil {
			return err
		}
		if err := recordInstallation(ctx, *data, secrets.Config{}, "server-key.finish", "server-key", ""); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "the previous server key is retired (server.key.previous.retired: destroy it); restart the server")
		return nil
	case "project add", "device add", "device import", "device import-manifest", "device disable", "device enable",
		"relay disable", "relay enable", "claim create":
	default:
		return fmt.Errorf("%w: unknown admin command %q", errUsage, obj+" "+action)
	}
	a, err := server.OpenAdmin(ctx, *data)
	if err != nil {
		return err
	}
	defer a.Close()
	switch obj + " " + action {
	case "project add":
		if *id == "" {
			return fmt.Errorf("%w: --id is required", errUsage)
		}
		if err := a.AddProject(ctx, *id, cmpOr(*name, *id)); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "project %s\n", *id)
	case "device add", "device import":
		if *project == "" {
			return fmt.Errorf("%w: --project is required", errUsage)
		}
		keys := []string{*key}
		if obj+" "+action == "device import" {
			b, err := os.ReadFile(*file)
			if err != nil {
				return err
			}
			keys = strings.Fields(string(b))
		}
		for i, k := range keys {
			pk, err := wire.ParsePublicKey(k)
			if err != nil {
				return fmt.Errorf("%w: key %d: %v", errUsage, i+1, err)
			}
			n, err := a.AddDevice(ctx, *project, pk, *name)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "device %d %s\n", n, pk)
		}
	case "device import-manifest":
		if *project == "" || *manifestFile == "" || *manufacturerKey == "" {
			return fmt.Errorf("%w: --project, --manifest and --manufacturer-key are required", errUsage)
		}
		return importManifest(ctx, e, a, *project, *manifestFile, *manufacturerKey, *enable)
	case "device disable", "device enable":
		n, err := parseInt(*id)
		if err != nil {
			return err
		}
		if err := a.SetDeviceEnabled(ctx, n, action == "enable"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "device %d %sd\n", n, action)
	case "relay disable", "relay enable":
		if err := a.SetRelayEnabled(ctx, *id, action == "enable"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "relay %s %sd\n", *id, action)
	case "claim create":
		if *project == "" {
			return fmt.Errorf("%w: --project is required", errUsage)
		}
		tok, err := a.CreateClaimToken(ctx, *project, *uses, *ttl, *approve)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "claim token (shown once; give it to the devices, e.g. signet device simulate --claim):\n  %s\n", tok)
	default:
		return fmt.Errorf("%w: unknown admin command %q", errUsage, obj+" "+action)
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func parseInt(s string) (int64, error) {
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: --id must be a device number", errUsage)
	}
	return n, nil
}
