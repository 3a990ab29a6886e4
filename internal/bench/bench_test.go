package bench

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/loadgen"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// TestMain lets the test binary act as the bench's load generators: the
// bench re-executes os.Executable() (this binary) with ChildEnv set.
func TestMain(m *testing.M) {
	if mode := os.Getenv(ChildEnv); mode != "" {
		os.Exit(ChildMain(context.Background(), mode, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runSmoke runs scenarios in smoke mode with this test binary as the
// load generator, and fails on any failed check.
func runSmoke(t *testing.T, cfg Config) *Report {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Smoke = true
	cfg.Exec = []string{self}
	cfg.Dir = t.TempDir()
	cfg.Progress = testWriter{t}
	if raceEnabled {
		// Smaller still: everything runs several times slower.
		cfg.Relays, cfg.NoMQTT, cfg.Devices, cfg.Duration = []int{1}, true, 20, time.Second
		cfg.HandshakeDevices, cfg.FleetSizes, cfg.FleetDuration = 50, []int{100}, time.Second
		cfg.QueryReadings, cfg.QueryDevices, cfg.RecoveryDevices, cfg.Outage = 5000, 10, 8, time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	if rep.Failed() {
		t.Fatalf("a check failed or a scenario could not run")
	}
	if len(rep.Checks) == 0 {
		t.Fatal("no checks ran")
	}
	return rep
}

// testWriter shows the progress lines in the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestSmokeAll is what CI runs: every scenario in smoke mode, each
// checking that nothing is lost or duplicated, with this test binary as
// the load generators. The MQTT reference runs if mosquitto is installed.
func TestSmokeAll(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers, relays and load generator processes; skipped with -short")
	}
	rep := runSmoke(t, Config{Paced: []int{500}})
	scen := map[string]bool{}
	paced := false
	for _, c := range rep.Checks {
		scen[c.Scenario] = true
		paced = paced || c.Name == "exactly once, paced at 500 readings/s"
	}
	if !paced {
		t.Error("the run paced at 500 readings/s (--paced) checked nothing")
	}
	pacedFig, writerFig := false, false
	for _, f := range rep.Figures {
		pacedFig = pacedFig || strings.HasPrefix(f.Name, "p99 relay receive → SSE client, 500 readings/s")
		writerFig = writerFig || strings.HasPrefix(f.Name, "store writer in appends, 500 readings/s") && f.Value > 0
	}
	if !pacedFig {
		t.Error("no latency figure for the run paced at 500 readings/s")
	}
	if !writerFig {
		t.Error("no store writer figure for the run paced at 500 readings/s")
	}
	for _, s := range Scenarios {
		if !scen[s] {
			t.Errorf("scenario %s checked nothing", s)
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Machine.Cores == 0 || back.Machine.GoVersion == "" || back.Commit == "" || len(back.Figures) == 0 {
		t.Fatalf("the JSON report lacks the machine, the commit or the figures: %+v", back.Machine)
	}
	for _, f := range back.Figures {
		if f.Met != nil {
			t.Errorf("smoke mode judged a target: %+v", f)
		}
	}
}

func TestConfigRejectsUnknownScenario(t *testing.T) {
	if _, err := Run(context.Background(), Config{Scenarios: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "unknown scenario") {
		t.Fatalf("got %v", err)
	}
}

func TestFmtValue(t *testing.T) {
	for v, want := range map[float64]string{1234567: "1,234,567", 512: "512", 25.04: "25.0", 0.5: "0.50", -2500: "-2,500"} {
		if got := fmtValue(v); got != want {
			t.Errorf("fmtValue(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestSampleDatagram: the references use datagrams the size the load
// generator sends.
func TestSampleDatagram(t *testing.T) {
	for _, b := range []int{1, 16} {
		dg, pt, err := sampleDatagram(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(dg) != len(pt)+wire.TransportOverhead || len(pt) < b*loadgen.ReadingSize || len(pt) > b*(loadgen.ReadingSize+8)+16 {
			t.Fatalf("batch %d: datagram %d bytes, plaintext %d", b, len(dg), len(pt))
		}
	}
}

func TestChildRejectsUnknownMode(t *testing.T) {
	var out, errb bytes.Buffer
	code := ChildMain(context.Background(), "nope", strings.NewReader(`{"kind":"config"}`+"\n"), &out, &errb)
	if code == 0 || !strings.Contains(out.String(), "unknown child mode") {
		t.Fatalf("exit %d, stdout %q", code, out.String())
	}
}

// TestCheckDevicesFindsLossAndExtras: the exactly-once check every
// scenario ends with must see a missing reading and an unexpected one.
func TestCheckDevicesFindsLossAndExtras(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "signet.db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.CreateProject(ctx, store.Project{ID: project, Name: "t", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	keys := make([]wire.PublicKey, 3)
	for i := range keys {
		keys[i][0] = byte(i + 1)
	}
	ids, err := bulkDevices(ctx, path, keys)
	if err != nil {
		t.Fatal(err)
	}
	// Device 0 stores 1..3, device 1 stores 1 and 3, device 2 stores 1..2.
	var rs []store.Reading
	for i, seqs := range [][]uint64{{1, 2, 3}, {1, 3}, {1, 2}} {
		for _, seq := range seqs {
			rs = append(rs, store.Reading{DeviceID: ids[i], ProjectID: project, Seq: seq, Received: time.Now(),
				Kind: wire.KindNumeric, Value: 1, Name: "n", Unit: "u"})
		}
	}
	if _, err := st.AppendReadings(ctx, store.Append{Readings: rs}); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := &system{db: db}
	c, err := s.checkDevices(ctx, ids, []uint64{3, 3, 1})
	if err != nil {
		t.Fatal(err)
	}
	if c.ok() || c.exact != 1 || c.missing != 1 || c.extra != 1 {
		t.Fatalf("got %+v, want 1 exact, 1 missing (device 1 seq 2), 1 extra (device 2 seq 2)", c)
	}
	if !strings.Contains(c.String(), "lacks sequences [2]") {
		t.Fatalf("the check does not name the missing sequence: %v", c)
	}
	if c, _ := s.checkDevices(ctx, ids, []uint64{3, 3, 2}); c.ok() {
		t.Fatalf("a device with a gap passed: %v", c)
	}
	if c, _ := s.checkDevices(ctx, ids[:1], []uint64{3}); c.ok() {
		t.Fatalf("readings of devices the bench did not drive passed: %v", c)
	}
	// A reading stored twice (as a store that lost its guard would) is
	// extra, and named.
	rw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, err := rw.ExecContext(ctx, `INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit)
		SELECT device_id, project_id, seq, received, kind, value, name, unit FROM readings WHERE device_id = ? AND seq = 2`, ids[0]); err != nil {
		t.Fatal(err)
	}
	c, err = s.checkDevices(ctx, ids, []uint64{3, 3, 2})
	if err != nil {
		t.Fatal(err)
	}
	if c.exact != 1 || c.extra != 1 || !strings.Contains(c.String(), "has twice [2]") {
		t.Fatalf("a reading stored twice: %+v, want device 0 not exact, 1 extra, named", c)
	}
}
