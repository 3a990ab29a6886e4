package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/signet-io/signet/internal/pki"
)

// The certificate frames (frame.go): renew and enrol from the relay,
// certificate from the server. Their parsers check sizes and structure
// only; the certificate request and certificates inside are checked by
// crypto/x509 and internal/pki where they are used.

func checkCSR(csr []byte) error {
	if len(csr) == 0 || len(csr) > pki.MaxCSRSize {
		return fmt.Errorf("%w: certificate request of %d bytes", ErrFrame, len(csr))
	}
	return nil
}

// AppendRenew appends a renew frame carrying a certificate request (DER).
func AppendRenew(dst, csr []byte) ([]byte, error) {
	if err := checkCSR(csr); err != nil {
		return dst, err
	}
	dst = beginFrame(dst, FrameRenew, len(csr))
	return append(dst, csr...), nil
}

// ParseRenew decodes the body of a renew frame: the certificate request,
// aliasing body.
func ParseRenew(body []byte) ([]byte, error) {
	if err := checkCSR(body); err != nil {
		return nil, err
	}
	return body, nil
}

// EnrolRequest is what a relay without a certificate sends.
type EnrolRequest struct {
	Token string
	CSR   []byte // PKCS #10, DER
}

// AppendEnrol appends an enrol frame.
func AppendEnrol(dst []byte, r *EnrolRequest) ([]byte, error) {
	if len(r.Token) == 0 || len(r.Token) > pki.MaxTokenLen {
		return dst, fmt.Errorf("%w: token of %d bytes", ErrFrame, len(r.Token))
	}
	if err := checkCSR(r.CSR); err != nil {
		return dst, err
	}
	dst = beginFrame(dst, FrameEnrol, 1+len(r.Token)+len(r.CSR))
	dst = append(dst, byte(len(r.Token)))
	dst = append(dst, r.Token...)
	return append(dst, r.CSR...), nil
}

// ParseEnrol decodes the body of an enrol frame. CSR aliases body.
func ParseEnrol(body []byte) (EnrolRequest, error) {
	if len(body) < 1 {
		return EnrolRequest{}, fmt.Errorf("%w: empty enrol frame", ErrFrame)
	}
	t := int(body[0])
	if t == 0 || t > pki.MaxTokenLen || len(body) < 1+t {
		return EnrolRequest{}, fmt.Errorf("%w: enrol token length", ErrFrame)
	}
	r := EnrolRequest{Token: string(body[1 : 1+t]), CSR: body[1+t:]}
	if err := checkCSR(r.CSR); err != nil {
		return EnrolRequest{}, err
	}
	return r, nil
}

// CertResponse is the server's answer to a renew or enrol frame: a chain
// (Status StatusIssued) or a refusal with a reason.
type CertResponse struct {
	Status  byte
	Chain   [][]byte // DER, leaf first
	Message string
}

// AppendCertificate appends a certificate frame. A refusal's message is
// cut to MaxMessageSize bytes of valid UTF-8.
func AppendCertificate(dst []byte, r *CertResponse) ([]byte, error) {
	if r.Status != StatusIssued {
		msg := clip(r.Message, MaxMessageSize)
		dst = beginFrame(dst, FrameCertificate, 1+len(msg))
		dst = append(dst, r.Status)
		return append(dst, msg...), nil
	}
	if len(r.Chain) == 0 || len(r.Chain) > MaxChainLen {
		return dst, fmt.Errorf("%w: chain of %d certificates", ErrFrame, len(r.Chain))
	}
	n := 1
	for _, c := range r.Chain {
		if len(c) == 0 || len(c) > MaxCertSize {
			return dst, fmt.Errorf("%w: certificate of %d bytes", ErrFrame, len(c))
		}
		n += 2 + len(c)
	}
	if 1+n > MaxControlFrameSize {
		return dst, fmt.Errorf("%w: chain of %d bytes", ErrFrame, n)
	}
	dst = beginFrame(dst, FrameCertificate, n)
	dst = append(dst, StatusIssued)
	for _, c := range r.Chain {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(c)))
		dst = append(dst, c...)
	}
	return dst, nil
}

// ParseCertificate decodes the body of a certificate frame. Chain entries
// alias body.
func ParseCertificate(body []byte) (CertResponse, error) {
	if len(body) < 1 {
		return CertResponse{}, fmt.Errorf("%w: empty certificate frame", ErrFrame)
	}
	r := CertResponse{Status: body[0]}
	rest := body[1:]
	if r.Status != StatusIssued {
		if r.Status > StatusUnavailable {
			return CertResponse{}, fmt.Errorf("%w: certificate status %d", ErrFrame, r.Status)
		}
		if len(rest) > MaxMessageSize || !utf8.Valid(rest) {
			return CertResponse{}, fmt.Errorf("%w: refusal message", ErrFrame)
		}
		r.Message = string(rest)
		return r, nil
	}
	for len(rest) > 0 {
		if len(rest) < 2 || len(r.Chain) == MaxChainLen {
			return CertResponse{}, fmt.Errorf("%w: certificate chain", ErrFrame)
		}
		l := int(binary.BigEndian.Uint16(rest))
		if l == 0 || l > MaxCertSize || len(rest) < 2+l {
			return CertResponse{}, fmt.Errorf("%w: certificate length %d", ErrFrame, l)
		}
		r.Chain = append(r.Chain, rest[2:2+l:2+l])
		rest = rest[2+l:]
	}
	if len(r.Chain) == 0 {
		return CertResponse{}, fmt.Errorf("%w: no certificate", ErrFrame)
	}
	return r, nil
}

// ErrUnavailable is wrapped by a refusal with StatusUnavailable: the
// server could not issue now, and a later attempt may succeed.
var ErrUnavailable = errors.New("relay: certificate service unavailable")

// RefusedError is the server's refusal of an enrolment or renewal, as the
// relay receives it. It wraps the matching internal/pki error (for
// example pki.ErrTokenUsed), so callers can tell the cases apart.
type RefusedError struct {
	Status  byte
	Message string
}

func (e *RefusedError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("relay: refused by the server (status %d)", e.Status)
	}
	return "relay: refused by the server: " + e.Message
}

func (e *RefusedError) Unwrap() error {
	switch e.Status {
	case StatusInvalid:
		return pki.ErrInvalid
	case StatusTokenUnknown:
		return pki.ErrTokenUnknown
	case StatusTokenUsed:
		return pki.ErrTokenUsed
	case StatusTokenExpired:
		return pki.ErrTokenExpired
	case StatusRefused:
		return pki.ErrRefused
	default:
		return ErrUnavailable
	}
}

// refusal maps an error of the CA (or of the server's own checks, which
// wrap pki.ErrRefused) to what the relay is told. An error of no known kind
// is the server's own trouble: the relay learns only that it may try
// later, and the server logs the rest.
func refusal(err error) *CertResponse {
	var st byte
	switch {
	case errors.Is(err, pki.ErrTokenUnknown):
		st = StatusTokenUnknown
	case errors.Is(err, pki.ErrTokenUsed):
		st = StatusTokenUsed
	case errors.Is(err, pki.ErrTokenExpired):
		st = StatusTokenExpired
	case errors.Is(err, pki.ErrRevoked), errors.Is(err, pki.ErrRefused):
		st = StatusRefused
	case errors.Is(err, pki.ErrInvalid):
		st = StatusInvalid
	default:
		return &CertResponse{Status: StatusUnavailable, Message: "the server cannot issue certificates now; try again later"}
	}
	return &CertResponse{Status: st, Message: strings.ReplaceAll(err.Error(), "pki: ", "")}
}
