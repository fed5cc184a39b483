package smtpd_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailstack/mailstack/internal/smtptest"
)

// TestDKIMOversigned: the signature covers one more instance of From,
// Subject, To, Reply-To and the other oversigned fields than the message
// has, so a field added after signing (a second From above or below the
// first, a Reply-To) breaks it, while unsigned additions do not.
func TestDKIMOversigned(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := smtptest.NewMX(t, e.serverTLS)
	smtptest.StartWorker(t, e.st, mx, nil)
	c := e.login(t, true, "alice@example.org", e.alicePass)
	msg := crlf("From: Alice <alice@example.org>\nTo: carol@remote.test\nSubject: signed\nMessage-ID: <over@example.org>\n\nHello.\n")
	if err := send(c, "alice@example.org", []string{"carol@remote.test"}, msg); err != nil {
		t.Fatal(err)
	}
	smtptest.WaitFor(t, "remote delivery", func() bool { return len(mx.Deliveries()) == 1 })
	signed := string(mx.Deliveries()[0].Data)
	sh := header(t, signed)
	sig := strings.ToLower(strings.Join(strings.Fields(sh.Get("Dkim-Signature")), ""))
	for _, want := range []string{"from:from:", "subject:subject:", "to:to:", "reply-to:", "cc:"} {
		if !strings.Contains(sig, want) {
			t.Errorf("h= lacks %q: %s", want, sig)
		}
	}
	verify := func(m string) error {
		vs, err := dkim.VerifyWithOptions(strings.NewReader(m), &dkim.VerifyOptions{LookupTXT: e.lookupTXT(t)})
		if err != nil {
			return err
		}
		if len(vs) != 1 {
			t.Fatalf("%d signatures", len(vs))
		}
		return vs[0].Err
	}
	if err := verify(signed); err != nil {
		t.Fatalf("signature of the message as sent: %v", err)
	}
	from := "From: Alice <alice@example.org>\r\n"
	for _, tc := range []struct {
		name  string
		msg   string
		valid bool
	}{
		{"From added at the top", "From: Mallory <mallory@evil.example>\r\n" + signed, false},
		{"From added below the first", strings.Replace(signed, from, from+"From: Mallory <mallory@evil.example>\r\n", 1), false},
		{"From added at the end of the header", strings.Replace(signed, "\r\n\r\n", "\r\nFrom: mallory@evil.example\r\n\r\n", 1), false},
		{"Subject added", "Subject: urgent: wire money\r\n" + signed, false},
		{"Reply-To added", "Reply-To: mallory@evil.example\r\n" + signed, false},
		{"Cc added", "Cc: mallory@evil.example\r\n" + signed, false},
		{"unsigned field added", "X-Spam-Score: 0\r\n" + signed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(tc.msg)
			if tc.valid && err != nil {
				t.Errorf("signature broken: %v", err)
			}
			if !tc.valid && err == nil {
				t.Error("signature still verifies")
			}
		})
	}
	if !bytes.HasSuffix([]byte(signed), []byte(msg)) {
		t.Errorf("delivered message does not end with the submitted one")
	}
}
