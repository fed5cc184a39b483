package smtpd_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"github.com/mailstack/mailstack/smtpd"
	"net/textproto"
	"strings"
	"testing"
	"time"
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

// TestAuthMalformed: a SASL response that decodes but is not what the
// mechanism expects is refused with 501 5.5.2 (RFC 4954 §4), not 454,
// which tells a client to try again later; the session may then log in.
func TestAuthMalformed(t *testing.T) {
	e := newEnv(t, 1<<20)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	good := "AUTH PLAIN " + b64("\x00alice@example.org\x00"+e.alicePass)
	for _, tc := range []struct {
		name  string
		lines []string // the last one gets 501 5.5.2
	}{
		{"PLAIN without NULs", []string{"AUTH PLAIN " + b64("alice@example.org")}},
		{"PLAIN with one NUL", []string{"AUTH PLAIN " + b64("alice@example.org\x00"+e.alicePass)}},
		{"PLAIN empty initial response", []string{"AUTH PLAIN ="}},
		{"PLAIN empty after challenge", []string{"AUTH PLAIN", "="}},
		{"PLAIN without NULs after challenge", []string{"AUTH PLAIN", b64("x")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", e.addr465, e.clientTLS)
			if err != nil {
				t.Fatal(err)
			}
			tp := rawConn(t, conn)
			converse(t, tp, "EHLO client.example", 250)
			for _, l := range tc.lines[:len(tc.lines)-1] {
				converse(t, tp, l, 334)
			}
			if code, msg := cmd(t, tp, tc.lines[len(tc.lines)-1]); code != 501 || !strings.HasPrefix(msg, "5.5.2") {
				t.Errorf("got %d %s, want 501 5.5.2", code, msg)
			}
			converse(t, tp, good, 235)
		})
	}
}

// bdat returns a BDAT command with chunk for converse, which ends it with
// the chunk's own final CRLF.
func bdat(chunk, last string) string {
	return fmt.Sprintf("BDAT %d%s\r\n%s", len(chunk), last, strings.TrimSuffix(chunk, "\r\n"))
}

// TestBDATAborted: a client may end a BDAT transfer with RSET or QUIT
// (RFC 3030 §2); that is logged as nothing worse than debug, nothing is
// stored, and after RSET the next message goes through.
func TestBDATAborted(t *testing.T) {
	e := newEnv(t, 1<<20)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mx   bool
		end  string
	}{
		{"mx RSET", true, "RSET"},
		{"mx QUIT", true, "QUIT"},
		{"submission RSET", false, "RSET"},
		{"submission QUIT", false, "QUIT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logLines{}
			var tp *textproto.Conn
			from := "alice@example.org"
			if tc.mx {
				mx := smtpd.NewMX(smtpd.Config{Store: e.st, Hostname: mxHost, Log: logs.logger("mx")}, smtpd.MXOptions{Resolver: newFakeDNS()})
				tp = rawDial(t, serve(t, mx.Server()))
				from = "a@nospf.example"
				converse(t, tp, "EHLO client.example", 250)
			} else {
				_, addr465 := submissionServers(t, e, func(c *smtpd.Config) { c.Log = logs.logger("submission") })
				tp, _ = authedRaw(t, e, addr465)
			}
			before, err := e.st.CountMessageContents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			chunk := "From: " + from + "\r\n"
			converse(t, tp, "MAIL FROM:<"+from+">", 250, "RCPT TO:<bob@example.org>", 250,
				bdat(chunk, ""), 250, tc.end, map[string]int{"RSET": 250, "QUIT": 221}[tc.end])
			if tc.end == "RSET" {
				msg := "From: " + from + "\r\nSubject: after " + tc.name + "\r\n\r\nx\r\n"
				converse(t, tp, "MAIL FROM:<"+from+">", 250, "RCPT TO:<bob@example.org>", 250,
					bdat(msg, " LAST"), 250)
				if after, _ := e.st.CountMessageContents(ctx); after != before+1 {
					t.Errorf("%d contents stored, want 1", after-before)
				}
			}
			tp.Close()
			time.Sleep(100 * time.Millisecond) // the aborted Data may log after the reply
			for _, l := range logs.lines(t) {
				if l["level"] != "DEBUG" && l["level"] != "INFO" {
					t.Errorf("logged: %s", l)
				}
			}
		})
	}
}

// An authenticated user cannot send to an address literal: 550 5.1.2, and
// the transaction goes on for the other recipients.
func TestSubmissionAddressLiteral(t *testing.T) {
	e := newMXEnv(t, nil)
	for _, rcpt := range []string{"x@[127.0.0.1]", "x@[IPv6:::1]", "x@[10.1.2.3]"} {
		t.Run(rcpt, func(t *testing.T) {
			tp, _ := authedRaw(t, e.env, e.addr465)
			converse(t, tp, "MAIL FROM:<alice@example.org>", 250, "RCPT TO:<"+rcpt+">", 550, "RCPT TO:<bob@example.org>", 250)
		})
	}
}
