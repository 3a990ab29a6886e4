package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// Error kinds the store does not define. Together with store.ErrNotFound,
// store.ErrInvalid and store.ErrConflict they are every way a request can
// fail; errorKind maps each to a status and a stable code.
var (
	errUnauthorized = errors.New("unauthorized")
	errForbidden    = errors.New("forbidden")
	errUnavailable  = errors.New("unavailable")
	// errTOTPRequired: the change needs a fresh TOTP code (step-up).
	errTOTPRequired = errors.New("totp required")
	// errTooMany: too many failed attempts; Retry-After says when to retry.
	errTooMany = errors.New("too many attempts")
	// errTooLarge: the request body exceeds maxBodyBytes.
	errTooLarge = errors.New("too large")
)

// apiError is an error whose message was written here for the client. Any
// other error reaches the client only as its kind and a generic message, so
// that nothing a backend put in its error text (queries, paths, values)
// leaks out.
type apiError struct {
	kind error
	msg  string
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.kind }

func invalid(msg string) error     { return &apiError{store.ErrInvalid, msg} }
func notFound(msg string) error    { return &apiError{store.ErrNotFound, msg} }
func unavailable(msg string) error { return &apiError{errUnavailable, msg} }
func forbidden(msg string) error   { return &apiError{errForbidden, msg} }
func conflict(msg string) error    { return &apiError{store.ErrConflict, msg} }

// retryAfterError is a refusal with a time to wait (a lockout): the
// Retry-After header says it.
type retryAfterError struct {
	apiError
	after time.Duration
}

func (e *retryAfterError) Unwrap() error { return &e.apiError }

// errorKind is the one place where error kinds become HTTP statuses and the
// codes of the error body. The message is the generic one for the kind.
func errorKind(err error) (status int, code, msg string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "not_found", "not found"
	case errors.Is(err, store.ErrInvalid):
		return http.StatusBadRequest, "invalid", "invalid request"
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token"
	case errors.Is(err, errForbidden):
		return http.StatusForbidden, "forbidden", "forbidden"
	case errors.Is(err, errTOTPRequired):
		return http.StatusForbidden, "totp_required", "this change needs a fresh TOTP code"
	case errors.Is(err, errTooMany):
		return http.StatusTooManyRequests, "too_many_attempts", "too many failed attempts; retry later"
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large", "request body too large"
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, "conflict", "conflict"
	case errors.Is(err, errUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "unavailable", "temporarily unavailable, retry later"
	}
	return http.StatusInternalServerError, "internal", "internal error"
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers with err's kind. Errors that are not the client's
// fault are logged here, once; their text never reaches the client.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := errorKind(err)
	var ae *apiError
	if errors.As(err, &ae) {
		msg = ae.msg
	} else if status >= 500 {
		if r.Context().Err() != nil {
			// The client went away; nobody reads the answer.
			return
		}
		a.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "route", r.Pattern, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="signet"`)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	var ra *retryAfterError
	if errors.As(err, &ra) {
		w.Header().Set("Retry-After", strconv.Itoa(int((ra.after+time.Second-1)/time.Second)))
	}
	writeJSON(w, status, errorBody{errorDetail{code, msg}})
}
