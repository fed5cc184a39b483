package rspamd_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/internal/rspamd/rspamdtest"
)

// GTUBE and its variants rspamd knows with enable_test_patterns: X
// rejects, Y adds a header.
const (
	gtubeReject    = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeAddHeader = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

func message(subject, body string) string {
	return strings.ReplaceAll("From: Sender <sender@sender.example>\nTo: rcpt@example.org\nSubject: "+subject+
		"\nMessage-ID: <"+subject+"@sender.example>\nDate: Sat, 05 Dec 2026 21:00:00 +0000\n\n"+body+"\n", "\n", "\r\n")
}

func client(t *testing.T, url, ctrl string) *rspamd.Client {
	t.Helper()
	c, err := rspamd.New(rspamd.Config{URL: url, ControllerURL: ctrl, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheck: the verdicts of a real rspamd on GTUBE, its add-header
// variant and an ordinary message.
func TestCheck(t *testing.T) {
	srv := rspamdtest.Start(t)
	c := client(t, srv.URL, srv.ControllerURL)
	env := rspamd.Envelope{IP: "127.0.0.1", Helo: "mail.sender.example", MailFrom: "sender@sender.example",
		Rcpts: []string{"rcpt@example.org"}, User: "rcpt@example.org", QueueID: "test1"}
	for _, tc := range []struct {
		name, body string
		action     string
		spam       bool
	}{
		{"gtube", gtubeReject, rspamd.ActionReject, true},
		{"addheader", gtubeAddHeader, rspamd.ActionAddHeader, true},
		{"clean", "Hello Bob, are we still on for lunch on Tuesday? I can bring the report we talked about.", rspamd.ActionNoAction, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := message(tc.name, tc.body)
			res, err := c.Check(context.Background(), env, strings.NewReader(msg), int64(len(msg)))
			if err != nil {
				t.Fatal(err)
			}
			if res.Action != tc.action || res.Spam() != tc.spam {
				t.Errorf("action %q (spam %v), want %q: %+v", res.Action, res.Spam(), tc.action, res)
			}
		})
	}
}

// TestCheckDown: no rspamd listening is an error at once, not a hang.
func TestCheckDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := client(t, "http://"+addr, "")
	msg := message("down", "text")
	if _, err := c.Check(context.Background(), rspamd.Envelope{}, strings.NewReader(msg), int64(len(msg))); err == nil {
		t.Fatal("check succeeded with nothing listening")
	}
	if err := c.Learn(context.Background(), true, "u@example.org", strings.NewReader(msg), int64(len(msg))); err == nil || errors.Is(err, rspamd.ErrRefused) {
		t.Fatalf("learn with nothing listening: %v, want a retryable error", err)
	}
}
