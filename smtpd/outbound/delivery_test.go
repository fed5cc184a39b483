package outbound_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd/outbound"
	"github.com/mailstack/mailstack/store"
)

func TestRetryThenSuccess(t *testing.T) {
	e := newEnv(t)
	mx := smtptest.NewMX(t, e.serverTLS)
	mx.Reply = func(n int) error {
		if n == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}
	smtptest.StartWorker(t, e.st, mx, nil)
	e.submit(t, "alice@example.org", []string{"carol@remote.test"}, crlf("From: alice@example.org\nSubject: x\n\nbody\n"))
	smtptest.WaitFor(t, "first attempt", func() bool {
		q, _ := e.st.QueueEntries(context.Background())
		return len(q) == 1 && q[0].Attempts == 1 && strings.Contains(q[0].LastError, "try later")
	})
	smtptest.WaitFor(t, "retry", func() bool { return len(mx.Deliveries()) == 1 && e.queueLen(t) == 0 })
	if n := len(e.inbox(t)); n != 0 {
		t.Errorf("a temporary failure produced %d messages in the sender's INBOX", n)
	}
}

// TestPermanentFailureDSN: recipients at two domains fail for good in the
// same attempt, a third is delivered: exactly one DSN lists both failures.
func TestPermanentFailureDSN(t *testing.T) {
	e := newEnv(t)
	mx := smtptest.NewMX(t, e.serverTLS)
	smtptest.StartWorker(t, e.st, mx, nil)
	msg := crlf("From: alice@example.org\nTo: nobody@remote.test\nSubject: doomed\n\nbody\n")
	e.submit(t, "alice@example.org", []string{"nobody@remote.test", "nobody@nxdomain.test", "carol@other.test"}, msg)
	got := e.waitDSNs(t)
	if len(got) != 1 {
		t.Fatalf("sender's INBOX has %d messages, want exactly one DSN for the message:\n%s", len(got), strings.Join(got, "\n-----\n"))
	}
	rep := parseDSN(t, got[0])
	if rep.header.Get("To") != "<alice@example.org>" || !strings.Contains(rep.header.Get("From"), "MAILER-DAEMON@") ||
		rep.header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("DSN header: %v", rep.header.Map())
	}
	if rep.perMessage.Get("Reporting-MTA") != "dns; mail.example.org" || rep.perMessage.Get("Arrival-Date") == "" {
		t.Errorf("per-message fields: %v", rep.perMessage.Map())
	}
	if len(rep.recipients) != 2 {
		t.Fatalf("%d recipient blocks, want 2 (the delivered recipient is not reported)", len(rep.recipients))
	}
	r1 := rep.recipient(t, "nobody@remote.test")
	for k, want := range map[string]string{"Action": "failed", "Status": "5.1.1", "Remote-MTA": "dns; mx1.remote.test",
		"Diagnostic-Code": "smtp; 550 5.1.1 no such user"} {
		if got := r1.Get(k); got != want {
			t.Errorf("nobody@remote.test %s: %q, want %q", k, got, want)
		}
	}
	if r1.Get("Last-Attempt-Date") == "" {
		t.Error("no Last-Attempt-Date")
	}
	r2 := rep.recipient(t, "nobody@nxdomain.test")
	if r2.Get("Action") != "failed" || r2.Get("Status") != "5.1.2" {
		t.Errorf("nobody@nxdomain.test: %v", r2.Map())
	}
	if !strings.Contains(rep.original, "Subject: doomed\r\n") || strings.Contains(rep.original, "\r\nbody\r\n") {
		t.Errorf("third part is not the original header:\n%s", rep.original)
	}
	for _, a := range []string{"<nobody@remote.test>", "<nobody@nxdomain.test>"} {
		if !strings.Contains(rep.human, a) {
			t.Errorf("human-readable part does not name %s:\n%s", a, rep.human)
		}
	}
	if d := mx.Deliveries(); len(d) != 1 || strings.Join(d[0].To, ",") != "carol@other.test" {
		t.Errorf("deliveries %+v, want only carol@other.test", d)
	}
}

// TestDSNPerDeliveryPass: a permanent failure is reported at once, even
// while another recipient of the message waits for a retry (as in
// Postfix); that recipient, failing later, gets a DSN of its own. Every
// failed recipient is reported exactly once.
func TestDSNPerDeliveryPass(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rcpts []string
		first []string // reported while later@other.test waits for its retry
	}{
		{"failed now and failed after a retry", []string{"nobody@remote.test", "later@other.test"}, []string{"nobody@remote.test"}},
		{"delivered now and failed after a retry", []string{"carol@remote.test", "later@other.test"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			mx := smtptest.NewMX(t, e.serverTLS)
			mx.RcptErr = func(to string, try int) error {
				switch {
				case !strings.HasPrefix(to, "later@"):
					return nil
				case try == 1:
					return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "greylisted"}
				}
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "gone now"}
			}
			// Retries only when the test asks (mailstack queue retry).
			smtptest.StartWorker(t, e.st, mx, func(c *outbound.Config) { c.RetryBase, c.RetryMax = time.Hour, time.Hour })
			e.submit(t, "alice@example.org", tc.rcpts, crlf("From: alice@example.org\nSubject: mixed\n\nbody\n"))
			var later store.QueuedMessage
			smtptest.WaitFor(t, "later@other.test to wait for its retry, alone", func() bool {
				q, _ := e.st.QueueEntries(context.Background())
				if len(q) != 1 || q[0].RcptTo != "later@other.test" || q[0].Attempts != 1 || q[0].Lease != "" {
					return false
				}
				later = q[0]
				return true
			})
			check := func(got string, want []string) {
				t.Helper()
				rep := parseDSN(t, got)
				if len(rep.recipients) != len(want) {
					t.Fatalf("%d recipient blocks, want %v", len(rep.recipients), want)
				}
				for _, a := range want {
					if r := rep.recipient(t, a); r.Get("Action") != "failed" || r.Get("Status") != "5.1.1" {
						t.Errorf("%s: %v", a, r.Map())
					}
				}
			}
			if tc.first != nil {
				smtptest.WaitFor(t, "the first DSN", func() bool { return len(e.inbox(t)) > 0 })
			}
			// Every other row is gone from the queue, and a DSN commits
			// with the deletion of its rows: none can come later.
			got := e.inbox(t)
			if len(got) != min(len(tc.first), 1) {
				t.Fatalf("%d DSNs while later@other.test waits, want %d", len(got), min(len(tc.first), 1))
			}
			if tc.first != nil {
				check(got[0], tc.first)
			}
			if err := e.st.RetryQueued(context.Background(), later.ID); err != nil {
				t.Fatal(err)
			}
			got = e.waitDSNs(t)
			if want := min(len(tc.first), 1) + 1; len(got) != want {
				t.Fatalf("%d DSNs in all, want %d", len(got), want)
			}
			check(got[len(got)-1], []string{"later@other.test"})
		})
	}
}

// TestExpiryDSN: an MX that always answers 451 is retried until MaxAge
// after the message was queued (the last try at that time, not before)
// and then the sender gets exactly one DSN, Status 4.4.7.
func TestExpiryDSN(t *testing.T) {
	e := newEnv(t)
	mx := smtptest.NewMX(t, e.serverTLS)
	mx.Reply = func(int) error {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	// Backoff 100, 200, 400, 400 ms…: tries at 0, 0.1, 0.3, 0.7, 1.1 s; the
	// next would be at 1.5 s, past MaxAge, so the last comes at 1.3 s.
	const maxAge = 1300 * time.Millisecond
	smtptest.StartWorker(t, e.st, mx, func(c *outbound.Config) { c.MaxAge = maxAge })
	e.submit(t, "alice@example.org", []string{"carol@remote.test", "dave@remote.test"}, crlf("From: alice@example.org\nSubject: expiring\n\nbody\n"))
	q, err := e.st.QueueEntries(context.Background())
	if err != nil || len(q) != 2 {
		t.Fatal(q, err)
	}
	created := q[0].CreatedAt
	got := e.waitDSNs(t)
	if len(got) != 1 {
		t.Fatalf("%d DSNs, want exactly one", len(got))
	}
	last, tries := mx.LastRcpt(), mx.RcptTries("carol@remote.test")
	if last.Before(created.Add(maxAge)) {
		t.Errorf("last try %v after queueing, before MaxAge (%v): bounced early", last.Sub(created), maxAge)
	}
	if tries < 3 {
		t.Errorf("%d tries, want retries until MaxAge", tries)
	}
	rep := parseDSN(t, got[0])
	if len(rep.recipients) != 2 {
		t.Fatalf("%d recipient blocks, want 2", len(rep.recipients))
	}
	for _, a := range []string{"carol@remote.test", "dave@remote.test"} {
		r := rep.recipient(t, a)
		if r.Get("Action") != "failed" || r.Get("Status") != "4.4.7" || r.Get("Diagnostic-Code") != "smtp; 451 4.3.0 try again later" {
			t.Errorf("%s: %v", a, r.Map())
		}
	}
	if !strings.Contains(rep.human, "gave up after") {
		t.Errorf("human-readable part does not say retries ran out:\n%s", rep.human)
	}
	if len(mx.Deliveries()) != 0 {
		t.Error("delivered despite 451")
	}
}

func TestTwoWorkersNoDuplicates(t *testing.T) {
	e := newEnv(t)
	mx := smtptest.NewMX(t, e.serverTLS)
	workers := e.processes(t, 2, mx, func(c *outbound.Config) { c.BatchSize = 7; c.Concurrency = 4 })
	const sessions, perSession = 4, 50
	var wg sync.WaitGroup
	errc := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSession {
				msg := crlf(fmt.Sprintf("From: alice@example.org\nMessage-ID: <%d.%d@example.org>\nSubject: n\n\nmessage %d %d\n", i, j, i, j))
				if err := e.submitErr("alice@example.org", []string{"x@remote.test", "y@remote.test", "z@other.test"}, msg); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	const want = sessions * perSession * 3
	// Once the queue is empty and neither worker holds a row, no late
	// delivery can come.
	smtptest.WaitFor(t, "all deliveries", func() bool { return mx.Total() >= want && e.queueLen(t) == 0 && idle(workers...) })
	perRcpt := mx.PerRecipient()
	if len(perRcpt) != want {
		t.Errorf("%d distinct (message, recipient) deliveries, want %d", len(perRcpt), want)
	}
	for k, n := range perRcpt {
		if n != 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
}

// TestRelay: a smarthost gets all mail, whatever the domain, one
// transaction per message, after TLS and AUTH PLAIN: smtps:// (implicit
// TLS) and smtp:// (STARTTLS required). A relay that does not offer
// STARTTLS gets neither password nor mail, and the message waits
// (deferred) rather than going out in clear text.
func TestRelay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scheme    string
		offerTLS  bool
		delivered bool
	}{
		{"smtps", "smtps", true, true},
		{"smtp with STARTTLS", "smtp", true, true},
		{"smtp without STARTTLS", "smtp", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			o := smtptest.Options{User: "relayuser", Password: "relaypass", ImplicitTLS: tc.scheme == "smtps"}
			if tc.offerTLS {
				o.TLS = e.serverTLS
			} else {
				o.AllowInsecureAuth = true // it would take the password in clear text
			}
			mx := smtptest.Start(t, o)
			relay, err := outbound.ParseRelay(tc.scheme + "://relayuser:relaypass@" + mx.Addr)
			if err != nil {
				t.Fatal(err)
			}
			relay.TLS = e.clientTLS // verified against the test certificate
			smtptest.StartWorker(t, e.st, mx, func(c *outbound.Config) {
				c.Relay = relay
				c.Resolver = &smtptest.Resolver{} // DNS is never needed with a relay
			})
			e.submit(t, "alice@example.org", []string{"a@remote.test", "b@nxdomain.test"}, crlf("From: alice@example.org\nSubject: r\n\nvia relay\n"))
			if tc.delivered {
				smtptest.WaitFor(t, "relay delivery", func() bool { return len(mx.Deliveries()) == 1 && e.queueLen(t) == 0 })
				if d := mx.Deliveries()[0]; len(d.To) != 2 {
					t.Errorf("relay got recipients %v, want both in one transaction", d.To)
				}
				if tc.scheme == "smtp" {
					if !mx.TLSSeen() {
						t.Error("relay session without TLS")
					}
				}
				return
			}
			smtptest.WaitFor(t, "a deferral", func() bool {
				q, _ := e.st.QueueEntries(context.Background())
				return len(q) == 2 && q[0].Lease == "" && q[0].Attempts >= 1
			})
			q, _ := e.st.QueueEntries(context.Background())
			if !strings.Contains(q[0].LastError, "STARTTLS") || q[0].FailedAt != nil {
				t.Errorf("queue row %+v: want deferred for want of STARTTLS", q[0])
			}
			if n := mx.Auths(); n != 0 {
				t.Errorf("%d AUTH commands sent to a relay without TLS", n)
			}
			if n := len(mx.Deliveries()); n != 0 {
				t.Errorf("%d messages relayed in clear text", n)
			}
		})
	}
}
