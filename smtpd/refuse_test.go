package smtpd_test

import (
	"context"
	"encoding/base64"
	"net"
	"net/textproto"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TestAuthBeforeTLS checks that 587 neither advertises nor accepts AUTH on
// a plain-text connection.
func TestAuthBeforeTLS(t *testing.T) {
	e := newEnv(t, 1<<20)
	conn, err := net.Dial("tcp", e.addr587)
	if err != nil {
		t.Fatal(err)
	}
	tp := textproto.NewConn(conn)
	defer tp.Close()
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	cmd := func(line string, want int) string {
		t.Helper()
		if err := tp.PrintfLine("%s", line); err != nil {
			t.Fatal(err)
		}
		code, msg, err := tp.ReadResponse(0)
		if code != want {
			t.Fatalf("%s: got %d %s (%v), want %d", line, code, msg, err, want)
		}
		return msg
	}
	if ehlo := cmd("EHLO client", 250); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO before TLS offers AUTH or lacks STARTTLS:\n%s", ehlo)
	}
	cred := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.org\x00" + e.alicePass))
	cmd("AUTH PLAIN "+cred, 523)
	cmd("MAIL FROM:<alice@example.org>", 530)
	if n, err := e.st.AuthEvents(context.Background(), e.alice.ID, 10); err != nil || len(n) != 0 {
		t.Errorf("a password sent in clear text reached the store: %v %v", n, err)
	}
}

func TestRefused(t *testing.T) {
	e := newEnv(t, 64<<10)
	ctx := context.Background()
	revokedPass, ap, err := e.st.CreateAppPassword(ctx, e.alice.ID, "old phone")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.RevokeAppPassword(ctx, e.alice.ID, ap.ID); err != nil {
		t.Fatal(err)
	}
	good := crlf("From: alice@example.org\nSubject: s\n\nbody\n")
	for _, tc := range []struct {
		name      string
		user      string
		pass      string // "" = no AUTH
		login     bool   // use sasl LOGIN instead of PLAIN
		from      string
		rcpt      []string
		msg       string
		wantCode  int
		wantEnh   smtp.EnhancedCode
		wantInMsg string
	}{
		{name: "wrong password", user: "alice@example.org", pass: "aaaa-bbbb-cccc-dddd", wantCode: 535, wantEnh: smtp.EnhancedCode{5, 7, 8}, wantInMsg: "not the account's main password"},
		{name: "wrong password LOGIN", user: "alice@example.org", pass: "aaaa-bbbb-cccc-dddd", login: true, wantCode: 535, wantEnh: smtp.EnhancedCode{5, 7, 8}, wantInMsg: "not the account's main password"},
		{name: "revoked app password", user: "alice@example.org", pass: revokedPass, wantCode: 535, wantEnh: smtp.EnhancedCode{5, 7, 8}, wantInMsg: "not the account's main password"},
		{name: "main password", user: "alice@example.org", pass: "main-password-alice@example.org", wantCode: 535, wantEnh: smtp.EnhancedCode{5, 7, 8}, wantInMsg: "not the account's main password"},
		{name: "unknown user", user: "zed@example.org", pass: e.alicePass, wantCode: 535, wantEnh: smtp.EnhancedCode{5, 7, 8}, wantInMsg: "not the account's main password"},
		{name: "MAIL before AUTH", from: "alice@example.org", rcpt: []string{"bob@example.org"}, msg: good,
			wantCode: 530, wantEnh: smtp.EnhancedCode{5, 7, 0}},
		{name: "envelope sender not owned", user: "alice@example.org", pass: e.alicePass, from: "bob@example.org",
			rcpt: []string{"bob@example.org"}, msg: good, wantCode: 550, wantEnh: smtp.EnhancedCode{5, 7, 1}, wantInMsg: "not an address of your account"},
		{name: "From header not owned", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"bob@example.org", "carol@remote.test"}, msg: crlf("From: Bob <bob@example.org>\nSubject: s\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 7, 1}, wantInMsg: "From header"},
		{name: "second From address not owned", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"carol@remote.test"}, msg: crlf("From: alice@example.org, bob@example.org\nSubject: s\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 7, 1}},
		{name: "no From header", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"bob@example.org"}, msg: crlf("Subject: s\n\nbody\n"), wantCode: 550, wantEnh: smtp.EnhancedCode{5, 6, 0}},
		// DKIM signs the last From field and clients may show either: the
		// header must have exactly one (RFC 5322 §3.6).
		{name: "two From fields", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"carol@remote.test"}, msg: crlf("From: alice@example.org\nSubject: s\nFrom: bob@example.org\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 6, 0}, wantInMsg: "several From fields"},
		{name: "two From fields, both owned", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"bob@example.org"}, msg: crlf("From: alice@example.org\nFrom: alice+x@example.org\nSubject: s\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 6, 0}},
		{name: "two Sender fields", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"bob@example.org"}, msg: crlf("From: alice@example.org\nSender: alice@example.org\nSender: alice+y@example.org\nSubject: s\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 6, 0}, wantInMsg: "several Sender fields"},
		{name: "Sender not owned", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"carol@remote.test"}, msg: crlf("From: alice@example.org\nSender: bob@example.org\nSubject: s\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 7, 1}, wantInMsg: "bob@example.org"},
		{name: "Sender unparseable", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"carol@remote.test"}, msg: crlf("From: alice@example.org\nSender: <<<bob@example.org\nSubject: s\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 6, 0}},
		{name: "Sender with two addresses", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"carol@remote.test"}, msg: crlf("From: alice@example.org\nSender: alice@example.org, alice+z@example.org\nSubject: s\n\nbody\n"),
			wantCode: 550, wantEnh: smtp.EnhancedCode{5, 6, 0}},
		{name: "unknown local recipient", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"nobody@example.org"}, msg: good, wantCode: 550, wantEnh: smtp.EnhancedCode{5, 1, 1}},
		{name: "over SIZE", user: "alice@example.org", pass: e.alicePass, from: "alice@example.org",
			rcpt: []string{"bob@example.org", "carol@remote.test"}, msg: good + strings.Repeat("0123456789abcdef012345678901234567890123456789abcdef0123456789\r\n", 1100),
			wantCode: 552, wantEnh: smtp.EnhancedCode{5, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			var err error
			if tc.pass != "" {
				if tc.login {
					err = c.Auth(sasl.NewLoginClient(tc.user, tc.pass))
				} else {
					err = c.Auth(sasl.NewPlainClient("", tc.user, tc.pass))
				}
			}
			if err == nil && tc.from != "" {
				err = send(c, tc.from, tc.rcpt, tc.msg)
			}
			var se *smtp.SMTPError
			if !errorsAs(err, &se) || se.Code != tc.wantCode {
				t.Fatalf("got %v, want code %d", err, tc.wantCode)
			}
			if tc.wantEnh != (smtp.EnhancedCode{}) && se.EnhancedCode != tc.wantEnh {
				t.Errorf("enhanced code %v, want %v", se.EnhancedCode, tc.wantEnh)
			}
			if !strings.Contains(se.Message, tc.wantInMsg) {
				t.Errorf("reply %q lacks %q", se.Message, tc.wantInMsg)
			}
		})
	}
	// Nothing was stored or queued by any refused attempt.
	if n, err := e.st.CountMessageContents(ctx); err != nil || n != 0 {
		t.Errorf("%d message contents stored (%v), want 0", n, err)
	}
	if n := e.queueLen(t); n != 0 {
		t.Errorf("%d queued, want 0", n)
	}

	t.Run("SIZE declared too big", func(t *testing.T) {
		c := e.login(t, true, "alice@example.org", e.alicePass)
		if size, ok := c.MaxMessageSize(); !ok || size != 64<<10 {
			t.Errorf("SIZE advertised as %d %v", size, ok)
		}
		if err := c.Mail("alice@example.org", &smtp.MailOptions{Size: 1 << 20}); smtpCode(err) != 552 {
			t.Errorf("MAIL SIZE=1MiB: %v, want 552", err)
		}
	})
	t.Run("LOGIN works", func(t *testing.T) {
		c := e.dial(t, false)
		if err := c.Auth(sasl.NewLoginClient("alice@example.org", e.alicePass)); err != nil {
			t.Fatal(err)
		}
	})
	// A login revoked during a session is refused by the first command
	// that reads the store (RCPT of a local recipient, else DATA), before
	// anything is delivered or queued; later commands need AUTH again.
	for _, tc := range []struct {
		name         string
		rcpt         string
		revokeBefore string // the command the revocation comes before
		wantAt       string // the command refused with 535
	}{
		{"local recipient, revoked before MAIL", "bob@example.org", "MAIL", "RCPT"},
		{"local recipient, revoked before DATA", "bob@example.org", "DATA", "DATA"},
		{"unknown local recipient, revoked before RCPT", "nobody@example.org", "RCPT", "RCPT"},
		{"remote recipient, revoked before RCPT", "carol@remote.example", "RCPT", "DATA"},
	} {
		t.Run("revoked during session: "+tc.name, func(t *testing.T) {
			pass, ap, err := e.st.CreateAppPassword(ctx, e.alice.ID, "laptop")
			if err != nil {
				t.Fatal(err)
			}
			bobBefore := len(e.inbox(t, e.bob))
			queuedBefore, err := e.st.QueueEntries(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c := e.login(t, true, "alice@example.org", pass)
			step := func(cmd string, run func() error) (refused bool) {
				t.Helper()
				if cmd == tc.revokeBefore {
					if err := e.st.RevokeAppPassword(ctx, e.alice.ID, ap.ID); err != nil {
						t.Fatal(err)
					}
				}
				err := run()
				if cmd == tc.wantAt {
					if smtpCode(err) != 535 {
						t.Fatalf("%s after revocation: %v, want 535", cmd, err)
					}
					return true
				}
				if err != nil {
					t.Fatalf("%s: %v", cmd, err)
				}
				return false
			}
			refused := step("MAIL", func() error { return c.Mail("alice@example.org", nil) }) ||
				step("RCPT", func() error { return c.Rcpt(tc.rcpt, nil) }) ||
				step("DATA", func() error {
					w, err := c.Data()
					if err != nil {
						return err
					}
					if _, err := w.Write([]byte(good)); err != nil {
						return err
					}
					return w.Close()
				})
			if !refused {
				t.Fatal("nothing refused")
			}
			if err := c.Mail("alice@example.org", nil); smtpCode(err) != 530 {
				t.Errorf("MAIL after the refusal: %v, want 530 (authentication required)", err)
			}
			if n := len(e.inbox(t, e.bob)); n != bobBefore {
				t.Errorf("bob's INBOX went from %d to %d messages", bobBefore, n)
			}
			if q, err := e.st.QueueEntries(ctx); err != nil || len(q) != len(queuedBefore) {
				t.Errorf("queue went from %d to %d rows (%v)", len(queuedBefore), len(q), err)
			}
		})
	}
	// The activity log saw the SMTP attempts with the client IP.
	evs, err := e.st.AuthEvents(ctx, e.alice.ID, 50)
	if err != nil || len(evs) == 0 || evs[0].Protocol != "smtp" || evs[0].RemoteIP != "127.0.0.1" {
		t.Errorf("activity log: %+v %v", evs, err)
	}
}
