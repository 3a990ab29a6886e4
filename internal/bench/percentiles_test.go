package bench

import (
	"testing"
	"time"
)

// steady is n samples of d, one a millisecond from start.
func steady(l *latencies, start time.Duration, n int, d time.Duration) {
	for i := range n {
		l.samples = append(l.samples, d)
		l.at = append(l.at, start+time.Duration(i)*time.Millisecond)
	}
}

// TestPercentilesOneStall: a tail that is one stall is found whole in its
// window, and the p99 without that window is the steady latency.
func TestPercentilesOneStall(t *testing.T) {
	var l latencies
	steady(&l, 0, 2000, 5*time.Millisecond)
	// A stall 1.25 s in: 30 samples of 50–79 ms within 30 ms.
	for i := range 30 {
		l.samples = append(l.samples, time.Duration(50+i)*time.Millisecond)
		l.at = append(l.at, 1250*time.Millisecond+time.Duration(i)*time.Millisecond)
	}
	p := l.percentiles()
	if p.p99 < 50*time.Millisecond {
		t.Fatalf("p99 %v, want the stall's", p.p99)
	}
	tl := l.tail(p.p99)
	if tl.share != 1 || tl.at != 1200*time.Millisecond {
		t.Errorf("worst window %.2f of the tail at %v, want all of it at 1.2s", tl.share, tl.at)
	}
	if tl.p99Rest != 5*time.Millisecond {
		t.Errorf("p99 without the stall %v, want 5ms", tl.p99Rest)
	}
}

// TestPercentilesSpreadTail: a tail spread over the run has no window
// that holds much of it, and leaving one out changes little.
func TestPercentilesSpreadTail(t *testing.T) {
	var l latencies
	steady(&l, 0, 5000, 5*time.Millisecond)
	for i := range 100 { // two slow samples every 100 ms
		l.samples = append(l.samples, 40*time.Millisecond)
		l.at = append(l.at, time.Duration(i)*50*time.Millisecond+25*time.Millisecond)
	}
	p := l.percentiles()
	if p.p99 != 40*time.Millisecond {
		t.Fatalf("p99 %v, want 40ms", p.p99)
	}
	tl := l.tail(p.p99)
	if tl.share > 0.05 {
		t.Errorf("worst window holds %.2f of a spread tail", tl.share)
	}
	if tl.p99Rest != 40*time.Millisecond {
		t.Errorf("p99 without one window %v, want still 40ms", tl.p99Rest)
	}
}
