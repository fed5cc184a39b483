package smtpd_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/store/storetest"
)

// The outbound worker's own tests are in smtpd/outbound; these see a
// submitted message through submission and the worker to a remote MX.

func (e *env) queueLen(t testing.TB) int {
	t.Helper()
	return storetest.QueueLen(t, e.st)
}

func (e *env) lookupTXT(t testing.TB) func(string) ([]string, error) {
	rec, err := dkimkey.TXTRecord(e.domain.DKIMKey)
	if err != nil {
		t.Fatal(err)
	}
	return func(name string) ([]string, error) {
		if name == "mailstack._domainkey.example.org" {
			return []string{rec}, nil
		}
		return nil, fmt.Errorf("no TXT record for %s", name)
	}
}

func TestSubmitRemote(t *testing.T) {
	for _, tc := range []struct {
		name        string
		implicitTLS bool
	}{{"465", true}, {"587", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1<<20)
			mx := smtptest.NewMX(t, e.serverTLS)
			smtptest.StartWorker(t, e.st, mx, nil)
			c := e.login(t, tc.implicitTLS, "alice@example.org", e.alicePass)
			msg := crlf("From: Alice <alice@example.org>\nTo: carol@remote.test, bob@example.org\nSubject: remote\nMessage-ID: <m1@example.org>\nDate: Mon, 02 Jan 2006 15:04:05 +0000\n\nHello Carol.\n")
			if err := send(c, "alice+news@example.org", []string{"carol@remote.test", "bob@example.org", "dave@remote.test"}, msg); err != nil {
				t.Fatal(err)
			}
			if n := len(e.inbox(t, e.bob)); n != 1 {
				t.Fatalf("bob's INBOX has %d messages before 250 returned, want 1", n)
			}
			smtptest.WaitFor(t, "remote delivery", func() bool { return len(mx.Deliveries()) == 1 && e.queueLen(t) == 0 })
			d := mx.Deliveries()[0]
			if d.From != "alice+news@example.org" || strings.Join(d.To, ",") != "carol@remote.test,dave@remote.test" {
				t.Errorf("envelope: from %q to %v; want one transaction for both recipients of remote.test", d.From, d.To)
			}
			if !bytes.HasSuffix(d.Data, []byte(msg)) {
				t.Errorf("delivered message does not end with the submitted one:\n%s", d.Data)
			}
			if !mx.TLSSeen() {
				t.Error("worker did not use STARTTLS offered by the MX")
			}
			vs, err := dkim.VerifyWithOptions(bytes.NewReader(d.Data), &dkim.VerifyOptions{LookupTXT: e.lookupTXT(t)})
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.org" {
				t.Fatalf("DKIM verification: %+v (err %v)", vs, vs[0].Err)
			}
			if !strings.Contains(string(d.Data), "c=relaxed/relaxed") {
				t.Error("signature is not relaxed/relaxed")
			}
		})
	}
}

// TestRemoteLocalPartCase: a remote recipient's local part is passed on as
// given (it may be case-sensitive, RFC 5321 §2.4), only its domain
// lowercased; the same address in other case is still one recipient.
func TestRemoteLocalPartCase(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := smtptest.NewMX(t, e.serverTLS)
	smtptest.StartWorker(t, e.st, mx, nil)
	c := e.login(t, true, "alice@example.org", e.alicePass)
	err := send(c, "alice@example.org", []string{"Carol.Smith@Remote.TEST", "carol.smith@remote.test", "DAVE@remote.test"},
		crlf("From: alice@example.org\nSubject: case\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	smtptest.WaitFor(t, "delivery", func() bool { return len(mx.Deliveries()) == 1 && e.queueLen(t) == 0 })
	if got := strings.Join(mx.Deliveries()[0].To, ","); got != "Carol.Smith@remote.test,DAVE@remote.test" {
		t.Errorf("RCPT TO %s, want Carol.Smith@remote.test,DAVE@remote.test", got)
	}
}
