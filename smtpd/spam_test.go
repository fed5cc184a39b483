package smtpd_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/internal/rspamd/rspamdtest"
	"github.com/mailstack/mailstack/smtpd"
)

// rspamd's GTUBE and the variants it answers "add header" and "rewrite
// subject" for (with enable_test_patterns, as rspamdtest configures).
const (
	gtube          = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeAddHeader = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeRewrite   = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

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
		{name: "soft reject", fields: "X-Mailstack-Test: soft-reject\n", body: rspamdtest.Prose, wantCode: 451},
		{name: "clean", body: rspamdtest.Prose, wantBox: "INBOX", wantField: "X-Spam-Flag: NO"},
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
	msg := spamMessage(marker, "", rspamdtest.Prose)
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
			err := send(e.dial(t, "mail.spf-pass.example", false), "a@spf-pass.example", []string{"bob@example.org"}, spamMessage(marker, "", rspamdtest.Prose))
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
