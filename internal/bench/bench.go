// Package bench is the engine of `signet bench`: it starts what it
// measures itself (a server, relays, and load generators in separate
// processes, all on free loopback ports in a temporary directory), runs
// each scenario for a bounded time, and reports every figure with its
// unit, the reference it is compared with (measured in the same run), the
// ratio to it and the target, as a table and as JSON.
//
// Rules of honesty, which the code follows throughout:
//   - Every figure is counted where it is true: rows in the store at the
//     end (through a read-only connection of the bench's own), events an
//     SSE client received, messages an MQTT subscriber received. What a
//     sender sent is used only to find losses.
//   - Each reference runs with the same payload size, on the same machine,
//     for the same duration as the figure it is compared with.
//   - Load generators run in child processes: the bench re-executes its own
//     binary (Config.Exec) with ChildEnv set, so that the process measured
//     is the server, not the simulator.
//
// Smoke mode runs every scenario in a few seconds and asserts only
// correctness (nothing lost, nothing stored or delivered twice); the
// figures of a smoke run mean nothing and its targets are not judged.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Scenario names, in the order "all" runs them.
const (
	Ingest    = "ingest"
	Handshake = "handshake"
	Fleet     = "fleet"
	Query     = "query"
	Recovery  = "recovery"
)

// Scenarios lists every scenario in the order "all" runs them.
var Scenarios = []string{Ingest, Handshake, Fleet, Query, Recovery}

// Defaults of Config. They keep each scenario within about a minute on a
// 2-core machine.
const (
	DefaultDuration      = 5 * time.Second
	DefaultDevices       = 1000
	DefaultQueryReadings = 1_000_000
	DefaultQueryDevices  = 1000
	DefaultOutage        = 10 * time.Second
	// DefaultFleetPeriod is how often each fleet device sends: the load
	// generator visits its devices in turn, so a pass over the fleet takes
	// this long whatever the fleet's size; the first pass is the warm-up.
	DefaultFleetPeriod    = 10 * time.Second
	DefaultFleetDuration  = 30 * time.Second
	DefaultQueryClients   = 4
	DefaultRecoveryFleet  = 200
	DefaultHandshakeFleet = 4000
	DefaultFloodSockets   = 32
)

// DefaultRelays are the relay counts of the ingest scenario.
var DefaultRelays = []int{1, 3, 10}

// DefaultFleetSizes are the fleet scenario's steps by default: what fits
// about a minute on two cores, where generating keys for, registering and
// handshaking each device costs about eight X25519 operations between the
// server and the load generator. The steps, 100,000 and
// 1,000,000, take minutes: ask for them with --fleet 100000,1000000.
var DefaultFleetSizes = []int{20_000}

// Config configures a run. The zero value of every field is a working
// default (the scenario's full size); Smoke shrinks every size.
type Config struct {
	// Scenarios to run, in order; empty means all.
	Scenarios []string
	// Smoke runs each scenario for a few seconds, checking correctness
	// only.
	Smoke bool
	// Duration is how long each measured run generates load (default
	// DefaultDuration); its references run as long.
	Duration time.Duration
	// Devices is the simulated devices of the ingest scenario.
	Devices int
	// Batch is the readings per datagram in the ingest scenario (default
	// 1, as most sensors send).
	Batch int
	// Relays are the relay counts of the ingest scenario.
	Relays []int
	// Paced are further fixed rates (readings/s) at which the ingest
	// scenario measures latency, after half the peak, with the first
	// relay count: latency at a rate of the user's choosing, and the
	// same load in every run, where half the peak moves with the peak.
	Paced []int
	// FleetSizes are the registered devices of the fleet scenario's steps.
	FleetSizes []int
	// FleetDuration is how long the fleet sends at its low rate while its
	// memory is watched (default DefaultFleetDuration).
	FleetDuration time.Duration
	// FleetPeriod is how often each fleet device sends (default
	// DefaultFleetPeriod; at most half of FleetDuration). A million
	// devices every 10 s offer 100,000 readings/s.
	FleetPeriod time.Duration
	// HandshakeDevices is the fleet that handshakes in the handshake
	// scenario.
	HandshakeDevices int
	// QueryReadings is the size of the query scenario's store.
	QueryReadings int
	// QueryDevices is the devices those readings are spread over.
	QueryDevices int
	// QueryClients is the concurrent API clients of the query scenario.
	QueryClients int
	// Outage is the server outage of the recovery scenario.
	Outage time.Duration
	// RecoveryDevices is the recovery scenario's fleet (device SDK, one
	// outbox each).
	RecoveryDevices int
	// Mosquitto is the path of the mosquitto broker for the MQTT
	// reference; "" looks it up ($PATH, then /usr/sbin). NoMQTT skips it.
	Mosquitto string
	NoMQTT    bool
	// Exec is the command that starts a child process (a load
	// generator): its first element the executable. Default: this
	// executable with the arguments "bench child". The child must call
	// ChildMain when ChildEnv is set.
	Exec []string
	// Dir is where temporary data directories go ("" is the system's).
	Dir string
	// Progress receives the progress line; nil discards it.
	Progress io.Writer
	// Logger receives warnings from the server and relays; nil discards.
	Logger *slog.Logger
}

// Figure is one measured value.
type Figure struct {
	Scenario string  `json:"scenario"`
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	// Reference names the figure this one is compared with, measured in
	// the same run; Ratio is Value / that figure's value.
	Reference string  `json:"reference,omitempty"`
	Ratio     float64 `json:"ratio,omitempty"`
	// Target is the goal in words ("≥ 100000"), and Met whether Value
	// reaches it; nil when there is no target or in smoke mode.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	// Note qualifies the figure (conditions, resolution).
	Note string `json:"note,omitempty"`
	// IsReference marks the references themselves.
	IsReference bool `json:"is_reference,omitempty"`
}

// Check is a correctness assertion (no loss, no duplicates).
type Check struct {
	Scenario string `json:"scenario"`
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail"`
}

// ScenarioTime is the wall time of one scenario.
type ScenarioTime struct {
	Name    string        `json:"name"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Error   string        `json:"error,omitempty"`
}

// Machine describes where a run ran.
type Machine struct {
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPU        string `json:"cpu_model"`
	MemoryMiB  uint64 `json:"memory_mib"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
}

// Report is the result of a run.
type Report struct {
	Command string        `json:"command,omitempty"`
	Started time.Time     `json:"started"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Smoke   bool          `json:"smoke"`
	Commit  string        `json:"commit"`
	Machine Machine       `json:"machine"`
	// Scenarios is how long each scenario took, setup included.
	Scenarios []ScenarioTime `json:"scenarios"`
	Figures   []Figure       `json:"figures"`
	Checks    []Check        `json:"checks"`
	Notes     []string       `json:"notes,omitempty"`
	Failures  []string       `json:"failures,omitempty"`
}

// Failed reports whether a check failed or a scenario could not run.
func (r *Report) Failed() bool {
	if len(r.Failures) > 0 {
		return true
	}
	for _, c := range r.Checks {
		if !c.OK {
			return true
		}
	}
	return false
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// run is the state of one bench run.
type run struct {
	cfg  Config
	rep  *Report
	log  *slog.Logger
	prog *progress
	exec []string
	// scenario is the one running, for figures and checks.
	scenario string
}

// ErrConfig marks an invalid Config (a usage error).
var ErrConfig = errors.New("invalid configuration")

// Run runs the configured scenarios and returns the report. An error means
// the run could not be set up at all; a scenario that fails is recorded in
// Report.Failures and the others still run.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("bench: %w: %w", ErrConfig, err)
	}
	r := &run{cfg: cfg, log: cfg.Logger, rep: &Report{Started: time.Now().UTC(), Smoke: cfg.Smoke,
		Commit: gitCommit(), Machine: machine()}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.prog = newProgress(cfg.Progress)
	defer r.prog.done()
	r.exec = cfg.Exec
	if len(r.exec) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: finding this executable to start load generators: %w", err)
		}
		r.exec = []string{self, "bench", "child"}
	}
	if cfg.Smoke {
		r.note("smoke mode: sizes and durations are tiny; only correctness is checked, figures mean nothing")
	}
	r.note(fmt.Sprintf("server, relays and SSE client run in the bench process; load generators in child processes; all on %d cores", runtime.NumCPU()))
	for _, sc := range cfg.Scenarios {
		r.scenario = sc
		r.prog.set(sc, "starting")
		began := time.Now()
		var err error
		switch sc {
		case Ingest:
			err = r.ingest(ctx)
		case Handshake:
			err = r.handshake(ctx)
		case Fleet:
			err = r.fleet(ctx)
		case Query:
			err = r.query(ctx)
		case Recovery:
			err = r.recovery(ctx)
		}
		st := ScenarioTime{Name: sc, Elapsed: time.Since(began)}
		if err != nil {
			st.Error = err.Error()
			r.rep.Failures = append(r.rep.Failures, fmt.Sprintf("%s: %v", sc, err))
			r.log.Error("scenario failed", "scenario", sc, "err", err)
		}
		r.rep.Scenarios = append(r.rep.Scenarios, st)
		if ctx.Err() != nil {
			break
		}
	}
	r.rep.Elapsed = time.Since(r.rep.Started)
	return r.rep, ctx.Err()
}

func (c *Config) setDefaults() error {
	if len(c.Scenarios) == 0 {
		c.Scenarios = slices.Clone(Scenarios)
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("unknown scenario %q (want one of %s, or all)", s, strings.Join(Scenarios, ", "))
		}
	}
	def := func(v *int, full, smoke int) {
		if *v <= 0 {
			*v = full
			if c.Smoke {
				*v = smoke
			}
		}
	}
	defd := func(v *time.Duration, full, smoke time.Duration) {
		if *v <= 0 {
			*v = full
			if c.Smoke {
				*v = smoke
			}
		}
	}
	defd(&c.Duration, DefaultDuration, time.Second)
	def(&c.Devices, DefaultDevices, 100)
	def(&c.Batch, 1, 1)
	def(&c.HandshakeDevices, DefaultHandshakeFleet, 300)
	def(&c.QueryReadings, DefaultQueryReadings, 50_000)
	def(&c.QueryDevices, DefaultQueryDevices, 50)
	def(&c.QueryClients, DefaultQueryClients, 2)
	def(&c.RecoveryDevices, DefaultRecoveryFleet, 20)
	defd(&c.FleetDuration, DefaultFleetDuration, 2*time.Second)
	defd(&c.FleetPeriod, DefaultFleetPeriod, time.Second)
	defd(&c.Outage, DefaultOutage, 2*time.Second)
	if len(c.Relays) == 0 {
		c.Relays = slices.Clone(DefaultRelays)
		if c.Smoke {
			c.Relays = []int{1, 3}
		}
	}
	if len(c.FleetSizes) == 0 {
		c.FleetSizes = slices.Clone(DefaultFleetSizes)
		if c.Smoke {
			c.FleetSizes = []int{1000}
		}
	}
	for _, n := range c.Relays {
		if n < 1 || n > 32 {
			return errors.New("relays must be 1..32")
		}
	}
	for _, n := range c.FleetSizes {
		if n < 1 || n > maxFleet {
			return fmt.Errorf("fleet sizes must be 1..%d", maxFleet)
		}
	}
	for _, n := range c.Paced {
		if n < 1 || n > maxPaced {
			return fmt.Errorf("paced rates must be 1..%d readings/s", maxPaced)
		}
	}
	if c.Batch > 16 {
		return errors.New("batch must be 1..16")
	}
	return nil
}

// figure records a figure of the running scenario.
func (r *run) figure(f Figure) {
	f.Scenario = r.scenario
	if r.cfg.Smoke {
		f.Met = nil
	}
	r.rep.Figures = append(r.rep.Figures, f)
}

// check records a correctness check.
func (r *run) check(name string, ok bool, format string, args ...any) {
	r.rep.Checks = append(r.rep.Checks, Check{Scenario: r.scenario, Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

func (r *run) note(s string) { r.rep.Notes = append(r.rep.Notes, s) }

// atLeast returns whether v ≥ want as a *bool for Figure.Met.
func atLeast(v, want float64) *bool { ok := v >= want; return &ok }

// atMost returns whether v ≤ want.
func atMost(v, want float64) *bool { ok := v <= want; return &ok }

func ratio(v, ref float64) float64 {
	if ref <= 0 {
		return 0
	}
	return v / ref
}

// machine describes this machine.
func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
		OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb uint64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				m.MemoryMiB = kb >> 10
			}
		}
	}
	if m.CPU == "" {
		m.CPU = "unknown"
	}
	return m
}

// gitCommit is the commit the binary was built from (build info), else
// the working tree's HEAD; "+dirty" marks uncommitted changes.
func gitCommit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if rev != "" {
			return rev + dirty
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if exec.CommandContext(ctx, "git", "diff", "--quiet", "HEAD").Run() != nil {
		rev += "+dirty"
	}
	return rev
}
