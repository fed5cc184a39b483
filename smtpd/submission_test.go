package smtpd_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestSubmitLocal(t *testing.T) {
	for _, tc := range []struct {
		name        string
		implicitTLS bool
	}{{"465", true}, {"587", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1<<20)
			c := e.login(t, tc.implicitTLS, "alice@example.org", e.alicePass)
			msg := crlf("From: Alice <alice@example.org>\nTo: bob@example.org\nSubject: hi\n\nHello Bob.\n.dot line\n")
			if err := send(c, "alice@example.org", []string{"bob@example.org"}, msg); err != nil {
				t.Fatal(err)
			}
			got := e.inbox(t, e.bob)
			if len(got) != 1 {
				t.Fatalf("bob's INBOX has %d messages, want 1", len(got))
			}
			if !strings.HasSuffix(got[0], msg) {
				t.Fatalf("stored message does not end with the submitted one byte for byte:\n%q", got[0])
			}
			added := strings.TrimSuffix(got[0], msg)
			for _, h := range []string{"Received: from localhost ([127.0.0.1])\r\n\tby mail.example.org (mailstack) with ESMTPSA id ", "\r\nMessage-ID: <", "\r\nDate: "} {
				if !strings.Contains(added, h) {
					t.Errorf("added headers lack %q:\n%s", h, added)
				}
			}
			if n := len(e.inbox(t, e.alice)); n != 0 {
				t.Errorf("alice's INBOX has %d messages; no copy should be filed for the sender", n)
			}
			if n := len(storetest.Mailbox(t, e.st, e.alice.ID, "Sent")); n != 0 {
				t.Errorf("alice's Sent has %d messages; clients file their own copy", n)
			}
		})
	}
}

// TestSubmissionSlowUpload: a client that keeps sending DATA, slowly, for
// longer than the read timeout is not cut off (go-smtp's deadline is set
// once, before DATA); one that stops sending is.
func TestSubmissionSlowUpload(t *testing.T) {
	e := newEnv(t, 1<<20)
	const timeout = 300 * time.Millisecond
	_, addr465 := submissionServers(t, e, func(c *smtpd.Config) { c.ReadTimeout = timeout })
	for _, tc := range []struct {
		name  string
		pause time.Duration // between chunks
		want  int
	}{
		{"trickling", timeout / 3, 250},
		{"stalled", 3 * timeout, 0}, // 451 or 421, or the connection dropped
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, conn := authedRaw(t, e, addr465)
			converse(t, tp, "MAIL FROM:<alice@example.org>", 250, "RCPT TO:<bob@example.org>", 250, "DATA", 354)
			chunks := 12 // 12 × timeout/3 = 4 × the read timeout in all
			if tc.want == 0 {
				chunks = 2
			}
			if _, err := io.WriteString(conn, "From: alice@example.org\r\nSubject: "+tc.name+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			for i := range chunks {
				time.Sleep(tc.pause)
				if _, err := fmt.Fprintf(conn, "line %d of a slow upload\r\n", i); err != nil {
					break // the server gave up on a stalled client
				}
			}
			io.WriteString(conn, ".\r\n") //nolint:errcheck // a stalled client may be gone
			code, msg, _ := tp.ReadResponse(0)
			if tc.want == 250 {
				if code != 250 {
					t.Fatalf("slow but steady upload got %d %s, want 250", code, msg)
				}
				got := e.inbox(t, e.bob)
				if len(got) != 1 || !strings.Contains(got[0], "line 11 of a slow upload\r\n") {
					t.Fatalf("bob's INBOX: %q", got)
				}
				return
			}
			if code == 250 {
				t.Fatalf("stalled upload accepted: %s", msg)
			}
		})
	}
}
