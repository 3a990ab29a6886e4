package sim

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/wire"
)

// FleetConfig describes a simulated fleet. Zero values are defaults.
type FleetConfig struct {
	// Devices is the fleet size.
	Devices int
	// Dir holds each device's key and outbox (Dir/device-N).
	Dir string
	// ServerKey is the key every device pins.
	ServerKey wire.PublicKey
	// Relays are the UDP addresses of the relays (or of the server itself).
	// Each device is in range of InRange of them (default: up to 2),
	// chosen by its index so coverage overlaps.
	Relays  []string
	InRange int
	// Rate is readings per second per device (default 0.2).
	Rate float64
	// Count stops each device after this many readings (0: no limit);
	// the device keeps running to deliver them.
	Count int
	// Kinds is the mix; default temperature, humidity, pour, numeric.
	// Pour sensors are transmit-only.
	Kinds []wire.Kind
	// Register is called with each device's key before it starts, so the
	// server accepts it.
	Register func(ctx context.Context, i int, pub wire.PublicKey, kind wire.Kind) error
	// Options adjusts each device's options (timers, retransmit).
	Options func(*device.Options)
	// Logger; nil discards.
	Logger *slog.Logger
}

// Fleet is a running simulated fleet.
type Fleet struct {
	mu      sync.Mutex
	devices []*device.Device
}

// Pending returns the readings not yet acknowledged across the two-way
// devices of the fleet.
func (f *Fleet) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, d := range f.devices {
		n += d.Pending()
	}
	return n
}

// StartFleet starts the fleet's devices; they run until ctx ends. The
// returned wait function blocks until every device has shut down.
func StartFleet(ctx context.Context, cfg FleetConfig) (*Fleet, func(), error) {
	if cfg.Rate <= 0 {
		cfg.Rate = 0.2
	}
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = []wire.Kind{wire.KindTemperature, wire.KindHumidity, wire.KindPour, wire.KindNumeric}
	}
	if cfg.InRange <= 0 {
		cfg.InRange = min(2, len(cfg.Relays))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{}
	var wg sync.WaitGroup
	for i := range cfg.Devices {
		kind := cfg.Kinds[i%len(cfg.Kinds)]
		var inRange []string
		for j := range cfg.InRange {
			inRange = append(inRange, cfg.Relays[(i+j)%len(cfg.Relays)])
		}
		radio, err := NewRadio(inRange)
		if err != nil {
			return nil, wg.Wait, err
		}
		dir := filepath.Join(cfg.Dir, fmt.Sprintf("device-%d", i))
		key, err := device.LoadOrCreateKey(filepath.Join(dir, "device.key"))
		if err != nil {
			radio.Close()
			return nil, wg.Wait, err
		}
		opt := device.Options{Key: key, ServerKey: cfg.ServerKey, Transport: radio, Dir: dir, NoSync: true,
			TransmitOnly: kind == wire.KindPour, Firmware: "sim-1.0", Logger: cfg.Logger}
		if cfg.Options != nil {
			cfg.Options(&opt)
		}
		d, err := device.New(opt)
		key.Zero()
		if err != nil {
			radio.Close()
			return nil, wg.Wait, err
		}
		if cfg.Register != nil {
			if err := cfg.Register(ctx, i, d.PublicKey(), kind); err != nil {
				radio.Close()
				return nil, wg.Wait, err
			}
		}
		if !opt.TransmitOnly {
			f.mu.Lock()
			f.devices = append(f.devices, d)
			f.mu.Unlock()
		}
		d.SetHealth(wire.Health{Battery: uint8(40 + i*7%60), Plugged: i%10 == 0})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer radio.Close()
			runDevice(ctx, d, NewSensor(kind, uint64(i+1)), cfg.Rate, cfg.Count, uint64(i))
		}()
	}
	return f, wg.Wait, nil
}

// runDevice runs one device and takes readings at rate, with the first one
// at a random offset so the fleet does not transmit in lockstep.
func runDevice(ctx context.Context, d *device.Device, s *Sensor, rate float64, count int, seed uint64) {
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	defer func() { <-done }()
	period := time.Duration(float64(time.Second) / rate)
	rng := rand.New(rand.NewPCG(seed, 7))
	first := time.NewTimer(time.Duration(rng.Int64N(int64(period))))
	select {
	case <-ctx.Done():
		first.Stop()
		return
	case <-first.C:
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for taken := 0; count == 0 || taken < count; taken++ {
		_, _ = d.Record(s.Next(time.Now()))
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	<-ctx.Done()
}
