package cli

import (
	"context"
	"errors"
	"fmt"
	"github.com/signet-io/signet/internal/sim"
	"github.com/signet-io/signet/internal/wire"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/signet-io/signet/device"
)

func runDevice(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stderr, `Usage: signet device <subcommand> [flags]

Subcommands:
  keygen    create a device key pair and print the public key to register
  simulate  run one simulated sensor against a server

`)
		if len(args) == 0 {
			return fmt.Errorf("%w: device needs a subcommand", errUsage)
		}
		return nil
	}
	switch args[0] {
	case "keygen":
		return runDeviceKeygen(ctx, e, args[1:])
	case "simulate":
		return runDeviceSimulate(ctx, e, args[1:])
	}
	return fmt.Errorf("%w: unknown device subcommand %q", errUsage, args[0])
}

func runDeviceKeygen(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "device keygen", "device keygen --key FILE", `
Creates the device's own X25519 key pair in FILE (mode 0600) and prints the
public key, which is what you register on the server. The private key never
leaves the file. If FILE exists, its public key is printed again.`)
	keyFile := fs.String("key", "", "key file to create or read (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *keyFile == "" {
		return fmt.Errorf("%w: --key is required", errUsage)
	}
	k, err := device.LoadOrCreateKey(*keyFile)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, k.Public().String())
	k.Zero()
	return nil
}

func runDeviceSimulate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "device simulate", "device simulate --server HOST:PORT --server-key KEY --dir DIR [flags]", `
Runs one simulated sensor, or with --devices N a fleet of N of mixed kinds
(temperature, humidity, transmit-only pour spouts, pressure; each reports
its battery). Each keeps its key and its durable outbox under DIR, so it can
be killed and restarted: unacknowledged readings are sent again and the
server stores each exactly once. The public keys are printed first (and
written to --keys-out); register them with "signet admin device add" or
"signet admin device import".

A single device stops after --count readings are all acknowledged (0: run
until interrupted); a fleet runs until interrupted.`)
	server := fs.String("server", "", "server or relay UDP address, host:port (required)")
	serverKey := fs.String("server-key", "", "the server's public key, base64 (required)")
	dir := fs.String("dir", "", "directory for the device key and outbox (required)")
	useTCP := fs.Bool("tcp", false, "send framed datagrams over TCP instead of UDP")
	transmitOnly := fs.Bool("transmit-only", false, "one-way profile: no ACKs, each datagram repeated")
	count := fs.Int("count", 0, "readings to take before stopping (0: unlimited)")
	rate := fs.Float64("rate", 1, "readings per second")
	kindName := fs.String("kind", "temperature", "reading kind: temperature, humidity, pour or numeric")
	rekey := fs.Duration("rekey", 0, "session lifetime T (default 2h; sessions end after a random time in [T/2, T])")
	pad := fs.Int("pad", 0, "pad plaintexts to a multiple of this many bytes")
	noSync := fs.Bool("no-sync", false, "skip fsync of the outbox (faster, loses readings on power loss)")
	devices := fs.Int("devices", 1, "number of simulated devices (more than 1: a fleet of mixed kinds)")
	claim := fs.String("claim", "", "claim token: an unregistered device enrols itself with it")
	keysOut := fs.String("keys-out", "", "with --devices: write the fleet's public keys here, one per line")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *server == "" || *serverKey == "" || *dir == "" {
		return fmt.Errorf("%w: --server, --server-key and --dir are required", errUsage)
	}
	kind, ok := sim.ParseKind(*kindName)
	if !ok {
		return fmt.Errorf("%w: unknown --kind %q", errUsage, *kindName)
	}
	if *rate <= 0 || *count < 0 {
		return fmt.Errorf("%w: --rate must be positive and --count not negative", errUsage)
	}
	sk, err := device.ParsePublicKey(*serverKey)
	if err != nil {
		return fmt.Errorf("%w: --server-key: %v", errUsage, err)
	}
	if *devices < 1 || *devices > 100000 {
		return fmt.Errorf("%w: --devices must be 1..100000", errUsage)
	}
	if *devices > 1 {
		return simulateFleet(ctx, e, *server, sk, *dir, *devices, *rate, *keysOut)
	}
	key, err := device.LoadOrCreateKey(filepath.Join(*dir, "device.key"))
	if err != nil {
		return err
	}
	var tr device.Transport
	if *useTCP {
		tr, err = device.DialTCP(*server)
	} else {
		tr, err = device.DialUDP(*server)
	}
	if err != nil {
		return err
	}
	defer tr.Close()
	opt := device.Options{Key: key, ServerKey: sk, Transport: tr, Dir: *dir, NoSync: *noSync, Pad: *pad, TransmitOnly: *transmitOnly,
		ClaimToken: *claim, Logger: e.log}
	opt.Timers.RekeyAfter = *rekey
	d, err := device.New(opt)
	key.Zero()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "device %s\n", d.PublicKey())
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()

	s := sim.NewSensor(kind, uint64(time.Now().UnixNano()))
	tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
	defer tick.Stop()
	taken := 0
	for *count == 0 || taken < *count {
		select {
		case <-ctx.Done():
			cancel()
			return <-done
		case <-tick.C:
		}
		seq, err := d.Record(s.Next(time.Now()))
		if err != nil {
			cancel()
			<-done
			return err
		}
		taken++
		fmt.Fprintf(e.stdout, "recorded %d\n", seq)
	}
	// All taken: wait until the server has acknowledged them.
	for d.Pending() > 0 && !*transmitOnly {
		select {
		case <-ctx.Done():
			cancel()
			return <-done
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	fmt.Fprintf(e.stdout, "all %s readings acknowledged\n", strconv.Itoa(taken))
	return nil
}

// simulateFleet runs --devices N devices against one address until ctx
// ends.
func simulateFleet(ctx context.Context, e *env, server string, sk device.PublicKey, dir string, n int, rate float64, keysOut string) error {
	var keys strings.Builder
	_, wait, err := sim.StartFleet(ctx, sim.FleetConfig{
		Devices: n, Dir: dir, ServerKey: sk, Relays: []string{server}, Rate: rate, Logger: e.log,
		Register: func(ctx context.Context, i int, pub wire.PublicKey, kind wire.Kind) error {
			fmt.Fprintf(e.stdout, "device %d %s %s\n", i, kind, pub)
			keys.WriteString(pub.String() + "\n")
			return nil
		},
	})
	if err != nil {
		wait()
		return err
	}
	if keysOut != "" {
		if err := os.WriteFile(keysOut, []byte(keys.String()), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "%d devices running; Ctrl-C stops them\n", n)
	<-ctx.Done()
	wait()
	return nil
}
