// Package httpd is mailstack's web side: what mail clients and other mail
// servers fetch over HTTP(S) to configure themselves. It serves Thunderbird
// autoconfig, Outlook autodiscover, the MTA-STS policy and a health check,
// plus the HTTP→HTTPS redirect for port 80. ACME challenges and metrics are
// wired in by the caller.
package httpd

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/mtasts"
)

// Domains tells whether a domain is served here.
type Domains interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
}

// Config is what the handlers serve.
type Config struct {
	// Clients says which hosts, ports and TLS modes clients are given.
	Clients clientconf.Config
	// MTASTS is the policy mode; the policy's mx is Clients.Hostname.
	MTASTS mtasts.Mode
	// Domains answers which domains are ours; requests for others get 404
	// so the server does not hand out settings for strangers' domains.
	Domains Domains
	// Health checks the service's dependencies (the database) for /healthz.
	Health func(ctx context.Context) error
	// Log receives request errors; nil means slog.Default().
	Log *slog.Logger
	// Account, if set, serves every other path on HTTPS: the account web
	// (package webui).
	Account http.Handler
	// HTTPSPort is where the HTTP listener redirects to; 0 means 443 (no
	// port in the URL). serve --dev's HTTPS listener is on 1443.
	HTTPSPort int
}

// Paths served.
const (
	AutoconfigPath          = "/mail/config-v1.1.xml"
	WellKnownAutoconfigPath = "/.well-known/autoconfig/mail/config-v1.1.xml"
	AutodiscoverPath        = "/autodiscover/autodiscover.xml"
	MTASTSPath              = "/.well-known/mta-sts.txt"
	HealthPath              = "/healthz"
	ACMEChallengePrefix     = "/.well-known/acme-challenge/"
)

func (c *Config) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

// HTTPSHandler serves everything, for the TLS listener (443).
func (c *Config) HTTPSHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AutoconfigPath, c.autoconfig)
	mux.HandleFunc("GET "+WellKnownAutoconfigPath, c.autoconfig)
	// Outlook and others vary the case of the path.
	mux.HandleFunc("POST "+AutodiscoverPath, c.autodiscover)
	mux.HandleFunc("POST /Autodiscover/Autodiscover.xml", c.autodiscover)
	mux.HandleFunc("POST /AutoDiscover/AutoDiscover.xml", c.autodiscover)
	mux.HandleFunc("GET "+MTASTSPath, c.mtaSTS)
	mux.HandleFunc("GET "+HealthPath, c.healthz)
	if c.Account != nil {
		mux.Handle("/", c.Account)
	}
	return mux
}

// HTTPHandler serves the plain-HTTP listener (80): autoconfig (Thunderbird
// tries http:// first on older versions) and /healthz are answered, every
// other request is redirected to HTTPS. The MTA-STS policy in particular
// must only be fetched over HTTPS (RFC 8461 section 3.3). Wrap it with
// autocert's Manager.HTTPHandler to answer ACME HTTP-01 challenges.
func (c *Config) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AutoconfigPath, c.autoconfig)
	mux.HandleFunc("GET "+WellKnownAutoconfigPath, c.autoconfig)
	mux.HandleFunc("GET "+HealthPath, c.healthz)
	mux.HandleFunc("/", c.redirectHTTPS)
	return mux
}

func (c *Config) redirectHTTPS(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, ACMEChallengePrefix) {
		// Reached only without ACME: nothing to answer.
		http.NotFound(w, r)
		return
	}
	host := hostOnly(r.Host)
	if c.HTTPSPort != 0 && c.HTTPSPort != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(c.HTTPSPort))
	}
	target := "https://" + host + r.URL.RequestURI()
	// 308 keeps the method, so a POST to autodiscover survives.
	http.Redirect(w, r, target, http.StatusPermanentRedirect)
}

func (c *Config) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if c.Health != nil {
		if err := c.Health(r.Context()); err != nil {
			c.log().Warn("health check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("unhealthy: database unreachable\n"))
			return
		}
	}
	w.Write([]byte("ok\n"))
}

// hostOnly strips the port and a trailing dot and lower-cases a Host header.
func hostOnly(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// served reports whether domain is one of ours, answering 404 or 500 itself
// when it is not.
func (c *Config) served(w http.ResponseWriter, r *http.Request, domain string) bool {
	if domain == "" {
		http.Error(w, "no mail domain in the request", http.StatusNotFound)
		return false
	}
	ok, err := c.Domains.IsLocalDomain(r.Context(), domain)
	if err != nil {
		c.log().Error("domain lookup", "domain", domain, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return false
	}
	if !ok {
		http.Error(w, "domain not served here", http.StatusNotFound)
		return false
	}
	return true
}
