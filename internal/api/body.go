package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"
)

// decodeBody reads the request's JSON body into v strictly: one JSON value,
// no unknown fields, at most maxBodyBytes (endpoint bounds the reader). It
// is the only parser of request bodies; FuzzDecodeBody exercises it with
// every request type.
func decodeBody(r *http.Request, v any) error {
	if r.Body == nil {
		return invalid("a JSON body is required")
	}
	// Only JSON: a page of another site can send a form or text/plain
	// across origins without asking, but not application/json (a second
	// line of defence after SameSite cookies and the CSRF token).
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return invalid("Content-Type must be application/json")
	}
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &apiError{errTooLarge, fmt.Sprintf("the body is larger than %d bytes", maxBodyBytes)}
	}
	if err != nil {
		return invalid("the body could not be read")
	}
	return decodeJSON(b, v)
}

func decodeJSON(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return invalid("a JSON body is required")
	}
	if !utf8.Valid(b) {
		return invalid("the body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &ute):
			return invalid(fmt.Sprintf("field %q has the wrong type", clip(ute.Field)))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return invalid("unknown field " + clip(strings.TrimPrefix(err.Error(), "json: unknown field ")))
		}
		return invalid("malformed JSON body")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("the body must be one JSON object")
	}
	return nil
}

// clip bounds a client-supplied name echoed in an error.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.ToValidUTF8(s, "")
}
