package smtpd_test

import (
	"context"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/store"
)

// TestVacationReply: mail through the MX to an account on vacation gets
// one reply per sender per interval, DKIM-signed by the account's domain,
// with a null return path, queued for the remote sender (or delivered to
// a local one); lists, bulk and automatic mail, mail not addressed to the
// account in To or Cc, mail from the account itself, Junk, and mail
// outside the vacation's dates get none.
func TestVacationReply(t *testing.T) {
	ctx := context.Background()
	e := newMXEnv(t, nil)
	e.dns.set("remote.example", "v=spf1 ip4:127.0.0.1 -all")
	e.dns.set("spf-fail.example", "v=spf1 ip4:192.0.2.1 -all")
	e.dns.set("_dmarc.spf-fail.example", "v=DMARC1; p=quarantine")
	if err := e.st.CreateAlias(ctx, "al@example.org", "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	pub, err := dkimkey.TXTRecord(e.domain.DKIMKey)
	if err != nil {
		t.Fatal(err)
	}
	e.dns.set("mailstack._domainkey.example.org", pub)
	signer, err := dkimkey.Signer(e.domain.DKIMKey)
	if err != nil {
		t.Fatal(err)
	}
	const text = "I am away until Monday.\nÜrgent matters: call Bob."
	if err := e.st.SetVacation(ctx, e.alice.ID, store.Vacation{Enabled: true, Subject: "Away – back Monday", Body: text, IntervalDays: 7}); err != nil {
		t.Fatal(err)
	}
	n := 0
	deliver := func(from, to, extra string) {
		t.Helper()
		n++
		msg := crlf(fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: question %d\nMessage-ID: <q%d@remote.example>\n%s\nhello\n", from, to, n, n, extra))
		if strings.HasSuffix(from, "@example.org") {
			// Mail of our own domain passes DMARC only when signed
			// with its key, as it would from another server.
			var b strings.Builder
			if err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: "example.org", Selector: "mailstack", Signer: signer}); err != nil {
				t.Fatal(err)
			}
			msg = b.String()
		}
		if err := send(e.dial(t, "remote.example", false), from, []string{"alice@example.org"}, msg); err != nil {
			t.Fatalf("send %d: %v", n, err)
		}
	}
	queued := func() []store.QueuedMessage {
		t.Helper()
		q, err := e.st.QueueEntries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}

	deliver("carol@remote.example", "alice@example.org", "")
	q := queued()
	if len(q) != 1 || q[0].RcptTo != "carol@remote.example" || q[0].MailFrom != "" || q[0].AccountID != e.alice.ID {
		t.Fatalf("queue after the first message: %+v", q)
	}
	body, _, err := e.st.OpenQueued(ctx, q[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	content, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	reply := string(content)
	h := header(t, reply)
	for key, want := range map[string]string{
		"From": "<alice@example.org>", "To": "<carol@remote.example>", "Auto-Submitted": "auto-replied",
		"In-Reply-To": "<q1@remote.example>", "References": "<q1@remote.example>",
		"Subject": "=?utf-8?q?Away_=E2=80=93_back_Monday?=",
	} {
		if got := h.Get(key); got != want {
			t.Errorf("reply %s: %q, want %q", key, got, want)
		}
	}
	_, qpBody, _ := strings.Cut(reply, "\r\n\r\n")
	decoded, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(qpBody)))
	if err != nil || strings.ReplaceAll(string(decoded), "\r\n", "\n") != text+"\n" {
		t.Errorf("reply text %q, %v", decoded, err)
	}
	// The signature verifies with the domain's published key.
	verifs, err := dkim.VerifyWithOptions(strings.NewReader(reply), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		if name != "mailstack._domainkey.example.org" {
			return nil, fmt.Errorf("unexpected lookup %s", name)
		}
		return []string{pub}, nil
	}})
	if err != nil || len(verifs) != 1 || verifs[0].Err != nil || verifs[0].Domain != "example.org" {
		t.Errorf("DKIM of the reply: %+v, %v", verifs, err)
	}

	// Each of these gets no reply.
	for _, tc := range []struct{ from, to, extra string }{
		{"carol@remote.example", "alice@example.org", ""},                                 // answered within the interval
		{"dave@remote.example", "alice@example.org", "List-Id: <friends.remote.example>"}, // a list
		{"dave@remote.example", "alice@example.org", "Precedence: bulk"},
		{"dave@remote.example", "alice@example.org", "Auto-Submitted: auto-generated"},
		{"owner-friends@remote.example", "alice@example.org", ""},
		{"dave-request@remote.example", "alice@example.org", ""},
		{"mailer-daemon@remote.example", "alice@example.org", ""},
		{"dave@remote.example", "friends@remote.example", ""}, // alice only in Bcc
		{"eve@spf-fail.example", "alice@example.org", ""},     // Junk
		{"al@example.org", "alice@example.org", ""},           // herself (an alias of hers)
		{"alice@example.org", "alice@example.org", ""},        // herself
	} {
		deliver(tc.from, tc.to, tc.extra)
		if q := queued(); len(q) != 1 {
			t.Errorf("from %s to %s with %q: %d queued", tc.from, tc.to, tc.extra, len(q))
		}
	}
	// An alias or a +tag of hers in To counts; a null sender never.
	deliver("frank@remote.example", "Al+news@example.org", "")
	if q := queued(); len(q) != 2 || q[1].RcptTo != "frank@remote.example" {
		t.Errorf("via alias+tag in To: %+v", q)
	}
	if err := send(e.dial(t, "remote.example", false), "", []string{"alice@example.org"},
		crlf("From: <x@remote.example>\nTo: <alice@example.org>\nSubject: bounce\n\nhello\n")); err != nil {
		t.Fatal(err)
	}
	if q := queued(); len(q) != 2 {
		t.Errorf("null sender: %d queued", len(q))
	}
	// A local sender (bob) gets the reply in his INBOX, not the queue.
	deliver("bob@example.org", "alice@example.org", "")
	if box, _ := e.find(t, e.bob.ID, "Away"); box != "INBOX" {
		t.Errorf("bob's reply in %q", box)
	}
	// Saving the settings again answers everyone again; outside the
	// dates, nobody.
	yesterday := time.Now().AddDate(0, 0, -1)
	if err := e.st.SetVacation(ctx, e.alice.ID, store.Vacation{Enabled: true, Body: "x", IntervalDays: 7, Ends: &yesterday}); err != nil {
		t.Fatal(err)
	}
	deliver("carol@remote.example", "alice@example.org", "")
	if q := queued(); len(q) != 2 {
		t.Errorf("after the last day: %d queued", len(q))
	}
	if err := e.st.SetVacation(ctx, e.alice.ID, store.Vacation{Enabled: true, Body: "x", IntervalDays: 7}); err != nil {
		t.Fatal(err)
	}
	deliver("carol@remote.example", "alice@example.org", "")
	q = queued()
	if len(q) != 3 {
		t.Fatalf("after new settings: %d queued", len(q))
	}
	_, hdr, err := e.st.OpenQueued(ctx, q[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	if h := header(t, string(hdr)+"\r\n"); h.Get("Subject") != fmt.Sprintf("Auto: question %d", n) {
		t.Errorf("default subject: %q", h.Get("Subject"))
	}
}
