package webui_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/imapd"
	"github.com/mailstack/mailstack/internal/tlsconfig"
	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/smtpd/outbound"
	"github.com/mailstack/mailstack/store"
)

// EnvScreenshots names the directory the browser test writes its
// screenshots to (default: mailstack-screenshots in the temporary
// directory).
const EnvScreenshots = "MAILSTACK_SCREENSHOTS"

// viewports are the widths every page is photographed at.
var viewports = []struct {
	name          string
	width, height int64
	scale         float64
	mobile        bool
}{
	{"phone", 390, 844, 2, true},
	{"desktop", 1280, 900, 1, false},
}

// startIMAP serves IMAP over implicit TLS on st at a 127.0.0.1 port.
func startIMAP(t *testing.T, st *store.Store) string {
	t.Helper()
	cfg, err := tlsconfig.SelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := imapd.New(st, imapd.Options{TLSConfig: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return ln.Addr().String()
}

// received is a message remote.example's MX received.
type received struct{ from, to, data string }

// remoteMX is remote.example's MX: it keeps what it is sent.
type remoteMX struct{ got chan received }

func (m remoteMX) NewSession(*smtp.Conn) (smtp.Session, error) { return &remoteSession{mx: m}, nil }

type remoteSession struct {
	mx       remoteMX
	from, to string
}

func (s *remoteSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *remoteSession) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = to; return nil }
func (s *remoteSession) Reset()                                      {}
func (s *remoteSession) Logout() error                               { return nil }
func (s *remoteSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err == nil {
		s.mx.got <- received{s.from, s.to, string(b)}
	}
	return err
}

// remoteResolver sends remote.example's mail to 127.0.0.1.
type remoteResolver struct{}

func (remoteResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if strings.TrimSuffix(name, ".") == "remote.example" {
		return []*net.MX{{Host: "mx.remote.example.", Pref: 10}}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (remoteResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	if strings.TrimSuffix(host, ".") == "mx.remote.example" {
		return []net.IPAddr{{IP: net.IPv4(127, 0, 0, 1)}}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// deliverQueued runs the outbound worker until remote.example's MX (on a
// 127.0.0.1 port) has received one message, and returns it.
func deliverQueued(t *testing.T, st *store.Store) received {
	t.Helper()
	mx := remoteMX{got: make(chan received, 4)}
	srv := smtp.NewServer(mx)
	srv.Domain = "mx.remote.example"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	defer srv.Close()
	w := outbound.New(outbound.Config{Store: st, Hostname: "mail.example.org", Resolver: remoteResolver{},
		Port: ln.Addr().(*net.TCPAddr).Port, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case m := <-mx.got:
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("remote.example's MX received nothing in 15 s")
	}
	return received{}
}

// txtResolver answers the MX's DNS queries from a map of TXT records.
type txtResolver map[string][]string

func (r txtResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if txt, ok := r[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return txt, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r txtResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r txtResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (r txtResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

// startMX serves the inbound MX on st at a 127.0.0.1 port; remote.example
// passes SPF from there.
func startMX(t *testing.T, st *store.Store) string {
	t.Helper()
	mx := smtpd.NewMX(smtpd.Config{Store: st, Hostname: "mx.example.org", Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		smtpd.MXOptions{Resolver: txtResolver{"remote.example": {"v=spf1 ip4:127.0.0.1 -all"}}})
	srv := mx.Server()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ln.Addr().String()
}

// browser is a headless Chromium tab on the account web.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
}

func newBrowser(t *testing.T, base string) *browser {
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (deploy/install-deps installs Debian's chromium): %v", err)
	}
	shots := os.Getenv(EnvScreenshots)
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "mailstack-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		// The test server's certificate is self-signed.
		chromedp.IgnoreCertErrors, chromedp.WindowSize(1280, 900), chromedp.Flag("lang", "en-US"))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	return &browser{t: t, ctx: ctx, base: base, shots: shots}
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) text(id string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// open loads a page and waits for an element of it.
func (b *browser) open(path, waitFor string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.ID(waitFor)))
}

// submit fills fields (id → value), clicks a button and waits for an
// element of the page that follows.
func (b *browser) submit(fields [][2]string, button, waitFor string) {
	b.t.Helper()
	var steps []chromedp.Action[chromedp.Void]
	for _, f := range fields {
		steps = append(steps, chromedp.SendKeys(chromedp.ID(f[0]), f[1]))
	}
	// The page before the click may have waitFor too: mark its window and
	// wait for the next page's, which the browser starts unmarked.
	mark := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`window.__beforeSubmit = true`)(ctx, t)
		return err
	})
	// While the browser navigates, evaluating fails: try again.
	newPage := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		deadline := time.Now().Add(15 * time.Second)
		for {
			fresh, err := chromedp.Evaluate[bool](`window.__beforeSubmit === undefined`)(ctx, t)
			if err == nil && fresh {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no new page after the click (%v)", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	steps = append(steps, mark, chromedp.Click(chromedp.ID(button)), newPage, chromedp.WaitVisible(chromedp.ID(waitFor)))
	b.do(steps...)
}

// shot writes the page at every viewport width.
func (b *browser) shot(name string) {
	b.t.Helper()
	for _, v := range viewports {
		opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(v.scale)}
		if v.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		b.do(chromedp.EmulateViewport(v.width, v.height, opts...))
		png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			b.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.shots, name+"-"+v.name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do(chromedp.EmulateViewport(1280, 900))
}

// TestBrowser drives the account web in headless Chromium as a user
// would: sign in, turn on TOTP (the test computes the codes), sign in
// again with a code, create an app password and log in over IMAP with it
// (giving a client name by ID), find that login in Activity and the
// client on the App passwords page, revoke the password and see the IMAP
// session end; set a vacation reply and find it queued, DKIM-signed, for
// a message sent through the MX; then, as an administrator, add a user, an alias and a
// domain (its DNS records shown), and sign in as the new user. Every page
// is photographed at phone and desktop width.
func TestBrowser(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	imapAddr := startIMAP(t, e.st)
	b := newBrowser(t, e.web.URL)

	b.open("/", "username")
	b.shot("signin")
	b.submit([][2]string{{"username", "alice@example.org"}, {"password", alicePassword}}, "signin", "storage")
	if got := b.text("storage"); !strings.Contains(got, "of 10.0 MiB used") {
		t.Errorf("overview storage: %q", got)
	}
	b.shot("overview")

	// Two-factor authentication.
	b.open("/security", "totp-start")
	b.shot("security")
	b.submit(nil, "totp-start", "totp-secret")
	secret := b.text("totp-secret")
	b.shot("security-totp-setup")
	b.submit([][2]string{{"totp-code", e.clock.code(t, secret)}, {"totp-current", alicePassword}}, "totp-confirm", "recovery-codes")
	if got := b.text("totp-status"); !strings.HasPrefix(got, "On.") {
		t.Errorf("2FA status: %q", got)
	}
	b.shot("security-recovery-codes")
	b.submit(nil, "signout", "username")
	b.submit([][2]string{{"username", "alice@example.org"}, {"password", alicePassword}}, "signin", "code")
	b.shot("signin-totp")
	b.submit([][2]string{{"code", e.clock.code(t, secret)}}, "verify", "storage")

	// An app password, used over IMAP by a client that names itself.
	b.open("/app-passwords", "label")
	b.submit([][2]string{{"label", "Alice's <iPhone>"}}, "create", "secret")
	appSecret := b.text("secret")
	b.shot("app-password-created")

	dial := func() *imapclient.Client {
		c, err := imapclient.DialTLS(imapAddr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if err := dial().Login("alice@example.org", "not-it").Wait(); err == nil {
		t.Fatal("IMAP login with a wrong password succeeded")
	}
	c := dial()
	if err := c.Login("alice@example.org", appSecret).Wait(); err != nil {
		t.Fatalf("IMAP login with the new app password: %v", err)
	}
	if _, err := c.ID(&imap.IDData{Name: "BrowserTest Mail", Version: "2.1"}).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	b.open("/activity", "activity")
	table := b.text("activity")
	for _, want := range []string{"BrowserTest Mail", "Alice's <iPhone>", "imap", "failed (wrong password)"} {
		if !strings.Contains(table, want) {
			t.Errorf("activity lacks %q:\n%s", want, table)
		}
	}
	b.shot("activity")

	aps, err := e.st.AppPasswords(context.Background(), e.alice.ID)
	if err != nil || len(aps) != 1 {
		t.Fatal(aps, err)
	}
	b.open("/app-passwords", "passwords")
	if table := b.text("passwords"); !strings.Contains(table, "BrowserTest Mail") || !strings.Contains(table, "127.0.0.1") {
		t.Errorf("app passwords lack the last use:\n%s", table)
	}
	b.shot("app-passwords")
	b.submit(nil, fmt.Sprintf("revoke-%d", aps[0].ID), "passwords")
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("the IMAP session is still open 10 s after its app password was revoked")
	}
	if table := b.text("passwords"); !strings.Contains(table, "revoked") {
		t.Errorf("app passwords after revoking:\n%s", table)
	}
	b.shot("app-passwords-revoked")
	if err := dial().Login("alice@example.org", appSecret).Wait(); err == nil {
		t.Error("IMAP login with the revoked app password succeeded")
	}

	// A vacation reply, answering a message that comes through the MX.
	mxAddr := startMX(t, e.st)
	b.open("/vacation", "vacation-body")
	b.do(chromedp.Click(chromedp.ID("vacation-enabled")))
	b.submit([][2]string{{"vacation-subject", "Away until Monday"}, {"vacation-body", "I read mail on Monday. <b>Thanks!</b>"}},
		"vacation-save", "vacation-body")
	b.shot("vacation")
	msg := "From: <carol@remote.example>\r\nTo: <alice@example.org>\r\nSubject: lunch?\r\nMessage-ID: <l1@remote.example>\r\n\r\nFriday?\r\n"
	mc, err := smtp.Dial(mxAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.Hello("mail.remote.example"); err != nil {
		t.Fatal(err)
	}
	if err := mc.SendMail("carol@remote.example", []string{"alice@example.org"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("send through the MX: %v", err)
	}
	mc.Quit()
	q, err := e.st.QueueEntries(context.Background())
	if err != nil || len(q) != 1 || q[0].RcptTo != "carol@remote.example" {
		t.Fatalf("queue after the message: %+v, %v", q, err)
	}
	body, _, err := e.st.OpenQueued(context.Background(), q[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DKIM-Signature: ", "d=example.org", "Auto-Submitted: auto-replied", "Subject: Away until Monday",
		"In-Reply-To: <l1@remote.example>", "I read mail on Monday. <b>Thanks!</b>"} {
		if !strings.Contains(string(reply), want) {
			t.Errorf("vacation reply lacks %q:\n%s", want, reply)
		}
	}
	// The outbound worker delivers it to remote.example's MX, which
	// receives it from the null sender.
	got := deliverQueued(t, e.st)
	if got.from != "" || got.to != "carol@remote.example" || !strings.Contains(got.data, "Subject: Away until Monday") ||
		!strings.Contains(got.data, "DKIM-Signature: ") {
		t.Errorf("remote.example received from <%s> to <%s>:\n%s", got.from, got.to, got.data)
	}

	// An administrator adds a user, who then signs in.
	if err := e.st.SetAdmin(context.Background(), "alice@example.org", true); err != nil {
		t.Fatal(err)
	}
	b.open("/admin", "health")
	b.shot("admin-server")
	b.open("/admin/users", "users")
	b.submit([][2]string{{"new-address", "carol@example.org"}, {"new-password", "carols password"}, {"new-quota", "500"}}, "add-user", "users")
	if table := b.text("users"); !strings.Contains(table, "carol@example.org") || !strings.Contains(table, "500.0 MiB") {
		t.Errorf("users after adding carol:\n%s", table)
	}
	b.shot("admin-users")
	b.open("/admin/aliases", "aliases")
	b.submit([][2]string{{"alias", "hello@example.org"}, {"target", "carol@example.org"}}, "add-alias", "aliases")
	b.shot("admin-aliases")
	b.open("/admin/domains", "domains")
	b.submit([][2]string{{"domain", "family.example"}}, "add-domain", "zone")
	if zone := b.text("zone"); !strings.Contains(zone, "mailstack._domainkey.family.example.") {
		t.Errorf("records of the new domain:\n%s", zone)
	}
	b.shot("admin-domain-records")
	b.open("/admin/queue", "queue")
	b.shot("admin-queue")
	b.submit(nil, "signout", "username")
	b.submit([][2]string{{"username", "carol@example.org"}, {"password", "carols password"}}, "signin", "storage")
	if got := b.text("storage"); !strings.Contains(got, "of 500.0 MiB used") {
		t.Errorf("carol's overview: %q", got)
	}
}
