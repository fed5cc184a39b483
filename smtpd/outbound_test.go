package smtpd_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

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
	mx := &fakeMX{perRcpt: map[string]int{}}
	s := smtp.NewServer(mx)
	s.Domain = "mx.remote.test"
	s.TLSConfig = tlsCfg
	s.ErrorLog = discardLog{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l) //nolint:errcheck
	t.Cleanup(func() { s.Close() })
	mx.addr = l.Addr().String()
	mx.port = l.Addr().(*net.TCPAddr).Port
	return mx
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

func TestPermanentFailureDSN(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	startWorker(t, e.st, mx, nil)
	c := e.login(t, false, "alice@example.org", e.alicePass)
	msg := crlf("From: alice@example.org\nTo: nobody@remote.test\nSubject: doomed\n\nbody\n")
	if err := send(c, "alice@example.org", []string{"nobody@remote.test", "nobody@nxdomain.test"}, msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bounces", func() bool { return e.queueLen(t) == 0 })
	time.Sleep(300 * time.Millisecond) // a second DSN would show up by now
	got := e.inbox(t, e.alice)
	if len(got) != 2 {
		t.Fatalf("sender's INBOX has %d messages, want one DSN per failed message group (2)", len(got))
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"Content-Type: multipart/report", "report-type=delivery-status", "Content-Type: message/delivery-status",
		"Final-Recipient: rfc822; nobody@remote.test", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 no such user",
		"Final-Recipient: rfc822; nobody@nxdomain.test", "Status: 5.1.2", "Subject: doomed", "Action: failed",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("DSNs lack %q:\n%s", want, all)
		}
	}
	if len(mx.deliveries()) != 0 {
		t.Error("the MX accepted a message it refused")
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

// relayBackend is a smarthost: implicit TLS and AUTH PLAIN required.
type relayBackend struct{ mx *fakeMX }

func (b relayBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s, _ := b.mx.NewSession(c)
	return &relaySession{mxSession: s.(*mxSession)}, nil
}

type relaySession struct {
	*mxSession
	authed bool
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *relaySession) Auth(string) (sasl.Server, error) {
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

func TestRelay(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := &fakeMX{perRcpt: map[string]int{}}
	srv := smtp.NewServer(relayBackend{mx})
	srv.TLSConfig = e.serverTLS
	srv.ErrorLog = discardLog{}
	l, err := tls.Listen("tcp", "127.0.0.1:0", e.serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	relay, err := outbound.ParseRelay("smtps://relayuser:relaypass@127.0.0.1:" + fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
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
	waitFor(t, "relay delivery", func() bool { return len(mx.deliveries()) == 1 && e.queueLen(t) == 0 })
	if d := mx.deliveries()[0]; len(d.to) != 2 {
		t.Errorf("relay got recipients %v, want both in one transaction", d.to)
	}
}
