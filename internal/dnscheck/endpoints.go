package dnscheck

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"time"
)

// TLSMode is how an endpoint gets to TLS.
type TLSMode string

// TLS modes.
const (
	Plain        TLSMode = "plain" // only whether the port answers (HTTP on 80)
	Implicit     TLSMode = "tls"
	StartTLSSMTP TLSMode = "smtp-starttls"
	StartTLSIMAP TLSMode = "imap-starttls"
)

// Endpoint is one port to try.
type Endpoint struct {
	Service string // "mx", "imap", ...
	Host    string // dialled, and the TLS server name
	Port    int
	TLS     TLSMode
}

// Endpoints lists what the outside world connects to for a domain: MX on
// the host name, the client ports on the client host names, and HTTPS on
// mta-sts.<domain> (the only HTTPS name other servers need).
func Endpoints(p Params) []Endpoint {
	d, host := lower(p.Domain), lower(p.Hostname)
	c := p.Clients
	var eps []Endpoint
	add := func(service, h string, port int, mode TLSMode) {
		if port != 0 {
			eps = append(eps, Endpoint{service, h, port, mode})
		}
	}
	add("mx", host, 25, StartTLSSMTP)
	add("imap", c.IMAPHost(d), c.IMAPPort, Implicit)
	add("imap-starttls", c.IMAPHost(d), c.IMAPStartTLSPort, StartTLSIMAP)
	add("submissions", c.SMTPHost(d), c.SubmissionsPort, Implicit)
	add("submission", c.SMTPHost(d), c.SubmissionPort, StartTLSSMTP)
	add("https", "mta-sts."+d, 443, Implicit)
	add("http", host, 80, Plain)
	return eps
}

// EndpointResult is what one endpoint showed.
type EndpointResult struct {
	Endpoint
	Answered bool
	Err      error // why it did not answer, or why TLS failed
	// Certificate facts, for TLS endpoints that answered.
	NotAfter  time.Time
	Names     []string
	Verified  bool // chain and name verify against the roots
	VerifyErr error
}

// ProbeOptions tune CheckEndpoints.
type ProbeOptions struct {
	// Timeout bounds each endpoint's connect and TLS handshake (default 5s).
	Timeout time.Duration
	// RootCAs verify certificates; nil means the system roots.
	RootCAs *x509.CertPool
	// Now is the time certificates are checked at (default time.Now).
	Now func() time.Time
}

// CheckEndpoints connects to every endpoint (host names resolved with the
// checker's resolver) and reads its certificate.
func (c *Checker) CheckEndpoints(ctx context.Context, eps []Endpoint, o ProbeOptions) []EndpointResult {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	out := make([]EndpointResult, len(eps))
	done := make(chan struct{})
	// Probed concurrently: a firewalled port costs the whole timeout.
	for i, ep := range eps {
		go func() {
			out[i] = c.probe(ctx, ep, o)
			c.Named(out[i].Err)
			done <- struct{}{}
		}()
	}
	for range eps {
		<-done
	}
	return out
}

func (c *Checker) probe(ctx context.Context, ep Endpoint, o ProbeOptions) EndpointResult {
	r := EndpointResult{Endpoint: ep}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	d := net.Dialer{Resolver: c.resolver()}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)))
	if err != nil {
		r.Err = err
		return r
	}
	defer conn.Close()
	r.Answered = true
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	// Accept any certificate for the handshake, then verify it ourselves,
	// so an invalid one is still reported with its names and expiry.
	cfg := &tls.Config{ServerName: ep.Host, InsecureSkipVerify: true}
	var state tls.ConnectionState
	switch ep.TLS {
	case Plain:
		return r
	case Implicit:
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			r.Err = fmt.Errorf("TLS handshake: %w", err)
			return r
		}
		state = tc.ConnectionState()
	case StartTLSSMTP:
		sc, err := smtp.NewClient(conn, ep.Host)
		if err != nil {
			r.Err = fmt.Errorf("SMTP greeting: %w", err)
			return r
		}
		if err := sc.Hello("mailstack-doctor.invalid"); err != nil {
			r.Err = fmt.Errorf("EHLO: %w", err)
			return r
		}
		if err := sc.StartTLS(cfg); err != nil {
			r.Err = fmt.Errorf("STARTTLS: %w", err)
			return r
		}
		state, _ = sc.TLSConnectionState()
	case StartTLSIMAP:
		tc, err := imapStartTLS(ctx, conn, cfg)
		if err != nil {
			r.Err = err
			return r
		}
		state = tc.ConnectionState()
	}
	if len(state.PeerCertificates) == 0 {
		r.Err = fmt.Errorf("no certificate")
		return r
	}
	leaf := state.PeerCertificates[0]
	r.NotAfter, r.Names = leaf.NotAfter, leaf.DNSNames
	inter := x509.NewCertPool()
	for _, ic := range state.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	_, r.VerifyErr = leaf.Verify(x509.VerifyOptions{DNSName: ep.Host, Roots: o.RootCAs, Intermediates: inter, CurrentTime: o.Now()})
	r.Verified = r.VerifyErr == nil
	return r
}

// imapStartTLS reads the greeting, asks for STARTTLS and handshakes.
func imapStartTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	br := bufio.NewReader(conn)
	greeting, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(greeting, "* OK") {
		return nil, fmt.Errorf("IMAP greeting %q: %v", strings.TrimSpace(greeting), err)
	}
	if _, err := conn.Write([]byte("d1 STARTTLS\r\n")); err != nil {
		return nil, fmt.Errorf("IMAP STARTTLS: %w", err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("IMAP STARTTLS: %w", err)
		}
		if strings.HasPrefix(line, "d1 ") {
			if !strings.HasPrefix(line, "d1 OK") {
				return nil, fmt.Errorf("IMAP STARTTLS refused: %s", strings.TrimSpace(line))
			}
			break
		}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}
