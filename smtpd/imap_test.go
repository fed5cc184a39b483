package smtpd_test

import (
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
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

	ic, err := imapclient.DialTLS(imapAddr, &imapclient.Options{TLSConfig: e.clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login("bob@example.org", e.bobPass).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := ic.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("SELECT INBOX: %+v %v", sel, err)
	}
	section := &imap.FetchItemBodySection{}
	msgs, err := ic.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %v %v", msgs, err)
	}
	body := string(msgs[0].FindBodySection(section))
	if !strings.HasPrefix(body, "Received: ") || !strings.HasSuffix(body, msg) {
		t.Errorf("message over IMAP:\n%s", body)
	}
}
