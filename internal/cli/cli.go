// Package cli implements the signet command's subcommands. main only
// parses the process environment and calls Run, so every command can be
// run and tested in-process.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
)

// Exit codes, one per error kind (STYLE: mapped in one place).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// errUsage marks an error as the user's invocation being wrong.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// env is what a command may touch of the outside world.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

func commands() []command {
	return []command{
		{"dev", "run a server and a simulated fleet in one process, printing readings as they arrive", runDev},
		{"server", "run a Signet server", runServer},
		{"relay", "run a relay that forwards device datagrams to a server", runRelay},
		{"admin", "register projects, devices and relays in a server's data directory", runAdmin},
		{"device", "device tools: keygen, simulate", runDevice},
		{"manufacturer", "manufacturer tools: keygen, sign a factory manifest", runManufacturer},
		{"tail", "print a project's live stream of readings", runTail},
		{"bench", "measure the whole system against this machine's limits and a peer (Mosquitto)", runBench},
		{"version", "print the version", runVersion},
	}
}

// Run runs the signet command line args and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return exitCode(e, c.run(ctx, e, args[1:]))
		}
	}
	fmt.Fprintf(stderr, "signet: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func exitCode(e *env, err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "signet: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "signet: %v\n", err)
		return exitFailure
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Signet: secure sensor telemetry.

Usage: signet <command> [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Start here: signet dev
Run "signet <command> --help" for a command's flags.
`)
}

// newFlags returns a flag set that prints a teaching usage text and returns
// errors instead of exiting.
func newFlags(e *env, name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: signet %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(about))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and rejects stray positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q (see signet %s --help)", errUsage, fs.Arg(0), fs.Name())
	}
	return nil
}

func runVersion(ctx context.Context, e *env, args []string) error {
	fmt.Fprintf(e.stdout, "signet %s\n", version())
	return nil
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func printJSONLine(e *env, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}
