package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// The MQTT reference: a Mosquitto broker started by the bench on a free
// port, a QoS 1 publisher in a child process (as the devices' load
// generator is) and a QoS 1 subscriber in the bench process (where the
// server is), the same payload size as a reading. The figure is messages
// the subscriber received, each once (by the sequence number the payload
// starts with), per second: a plaintext broker that stores nothing.

// mosquittoPath finds the broker.
func (r *run) mosquittoPath() (string, error) {
	if r.cfg.Mosquitto != "" {
		return r.cfg.Mosquitto, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", nil
	}
	return "", errors.New("mosquitto not found (Debian package mosquitto); the MQTT reference is skipped")
}

// mosquittoTuned is the configuration that lets QoS 1 run at full speed:
// the stock limits (20 messages in flight, 1000 queued per client) cap it
// and, worse, drop what exceeds the queue silently.
const mosquittoTuned = `max_inflight_messages 65535
max_queued_messages 10000000
max_queued_bytes 0
set_tcp_nodelay true
`

// startMosquitto runs a broker on a free port with extra config lines.
func (r *run) startMosquitto(ctx context.Context, dir, extra string) (addr string, stop func(), err error) {
	bin, err := r.mosquittoPath()
	if err != nil {
		return "", nil, err
	}
	addr, err = freeAddr("tcp")
	if err != nil {
		return "", nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n%s", port, extra)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-c", conf)
	logs := &tailBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("bench: starting mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	if err := waitFor(ctx, 10*time.Second, "mosquitto listening", func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		stop()
		return "", nil, err
	}
	select {
	case <-exited:
		return "", nil, fmt.Errorf("bench: mosquitto exited: %s", logs.String())
	default:
	}
	return addr, stop, nil
}

type mqttPubConfig struct {
	Broker   string        `json:"broker"`
	Topic    string        `json:"topic"`
	Size     int           `json:"size"`
	Duration time.Duration `json:"duration"`
	// Inflight bounds the publishes not yet acknowledged by the broker.
	Inflight int `json:"inflight"`
}

type mqttPubResult struct {
	Published uint64 `json:"published"`
}

type mqttFigures struct {
	rate       float64 // unique messages received per second
	published  uint64  // acknowledged by the broker to the publisher
	received   int64   // unique
	duplicates int64
}

// mqttRef runs one publisher→subscriber measurement against a broker
// configured with extra.
func (r *run) mqttRef(ctx context.Context, extra string, size int, d time.Duration) (mqttFigures, error) {
	var f mqttFigures
	dir, err := r.newDir("mqtt")
	if err != nil {
		return f, err
	}
	defer removeAll(dir)
	addr, stop, err := r.startMosquitto(ctx, dir, extra)
	if err != nil {
		return f, err
	}
	defer stop()
	var seen sync.Map
	var got, dups atomic.Int64
	var last atomic.Int64
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bench-sub").SetCleanSession(true).
		SetAutoReconnect(false).SetKeepAlive(30 * time.Second).SetMessageChannelDepth(10000)
	sub := mqtt.NewClient(opts)
	if t := sub.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return f, fmt.Errorf("bench: mqtt subscriber connect: %v", t.Error())
	}
	defer sub.Disconnect(100)
	topic := "bench/readings"
	t := sub.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		p := m.Payload()
		if len(p) < 8 {
			return
		}
		if _, dup := seen.LoadOrStore(binary.LittleEndian.Uint64(p), struct{}{}); dup {
			dups.Add(1)
			return
		}
		got.Add(1)
		last.Store(time.Now().UnixNano())
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return f, fmt.Errorf("bench: mqtt subscribe: %v", t.Error())
	}
	ch, err := r.startChild(ctx, "mqttpub", mqttPubConfig{Broker: addr, Topic: topic, Size: size, Duration: d, Inflight: 1000})
	if err != nil {
		return f, err
	}
	defer ch.stop()
	if err := ch.recv(ctx, "ready", nil, nil); err != nil {
		return f, err
	}
	start := time.Now()
	if err := ch.send(msgGo, nil); err != nil {
		return f, err
	}
	var res mqttPubResult
	if err := ch.recv(ctx, msgResult, &res, nil); err != nil {
		return f, err
	}
	// Wait for the subscriber to stop receiving (the broker's queue).
	prev := int64(-1)
	_ = waitFor(ctx, 30*time.Second, "mqtt deliveries", func() bool {
		if got.Load() >= int64(res.Published) {
			return true
		}
		n := got.Load()
		if n == prev {
			return true
		}
		prev = n
		time.Sleep(300 * time.Millisecond)
		return false
	})
	f.published, f.received, f.duplicates = res.Published, got.Load(), dups.Load()
	end := time.Unix(0, last.Load())
	if f.received > 0 && end.After(start) {
		f.rate = float64(f.received) / end.Sub(start).Seconds()
	}
	return f, nil
}

func childMQTTPub(ctx context.Context, cio *childIO, raw json.RawMessage) error {
	var cfg mqttPubConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + cfg.Broker).SetClientID("bench-pub").SetCleanSession(true).
		SetAutoReconnect(false).SetKeepAlive(30 * time.Second).SetWriteTimeout(10 * time.Second)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("mqtt publisher connect: %v", t.Error())
	}
	defer c.Disconnect(100)
	if err := cio.send("ready", nil); err != nil {
		return err
	}
	if err := cio.wait(ctx, msgGo, nil); err != nil {
		return err
	}
	ring := make([]mqtt.Token, max(1, cfg.Inflight))
	var acked uint64
	stop := time.Now().Add(cfg.Duration)
	for i := uint64(0); ctx.Err() == nil; i++ {
		slot := &ring[i%uint64(len(ring))]
		if *slot != nil {
			if !(*slot).WaitTimeout(30*time.Second) || (*slot).Error() != nil {
				return fmt.Errorf("mqtt publish: %v", (*slot).Error())
			}
			acked++
		}
		p := make([]byte, cfg.Size)
		binary.LittleEndian.PutUint64(p, i)
		*slot = c.Publish(cfg.Topic, 1, false, p)
		if i%64 == 0 && time.Now().After(stop) {
			break
		}
	}
	for _, t := range ring {
		if t != nil && t.WaitTimeout(30*time.Second) && t.Error() == nil {
			acked++
		}
	}
	if err := cio.send(msgResult, mqttPubResult{Published: acked}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
