package smtpd_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/imapd"
	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// env is a submission server pair (587 STARTTLS, 465 implicit TLS) on a
// fresh store with one domain and two accounts.
type env struct {
	st         *store.Store
	url        string
	domain     *store.Domain
	alice, bob *store.Account
	alicePass  string
	bobPass    string
	addr587    string
	addr465    string
	serverTLS  *tls.Config
	clientTLS  *tls.Config
	maxMsgSize int64
}

func newEnv(t testing.TB, maxSize int64) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{url: storetest.NewURL(t), maxMsgSize: maxSize}
	st, err := store.Open(ctx, e.url, store.Options{MaxConns: 24})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	e.st = st
	key, err := dkimkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if e.domain, err = st.CreateDomain(ctx, "example.org", "mailstack", key); err != nil {
		t.Fatal(err)
	}
	e.alice, e.alicePass = e.account(t, "alice@example.org")
	e.bob, e.bobPass = e.account(t, "bob@example.org")
	e.serverTLS, e.clientTLS = smtptest.TLS(t)
	sub := smtpd.NewSubmission(smtpd.Config{
		Store: st, Hostname: "mail.example.org", TLS: e.serverTLS, MaxMessageSize: maxSize, Log: smtptest.Logger(t),
	})
	e.addr587 = serve(t, sub.Server(false))
	e.addr465 = serve(t, sub.Server(true))
	return e
}

func (e *env) account(t testing.TB, addr string) (*store.Account, string) {
	t.Helper()
	ctx := context.Background()
	acc, err := e.st.CreateAccount(ctx, addr, "main-password-"+addr, store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pass, _, err := e.st.CreateAppPassword(ctx, acc.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	return acc, pass
}

func serve(t testing.TB, s *smtpd.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 0)
		defer cancel()
		s.Shutdown(ctx) //nolint:errcheck // sessions may still be open
		<-done
	})
	return l.Addr().String()
}

// dial connects to 465 (implicit TLS) or 587 (STARTTLS).
func (e *env) dial(t testing.TB, implicitTLS bool) *smtp.Client {
	t.Helper()
	var c *smtp.Client
	var err error
	if implicitTLS {
		c, err = smtp.DialTLS(e.addr465, e.clientTLS)
	} else {
		c, err = smtp.DialStartTLS(e.addr587, e.clientTLS)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// login dials and authenticates with AUTH PLAIN.
func (e *env) login(t testing.TB, implicitTLS bool, user, pass string) *smtp.Client {
	t.Helper()
	c := e.dial(t, implicitTLS)
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatalf("auth %s: %v", user, err)
	}
	return c
}

// send runs one mail transaction.
func send(c *smtp.Client, from string, to []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

// smtpCode returns the reply code of an SMTP error, or 0.
func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// inbox returns the raw contents of every message in the account's INBOX.
func (e *env) inbox(t testing.TB, acc *store.Account) []string {
	t.Helper()
	return storetest.Mailbox(t, e.st, acc.ID, "INBOX")
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// cmd sends one command line on a raw SMTP connection and returns the
// reply.
func cmd(t testing.TB, tp *textproto.Conn, line string) (int, string) {
	t.Helper()
	if err := tp.PrintfLine("%s", line); err != nil {
		t.Fatal(err)
	}
	code, msg, _ := tp.ReadResponse(0)
	return code, msg
}

// converse sends command lines alternating with the reply code each must
// get, failing the test at the first other reply.
func converse(t testing.TB, tp *textproto.Conn, steps ...any) {
	t.Helper()
	for i := 0; i+1 < len(steps); i += 2 {
		line, want := steps[i].(string), steps[i+1].(int)
		if code, msg := cmd(t, tp, line); code != want {
			t.Fatalf("%s: %d %s, want %d", line, code, msg, want)
		}
	}
}

// imapServer starts an IMAP server (implicit TLS) on e's store until the
// test ends and returns its address.
func (e *env) imapServer(t testing.TB) string {
	t.Helper()
	srv := imapd.New(e.st, imapd.Options{TLSConfig: e.serverTLS, Logger: smtptest.Logger(t)})
	t.Cleanup(func() { srv.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	return ln.Addr().String()
}
