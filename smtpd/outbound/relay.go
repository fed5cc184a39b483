package outbound

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// Relay is a smarthost that takes all outbound mail, for networks where
// port 25 is blocked.
type Relay struct {
	Host               string
	Port               int
	ImplicitTLS        bool // smtps:// (port 465); else STARTTLS is required
	Username, Password string
	// TLS overrides the client configuration (default: verify the
	// certificate against Host).
	TLS *tls.Config
}

// ParseRelay parses MAILSTACK_RELAY: smtp://user:pass@host:port (STARTTLS,
// default port 587) or smtps://user:pass@host:port (implicit TLS, default
// port 465). The credentials, used with AUTH PLAIN, are optional.
func ParseRelay(raw string) (*Relay, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("relay URL: %w", err)
	}
	r := &Relay{Host: u.Hostname()}
	switch u.Scheme {
	case "smtp":
		r.Port = 587
	case "smtps":
		r.Port, r.ImplicitTLS = 465, true
	default:
		return nil, fmt.Errorf("relay URL %q: scheme must be smtp or smtps", u.Redacted())
	}
	if r.Host == "" {
		return nil, fmt.Errorf("relay URL %q: no host", u.Redacted())
	}
	if p := u.Port(); p != "" {
		if r.Port, err = strconv.Atoi(p); err != nil || r.Port <= 0 || r.Port > 65535 {
			return nil, fmt.Errorf("relay URL %q: bad port", u.Redacted())
		}
	}
	if u.User != nil {
		r.Username = u.User.Username()
		r.Password, _ = u.User.Password()
	}
	return r, nil
}

// String shows the relay without its password.
func (r *Relay) String() string {
	scheme := "smtp"
	if r.ImplicitTLS {
		scheme = "smtps"
	}
	return scheme + "://" + net.JoinHostPort(r.Host, strconv.Itoa(r.Port))
}
