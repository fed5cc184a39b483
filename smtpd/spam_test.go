package smtpd_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/imapd"
	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/internal/rspamd/rspamdtest"
	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// rspamd's GTUBE and the variants it answers "add header" and "rewrite
// subject" for (with enable_test_patterns, as rspamdtest configures).
const (
	gtube          = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeAddHeader = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeRewrite   = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

// prose is an ordinary message body, long enough for rspamd's Bayes
// classifier to learn from (it skips messages of few words).
const prose = `Hello Bob,

thank you for the notes from Thursday's meeting. I went through the budget
figures again this morning and the numbers for the second quarter look
right to me, apart from the travel costs, which seem to include the
conference in October twice. Could you check with accounting before Friday?
Also, the new printer on the third floor is finally working, so we can print
the handouts there instead of going to the copy shop down the street.

See you at lunch,
Anna`

// rspamdClient returns a client of srv with a short scan timeout.
func rspamdClient(t testing.TB, url, controller string, timeout time.Duration) *rspamd.Client {
	t.Helper()
	c, err := rspamd.New(rspamd.Config{URL: url, ControllerURL: controller, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// spamMessage returns a message from a@spf-pass.example (SPF passes for
// 127.0.0.1) to bob with the given extra header fields and body.
func spamMessage(marker, fields, body string) string {
	return crlf(fmt.Sprintf("From: Anna <a@spf-pass.example>\nTo: bob@example.org\nSubject: notes %s\nMessage-ID: %s\nDate: %s\n%s\n%s\n",
		marker, marker, time.Now().Format(time.RFC1123Z), fields, body))
}

// TestMXRspamd: with rspamd scanning at the MX, GTUBE is refused with 550,
// a soft reject deferred with 451, an ordinary message goes to INBOX, one rspamd marks "add header" to Junk,
// each with our X-Spam fields (forged ones removed); with rspamd stopped,
// mail is still delivered, marked as not scanned, and counted.
func TestMXRspamd(t *testing.T) {
	srv := rspamdtest.Start(t)
	m := metrics.New(nil)
	e := newMXEnv(t, func(c *smtpd.Config, o *smtpd.MXOptions) {
		c.Metrics = m
		o.Rspamd = rspamdClient(t, srv.URL, srv.ControllerURL, 10*time.Second)
	})
	e.dns.set("spf-pass.example", "v=spf1 ip4:127.0.0.1 -all")
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		fields    string // extra header fields
		body      string
		wantCode  int    // refused with
		wantBox   string // else stored in
		wantField string // a header field line the stored message has
	}{
		{name: "gtube", body: "Buy now.\n" + gtube, wantCode: 550},
		{name: "soft reject", fields: "X-Mailstack-Test: soft-reject\n", body: prose, wantCode: 451},
		{name: "clean", body: prose, wantBox: "INBOX", wantField: "X-Spam-Flag: NO"},
		{name: "add header", body: "Special offer.\n" + gtubeAddHeader, wantBox: "Junk", wantField: "X-Spam-Flag: YES"},
		{name: "rewrite subject", body: "Special offer.\n" + gtubeRewrite, wantBox: "Junk", wantField: "X-Spam-Flag: YES"},
		{name: "forged flag removed", fields: "X-Spam-Flag: NO\nX-Spam-Score: -100\n", body: "Special offer.\n" + gtubeAddHeader,
			wantBox: "Junk", wantField: "X-Spam-Flag: YES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := fmt.Sprintf("<rspamd-%d@spf-pass.example>", time.Now().UnixNano())
			msg := spamMessage(marker, tc.fields, tc.body)
			before, err := e.st.CountMessageContents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = send(e.dial(t, "mail.spf-pass.example", false), "a@spf-pass.example", []string{"bob@example.org"}, msg)
			box, stored := e.find(t, e.bob.ID, marker)
			if tc.wantCode != 0 {
				var se *smtp.SMTPError
				wantEnh := smtp.EnhancedCode{tc.wantCode / 100, 7, 1}
				if !errorsAs(err, &se) || se.Code != tc.wantCode || se.EnhancedCode != wantEnh || box != "" {
					t.Fatalf("got %v, stored in %q; want %d %v and nothing stored", err, box, tc.wantCode, wantEnh)
				}
				if want := map[int]string{550: "Gtube pattern", 451: "Try again later (test)"}[tc.wantCode]; !strings.Contains(se.Message, want) {
					t.Errorf("reply %q does not carry rspamd's message %q", se.Message, want)
				}
				if after, _ := e.st.CountMessageContents(ctx); after != before {
					t.Errorf("refused message left %d content rows", after-before)
				}
				return
			}
			if err != nil || box != tc.wantBox {
				t.Fatalf("got %v, stored in %q; want %s", err, box, tc.wantBox)
			}
			h := header(t, stored)
			if got := h.Values("X-Spam-Flag"); len(got) != 1 || "X-Spam-Flag: "+got[0] != tc.wantField {
				t.Errorf("X-Spam-Flag fields %q, want one %q", got, tc.wantField)
			}
			if len(h.Values("X-Spam-Score")) != 1 || len(h.Values("X-Spam-Action")) != 1 {
				t.Errorf("want one X-Spam-Score and X-Spam-Action:\n%s", stored)
			}
			// Stored as sent, but for forged fields of ours.
			if want := strings.Replace(msg, crlf(tc.fields), "", 1); !strings.HasSuffix(stored, want) {
				t.Errorf("message not stored as sent:\n%s", stored)
			}
		})
	}

	srv.Stop(t)
	marker := fmt.Sprintf("<down-%d@spf-pass.example>", time.Now().UnixNano())
	msg := spamMessage(marker, "", prose)
	if err := send(e.dial(t, "mail.spf-pass.example", false), "a@spf-pass.example", []string{"bob@example.org"}, msg); err != nil {
		t.Fatalf("with rspamd stopped: %v", err)
	}
	box, stored := e.find(t, e.bob.ID, marker)
	if box != "INBOX" || !strings.HasSuffix(stored, msg) {
		t.Fatalf("with rspamd stopped: stored in %q:\n%s", box, stored)
	}
	if h := header(t, stored); h.Get("X-Spam-Status") != "not scanned (rspamd unavailable)" {
		t.Errorf("X-Spam-Status %q", h.Get("X-Spam-Status"))
	}
	if n := m.RspamdScans.With("error").Value(); n != 1 {
		t.Errorf("%v scans counted as errors, want 1", n)
	}
	if n := m.RspamdScans.With("reject").Value(); n != 1 {
		t.Errorf("%v scans counted as reject, want 1", n)
	}
}

// TestMXRspamdSlow: an rspamd that never answers costs the scan timeout,
// then the message is delivered unscanned, or deferred with 451 when so
// configured (nothing stored).
func TestMXRspamdSlow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	url := "http://" + ln.Addr().String()
	for _, tempFail := range []bool{false, true} {
		t.Run(fmt.Sprintf("tempfail=%v", tempFail), func(t *testing.T) {
			e := newMXEnv(t, func(_ *smtpd.Config, o *smtpd.MXOptions) {
				o.Rspamd = rspamdClient(t, url, url, 300*time.Millisecond)
				o.RspamdTempFail = tempFail
			})
			e.dns.set("spf-pass.example", "v=spf1 ip4:127.0.0.1 -all")
			marker := fmt.Sprintf("<slow-%d@spf-pass.example>", time.Now().UnixNano())
			err := send(e.dial(t, "mail.spf-pass.example", false), "a@spf-pass.example", []string{"bob@example.org"}, spamMessage(marker, "", prose))
			box, stored := e.find(t, e.bob.ID, marker)
			if tempFail {
				if smtpCode(err) != 451 || box != "" {
					t.Fatalf("got %v, stored in %q; want 451 and nothing stored", err, box)
				}
				return
			}
			if err != nil || box != "INBOX" || !strings.Contains(stored, "X-Spam-Status: not scanned") {
				t.Fatalf("got %v, stored in %q:\n%s", err, box, stored)
			}
		})
	}
}

// TestJunkLearning: over IMAP, a MOVE into Junk makes rspamd learn the
// message as spam for that user, a MOVE out of Junk as ham, through the
// store's queue and the learner; a move into Trash teaches nothing, and a
// message is learned again only when the user changed their mind.
func TestJunkLearning(t *testing.T) {
	srv := rspamdtest.Start(t)
	client := rspamdClient(t, srv.URL, srv.ControllerURL, 10*time.Second)
	e := newMXEnv(t, func(_ *smtpd.Config, o *smtpd.MXOptions) { o.Rspamd = client })
	e.dns.set("spf-pass.example", "v=spf1 ip4:127.0.0.1 -all")
	e.dns.set("spf-fail.example", "v=spf1 ip4:192.0.2.1 -all")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The IMAP side runs on a store with learning on, as serve sets it
	// up when rspamd is configured.
	lst, err := store.Open(ctx, e.url, store.Options{LearnJunk: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lst.Close)
	isrv := imapd.New(lst, imapd.Options{TLSConfig: e.serverTLS, Logger: smtptest.Logger(t)})
	t.Cleanup(func() { isrv.Close() })
	iln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go isrv.Serve(iln) //nolint:errcheck // ends with Close
	learner := rspamd.NewLearner(rspamd.LearnerConfig{Store: lst, Client: client, Log: smtptest.Logger(t)})
	done := make(chan struct{})
	go func() { defer close(done); learner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// An ordinary message lands in INBOX; one failing SPF in Junk (rspamd
	// learns nothing from GTUBE, so that cannot serve here).
	for _, from := range []string{"a@spf-pass.example", "a@spf-fail.example"} {
		marker := fmt.Sprintf("<learn-%d@spf-pass.example>", time.Now().UnixNano())
		msg := strings.Replace(spamMessage(marker, "", prose), "a@spf-pass.example", from, 1)
		if err := send(e.dial(t, "mail.example", false), from, []string{"bob@example.org"}, msg); err != nil {
			t.Fatal(err)
		}
	}
	if len(storetest.Mailbox(t, e.st, e.bob.ID, "INBOX")) != 1 || len(storetest.Mailbox(t, e.st, e.bob.ID, "Junk")) != 1 {
		t.Fatal("want one message in INBOX and one in Junk")
	}

	ic, err := imapclient.DialTLS(iln.Addr().String(), &imapclient.Options{TLSConfig: e.clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login("bob@example.org", e.bobPass).Wait(); err != nil {
		t.Fatal(err)
	}
	move := func(from, to string) {
		t.Helper()
		if _, err := ic.Select(from, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.Move(imap.SeqSetNum(1), to).Wait(); err != nil {
			t.Fatalf("MOVE %s to %s: %v", from, to, err)
		}
	}
	waitLearned := func(spam, ham int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			s, h := srv.Learned(t, "bob@example.org")
			if s == spam && h == ham {
				return
			}
			if time.Now().After(deadline) {
				states, _ := lst.LearnStates(ctx, e.bob.ID)
				t.Fatalf("rspamd learned %d spam, %d ham for bob; want %d, %d (queue: %+v)", s, h, spam, ham, states)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	copyTo := func(from string, seq uint32, to string) {
		t.Helper()
		if _, err := ic.Select(from, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.Copy(imap.SeqSetNum(seq), to).Wait(); err != nil {
			t.Fatalf("COPY %s to %s: %v", from, to, err)
		}
	}

	// A is in INBOX, B in Junk.
	move("INBOX", "Junk") // A: spam. Junk: B, A
	waitLearned(1, 0)
	if _, err := ic.Select("Junk", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.Move(imap.SeqSetNum(2), "INBOX").Wait(); err != nil { // A: ham after all (relearned)
		t.Fatal(err)
	}
	waitLearned(0, 1)
	move("Junk", "Trash") // B, deleted: teaches nothing (not ham)
	move("INBOX", "Junk") // A: spam again, relearned
	waitLearned(1, 0)
	copyTo("Trash", 1, "Junk") // B: spam. Junk: A, B
	waitLearned(2, 0)
	// Said again, nothing new: A into Junk once more (via Trash), B out to
	// Trash and back.
	move("Junk", "Trash")      // A. Trash: B, A
	copyTo("Trash", 2, "Junk") // A
	states, err := lst.LearnStates(ctx, e.bob.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 {
		t.Fatalf("queue rows %+v, want one per message", states)
	}
	for _, st := range states {
		if !st.Done || st.LastError != "" || !st.Spam || st.Learned == nil || !*st.Learned {
			t.Errorf("queue row %+v: want learned as spam, nothing pending", st)
		}
	}
	if s, h := srv.Learned(t, "bob@example.org"); s != 2 || h != 0 {
		t.Errorf("rspamd learned %d spam, %d ham for bob; want 2, 0", s, h)
	}
	if s, h := srv.Learned(t, "alice@example.org"); s != 0 || h != 0 {
		t.Errorf("alice's statistics changed: %d spam, %d ham", s, h)
	}
}
