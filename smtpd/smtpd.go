// Package smtpd holds mailstack's go-smtp server backends. Submission (587
// STARTTLS, 465 implicit TLS) is here; the inbound MX backend will sit
// beside it, sharing the server setup in this file and the delivery step in
// deliver.go. Outbound delivery is package smtpd/outbound.
package smtpd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/store"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxMessageSize = 50 << 20
	DefaultMaxRecipients  = 100
	DefaultReadTimeout    = 5 * time.Minute // RFC 5321 §4.5.3.2.7 server timeout
	DefaultWriteTimeout   = 2 * time.Minute
	// DefaultMaxConnections caps the open connections of one SMTP
	// listener; more are answered 421 4.7.0 and closed.
	DefaultMaxConnections = 2000
	// DefaultSubmissionMaxConnsPerIP caps the open connections from one
	// remote IP address to the submission listeners (587 and 465 together)
	// before login; more are answered 421 4.7.0 and closed. A household or
	// office behind one NAT address stays well below it.
	DefaultSubmissionMaxConnsPerIP = 50
	// maxCommandBytes bounds what a client may send between two replies
	// outside a message (a command line, or a pipelined group of them),
	// so an endless command line cannot fill memory. go-smtp's own line
	// limit is off (it also applied inside DATA, where it refused every
	// message with a line over 2,000 bytes: common in HTML mail).
	maxCommandBytes = 1 << 20
)

// Config configures an SMTP server.
type Config struct {
	Store *store.Store
	// Hostname is this server's name in the greeting and Received headers.
	Hostname string
	// TLS is the certificate configuration; required for submission.
	TLS *tls.Config
	// MaxMessageSize is the SIZE limit in bytes (default 50 MiB).
	MaxMessageSize int64
	// MaxRecipients is the per-message recipient limit (default 100).
	MaxRecipients int
	// MaxConnections limits the open connections of each listener
	// (default DefaultMaxConnections).
	MaxConnections int
	// MaxConnsPerIP limits the open connections from one remote IP address
	// to all submission listeners of a backend (default
	// DefaultSubmissionMaxConnsPerIP). The MX uses MXOptions.MaxConnsPerIP.
	MaxConnsPerIP int
	// ReadTimeout and WriteTimeout bound each network read and write.
	ReadTimeout, WriteTimeout time.Duration
	// Log receives the server's logs (default slog.Default()). Every line
	// about a session adds conn (an id per TCP connection), remote (the
	// client's IP) and, once a submission session has logged in, account
	// (its address): the keys imapd uses.
	Log *slog.Logger
	// Metrics, if set, counts accepted messages.
	Metrics *metrics.Mailstack
}

func (c Config) withDefaults() Config {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnsPerIP <= 0 {
		c.MaxConnsPerIP = DefaultSubmissionMaxConnsPerIP
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Server is one SMTP listener.
type Server struct {
	srv         *smtp.Server
	implicitTLS bool
	tls         *tls.Config
	log         *slog.Logger
	// wrap, if set, wraps the listener given to Serve (used to limit
	// connections, in total and per remote IP, before go-smtp sees them).
	wrap func(net.Listener) net.Listener

	// mu guards closed and listeners: go-smtp closes only the listeners
	// its Serve has registered, so a Shutdown that ran before a Serve
	// goroutine got that far would leave it accepting forever.
	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
}

func newServer(cfg Config, be smtp.Backend, implicitTLS bool) *Server {
	s := smtp.NewServer(be)
	s.Domain = cfg.Hostname
	s.TLSConfig = cfg.TLS
	s.MaxMessageBytes = cfg.MaxMessageSize
	s.MaxRecipients = cfg.MaxRecipients
	// Lines of any length inside a message are accepted and stored as
	// they are, as Postfix does; dataConn bounds command input instead.
	s.MaxLineLength = 0
	s.ReadTimeout = cfg.ReadTimeout
	s.WriteTimeout = cfg.WriteTimeout
	// Passwords never travel in clear text: AUTH is neither advertised nor
	// accepted before TLS.
	s.AllowInsecureAuth = false
	s.ErrorLog = errorLog{cfg.Log}
	return &Server{srv: s, implicitTLS: implicitTLS, tls: cfg.TLS, log: cfg.Log}
}

// Serve accepts connections on l until Shutdown. For an implicit-TLS
// server, l is a plain TCP listener; TLS is added here.
func (s *Server) Serve(l net.Listener) error {
	l = &closeOnce{Listener: l}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	if s.wrap != nil {
		l = s.wrap(l)
	}
	l = dataListener{Listener: l, dataLimit: 2*s.srv.MaxMessageBytes + maxCommandBytes, log: s.log}
	if s.implicitTLS {
		l = tls.NewListener(l, s.tls)
	}
	if err := s.srv.Serve(l); err != nil && err != smtp.ErrServerClosed && !s.isClosed() {
		return fmt.Errorf("smtp serve: %w", err)
	}
	return nil
}

// closeOnce is a listener that Shutdown and go-smtp may both close: the
// second Close does nothing and reports no error.
type closeOnce struct {
	net.Listener
	once sync.Once
}

func (l *closeOnce) Close() error {
	var err error
	l.once.Do(func() { err = l.Listener.Close() })
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting connections and waits for open sessions to end
// or ctx to be done. (go-smtp cannot force-close sessions after a graceful
// shutdown began; they end with the process.)
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.listeners {
		l.Close() // go-smtp closes it again: closeOnce
	}
	s.mu.Unlock()
	if err := s.srv.Shutdown(ctx); err != nil && err != smtp.ErrServerClosed {
		return fmt.Errorf("smtp shutdown: %w", err)
	}
	return nil
}

// errorLog adapts go-smtp's error log to slog. Its lines about one
// connection (a failed TLS handshake or read, a panic) name the remote
// address, a connAddr, so they get the connection's keys.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Printf(format string, v ...any) { l.write(fmt.Sprintf(format, v...), v) }
func (l errorLog) Println(v ...any)               { l.write(fmt.Sprintln(v...), v) }

func (l errorLog) write(msg string, v []any) {
	log := l.log
	for _, a := range v {
		if ca, ok := a.(connAddr); ok {
			log = log.With(connKeys(ca)...)
			break
		}
	}
	log.Error("smtp server", "err", strings.TrimSuffix(msg, "\n"))
}

// dataConn is every accepted connection, below TLS. While extending is
// set (DATA is being received), each read first moves the read deadline
// that far ahead, so an upload may take as long as it needs while data
// keeps arriving, but a sender that goes silent is dropped. go-smtp itself
// sets one deadline before the DATA command and never extends it, and its
// DATA reader fills a whole buffer per Read, so the deadline must move
// here, at each network read. (With BDAT, go-smtp reads the next BDAT
// commands while the message is being received, under this deadline too.)
//
// It also bounds the bytes read since the server last wrote: at most
// maxCommandBytes between commands, and dataLimit while a message is
// received. Below TLS the bytes are not readable, but every command gets
// a reply, so this bounds a command line without knowing where it ends.
// Past the bound, reads fail with smtp.ErrTooLongLine, which go-smtp
// answers "500 5.4.0 Too long line" before closing.
//
// It also holds the connection's log id (see connAddr).
type dataConn struct {
	net.Conn
	id        string       // conn in log lines
	extend    atomic.Int64 // a time.Duration; 0: off
	dataLimit int64
	unreplied atomic.Int64 // bytes read since the last write
}

func (c *dataConn) Read(p []byte) (int, error) {
	d := time.Duration(c.extend.Load())
	if d > 0 {
		if err := c.Conn.SetReadDeadline(time.Now().Add(d)); err != nil {
			return 0, fmt.Errorf("set data deadline: %w", err)
		}
	}
	limit := int64(maxCommandBytes)
	if d > 0 {
		limit = c.dataLimit
	}
	if c.unreplied.Load() >= limit {
		return 0, smtp.ErrTooLongLine
	}
	n, err := c.Conn.Read(p)
	c.unreplied.Add(int64(n))
	return n, err
}

func (c *dataConn) Write(p []byte) (int, error) {
	c.unreplied.Store(0)
	return c.Conn.Write(p)
}

// dataListener wraps accepted connections in dataConn.
type dataListener struct {
	net.Listener
	dataLimit int64
	log       *slog.Logger
}

func (l dataListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	dc := &dataConn{Conn: c, id: newConnID(), dataLimit: l.dataLimit}
	l.log.Debug("connect", connKeys(dc.RemoteAddr())...)
	return dc, nil
}

// extendReads makes every read on c (a connection of Server.Serve, maybe
// under TLS) move its read deadline d ahead, until called with d = 0.
func extendReads(c net.Conn, d time.Duration) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if dc, ok := c.(*dataConn); ok {
		dc.extend.Store(int64(d))
	}
}

// RemoteAddr returns the peer's address with the connection's log id.
func (c *dataConn) RemoteAddr() net.Addr { return connAddr{c.Conn.RemoteAddr(), c.id} }

// connAddr is the remote address of a dataConn, carrying its log id.
// The id travels with the address because the address is what reaches
// every place that logs: a session (go-smtp makes a new one after
// STARTTLS, and the id must stay the TCP connection's) and go-smtp's
// error log, which names only the address.
type connAddr struct {
	net.Addr
	id string
}

// newConnID returns a random connection id of 12 hex digits, as imapd's.
func newConnID() string {
	var b [6]byte
	rand.Read(b[:]) //nolint:errcheck // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// connKeys returns the log keys of every line about the connection from
// a: conn (when a is a connAddr) and remote.
func connKeys(a net.Addr) []any {
	if ca, ok := a.(connAddr); ok {
		return []any{"conn", ca.id, "remote", hostOf(ca)}
	}
	return []any{"remote", hostOf(a)}
}

// sessionLog returns base with the keys of every line about c's session,
// and the client's IP.
func sessionLog(base *slog.Logger, c *smtp.Conn) (*slog.Logger, string) {
	a := c.Conn().RemoteAddr()
	return base.With(connKeys(a)...), hostOf(a)
}

// errNestedMail answers MAIL inside a transaction (RFC 5321 §4.1.4: a
// transaction ends only with DATA's reply or RSET), as Postfix does. The
// transaction goes on: go-smtp keeps its recipients either way, so a
// session that started over here would get DATA for recipients it no
// longer had.
var errNestedMail = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Nested MAIL command"}

// errNoRecipients answers DATA when the session holds no recipient: a 250
// would acknowledge a message stored for no one. (go-smtp answers DATA
// without recipients itself; this keeps the two in step whatever it does.)
var errNoRecipients = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}

// maxRcptErrors is how many refused RCPT commands one session may have:
// at that many, the client is told 421 and disconnected, so probing for
// addresses or relaying costs it a new connection per 20 tries (as
// Postfix's smtpd_hard_error_limit, 20 errors).
const maxRcptErrors = 20

// tooManyErrors is the reply sent before closing such a session.
const tooManyErrors = "421 4.7.0 Too many errors; closing the connection\r\n"

// countRcptError counts a RCPT refusal (err != nil) in *n and returns err.
// At maxRcptErrors it writes 421 itself and closes the connection: go-smtp
// cannot end a session from a command handler, and its reply to this RCPT
// then goes nowhere. log is the session's.
func countRcptError(c *smtp.Conn, n *int, err error, log *slog.Logger) error {
	if err == nil {
		return nil
	}
	if *n++; *n < maxRcptErrors {
		return err
	}
	log.Warn("smtp: too many refused recipients, disconnecting", "refused", *n)
	conn := c.Conn()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // best effort
	io.WriteString(conn, tooManyErrors)                     //nolint:errcheck // best effort
	c.Close()
	return err
}

// rcptQuota answers RCPT for the local account acc (as addr) 452 4.2.2
// when it has a quota and cannot take size more bytes (0, undeclared,
// counts as 1): a full mailbox defers its own recipient, not the whole
// message, as Postfix with Dovecot's quota service does. The sender
// retries; the user may make room. Delivery checks again. log is the
// session's.
func rcptQuota(ctx context.Context, st *store.Store, log *slog.Logger, acc *store.Account, addr string, size int64) error {
	if acc.QuotaBytes <= 0 {
		return nil
	}
	full, err := st.QuotaFull(ctx, acc.ID, max(size, 1))
	if err != nil {
		log.Error("smtp rcpt quota", "err", err, "rcpt_account", acc.ID)
		return errTempFailure
	}
	if full {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: fmt.Sprintf("Mailbox full: <%s>", addr)}
	}
	return nil
}

// bareRecipient turns RCPT TO:<postmaster> without a domain, which every
// SMTP server must accept (RFC 5321 §4.5.1), into postmaster@ the served
// domain the host name belongs to (mail.example.org: example.org), else
// the first served domain; the store delivers postmaster@ any served
// domain. Any other address comes back unchanged.
func bareRecipient(ctx context.Context, cfg Config, to string) (string, error) {
	if !strings.EqualFold(strings.TrimSpace(to), "postmaster") {
		return to, nil
	}
	ds, err := cfg.Store.Domains(ctx)
	if err != nil {
		return "", err
	}
	host := strings.ToLower(strings.TrimSuffix(cfg.Hostname, "."))
	best := ""
	for _, d := range ds {
		if (host == d.Name || strings.HasSuffix(host, "."+d.Name)) && len(d.Name) > len(best) {
			best = d.Name
		}
	}
	if best == "" && len(ds) > 0 {
		best = ds[0].Name
	}
	if best == "" {
		return to, nil // no domain served: refused as unknown
	}
	return "postmaster@" + best, nil
}

// dataRun tracks a session's Data call under way. go-smtp runs a BDAT
// transfer's Data on a goroutine of its own and, when RSET (or a size
// limit) ends the transfer, closes its pipe and calls Reset without
// waiting for Data to return: Reset waits here, so that the two never
// touch the session at once. (The pipe is closed by then, so Data returns
// soon.)
type dataRun struct {
	mu   sync.Mutex
	done chan struct{} // of the last Data call; closed when it returned
}

// start records a Data call; the function it returns ends it.
func (d *dataRun) start() (end func()) {
	ch := make(chan struct{})
	d.mu.Lock()
	d.done = ch
	d.mu.Unlock()
	return func() { close(ch) }
}

// wait returns once no Data call is under way.
func (d *dataRun) wait() {
	d.mu.Lock()
	ch := d.done
	d.mu.Unlock()
	if ch != nil {
		<-ch
	}
}
