package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/mailstack/mailstack/httpd"
	"github.com/mailstack/mailstack/internal/acmecert"
	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/internal/mtasts"
	"github.com/mailstack/mailstack/webui"
)

// webConfig holds serve's HTTP, ACME and client-configuration settings.
type webConfig struct {
	httpAddr      string
	httpsAddr     string
	adminAddr     string
	acmeEmail     string
	acmeDirectory string
	mtaSTSMode    string
	clientHosts   string
	require2FA    bool
}

func (w *webConfig) register(fs *flag.FlagSet, env *envDefaults) {
	fs.StringVar(&w.httpAddr, "http-addr", envOr("MAILSTACK_HTTP_ADDR", ":80"), "HTTP listen address: ACME HTTP-01, autoconfig, /healthz, redirect to HTTPS; empty: off (env MAILSTACK_HTTP_ADDR)")
	fs.StringVar(&w.httpsAddr, "https-addr", envOr("MAILSTACK_HTTPS_ADDR", ":443"), "HTTPS listen address: the account web, autoconfig, autodiscover, MTA-STS policy, /healthz, ACME TLS-ALPN-01; empty: off (env MAILSTACK_HTTPS_ADDR)")
	fs.StringVar(&w.adminAddr, "admin-addr", envOr("MAILSTACK_ADMIN_ADDR", "127.0.0.1:9090"), "admin listen address for /metrics and /healthz; keep it private; empty: off (env MAILSTACK_ADMIN_ADDR)")
	fs.StringVar(&w.acmeEmail, "acme-email", envOr("MAILSTACK_ACME_EMAIL", ""), "obtain certificates from Let's Encrypt (ACME) with this contact e-mail; needs ports 80 or 443 reachable (env MAILSTACK_ACME_EMAIL)")
	fs.StringVar(&w.acmeDirectory, "acme-directory", envOr("MAILSTACK_ACME_DIRECTORY", ""), "ACME directory URL; empty: Let's Encrypt production (env MAILSTACK_ACME_DIRECTORY)")
	registerClientFlags(fs, &w.mtaSTSMode, &w.clientHosts)
	w.require2FA = env.boolean("MAILSTACK_WEB_REQUIRE_2FA", false)
	fs.Var((*boolFlag)(&w.require2FA), "web-require-2fa", "the account web requires two-factor authentication: an account without it can only set it up; true or false (env MAILSTACK_WEB_REQUIRE_2FA)")
}

// registerClientFlags registers the settings that decide what the outside
// world is told (shared by serve, dns, doctor and mobileconfig, so they
// agree).
func registerClientFlags(fs *flag.FlagSet, mtaSTSMode, clientHosts *string) {
	fs.StringVar(mtaSTSMode, "mta-sts-mode", envOr("MAILSTACK_MTA_STS_MODE", "testing"), "MTA-STS policy mode: testing, enforce or none; switch to enforce once 'mailstack doctor' is clean (env MAILSTACK_MTA_STS_MODE)")
	fs.StringVar(clientHosts, "client-hosts", envOr("MAILSTACK_CLIENT_HOSTS", string(clientconf.PerDomain)), "host names given to mail clients: per-domain (imap.DOMAIN, smtp.DOMAIN) or hostname (env MAILSTACK_CLIENT_HOSTS)")
}

// applyDev moves the web listeners to loopback development ports.
func (w *webConfig) applyDev(set devSetter) {
	set.str("http-addr", &w.httpAddr, "127.0.0.1:1080")
	set.str("https-addr", &w.httpsAddr, "127.0.0.1:1443")
	set.str("admin-addr", &w.adminAddr, "127.0.0.1:19090")
	set.str("client-hosts", &w.clientHosts, string(clientconf.Hostname))
}

// clientConfig is what clients are told: the public host names and the
// ports of the configured listeners.
func (s *server) clientConfig() (clientconf.Config, error) {
	style, err := clientconf.ParseHostStyle(s.cfg.web.clientHosts)
	if err != nil {
		return clientconf.Config{}, err
	}
	return clientconf.Config{
		Hostname:         strings.ToLower(s.cfg.hostname),
		Hosts:            style,
		IMAPPort:         clientconf.PortOf(s.cfg.imapAddr),
		IMAPStartTLSPort: clientconf.PortOf(s.cfg.imapStartTLSAddr),
		SubmissionsPort:  clientconf.PortOf(s.cfg.submissionsAddr),
		SubmissionPort:   clientconf.PortOf(s.cfg.submissionAddr),
	}, nil
}

// acmeTLS sets up ACME (called by loadTLS when -acme-email is set) and
// returns the TLS configuration every listener uses.
func (s *server) acmeTLS() (*tls.Config, error) {
	if s.cfg.tlsCert != "" || s.cfg.tlsKey != "" {
		return nil, errors.New("-acme-email and -tls-cert/-tls-key are exclusive: choose ACME or certificate files")
	}
	m, err := acmecert.New(acmecert.Options{
		Email: s.cfg.web.acmeEmail, DirectoryURL: s.cfg.web.acmeDirectory,
		Hostname: strings.ToLower(s.cfg.hostname), Domains: s.st, Cache: s.st.CertCache(),
	})
	if err != nil {
		return nil, err
	}
	if s.cfg.web.httpAddr == "" && s.cfg.web.httpsAddr == "" {
		s.log.Warn("ACME is on but both HTTP listeners are off: certificates can only be validated if another process serves ports 80/443")
	}
	s.acme = m
	return acmecert.TLSConfig(m, strings.ToLower(s.cfg.hostname)), nil
}

// httpListeners returns the HTTP(S) listeners: autoconfig, autodiscover,
// MTA-STS, ACME challenges, health, and the admin metrics address.
func (s *server) httpListeners() []listener {
	return []listener{
		{name: "http", addr: s.cfg.web.httpAddr, start: s.startHTTP},
		{name: "https", addr: s.cfg.web.httpsAddr, start: s.startHTTPS},
		{name: "admin", addr: s.cfg.web.adminAddr, start: s.startAdmin},
	}
}

func (s *server) webHandlers() (*httpd.Config, error) {
	cc, err := s.clientConfig()
	if err != nil {
		return nil, err
	}
	mode, err := mtasts.ParseMode(s.cfg.web.mtaSTSMode)
	if err != nil {
		return nil, err
	}
	return &httpd.Config{Clients: cc, MTASTS: mode, Domains: s.st, Health: s.st.Ping, Log: s.log,
		HTTPSPort: clientconf.PortOf(s.cfg.web.httpsAddr)}, nil
}

// newHTTPServer applies timeouts that keep slow or idle clients from
// holding connections: these ports face the internet.
func (s *server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// serveHTTP binds addr and returns the listener triple for srv; serve
// runs the server on the bound listener.
func serveHTTP(addr string, srv *http.Server, serve func(net.Listener) error) (func() error, func(context.Context) error, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, "", err
	}
	run := func() error {
		if err := serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return run, srv.Shutdown, ln.Addr().String(), nil
}

func (s *server) startHTTP(_ context.Context, addr string) (func() error, func(context.Context) error, string, error) {
	cfg, err := s.webHandlers()
	if err != nil {
		return nil, nil, "", err
	}
	h := cfg.HTTPHandler()
	if s.acme != nil {
		// Answers /.well-known/acme-challenge/ from the shared cache, so
		// any process can answer a challenge another one started.
		h = s.acme.HTTPHandler(h)
	}
	srv := s.newHTTPServer(h)
	return serveHTTP(addr, srv, srv.Serve)
}

func (s *server) startHTTPS(ctx context.Context, addr string) (func() error, func(context.Context) error, string, error) {
	cfg, err := s.webHandlers()
	if err != nil {
		return nil, nil, "", err
	}
	var tlsCfg *tls.Config
	if s.acme != nil {
		tlsCfg = acmecert.TLSConfig(s.acme, strings.ToLower(s.cfg.hostname), "h2", "http/1.1")
	} else {
		tlsCfg = s.tls.Clone()
		tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	}
	// The account web answers every path the other handlers do not.
	cfg.Account, err = webui.New(webui.Config{Store: s.st, Clients: cfg.Clients, MTASTS: cfg.MTASTS, DNSServer: s.cfg.dnsServer, Require2FA: s.cfg.web.require2FA, Log: s.log})
	if err != nil {
		return nil, nil, "", err
	}
	srv := s.newHTTPServer(cfg.HTTPSHandler())
	srv.TLSConfig = tlsCfg
	run, shutdown, bound, err := serveHTTP(addr, srv, func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") })
	if err == nil && s.acme != nil {
		// Listeners are up (HTTP first, then this one): fetch certificates
		// now rather than on the first client's handshake.
		go s.prewarmCertificates(ctx)
	}
	return run, shutdown, bound, err
}

func (s *server) prewarmCertificates(ctx context.Context) {
	names := []string{strings.ToLower(s.cfg.hostname)}
	ds, err := s.st.Domains(ctx)
	if err != nil {
		s.log.Warn("ACME: list domains", "err", err)
	}
	for _, d := range ds {
		for _, n := range acmecert.Names(d.Name) {
			if n != names[0] {
				names = append(names, n)
			}
		}
	}
	acmecert.Prewarm(ctx, s.acme, s.log, names)
}

func (s *server) startAdmin(_ context.Context, addr string) (func() error, func(context.Context) error, string, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", metrics.ContentType)
		if err := s.metrics.Registry.WriteText(r.Context(), w); err != nil {
			s.log.Warn("metrics", "err", err)
		}
	})
	mux.Handle("GET "+httpd.HealthPath, (&httpd.Config{Health: s.st.Ping, Log: s.log}).HTTPSHandler())
	srv := s.newHTTPServer(mux)
	return serveHTTP(addr, srv, srv.Serve)
}
