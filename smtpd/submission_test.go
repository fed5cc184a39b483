package smtpd_test

import (
	"strings"
	"testing"
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
			if n := len(mailbox(t, e.st, e.alice.ID, "Sent")); n != 0 {
				t.Errorf("alice's Sent has %d messages; clients file their own copy", n)
			}
		})
	}
}
