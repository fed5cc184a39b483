package smtpd_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/store"
)

// TestMXQuotaAtRcpt: a full mailbox defers its own recipient at RCPT
// (452 4.2.2), as Postfix with Dovecot's quota service does; the other
// recipients of the message get it.
func TestMXQuotaAtRcpt(t *testing.T) {
	e := newMXEnv(t, nil)
	ctx := context.Background()
	full, err := e.st.CreateAccount(ctx, "full@example.org", "main-password-full", store.AccountOptions{QuotaBytes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	// 1,500 bytes in the mailbox: room for a small message, not for 1 KB.
	first := crlf("From: a@nospf.example\nSubject: filler\n\n") + strings.Repeat("x", 1500-300) + "\r\n"
	if err := send(e.dial(t, "client.example", false), "a@nospf.example", []string{"full@example.org"}, first); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t, "client.example", false)
	if err := c.Mail("a@nospf.example", &smtp.MailOptions{Size: 1000}); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Rcpt("full@example.org", nil); !errorsAs(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 2, 2}) {
		t.Fatalf("RCPT for a full mailbox: %v, want 452 4.2.2", err)
	}
	if err := c.Rcpt("bob@example.org", nil); err != nil {
		t.Fatalf("RCPT for another recipient after the full one: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, crlf("From: a@nospf.example\nSubject: second\n\n")+strings.Repeat("y", 700)+"\r\n")
	if err := w.Close(); err != nil {
		t.Fatalf("DATA for the remaining recipient: %v", err)
	}
	if box, _ := e.find(t, e.bob.ID, "Subject: second"); box != "INBOX" {
		t.Errorf("bob's copy stored in %q", box)
	}
	if box, _ := e.find(t, full.ID, "Subject: second"); box != "" {
		t.Errorf("the full mailbox got the message in %q", box)
	}
	// Without a declared size, the message is accepted if anything fits.
	c2 := e.dial(t, "client.example", false)
	if err := c2.Mail("a@nospf.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c2.Rcpt("full@example.org", nil); err != nil {
		t.Errorf("RCPT without SIZE for a mailbox with room: %v", err)
	}
}

// TestRcptErrorLimit: after 20 refused recipients in one session (across
// transactions) the server says 421 and hangs up, on the MX and on
// submission.
func TestRcptErrorLimit(t *testing.T) {
	e := newMXEnv(t, nil)
	run := func(t *testing.T, tp *textproto.Conn, from string) {
		t.Helper()
		converse(t, tp, "MAIL FROM:<"+from+">", 250, "RCPT TO:<bob@example.org>", 250)
		for i := 1; i < 20; i++ {
			if i == 10 { // RSET does not reset the count
				converse(t, tp, "RSET", 250, "MAIL FROM:<"+from+">", 250)
			}
			if code, msg := cmd(t, tp, fmt.Sprintf("RCPT TO:<nobody%d@example.org>", i)); code != 550 {
				t.Fatalf("refusal %d: %d %s", i, code, msg)
			}
		}
		if code, msg := cmd(t, tp, "RCPT TO:<nobody20@example.org>"); code != 421 || !strings.HasPrefix(msg, "4.7.0") {
			t.Fatalf("20th refusal: %d %s, want 421 4.7.0", code, msg)
		}
		if _, _, err := tp.ReadResponse(0); err == nil {
			t.Fatal("the connection stayed open")
		}
	}
	t.Run("mx", func(t *testing.T) {
		tp := rawDial(t, e.addr)
		converse(t, tp, "EHLO client.example", 250)
		run(t, tp, "a@nospf.example")
	})
	t.Run("submission", func(t *testing.T) {
		tp, _ := authedRaw(t, e.env, e.addr465)
		run(t, tp, "alice@example.org")
	})
}

// authedRaw opens an implicit-TLS submission connection and logs in as
// alice with AUTH PLAIN; it returns the connection, raw and as text.
func authedRaw(t testing.TB, e *env, addr string) (*textproto.Conn, net.Conn) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, e.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	tp := rawConn(t, conn)
	cred := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.org\x00" + e.alicePass))
	converse(t, tp, "EHLO client.example", 250, "AUTH PLAIN "+cred, 235)
	return tp, conn
}

// TestSubmissionLimits: the 101st recipient of a message is refused
// (452 4.5.3), an idle client is dropped after the command timeout, and
// too many failed logins are answered 454 4.7.0 over SMTP.
func TestSubmissionLimits(t *testing.T) {
	e := newEnv(t, 1<<20)
	t.Run("101st recipient", func(t *testing.T) {
		c := e.login(t, true, "alice@example.org", e.alicePass)
		if err := c.Mail("alice@example.org", nil); err != nil {
			t.Fatal(err)
		}
		for i := range smtpd.DefaultMaxRecipients {
			if err := c.Rcpt(fmt.Sprintf("bob+%d@example.org", i), nil); err != nil {
				t.Fatalf("recipient %d: %v", i+1, err)
			}
		}
		var se *smtp.SMTPError
		if err := c.Rcpt("carol@remote.test", nil); !errorsAs(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 5, 3}) {
			t.Fatalf("101st recipient: %v, want 452 4.5.3", err)
		}
	})
	t.Run("command timeout", func(t *testing.T) {
		_, addr465 := submissionServers(t, e, func(c *smtpd.Config) { c.ReadTimeout = 200 * time.Millisecond })
		tp, _ := authedRaw(t, e, addr465)
		time.Sleep(500 * time.Millisecond)
		if code, msg, _ := tp.ReadResponse(0); code != 421 {
			t.Errorf("idle client got %d %s, want 421", code, msg)
		}
	})
	t.Run("throttled login", func(t *testing.T) {
		// A store with a low account limit, so the test needs few failures.
		st, err := store.Open(context.Background(), e.url, store.Options{
			Throttle: store.ThrottlePolicy{FreeFailures: 10, AccountLimit: 2, IPLimit: 100}, Logger: smtptest.Logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		_, addr465 := submissionServers(t, e, func(c *smtpd.Config) { c.Store = st })
		auth := func(pass string) error {
			c, err := smtp.DialTLS(addr465, e.clientTLS)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			return c.Auth(sasl.NewPlainClient("", "bob@example.org", pass))
		}
		for range 2 {
			if err := auth("wrong-wrong-wrong-wrong"); smtpCode(err) != 535 {
				t.Fatalf("wrong password: %v, want 535", err)
			}
		}
		var se *smtp.SMTPError
		if err := auth("wrong-wrong-wrong-wrong"); !errorsAs(err, &se) || se.Code != 454 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 0}) {
			t.Fatalf("login after too many failures: %v, want 454 4.7.0", err)
		}
	})
}
