package webui_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/internal/mtasts"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
	"github.com/mailstack/mailstack/webui"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// Passwords of the test accounts.
const (
	alicePassword = "alice-main-password"
	bobPassword   = "bob-main-password"
)

// clock is the web's time for TOTP checks: tests move it a step ahead
// for each code, since each code works once.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// code returns a valid TOTP code of secret for a time step no code was
// used for yet.
func (c *clock) code(t testing.TB, secret string) string {
	c.mu.Lock()
	c.t = c.t.Add(30 * time.Second)
	now := c.t
	c.mu.Unlock()
	code, err := totp.GenerateCode(secret, now)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// env is a database with two accounts and one account web on it, served
// over TLS on 127.0.0.1.
type env struct {
	url   string
	st    *store.Store
	web   *httptest.Server
	clock *clock
	alice *store.Account
	bob   *store.Account
	// dnsServer, if set, is the DNS server webs started later ask.
	dnsServer string
}

// openStore opens a store on the env's database; the throttle's delays
// are capped at a millisecond so tests can fail many logins quickly.
func openStore(t testing.TB, u string, pol store.ThrottlePolicy) *store.Store {
	t.Helper()
	pol.MaxDelay = time.Millisecond
	st, err := store.Open(context.Background(), u, store.Options{MaxConns: 6, Throttle: pol,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func newEnv(t testing.TB, pol store.ThrottlePolicy) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{url: storetest.NewURL(t), clock: &clock{t: time.Now()}}
	e.st = openStore(t, e.url, pol)
	key, err := dkimkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateDomain(ctx, "example.org", "mailstack", key); err != nil {
		t.Fatal(err)
	}
	if e.alice, err = e.st.CreateAccount(ctx, "alice@example.org", alicePassword, store.AccountOptions{QuotaBytes: 10 << 20}); err != nil {
		t.Fatal(err)
	}
	if e.bob, err = e.st.CreateAccount(ctx, "bob@example.org", bobPassword, store.AccountOptions{}); err != nil {
		t.Fatal(err)
	}
	e.web = e.serve(t, e.st)
	return e
}

// serve starts another account web on st (another process, when st is a
// store of its own on the same database).
func (e *env) serve(t testing.TB, st *store.Store) *httptest.Server {
	t.Helper()
	return e.serveWith(t, st, false)
}

// serveWith starts an account web that may require 2FA.
func (e *env) serveWith(t testing.TB, st *store.Store, require2FA bool) *httptest.Server {
	t.Helper()
	w, err := webui.New(webui.Config{Store: st, Clients: clientconf.Default("mail.example.org"), MTASTS: mtasts.Testing,
		Now: e.clock.now, Require2FA: require2FA, DNSServer: e.dnsServer,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(w)
	t.Cleanup(ts.Close)
	return ts
}

// client is a browser without JavaScript: a cookie jar that remembers the
// last CSRF token a page offered.
type client struct {
	t    testing.TB
	base string
	c    *http.Client
	csrf string
	// origin, if set, is sent as the Origin of POSTs (browsers send
	// one); Go's client sends none.
	origin string
}

func (e *env) client(t testing.TB, ts *httptest.Server) *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	// ts.Client() is one client per server: each browser needs its own.
	c := &http.Client{Transport: ts.Client().Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &client{t: t, base: ts.URL, c: c}
}

// withServer returns a client of another server sharing this client's
// cookies (the same browser reaching another process).
func (c *client) withServer(ts *httptest.Server) *client {
	// Cookies are per host, not port: both servers are 127.0.0.1.
	hc := &http.Client{Transport: ts.Client().Transport, Jar: c.c.Jar, CheckRedirect: c.c.CheckRedirect}
	return &client{t: c.t, base: ts.URL, c: hc, csrf: c.csrf}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// do sends a request and returns the status, the Location and the body,
// keeping the page's CSRF token.
func (c *client) do(req *http.Request) (int, string, string) {
	c.t.Helper()
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if m := csrfField.FindSubmatch(b); m != nil {
		c.csrf = string(m[1])
	}
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

func (c *client) get(path string) (int, string, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.do(req)
}

// post sends a form with the last CSRF token unless the form has one.
func (c *client) post(path string, form url.Values) (int, string, string) {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", c.csrf)
	}
	req, err := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	return c.do(req)
}

// signIn signs in with the password and returns where it led.
func (c *client) signIn(address, password string) (int, string, string) {
	c.t.Helper()
	c.get("/signin")
	return c.post("/signin", url.Values{"username": {address}, "password": {password}})
}

// mustSignIn signs in an account without 2FA.
func (c *client) mustSignIn(address, password string) {
	c.t.Helper()
	if code, loc, body := c.signIn(address, password); code != http.StatusSeeOther || loc != "/" {
		c.t.Fatalf("sign in %s: %d %q %s", address, code, loc, body)
	}
	if code, _, _ := c.get("/"); code != http.StatusOK {
		c.t.Fatalf("overview after sign-in: %d", code)
	}
}

var secretField = regexp.MustCompile(`id="(?:secret|totp-secret)">([^<]+)<`)

// find returns the first submatch of re in body.
func find(t testing.TB, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%s not in page:\n%s", re, body)
	}
	return m[1]
}

// enableTOTP turns 2FA on for the signed-in client's account and returns
// the secret and recovery codes; password is the account's main password.
func (c *client) enableTOTP(clk *clock, password string) (string, []string) {
	c.t.Helper()
	c.get("/security")
	if code, _, body := c.post("/security/2fa/start", nil); code != http.StatusSeeOther {
		c.t.Fatalf("start 2FA: %d %s", code, body)
	}
	_, _, body := c.get("/security")
	secret := find(c.t, secretField, body)
	code, _, body := c.post("/security/2fa/confirm", url.Values{"code": {clk.code(c.t, secret)}, "current": {password}})
	if code != http.StatusOK || !strings.Contains(body, `id="recovery-codes"`) {
		c.t.Fatalf("confirm 2FA: %d %s", code, body)
	}
	var codes []string
	for _, m := range regexp.MustCompile(`<li>([a-z]{5}-[a-z]{5})</li>`).FindAllStringSubmatch(body, -1) {
		codes = append(codes, m[1])
	}
	if len(codes) != store.RecoveryCodeCount {
		c.t.Fatalf("%d recovery codes shown", len(codes))
	}
	return secret, codes
}
