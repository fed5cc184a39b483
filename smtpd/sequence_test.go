package smtpd_test

import (
	"context"
	"net/textproto"
	"strings"
	"testing"
)

// TestNestedMail: a second MAIL inside a transaction is refused with
// 503 5.5.1 and the transaction goes on (RFC 5321 §4.1.4, as Postfix's
// "nested MAIL command"): the recipients given so far still get the
// message. It once reset the envelope while go-smtp kept the recipients,
// so DATA was answered 250 for a message stored for no one.
func TestNestedMail(t *testing.T) {
	e := newMXEnv(t, nil)
	ctx := context.Background()
	mx := func(t *testing.T) *textproto.Conn {
		tp := rawDial(t, e.addr)
		converse(t, tp, "EHLO client.example", 250)
		return tp
	}
	submission := func(t *testing.T) *textproto.Conn {
		tp, _ := authedRaw(t, e.env, e.addr465)
		return tp
	}
	for _, tc := range []struct {
		name        string
		dial        func(t *testing.T) *textproto.Conn
		from, from2 string
	}{
		{"mx", mx, "a@nospf.example", "b@nospf.example"},
		{"mx null sender first", mx, "", "b@nospf.example"},
		{"submission", submission, "alice@example.org", "alice@example.org"},
		{"submission, second sender not owned", submission, "alice@example.org", "bob@example.org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := e.st.CountMessageContents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tp := tc.dial(t)
			marker := "nested " + tc.name
			from := "a@nospf.example"
			if strings.HasPrefix(tc.name, "submission") {
				from = "alice@example.org"
			}
			converse(t, tp, "MAIL FROM:<"+tc.from+">", 250, "RCPT TO:<bob@example.org>", 250)
			if code, msg := cmd(t, tp, "MAIL FROM:<"+tc.from2+">"); code != 503 || !strings.HasPrefix(msg, "5.5.1") {
				t.Errorf("nested MAIL: %d %s, want 503 5.5.1", code, msg)
			}
			converse(t, tp, "DATA", 354, "From: "+from+"\r\nSubject: "+marker+"\r\n\r\nx\r\n.", 250)
			if box, _ := e.find(t, e.bob.ID, marker); box == "" {
				t.Error("250 for a message bob did not get")
			}
			if after, _ := e.st.CountMessageContents(ctx); after != before+1 {
				t.Errorf("%d content rows added, want 1", after-before)
			}
			// After the transaction, MAIL starts a new one.
			converse(t, tp, "MAIL FROM:<"+tc.from+">", 250, "RSET", 250, "MAIL FROM:<"+tc.from+">", 250)
		})
	}
}
