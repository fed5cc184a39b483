package imapd

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/store"
)

// session is one IMAP connection: it reads a command, runs it and answers,
// one command at a time, on its own goroutine. IDLE reads DONE on a second
// goroutine while the first writes updates; nothing else writes. The feed
// touches only the selected view, which has its own lock.
type session struct {
	srv    *Server
	nc     net.Conn // the TCP connection
	conn   net.Conn // what is read and written: nc, or TLS over it
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	id     string // connection id in every log line
	remote string // remote IP

	br  *bufio.Reader
	dec *imapwire.Decoder
	enc *imapwire.Encoder

	tls  bool // conn is TLS (implicit, or after STARTTLS)
	rev2 bool // ENABLE IMAP4rev2
	utf8 bool // ENABLE UTF8=ACCEPT (or IMAP4rev2)
	// condstore: a CONDSTORE-enabling command ran (RFC 7162 §3.1);
	// qresync: ENABLE QRESYNC (which implies condstore).
	condstore, qresync bool
	// uidonly: ENABLE UIDONLY (RFC 9586, uidonly.go).
	uidonly bool
	client  string
	// compressed says COMPRESS=DEFLATE is on (compress.go).
	compressed bool

	login   *store.Login
	counted bool // holds one of the account's connection slots
	// loginMu guards login against Server.loginsChanged, which reads it
	// from the feed's goroutine; the session's own goroutine writes it.
	loginMu sync.Mutex
	// recheck says that a notification (or the lack of them) may have
	// made the login invalid: begin checks it in the database.
	recheck atomic.Bool
	// wake tells an IDLE session to check its login now.
	wake chan struct{}

	sel       *view
	mailbox   *store.Mailbox // the selected mailbox as of SELECT
	searchRes []uint32       // saved SEARCH result (SEARCHRES "$")
	// toldRecent is the RECENT count last sent.
	toldRecent int
	// checked says that this command has checked the session already
	// (begin ran): the poll before its tagged response need not again.
	checked bool
}

// Timeouts. RFC 9051 §5.4: an authenticated client may stay idle 30
// minutes; before login there is less to wait for.
const (
	preAuthTimeout = 2 * time.Minute
	authTimeout    = 30 * time.Minute
	writeTimeout   = time.Minute
	tlsTimeout     = 30 * time.Second
)

// errSessionEnded is returned after the session was ended with BYE.
var errSessionEnded = errors.New("session ended")

// errLogout ends the command loop after LOGOUT's responses.
var errLogout = errors.New("logout")

func newConnID() string {
	var b [6]byte
	rand.Read(b[:]) //nolint:errcheck // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// newSession registers a connection; nil if the server is closing.
func (s *Server) newSession(nc net.Conn, implicitTLS bool) *session {
	ctx, cancel := context.WithCancel(s.ctx)
	ip := ""
	if addr := nc.RemoteAddr(); addr != nil {
		ip = addr.String()
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
	}
	id := newConnID()
	sess := &session{
		srv: s, nc: nc, conn: nc, ctx: ctx, cancel: cancel, id: id, remote: ip,
		log:  s.log.With("conn", id, "remote", ip),
		wake: make(chan struct{}, 1),
	}
	if implicitTLS {
		sess.conn, sess.tls = tls.Server(nc, s.opts.TLSConfig), true
	}
	sess.setTransport(sess.conn)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		cancel()
		return nil
	}
	s.sessions[sess] = struct{}{}
	s.serving.Add(1)
	return sess
}

// setTransport makes c what the session reads and writes.
func (s *session) setTransport(c net.Conn) {
	s.conn = c
	var r io.Reader = c
	var w io.Writer = deadlineWriter{c}
	if d := s.srv.opts.DebugWriter; d != nil {
		r = io.TeeReader(r, d)
		w = io.MultiWriter(d, w)
	}
	if s.br == nil {
		s.br = bufio.NewReaderSize(r, 16<<10)
		s.dec = imapwire.NewDecoder(s.br, imapwire.DefaultLimits)
		s.dec.Continue = func() error {
			s.enc.Raw("+ Ready for literal data").CRLF()
			return s.enc.Flush()
		}
		s.enc = imapwire.NewEncoder(w)
		s.enc.Buffers = &s.srv.buffers
		return
	}
	s.br.Reset(r)
	s.enc.Reset(w)
}

// deadlineWriter gives every write to the connection a deadline: a client
// that stops reading cannot hold its session forever.
type deadlineWriter struct{ c net.Conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(writeTimeout)) //nolint:errcheck // a failed write reports it
	return w.c.Write(p)
}

// serve runs the session until the client logs out or goes away.
func (s *session) serve() {
	defer s.close()
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in session; closing it", "panic", v, "stack", string(debug.Stack()))
			s.bye(byeInternal)
		}
	}()
	if s.tls {
		s.conn.SetDeadline(time.Now().Add(tlsTimeout)) //nolint:errcheck // the handshake fails
		if err := s.conn.(*tls.Conn).HandshakeContext(s.ctx); err != nil {
			s.log.Debug("TLS handshake", "err", err)
			return
		}
		s.conn.SetDeadline(time.Time{}) //nolint:errcheck
	}
	s.enc.Status("*", "OK", "CAPABILITY "+s.capabilities(), "mailstack ready.")
	if s.enc.Flush() != nil {
		return
	}
	for {
		err := s.command()
		if err == nil {
			continue
		}
		if errors.Is(err, errLogout) || errors.Is(err, errSessionEnded) {
			s.enc.Flush() //nolint:errcheck // closing anyway
			return
		}
		var we *imapwire.Error
		if errors.As(err, &we) {
			s.bye(we.Text)
			return
		}
		if s.ctx.Err() != nil && s.srv.ctx.Err() != nil {
			s.bye("Server shutting down; please reconnect")
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.bye("Autologout; idle for too long")
			return
		}
		if !isDisconnect(err) {
			s.log.Debug("connection ended", "err", err)
		}
		return
	}
}

func isDisconnect(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne) && ne.Timeout()
}

// close ends the session: connection slot, view, socket.
func (s *session) close() {
	s.unselect()
	if s.counted {
		s.srv.releaseConn(s.login.AccountID)
		s.counted = false
	}
	s.cancel()
	s.conn.Close()
	s.srv.mu.Lock()
	delete(s.srv.sessions, s)
	s.srv.mu.Unlock()
	s.srv.serving.Done()
}

// bye writes an untagged BYE and flushes it.
func (s *session) bye(text string) {
	s.enc.Status("*", "BYE", "", text)
	s.enc.Flush() //nolint:errcheck // the connection ends anyway
}

func (s *session) capabilities() string {
	switch {
	case s.login != nil:
		return s.srv.caps.authenticated
	case s.tls:
		return s.srv.caps.tls
	}
	return s.srv.caps.plain
}

// cmd is one command being run.
type cmd struct {
	tag  string
	name string // upper case, without "UID "
	uid  bool   // UID FETCH, UID SEARCH...
	d    *imapwire.Decoder
	// okCode and okText replace the tagged OK's default.
	okCode, okText string
	// okModSeq puts the HIGHESTMODSEQ the client has been told, once the
	// poll before the tagged OK is done, in its code (EXPUNGE under
	// QRESYNC: VANISHED carries no modseq; Dovecot does the same).
	okModSeq bool
}

// end reads the end of the command line: every handler calls it once its
// arguments are read and before it changes anything.
func (c *cmd) end() error { return c.d.CRLF() }

// respError is a tagged NO or BAD.
type respError struct {
	typ  string // "NO" or "BAD"
	code string
	text string
}

func (e *respError) Error() string { return e.typ + " " + e.text }

func no(code, text string) error { return &respError{typ: "NO", code: code, text: text} }
func bad(text string) error      { return &respError{typ: "BAD", text: text} }
func badCode(code, text string) error {
	return &respError{typ: "BAD", code: code, text: text}
}

// command reads and runs one command.
func (s *session) command() error {
	timeout := preAuthTimeout
	if s.login != nil {
		timeout = authTimeout
	}
	if s.dec.Buffered() == 0 {
		// Waiting for the client: send what is buffered and let the
		// buffer go (thousands of idle sessions keep none).
		if err := s.enc.Release(); err != nil {
			return err
		}
	}
	s.conn.SetReadDeadline(time.Now().Add(timeout)) //nolint:errcheck // the read fails
	s.dec.Begin()
	c := &cmd{d: s.dec}
	tag, err := s.dec.Tag()
	if err != nil {
		return s.finish(c, err)
	}
	c.tag = tag
	if err := s.dec.SP(); err != nil {
		return s.finish(c, err)
	}
	name, err := s.dec.Atom()
	if err != nil {
		return s.finish(c, err)
	}
	c.name = strings.ToUpper(name)
	if c.name == "UID" {
		if err := s.dec.SP(); err != nil {
			return s.finish(c, err)
		}
		if name, err = s.dec.Atom(); err != nil {
			return s.finish(c, err)
		}
		c.name, c.uid = strings.ToUpper(name), true
		if !uidCommands[c.name] {
			return s.finish(c, bad("Unknown UID command "+truncate(name)))
		}
	}
	def, ok := commands[c.name]
	if !ok {
		return s.finish(c, bad("Unknown command "+truncate(name)))
	}
	if err := s.allowed(def.state); err != nil {
		return s.finish(c, err)
	}
	if err := s.uidRequired(c); err != nil {
		return s.finish(c, err)
	}
	s.checked = false
	if def.state == authenticated || def.state == selectedState {
		// Every command of a logged-in session checks it first, so that
		// none acts for a revoked login (see begin).
		if err := s.begin(); err != nil {
			return s.finish(c, err)
		}
	}
	return s.finish(c, s.run(def, c))
}

// run runs a handler, turning a panic into an error for that command.
func (s *session) run(def command, c *cmd) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in command", "command", c.name, "panic", v, "stack", string(debug.Stack()))
			err = errPanic
		}
	}()
	return def.run(s, c)
}

var errPanic = errors.New("internal error")

func truncate(s string) string {
	if len(s) > 30 {
		// Cut before a character, not inside one.
		n := 30
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return s[:n] + "..."
	}
	return s
}

// allowed checks that the command may run in the session's state.
func (s *session) allowed(st state) error {
	switch st {
	case anyState:
	case notAuthenticated:
		if s.login != nil {
			return bad("Already logged in")
		}
	case authenticated:
		if s.login == nil {
			return bad("Log in first")
		}
	case selectedState:
		if s.login == nil {
			return bad("Log in first")
		}
		if s.sel == nil {
			return bad("No mailbox selected")
		}
	}
	return nil
}

// finish answers a command: updates, then the tagged response.
func (s *session) finish(c *cmd, err error) error {
	tag := c.tag
	if tag == "" {
		tag = "*"
	}
	var we *imapwire.Error
	var re *respError
	var pv *protocolViolation
	switch {
	case err == nil:
		if err := s.pollAfter(c); err != nil {
			return err
		}
		text := c.okText
		if text == "" {
			text = c.name + " completed"
			if c.uid {
				text = "UID " + text
			}
		}
		if c.okModSeq && c.okCode == "" && s.sel != nil {
			c.okCode = "HIGHESTMODSEQ " + strconv.FormatUint(s.sel.toldModSeq(), 10)
		}
		s.enc.Status(tag, "OK", c.okCode, text)
	case errors.As(err, &we):
		if we.Fatal {
			// The rest of the input cannot be told from commands: answer,
			// then BYE and close (serve).
			if c.tag != "" {
				s.enc.Status(c.tag, "BAD", cmp.Or(we.Code, "CLIENTBUG"), we.Text)
			}
			return err
		}
		if !we.Ended && !s.dec.Ended() {
			if serr := s.skip(c); serr != nil {
				return serr
			}
		}
		code := we.Code
		if code == "" {
			code = "CLIENTBUG"
		}
		s.enc.Status(tag, "BAD", code, we.Text)
	case errors.As(err, &re):
		// A command refused before its end (NO as well as BAD) has the
		// rest of its input dropped, or that would run as commands.
		if !s.dec.Ended() {
			if serr := s.skip(c); serr != nil {
				return serr
			}
		}
		if re.typ == "NO" {
			if err := s.pollAfter(c); err != nil {
				return err
			}
		}
		s.enc.Status(tag, re.typ, re.code, re.text)
	case errors.Is(err, errAnswered):
	case errors.As(err, &pv):
		s.bye(pv.text)
		return errSessionEnded
	case errors.Is(err, errLogout), errors.Is(err, errSessionEnded):
		return err
	case isDisconnect(err) || s.ctx.Err() != nil:
		return err
	default:
		s.log.Error("command failed", "command", c.name, "err", err)
		if !s.dec.Ended() {
			if serr := s.skip(c); serr != nil {
				return serr
			}
		}
		s.enc.Status(tag, "NO", "SERVERBUG", "Internal server error; please try again")
	}
	return s.enc.Err()
}

// skip drops the rest of a refused command; where that fails for good (a
// line or literal too long to drop), the command is answered before the
// connection ends.
func (s *session) skip(c *cmd) error {
	err := s.dec.Skip()
	var we *imapwire.Error
	if errors.As(err, &we) && we.Fatal && c.tag != "" {
		s.enc.Status(c.tag, "BAD", cmp.Or(we.Code, "CLIENTBUG"), we.Text)
	}
	return err
}

// pollAfter writes the pending updates before a command's tagged response,
// unless the command wrote them itself or the session was not checked.
func (s *session) pollAfter(c *cmd) error {
	if s.sel == nil || s.login == nil {
		return nil
	}
	allowExpunge := c.uid || !noExpungeCommands[c.name]
	if !s.checked {
		if err := s.begin(); err != nil {
			return err
		}
	}
	return s.poll(s.sel, allowExpunge)
}

// noExpungeCommands may not be answered with EXPUNGE (RFC 9051 §7.5.1):
// the client may be relying on the sequence numbers of its command. Their
// UID forms may.
var noExpungeCommands = map[string]bool{"FETCH": true, "STORE": true, "SEARCH": true}

// loginNow returns the session's login, from any goroutine.
func (s *session) loginNow() *store.Login {
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	return s.login
}

// setLogin records a successful login.
func (s *session) setLogin(l *store.Login) {
	s.loginMu.Lock()
	s.login = l
	s.loginMu.Unlock()
	// Any revocation committed between the check of the credentials and
	// this registration would have found no session to tell.
	s.recheck.Store(true)
}

// begin runs at the start of every command of an authenticated session: a
// revoked app password or disabled account ends the session here. The
// database is asked only when a notification on store.LoginChannel said
// the login may have changed (or notifications may have been lost), so
// revocation takes effect as soon as the server hears of it, at the
// latest at the session's next command after that, without a round trip
// for every command.
func (s *session) begin() error {
	if s.login == nil {
		return nil
	}
	s.checked = true
	if !s.recheck.Swap(false) {
		return nil
	}
	err := s.srv.st.CheckSession(s.ctx, s.login)
	if err != nil && !errors.Is(err, store.ErrAccountGone) {
		s.recheck.Store(true) // not known: ask again next time
	}
	if errors.Is(err, store.ErrAccountGone) {
		s.log.Info("session ended: credentials revoked", "account", s.login.Address)
		s.bye("Session ended: this app password was revoked or the account was disabled")
		return errSessionEnded
	}
	return err
}

func (s *session) accountID() int64 { return s.login.AccountID }

// storeError maps store errors to IMAP responses. Unexpected errors are
// returned as they are: the command is answered NO [SERVERBUG] and logged.
func storeError(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return no("NONEXISTENT", what+": no such mailbox")
	case errors.Is(err, store.ErrExists):
		return no("ALREADYEXISTS", what+": mailbox already exists")
	case errors.Is(err, store.ErrHasChildren):
		return no("HASCHILDREN", what+": mailbox has children")
	case errors.Is(err, store.ErrNoSelect):
		return no("CANNOT", what+": mailbox cannot be selected")
	case errors.Is(err, store.ErrOverQuota):
		return no("OVERQUOTA", what+": quota exceeded")
	case errors.Is(err, store.ErrTooBig):
		return no("TOOBIG", what+": message too big")
	case errors.Is(err, store.ErrInvalid):
		return no("CANNOT", what+": "+err.Error())
	case errors.Is(err, context.Canceled):
		return errSessionEnded
	}
	return fmt.Errorf("%s: %w", what, err)
}

func errorsIsInvalid(err error) bool { return errors.Is(err, store.ErrInvalid) }
