package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/mailaddr"
	"github.com/mailstack/mailstack/store"
)

// opTimeout bounds each store call made for one SMTP command.
const opTimeout = 30 * time.Second

// commitTimeout bounds signing and storing one received message, counted
// from when it has been read whole (its upload may take much longer).
const commitTimeout = 2 * time.Minute

// Replies used by submission sessions.
var (
	// errAuthFailed is the one reply to every failed login, whatever the
	// reason (wrong or revoked password, unknown user, the main password
	// where app passwords are required), so it reveals nothing; it names
	// app passwords because a client given the main password is the most
	// common mistake. (IMAP is to say the same.)
	errAuthFailed = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message: authFailedText}
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errSessionGone  = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message: "Login no longer valid: the app password was revoked or the account disabled"}
	errThrottled = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed logins; try again later"}
	errTempFailure = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Temporary server error; try again later"}
	errTooBig = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message exceeds the size limit"}
)

// authFailedText is the text of every failed SMTP login (IMAP says the
// same after its NO [AUTHENTICATIONFAILED]).
const authFailedText = "Authentication failed: log in with the full address and an app password, not the account's main password"

// Submission is the backend of the submission listeners (587 STARTTLS,
// 465 implicit TLS): authenticated users send mail as addresses they own.
// Local recipients get the message in their INBOX and remote ones have it
// DKIM-signed and queued, in one transaction, before the 250 reply. The
// sender's copy in Sent is the client's business (clients APPEND it).
type Submission struct {
	cfg Config
	// perIP counts open connections per remote IP over all servers.
	perIP *ipLimiter
}

// NewSubmission returns the submission backend.
func NewSubmission(cfg Config) *Submission {
	cfg = cfg.withDefaults()
	return &Submission{cfg: cfg, perIP: newIPLimiter(cfg.MaxConnsPerIP)}
}

// Server returns a listener for this backend: implicitTLS for port 465,
// STARTTLS (offered, and required before AUTH) for 587. All servers of one
// backend share the per-IP connection counts (Config.MaxConnsPerIP); each
// has its own total (Config.MaxConnections).
func (b *Submission) Server(implicitTLS bool) *Server {
	s := newServer(b.cfg, b, implicitTLS)
	s.wrap = limits(b.cfg.MaxConnections, b.perIP, b.cfg.Log)
	return s
}

// NewSession implements smtp.Backend.
func (b *Submission) NewSession(c *smtp.Conn) (smtp.Session, error) {
	log, ip := sessionLog(b.cfg.Log, c)
	s := &session{b: b, conn: c, ip: ip, log: log, owned: map[string]bool{}, localDomain: map[string]bool{}, inboxOf: map[int64]int64{}}
	s.Reset()
	return s, nil
}

// session is one submission connection.
type session struct {
	data  dataRun // the Data call under way (Reset waits for it)
	b     *Submission
	conn  *smtp.Conn
	ip    string
	log   *slog.Logger // with conn, remote and, after AUTH, account
	login *store.Login
	owned map[string]bool // addresses already found to be the account's
	// Per-session caches of answers that do not change in practice while a
	// client stays connected; they save a round trip per RCPT.
	localDomain map[string]bool // domain → served here
	inboxOf     map[int64]int64 // account → INBOX mailbox id

	// rcptErrors counts refused RCPT commands over the whole session.
	rcptErrors int

	// envelope of the current transaction
	inTx       bool // MAIL accepted, transaction not yet ended
	from       string
	size       int64 // declared with MAIL FROM SIZE=, or 0
	local      []store.Target
	localSeen  map[int64]bool
	remote     []string
	remoteSeen map[string]bool
}

var _ smtp.AuthSession = (*session)(nil)

func (s *session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// AuthMechanisms implements smtp.AuthSession. go-smtp advertises and
// accepts them only over TLS (AllowInsecureAuth is false).
func (s *session) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return strictServer{sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && !strings.EqualFold(identity, username) {
				return errAuthFailed // no acting as another user
			}
			return s.authenticate(username, password)
		})}, nil
	case sasl.Login:
		return newLoginServer(s.authenticate), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) authenticate(username, password string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	l, err := s.b.cfg.Store.Authenticate(ctx, store.Credentials{
		Username: username, Password: password, Protocol: store.ProtocolSMTP, RemoteIP: s.ip,
	})
	switch {
	case errors.Is(err, store.ErrAuthFailed):
		return errAuthFailed
	case errors.Is(err, store.ErrThrottled):
		return errThrottled
	case err != nil:
		s.log.Error("smtp auth", "err", err)
		return errTempFailure
	}
	s.login = l
	s.log = s.log.With("account", l.Address)
	s.log.Debug("login")
	return nil
}

// A login revoked (or its account disabled) during a session is refused
// by the first command after it that reads the store: RCPT of a local
// recipient, else DATA. Both check the login in the round trip they make
// anyway (store.ResolveRecipientFor, store.Submit), so nothing is delivered
// or queued for it, at no cost per message. MAIL needs no store read of
// its own (the sender's addresses are cached), so it checks only that the
// session authenticated. Postfix, for comparison, never re-checks a SASL
// login during a session.

// loginGone ends the session's login after the store found it revoked.
func (s *session) loginGone() error {
	// s.log keeps account: later lines are still that login's client.
	s.log.Info("smtp session ended: credentials revoked")
	s.login = nil
	return errSessionGone
}

// owns reports whether the logged-in account may send as addr, caching
// positive answers for the session (a session sends as few addresses).
func (s *session) owns(ctx context.Context, addr string) (bool, error) {
	a := mailaddr.Key(addr)
	if s.owned[a] {
		return true, nil
	}
	ok, err := s.b.cfg.Store.OwnsAddress(ctx, s.login.AccountID, a)
	if ok {
		s.owned[a] = true
	}
	return ok, err
}

func notYours(what, addr string) error {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: fmt.Sprintf("%s <%s> is not an address of your account; send as your own address or one of its aliases", what, addr)}
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	ctx, cancel := s.ctx()
	defer cancel()
	if s.login == nil {
		return errAuthRequired
	}
	if s.inTx {
		return errNestedMail
	}
	s.Reset()
	ok, err := s.owns(ctx, from)
	if err != nil {
		s.log.Error("smtp mail from", "err", err)
		return errTempFailure
	}
	if !ok {
		return notYours("Sender", from)
	}
	s.inTx, s.from = true, from
	if opts != nil {
		s.size = opts.Size
	}
	return nil
}

// Rcpt implements smtp.Session. Local recipients are checked now, so an
// unknown one (or a full mailbox) is refused here rather than bounced
// later. After maxRcptErrors refusals the connection is closed.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	return countRcptError(s.conn, &s.rcptErrors, s.rcpt(to), s.log)
}

func (s *session) rcpt(to string) error {
	if s.login == nil {
		return errAuthRequired
	}
	ctx, cancel := s.ctx()
	defer cancel()
	to, err := bareRecipient(ctx, s.b.cfg, to)
	if err != nil {
		s.log.Error("smtp rcpt", "err", err)
		return errTempFailure
	}
	parsed, err := mailaddr.Parse(to)
	if err != nil || !parsed.Plain() {
		return errBadRecipient
	}
	addr, domain := parsed.Key(), parsed.Domain
	local, known := s.localDomain[domain]
	if !known {
		if local, err = s.b.cfg.Store.IsLocalDomain(ctx, domain); err != nil {
			s.log.Error("smtp rcpt", "err", err)
			return errTempFailure
		}
		s.localDomain[domain] = local
	}
	if !local && strings.HasPrefix(string(domain), "[") {
		// An address literal names a host, not a domain: the queue would
		// try a name lookup of "[10.0.0.1]" for days, and delivering to
		// raw IPs would let a user aim the server at the home network.
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 2},
			Message: fmt.Sprintf("Address literals are not accepted as recipients: <%s>", to)}
	}
	if !local {
		// A remote local part is the remote server's business and may be
		// case-sensitive (RFC 5321 §2.4): only the domain is lowercased.
		// Duplicates are still found case-insensitively.
		if !s.remoteSeen[addr] {
			s.remoteSeen[addr] = true
			s.remote = append(s.remote, parsed.String())
		}
		return nil
	}
	acc, err := s.b.cfg.Store.ResolveRecipientFor(ctx, s.login, addr)
	if errors.Is(err, store.ErrAccountGone) {
		return s.loginGone()
	}
	if errors.Is(err, store.ErrNotFound) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: fmt.Sprintf("No such user here: <%s>", addr)}
	}
	if err != nil {
		s.log.Error("smtp rcpt", "err", err)
		return errTempFailure
	}
	if acc.Disabled {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 2, 1}, Message: fmt.Sprintf("Mailbox disabled: <%s>", addr)}
	}
	if s.localSeen[acc.ID] {
		return nil // an alias of an account already listed: one copy
	}
	if err := rcptQuota(ctx, s.b.cfg.Store, s.log, acc, addr, s.size); err != nil {
		return err
	}
	inbox, ok := s.inboxOf[acc.ID]
	if !ok {
		mb, err := s.b.cfg.Store.MailboxByName(ctx, acc.ID, "INBOX")
		if err != nil {
			s.log.Error("smtp rcpt inbox", "err", err, "rcpt_account", acc.ID)
			return errTempFailure
		}
		inbox = mb.ID
		s.inboxOf[acc.ID] = inbox
	}
	s.localSeen[acc.ID] = true
	s.local = append(s.local, store.Target{AccountID: acc.ID, MailboxID: inbox})
	return nil
}

// Data implements smtp.Session: it checks the From header, adds trace
// headers, signs for remote recipients and commits delivery and queueing
// in one transaction before go-smtp sends 250.
func (s *session) Data(r io.Reader) error {
	defer s.data.start()()
	if s.login == nil {
		return errAuthRequired
	}
	if len(s.local) == 0 && len(s.remote) == 0 {
		return errNoRecipients
	}
	// Each network read may wait ReadTimeout, however long the upload takes
	// (until Reset, after the reply).
	extendReads(s.conn.Conn(), s.b.cfg.ReadTimeout)
	in, err := readIncoming(r)
	if err != nil {
		return s.dataError("read header", err)
	}
	froms, err := s.checkAuthors(in)
	if err != nil {
		return err
	}
	// Blind copies stay blind: the Bcc recipients are in the envelope, and
	// the field must reach no one (as Postfix's cleanup removes it).
	in.removeFields("Bcc", "Resent-Bcc")
	t := traceInfo{helo: s.conn.Hostname(), ip: s.ip, hostname: s.b.cfg.Hostname, id: newID(), at: time.Now()}
	if cs, ok := s.conn.TLSConnectionState(); ok {
		t.tls = fmt.Sprintf("using %s with cipher %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	}
	pre := in.prefix(t)
	msg, err := store.Spool(io.MultiReader(strings.NewReader(pre), bytes.NewReader(in.raw), in.rest),
		s.b.cfg.MaxMessageSize+int64(len(pre)))
	if err != nil {
		return s.dataError("spool", err)
	}
	defer msg.Close()
	// The clock for signing and storing starts once the data is in.
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	var remote []store.Outbound
	if len(s.remote) > 0 {
		// Sign with the key of the From domain, the one DMARC aligns with.
		domain := mailaddr.DomainOf(froms[0].Address)
		d, err := s.b.cfg.Store.DomainByName(ctx, domain)
		if err != nil {
			s.log.Error("smtp dkim domain", "err", err, "domain", domain)
			return errTempFailure
		}
		sig, err := dkimSign(d, in.header, msg.Reader())
		if err != nil {
			s.log.Error("smtp dkim sign", "err", err, "domain", domain)
			return errTempFailure
		}
		// Local recipients get the signed copy too: one stored content.
		if err := msg.Prepend([]byte(sig)); err != nil {
			return s.dataError("spool signed", err)
		}
		for _, rcpt := range s.remote {
			remote = append(remote, store.Outbound{AccountID: s.login.AccountID, MailFrom: s.from, RcptTo: rcpt})
		}
	}
	if _, err := s.b.cfg.Store.Submit(ctx, s.login, msg, s.local, remote); err != nil {
		if errors.Is(err, store.ErrAccountGone) {
			return s.loginGone()
		}
		if errors.Is(err, store.ErrOverQuota) {
			return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "A recipient's mailbox is full"}
		}
		s.log.Error("smtp submit", "err", err)
		return errTempFailure
	}
	s.b.cfg.Metrics.MessageIn("submission")
	s.log.Debug("submitted", "id", t.id, "from", s.from,
		"local_rcpts", len(s.local), "remote_rcpts", len(s.remote), "size", msg.Size)
	return nil
}

// errHeaderFields is the reply to a header that breaks RFC 5322 §3.6's
// field counts or has an unparseable author field.
func errHeaderFields(msg string) error {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: msg}
}

// checkAuthors enforces exactly one From field and at most one Sender
// field of one mailbox (RFC 5322 §3.6), and that the account owns every
// address in them: receivers (and DKIM, which signs the last From field,
// RFC 6376 §5.4.2) must not see an author the account does not own. It
// returns the From addresses.
func (s *session) checkAuthors(in *incoming) ([]*mail.Address, error) {
	switch n := len(in.header.Values("From")); {
	case n == 0:
		return nil, errHeaderFields("The message needs a From header")
	case n > 1:
		return nil, errHeaderFields("The message has several From fields; it must have exactly one")
	}
	froms, err := in.addresses("From")
	if err != nil || len(froms) == 0 {
		return nil, errHeaderFields("The message needs a valid From header")
	}
	authors := froms
	switch n := len(in.header.Values("Sender")); {
	case n > 1:
		return nil, errHeaderFields("The message has several Sender fields; it may have at most one")
	case n == 1:
		senders, err := in.addresses("Sender")
		if err != nil || len(senders) != 1 {
			return nil, errHeaderFields("The Sender field must hold exactly one valid address")
		}
		authors = append(authors, senders...)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	for _, a := range authors {
		ok, err := s.owns(ctx, a.Address)
		if err != nil {
			s.log.Error("smtp from header", "err", err)
			return nil, errTempFailure
		}
		if !ok {
			return nil, notYours("From header address", a.Address)
		}
	}
	return froms, nil
}

// dataError maps a failure while reading the message to a reply.
func (s *session) dataError(what string, err error) error { return dataError(s.log, "smtp", what, err) }

// dataError maps a failure while reading a message to a reply for both
// backends; one it does not expect is logged as a "<kind> data" failure.
// (The MX never passes errMalformedHeader: it keeps such mail.)
func dataError(log *slog.Logger, kind, what string, err error) error {
	var smtpErr *smtp.SMTPError
	switch {
	case errors.Is(err, store.ErrTooBig), errors.As(err, &smtpErr) && smtpErr.Code == smtp.ErrDataTooLarge.Code:
		return errTooBig
	case errors.Is(err, errHeaderTooBig):
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Header block too large"}
	case errors.As(err, &smtpErr):
		return smtpErr
	case errors.Is(err, errMalformedHeader):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Malformed message header"}
	case errors.Is(err, smtp.ErrTooLongLine):
		// More than twice the size limit without a reply (dataConn).
		return errTooBig
	case errors.Is(err, smtp.ErrDataReset):
		// The client ended a BDAT transfer with RSET or QUIT (RFC 3030
		// §2), as it may; no one reads this reply.
		log.Debug(kind+" data aborted by the client", "step", what)
		return err
	}
	log.Warn(kind+" data", "step", what, "err", err)
	return errTempFailure
}

// Reset implements smtp.Session. go-smtp calls it after each DATA (and
// its reply), on RSET, and here at MAIL.
func (s *session) Reset() {
	s.data.wait()
	extendReads(s.conn.Conn(), 0)
	s.inTx, s.from, s.size = false, "", 0
	s.local, s.remote = nil, nil
	s.localSeen, s.remoteSeen = map[int64]bool{}, map[string]bool{}
}

// Logout implements smtp.Session.
func (s *session) Logout() error { return nil }
