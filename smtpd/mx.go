package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/headerscan"
	"github.com/mailstack/mailstack/internal/mailaddr"
	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/smtpd/inboundauth"
	"github.com/mailstack/mailstack/store"
)

// Defaults for MXOptions fields left zero.
const (
	DefaultMaxConnsPerIP = 20
	// DefaultDataTimeout is the longest pause allowed while a message is
	// being received (RFC 5321 §4.5.3.2.5-6 suggest 3 and 10 minutes).
	DefaultDataTimeout = 10 * time.Minute
	// DefaultCheckTimeout bounds the DNS work of SPF, DKIM and DMARC for
	// one message; a check that runs out reports temperror.
	DefaultCheckTimeout = 30 * time.Second
)

// Replies of the inbound MX.
var (
	errRelayDenied = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
	// errBadRecipient answers a RCPT address that is not local@domain.
	errBadRecipient = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
)

// MXOptions are the inbound MX's settings beyond Config.
type MXOptions struct {
	// Resolver answers the DNS queries of SPF, DKIM and DMARC; required
	// (net.DefaultResolver in production; tests inject an in-memory one,
	// and cannot reach the real DNS by forgetting to).
	Resolver inboundauth.Resolver
	// MaxConnsPerIP limits concurrent connections from one remote IP
	// address (default 20); more are greeted with 421 4.7.0 and closed.
	MaxConnsPerIP int
	// DataTimeout is the longest pause between reads of a message's data
	// (default 10 minutes). Config.ReadTimeout is the command timeout.
	DataTimeout time.Duration
	// CheckTimeout bounds the authentication checks of one message.
	CheckTimeout time.Duration
	// Rspamd, if set, scores every message's content after the checks
	// (see scan); nil: no content scanning.
	Rspamd *rspamd.Client
	// RspamdTempFail answers 451 when rspamd gives no verdict, instead of
	// delivering the message marked as not scanned.
	RspamdTempFail bool
}

// MX is the inbound mail exchanger backend (port 25): it accepts mail from
// anyone for the addresses served here and for nothing else, evaluates
// SPF, DKIM and DMARC, and delivers each message once to every recipient's
// INBOX or Junk in one transaction before the 250 reply. It offers
// STARTTLS (when Config.TLS is set) but never requires it, and offers no
// AUTH: submission is on 587/465.
type MX struct {
	cfg  Config
	opts MXOptions
	auth *inboundauth.Checker
	// perIP counts open connections per remote IP over all servers.
	perIP *ipLimiter
}

// NewMX returns the inbound MX backend. It panics if opts.Resolver is nil.
func NewMX(cfg Config, opts MXOptions) *MX {
	if opts.Resolver == nil {
		panic("smtpd: MXOptions.Resolver is required (net.DefaultResolver in production)")
	}
	if opts.MaxConnsPerIP <= 0 {
		opts.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if opts.DataTimeout <= 0 {
		opts.DataTimeout = DefaultDataTimeout
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	return &MX{cfg: cfg.withDefaults(), opts: opts, auth: inboundauth.New(opts.Resolver), perIP: newIPLimiter(opts.MaxConnsPerIP)}
}

// Server returns a port-25 listener for this backend. All servers of one MX
// share its per-IP connection counts (MXOptions.MaxConnsPerIP); each
// server has its own total (Config.MaxConnections).
func (m *MX) Server() *Server {
	s := newServer(m.cfg, m, false)
	s.wrap = limits(m.cfg.MaxConnections, m.perIP, m.cfg.Log)
	return s
}

// NewSession implements smtp.Backend.
func (m *MX) NewSession(c *smtp.Conn) (smtp.Session, error) {
	log, ip := sessionLog(m.cfg.Log, c)
	s := &mxSession{m: m, conn: c, ip: ip, log: log,
		localDomain: map[string]bool{}, mailbox: map[mailboxKey]int64{}}
	s.Reset()
	return s, nil
}

// mailboxKey names an account's INBOX or Junk in the session cache.
type mailboxKey struct {
	account int64
	junk    bool
}

// mxSession is one inbound connection.
type mxSession struct {
	data dataRun // the Data call under way (Reset waits for it)
	m    *MX
	conn *smtp.Conn
	ip   string
	log  *slog.Logger // with conn and remote
	// Per-session caches: a sending server often delivers several
	// messages to the same domain and people on one connection.
	localDomain map[string]bool
	mailbox     map[mailboxKey]int64

	// rcptErrors counts refused RCPT commands over the whole session.
	rcptErrors int

	// envelope of the current transaction
	inTx     bool // MAIL accepted, transaction not yet ended
	from     string
	size     int64          // declared with MAIL FROM SIZE=, or 0
	rcptAddr []string       // accepted recipients (for logs and Received)
	accounts []int64        // distinct recipient accounts, in RCPT order
	seen     map[int64]bool // accounts already in accounts

	// accountAddr holds the accounts' own addresses, in the same order.
	accountAddr []string
}

func (s *mxSession) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// Reset implements smtp.Session. go-smtp calls it after each DATA (and
// its reply), on RSET, and here at MAIL.
func (s *mxSession) Reset() {
	s.data.wait()
	extendReads(s.conn.Conn(), 0)
	s.inTx, s.from, s.size = false, "", 0
	s.rcptAddr, s.accounts, s.accountAddr = nil, nil, nil
	s.seen = map[int64]bool{}
}

// Logout implements smtp.Session.
func (s *mxSession) Logout() error { return nil }

// Mail implements smtp.Session. Any sender is accepted here, the null
// sender <> (bounces) included; authentication happens at DATA, once the
// recipients are known to be ours, so relay probes cost no DNS lookups.
func (s *mxSession) Mail(from string, opts *smtp.MailOptions) error {
	if s.inTx {
		return errNestedMail
	}
	s.Reset()
	s.inTx, s.from = true, from
	if opts != nil {
		s.size = opts.Size
	}
	return nil
}

// Rcpt implements smtp.Session: only existing local recipients, never
// relaying. go-smtp has already dropped any source route (@a,@b:u@d),
// which RFC 5321 Appendix C lets servers ignore, and unquoted the local
// part, so a quoted "u@other"@ours arrives as u@other@ours. After
// maxRcptErrors refusals the connection is closed.
func (s *mxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	return countRcptError(s.conn, &s.rcptErrors, s.rcpt(to), s.log)
}

func (s *mxSession) rcpt(to string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	to, err := bareRecipient(ctx, s.m.cfg, to)
	if err != nil {
		s.log.Error("mx rcpt", "err", err)
		return errTempFailure
	}
	parsed, err := mailaddr.Parse(to)
	if err != nil {
		return errBadRecipient
	}
	local, domain := strings.ToLower(parsed.Local), parsed.Domain
	// Routing syntax in the local part (%-hack, bang paths, a second @
	// from a quoted local part, route separators) could make some
	// downstream system forward the mail; no account here has such a name.
	if strings.ContainsAny(local, "@%!:,;\"\\ <>[]()") || strings.ContainsAny(domain, "[]:%! ") {
		return errRelayDenied
	}
	isLocal, known := s.localDomain[domain]
	if !known {
		var err error
		if isLocal, err = s.m.cfg.Store.IsLocalDomain(ctx, domain); err != nil {
			s.log.Error("mx rcpt", "err", err)
			return errTempFailure
		}
		s.localDomain[domain] = isLocal
	}
	if !isLocal {
		return errRelayDenied
	}
	addr := local + "@" + domain
	acc, err := s.m.cfg.Store.ResolveRecipient(ctx, addr)
	if errors.Is(err, store.ErrNotFound) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: fmt.Sprintf("No such user here: <%s>", addr)}
	}
	if err != nil {
		s.log.Error("mx rcpt", "err", err)
		return errTempFailure
	}
	if acc.Disabled {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 2, 1}, Message: fmt.Sprintf("Mailbox disabled: <%s>", addr)}
	}
	if !s.seen[acc.ID] {
		if err := rcptQuota(ctx, s.m.cfg.Store, s.log, acc, addr, s.size); err != nil {
			return err
		}
	}
	s.rcptAddr = append(s.rcptAddr, addr)
	if !s.seen[acc.ID] { // an alias of an account already listed: one copy
		s.seen[acc.ID] = true
		s.accounts = append(s.accounts, acc.ID)
		s.accountAddr = append(s.accountAddr, acc.Address)
	}
	return nil
}

// Data implements smtp.Session: spool, check, then deliver to every
// recipient in one transaction before go-smtp sends 250.
func (s *mxSession) Data(r io.Reader) error {
	defer s.data.start()()
	if len(s.accounts) == 0 {
		return errNoRecipients
	}
	// Each network read may wait DataTimeout, however long the message
	// takes in all (until Reset, after the reply).
	extendReads(s.conn.Conn(), s.m.opts.DataTimeout)
	in, err := readIncoming(r)
	if errors.Is(err, errMalformedHeader) {
		// Mail is never refused for being ugly: it is kept byte for byte,
		// and checked against the From fields a lenient reading finds (a
		// message with none fails DMARC).
		s.log.Info("mx: malformed header, read leniently", "err", err)
	} else if err != nil {
		return s.dataError("read header", err)
	}
	// Results claiming to be ours can only be forgeries (RFC 8601 §5).
	raw := stripAuthResults(in.raw, s.m.cfg.Hostname)
	if s.m.opts.Rspamd != nil {
		raw = stripFields(raw, func(name, _ string) bool { return isSpamField(name) })
	}
	msg, err := store.Spool(io.MultiReader(bytes.NewReader(raw), in.rest), s.m.cfg.MaxMessageSize)
	if err != nil {
		return s.dataError("spool", err)
	}
	defer msg.Close()

	// The clock for checks and delivery starts once the data is in.
	limit := s.m.opts.CheckTimeout + opTimeout
	if s.m.opts.Rspamd != nil {
		limit += s.m.opts.Rspamd.Timeout()
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	fromDomains := headerDomains(in, "From")
	cctx, ccancel := context.WithTimeout(ctx, s.m.opts.CheckTimeout)
	v, err := s.m.auth.Evaluate(cctx, inboundauth.Input{
		IP: net.ParseIP(s.ip), Helo: s.conn.Hostname(), MailFrom: s.from, FromDomains: fromDomains,
	}, msg.Reader())
	ccancel()
	if err != nil {
		s.log.Error("mx checks", "err", err)
		return errTempFailure
	}
	if v.Action == inboundauth.Deliver && !v.Aligned {
		// A message from outside claiming one of our domains as author
		// that no aligned SPF or DKIM vouches for is a forgery (our own
		// users submit on 587/465). Its domain's DMARC record decides
		// reject vs quarantine above; without one it still goes to Junk.
		for _, d := range fromDomains {
			if local, err := s.isLocalDomain(ctx, d); err != nil {
				return errTempFailure
			} else if local {
				v.Action, v.Why = inboundauth.Junk, "forged local sender"
			}
		}
	}
	log := s.log.With("helo", s.conn.Hostname(), "from", s.from, "rcpts", len(s.rcptAddr),
		"spf", v.SPF.Value, "dmarc", v.DMARC.Value, "action", v.Action.String(), "why", v.Why)
	switch v.Action {
	case inboundauth.Reject:
		log.Info("mx refused")
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message refused: " + v.Why}
	case inboundauth.TempFail:
		log.Info("mx deferred")
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: " + v.Why}
	}

	t := traceInfo{helo: s.conn.Hostname(), ip: s.ip, hostname: s.m.cfg.Hostname, id: newID(), at: time.Now()}
	if cs, ok := s.conn.TLSConnectionState(); ok {
		t.tls = fmt.Sprintf("using %s with cipher %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	}
	var rcpt string
	if len(s.rcptAddr) == 1 {
		rcpt = s.rcptAddr[0] // named only when alone, so copies reveal no one else (as Postfix)
	}
	pre := mxReceived(t, rcpt) + v.Header(s.m.cfg.Hostname)
	junk := v.Action == inboundauth.Junk
	if s.m.opts.Rspamd != nil {
		fields, spam, err := s.scan(ctx, log.With("id", t.id), t.id, pre, msg)
		if err != nil {
			return err
		}
		pre, junk = fields+pre, junk || spam
	}
	// The trace fields go in front of the spooled message and its index:
	// nothing is read, copied or indexed again (only hashed).
	if err := msg.Prepend([]byte(pre)); err != nil {
		return s.dataError("spool", err)
	}

	targets := make([]store.Target, 0, len(s.accounts))
	for _, acc := range s.accounts {
		mb, err := s.mailboxFor(ctx, acc, junk)
		if err != nil {
			log.Error("mx mailbox", "err", err, "rcpt_account", acc)
			return errTempFailure
		}
		targets = append(targets, store.Target{AccountID: acc, MailboxID: mb})
	}
	if _, err := s.m.cfg.Store.Deliver(ctx, msg, targets); err != nil {
		if errors.Is(err, store.ErrOverQuota) {
			// Temporary: the recipient may make room; the sender retries.
			// (Mostly caught per recipient at RCPT; a message larger than
			// declared, or a race, ends here.)
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "A recipient's mailbox is full"}
		}
		log.Error("mx deliver", "err", err)
		return errTempFailure
	}
	s.m.cfg.Metrics.MessageIn("mx")
	log.Info("mx delivered", "id", t.id, "size", msg.Size, "accounts", len(targets))
	if !junk {
		s.vacation(ctx, log, in)
	}
	return nil
}

func (s *mxSession) isLocalDomain(ctx context.Context, d string) (bool, error) {
	if v, ok := s.localDomain[d]; ok {
		return v, nil
	}
	v, err := s.m.cfg.Store.IsLocalDomain(ctx, d)
	if err != nil {
		s.log.Error("mx local domain", "err", err)
		return false, err
	}
	s.localDomain[d] = v
	return v, nil
}

// mailboxFor returns the account's INBOX, or its \Junk mailbox when junk
// is set (INBOX if the user deleted Junk: mail is filed, never dropped).
func (s *mxSession) mailboxFor(ctx context.Context, account int64, junk bool) (int64, error) {
	key := mailboxKey{account, junk}
	if id, ok := s.mailbox[key]; ok {
		return id, nil
	}
	var mb *store.Mailbox
	var err error
	if junk {
		mb, err = s.m.cfg.Store.MailboxBySpecialUse(ctx, account, `\Junk`)
		if errors.Is(err, store.ErrNotFound) {
			return s.mailboxFor(ctx, account, false)
		}
	} else {
		mb, err = s.m.cfg.Store.MailboxByName(ctx, account, "INBOX")
	}
	if err != nil {
		return 0, err
	}
	s.mailbox[key] = mb.ID
	return mb.ID, nil
}

// dataError maps a failure while reading the message to a reply.
func (s *mxSession) dataError(what string, err error) error { return dataError(s.log, "mx", what, err) }

// mxReceived returns the Received header (RFC 5321 §4.4) noting TLS as
// Postfix does: "with ESMTPS" and the version and cipher (RFC 3848).
func mxReceived(t traceInfo, rcpt string) string {
	var b strings.Builder
	with := "ESMTP"
	if t.tls != "" {
		with = "ESMTPS"
	}
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n", sanitize(t.helo), t.ip)
	if t.tls != "" {
		fmt.Fprintf(&b, "\t(%s)\r\n", t.tls)
	}
	fmt.Fprintf(&b, "\tby %s (mailstack) with %s id %s", t.hostname, with, t.id)
	if rcpt != "" {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitizeAddr(rcpt))
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", t.at.Format(time.RFC1123Z))
	return b.String()
}

// sanitizeAddr keeps an accepted recipient (already restricted by Rcpt)
// from breaking the header.
func sanitizeAddr(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '<' || r == '>' || r == ';' {
			return '_'
		}
		return r
	}, s)
}

// headerDomains returns the domains of the addresses in every key field.
// A field the address parser rejects is read leniently (the text after
// its last "@"), so a malformed From cannot dodge DMARC.
func headerDomains(in *incoming, key string) []string {
	var out []string
	if addrs, err := in.addresses(key); err == nil && len(in.header.Values(key)) == 1 {
		for _, a := range addrs {
			if i := strings.LastIndexByte(a.Address, '@'); i >= 0 {
				out = append(out, strings.ToLower(a.Address[i+1:]))
			}
		}
		return out
	}
	// Several From fields or one the parser rejects: take what a mail
	// client would most likely display, the domain after each last "@".
	for _, v := range in.header.Values(key) {
		i := strings.LastIndexByte(v, '@')
		if i < 0 {
			continue
		}
		d := v[i+1:]
		if j := strings.IndexAny(d, "> \t\r\n,;\"()"); j >= 0 {
			d = d[:j]
		}
		if d != "" {
			out = append(out, strings.ToLower(d))
		}
	}
	return out
}

// stripAuthResults removes from a raw header block every
// Authentication-Results field whose authserv-id is ours, keeping every
// other byte as received.
func stripAuthResults(raw []byte, authservID string) []byte {
	if !bytes.Contains(bytes.ToLower(raw), []byte("authentication-results:")) {
		return raw
	}
	return stripFields(raw, func(name, value string) bool {
		return strings.EqualFold(name, "Authentication-Results") && strings.EqualFold(authservIDOf(value), authservID)
	})
}

// stripFields removes from a raw header block every field drop says to
// (given its name and value), keeping every other byte as received.
func stripFields(raw []byte, drop func(name, value string) bool) []byte {
	var out []byte
	sc := headerscan.NewScanner(raw)
	for sc.Next() {
		if f := sc.Field(); !f.IsField() || !drop(string(f.Name), string(f.Value)) {
			out = append(out, f.Raw...)
		}
	}
	return append(out, sc.Rest()...)
}

// authservIDOf returns the authserv-id of an Authentication-Results value:
// its first token, comments removed.
func authservIDOf(v string) string {
	v, _, _ = strings.Cut(v, ";")
	f := strings.Fields(headerscan.StripComments(v))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
