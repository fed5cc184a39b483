package smtpd_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailstack/mailstack/internal/smtptest"
)

// bccField matches a Bcc or Resent-Bcc header field name at a line start.
var bccField = regexp.MustCompile(`(?im)^(resent-)?bcc\s*:`)

func TestSubmissionRemovesBcc(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := smtptest.NewMX(t, e.serverTLS)
	smtptest.StartWorker(t, e.st, mx, nil)
	c := e.login(t, false, "alice@example.org", e.alicePass)
	msg := crlf("From: alice@example.org\n" +
		"To: carol@remote.test\n" +
		"Bcc: Bob <bob@example.org>,\n" +
		"\tDave <dave@remote.test>\n" +
		"Subject: secret copies\n" +
		"bcc: second-field@example.org\n" +
		"BCC : third@example.org,\n" +
		"  fourth@example.org\n" +
		"Resent-Bcc: fifth@example.org\n" +
		"X-After: kept\n" +
		"Message-ID: <bcc@example.org>\n" +
		"\n" +
		"Bcc: a body line, not a header\n")
	if err := send(c, "alice@example.org", []string{"carol@remote.test", "bob@example.org", "dave@remote.test"}, msg); err != nil {
		t.Fatal(err)
	}
	local := e.inbox(t, e.bob)
	if len(local) != 1 {
		t.Fatalf("bob (a Bcc recipient) has %d messages, want 1", len(local))
	}
	smtptest.WaitFor(t, "remote delivery", func() bool { return len(mx.Deliveries()) == 1 && e.queueLen(t) == 0 })
	d := mx.Deliveries()[0]
	if strings.Join(d.To, ",") != "carol@remote.test,dave@remote.test" {
		t.Errorf("remote recipients %v: the Bcc recipient must still get the message", d.To)
	}
	for name, m := range map[string]string{"local copy": local[0], "remote copy": string(d.Data)} {
		header, body, _ := strings.Cut(m, "\r\n\r\n")
		if bccField.MatchString(header) {
			t.Errorf("%s still has a Bcc field:\n%s", name, header)
		}
		for _, gone := range []string{"dave@remote.test", "fourth@example.org", "second-field"} {
			if strings.Contains(header, gone) {
				t.Errorf("%s header mentions %s:\n%s", name, gone, header)
			}
		}
		for _, kept := range []string{"\r\nSubject: secret copies\r\n", "\r\nX-After: kept\r\n", "\r\nTo: carol@remote.test\r\n"} {
			if !strings.Contains(header, kept) {
				t.Errorf("%s lost %q:\n%s", name, kept, header)
			}
		}
		if body != "Bcc: a body line, not a header\r\n" {
			t.Errorf("%s body changed: %q", name, body)
		}
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(d.Data), &dkim.VerifyOptions{LookupTXT: e.lookupTXT(t)})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("DKIM verification of the cleaned message: %+v %v", vs, err)
	}
}
