// Command signet is the single Signet binary: server, relay, dev mode,
// device simulator and administration. See `signet help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/signet-io/signet/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
