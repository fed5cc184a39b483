package webui_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/httpd"
	"github.com/mailstack/mailstack/store"
)

// TestPagesNeedSignIn: every page sends a browser without a session to
// the sign-in page, and every answer carries the security headers.
func TestPagesNeedSignIn(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	c := e.client(t, e.web)
	for _, p := range []string{"/", "/app-passwords", "/activity", "/security", "/vacation", "/signin/2fa"} {
		code, loc, _ := c.get(p)
		if code != http.StatusSeeOther || loc != "/signin" {
			t.Errorf("GET %s: %d → %q, want 303 → /signin", p, code, loc)
		}
	}
	code, loc, _ := c.post("/app-passwords", url.Values{"label": {"x"}})
	if code != http.StatusSeeOther || loc != "/signin" {
		t.Errorf("POST without session: %d → %q", code, loc)
	}
	if code, _, body := c.get("/static/style.css"); code != http.StatusOK || !strings.Contains(body, "font") {
		t.Errorf("stylesheet: %d", code)
	}
	if code, _, _ := c.get("/static/"); code != http.StatusNotFound {
		t.Errorf("static directory: %d, want 404", code)
	}
	resp, err := c.c.Get(e.web.URL + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for h, want := range map[string]string{
		"Content-Security-Policy":   "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":    "nosniff",
		"X-Frame-Options":           "DENY",
		"Strict-Transport-Security": "max-age=31536000",
		"Cache-Control":             "no-store",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
}

// TestSessionCookie: the session cookie is __Host-, Secure, HttpOnly and
// SameSite=Strict, and the session is in the database, listed on the
// Security page.
func TestSessionCookie(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	c := e.client(t, e.web)
	c.get("/signin")
	form := url.Values{"username": {"alice@example.org"}, "password": {alicePassword}, "csrf": {c.csrf}}
	req, _ := http.NewRequest(http.MethodPost, e.web.URL+"/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var found bool
	for _, ck := range resp.Cookies() {
		if ck.Name != "__Host-mailstack" || ck.Value == "" {
			continue
		}
		found = true
		if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Domain != "" {
			t.Errorf("session cookie %+v", ck)
		}
	}
	if !found {
		t.Fatalf("no session cookie in %v", resp.Header["Set-Cookie"])
	}
	ss, err := e.st.WebSessions(context.Background(), e.alice.ID)
	if err != nil || len(ss) != 1 || ss[0].RemoteIP != "127.0.0.1" {
		t.Fatalf("sessions in the database: %+v, %v", ss, err)
	}
}

// TestCSRF: a form without the session's token, with a wrong one, or
// posted from another origin is refused and changes nothing; the sign-in
// form needs its double-submit cookie.
func TestCSRF(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	good := c.csrf
	tests := []struct {
		name, csrf, origin string
		want               int
	}{
		{"missing", "", "", http.StatusForbidden},
		{"wrong", good[:len(good)-2] + "xx", "", http.StatusForbidden},
		{"other session's", "", "", http.StatusForbidden},
		{"cross-origin", good, "https://evil.example", http.StatusForbidden},
		{"right", good, "", http.StatusOK},
	}
	other := e.client(t, e.web)
	other.mustSignIn("bob@example.org", bobPassword)
	tests[2].csrf = other.csrf
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.origin = tc.origin
			code, _, body := c.post("/app-passwords", url.Values{"label": {tc.name}, "csrf": {tc.csrf}})
			if code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, body)
			}
			aps, err := e.st.AppPasswords(context.Background(), e.alice.ID)
			if err != nil {
				t.Fatal(err)
			}
			if created := len(aps) > 0 && aps[len(aps)-1].Label == tc.name; created != (tc.want == http.StatusOK) {
				t.Fatalf("app passwords after the request: %+v", aps)
			}
		})
	}
	c.origin = ""

	// Sign-in: the token must match the cookie set with the form.
	fresh := e.client(t, e.web)
	code, _, _ := fresh.post("/signin", url.Values{"username": {"alice@example.org"}, "password": {alicePassword}, "csrf": {"guess"}})
	if code != http.StatusForbidden {
		t.Errorf("sign-in without its cookie: %d", code)
	}
	fresh.get("/signin")
	code, _, _ = fresh.post("/signin", url.Values{"username": {"alice@example.org"}, "password": {alicePassword}, "csrf": {"guess"}})
	if code != http.StatusForbidden {
		t.Errorf("sign-in with a wrong token: %d", code)
	}
}

// TestOtherAccountsObjectsUnreachable: ids of another account's app
// passwords and sessions in URLs and forms find nothing and change
// nothing.
func TestOtherAccountsObjectsUnreachable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, store.ThrottlePolicy{})
	alice := e.client(t, e.web)
	alice.mustSignIn("alice@example.org", alicePassword)
	bob := e.client(t, e.web)
	bob.mustSignIn("bob@example.org", bobPassword)
	bobSecret, bobAP, err := e.st.CreateAppPassword(ctx, e.bob.ID, "bob's phone")
	if err != nil {
		t.Fatal(err)
	}
	bobSessions, err := e.st.WebSessions(ctx, e.bob.ID)
	if err != nil || len(bobSessions) != 1 {
		t.Fatal(bobSessions, err)
	}
	alice.get("/security")
	for _, tc := range []struct {
		path string
		form url.Values
	}{
		{fmt.Sprintf("/app-passwords/%d/revoke", bobAP.ID), nil},
		{fmt.Sprintf("/app-passwords/%d/profile", bobAP.ID), url.Values{"secret": {bobSecret}}},
		{fmt.Sprintf("/security/sessions/%d/revoke", bobSessions[0].ID), nil},
		{"/app-passwords/abc/revoke", nil},
	} {
		if code, _, body := alice.post(tc.path, tc.form); code != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404: %s", tc.path, code, body)
		}
	}
	if _, err := e.st.Authenticate(ctx, store.Credentials{Username: "bob@example.org", Password: bobSecret,
		Protocol: store.ProtocolIMAP, RemoteIP: "192.0.2.1"}); err != nil {
		t.Errorf("bob's app password after alice's tries: %v", err)
	}
	if code, _, _ := bob.get("/"); code != http.StatusOK {
		t.Errorf("bob's session after alice's tries: %d", code)
	}
	// Alice's own pages show nothing of bob's.
	for _, p := range []string{"/app-passwords", "/activity", "/security"} {
		if _, _, body := alice.get(p); strings.Contains(body, "bob") {
			t.Errorf("%s shows bob's objects", p)
		}
	}
}

// TestMarkupEscaped: labels and client names with markup show as text.
func TestMarkupEscaped(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, store.ThrottlePolicy{})
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	c.get("/app-passwords")
	const evil = `<script>alert(1)</script><img src=x onerror=alert(2)>`
	code, _, body := c.post("/app-passwords", url.Values{"label": {evil}})
	if code != http.StatusOK {
		t.Fatalf("create: %d", code)
	}
	secret := find(t, secretField, body)
	if _, err := e.st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: secret,
		Protocol: store.ProtocolIMAP, RemoteIP: "192.0.2.1", Client: `<b onmouseover="x">Mail</b>`}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/app-passwords", "/activity"} {
		_, _, body := c.get(p)
		for _, raw := range []string{"<script>", "<img src=x", "<b onmouseover"} {
			if strings.Contains(body, raw) {
				t.Errorf("%s contains %q unescaped", p, raw)
			}
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s lacks the escaped label", p)
		}
	}
}

// TestSignInThrottled: wrong passwords from one IP on many user names
// lock that IP out; failures on one account from anywhere lock the
// account's main password out; both are recorded.
func TestSignInThrottled(t *testing.T) {
	ctx := context.Background()
	t.Run("per IP", func(t *testing.T) {
		e := newEnv(t, store.ThrottlePolicy{IPLimit: 6, AccountLimit: 100})
		c := e.client(t, e.web)
		for i := range 6 {
			if code, _, _ := c.signIn(fmt.Sprintf("user%d@example.org", i), "guess"); code != http.StatusUnauthorized {
				t.Fatalf("guess %d: %d", i, code)
			}
		}
		code, _, body := c.signIn("alice@example.org", alicePassword)
		if code != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed sign-in attempts") {
			t.Fatalf("right password after the IP's guesses: %d", code)
		}
		evs, err := e.st.AuthEvents(ctx, e.alice.ID, 1)
		if err != nil || len(evs) != 1 || evs[0].Reason != store.ReasonThrottled || evs[0].Protocol != store.ProtocolWeb {
			t.Fatalf("activity: %+v, %v", evs, err)
		}
	})
	t.Run("per account", func(t *testing.T) {
		e := newEnv(t, store.ThrottlePolicy{IPLimit: 100, AccountLimit: 4})
		// Guesses at alice's password from elsewhere.
		for i := range 4 {
			_, err := e.st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: "guess",
				Protocol: store.ProtocolWeb, RemoteIP: fmt.Sprintf("192.0.2.%d", i+1)})
			if !errors.Is(err, store.ErrAuthFailed) {
				t.Fatalf("guess %d: %v", i, err)
			}
		}
		c := e.client(t, e.web)
		if code, _, _ := c.signIn("alice@example.org", alicePassword); code != http.StatusTooManyRequests {
			t.Fatalf("alice's right password after guesses on her account: %d", code)
		}
		// Bob, behind the same address, is not slowed by them.
		c.mustSignIn("bob@example.org", bobPassword)
	})
	t.Run("app password refused", func(t *testing.T) {
		e := newEnv(t, store.ThrottlePolicy{})
		secret, _, err := e.st.CreateAppPassword(ctx, e.alice.ID, "phone")
		if err != nil {
			t.Fatal(err)
		}
		c := e.client(t, e.web)
		if code, _, _ := c.signIn("alice@example.org", secret); code != http.StatusUnauthorized {
			t.Fatalf("sign-in with an app password: %d", code)
		}
	})
}

// TestRevokedSessionRefusedEverywhere: a session works on every process
// (each its own store on one database); signed out from another browser
// on one process, it is refused at its next request on the other.
func TestRevokedSessionRefusedEverywhere(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, store.ThrottlePolicy{})
	web2 := e.serve(t, openStore(t, e.url, store.ThrottlePolicy{}))
	phone := e.client(t, e.web)
	phone.mustSignIn("alice@example.org", alicePassword)
	phone2 := phone.withServer(web2)
	if code, _, _ := phone2.get("/activity"); code != http.StatusOK {
		t.Fatalf("session on the second process: %d", code)
	}
	laptop := e.client(t, e.web)
	laptop.mustSignIn("alice@example.org", alicePassword)
	ss, err := e.st.WebSessions(ctx, e.alice.ID)
	if err != nil || len(ss) != 2 {
		t.Fatal(ss, err)
	}
	phoneID := ss[1].ID // the older one
	laptop.get("/security")
	if code, loc, _ := laptop.post(fmt.Sprintf("/security/sessions/%d/revoke", phoneID), nil); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/security") {
		t.Fatalf("revoke: %d %q", code, loc)
	}
	for name, cl := range map[string]*client{"first": phone, "second": phone2} {
		if code, loc, _ := cl.get("/"); code != http.StatusSeeOther || loc != "/signin" {
			t.Errorf("revoked session on the %s process: %d → %q", name, code, loc)
		}
	}
	if code, _, _ := laptop.get("/"); code != http.StatusOK {
		t.Errorf("the revoking session: %d", code)
	}
	// Sign out every other browser, then sign out.
	phone.mustSignIn("alice@example.org", alicePassword)
	laptop.get("/security")
	laptop.post("/security/sessions/revoke-others", nil)
	if code, _, _ := phone.get("/"); code != http.StatusSeeOther {
		t.Errorf("after sign out every other browser: %d", code)
	}
	laptop.get("/")
	laptop.post("/signout", nil)
	if ss, _ := e.st.WebSessions(ctx, e.alice.ID); len(ss) != 0 {
		t.Errorf("sessions left: %+v", ss)
	}
}

// TestNoPlainHTTP: the HTTP listener redirects every account page to
// HTTPS, and the account web answers nothing without TLS.
func TestNoPlainHTTP(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	plain := httptest.NewServer((&httpd.Config{}).HTTPHandler())
	t.Cleanup(plain.Close)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/", "/signin", "/app-passwords", "/security", "/static/style.css"} {
		resp, err := c.Get(plain.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(loc, "https://") {
			t.Errorf("http %s: %d → %q", p, resp.StatusCode, loc)
		}
	}
	w := e.web.Config.Handler
	clear := httptest.NewServer(w)
	t.Cleanup(clear.Close)
	resp, err := c.Get(clear.URL + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("account web without TLS: %d", resp.StatusCode)
	}
}

// A browser waiting for its second factor can cancel: it is signed out
// and may sign in again (as another account, say), not held at the code
// page.
func TestTwoFactorCancel(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{AccountLimit: 100})
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	c.enableTOTP(e.clock, alicePassword)
	c.post("/signout", nil)
	if code, loc, _ := c.signIn("alice@example.org", alicePassword); code != http.StatusSeeOther || loc != "/signin/2fa" {
		t.Fatalf("password with 2FA on: %d → %q", code, loc)
	}
	if code, _, body := c.get("/signin/2fa"); code != http.StatusOK || !strings.Contains(body, `id="cancel-2fa"`) {
		t.Fatalf("code page: %d, cancel button %v", code, strings.Contains(body, `id="cancel-2fa"`))
	}
	if code, loc, _ := c.post("/signout", nil); code != http.StatusSeeOther || loc != "/signin?msg=msg.signed-out" {
		t.Fatalf("cancel: %d → %q", code, loc)
	}
	if code, loc, _ := c.get("/signin/2fa"); code != http.StatusSeeOther || loc != "/signin" {
		t.Errorf("code page after cancel: %d → %q", code, loc)
	}
	if code, _, _ := c.get("/signin"); code != http.StatusOK {
		t.Errorf("sign-in page after cancel: %d", code)
	}
}

// TestTwoFactor: with TOTP on, the password alone opens nothing; a code
// works once; a recovery code works once; wrong codes are recorded and a
// few end the pending session.
func TestTwoFactor(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, store.ThrottlePolicy{AccountLimit: 100})
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	secret, recovery := c.enableTOTP(e.clock, alicePassword)
	c.post("/signout", nil)

	if code, loc, _ := c.signIn("alice@example.org", alicePassword); code != http.StatusSeeOther || loc != "/signin/2fa" {
		t.Fatalf("password with 2FA on: %d → %q", code, loc)
	}
	for _, p := range []string{"/", "/app-passwords", "/security"} {
		if code, loc, _ := c.get(p); code != http.StatusSeeOther || loc != "/signin/2fa" {
			t.Errorf("%s before the code: %d → %q", p, code, loc)
		}
	}
	c.get("/signin/2fa")
	if code, _, _ := c.post("/signin/2fa", url.Values{"code": {"000000"}}); code != http.StatusUnauthorized {
		t.Errorf("wrong code: %d", code)
	}
	good := e.clock.code(t, secret)
	if code, loc, _ := c.post("/signin/2fa", url.Values{"code": {good}}); code != http.StatusSeeOther || loc != "/" {
		t.Fatalf("right code: %d → %q", code, loc)
	}
	if code, _, _ := c.get("/"); code != http.StatusOK {
		t.Fatalf("after the code: %d", code)
	}
	c.post("/signout", nil)

	// The same code again: refused (replay).
	c.signIn("alice@example.org", alicePassword)
	c.get("/signin/2fa")
	if code, _, _ := c.post("/signin/2fa", url.Values{"code": {good}}); code != http.StatusUnauthorized {
		t.Errorf("code used twice: %d", code)
	}
	// A recovery code, once.
	if code, loc, _ := c.post("/signin/2fa", url.Values{"code": {strings.ToUpper(recovery[0])}}); code != http.StatusSeeOther || loc != "/" {
		t.Fatalf("recovery code: %d → %q", code, loc)
	}
	c.get("/")
	c.post("/signout", nil)
	c.signIn("alice@example.org", alicePassword)
	c.get("/signin/2fa")
	if code, _, _ := c.post("/signin/2fa", url.Values{"code": {recovery[0]}}); code != http.StatusUnauthorized {
		t.Errorf("recovery code used twice: %d", code)
	}
	// Wrong codes end the pending session: the password is due again.
	var loc string
	for range store.WebMaxSecondFactorFailures - 1 {
		_, loc, _ = c.post("/signin/2fa", url.Values{"code": {"123456"}})
	}
	if loc != "/signin?msg=msg.session-ended" {
		t.Errorf("after %d wrong codes: → %q", store.WebMaxSecondFactorFailures, loc)
	}
	if code, loc, _ := c.get("/signin/2fa"); code != http.StatusSeeOther || loc != "/signin" {
		t.Errorf("pending session after too many codes: %d → %q", code, loc)
	}
	evs, err := e.st.AuthEvents(ctx, e.alice.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	var wrong, viaTOTP, viaRecovery, due int
	for _, ev := range evs {
		switch {
		case ev.Success && ev.Reason == store.ReasonSecondFactorDue:
			due++
		case !ev.Success && ev.Reason == store.ReasonWrong2FA:
			wrong++
		case ev.Success && ev.Reason == store.ReasonTOTP:
			viaTOTP++
		case ev.Success && ev.Reason == store.ReasonRecoveryCode:
			viaRecovery++
		}
	}
	if wrong != 2+store.WebMaxSecondFactorFailures || viaTOTP != 1 || viaRecovery != 1 || due != 3 {
		t.Errorf("activity: %d wrong codes, %d TOTP, %d recovery, %d passwords with the code due", wrong, viaTOTP, viaRecovery, due)
	}
	// The Security page counts the codes left.
	c.signIn("alice@example.org", alicePassword)
	c.get("/signin/2fa")
	c.post("/signin/2fa", url.Values{"code": {e.clock.code(t, secret)}})
	if _, _, body := c.get("/security"); !strings.Contains(body, fmt.Sprintf("%d recovery codes left", store.RecoveryCodeCount-1)) {
		t.Errorf("security page: %s", body)
	}
	// Turning 2FA off needs the password.
	if code, _, _ := c.post("/security/2fa/disable", url.Values{"current": {"wrong"}}); code != http.StatusUnauthorized {
		t.Errorf("disable with a wrong password: %d", code)
	}
	c.post("/security/2fa/disable", url.Values{"current": {alicePassword}})
	c.post("/signout", nil)
	c.mustSignIn("alice@example.org", alicePassword)
}

// TestChangePassword: the current password is checked, the new one
// works, and other browsers are signed out.
func TestChangePassword(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	other := e.client(t, e.web)
	other.mustSignIn("alice@example.org", alicePassword)
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	c.get("/security")
	const next = "a new long password"
	for _, tc := range []struct {
		current, next, confirm string
		want                   int
	}{
		{"wrong", next, next, http.StatusUnauthorized},
		{alicePassword, "short", "short", http.StatusBadRequest},
		{alicePassword, next, next + "x", http.StatusBadRequest},
	} {
		if code, _, _ := c.post("/security/password", url.Values{"current": {tc.current}, "new": {tc.next}, "confirm": {tc.confirm}}); code != tc.want {
			t.Errorf("%+v: %d", tc, code)
		}
	}
	if code, _, _ := c.post("/security/password", url.Values{"current": {alicePassword}, "new": {next}, "confirm": {next}}); code != http.StatusSeeOther {
		t.Fatalf("change: %d", code)
	}
	if code, _, _ := other.get("/"); code != http.StatusSeeOther {
		t.Errorf("other browser after the change: %d", code)
	}
	if code, _, _ := c.get("/"); code != http.StatusOK {
		t.Errorf("this browser after the change: %d", code)
	}
	c.post("/signout", nil)
	if code, _, _ := c.signIn("alice@example.org", alicePassword); code != http.StatusUnauthorized {
		t.Errorf("old password: %d", code)
	}
	c.mustSignIn("alice@example.org", next)
}

// TestRequire2FA: with the server setting, an account without 2FA sees
// only the Security page until it turns 2FA on, and cannot turn it off.
func TestRequire2FA(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	strict := e.serveWith(t, e.st, true)
	c := e.client(t, strict)
	c.signIn("alice@example.org", alicePassword)
	for _, p := range []string{"/", "/app-passwords", "/activity"} {
		if code, loc, _ := c.get(p); code != http.StatusSeeOther || loc != "/security?msg=msg.2fa-required" {
			t.Errorf("%s without 2FA: %d → %q", p, code, loc)
		}
	}
	if _, _, body := c.get("/security?msg=msg.2fa-required"); !strings.Contains(body, "requires two-factor authentication") {
		t.Errorf("security page lacks the notice")
	}
	c.enableTOTP(e.clock, alicePassword)
	if code, _, _ := c.get("/app-passwords"); code != http.StatusOK {
		t.Errorf("app passwords with 2FA on: %d", code)
	}
	c.get("/security")
	c.post("/security/2fa/disable", url.Values{"current": {alicePassword}})
	if secret, err := e.st.TOTPSecret(context.Background(), e.alice.ID); err != nil || secret == "" {
		t.Errorf("2FA turned off on a server that requires it: %q, %v", secret, err)
	}
}

// TestAppPasswordProfile: the profile download holds the new password
// and the server's settings; a revoked or wrong secret gets none.
func TestAppPasswordProfile(t *testing.T) {
	e := newEnv(t, store.ThrottlePolicy{})
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	c.get("/app-passwords")
	_, _, body := c.post("/app-passwords", url.Values{"label": {"iPad"}})
	secret := find(t, secretField, body)
	id := find(t, regexp.MustCompile(`action="/app-passwords/(\d+)/profile"`), body)
	code, _, prof := c.post("/app-passwords/"+id+"/profile", url.Values{"secret": {secret}})
	if code != http.StatusOK || !strings.Contains(prof, "<string>"+secret+"</string>") ||
		!strings.Contains(prof, "<string>imap.example.org</string>") || !strings.Contains(prof, "com.apple.mail.managed") {
		t.Fatalf("profile: %d\n%s", code, prof)
	}
	if code, _, _ := c.post("/app-passwords/"+id+"/profile", url.Values{"secret": {"abcd-efgh-ijkl-mnop"}}); code != http.StatusNotFound {
		t.Errorf("profile with a wrong secret: %d", code)
	}
	c.post("/app-passwords/"+id+"/revoke", nil)
	if code, _, _ := c.post("/app-passwords/"+id+"/profile", url.Values{"secret": {secret}}); code != http.StatusNotFound {
		t.Errorf("profile of a revoked password: %d", code)
	}
	if code, _, _ := c.post("/app-passwords", url.Values{"label": {strings.Repeat("x", 101)}}); code != http.StatusBadRequest {
		t.Errorf("label of 101 characters: %d", code)
	}
}

// TestOverview: storage used against the quota, per folder.
func TestOverview(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, store.ThrottlePolicy{})
	msg := "From: a@example.net\r\nSubject: hi\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n"
	for _, mb := range []string{"INBOX", "Archive"} {
		box, err := e.st.MailboxByName(ctx, e.alice.ID, mb)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.Append(ctx, e.alice.ID, box.ID, strings.NewReader(msg), int64(len(msg)), nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	_, _, body := c.get("/")
	if want := fmt.Sprintf("%s of 10.0 MiB used (0 %%)", formatSize(2*int64(len(msg)))); !strings.Contains(body, want) {
		t.Errorf("overview lacks %q:\n%s", want, body)
	}
	if !regexp.MustCompile(`<td>Archive</td><td class="num">1</td><td class="num">1</td><td class="num">2\.0 KiB</td>`).MatchString(body) {
		t.Errorf("overview lacks Archive's row:\n%s", body)
	}
}

// formatSize is the page's size format for sizes under 1 MiB.
func formatSize(n int64) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }

// TestVacationPage: the settings are saved and shown again (markup as
// text), and bad dates, intervals and lengths are refused.
func TestVacationPage(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, store.ThrottlePolicy{})
	c := e.client(t, e.web)
	c.mustSignIn("alice@example.org", alicePassword)
	c.get("/vacation")
	const evil = `</textarea><script>alert(1)</script>`
	code, loc, _ := c.post("/vacation", url.Values{"enabled": {"on"}, "subject": {"Away <b>now</b>"}, "body": {"Back soon.\r\n" + evil},
		"starts": {"2026-12-01"}, "ends": {"2026-12-31"}, "interval": {"3"}})
	if code != http.StatusSeeOther || loc != "/vacation?msg=msg.vacation-saved" {
		t.Fatalf("save: %d → %q", code, loc)
	}
	v, err := e.st.Vacation(ctx, e.alice.ID)
	if err != nil || !v.Enabled || v.Body != "Back soon.\n"+evil || v.IntervalDays != 3 || v.Starts.Format("2006-01-02") != "2026-12-01" {
		t.Fatalf("stored: %+v, %v", v, err)
	}
	_, _, body := c.get(loc)
	if strings.Contains(body, "<script>") || strings.Contains(body, "<b>now") || !strings.Contains(body, "&lt;/textarea&gt;&lt;script&gt;") ||
		!strings.Contains(body, `value="2026-12-31"`) || !strings.Contains(body, "checked") {
		t.Errorf("vacation page:\n%s", body)
	}
	for _, f := range []url.Values{
		{"interval": {"0"}},
		{"interval": {"x"}},
		{"interval": {"7"}, "starts": {"2026-12-31"}, "ends": {"2026-12-01"}},
		{"interval": {"7"}, "starts": {"31.12.2026"}},
		{"interval": {"7"}, "subject": {strings.Repeat("s", 201)}},
		{"interval": {"7"}, "body": {strings.Repeat("b", 10001)}},
	} {
		if code, _, _ := c.post("/vacation", f); code != http.StatusBadRequest {
			t.Errorf("%v: %d", f, code)
		}
	}
}
