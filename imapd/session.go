package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailstack/mailstack/store"
)

// session is one IMAP connection. imapserver calls its methods one command
// at a time from the connection's goroutine (IDLE polls from a second
// goroutine while the first waits for DONE); the feed touches only the
// selected view, which has its own lock.
type session struct {
	srv      *Server
	conn     *imapserver.Conn
	ctx      context.Context // ends when the connection ends
	cancel   context.CancelFunc
	remoteIP string

	login   *store.Login
	counted bool // holds one of the account's connection slots

	sel       *selected
	mailbox   *store.Mailbox // the selected mailbox as of SELECT
	searchRes []uint32       // saved SEARCH result (SEARCHRES "$")
	// pollChecked says that the command Poll follows checked the session
	// already (begin). Set only where imapserver always polls next: at a
	// successful return of Store, whose Poll follows at once.
	pollChecked bool
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

// errSessionEnded is returned after the session was ended with BYE.
var errSessionEnded = errors.New("session ended")

func (s *Server) newSession(conn *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	ctx, cancel := context.WithCancel(s.ctx)
	ip := ""
	if addr := conn.NetConn().RemoteAddr(); addr != nil {
		ip = addr.String()
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
	}
	return &session{srv: s, conn: conn, ctx: ctx, cancel: cancel, remoteIP: ip}, nil, nil
}

// Close implements imapserver.Session.
func (s *session) Close() error {
	s.unselect()
	if s.counted {
		s.srv.releaseConn(s.login.AccountID)
		s.counted = false
	}
	s.cancel()
	return nil
}

// Login implements imapserver.Session (LOGIN and AUTHENTICATE PLAIN).
func (s *session) Login(username, password string) error {
	login, err := s.srv.st.Authenticate(s.ctx, store.Credentials{
		Username: username, Password: password, Protocol: store.ProtocolIMAP, RemoteIP: s.remoteIP,
	})
	switch {
	case errors.Is(err, store.ErrAuthFailed):
		return imapserver.ErrAuthFailed
	case errors.Is(err, store.ErrThrottled):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "Too many failed login attempts; try again later"}
	case err != nil:
		s.srv.log.Error("login", "err", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "Temporary server failure; try again later"}
	}
	if !s.srv.acquireConn(login.AccountID) {
		s.srv.log.Info("login refused: too many connections", "account", login.Address, "remote", s.remoteIP)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
			Text: fmt.Sprintf("Too many connections for this account (maximum %d)", s.srv.opts.MaxConnsPerAccount)}
	}
	s.login, s.counted = login, true
	s.srv.log.Debug("login", "account", login.Address, "remote", s.remoteIP)
	return nil
}

// begin runs at the start of every command of an authenticated session: a
// revoked app password or disabled account ends the session here, so that
// revocation takes effect at the next command.
func (s *session) begin() error {
	if s.login == nil {
		return nil
	}
	err := s.srv.st.CheckSession(s.ctx, s.login)
	if errors.Is(err, store.ErrAccountGone) {
		s.srv.log.Info("session ended: credentials revoked", "account", s.login.Address, "remote", s.remoteIP)
		s.bye("Session ended: this app password was revoked or the account was disabled")
		return errSessionEnded
	}
	return err
}

func (s *session) bye(text string) {
	if err := s.conn.Bye(text); err != nil {
		s.srv.log.Debug("bye", "err", err)
	}
}

func (s *session) accountID() int64 { return s.login.AccountID }

// Namespace implements imapserver.SessionNamespace: one personal namespace.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: store.Delimiter}}}, nil
}

// AppendLimit implements imapserver.SessionAppendLimit.
func (s *session) AppendLimit() uint32 { return uint32(s.srv.opts.MaxMessageSize) }

// Poll implements imapserver.Session: it runs before the tagged OK of every
// command and is the only place unsolicited updates are written.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	// Checked again unless the command's method just did (pollChecked):
	// imapserver has no per-command hook, and NOOP/CHECK reach only Poll,
	// so this is the one place that sees every command. One indexed query.
	if s.pollChecked {
		s.pollChecked = false
	} else if err := s.begin(); err != nil {
		return err
	}
	return s.poll(w, s.sel, allowExpunge)
}

// poll writes the pending updates of sel. It takes the view as an argument
// because IDLE polls from its own goroutine, which imapserver may leave
// running briefly after the connection ended (and Close unselected).
func (s *session) poll(w *imapserver.UpdateWriter, sel *selected, allowExpunge bool) (err error) {
	if sel == nil {
		return nil
	}
	defer func() {
		// Never let a bug in the view machinery take the process down:
		// end only this session.
		if v := recover(); v != nil {
			s.srv.log.Error("panic while polling; ending session", "panic", v, "stack", string(debug.Stack()))
			s.bye(byeInternal)
			err = errSessionEnded
		}
	}()
	if allowExpunge && sel.needsResync() {
		// The view dropped its pending changes (too many): read them
		// again, told page by page. Only here, where EXPUNGE may be
		// reported.
		var werr error
		rerr := s.srv.feed.resyncView(s.ctx, sel, func(ups []update) error { werr = writeUpdates(w, ups); return werr })
		if werr != nil {
			return werr
		}
		if rerr != nil {
			// Without the resync the view cannot be made right: a new
			// session will be.
			if s.ctx.Err() == nil {
				s.srv.log.Error("resync of a view past its limit", "err", rerr)
				s.bye("Temporary server failure while catching up with changes; please reconnect")
			}
			return errSessionEnded
		}
	}
	if why, gone := sel.goneReason(); gone {
		// A deleted account ends its sessions with its own words.
		if err := s.begin(); errors.Is(err, errSessionEnded) {
			return err
		}
		s.bye(why)
		return errSessionEnded
	}
	return writeUpdates(w, sel.take(allowExpunge))
}

// Idle implements imapserver.Session.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if err := s.begin(); err != nil {
		return err
	}
	sel := s.sel
	if sel == nil {
		select {
		case <-stop:
		case <-s.ctx.Done():
		}
		return nil
	}
	defer s.srv.opts.Metrics.IdleStarted()()
	// IDLE is one long command: re-check the credentials now and then, so
	// that a revoked app password also ends sessions that only listen.
	recheck := time.NewTicker(s.srv.idleRecheck)
	defer recheck.Stop()
	for {
		if err := s.poll(w, sel, true); err != nil {
			return err
		}
		s.flushNow()
		select {
		case <-sel.wake:
		case <-recheck.C:
			if err := s.begin(); err != nil {
				return err
			}
		case <-stop:
			return nil
		case <-s.ctx.Done():
			return nil
		}
	}
}

// idleRecheck is how often an IDLE session's credentials are re-checked.
const idleRecheck = time.Minute

// Unselect implements imapserver.Session (UNSELECT, CLOSE, and SELECT of
// another mailbox).
func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	if s.sel != nil {
		s.srv.feed.close(s.sel)
		s.sel, s.mailbox, s.searchRes = nil, nil, nil
	}
}

// selectedView returns the view of the selected mailbox; imapserver only
// routes selected-state commands when there is one.
func (s *session) selectedView() (*selected, error) {
	if s.sel == nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "No mailbox selected"}
	}
	return s.sel, nil
}

func (s *session) readOnlyErr() error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
		Text: "Mailbox is read-only (EXAMINE)"}
}

// storeError maps store errors to IMAP responses. Unexpected errors are
// returned as they are: imapserver logs them and answers NO [SERVERBUG].
func storeError(err error, what string) error {
	no := func(code imap.ResponseCode, text string) error {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return no(imap.ResponseCodeNonExistent, what+": no such mailbox")
	case errors.Is(err, store.ErrExists):
		return no(imap.ResponseCodeAlreadyExists, what+": mailbox already exists")
	case errors.Is(err, store.ErrHasChildren):
		return no(imap.ResponseCodeHasChildren, what+": mailbox has children")
	case errors.Is(err, store.ErrNoSelect):
		return no(imap.ResponseCodeCannot, what+": mailbox cannot be selected")
	case errors.Is(err, store.ErrOverQuota):
		return no(imap.ResponseCodeOverQuota, what+": quota exceeded")
	case errors.Is(err, store.ErrTooBig):
		return no(imap.ResponseCodeTooBig, what+": message too big")
	case errors.Is(err, store.ErrInvalid):
		return no(imap.ResponseCodeCannot, what+": "+err.Error())
	case errors.Is(err, context.Canceled):
		return errSessionEnded
	}
	return err
}

func errorsIsInvalid(err error) bool { return errors.Is(err, store.ErrInvalid) }

// flushNow sends what the coalescing layer holds at once and lets its
// buffer go: after IDLE's updates nothing else follows soon, and waiting
// for coalesceDelay's timer costs a busy server far more than its 100 µs.
func (s *session) flushNow() {
	c := s.conn.NetConn()
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn() // STARTTLS: the layer is below TLS
	}
	if cc, ok := c.(*coalescingConn); ok {
		cc.flushIdle()
	}
}
