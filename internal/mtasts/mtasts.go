// Package mtasts builds the MTA-STS policy (RFC 8461) that tells other mail
// servers to insist on TLS when delivering to us, and the policy id that the
// _mta-sts TXT record publishes.
package mtasts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Mode is the policy mode.
type Mode string

// Policy modes (RFC 8461 section 5).
const (
	Enforce Mode = "enforce"
	Testing Mode = "testing"
	None    Mode = "none"
)

// ParseMode checks a mode name.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case Enforce, Testing, None:
		return Mode(s), nil
	}
	return "", fmt.Errorf("MTA-STS mode %q: want enforce, testing or none", s)
}

// DefaultMaxAge is one week: long enough to protect against downgrade
// attacks, short enough that a mistake heals within days.
const DefaultMaxAge = 7 * 24 * 3600

// Policy is one domain's MTA-STS policy.
type Policy struct {
	Mode   Mode
	MX     []string
	MaxAge int // seconds
}

// New returns the policy for a server whose MX host name is mx.
func New(mode Mode, mx string) Policy {
	return Policy{Mode: mode, MX: []string{strings.ToLower(mx)}, MaxAge: DefaultMaxAge}
}

// String is the policy file served at
// https://mta-sts.<domain>/.well-known/mta-sts.txt, with CRLF line endings
// as the RFC's grammar says.
func (p Policy) String() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\n")
	fmt.Fprintf(&b, "mode: %s\r\n", p.Mode)
	for _, mx := range p.MX {
		fmt.Fprintf(&b, "mx: %s\r\n", mx)
	}
	maxAge := p.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", maxAge)
	return b.String()
}

// ID is the policy id for the TXT record: derived from the policy text, so
// it changes exactly when the policy does and senders refetch it then.
func (p Policy) ID() string {
	sum := sha256.Sum256([]byte(p.String()))
	return hex.EncodeToString(sum[:])[:20]
}

// TXT is the value of the _mta-sts.<domain> TXT record.
func (p Policy) TXT() string { return "v=STSv1; id=" + p.ID() }
