// Package client is the public SDK for applications that read Signet data:
// the REST API and the live stream, with automatic resumption so that a
// network blip loses no reading and delivers none twice.
package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one Signet server.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// New returns a client for the server at baseURL (e.g. http://127.0.0.1:7880)
// authenticating with token. The token travels only in the Authorization
// header, never in a URL.
func New(baseURL, token string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: %q is not an http(s) URL", baseURL)
	}
	return &Client{base: u, token: token, http: &http.Client{}}, nil
}

// Reading is a stored reading as the API returns it.
type Reading struct {
	ID         int64     `json:"id"`
	DeviceID   int64     `json:"device_id"`
	Project    string    `json:"project"`
	Seq        uint64    `json:"seq"`
	DeviceTime time.Time `json:"device_time"`
	Received   time.Time `json:"received"`
	Kind       string    `json:"kind"`
	Value      *float64  `json:"value,omitempty"`
	Name       string    `json:"name,omitempty"`
	Unit       string    `json:"unit,omitempty"`
	Pour       *Pour     `json:"pour,omitempty"`
	Sealed     []byte    `json:"sealed,omitempty"`
	Heard      []Hearing `json:"heard"`
}

// Pour is a pour event from a pour-spout sensor.
type Pour struct {
	Start    time.Time `json:"start"`
	Duration uint32    `json:"duration_ms"`
	Tilt     []int16   `json:"tilt,omitempty"`
	Volume   float32   `json:"volume_ml,omitempty"`
}

// Hearing is a relay that heard a reading.
type Hearing struct {
	Relay    string    `json:"relay"`
	Received time.Time `json:"received"`
	RSSI     int16     `json:"rssi"`
	SNR      float32   `json:"snr"`
}

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("signet API: %s (%d): %s", e.Code, e.Status, e.Message)
}

func (c *Client) request(ctx context.Context, path string, q url.Values) (*http.Request, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	return req, nil
}

func apiError(resp *http.Response) error {
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	return &Error{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message}
}

// StreamOptions selects a live stream.
type StreamOptions struct {
	Project string
	Device  int64 // 0: every device of the project
	// After resumes after this reading id (0: live readings only).
	After int64
	// Retry is the wait before reconnecting after an error (default 1 s).
	Retry time.Duration
}

// Stream calls fn with every reading of the project's live stream, in
// order, until ctx ends or fn returns an error. It reconnects by itself
// with Last-Event-ID, so no reading is missed or repeated across
// reconnects. Authentication errors end it.
func (c *Client) Stream(ctx context.Context, o StreamOptions, fn func(Reading) error) error {
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	last := o.After
	for {
		err := c.streamOnce(ctx, o, &last, fn)
		if ctx.Err() != nil {
			return nil
		}
		var ae *Error
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return err
		}
		var fnErr callbackError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.Retry):
		}
	}
}

type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

func (c *Client) streamOnce(ctx context.Context, o StreamOptions, last *int64, fn func(Reading) error) error {
	q := url.Values{}
	if o.Device != 0 {
		q.Set("device", strconv.FormatInt(o.Device, 10))
	}
	req, err := c.request(ctx, "/api/v1/projects/"+url.PathEscape(o.Project)+"/stream", q)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(*last, 10))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id int64
	var event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event == "reading" && data != "" {
				var r Reading
				if err := json.Unmarshal([]byte(data), &r); err != nil {
					return fmt.Errorf("client: bad event: %w", err)
				}
				if id > *last {
					if err := fn(r); err != nil {
						return callbackError{err}
					}
					*last = id
				}
			}
			event, data = "", ""
		case strings.HasPrefix(line, ":"):
			// heartbeat
		case strings.HasPrefix(line, "id:"):
			id, _ = strconv.ParseInt(strings.TrimSpace(line[3:]), 10, 64)
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(line[6:])
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(line[5:], " ")
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}
