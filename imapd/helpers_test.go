package imapd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/internal/tlsconfig"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// env is one running Server on a test database with one account.
type env struct {
	t        testing.TB
	st       *store.Store
	srv      *Server
	addr     string // implicit TLS
	startTLS string // cleartext + STARTTLS
	user     string
	pass     string // app password
	acc      *store.Account
	appID    int64
}

type envOptions struct {
	maxMessageSize int64
	maxConns       int
	st             *store.Store  // share a database: a second account is not created
	maxPending     int           // the feed's cap on a view's pending entries (0: default)
	retry          time.Duration // the feed's pause before retrying a catch-up (0: default)
	tlsConfig      *tls.Config   // the server's (default: a fresh self-signed one)
	messageLimit   int           // MESSAGELIMIT (0: default)
}

func testTLS(t testing.TB) *tls.Config {
	t.Helper()
	cfg, err := tlsconfig.SelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("IMAPD_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	st := o.st
	if st == nil {
		st = storetest.New(t)
	}
	e := &env{t: t, st: st}
	if _, err := st.CreateDomain(ctx, "example.test", "sel", []byte("k")); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	e.user = "alice@example.test"
	acc, err := st.AccountByAddress(ctx, e.user)
	if errors.Is(err, store.ErrNotFound) {
		acc, err = st.CreateAccount(ctx, e.user, "main-password", store.AccountOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	e.acc = acc
	secret, ap, err := st.CreateAppPassword(ctx, acc.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	e.pass, e.appID = secret, ap.ID
	e.start(o)
	return e
}

// newAccount creates the account addr with an app password labelled
// label and returns it, the app password and the id of its INBOX.
func newAccount(tb testing.TB, st *store.Store, addr, password, label string) (*store.Account, string, int64) {
	tb.Helper()
	ctx := context.Background()
	acc, err := st.CreateAccount(ctx, addr, password, store.AccountOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	secret, _, err := st.CreateAppPassword(ctx, acc.ID, label)
	if err != nil {
		tb.Fatal(err)
	}
	inbox, err := st.MailboxByName(ctx, acc.ID, "INBOX")
	if err != nil {
		tb.Fatal(err)
	}
	return acc, secret, inbox.ID
}

func (e *env) start(o envOptions) {
	t := e.t
	var debug io.Writer
	if os.Getenv("IMAPD_TEST_WIRE") != "" {
		debug = testWriter{t}
	}
	tlsConfig := o.tlsConfig
	if tlsConfig == nil {
		tlsConfig = testTLS(t)
	}
	e.srv = New(e.st, Options{
		TLSConfig:          tlsConfig,
		MaxMessageSize:     o.maxMessageSize,
		MaxConnsPerAccount: o.maxConns,
		MessageLimit:       o.messageLimit,
		Logger:             testLogger(t),
		DebugWriter:        debug,
	})
	if o.maxPending > 0 {
		e.srv.feed.maxPending.Store(int64(o.maxPending))
	}
	if o.retry > 0 {
		e.srv.feed.retry.Store(int64(o.retry))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr, e.startTLS = ln.Addr().String(), ln2.Addr().String()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.srv.Serve(ln) }()
	go func() { defer wg.Done(); e.srv.ServeStartTLS(ln2) }()
	t.Cleanup(func() {
		e.srv.Close()
		wg.Wait()
	})
}

// dial connects over implicit TLS without logging in.
func (e *env) dial(h *imapclient.UnilateralDataHandler) *imapclient.Client {
	e.t.Helper()
	opts := &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}, UnilateralDataHandler: h}
	if os.Getenv("IMAPD_TEST_WIRE") != "" {
		opts.DebugWriter = testWriter{e.t}
	}
	c, err := imapclient.DialTLS(e.addr, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// login connects and logs in with the app password.
func (e *env) login(h *imapclient.UnilateralDataHandler) *imapclient.Client {
	e.t.Helper()
	c := e.dial(h)
	if err := c.Login(e.user, e.pass).Wait(); err != nil {
		e.t.Fatalf("login: %v", err)
	}
	return c
}

// createMailboxes creates the mailboxes through c.
func createMailboxes(t testing.TB, c *imapclient.Client, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := c.Create(n, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// expungeSet marks set \Deleted (silently) and expunges the selected
// mailbox through c.
func expungeSet(t testing.TB, c *imapclient.Client, set imap.NumSet) {
	t.Helper()
	if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
}

// idleIn logs in with h, selects mailbox and starts IDLE.
func (e *env) idleIn(h *imapclient.UnilateralDataHandler, mailbox string) *imapclient.Client {
	e.t.Helper()
	c := e.login(h)
	if _, err := c.Select(mailbox, nil).Wait(); err != nil {
		e.t.Fatal(err)
	}
	if _, err := c.Idle(); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// appendMsg appends a message through IMAP and returns its UID.
func appendMsg(t *testing.T, c *imapclient.Client, mailbox, msg string, flags ...imap.Flag) imap.UID {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: flags, Time: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)})
	if _, err := io.WriteString(cmd, msg); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return data.UID
}

// deliver stores a message directly through the store (as SMTP would).
func (e *env) deliver(mailbox, msg string) *store.AppendResult {
	e.t.Helper()
	ctx := context.Background()
	mb, err := e.st.MailboxByName(ctx, e.acc.ID, mailbox)
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.st.Append(ctx, e.acc.ID, mb.ID, strings.NewReader(msg), 0, nil, time.Time{})
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

func imapCode(err error) imap.ResponseCode {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}

func imapType(err error) imap.StatusResponseType {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie.Type
	}
	return ""
}

// messageFlags drops \Recent from a message's flags as a client saw them:
// \Recent is the session's (RFC 3501 §2.3.2), not the message's, and the
// tests that use this compare message flags with what was stored;
// TestRecent covers \Recent itself.
func messageFlags(fs []imap.Flag) []imap.Flag {
	if fs == nil {
		return nil
	}
	return slices.DeleteFunc(slices.Clone(fs), func(f imap.Flag) bool { return f == `\Recent` })
}

// withoutRecent is messageFlags for a response line as read off the wire.
func withoutRecent(line string) string {
	return strings.NewReplacer(`FLAGS (\Recent)`, `FLAGS ()`, `FLAGS (\Recent `, `FLAGS (`).Replace(line)
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

const simpleMsg = `From: Bob <bob@example.test>
To: Alice <alice@example.test>
Subject: Hello
Date: Mon, 6 May 2024 07:08:09 +0000
Message-ID: <hello@example.test>

Hi Alice.
`

// raw is a line-level IMAP connection for checks that need the exact wire
// form (or what imapclient cannot send).
type raw struct {
	t   testing.TB
	c   net.Conn
	r   *bufio.Reader
	tag int
}

// raw opens a TLS connection and logs in.
func (e *env) raw() *raw {
	e.t.Helper()
	r := e.dialRaw()
	r.cmd("LOGIN " + e.user + " " + e.pass)
	return r
}

// dialRaw opens a TLS connection and reads the greeting, without logging in.
func (e *env) dialRaw() *raw {
	e.t.Helper()
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	r := &raw{t: e.t, c: conn, r: bufio.NewReader(conn)}
	r.line() // greeting
	return r
}

func (r *raw) line() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := r.r.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// cmd sends a command and returns its untagged responses; it fails the
// test unless the tagged response is OK.
func (r *raw) cmd(c string) []string {
	r.t.Helper()
	untagged, status := r.try(c)
	if !strings.HasPrefix(status, "OK") {
		r.t.Fatalf("%s: %s", c, status)
	}
	return untagged
}

// try sends a command and returns its untagged responses and the tagged
// status line without the tag.
func (r *raw) try(c string) (untagged []string, status string) {
	r.t.Helper()
	r.tag++
	tag := fmt.Sprintf("r%d", r.tag)
	fmt.Fprintf(r.c, "%s %s\r\n", tag, c)
	for {
		l := r.line()
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return untagged, rest
		}
		untagged = append(untagged, l)
	}
}

// fetchLiteral runs a FETCH of one item that is answered with a literal
// ("* 1 FETCH (BINARY[2]<10> ~{20}") and returns the item's name and its
// data; it fails the test unless the FETCH succeeds.
func (r *raw) fetchLiteral(c string) (string, []byte) {
	r.t.Helper()
	r.tag++
	tag := fmt.Sprintf("r%d", r.tag)
	fmt.Fprintf(r.c, "%s %s\r\n", tag, c)
	l := r.line()
	i := strings.LastIndexByte(l, '{')
	j := strings.Index(l, "FETCH (")
	if i < 0 || j < 0 || !strings.HasSuffix(l, "}") {
		r.t.Fatalf("%s: %q, want a literal", c, l)
	}
	var n int
	fmt.Sscanf(l[i+1:], "%d", &n)
	name := strings.TrimSuffix(strings.TrimSpace(strings.TrimSuffix(l[j+len("FETCH ("):i], "~")), " ")
	data := make([]byte, n)
	if _, err := io.ReadFull(r.r, data); err != nil {
		r.t.Fatal(err)
	}
	if rest := r.line(); rest != ")" {
		r.t.Fatalf("%s: after the literal %q", c, rest)
	}
	if l := r.line(); !strings.HasPrefix(l, tag+" OK") {
		r.t.Fatalf("%s: %q", c, l)
	}
	return name, data
}

// waitLoginNotice waits until the server has heard (store.LoginChannel)
// that a login of the account may have changed: sessions check their
// login when told so, not at every command.
func (e *env) waitLoginNotice(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		e.srv.mu.Lock()
		told := false
		for s := range e.srv.sessions {
			if l := s.loginNow(); l != nil && l.AccountID == e.acc.ID && s.recheck.Load() {
				told = true
			}
		}
		e.srv.mu.Unlock()
		if told {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("the server did not hear of the login change")
}

// applySince is applyUpTo with the modseq the changes' read reported.
func (v *view) applySince(ch *store.Changes, base uint64, baseKnown bool) {
	v.applyUpTo(ch, modseqAfter(ch), base, baseKnown)
}

// modseqAfter is the mailbox's modseq after changes read from the
// database, 0 if the read did not say (a page of a resync).
func modseqAfter(ch *store.Changes) uint64 {
	if ch.Mailbox == nil {
		return 0
	}
	return ch.Mailbox.HighestModSeq
}
