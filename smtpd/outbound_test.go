package smtpd_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message"
	gmtextproto "github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/smtpd/outbound"
	"github.com/mailstack/mailstack/store"
)

// fakeMX is a go-smtp server on 127.0.0.1 standing in for remote MX hosts.
type fakeMX struct {
	addr string
	port int

	mu        sync.Mutex
	reply     func(n int) error // answer to the n-th DATA (1-based); nil: accept
	datas     int
	delivered []delivery
	perRcpt   map[string]int // message-id + " " + rcpt → deliveries
	tlsSeen   bool

	// rcptDelay, if set, says how long to stall before answering RCPT.
	rcptDelay func(to string) time.Duration
	// rcptErr, if set, answers RCPT for to on its try-th attempt (1-based);
	// nil accepts.
	rcptErr  func(to string, try int) error
	rcptTry  map[string]int
	rcptLast time.Time    // when the last RCPT came
	conns    atomic.Int32 // connections accepted
	// onData, if set, sees the recipients of each message before it is
	// accepted.
	onData func(to []string)
}

type delivery struct {
	from string
	to   []string
	data []byte
}

func newFakeMX(t testing.TB, tlsCfg *tls.Config) *fakeMX {
	t.Helper()
	mx := &fakeMX{perRcpt: map[string]int{}, rcptTry: map[string]int{}}
	s := smtp.NewServer(mx)
	s.Domain = "mx.remote.test"
	s.TLSConfig = tlsCfg
	s.ErrorLog = discardLog{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(countingListener{l, &mx.conns}) //nolint:errcheck
	t.Cleanup(func() { s.Close() })
	mx.addr = l.Addr().String()
	mx.port = l.Addr().(*net.TCPAddr).Port
	return mx
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type discardLog struct{}

func (discardLog) Printf(string, ...interface{}) {}
func (discardLog) Println(...interface{})        {}

func (mx *fakeMX) NewSession(c *smtp.Conn) (smtp.Session, error) {
	if _, ok := c.TLSConnectionState(); ok {
		mx.mu.Lock()
		mx.tlsSeen = true
		mx.mu.Unlock()
	}
	return &mxSession{mx: mx}, nil
}

type mxSession struct {
	mx   *fakeMX
	from string
	to   []string
}

func (s *mxSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *mxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.mx.rcptDelay != nil {
		time.Sleep(s.mx.rcptDelay(to))
	}
	if strings.HasPrefix(to, "nobody@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	try := func() int {
		s.mx.mu.Lock()
		defer s.mx.mu.Unlock()
		s.mx.rcptTry[to]++
		s.mx.rcptLast = time.Now()
		return s.mx.rcptTry[to]
	}()
	if s.mx.rcptErr != nil {
		if err := s.mx.rcptErr(to, try); err != nil {
			return err
		}
	}
	s.to = append(s.to, to)
	return nil
}
func (s *mxSession) Reset()        { s.from, s.to = "", nil }
func (s *mxSession) Logout() error { return nil }
func (s *mxSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.mx.onData != nil {
		s.mx.onData(s.to)
	}
	s.mx.mu.Lock()
	defer s.mx.mu.Unlock()
	s.mx.datas++
	if s.mx.reply != nil {
		if err := s.mx.reply(s.mx.datas); err != nil {
			return err
		}
	}
	s.mx.delivered = append(s.mx.delivered, delivery{from: s.from, to: s.to, data: b})
	id := headerValue(b, "Message-ID")
	for _, r := range s.to {
		s.mx.perRcpt[id+" "+r]++
	}
	return nil
}

func (mx *fakeMX) deliveries() []delivery {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	return append([]delivery(nil), mx.delivered...)
}

func headerValue(msg []byte, key string) string {
	for _, line := range strings.Split(string(msg), "\r\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// fakeResolver answers MX and address lookups from maps; anything else is
// NXDOMAIN.
type fakeResolver struct {
	mx  map[string][]*net.MX
	ips map[string][]net.IPAddr
}

func (r *fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if mx, ok := r.mx[name]; ok {
		return mx, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	if ips, ok := r.ips[strings.TrimSuffix(host, ".")]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// remoteResolver sends every *.test domain in domains to 127.0.0.1 via
// two MX records, the preferred one unreachable (nothing on its address).
func remoteResolver(domains ...string) *fakeResolver {
	r := &fakeResolver{mx: map[string][]*net.MX{}, ips: map[string][]net.IPAddr{
		"mx1.remote.test": {{IP: net.ParseIP("127.0.0.1")}},
		"mx0.remote.test": {{IP: net.ParseIP("127.0.0.2")}},
	}}
	for _, d := range domains {
		r.mx[d] = []*net.MX{{Host: "mx1.remote.test.", Pref: 20}, {Host: "mx0.remote.test.", Pref: 10}}
	}
	return r
}

// startWorker runs an outbound worker on st until the test ends.
func startWorker(t testing.TB, st *store.Store, mx *fakeMX, mod func(*outbound.Config)) {
	t.Helper()
	cfg := outbound.Config{
		Store: st, Hostname: "mail.example.org", Resolver: remoteResolver("remote.test", "other.test"),
		Port: mx.port, RetryBase: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond,
		PollInterval: time.Hour, // only NOTIFY and due times wake it
		Log:          testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	w := outbound.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond until it holds or 15 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) queueLen(t testing.TB) int {
	t.Helper()
	q, err := e.st.QueueEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(q)
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
			mx := newFakeMX(t, e.serverTLS)
			startWorker(t, e.st, mx, nil)
			c := e.login(t, tc.implicitTLS, "alice@example.org", e.alicePass)
			msg := crlf("From: Alice <alice@example.org>\nTo: carol@remote.test, bob@example.org\nSubject: remote\nMessage-ID: <m1@example.org>\nDate: Mon, 02 Jan 2006 15:04:05 +0000\n\nHello Carol.\n")
			if err := send(c, "alice+news@example.org", []string{"carol@remote.test", "bob@example.org", "dave@remote.test"}, msg); err != nil {
				t.Fatal(err)
			}
			if n := len(e.inbox(t, e.bob)); n != 1 {
				t.Fatalf("bob's INBOX has %d messages before 250 returned, want 1", n)
			}
			waitFor(t, "remote delivery", func() bool { return len(mx.deliveries()) == 1 && e.queueLen(t) == 0 })
			d := mx.deliveries()[0]
			if d.from != "alice+news@example.org" || strings.Join(d.to, ",") != "carol@remote.test,dave@remote.test" {
				t.Errorf("envelope: from %q to %v; want one transaction for both recipients of remote.test", d.from, d.to)
			}
			if !bytes.HasSuffix(d.data, []byte(msg)) {
				t.Errorf("delivered message does not end with the submitted one:\n%s", d.data)
			}
			if !mx.tlsSeen {
				t.Error("worker did not use STARTTLS offered by the MX")
			}
			vs, err := dkim.VerifyWithOptions(bytes.NewReader(d.data), &dkim.VerifyOptions{LookupTXT: e.lookupTXT(t)})
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.org" {
				t.Fatalf("DKIM verification: %+v (err %v)", vs, vs[0].Err)
			}
			if !strings.Contains(string(d.data), "c=relaxed/relaxed") {
				t.Error("signature is not relaxed/relaxed")
			}
		})
	}
}

func TestRetryThenSuccess(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	mx.reply = func(n int) error {
		if n == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}
	startWorker(t, e.st, mx, nil)
	c := e.login(t, true, "alice@example.org", e.alicePass)
	if err := send(c, "alice@example.org", []string{"carol@remote.test"}, crlf("From: alice@example.org\nSubject: x\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first attempt", func() bool {
		q, _ := e.st.QueueEntries(context.Background())
		return len(q) == 1 && q[0].Attempts == 1 && strings.Contains(q[0].LastError, "try later")
	})
	waitFor(t, "retry", func() bool { return len(mx.deliveries()) == 1 && e.queueLen(t) == 0 })
	if n := len(e.inbox(t, e.alice)); n != 0 {
		t.Errorf("a temporary failure produced %d messages in the sender's INBOX", n)
	}
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

// waitDSNs waits until the queue is empty and returns the sender's INBOX
// (all DSNs). No DSN can come later: the worker delivers a DSN in the
// transaction that deletes its failed rows (store.QueueBounce).
func (e *env) waitDSNs(t testing.TB) []string {
	t.Helper()
	waitFor(t, "the queue to empty", func() bool { return e.queueLen(t) == 0 })
	return e.inbox(t, e.alice)
}

// TestPermanentFailureDSN: recipients at two domains fail for good in the
// same attempt, a third is delivered: exactly one DSN lists both failures.
func TestPermanentFailureDSN(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	startWorker(t, e.st, mx, nil)
	c := e.login(t, false, "alice@example.org", e.alicePass)
	msg := crlf("From: alice@example.org\nTo: nobody@remote.test\nSubject: doomed\n\nbody\n")
	if err := send(c, "alice@example.org", []string{"nobody@remote.test", "nobody@nxdomain.test", "carol@other.test"}, msg); err != nil {
		t.Fatal(err)
	}
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
	if d := mx.deliveries(); len(d) != 1 || strings.Join(d[0].to, ",") != "carol@other.test" {
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
			e := newEnv(t, 1<<20)
			mx := newFakeMX(t, e.serverTLS)
			mx.rcptErr = func(to string, try int) error {
				switch {
				case !strings.HasPrefix(to, "later@"):
					return nil
				case try == 1:
					return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "greylisted"}
				}
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "gone now"}
			}
			// Retries only when the test asks (mailstack queue retry).
			startWorker(t, e.st, mx, func(c *outbound.Config) { c.RetryBase, c.RetryMax = time.Hour, time.Hour })
			c := e.login(t, true, "alice@example.org", e.alicePass)
			if err := send(c, "alice@example.org", tc.rcpts, crlf("From: alice@example.org\nSubject: mixed\n\nbody\n")); err != nil {
				t.Fatal(err)
			}
			var later store.QueuedMessage
			waitFor(t, "later@other.test to wait for its retry, alone", func() bool {
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
				waitFor(t, "the first DSN", func() bool { return len(e.inbox(t, e.alice)) > 0 })
			}
			// Every other row is gone from the queue, and a DSN commits
			// with the deletion of its rows: none can come later.
			got := e.inbox(t, e.alice)
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
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	mx.reply = func(int) error {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	// Backoff 100, 200, 400, 400 ms…: tries at 0, 0.1, 0.3, 0.7, 1.1 s; the
	// next would be at 1.5 s, past MaxAge, so the last comes at 1.3 s.
	const maxAge = 1300 * time.Millisecond
	startWorker(t, e.st, mx, func(c *outbound.Config) { c.MaxAge = maxAge })
	c := e.login(t, true, "alice@example.org", e.alicePass)
	if err := send(c, "alice@example.org", []string{"carol@remote.test", "dave@remote.test"}, crlf("From: alice@example.org\nSubject: expiring\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	q, err := e.st.QueueEntries(context.Background())
	if err != nil || len(q) != 2 {
		t.Fatal(q, err)
	}
	created := q[0].CreatedAt
	got := e.waitDSNs(t)
	if len(got) != 1 {
		t.Fatalf("%d DSNs, want exactly one", len(got))
	}
	mx.mu.Lock()
	last, tries := mx.rcptLast, mx.rcptTry["carol@remote.test"]
	mx.mu.Unlock()
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
	if len(mx.deliveries()) != 0 {
		t.Error("delivered despite 451")
	}
}

func TestTwoWorkersNoDuplicates(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	for range 2 {
		st, err := store.Open(context.Background(), e.url, store.Options{MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		startWorker(t, st, mx, func(c *outbound.Config) { c.BatchSize = 7; c.Concurrency = 4 })
	}
	const sessions, perSession = 4, 50
	var wg sync.WaitGroup
	errc := make(chan error, sessions)
	for i := range sessions {
		c := e.login(t, true, "alice@example.org", e.alicePass)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSession {
				msg := crlf(fmt.Sprintf("From: alice@example.org\nMessage-ID: <%d.%d@example.org>\nSubject: n\n\nmessage %d %d\n", i, j, i, j))
				if err := send(c, "alice@example.org", []string{"x@remote.test", "y@remote.test", "z@other.test"}, msg); err != nil {
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
	total := func() int {
		mx.mu.Lock()
		defer mx.mu.Unlock()
		n := 0
		for _, c := range mx.perRcpt {
			n += c
		}
		return n
	}
	waitFor(t, "all deliveries", func() bool { return total() >= want && e.queueLen(t) == 0 })
	time.Sleep(300 * time.Millisecond)
	mx.mu.Lock()
	defer mx.mu.Unlock()
	if len(mx.perRcpt) != want {
		t.Errorf("%d distinct (message, recipient) deliveries, want %d", len(mx.perRcpt), want)
	}
	for k, n := range mx.perRcpt {
		if n != 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
}

// relayBackend is a smarthost: AUTH PLAIN required.
type relayBackend struct {
	mx    *fakeMX
	auths *atomic.Int32 // AUTH commands received, if set
}

func (b relayBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s, _ := b.mx.NewSession(c)
	return &relaySession{mxSession: s.(*mxSession), auths: b.auths}, nil
}

type relaySession struct {
	*mxSession
	auths  *atomic.Int32
	authed bool
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *relaySession) Auth(string) (sasl.Server, error) {
	if s.auths != nil {
		s.auths.Add(1)
	}
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "relayuser" || pass != "relaypass" {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}
func (s *relaySession) Mail(from string, o *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	return s.mxSession.Mail(from, o)
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
			e := newEnv(t, 1<<20)
			mx := &fakeMX{perRcpt: map[string]int{}, rcptTry: map[string]int{}}
			var auths atomic.Int32
			srv := smtp.NewServer(relayBackend{mx: mx, auths: &auths})
			srv.ErrorLog = discardLog{}
			if tc.offerTLS {
				srv.TLSConfig = e.serverTLS
			} else {
				srv.AllowInsecureAuth = true // it would take the password in clear text
			}
			var l net.Listener
			var err error
			if tc.scheme == "smtps" {
				l, err = tls.Listen("tcp", "127.0.0.1:0", e.serverTLS)
			} else {
				l, err = net.Listen("tcp", "127.0.0.1:0")
			}
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(l) //nolint:errcheck
			t.Cleanup(func() { srv.Close() })
			relay, err := outbound.ParseRelay(tc.scheme + "://relayuser:relaypass@127.0.0.1:" + fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
			if err != nil {
				t.Fatal(err)
			}
			relay.TLS = e.clientTLS // verified against the test certificate
			startWorker(t, e.st, mx, func(c *outbound.Config) {
				c.Relay = relay
				c.Resolver = &fakeResolver{} // DNS is never needed with a relay
			})
			c := e.login(t, true, "alice@example.org", e.alicePass)
			if err := send(c, "alice@example.org", []string{"a@remote.test", "b@nxdomain.test"}, crlf("From: alice@example.org\nSubject: r\n\nvia relay\n")); err != nil {
				t.Fatal(err)
			}
			if tc.delivered {
				waitFor(t, "relay delivery", func() bool { return len(mx.deliveries()) == 1 && e.queueLen(t) == 0 })
				if d := mx.deliveries()[0]; len(d.to) != 2 {
					t.Errorf("relay got recipients %v, want both in one transaction", d.to)
				}
				if tc.scheme == "smtp" {
					mx.mu.Lock()
					defer mx.mu.Unlock()
					if !mx.tlsSeen {
						t.Error("relay session without TLS")
					}
				}
				return
			}
			waitFor(t, "a deferral", func() bool {
				q, _ := e.st.QueueEntries(context.Background())
				return len(q) == 2 && q[0].Lease == "" && q[0].Attempts >= 1
			})
			q, _ := e.st.QueueEntries(context.Background())
			if !strings.Contains(q[0].LastError, "STARTTLS") || q[0].FailedAt != nil {
				t.Errorf("queue row %+v: want deferred for want of STARTTLS", q[0])
			}
			if n := auths.Load(); n != 0 {
				t.Errorf("%d AUTH commands sent to a relay without TLS", n)
			}
			if n := len(mx.deliveries()); n != 0 {
				t.Errorf("%d messages relayed in clear text", n)
			}
		})
	}
}

// TestRemoteLocalPartCase: a remote recipient's local part is passed on as
// given (it may be case-sensitive, RFC 5321 §2.4), only its domain
// lowercased; the same address in other case is still one recipient.
func TestRemoteLocalPartCase(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	startWorker(t, e.st, mx, nil)
	c := e.login(t, true, "alice@example.org", e.alicePass)
	err := send(c, "alice@example.org", []string{"Carol.Smith@Remote.TEST", "carol.smith@remote.test", "DAVE@remote.test"},
		crlf("From: alice@example.org\nSubject: case\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery", func() bool { return len(mx.deliveries()) == 1 && e.queueLen(t) == 0 })
	if got := strings.Join(mx.deliveries()[0].to, ","); got != "Carol.Smith@remote.test,DAVE@remote.test" {
		t.Errorf("RCPT TO %s, want Carol.Smith@remote.test,DAVE@remote.test", got)
	}
}
