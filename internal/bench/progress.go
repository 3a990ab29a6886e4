package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress shows one line of what the bench is doing: rewritten in place
// on a terminal, a new line every few seconds otherwise (CI logs).
type progress struct {
	w      io.Writer
	tty    bool
	start  time.Time
	mu     sync.Mutex
	scen   string
	status string
	live   func() string
	last   string
	lastAt time.Time
	stopC  chan struct{}
	exited chan struct{}
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now(), stopC: make(chan struct{}), exited: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	go func() {
		defer close(p.exited)
		if w == nil {
			return
		}
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stopC:
				return
			case <-t.C:
				p.show(false)
			}
		}
	}()
	return p
}

// set shows status for scenario; live, if set, is appended on every tick
// (live counters) until the next set.
func (p *progress) set(scenario, status string) { p.setLive(scenario, status, nil) }

func (p *progress) setLive(scenario, status string, live func() string) {
	p.mu.Lock()
	p.scen, p.status, p.live = scenario, status, live
	p.mu.Unlock()
	p.show(true)
}

func (p *progress) show(changed bool) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf("[%5.0fs] %s: %s", time.Since(p.start).Seconds(), p.scen, p.status)
	if p.live != nil {
		line += " " + p.live()
	}
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	case changed || time.Since(p.lastAt) >= 5*time.Second:
		if line != p.last {
			fmt.Fprintln(p.w, line)
		}
		p.lastAt = time.Now()
	}
	p.last = line
}

func (p *progress) done() {
	close(p.stopC)
	<-p.exited
	if p.w != nil && p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
