package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/signet-io/signet/internal/bench"
)

func runBench(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "child" {
		// A load generator started by signet bench itself.
		mode := os.Getenv(bench.ChildEnv)
		if mode == "" {
			return fmt.Errorf("%w: \"signet bench child\" is started by signet bench itself", errUsage)
		}
		if code := bench.ChildMain(ctx, mode, os.Stdin, e.stdout, e.stderr); code != 0 {
			return fmt.Errorf("bench child %s exited with %d", mode, code)
		}
		return nil
	}
	fs := newFlags(e, "bench", "bench [flags] [scenario ...]", `
Measures the whole system on this machine and compares every figure with
a reference measured in the same run. It starts everything itself — a
server and relays in this process, load generators in child processes
(this same binary), a Mosquitto broker for the MQTT reference — on free
loopback ports in a temporary directory, and removes it all at the end.

Scenarios (default: all, in this order):
  ingest     stored uplinks/s through 1, 3 and 10 relays, counted in the
             store; latency relay receive → durable → SSE client; against
             raw UDP, raw ChaCha20-Poly1305, raw store insert and a tuned
             Mosquitto (QoS 1); then the latency at half the peak, and at
             each fixed rate --paced names
  handshake  handshakes/s per core, and legitimate handshakes while a
             forged-handshake flood turns the cookie defence on
  fleet      server memory per idle device session, memory over time and
             ingest for a fleet of 20,000 devices, each sending once every
             10 s (--fleet 100000,1000000 for the issue's steps: minutes
             each on 2 cores)
  query      readings-by-device-and-time queries/s and p99 through the
             API on a store of readings generated in bulk: 1,000,000 by
             default; --query-readings 10000000 for ten million (the
             generation alone takes several minutes on 2 cores)
  recovery   time for a fleet to drain after a server outage, with loss
             and duplicates counted (both must be 0)

Each scenario's defaults finish in about a minute on 2 cores. Every figure
is counted where it is true: rows in the store, events an SSE client
received, messages an MQTT subscriber received. The table shows each
target as MET or MISSED; --json FILE writes the same with the machine
(cores, CPU model, Go version) and the git commit.

--smoke runs every scenario in a few seconds and checks only correctness
(nothing lost, nothing stored or delivered twice):
  go run ./cmd/signet bench --smoke all
(CI runs the same as a Go test, TestSmokeAll in internal/bench.)
The exit status is 1 if a check failed or a scenario could not run.

Examples:
  signet bench ingest --relays 1 --duration 10s
  signet bench ingest --relays 1 --paced 10000,20000
  signet bench --json bench.json
  signet bench fleet --fleet 100000,1000000
  signet bench handshake --cpuprofile cpu.pprof && go tool pprof -top cpu.pprof`)
	var cfg bench.Config
	smoke := fs.Bool("smoke", false, "run each scenario for a few seconds, checking correctness only")
	jsonFile := fs.String("json", "", "also write the report as JSON to `FILE`")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "how long each measured run sends load (and each reference runs)")
	fs.IntVar(&cfg.Devices, "devices", bench.DefaultDevices, "simulated devices of the ingest scenario")
	fs.IntVar(&cfg.Batch, "batch", 1, "readings per datagram in the ingest scenario (1..16)")
	relays := fs.String("relays", "1,3,10", "relay counts of the ingest scenario, comma-separated")
	paced := fs.String("paced", "", "further fixed `RATES` (readings/s, comma-separated) at which the ingest scenario measures latency after half the peak, with the first relay count")
	fleet := fs.String("fleet", "20000", "registered devices of each fleet step, comma-separated")
	fs.DurationVar(&cfg.FleetDuration, "fleet-duration", bench.DefaultFleetDuration, "how long the fleet sends while its memory is watched")
	fs.DurationVar(&cfg.FleetPeriod, "fleet-period", bench.DefaultFleetPeriod, "how often each fleet device sends (1,000,000 devices every 10s offer 100,000 readings/s)")
	fs.IntVar(&cfg.HandshakeDevices, "handshake-devices", bench.DefaultHandshakeFleet, "devices that handshake in the handshake scenario")
	fs.IntVar(&cfg.QueryReadings, "query-readings", bench.DefaultQueryReadings, "readings generated into the query scenario's store")
	fs.IntVar(&cfg.QueryDevices, "query-devices", bench.DefaultQueryDevices, "devices those readings belong to")
	fs.IntVar(&cfg.QueryClients, "query-clients", bench.DefaultQueryClients, "concurrent API clients of the query scenario")
	fs.DurationVar(&cfg.Outage, "outage", bench.DefaultOutage, "the server outage of the recovery scenario")
	fs.IntVar(&cfg.RecoveryDevices, "recovery-devices", bench.DefaultRecoveryFleet, "devices of the recovery scenario (device SDK, an outbox each)")
	fs.BoolVar(&cfg.NoMQTT, "no-mqtt", false, "skip the Mosquitto reference")
	fs.StringVar(&cfg.Mosquitto, "mosquitto", "", "path of the mosquitto broker (default: from $PATH or /usr/sbin)")
	fs.StringVar(&cfg.Dir, "tmp", "", "where the temporary data directories go (default: the system's)")
	verbose := fs.Bool("v", false, "log the server's and relays' warnings")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (server, relays, SSE client; not the load generators) to `FILE`, for go tool pprof")
	// Flags and scenario names may come in any order.
	var names []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		args = fs.Args()[1:]
	}
	for _, n := range names {
		if n == "all" {
			cfg.Scenarios = nil
			break
		}
		cfg.Scenarios = append(cfg.Scenarios, n)
	}
	cfg.Smoke = *smoke
	var err error
	if cfg.Relays, err = intList(*relays); err != nil {
		return fmt.Errorf("%w: --relays: %v", errUsage, err)
	}
	if cfg.Paced, err = intList(*paced); err != nil {
		return fmt.Errorf("%w: --paced: %v", errUsage, err)
	}
	if cfg.FleetSizes, err = intList(*fleet); err != nil {
		return fmt.Errorf("%w: --fleet: %v", errUsage, err)
	}
	if cfg.Smoke {
		// Flags left at their defaults take the smoke sizes.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, zero := range map[string]func(){
			"duration": func() { cfg.Duration = 0 }, "devices": func() { cfg.Devices = 0 },
			"relays": func() { cfg.Relays = nil }, "fleet": func() { cfg.FleetSizes = nil },
			"fleet-duration": func() { cfg.FleetDuration = 0 }, "fleet-period": func() { cfg.FleetPeriod = 0 },
			"handshake-devices": func() { cfg.HandshakeDevices = 0 },
			"query-readings":    func() { cfg.QueryReadings = 0 }, "query-devices": func() { cfg.QueryDevices = 0 },
			"query-clients": func() { cfg.QueryClients = 0 }, "outage": func() { cfg.Outage = 0 },
			"recovery-devices": func() { cfg.RecoveryDevices = 0 },
		} {
			if !set[name] {
				zero()
			}
		}
	}
	cfg.Progress = e.stderr
	if *verbose {
		cfg.Logger = e.log
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	rep, err := bench.Run(ctx, cfg)
	if perr := stopProfile(); perr != nil && err == nil {
		err = perr
	}
	if rep == nil {
		if errors.Is(err, bench.ErrConfig) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return err
	}
	rep.Command = "signet bench " + strings.Join(os.Args[min(2, len(os.Args)):], " ")
	if werr := rep.WriteTable(e.stdout); werr != nil {
		return werr
	}
	if *jsonFile != "" {
		f, ferr := os.Create(*jsonFile)
		if ferr != nil {
			return ferr
		}
		if werr := rep.WriteJSON(f); werr != nil {
			f.Close()
			return werr
		}
		if cerr := f.Close(); cerr != nil {
			return cerr
		}
	}
	if err != nil {
		return err
	}
	if rep.Failed() {
		return errors.New("bench: a check failed or a scenario could not run (see above)")
	}
	return nil
}

// startCPUProfile starts profiling into the file at path, if there is one,
// and returns what stops it and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		return nil
	}, nil
}

// intList parses "1,3,10".
func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
