// Package sim simulates what Signet meets in the field: sensors with
// plausible readings, radios heard by several relays at once, and whole
// fleets, for signet dev, signet device simulate and the benchmarks.
package sim

import (
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/wire"
)

// Sensor produces plausible readings of one kind for a simulated device.
type Sensor struct {
	kind  wire.Kind
	phase float64
	rng   *rand.Rand
}

// NewSensor returns a sensor of kind whose readings follow seed.
func NewSensor(kind wire.Kind, seed uint64) *Sensor {
	return &Sensor{kind: kind, phase: float64(seed%628) / 100, rng: rand.New(rand.NewPCG(seed, seed^0x5167))}
}

// ParseKind maps a kind name (temperature, humidity, pour, numeric) to a
// reading kind.
func ParseKind(s string) (wire.Kind, bool) {
	for k := wire.KindTemperature; k <= wire.KindNumeric; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// Next returns the reading the sensor takes at now.
func (s *Sensor) Next(now time.Time) wire.Reading {
	t := float64(now.UnixMilli())/60000 + s.phase // one slow cycle an hour
	r := wire.Reading{Kind: s.kind, Time: now.UnixMilli()}
	noise := s.rng.NormFloat64()
	switch s.kind {
	case wire.KindTemperature:
		r.Value = math.Round((21+3*math.Sin(t/10)+0.2*noise)*100) / 100
	case wire.KindHumidity:
		r.Value = math.Round((50+10*math.Sin(t/7)+noise)*10) / 10
	case wire.KindPour:
		dur := 2000 + s.rng.IntN(4000)
		tilt := make([]int16, 8)
		for i := range tilt {
			tilt[i] = int16(4500 + 3000*math.Sin(float64(i)/7*math.Pi))
		}
		r.Pour = &wire.Pour{Start: now.Add(-time.Duration(dur) * time.Millisecond).UnixMilli(), Duration: uint32(dur), Tilt: tilt, Volume: float32(dur) / 1000 * 25}
	default:
		r.Name, r.Unit = "pressure", "hPa"
		r.Value = math.Round((1013+5*math.Sin(t/13)+0.5*noise)*10) / 10
	}
	return r
}

// Describe renders a reading for the terminal.
func Describe(r wire.Reading) string {
	switch r.Kind {
	case wire.KindTemperature:
		return FmtFloat(r.Value) + " °C"
	case wire.KindHumidity:
		return FmtFloat(r.Value) + " %RH"
	case wire.KindPour:
		if r.Pour != nil {
			return "pour " + FmtFloat(float64(r.Pour.Duration)/1000) + " s, " + strconv.FormatFloat(float64(r.Pour.Volume), 'f', 1, 32) + " ml"
		}
	}
	return r.Name + " " + FmtFloat(r.Value) + " " + r.Unit
}

// FmtFloat prints a float as short as it reads.
func FmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
