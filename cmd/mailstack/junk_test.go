package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/rspamd/rspamdtest"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestServeRspamd: with MAILSTACK_RSPAMD_URL set, serve's MX refuses
// GTUBE and delivers an ordinary message, and a MOVE of it into Junk over
// IMAP is learned as spam by the learner serve runs.
func TestServeRspamd(t *testing.T) {
	srv := rspamdtest.Start(t)
	url := storetest.NewURL(t)
	ctx := context.Background()
	st := storetest.Open(t, url)
	for k, v := range map[string]string{
		"MAILSTACK_DATABASE_URL":          url,
		"MAILSTACK_DATA_DIR":              t.TempDir(),
		"MAILSTACK_HOSTNAME":              "mx.example.org",
		"MAILSTACK_DOMAINS":               "example.org",
		"MAILSTACK_REQUIRE_APP_PASSWORDS": "no",
		"MAILSTACK_IMAP_ADDR":             "127.0.0.1:0",
		"MAILSTACK_IMAP_STARTTLS_ADDR":    "",
		"MAILSTACK_SUBMISSION_ADDR":       "",
		"MAILSTACK_SUBMISSIONS_ADDR":      "",
		"MAILSTACK_MX_ADDR":               "127.0.0.1:0",
		"MAILSTACK_HTTP_ADDR":             "",
		"MAILSTACK_HTTPS_ADDR":            "",
		"MAILSTACK_ADMIN_ADDR":            "",
		"MAILSTACK_DNS_SERVER":            srv.DNSAddr,
		"MAILSTACK_RSPAMD_URL":            srv.URL,
		"MAILSTACK_RSPAMD_CONTROLLER_URL": srv.ControllerURL,
		"MAILSTACK_RSPAMD_TIMEOUT":        "20s",
		"MAILSTACK_LOG_LEVEL":             "warn",
	} {
		t.Setenv(k, v)
	}
	r := launch(t).ready(t)
	if !strings.Contains(r.addrs["junk-learner"], srv.URL) {
		t.Fatalf("no junk learner in the banner:\n%s", r.out.String())
	}
	acc, err := st.CreateAccount(ctx, "dana@example.org", "dana-main-pw", store.AccountOptions{AllowMainPassword: true})
	if err != nil {
		t.Fatal(err)
	}
	send := func(body string) error {
		c, err := smtp.Dial(r.addrs["mx"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("mail.sender.example"); err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("From: shop@sender.example\r\nTo: dana@example.org\r\nSubject: offer\r\nMessage-ID: <%d@sender.example>\r\n\r\n%s\r\n",
			time.Now().UnixNano(), body)
		return c.SendMail("shop@sender.example", []string{"dana@example.org"}, strings.NewReader(msg))
	}
	err = send("XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X")
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 550 {
		t.Fatalf("GTUBE: %v, want 550", err)
	}
	prose := "Hello Dana, thank you for the notes from Thursday's meeting. I went through the budget\r\n" +
		"figures again and the numbers for the second quarter look right to me, apart from the travel\r\n" +
		"costs, which seem to include the conference in October twice. See you at lunch, Anna"
	if err := send(prose); err != nil {
		t.Fatalf("ordinary message: %v", err)
	}
	c, err := imapclient.DialTLS(r.addrs["imaps"], &imapclient.Options{TLSConfig: insecureTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(acc.Address, "dana-main-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("INBOX: %+v %v, want the ordinary message", sel, err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Junk").Wait(); err != nil {
		t.Fatal(err)
	}
	// The MOVE queued the message; serve's learner takes it to rspamd.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if spam, _ := srv.Learned(t, acc.Address); spam == 1 {
			break
		}
		if time.Now().After(deadline) {
			states, _ := st.LearnStates(ctx, acc.ID)
			t.Fatalf("not learned as spam; queue %+v:\n%s", states, r.out.String())
		}
	}
}
