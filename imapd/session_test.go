package imapd

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestSmoke(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	uid := appendMsg(t, c, "INBOX", crlf(simpleMsg))
	if uid != 1 {
		t.Fatalf("uid = %d", uid)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 1 {
		t.Fatalf("NumMessages = %d", sel.NumMessages)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, Flags: true, Envelope: true,
		BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Envelope.Subject != "Hello" || msgs[0].UID != 1 {
		t.Fatalf("msgs = %+v", msgs)
	}
	if got := string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})); got != crlf(simpleMsg) {
		t.Fatalf("body = %q", got)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestLogin(t *testing.T) {
	e := newEnv(t, envOptions{})
	tests := []struct {
		name     string
		user     string
		pass     string
		wantCode imap.ResponseCode
	}{
		{"app password", e.user, e.pass, ""},
		{"app password typed with spaces in upper case", e.user, strings.ToUpper(strings.ReplaceAll(e.pass, "-", " ")), ""},
		{"wrong password", e.user, "nope", imap.ResponseCodeAuthenticationFailed},
		{"main password refused", e.user, "main-password", imap.ResponseCodeAuthenticationFailed},
		{"unknown user", "nobody@example.test", e.pass, imap.ResponseCodeAuthenticationFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(nil)
			err := c.Login(tc.user, tc.pass).Wait()
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("login: %v", err)
				}
				return
			}
			if imapType(err) != imap.StatusResponseTypeNo || imapCode(err) != tc.wantCode {
				t.Fatalf("login error = %v, want NO [%s]", err, tc.wantCode)
			}
		})
	}
	t.Run("AUTHENTICATE PLAIN", func(t *testing.T) {
		c := e.dial(nil)
		if err := c.Authenticate(sasl.NewPlainClient("", e.user, e.pass)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("AUTHENTICATE PLAIN wrong password", func(t *testing.T) {
		c := e.dial(nil)
		err := c.Authenticate(sasl.NewPlainClient("", e.user, "bad"))
		if imapCode(err) != imap.ResponseCodeAuthenticationFailed {
			t.Fatalf("err = %v", err)
		}
	})
	// Every attempt is in the activity log.
	events, err := e.st.AuthEvents(context.Background(), e.acc.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed int
	for _, ev := range events {
		if ev.Protocol != store.ProtocolIMAP || ev.RemoteIP != "127.0.0.1" {
			t.Errorf("event %+v", ev)
		}
		if ev.Success {
			ok++
		} else {
			failed++
		}
	}
	if ok != 3 || failed != 3 {
		t.Errorf("activity: %d successes, %d failures; want 3 and 3", ok, failed)
	}
}

func TestThrottledLogin(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, storetest.NewURL(t), store.Options{
		Throttle: store.ThrottlePolicy{FreeFailures: 100, AccountLimit: 2, IPLimit: 100},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	e := newEnv(t, envOptions{st: st})
	for i := 0; i < 2; i++ {
		c := e.dial(nil)
		if err := c.Login(e.user, "wrong").Wait(); imapCode(err) != imap.ResponseCodeAuthenticationFailed {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	c := e.dial(nil)
	err = c.Login(e.user, "wrong again").Wait()
	if imapType(err) != imap.StatusResponseTypeNo || imapCode(err) != imap.ResponseCodeUnavailable {
		t.Fatalf("throttled login: %v, want NO [UNAVAILABLE]", err)
	}
	// The owner's app password is not locked out by guesses at the account.
	if err := e.dial(nil).Login(e.user, e.pass).Wait(); err != nil {
		t.Fatalf("app password while the account is throttled: %v", err)
	}
}

func TestStartTLS(t *testing.T) {
	e := newEnv(t, envOptions{})
	c, err := imapclient.DialInsecure(e.startTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.Has(imap.CapLoginDisabled) || !caps.Has(imap.CapStartTLS) {
		t.Fatalf("caps before STARTTLS = %v", caps)
	}
	err = c.Login(e.user, e.pass).Wait()
	if imapCode(err) != imap.ResponseCodePrivacyRequired {
		t.Fatalf("LOGIN before STARTTLS: %v, want NO [PRIVACYREQUIRED]", err)
	}
	if err := c.Authenticate(sasl.NewPlainClient("", e.user, e.pass)); imapCode(err) != imap.ResponseCodePrivacyRequired {
		t.Fatalf("AUTHENTICATE before STARTTLS: %v", err)
	}

	c2, err := imapclient.DialStartTLS(e.startTLS, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Login(e.user, e.pass).Wait(); err != nil {
		t.Fatalf("LOGIN after STARTTLS: %v", err)
	}
	if _, err := c2.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestCapabilities(t *testing.T) {
	e := newEnv(t, envOptions{maxMessageSize: 1 << 20})
	c := e.login(nil)
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []imap.Cap{imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapIdle, imap.CapMove, imap.CapUIDPlus,
		imap.CapSpecialUse, imap.CapCreateSpecialUse, imap.CapListExtended, imap.CapListStatus, imap.CapESearch,
		imap.CapSearchRes, imap.CapBinary, imap.CapUnselect, imap.CapNamespace, imap.CapStatusSize, imap.CapSASLIR,
		imap.CapChildren, imap.CapEnable, "APPENDLIMIT=1048576"} {
		if !caps.Has(want) {
			t.Errorf("missing capability %s in %v", want, caps)
		}
	}
	// Port 993 is TLS from the first byte: before login it offers
	// AUTH=PLAIN, and neither STARTTLS nor LOGINDISABLED.
	pre, err := imapclient.DialTLS(e.addr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	precaps, err := pre.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !precaps.Has("AUTH=PLAIN") || precaps.Has(imap.CapStartTLS) || precaps.Has(imap.CapLoginDisabled) {
		t.Errorf("implicit-TLS listener before login: %v", precaps)
	}
	ns, err := c.Namespace().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Personal) != 1 || ns.Personal[0].Delim != '/' || ns.Personal[0].Prefix != "" {
		t.Fatalf("namespace = %+v", ns)
	}
	en, err := c.Enable(imap.CapIMAP4rev2).Wait()
	if err != nil || !en.Caps.Has(imap.CapIMAP4rev2) {
		t.Fatalf("ENABLE: %v %v", en, err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestRevokedAppPasswordEndsSession(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := e.st.RevokeAppPassword(context.Background(), e.acc.ID, e.appID); err != nil {
		t.Fatal(err)
	}
	e.waitLoginNotice(t)
	if err := c.Noop().Wait(); err == nil {
		t.Fatal("NOOP after revocation succeeded")
	}
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after revocation")
	}
	// And the password no longer logs in.
	c2 := e.dial(nil)
	if err := c2.Login(e.user, e.pass).Wait(); imapCode(err) != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("login with revoked password: %v", err)
	}
}

// TestRevokedAppPasswordEndsIdle: IDLE is one long command; the session
// still ends soon after its app password is revoked.
func TestRevokedAppPasswordEndsIdle(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := e.st.RevokeAppPassword(context.Background(), e.acc.ID, e.appID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("IDLE session still open after its app password was revoked")
	}
}

func TestDisabledAccountEndsSession(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if err := e.st.SetDisabled(context.Background(), e.user, true); err != nil {
		t.Fatal(err)
	}
	e.waitLoginNotice(t)
	if _, err := c.List("", "*", nil).Collect(); err == nil {
		t.Fatal("LIST after disabling the account succeeded")
	}
}

// TestDisabledAccountCreatesNothing: every command of a logged-in
// session checks its login first, CREATE included.
func TestDisabledAccountCreatesNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if err := e.st.SetDisabled(context.Background(), e.user, true); err != nil {
		t.Fatal(err)
	}
	e.waitLoginNotice(t)
	if err := c.Create("afterdisable", nil).Wait(); err == nil {
		t.Fatal("CREATE after disabling the account succeeded")
	}
	if _, err := e.st.MailboxByName(context.Background(), e.acc.ID, "afterdisable"); err == nil {
		t.Fatal("mailbox created after the account was disabled")
	}
}

func TestConnectionCap(t *testing.T) {
	e := newEnv(t, envOptions{maxConns: 2})
	c1 := e.login(nil)
	e.login(nil)
	c3 := e.dial(nil)
	err := c3.Login(e.user, e.pass).Wait()
	if imapType(err) != imap.StatusResponseTypeNo || imapCode(err) != imap.ResponseCodeLimit {
		t.Fatalf("third login: %v, want NO [LIMIT]", err)
	}
	if err := c1.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	// The slot is released when the server notices the connection ended.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := e.dial(nil)
		err := c.Login(e.user, e.pass).Wait()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("login after logout: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Unknown system flag: refused, nothing stored.
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{`\Bogus`}}, nil).Close()
	if imapType(err) != imap.StatusResponseTypeNo {
		t.Fatalf("STORE \\Bogus: %v", err)
	}
	// Bad mailbox names.
	for _, name := range []string{"a//b", "/lead", "ctl\x01"} {
		if err := c.Create(name, nil).Wait(); err == nil {
			t.Errorf("CREATE %q succeeded", name)
		}
	}
	// Sequence numbers past the end are an error (RFC 3501 §6.4.8, as
	// Dovecot answers); UIDs past the end are not.
	if _, err := c.Fetch(imap.SeqSetNum(5), &imap.FetchOptions{Flags: true}).Collect(); imapType(err) != imap.StatusResponseTypeBad {
		t.Fatalf("FETCH 5: %v, want BAD", err)
	}
	msgs, err := c.Fetch(imap.UIDSetNum(500), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 0 {
		t.Fatalf("UID FETCH 500: %v %v", msgs, err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestProtocolLimits: a command line over the line limit (64 KiB outside
// literals) ends the connection with BYE: the rest of such a line is never
// read as a command. Up to the limit, a malformed line gets BAD and the
// connection carries on. The server carries on for others either way.
func TestProtocolLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	fmt.Fprintf(r.c, "x1 NOOP %s\r\n", strings.Repeat("a", 60<<10))
	if l := r.line(); !strings.HasPrefix(l, "x1 BAD ") {
		t.Fatalf("a 60 KiB malformed line: %q, want BAD", l)
	}
	if _, status := r.try("NOOP"); !strings.HasPrefix(status, "OK") {
		t.Fatalf("after a malformed line: %q", status)
	}
	fmt.Fprintf(r.c, "x2 NOOP %s\r\n", strings.Repeat("a", 70<<10))
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(r.r)
	if err != nil {
		t.Fatalf("the connection was not closed after an oversized command: %v (got %q)", err, rest)
	}
	if got := string(rest); got != "x2 BAD [TOOBIG] Command line too long\r\n* BYE Command line too long\r\n" {
		t.Fatalf("after an oversized command: %q, want BYE then close", got)
	}
	// The server still serves others.
	c := e.login(nil)
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestLiteralLimit: literals of ordinary arguments up to 1 MiB are taken
// (a 20 KB search string, a 5,000-byte LIST pattern: longer than any
// mailbox name, store.MaxMailboxName); a synchronising one above
// is refused at once with BAD [TOOBIG] and no continuation, and the
// connection carries on; a non-synchronising one above is refused and the
// connection closed, since its data is already on the way. Nothing of a
// refused command is done.
func TestLiteralLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	before, err := e.st.Mailboxes(t.Context(), e.acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	ok := e.raw()
	for _, size := range []int{4000, 5000} {
		name := strings.Repeat("n", size)
		fmt.Fprintf(ok.c, "s1 LIST \"\" {%d}\r\n", len(name))
		if l := ok.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("no continuation for a %d-byte literal: %q", size, l)
		}
		fmt.Fprintf(ok.c, "%s\r\n", name)
		if l := ok.line(); !strings.HasPrefix(l, "s1 OK") {
			t.Fatalf("LIST of a %d-byte pattern: %q", size, l)
		}
	}
	ok.cmd("SELECT INBOX")
	word := strings.Repeat("w", 20_000)
	untagged, status := ok.cmdLiteral("SEARCH BODY ", word)
	if !strings.HasPrefix(status, "OK") || len(untagged) != 1 || untagged[0] != "* SEARCH" {
		t.Fatalf("SEARCH with a 20 KB literal: %q %q", untagged, status)
	}

	// Refused, synchronising: at once, and the connection goes on.
	for _, tc := range []struct {
		name string
		conn *raw
		cmd  string
		next string
	}{
		{"LOGIN before authentication", e.dialRaw(), "a1 LOGIN {2000000}", "LOGIN " + e.user + " " + e.pass},
		{"CREATE when authenticated", e.raw(), "b1 CREATE {2000000}", "NOOP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.conn.t = t
			fmt.Fprintf(tc.conn.c, "%s\r\n", tc.cmd)
			tag, _, _ := strings.Cut(tc.cmd, " ")
			if l := tc.conn.line(); !strings.HasPrefix(l, tag+" BAD [TOOBIG] ") {
				t.Fatalf("%q, want %s BAD [TOOBIG] and no continuation", l, tag)
			}
			if _, status := tc.conn.try(tc.next); !strings.HasPrefix(status, "OK") {
				t.Errorf("next command: %q", status)
			}
		})
	}
	// Refused, non-synchronising: the connection ends after the answer.
	nonSync := e.raw()
	fmt.Fprintf(nonSync.c, "c1 CREATE {2000000+}\r\n%s\r\nc2 CREATE injected\r\n", strings.Repeat("x", 100))
	nonSync.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(nonSync.r)
	if err != nil || !strings.HasPrefix(string(rest), "c1 BAD [TOOBIG] ") || !strings.Contains(string(rest), "\r\n* BYE ") {
		t.Fatalf("non-synchronising literal too big: %q %v, want BYE and close", rest, err)
	}
	after, err := e.st.Mailboxes(t.Context(), e.acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("mailboxes changed: %d before, %d after", len(before), len(after))
	}
}
