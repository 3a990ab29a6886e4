package cli

import (
	"context"
	"fmt"
	"github.com/signet-io/signet/internal/sim"
	"os"
	"strconv"
	"strings"

	"github.com/signet-io/signet/client"
)

func runTail(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "tail", "tail --project ID [flags]", `
Prints a project's live stream of readings as they are stored. It resumes
by itself after a disconnect (no reading missed, none twice). The API token
is read from $SIGNET_TOKEN (or --token-file), never from the command line,
so it does not end up in shell history or the process list.`)
	server := fs.String("api", "http://127.0.0.1:7880", "the server's API base URL")
	project := fs.String("project", "", "project id (required)")
	device := fs.Int64("device", 0, "only this device id")
	after := fs.Int64("after", 0, "first replay every reading after this id")
	tokenFile := fs.String("token-file", "", "file holding the API token (default: $SIGNET_TOKEN)")
	asJSON := fs.Bool("json", false, "print each reading as a JSON line")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *project == "" {
		return fmt.Errorf("%w: --project is required", errUsage)
	}
	token := os.Getenv("SIGNET_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return fmt.Errorf("%w: no API token: set SIGNET_TOKEN or --token-file", errUsage)
	}
	c, err := client.New(*server, token)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return c.Stream(ctx, client.StreamOptions{Project: *project, Device: *device, After: *after}, func(r client.Reading) error {
		if *asJSON {
			return printJSONLine(e, r)
		}
		relays := make([]string, 0, len(r.Heard))
		for _, h := range r.Heard {
			name := h.Relay
			if name == "" {
				name = "direct"
			}
			relays = append(relays, name+" "+strconv.Itoa(int(h.RSSI))+"dBm")
		}
		fmt.Fprintf(e.stdout, "%s  #%-7d device %-4d seq %-6d %-28s heard by %s\n",
			r.Received.Local().Format("15:04:05.000"), r.ID, r.DeviceID, r.Seq, describeClient(r), strings.Join(relays, ", "))
		return nil
	})
}

func describeClient(r client.Reading) string {
	switch {
	case r.Pour != nil:
		return "pour " + sim.FmtFloat(float64(r.Pour.Duration)/1000) + " s, " + strconv.FormatFloat(float64(r.Pour.Volume), 'f', 1, 32) + " ml"
	case r.Value == nil:
		return r.Kind
	case r.Kind == "temperature":
		return sim.FmtFloat(*r.Value) + " °C"
	case r.Kind == "humidity":
		return sim.FmtFloat(*r.Value) + " %RH"
	}
	return strings.TrimSpace(r.Name + " " + sim.FmtFloat(*r.Value) + " " + r.Unit)
}
