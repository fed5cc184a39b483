package outbound_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	gmtextproto "github.com/emersion/go-message/textproto"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd/outbound"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// env is a fresh store with alice@example.org, who sends the mail the
// tests queue and receives its DSNs.
type env struct {
	st        *store.Store
	url       string
	alice     *store.Account
	serverTLS *tls.Config
	clientTLS *tls.Config
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{url: storetest.NewURL(t)}
	st, err := store.Open(context.Background(), e.url, store.Options{MaxConns: 24})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	e.st = st
	if _, err := st.CreateDomain(context.Background(), "example.org", "mailstack", []byte{}); err != nil { // the worker signs nothing: submission does
		t.Fatal(err)
	}
	if e.alice, err = st.CreateAccount(context.Background(), "alice@example.org", "main-password-alice", store.AccountOptions{}); err != nil {
		t.Fatal(err)
	}
	e.serverTLS, e.clientTLS = smtptest.TLS(t)
	return e
}

// submit queues msg from alice for the remote recipients in one
// transaction, as the submission server does once it has taken a message.
func (e *env) submit(t testing.TB, from string, rcpts []string, msg string) {
	t.Helper()
	if err := e.submitErr(from, rcpts, msg); err != nil {
		t.Fatal(err)
	}
}

// submitErr is submit for other goroutines than the test's.
func (e *env) submitErr(from string, rcpts []string, msg string) error {
	sp, err := store.Spool(strings.NewReader(msg), 0)
	if err != nil {
		return err
	}
	defer sp.Close()
	remote := make([]store.Outbound, len(rcpts))
	for i, r := range rcpts {
		remote[i] = store.Outbound{AccountID: e.alice.ID, MailFrom: from, RcptTo: r}
	}
	_, err = e.st.Submit(context.Background(), nil, sp, nil, remote)
	return err
}

// processes runs n workers, each on a store of its own as in n mailstack
// processes, until the test ends.
func (e *env) processes(t testing.TB, n int, mx *smtptest.Server, mod func(*outbound.Config)) []*smtptest.Worker {
	t.Helper()
	var ws []*smtptest.Worker
	for range n {
		st, err := store.Open(context.Background(), e.url, store.Options{MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		ws = append(ws, smtptest.StartWorker(t, st, mx, mod))
	}
	return ws
}

func (e *env) queueLen(t testing.TB) int {
	t.Helper()
	return storetest.QueueLen(t, e.st)
}

func (e *env) inbox(t testing.TB) []string {
	t.Helper()
	return storetest.Mailbox(t, e.st, e.alice.ID, "INBOX")
}

// idle says whether every worker holds nothing (smtptest.Worker.Idle).
func idle(ws ...*smtptest.Worker) bool {
	for _, w := range ws {
		if !w.Idle() {
			return false
		}
	}
	return true
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// waitDSNs waits until the queue is empty and returns the sender's INBOX
// (all DSNs). No DSN can come later: the worker delivers a DSN in the
// transaction that deletes its failed rows (store.QueueBounce).
func (e *env) waitDSNs(t testing.TB) []string {
	t.Helper()
	smtptest.WaitFor(t, "the queue to empty", func() bool { return e.queueLen(t) == 0 })
	return e.inbox(t)
}

// dsnReport is a parsed RFC 3464 delivery status notification.
type dsnReport struct {
	header     gmtextproto.Header   // of the DSN message itself
	human      string               // the first part
	perMessage gmtextproto.Header   // the per-message fields
	recipients []gmtextproto.Header // one per-recipient block each
	original   string               // the third part: the original header
}

// parseDSN parses a DSN with go-message: a multipart/report of
// report-type delivery-status with exactly three parts, the second one
// message/delivery-status.
func parseDSN(t testing.TB, raw string) dsnReport {
	t.Helper()
	ent, err := message.Read(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN: %v\n%s", err, raw)
	}
	var rep dsnReport
	rep.header = ent.Header.Header
	mt, params, err := ent.Header.ContentType()
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type %s %v (%v)", mt, params, err)
	}
	mr := ent.MultipartReader()
	var parts []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		pt, _, _ := p.Header.ContentType()
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, pt)
		switch len(parts) {
		case 1:
			rep.human = string(b)
		case 2:
			br := bufio.NewReader(bytes.NewReader(b))
			for {
				h, err := gmtextproto.ReadHeader(br)
				if err != nil {
					t.Fatalf("delivery-status fields: %v\n%s", err, b)
				}
				if h.Len() == 0 {
					break
				}
				if rep.perMessage.Len() == 0 {
					rep.perMessage = h
				} else {
					rep.recipients = append(rep.recipients, h)
				}
				if _, err := br.Peek(1); err == io.EOF {
					break
				}
			}
		case 3:
			rep.original = string(b)
		}
	}
	if len(parts) != 3 || parts[0] != "text/plain" || parts[1] != "message/delivery-status" || parts[2] != "text/rfc822-headers" {
		t.Fatalf("DSN parts %v, want text/plain, message/delivery-status, text/rfc822-headers", parts)
	}
	return rep
}

// recipient returns the per-recipient block for addr, failing if there is
// none.
func (r dsnReport) recipient(t testing.TB, addr string) gmtextproto.Header {
	t.Helper()
	for _, h := range r.recipients {
		if h.Get("Final-Recipient") == "rfc822; "+addr {
			return h
		}
	}
	t.Fatalf("DSN has no block for %s: %d blocks", addr, len(r.recipients))
	return gmtextproto.Header{}
}
