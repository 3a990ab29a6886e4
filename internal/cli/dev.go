package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/server"
	"github.com/signet-io/signet/internal/sim"
	"github.com/signet-io/signet/internal/wire"
)

// devProject is the project dev mode puts its fleet in.
const devProject = "demo"

// devUplinks are the simulated backhauls of dev mode's relays.
var devUplinks = []struct {
	kind string
	dBm  int16
}{{"ethernet", 0}, {"cellular", -79}, {"wifi", -61}}

func runDev(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "dev", "dev [flags]", `
Runs a whole Signet installation in one process on loopback: a server
(device channel, bus, store, API, live stream), three relays with
overlapping coverage, and a simulated fleet of sensors of mixed kinds
(temperature, humidity, pressure, and transmit-only pour spouts). Every
device has its own key and durable outbox and speaks the real encrypted
device channel; each transmission is heard by two relays, and the server
stores every reading once with the relays that heard it.

It prints the API address, a token, and the commands to watch the data.
Ctrl-C stops everything cleanly.`)
	devices := fs.Int("devices", 50, "simulated devices")
	relays := fs.Int("relays", 3, "relays")
	rate := fs.Float64("rate", 0.2, "readings per second per device")
	dataDir := fs.String("data", "", "data directory (default: a new temporary directory, removed at exit)")
	httpAddr := fs.String("http", "127.0.0.1:0", "API address (port 0: any free port)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	verbose := fs.Bool("v", false, "print every reading as it is stored")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *devices < 0 || *devices > 100000 || *rate <= 0 || *relays < 1 || *relays > 16 {
		return fmt.Errorf("%w: --devices must be 0..100000, --relays 1..16 and --rate positive", errUsage)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	dir := *dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "signet-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	srv, err := server.Open(ctx, server.Config{
		DataDir: filepath.Join(dir, "server"), Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0",
		HTTPListen: *httpAddr, Logger: e.log,
	})
	if err != nil {
		return err
	}
	if err := srv.AddProject(ctx, devProject, "Demo fleet"); err != nil {
		return err
	}
	token := srv.BootstrapToken()
	if token == "" {
		token = "(printed on the first start of this data directory)"
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	srvDone := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); defer close(srvDone); _ = srv.Run(ctx) }()

	var relayAddrs []string
	for i := range *relays {
		id := fmt.Sprintf("relay-%d", i+1)
		rdir := filepath.Join(dir, id)
		files, err := srv.AddRelay(ctx, id, rdir)
		if err != nil {
			return err
		}
		cert, pool, err := relay.LoadTLS(files.Cert, files.Key, files.CA)
		if err != nil {
			return err
		}
		uplink := devUplinks[i%len(devUplinks)]
		r, err := relay.New(relay.Config{Listen: "127.0.0.1:0", Server: srv.RelayAddr(), Certificate: cert, CAs: pool,
			CertFile: files.Cert, KeyFile: files.Key,
			DataDir: filepath.Join(rdir, "buffer"), Version: version(), Logger: e.log,
			Uplink: func() (string, int16) { return uplink.kind, uplink.dBm }})
		if err != nil {
			return err
		}
		relayAddrs = append(relayAddrs, r.Addr().String())
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx) }()
	}

	fmt.Fprintf(e.stdout, `Signet dev is running: a server, %d relays and %d simulated devices.

  API            %s/api/v1   (OpenAPI: %s/api/v1/openapi.json)
  API token      %s
  devices send   udp %s (direct) and relays %v
  server key     %s
  data           %s

Watch the readings arrive (in another terminal):
  SIGNET_TOKEN=%s go run ./cmd/signet tail --api %s --project %s
List the devices with their health and network status:
  curl -s -H "Authorization: Bearer %s" %s/api/v1/projects/%s/devices
Stop with Ctrl-C.

`, *relays, *devices, srv.APIURL(), srv.APIURL(), token, srv.UDPAddr(), relayAddrs, srv.PublicKey(), dir,
		token, srv.APIURL(), devProject, token, srv.APIURL(), devProject)

	fleet, waitFleet, err := sim.StartFleet(ctx, sim.FleetConfig{
		Devices: *devices, Dir: filepath.Join(dir, "fleet"), ServerKey: srv.PublicKey(), Relays: relayAddrs,
		Rate: *rate, Logger: e.log,
		Register: func(ctx context.Context, i int, pub wire.PublicKey, kind wire.Kind) error {
			_, err := srv.AddDevice(ctx, devProject, pub, fmt.Sprintf("%s-%d", kind, i))
			return err
		},
		Options: func(o *device.Options) { o.HealthEvery = 30 * time.Second },
	})
	if err != nil {
		cancel()
		waitFleet()
		return err
	}
	defer waitFleet()

	if *verbose {
		live, stop := srv.Subscribe(devProject)
		defer stop()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range live {
				heard := ""
				for _, h := range r.Heard {
					heard += " " + cmpOr(h.RelayID, "direct")
				}
				fmt.Fprintf(e.stdout, "%s  #%-6d device %-4d seq %-5d %-26s heard by%s\n", r.Received.Format("15:04:05.000"), r.ID, r.DeviceID, r.Seq, sim.Describe(wireReading(r)), heard)
			}
		}()
	}

	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			<-srvDone
			st := srv.Ingest().Stats()
			fmt.Fprintf(e.stdout, "\nstopped: %d readings stored; %d handshakes; %d duplicate copies dropped; %d datagrams refused\n",
				st.Readings.Load(), st.Handshakes.Load()+st.Epochs.Load(), st.Duplicates.Load(), refused(st))
			return nil
		case <-tick.C:
			st := srv.Ingest().Stats()
			fmt.Fprintf(e.stdout, "-- %d readings stored, %d awaiting acknowledgement, %d live sessions, %d duplicate copies dropped, %d datagrams refused\n",
				st.Readings.Load(), fleet.Pending(), srv.Ingest().Sessions(), st.Duplicates.Load(), refused(st))
		}
	}
}
