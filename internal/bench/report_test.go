package bench

import "testing"

// TestFmtRatio: a ratio a hair below its target does not print as the
// target.
func TestFmtRatio(t *testing.T) {
	for r, want := range map[float64]string{0.5953: "0.595", 0.6: "0.6", 5.2487: "5.25", 88.67: "88.7", 0.0123: "0.0123", 123.4: "123"} {
		if got := fmtRatio(r); got != want {
			t.Errorf("fmtRatio(%v) = %q, want %q", r, got, want)
		}
	}
}
