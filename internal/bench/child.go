package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// ChildEnv names the environment variable that makes a process a bench
// child: its value is the child's mode. The signet command (and a test
// binary that runs the bench) must call ChildMain when it is set.
const ChildEnv = "SIGNET_BENCH_CHILD"

// A child and its parent talk in JSON lines: the parent's first line is
// the child's configuration; then each side sends messages. The child
// exits when its standard input closes, so it never outlives the bench.
type message struct {
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Message kinds.
const (
	msgConfig = "config"
	msgError  = "error"
	msgGo     = "go"
)

// child is a running child process, seen from the bench.
type child struct {
	mode   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	inMu   sync.Mutex
	out    chan message
	stderr *tailBuffer
	done   chan struct{}
	err    error
}

// startChild starts a child in mode with cfg as its configuration.
func (r *run) startChild(ctx context.Context, mode string, cfg any) (*child, error) {
	cmd := exec.Command(r.exec[0], r.exec[1:]...)
	cmd.Env = append(os.Environ(), ChildEnv+"="+mode)
	c := &child{mode: mode, cmd: cmd, out: make(chan message, 64), stderr: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	var err error
	if c.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting the %s process: %w", mode, err)
	}
	go func() {
		defer close(c.out)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var m message
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			c.out <- m
		}
	}()
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := c.send(msgConfig, cfg); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

func (c *child) send(kind string, v any) error {
	m := message{Kind: kind}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		m.Data = b
	}
	b, _ := json.Marshal(m)
	c.inMu.Lock()
	defer c.inMu.Unlock()
	_, err := c.in.Write(append(b, '\n'))
	return err
}

// recv waits for the next message of kind into v. Messages of other kinds
// before it go to other (which may be nil to skip them).
func (c *child) recv(ctx context.Context, kind string, v any, other func(message)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-c.out:
			if !ok {
				<-c.done
				return fmt.Errorf("bench: the %s process exited (%v) before sending %q; its last words: %s", c.mode, c.err, kind, c.stderr.String())
			}
			switch {
			case m.Kind == msgError:
				var s string
				_ = json.Unmarshal(m.Data, &s)
				return fmt.Errorf("bench: %s process: %s", c.mode, s)
			case m.Kind == kind:
				if v == nil {
					return nil
				}
				return json.Unmarshal(m.Data, v)
			case other != nil:
				other(m)
			}
		}
	}
}

// stop closes the child's input (it exits on EOF) and kills it if it has
// not exited within a few seconds.
func (c *child) stop() {
	c.inMu.Lock()
	_ = c.in.Close()
	c.inMu.Unlock()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}

// childIO is the child's side of the conversation.
type childIO struct {
	outMu sync.Mutex
	out   *json.Encoder
	in    chan message
}

func (c *childIO) send(kind string, v any) error {
	m := message{Kind: kind}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		m.Data = b
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.out.Encode(m)
}

// wait waits for a message of kind from the parent.
func (c *childIO) wait(ctx context.Context, kind string, v any) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-c.in:
			if !ok {
				return errors.New("bench child: the parent went away")
			}
			if m.Kind != kind {
				continue
			}
			if v == nil || m.Data == nil {
				return nil
			}
			return json.Unmarshal(m.Data, v)
		}
	}
}

// ChildMain runs a bench child in mode (the value of ChildEnv), talking to
// the parent over stdin and stdout, and returns the exit code. It ends
// when the parent closes stdin.
func ChildMain(ctx context.Context, mode string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cio := &childIO{out: json.NewEncoder(stdout), in: make(chan message, 16)}
	modes := map[string]func(context.Context, *childIO, json.RawMessage) error{
		"loadgen": childLoadgen, "udpflood": childUDPFlood, "forge": childForge, "mqttpub": childMQTTPub,
		"fleet": childFleet, "query": childQuery,
	}
	run, ok := modes[mode]
	if !ok {
		err := fmt.Errorf("unknown child mode %q", mode)
		_ = cio.send(msgError, err.Error())
		fmt.Fprintln(stderr, "bench child:", err)
		return 2
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		fmt.Fprintln(stderr, "bench child: no configuration on stdin")
		return 2
	}
	var first message
	if err := json.Unmarshal(sc.Bytes(), &first); err != nil || first.Kind != msgConfig {
		fmt.Fprintln(stderr, "bench child: the first line must be the configuration")
		return 2
	}
	go func() {
		// The parent closing stdin (or dying) ends the child.
		defer cancel()
		defer close(cio.in)
		for sc.Scan() {
			var m message
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				cio.in <- m
			}
		}
	}()
	err := run(ctx, cio, first.Data)
	if err != nil && ctx.Err() == nil {
		_ = cio.send(msgError, err.Error())
		fmt.Fprintln(stderr, "bench child:", err)
		return 1
	}
	return 0
}
