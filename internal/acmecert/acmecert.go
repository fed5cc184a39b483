// Package acmecert obtains and renews certificates from an ACME CA (Let's
// Encrypt by default) with golang.org/x/crypto/acme/autocert: TLS-ALPN-01
// on the HTTPS listener and HTTP-01 on port 80, for the server's host name
// and the imap., smtp., mta-sts., autoconfig. and autodiscover. names of
// every served domain.
//
// The cache is supplied by the caller: PostgreSQL, so every process shares
// the account key and the certificates. autocert (v0.58) also writes both
// kinds of challenge response there, HTTP-01 tokens and TLS-ALPN-01
// challenge certificates, and looks in the cache when a validation request
// finds nothing in memory; so with several processes behind one address,
// whichever process the CA reaches answers, for either challenge
// (TestChallengeAnsweredByAnotherProcess checks it, should a later autocert
// go back to memory only for one of them).
package acmecert

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Domains tells whether a domain is served here.
type Domains interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
}

// prefixes are the per-domain names that get certificates: what clients
// connect to (imap., smtp.), what they fetch settings from (autoconfig.,
// autodiscover.) and what senders fetch the MTA-STS policy from.
func prefixes() []string {
	return []string{"imap", "smtp", "mta-sts", "autoconfig", "autodiscover"}
}

// Names returns the names a certificate is wanted for in domain.
func Names(domain string) []string {
	var ns []string
	for _, p := range prefixes() {
		ns = append(ns, p+"."+domain)
	}
	return ns
}

// Options configure New.
type Options struct {
	// Email is the ACME account contact; required.
	Email string
	// DirectoryURL is the ACME directory; empty: Let's Encrypt production.
	DirectoryURL string
	// Hostname is the server's own name, always allowed, and the
	// certificate served to clients that send no (or a foreign) SNI name.
	Hostname string
	Domains  Domains
	Cache    autocert.Cache
	// HTTPClient talks to the CA; nil: http.DefaultClient. Tests set it to
	// trust a test CA's HTTPS certificate.
	HTTPClient *http.Client
}

// HostPolicy allows the host name and the per-domain names of served
// domains, asking the store each time, so a domain added with `mailstack
// domain add` gets certificates without a restart.
func HostPolicy(hostname string, domains Domains) autocert.HostPolicy {
	hostname = strings.ToLower(hostname)
	return func(ctx context.Context, host string) error {
		// autocert's HTTP-01 handler passes the Host header, which may
		// carry a port.
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if host == hostname {
			return nil
		}
		prefix, domain, ok := strings.Cut(host, ".")
		if ok && slices.Contains(prefixes(), prefix) {
			local, err := domains.IsLocalDomain(ctx, domain)
			if err != nil {
				return fmt.Errorf("acme host policy: %w", err)
			}
			if local {
				return nil
			}
		}
		return fmt.Errorf("acme host policy: %q is not a name of this server", host)
	}
}

// New returns an autocert manager.
func New(o Options) (*autocert.Manager, error) {
	if o.Email == "" || o.Hostname == "" || o.Cache == nil || o.Domains == nil {
		return nil, fmt.Errorf("acme: e-mail, host name, cache and domains are required")
	}
	dir := o.DirectoryURL
	if dir == "" {
		dir = autocert.DefaultACMEDirectory
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      o.Cache,
		HostPolicy: HostPolicy(o.Hostname, o.Domains),
		Email:      o.Email,
		Client:     &acme.Client{DirectoryURL: dir, HTTPClient: o.HTTPClient},
	}, nil
}

// TLSConfig returns a server configuration whose certificates come from m.
// Mail clients that send no SNI (some do not) or a name we hold no
// certificate for (an IP address, an old alias) get the host name's
// certificate instead of a failed handshake. alpn lists the application
// protocols of the listener ("h2", "http/1.1" for HTTPS; none for mail);
// acme-tls/1 is always added so TLS-ALPN-01 works on any listener.
func TLSConfig(m *autocert.Manager, hostname string, alpn ...string) *tls.Config {
	policy := m.HostPolicy
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: append(slices.Clone(alpn), acme.ALPNProto),
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if slices.Contains(hello.SupportedProtos, acme.ALPNProto) {
				return m.GetCertificate(hello) // a challenge: exactly as asked
			}
			ctx := hello.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			name := strings.TrimSuffix(hello.ServerName, ".")
			if name == "" || net.ParseIP(name) != nil || policy(ctx, name) != nil {
				h := *hello
				h.ServerName = hostname
				return m.GetCertificate(&h)
			}
			return m.GetCertificate(hello)
		},
	}
}

// Prewarm obtains (or loads from the cache) the certificates for the host
// name and every served domain's names, so the first client connection does
// not wait for the CA. Failures (typically DNS not set up yet) are logged
// and retried by autocert on the next handshake for that name.
func Prewarm(ctx context.Context, m *autocert.Manager, log *slog.Logger, names []string) {
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		// autocert keys RSA and ECDSA certificates apart; an ECDSA-capable
		// hello gets the ECDSA one, which every current client supports.
		hello := &tls.ClientHelloInfo{
			ServerName:        name,
			CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:   []tls.CurveID{tls.CurveP256},
			SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		}
		// GetCertificate bounds the work with its own timeout.
		cert, err := m.GetCertificate(hello)
		if err != nil {
			log.Warn("ACME certificate not obtained yet; check DNS with 'mailstack doctor'", "name", name, "err", err)
			continue
		}
		if len(cert.Certificate) > 0 && cert.Leaf != nil {
			log.Info("ACME certificate ready", "name", name, "expires", cert.Leaf.NotAfter)
		} else {
			log.Info("ACME certificate ready", "name", name)
		}
	}
}
