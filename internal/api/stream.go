package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// stream serves a project's readings as Server-Sent Events.
//
// Resuming: with a Last-Event-ID, the stream first replays every stored
// reading after it, then continues live. It subscribes to the hub before it
// reads the store, so that a reading committed in between is in one or the
// other (or both: live readings at or below the last ID sent are skipped).
// Nothing is lost or sent twice, provided the store makes readings visible
// in ID order and publishes them after commit, as the store writer does.
func (a *API) stream(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p := projectOf(r)
	dev, err := a.projectDevice(r, p.ID)
	if err != nil {
		return err
	}
	last, resume, err := lastEventID(r)
	if err != nil {
		return err
	}
	if a.hub == nil {
		return unavailable("the live stream is not available on this server")
	}
	select {
	case <-a.done:
		return unavailable("the server is shutting down")
	default:
	}
	select {
	case a.streams <- struct{}{}:
		defer func() { <-a.streams }()
	default:
		return unavailable("too many live streams; retry later")
	}

	live, cancel := a.hub.Subscribe(p.ID, dev)
	defer cancel()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{rc: http.NewResponseController(w), timeout: a.writeTimeout}
	sw.bw = bufio.NewWriter(w)
	// Once the client has the headers, it is subscribed: every reading
	// stored from then on reaches it.
	if err := sw.flush(); err != nil {
		return nil
	}
	if err := a.streamLoop(ctx, sw, callerOf(r).p, p.ID, dev, last, resume, live); err != nil {
		// The response is under way: the only thing left is to end it. The
		// client resumes from its last event.
		a.log.DebugContext(ctx, "stream ended", "project", p.ID, "err", err)
	}
	return nil
}

// errCut ends a stream whose subscriber fell behind.
var errCut = errors.New("subscriber fell behind")

func (a *API) streamLoop(ctx context.Context, sw *sseWriter, who store.Principal, project string, dev, last int64, resume bool,
	live <-chan store.Reading) error {
	if resume {
		var err error
		if last, err = a.replay(ctx, sw, who, project, dev, last); err != nil {
			return err
		}
	}
	beat := time.NewTicker(a.heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.done:
			return errors.New("server shutting down")
		case <-beat.C:
			if err := sw.comment("heartbeat"); err != nil {
				return err
			}
			if err := sw.flush(); err != nil {
				return err
			}
		case rd, ok := <-live:
			// Write what is buffered, then flush once.
			for {
				if !ok {
					return errCut
				}
				if rd.ID > last {
					if err := sw.event(rd); err != nil {
						return err
					}
					last = rd.ID
				}
				if len(live) == 0 {
					break
				}
				rd, ok = <-live
			}
			if err := sw.flush(); err != nil {
				return err
			}
			beat.Reset(a.heartbeat)
		}
	}
}

// replay sends the stored readings after last, page by page, and returns
// the last ID sent.
func (a *API) replay(ctx context.Context, sw *sseWriter, who store.Principal, project string, dev, last int64) (int64, error) {
	for {
		who.Now = a.now() // a staff grant may expire during a long replay
		rs, err := a.store.ScopedReadings(ctx, who, store.ReadingQuery{
			ProjectID: project, DeviceID: dev, AfterID: last, Limit: maxLimit})
		if err != nil {
			return last, fmt.Errorf("replay: %w", err)
		}
		for _, rd := range rs {
			if err := sw.event(rd); err != nil {
				return last, err
			}
			last = rd.ID
		}
		if err := sw.flush(); err != nil {
			return last, err
		}
		if len(rs) < maxLimit {
			return last, nil
		}
		select {
		case <-a.done:
			return last, errors.New("server shutting down")
		default:
		}
	}
}

// lastEventID reads the Last-Event-ID header, or the last_event_id
// parameter for clients that cannot set headers.
func lastEventID(r *http.Request) (id int64, ok bool, err error) {
	s := r.Header.Get("Last-Event-ID")
	if s == "" {
		s = r.URL.Query().Get("last_event_id")
	}
	if s == "" {
		return 0, false, nil
	}
	id, perr := strconv.ParseInt(s, 10, 64)
	if perr != nil || id < 0 {
		return 0, false, invalid("Last-Event-ID must be the id of an event of this stream")
	}
	return id, true, nil
}

// sseWriter writes events, each write bounded by a deadline so that a
// client that stops reading is cut.
type sseWriter struct {
	rc      *http.ResponseController
	bw      *bufio.Writer
	timeout time.Duration
	buf     []byte // an event being encoded, reused
}

func (s *sseWriter) deadline() {
	// Not every ResponseWriter supports deadlines (ErrNotSupported); the
	// server's own timeouts then apply.
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
}

func (s *sseWriter) event(rd store.Reading) error {
	b := append(s.buf[:0], "id: "...)
	b = strconv.AppendInt(b, rd.ID, 10)
	b = append(b, "\nevent: reading\ndata: "...)
	// The JSON has no newline, so it is one data line.
	b, err := appendReadingJSON(b, rd)
	s.buf = b
	if err != nil {
		return fmt.Errorf("encode reading %d: %w", rd.ID, err)
	}
	s.deadline()
	_, err = s.bw.Write(append(b, "\n\n"...))
	return err
}

func (s *sseWriter) comment(text string) error {
	s.deadline()
	_, err := fmt.Fprintf(s.bw, ": %s\n\n", text)
	return err
}

func (s *sseWriter) flush() error {
	s.deadline()
	if err := s.bw.Flush(); err != nil {
		return err
	}
	return s.rc.Flush()
}
