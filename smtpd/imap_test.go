package smtpd_test

import (
	"strings"
	"testing"
)

// TestSubmitVisibleOverIMAP: a message submitted on 587 is in the
// recipient's INBOX over IMAP as soon as the 250 came back.
func TestSubmitVisibleOverIMAP(t *testing.T) {
	e := newEnv(t, 1<<20)
	imapAddr := e.imapServer(t)

	c := e.login(t, false, "alice@example.org", e.alicePass)
	msg := crlf("From: alice@example.org\nTo: bob@example.org\nSubject: over imap\n\nHi.\n")
	if err := send(c, "alice@example.org", []string{"bob@example.org"}, msg); err != nil {
		t.Fatal(err)
	}

	body := fetchOverIMAP(t, e, imapAddr, 1)
	if !strings.HasPrefix(body, "Received: ") || !strings.HasSuffix(body, msg) {
		t.Errorf("message over IMAP:\n%s", body)
	}
}
