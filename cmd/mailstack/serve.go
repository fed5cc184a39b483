package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/mailstack/mailstack/httpd"
	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/internal/tlsconfig"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/pglocal"
)

// serveConfig is everything `mailstack serve` is configured with.
type serveConfig struct {
	db                  dbFlags
	env                 envDefaults
	dev                 bool
	hostname            string
	hostnameSet         bool // by flag or environment, not the machine's name
	domains             string
	tlsCert, tlsKey     string
	imapAddr            string
	imapStartTLSAddr    string
	submissionAddr      string
	submissionsAddr     string
	mxAddr              string
	relay               string
	dnsServer           string
	maxMessageSize      int64
	requireAppPasswords bool
	maxConnsPerAccount  int64
	web                 webConfig    // HTTP, ACME, client settings: serve_http.go
	rspamd              rspamdConfig // junk filtering: serve_junk.go
}

// register defines serve's flags. Every flag but -dev takes its default
// from the MAILSTACK_* variable its help text names; README.md's
// configuration table lists the same flags and variables (a test checks).
func (cfg *serveConfig) register(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	cfg.db.register(fs, "info")
	fs.BoolVar(&cfg.dev, "dev", false, "development mode: loopback listeners on ports 1993/1143/1587/1465/1025 and web 1080/1443/19090, host name localhost, domain localhost, -client-hosts=hostname, a self-signed certificate for localhost, a ready dev@localhost account, and its own data directory (MAILSTACK_DATABASE_URL and MAILSTACK_DATA_DIR are not read); flags given explicitly win (no environment equivalent)")
	fs.StringVar(&cfg.hostname, "hostname", envOr("MAILSTACK_HOSTNAME", host), "this server's public host name, used in greetings and certificates (env MAILSTACK_HOSTNAME)")
	fs.StringVar(&cfg.domains, "domains", envOr("MAILSTACK_DOMAINS", ""), "comma-separated mail domains to serve, added at start if missing (env MAILSTACK_DOMAINS)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", envOr("MAILSTACK_TLS_CERT", ""), "TLS certificate chain file (PEM), exclusive with -acme-email; empty and no ACME: a self-signed certificate (with a loud warning), kept in <data-dir>/tls (env MAILSTACK_TLS_CERT)")
	fs.StringVar(&cfg.tlsKey, "tls-key", envOr("MAILSTACK_TLS_KEY", ""), "TLS private key file (PEM) of -tls-cert (env MAILSTACK_TLS_KEY)")
	fs.StringVar(&cfg.imapAddr, "imap-addr", envOr("MAILSTACK_IMAP_ADDR", ":993"), "IMAP implicit-TLS listen address; empty: off (env MAILSTACK_IMAP_ADDR)")
	fs.StringVar(&cfg.imapStartTLSAddr, "imap-starttls-addr", envOr("MAILSTACK_IMAP_STARTTLS_ADDR", ":143"), "IMAP STARTTLS listen address; empty: off (env MAILSTACK_IMAP_STARTTLS_ADDR)")
	fs.StringVar(&cfg.submissionAddr, "submission-addr", envOr("MAILSTACK_SUBMISSION_ADDR", ":587"), "SMTP submission (STARTTLS) listen address; empty: off (env MAILSTACK_SUBMISSION_ADDR)")
	fs.StringVar(&cfg.submissionsAddr, "submissions-addr", envOr("MAILSTACK_SUBMISSIONS_ADDR", ":465"), "SMTP submission (implicit TLS) listen address; empty: off (env MAILSTACK_SUBMISSIONS_ADDR)")
	fs.StringVar(&cfg.mxAddr, "mx-addr", envOr("MAILSTACK_MX_ADDR", ":25"), "inbound MX listen address; empty: off (env MAILSTACK_MX_ADDR)")
	fs.StringVar(&cfg.relay, "relay", envOr("MAILSTACK_RELAY", ""), "smarthost for all outbound mail, smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465; empty: deliver to MX hosts directly (env MAILSTACK_RELAY)")
	fs.StringVar(&cfg.dnsServer, "dns-server", envOr("MAILSTACK_DNS_SERVER", ""), "DNS resolver (host:port) for MX lookups and SPF/DKIM/DMARC checks, e.g. a local validating resolver; empty: the system resolver (env MAILSTACK_DNS_SERVER)")
	cfg.maxMessageSize = cfg.env.size("MAILSTACK_MAX_MESSAGE_SIZE", 50<<20)
	fs.Var((*sizeFlag)(&cfg.maxMessageSize), "max-message-size", "largest message accepted: bytes, or with K, M or G (50M) (env MAILSTACK_MAX_MESSAGE_SIZE)")
	cfg.requireAppPasswords = cfg.env.boolean("MAILSTACK_REQUIRE_APP_PASSWORDS", true)
	fs.Var((*boolFlag)(&cfg.requireAppPasswords), "require-app-passwords", "IMAP and SMTP accept only app passwords, never the main password: true or false (also 1/0, yes/no, on/off) (env MAILSTACK_REQUIRE_APP_PASSWORDS)")
	fs.Int64Var(&cfg.maxConnsPerAccount, "max-connections-per-account", cfg.env.int64("MAILSTACK_MAX_CONNECTIONS_PER_ACCOUNT", 50), "concurrent IMAP connections per account (env MAILSTACK_MAX_CONNECTIONS_PER_ACCOUNT)")
	cfg.web.register(fs, &cfg.env)
	cfg.rspamd.register(fs, &cfg.env)
}

// devSetter assigns a development default unless the flag was given on the
// command line (an explicit flag always wins over -dev).
type devSetter map[string]bool

func (set devSetter) str(flag string, p *string, v string) {
	if !set[flag] {
		*p = v
	}
}

// serve --dev's listeners; mobileconfig -dev describes them.
const (
	devIMAPAddr         = "127.0.0.1:1993"
	devIMAPStartTLSAddr = "127.0.0.1:1143"
	devSubmissionAddr   = "127.0.0.1:1587"
	devSubmissionsAddr  = "127.0.0.1:1465"
	devMXAddr           = "127.0.0.1:1025"
)

// applyDev switches listeners to loopback development ports and the data
// to the development data directory.
func (cfg *serveConfig) applyDev(set devSetter) {
	cfg.db.dev = true
	cfg.db.applyDev(set)
	set.str("hostname", &cfg.hostname, "localhost")
	set.str("imap-addr", &cfg.imapAddr, devIMAPAddr)
	set.str("imap-starttls-addr", &cfg.imapStartTLSAddr, devIMAPStartTLSAddr)
	set.str("submission-addr", &cfg.submissionAddr, devSubmissionAddr)
	set.str("submissions-addr", &cfg.submissionsAddr, devSubmissionsAddr)
	set.str("mx-addr", &cfg.mxAddr, devMXAddr)
	// The dev@localhost account needs its domain, whatever else is served.
	if !slices.Contains(strings.Split(strings.ReplaceAll(cfg.domains, " ", ""), ","), "localhost") {
		cfg.domains = strings.Trim(cfg.domains+",localhost", ",")
	}
	cfg.web.applyDev(set)
}

const serveUsage = `Usage: mailstack serve [flags]

Runs the mail service until SIGINT or SIGTERM. Every flag except -dev can
also be set with the MAILSTACK_* environment variable its description names;
a flag given on the command line wins over the variable.

Flags:
`

// serveFlags returns serve's flag set and the configuration it fills.
func serveFlags() (*flag.FlagSet, *serveConfig) {
	fs := flag.NewFlagSet("mailstack serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := &serveConfig{}
	cfg.register(fs)
	return fs, cfg
}

// parseServe parses serve's command line and environment.
func (c *cli) parseServe(args []string) (*serveConfig, error) {
	fs, cfg := serveFlags()
	usage := func(w io.Writer) {
		fmt.Fprint(w, serveUsage)
		printFlags(fs, w)
	}
	fs.Usage = func() { usage(c.stderr) }
	rest, err := parseFlags(fs, args, c.stdout, usage)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("serve takes flags only, not %q; see 'mailstack serve -h'", rest[0])
	}
	if cfg.env.err != nil {
		return nil, cfg.env.err
	}
	set := devSetter{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	_, hostEnv := os.LookupEnv("MAILSTACK_HOSTNAME")
	cfg.hostnameSet = set["hostname"] || hostEnv
	if cfg.dev {
		cfg.applyDev(set)
	}
	return cfg, nil
}

func (c *cli) serve(ctx context.Context, args []string) error {
	cfg, err := c.parseServe(args)
	if err != nil {
		return err
	}
	log, err := cfg.db.logger(c.stderr)
	if err != nil {
		return err
	}
	c.log = log
	cfg.warnSettings(log)
	if uid, _, ok := cfg.db.needsOwner(); ok {
		// As root it would run the service user's cluster as root's
		// process, whose files the service then cannot use.
		name := pglocal.UserName(uid)
		return fmt.Errorf("the data directory %s belongs to user %s: run serve as that user (systemctl start mailstack, or runuser -u %s -- mailstack serve)",
			cfg.db.dataDir, name, name)
	}
	return runServer(ctx, cfg, log, func(s *server) { c.banner(s) })
}

// server is a running mailstack process.
type server struct {
	cfg     *serveConfig
	log     *slog.Logger
	st      *store.Store
	tls     *tls.Config
	devUser string
	devPass string
	// certFile is the self-signed certificate's file, if one is used.
	certFile string
	// metrics are incremented by the protocol servers, served on -admin-addr.
	metrics *metrics.Mailstack
	// acme is set when certificates come from ACME (-acme-email).
	acme *autocert.Manager
	// listeners that are up, name → address
	addrs map[string]string
	// rspamd is the junk filter's client (serve_junk.go), made once.
	rspamd *rspamd.Client
}

// runServer starts everything, calls ready, and blocks until ctx is done,
// then shuts down gracefully.
func runServer(ctx context.Context, cfg *serveConfig, log *slog.Logger, ready func(*server)) error {
	var st *store.Store
	m := metrics.New(func(ctx context.Context) (int64, error) { return st.QueueDepth(ctx) })
	st, closeStore, err := cfg.db.openStore(ctx, log, store.Options{AllowMainPassword: !cfg.requireAppPasswords, OnLogin: m.Login, LearnJunk: cfg.rspamd.url != ""}, pglocal.Owner)
	if err != nil {
		return err
	}
	defer closeStore()
	m.WatchChangeFeed(st.Listening)
	s := &server{cfg: cfg, log: log, st: st, addrs: map[string]string{}, metrics: m}
	if err := s.ensureDomains(ctx); err != nil {
		return err
	}
	if s.tls, err = s.loadTLS(); err != nil {
		return err
	}
	if cfg.dev {
		if err := s.devAccount(ctx); err != nil {
			return err
		}
	}
	// Background work stops with runCtx, also when a listener fails.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	var shutdowns []func(context.Context) error
	errc := make(chan error, 8)
	for _, l := range s.listeners() {
		if l.addr == "" {
			continue
		}
		run, shutdown, addr, err := l.start(runCtx, l.addr)
		if err != nil {
			for _, sd := range shutdowns {
				sd(context.Background())
			}
			return listenError(l.name, l.addr, err)
		}
		s.addrs[l.name] = addr
		shutdowns = append(shutdowns, shutdown)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(); err != nil {
				errc <- fmt.Errorf("%s: %w", l.name, err)
			}
		}()
		log.Info("listening", "service", l.name, "addr", addr)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.maintenance(runCtx)
	}()
	// The text search index is filled in the background, never on a
	// delivery's path; search scans what it has not indexed yet.
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.st.RunTextIndexer(runCtx, 2*time.Second)
	}()
	ready(s)
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("listener failed, shutting down", "err", runErr)
	}
	stopRun()
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, sd := range shutdowns {
		if err := sd(sctx); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}
	wg.Wait()
	return runErr
}

// listenError reports a listener that cannot start; for a port below 1024
// refused to a user without the privilege it says what to do.
func listenError(name, addr string, err error) error {
	if errors.Is(err, syscall.EACCES) {
		if port := clientconf.PortOf(addr); port > 0 && port < 1024 {
			return fmt.Errorf("cannot listen on %s (%s): ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; "+
				"deploy/mailstack.service grants it, or run: setcap cap_net_bind_service=+ep $(command -v mailstack); "+
				"to try mailstack as yourself, use 'mailstack serve --dev' (ports 1993, 1587, ...): %w", addr, name, err)
		}
	}
	return fmt.Errorf("start %s listener on %s: %w", name, addr, err)
}

// placeholderDomains are names reserved for examples (RFC 2606, RFC 6761):
// a host name or domain under one of them is a setting left unedited.
var placeholderDomains = []string{"example", "example.com", "example.net", "example.org", "test", "invalid"}

func isPlaceholder(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	for _, p := range placeholderDomains {
		if name == p || strings.HasSuffix(name, "."+p) {
			return true
		}
	}
	return false
}

// warnSettings warns about settings that start but cannot be what the
// operator meant: the example file's placeholders, or the machine's own
// name where the public one belongs. (Not in --dev, whose names are local.)
func (cfg *serveConfig) warnSettings(log *slog.Logger) {
	if cfg.dev {
		return
	}
	switch {
	case isPlaceholder(cfg.hostname):
		log.Warn("the host name is an example placeholder: set MAILSTACK_HOSTNAME (or -hostname) to this server's public DNS name", "hostname", cfg.hostname)
	case !cfg.hostnameSet:
		log.Warn("no host name set: using the machine's name, which other servers and clients cannot reach by; set MAILSTACK_HOSTNAME (or -hostname) to this server's public DNS name (the MX target)", "hostname", cfg.hostname)
	case !strings.Contains(cfg.hostname, "."):
		log.Warn("the host name is not a public DNS name: set MAILSTACK_HOSTNAME (or -hostname) to one such as mail.yourdomain.org", "hostname", cfg.hostname)
	}
	for _, d := range strings.Split(cfg.domains, ",") {
		if d = strings.TrimSpace(d); d != "" && isPlaceholder(d) {
			log.Warn("a served domain is an example placeholder: set MAILSTACK_DOMAINS (or -domains) to your own domains", "domain", d)
		}
	}
	if os.Getenv("PGPASSWORD") == "change-me-to-something-long-and-random" {
		log.Warn("the database password is the example file's placeholder: set POSTGRES_PASSWORD in .env to a long random string")
	}
}

// listener is one protocol listener; start binds it and returns a blocking
// run function, a graceful shutdown and the bound address.
type listener struct {
	name  string
	addr  string
	start func(ctx context.Context, addr string) (run func() error, shutdown func(context.Context) error, bound string, err error)
}

// listeners lists the protocol listeners of this build; each protocol
// package's wiring lives in its own serve_*.go file.
func (s *server) listeners() []listener {
	ls := append(s.imapListeners(), s.smtpListeners()...)
	return append(ls, s.httpListeners()...)
}

func (s *server) ensureDomains(ctx context.Context) error {
	for _, d := range strings.Split(s.cfg.domains, ",") {
		if d = strings.TrimSpace(d); d != "" {
			if _, err := ensureDomain(ctx, s.st, s.log, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureDomain returns the served domain name, creating it (with a DKIM
// key) if it is not served yet.
func ensureDomain(ctx context.Context, st *store.Store, log *slog.Logger, name string) (*store.Domain, error) {
	if d, err := st.DomainByName(ctx, name); err == nil {
		return d, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	key, err := dkimkey.Generate()
	if err != nil {
		return nil, err
	}
	if _, err := st.CreateDomain(ctx, name, "mailstack", key); err != nil && !errors.Is(err, store.ErrExists) {
		return nil, err
	}
	log.Info("domain added", "domain", name)
	return st.DomainByName(ctx, name)
}

func (s *server) loadTLS() (*tls.Config, error) {
	if s.cfg.web.acmeEmail != "" {
		return s.acmeTLS()
	}
	if s.cfg.tlsCert != "" || s.cfg.tlsKey != "" {
		return tlsconfig.Load(s.cfg.tlsCert, s.cfg.tlsKey)
	}
	hosts := []string{s.cfg.hostname}
	if s.cfg.dev {
		hosts = append(hosts, "127.0.0.1", "::1")
	}
	dir := filepath.Join(s.cfg.db.dataDir, "tls")
	s.certFile = filepath.Join(dir, "selfsigned-cert.pem")
	if !s.cfg.dev { // the dev banner says it plainly
		s.log.Warn("NO TLS CERTIFICATE CONFIGURED: using a self-signed certificate. Mail clients will warn; set MAILSTACK_TLS_CERT and MAILSTACK_TLS_KEY for real use.",
			"hosts", hosts, "certificate", s.certFile)
	}
	return tlsconfig.SelfSigned(dir, hosts)
}

// devAppPasswordLabel starts the label of serve --dev's app passwords.
const devAppPasswordLabel = "dev "

// devAccount makes sure dev@localhost exists with a fresh app password for
// the banner, revoking those of earlier starts: only one is ever active
// (its secret cannot be shown again, so each start makes a new one).
func (s *server) devAccount(ctx context.Context) error {
	const addr = "dev@localhost"
	acc, err := s.st.AccountByAddress(ctx, addr)
	if errors.Is(err, store.ErrNotFound) {
		acc, err = s.st.CreateAccount(ctx, addr, "dev-main-password-"+time.Now().Format(time.RFC3339Nano), store.AccountOptions{})
	}
	if err != nil {
		return err
	}
	old, err := s.st.AppPasswords(ctx, acc.ID)
	if err != nil {
		return err
	}
	for _, ap := range old {
		if ap.RevokedAt == nil && strings.HasPrefix(ap.Label, devAppPasswordLabel) {
			if err := s.st.RevokeAppPassword(ctx, acc.ID, ap.ID); err != nil {
				return err
			}
		}
	}
	secret, _, err := s.st.CreateAppPassword(ctx, acc.ID, devAppPasswordLabel+time.Now().Format(time.DateTime))
	if err != nil {
		return err
	}
	s.devUser, s.devPass = addr, secret
	return nil
}

func (c *cli) banner(s *server) {
	w := c.stderr
	fmt.Fprintln(w, "\n==================== mailstack is running ====================")
	if len(s.addrs) == 0 {
		fmt.Fprintln(w, "No listeners are enabled: every listen address is empty.")
	}
	for _, name := range slices.Sorted(maps.Keys(s.addrs)) {
		fmt.Fprintf(w, "  %-12s %s\n", name, s.addrs[name])
	}
	if s.devUser != "" {
		s.devBanner(w)
	}
	fmt.Fprintln(w, "Stop with Ctrl-C.")
	fmt.Fprintln(w, "===============================================================")
}

// devBanner tells a developer everything a mail client needs.
func (s *server) devBanner(w io.Writer) {
	a := s.addrs
	fmt.Fprintf(w, "\nDevelopment mode (data in %s; a real serve uses its own).\n", s.cfg.db.dataDir)
	fmt.Fprintf(w, "User name     %s\n", s.devUser)
	fmt.Fprintf(w, "Password      %s  (an app password; each start revokes the previous one)\n", s.devPass)
	pair := func(proto, ssl, starttls string) {
		var ways []string
		if a[ssl] != "" {
			ways = append(ways, a[ssl]+" SSL/TLS")
		}
		if a[starttls] != "" {
			ways = append(ways, a[starttls]+" STARTTLS")
		}
		if len(ways) > 0 {
			fmt.Fprintf(w, "%-13s %s\n", proto, strings.Join(ways, ", or "))
		}
	}
	pair("IMAP", "imaps", "imap")
	pair("SMTP", "submissions", "submission")
	if a["mx"] != "" {
		fmt.Fprintf(w, "Inbound MX    %s (plain SMTP, no login)\n", a["mx"])
	}
	if s.certFile != "" {
		fmt.Fprintf(w, "Certificate   self-signed for localhost, 127.0.0.1 and ::1; have your client trust it (as a CA):\n              %s\n", s.certFile)
	}
	if a["http"] != "" {
		fmt.Fprintf(w, "Autoconfig    http://%s%s?emailaddress=%s\n", a["http"], httpd.AutoconfigPath, s.devUser)
	}
	fmt.Fprintf(w, "Apple devices mailstack mobileconfig -dev %s > dev.mobileconfig\n", s.devUser)
	if a["imaps"] != "" && s.certFile != "" {
		fmt.Fprintf(w, "Try it        curl --cacert %s --user '%s:%s' imaps://%s/\n", shellQuote(s.certFile), s.devUser, s.devPass, a["imaps"])
	}
}

// shellQuote quotes s for sh when it needs it.
func shellQuote(s string) string {
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@=+,%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// maintenance periodically removes message contents nothing references and
// old login activity.
func (s *server) maintenance(ctx context.Context) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n, err := s.st.CollectGarbage(ctx, time.Hour); err != nil {
			s.log.Warn("garbage collection", "err", err)
		} else if n > 0 {
			s.log.Info("garbage collection", "deleted_contents", n)
		}
		// Login activity is kept for 90 days, as account activity pages
		// of hosted mail services show.
		if n, err := s.st.PruneAuthEvents(ctx, 90*24*time.Hour); err != nil {
			s.log.Warn("prune activity log", "err", err)
		} else if n > 0 {
			s.log.Info("pruned activity log", "deleted_events", n)
		}
		if _, err := s.st.PruneWebSessions(ctx); err != nil {
			s.log.Warn("prune web sessions", "err", err)
		}
	}
}

// counted wraps a listener so its connections show in the metrics.
func (s *server) counted(ln net.Listener, service string) net.Listener {
	return countingListener{Listener: ln, m: s.metrics, service: service}
}

type countingListener struct {
	net.Listener
	m       *metrics.Mailstack
	service string
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, closed: l.m.ConnOpened(l.service)}, nil
}

type countedConn struct {
	net.Conn
	once   sync.Once
	closed func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.closed)
	return c.Conn.Close()
}
