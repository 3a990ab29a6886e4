package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// MaxCSRSize bounds a certificate request. A relay's (P-256, a 64-character
// common name, no extensions) is under 300 bytes.
const MaxCSRSize = 2048

var (
	oidCommonName       = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidClientAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// ParseRelayCSR parses a PKCS #10 certificate request (DER) from relay id
// and checks it against what a relay may ask for:
//
//   - at most MaxCSRSize bytes, well-formed, signed by the key it carries
//     (proof of possession);
//   - an ECDSA P-256 or P-384 or an Ed25519 key;
//   - a subject whose common name, if any, is id: a relay cannot ask for
//     another relay's identity;
//   - no subject alternative names, and no extension beyond what a relay
//     certificate has anyway (key usage digitalSignature, extended key
//     usage clientAuth, basic constraints without cA, a subject key id).
//
// What is issued never depends on the request beyond its public key; the
// checks exist so that a request for something else is refused, clearly,
// instead of silently answered with less. Every error wraps ErrInvalid and
// says what was wrong, never echoing the request.
func ParseRelayCSR(der []byte, id string) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("empty certificate request: %w", ErrInvalid)
	}
	if len(der) > MaxCSRSize {
		return nil, fmt.Errorf("certificate request of %d bytes, more than %d: %w", len(der), MaxCSRSize, ErrInvalid)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("malformed certificate request: %w", ErrInvalid)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request is not signed by its key: %w", ErrInvalid)
	}
	if err := checkLeafKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	for _, n := range csr.Subject.Names {
		if !n.Type.Equal(oidCommonName) {
			continue
		}
		if cn, ok := n.Value.(string); !ok || cn != id {
			return nil, fmt.Errorf("certificate request names another identity than relay %q: %w", id, ErrInvalid)
		}
	}
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses)+len(csr.URIs) > 0 {
		return nil, fmt.Errorf("certificate request asks for subject alternative names; relays are named by their id alone: %w", ErrInvalid)
	}
	for _, e := range csr.Extensions {
		if err := checkRequestedExtension(e.Id, e.Value); err != nil {
			return nil, fmt.Errorf("certificate request %v: %w", err, ErrInvalid)
		}
	}
	return csr, nil
}

func checkRequestedExtension(id asn1.ObjectIdentifier, value []byte) error {
	switch {
	case id.Equal(oidSubjectKeyID):
		return nil
	case id.Equal(oidKeyUsage):
		var bits asn1.BitString
		if rest, err := asn1.Unmarshal(value, &bits); err != nil || len(rest) > 0 {
			return fmt.Errorf("has a malformed key usage")
		}
		for i := 1; i < bits.BitLength; i++ { // bit 0 is digitalSignature
			if bits.At(i) != 0 {
				return fmt.Errorf("asks for key usages beyond digitalSignature")
			}
		}
		return nil
	case id.Equal(oidExtKeyUsage):
		var usages []asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(value, &usages); err != nil || len(rest) > 0 {
			return fmt.Errorf("has a malformed extended key usage")
		}
		for _, u := range usages {
			if !u.Equal(oidClientAuth) {
				return fmt.Errorf("asks for extended key usage %v; relays get clientAuth only", u)
			}
		}
		return nil
	case id.Equal(oidBasicConstraints):
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		if rest, err := asn1.Unmarshal(value, &bc); err != nil || len(rest) > 0 {
			return fmt.Errorf("has malformed basic constraints")
		}
		if bc.IsCA {
			return fmt.Errorf("asks to be a CA")
		}
		return nil
	case id.Equal(oidSubjectAltName):
		return fmt.Errorf("asks for subject alternative names; relays are named by their id alone")
	default:
		return fmt.Errorf("asks for extension %v, which relay certificates do not have", id)
	}
}
