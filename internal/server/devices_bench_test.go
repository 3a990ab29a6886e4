package server

import (
	"crypto/rand"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/wire"
)

// BenchmarkLoadDevices measures one registry reload, what the
// housekeeping does every two seconds, over a registered fleet whose
// devices have all been heard (a status with one hearing): with
// nothing changed, and with one device disabled or enabled (by another
// connection, as the admin command does) before each reload; the write is
// not counted. cpu-ns/op is the process's CPU time.
func BenchmarkLoadDevices(b *testing.B) {
	for _, fleet := range []int{20_000, 100_000} {
		b.Run(fmt.Sprintf("fleet=%d", fleet), func(b *testing.B) {
			ctx := b.Context()
			dir := b.TempDir()
			srv, err := Open(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
				Stream: uniqueStream()})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.close()
			if err := srv.AddProject(ctx, "p", "bench"); err != nil {
				b.Fatal(err)
			}
			db, err := sql.Open("sqlite", filepath.Join(dir, "signet.db")+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			st, err := tx.PrepareContext(ctx, `INSERT INTO devices (project_id, public_key, name, enabled, created) VALUES ('p', ?, '', 1, ?)`)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now().UnixMilli()
			for range fleet {
				var k wire.PublicKey
				_, _ = rand.Read(k[:])
				if _, err := st.ExecContext(ctx, k[:], now); err != nil {
					b.Fatal(err)
				}
			}
			st.Close()
			// Every device has been heard, as in a running fleet: its
			// status names the relay ("" the server's own port).
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen = ?, relays = ?`, now,
				fmt.Sprintf(`[{"relay":"","received":%d,"rssi":-70,"snr":7.5}]`, now)); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			if err := srv.loadDevices(ctx); err != nil {
				b.Fatal(err)
			}
			for _, change := range []bool{false, true} {
				name := "unchanged"
				if change {
					name = "one-changed"
				}
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					var cpu time.Duration
					enabled := false
					for b.Loop() {
						if change {
							b.StopTimer()
							if _, err := db.ExecContext(ctx, `UPDATE devices SET enabled = ? WHERE id = 1`, enabled); err != nil {
								b.Fatal(err)
							}
							enabled = !enabled
							b.StartTimer()
						}
						cpu0 := procstat.CPUTime()
						if err := srv.loadDevices(ctx); err != nil {
							b.Fatal(err)
						}
						cpu += procstat.CPUTime() - cpu0
					}
					b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
				})
			}
		})
	}
}
