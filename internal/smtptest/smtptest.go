// Package smtptest runs fake remote SMTP servers for tests: a go-smtp
// server on 127.0.0.1 (a random port) standing in for remote MX hosts or a
// smarthost, which records what it is given. It also holds what the tests
// of the outbound worker share: a DNS resolver from maps, a worker run
// until the test ends, and a TLS certificate pair for loopback.
package smtptest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/tlsconfig"
	"github.com/mailstack/mailstack/smtpd/outbound"
	"github.com/mailstack/mailstack/store"
)

// Delivery is one message a Server accepted.
type Delivery struct {
	From string
	To   []string
	Data []byte
}

// Options configures a Server.
type Options struct {
	// TLS, if set, is offered as STARTTLS, or used for the whole
	// connection with ImplicitTLS.
	TLS         *tls.Config
	ImplicitTLS bool
	// Domain is the name in the greeting (default mx.remote.test).
	Domain string
	// User and Password, if set, make the server a smarthost: AUTH PLAIN
	// with them is required before MAIL. AllowInsecureAuth offers AUTH
	// without TLS too.
	User, Password    string
	AllowInsecureAuth bool
}

// Server is a fake SMTP server. Set its hooks before the first
// connection. A recipient whose local part starts with "nobody" is
// refused with 550 5.1.1.
type Server struct {
	// Addr is the server's host:port, Port its port.
	Addr string
	Port int

	// Reply, if set, answers the n-th DATA (1-based); nil accepts.
	Reply func(n int) error
	// RcptDelay, if set, says how long to stall before answering RCPT.
	RcptDelay func(to string) time.Duration
	// RcptErr, if set, answers RCPT for to on its try-th attempt
	// (1-based); nil accepts.
	RcptErr func(to string, try int) error
	// OnData, if set, sees the recipients of each message before it is
	// accepted.
	OnData func(to []string)

	opts  Options
	conns atomic.Int32 // connections accepted
	auths atomic.Int32 // AUTH commands received

	mu        sync.Mutex
	datas     int
	delivered []Delivery
	perRcpt   map[string]int // message-id + " " + rcpt → deliveries
	tlsSeen   bool
	rcptTry   map[string]int
	rcptLast  time.Time // when the last RCPT came
}

// NewMX starts a remote MX host offering STARTTLS with tlsCfg (none if
// nil) until the test ends.
func NewMX(t testing.TB, tlsCfg *tls.Config) *Server {
	t.Helper()
	return Start(t, Options{TLS: tlsCfg})
}

// Start starts a server until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s := &Server{opts: o, perRcpt: map[string]int{}, rcptTry: map[string]int{}}
	srv := smtp.NewServer(s)
	srv.Domain = o.Domain
	if srv.Domain == "" {
		srv.Domain = "mx.remote.test"
	}
	srv.ErrorLog = discardLog{}
	srv.AllowInsecureAuth = o.AllowInsecureAuth
	var l net.Listener
	var err error
	if o.ImplicitTLS {
		l, err = tls.Listen("tcp", "127.0.0.1:0", o.TLS)
	} else {
		srv.TLSConfig = o.TLS
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(countingListener{l, &s.conns}) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	s.Addr = l.Addr().String()
	s.Port = l.Addr().(*net.TCPAddr).Port
	return s
}

// Deliveries returns the messages accepted so far.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.delivered...)
}

// Wait returns the accepted messages once there are n, failing the test
// after 30 s.
func (s *Server) Wait(t testing.TB, n int) []Delivery {
	t.Helper()
	WaitLong(t, "the SMTP server to receive its messages", 30*time.Second, func() bool { return len(s.Deliveries()) >= n })
	return s.Deliveries()
}

// PerRecipient returns how often each (Message-ID, recipient) pair was
// delivered, keyed by the Message-ID field's value, a space and the
// recipient.
func (s *Server) PerRecipient() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.perRcpt))
	for k, n := range s.perRcpt {
		m[k] = n
	}
	return m
}

// Total is how many (message, recipient) deliveries there were.
func (s *Server) Total() int {
	n := 0
	for _, c := range s.PerRecipient() {
		n += c
	}
	return n
}

// TLSSeen says whether a session used TLS.
func (s *Server) TLSSeen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsSeen
}

// RcptTries returns how often RCPT TO named to.
func (s *Server) RcptTries(to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcptTry[to]
}

// LastRcpt returns when the last RCPT came.
func (s *Server) LastRcpt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcptLast
}

// Conns is how many connections the server accepted.
func (s *Server) Conns() int { return int(s.conns.Load()) }

// Auths is how many AUTH commands the server received.
func (s *Server) Auths() int { return int(s.auths.Load()) }

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type discardLog struct{}

func (discardLog) Printf(string, ...any) {}
func (discardLog) Println(...any)        {}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, tlsOn := c.TLSConnectionState()
	if tlsOn {
		s.mu.Lock()
		s.tlsSeen = true
		s.mu.Unlock()
	}
	ss := &session{s: s}
	if s.opts.User != "" {
		return &authSession{session: ss}, nil
	}
	return ss, nil
}

type session struct {
	s    *Server
	from string
	to   []string
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error { ss.from = from; return nil }

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.s
	if s.RcptDelay != nil {
		time.Sleep(s.RcptDelay(to))
	}
	if strings.HasPrefix(to, "nobody@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.mu.Lock()
	s.rcptTry[to]++
	s.rcptLast = time.Now()
	try := s.rcptTry[to]
	s.mu.Unlock()
	if s.RcptErr != nil {
		if err := s.RcptErr(to, try); err != nil {
			return err
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }

func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.s
	if s.OnData != nil {
		s.OnData(ss.to)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.datas++
	if s.Reply != nil {
		if err := s.Reply(s.datas); err != nil {
			return err
		}
	}
	s.delivered = append(s.delivered, Delivery{From: ss.from, To: ss.to, Data: b})
	id := headerValue(b, "Message-ID")
	for _, r := range ss.to {
		s.perRcpt[id+" "+r]++
	}
	return nil
}

// authSession is a smarthost's session: AUTH PLAIN before MAIL.
type authSession struct {
	*session
	authed bool
}

func (a *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (a *authSession) Auth(string) (sasl.Server, error) {
	a.s.auths.Add(1)
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != a.s.opts.User || pass != a.s.opts.Password {
			return smtp.ErrAuthFailed
		}
		a.authed = true
		return nil
	}), nil
}

func (a *authSession) Mail(from string, o *smtp.MailOptions) error {
	if !a.authed {
		return smtp.ErrAuthRequired
	}
	return a.session.Mail(from, o)
}

func headerValue(msg []byte, key string) string {
	for _, line := range strings.Split(string(msg), "\r\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Resolver answers MX and address lookups from maps; anything else is
// NXDOMAIN. Host names in IPs have no trailing dot.
type Resolver struct {
	MX  map[string][]*net.MX
	IPs map[string][]net.IPAddr
}

// LookupMX implements outbound.Resolver.
func (r *Resolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if mx, ok := r.MX[name]; ok {
		return mx, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// LookupIPAddr implements outbound.Resolver.
func (r *Resolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	if ips, ok := r.IPs[strings.TrimSuffix(host, ".")]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// RemoteResolver sends every domain in domains to 127.0.0.1 via two MX
// records, the preferred one unreachable (nothing on its address).
func RemoteResolver(domains ...string) *Resolver {
	r := &Resolver{MX: map[string][]*net.MX{}, IPs: map[string][]net.IPAddr{
		"mx1.remote.test": {{IP: net.ParseIP("127.0.0.1")}},
		"mx0.remote.test": {{IP: net.ParseIP("127.0.0.2")}},
	}}
	for _, d := range domains {
		r.MX[d] = []*net.MX{{Host: "mx1.remote.test.", Pref: 20}, {Host: "mx0.remote.test.", Pref: 10}}
	}
	return r
}

// Worker is an outbound worker StartWorker runs.
type Worker struct {
	idle atomic.Bool
}

// Idle says whether the worker's last pass claimed nothing and left no
// delivery in hand (outbound.Config.OnPass): with the queue empty, it
// delivers nothing more.
func (w *Worker) Idle() bool { return w.idle.Load() }

// StartWorker runs an outbound worker on st until the test ends,
// delivering to mx for remote.test and other.test (RemoteResolver), with
// retries after 100 to 400 ms and no poll: only NOTIFY and due times wake
// it. mod, if set, changes the configuration first.
func StartWorker(t testing.TB, st *store.Store, mx *Server, mod func(*outbound.Config)) *Worker {
	t.Helper()
	wk := &Worker{}
	cfg := outbound.Config{
		Store: st, Hostname: "mail.example.org", Resolver: RemoteResolver("remote.test", "other.test"),
		Port: mx.Port, RetryBase: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond,
		PollInterval: time.Hour,
		Log:          Logger(t),
		OnPass:       func(claimed, inHand int) { wk.idle.Store(claimed == 0 && inHand == 0) },
	}
	if mod != nil {
		mod(&cfg)
	}
	w := outbound.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return wk
}

// WaitFor polls cond until it holds, failing the test after 15 s.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitLong(t, what, 15*time.Second, cond)
}

// WaitLong polls cond until it holds, failing the test after d.
func WaitLong(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TLS returns a server configuration with a fresh self-signed certificate
// for 127.0.0.1 and localhost, and a client configuration that trusts
// exactly that certificate.
func TLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	certPEM, keyPEM, err := tlsconfig.Generate([]string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// Logger logs at debug level to stderr under go test -v, and nowhere
// otherwise.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
