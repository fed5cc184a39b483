package smtpd_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gmtextproto "github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/store/storetest"
)

// mxHost is the test MX's hostname, the authserv-id of its results.
const mxHost = "mx.example.org"

// fakeDNS answers the MX's SPF, DKIM and DMARC queries from memory; the
// tests never reach a real DNS server.
type fakeDNS struct {
	mu   sync.Mutex
	txt  map[string][]string
	temp map[string]bool // names whose lookup fails temporarily
	keys map[string]ed25519.PrivateKey
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{}, keys: map[string]ed25519.PrivateKey{}}
}

func (d *fakeDNS) set(name string, txt ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[name] = txt
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (d *fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.temp[name] {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if txt, ok := d.txt[name]; ok {
		return txt, nil
	}
	return nil, notFound(name)
}

func (d *fakeDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, notFound(name)
}

func (d *fakeDNS) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, notFound(host)
}

func (d *fakeDNS) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, notFound(addr)
}

// sign DKIM-signs msg for domain with that domain's key, generating and
// publishing the key (selector "sel") on first use.
func (d *fakeDNS) sign(t testing.TB, domain, msg string) string {
	t.Helper()
	d.mu.Lock()
	key, ok := d.keys[domain]
	if !ok {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			d.mu.Unlock()
			t.Fatal(err)
		}
		key = priv
		d.keys[domain] = key
		d.txt["sel._domainkey."+domain] = []string{"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
	}
	d.mu.Unlock()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: "sel", Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// mxEnv is an inbound MX on the submission test env's store (domain
// example.org, alice and bob), with DNS answered by fakeDNS.
type mxEnv struct {
	*env
	dns  *fakeDNS
	addr string
}

func newMXEnv(t testing.TB, tune func(*smtpd.Config, *smtpd.MXOptions)) *mxEnv {
	t.Helper()
	e := newEnv(t, 64<<10)
	dns := newFakeDNS()
	cfg := smtpd.Config{Store: e.st, Hostname: mxHost, TLS: e.serverTLS, MaxMessageSize: 64 << 10, Log: smtptest.Logger(t)}
	opts := smtpd.MXOptions{Resolver: dns}
	if tune != nil {
		tune(&cfg, &opts)
	}
	return &mxEnv{env: e, dns: dns, addr: serve(t, smtpd.NewMX(cfg, opts).Server())}
}

// dial connects as a sending server announcing helo, optionally upgrading
// with STARTTLS (go-smtp's client then says EHLO localhost).
func (e *mxEnv) dial(t testing.TB, helo string, startTLS bool) *smtp.Client {
	t.Helper()
	var c *smtp.Client
	var err error
	if startTLS {
		c, err = smtp.DialStartTLS(e.addr, e.clientTLS)
	} else if c, err = smtp.Dial(e.addr); err == nil {
		err = c.Hello(helo)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// find returns the mailbox ("INBOX", "Junk", or "" if none) of the account
// holding the message containing marker, and the message.
func (e *mxEnv) find(t testing.TB, accountID int64, marker string) (string, string) {
	t.Helper()
	for _, box := range []string{"INBOX", "Junk"} {
		for _, m := range storetest.Mailbox(t, e.st, accountID, box) {
			if strings.Contains(m, marker) {
				return box, m
			}
		}
	}
	return "", ""
}

// header parses a stored message's top-level header.
func header(t testing.TB, msg string) gmtextproto.Header {
	t.Helper()
	h, err := gmtextproto.ReadHeader(bufio.NewReader(strings.NewReader(msg)))
	if err != nil {
		t.Fatalf("stored message header: %v\n%s", err, msg)
	}
	return h
}

// ourResults returns the results of the one Authentication-Results field
// with our authserv-id, failing if there is not exactly one.
func ourResults(t testing.TB, h gmtextproto.Header) map[string][]authres.Result {
	t.Helper()
	out := map[string][]authres.Result{}
	n := 0
	for _, v := range h.Values("Authentication-Results") {
		id, results, err := authres.Parse(v)
		if err != nil {
			t.Fatalf("parse %q: %v", v, err)
		}
		if !strings.EqualFold(id, mxHost) {
			continue
		}
		n++
		for _, r := range results {
			switch r := r.(type) {
			case *authres.SPFResult:
				out["spf"] = append(out["spf"], r)
			case *authres.DKIMResult:
				out["dkim"] = append(out["dkim"], r)
			case *authres.DMARCResult:
				out["dmarc"] = append(out["dmarc"], r)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d Authentication-Results fields of %s, want 1: %q", n, mxHost, h.Values("Authentication-Results"))
	}
	return out
}

func value(r authres.Result) authres.ResultValue {
	switch r := r.(type) {
	case *authres.SPFResult:
		return r.Value
	case *authres.DKIMResult:
		return r.Value
	case *authres.DMARCResult:
		return r.Value
	}
	return ""
}

// authDNS publishes the records the authentication cases rely on.
func authDNS(d *fakeDNS) {
	d.set("spf-pass.example", "v=spf1 ip4:127.0.0.1 -all")
	d.set("spf-fail.example", "v=spf1 ip4:192.0.2.1 -all")
	d.set("spf-soft.example", "v=spf1 ip4:192.0.2.1 ~all")
	d.set("spf-neutral.example", "v=spf1 ?all")
	for _, dom := range []string{"reject.example", "quarantine.example", "none.example", "pct.example", "strict.example", "relaxed.example"} {
		d.set(dom, "v=spf1 ip4:192.0.2.1 -all") // unaligned senders fail SPF
	}
	d.set("_dmarc.reject.example", "v=DMARC1; p=reject")
	d.set("_dmarc.quarantine.example", "v=DMARC1; p=quarantine")
	d.set("_dmarc.none.example", "v=DMARC1; p=none")
	d.set("_dmarc.pct.example", "v=DMARC1; p=reject; pct=50")
	d.set("_dmarc.org.example", "v=DMARC1; p=none; sp=reject")
	d.set("_dmarc.strict.example", "v=DMARC1; p=reject; adkim=s; aspf=s")
	d.set("_dmarc.relaxed.example", "v=DMARC1; p=reject")
	d.set("_dmarc.locked.example", "v=DMARC1; p=reject") // one of our own domains
	d.temp["_dmarc.tempfail.example"] = true
}

// TestMXAuthentication: each SPF, DKIM and DMARC outcome lands where the
// policy says, with one Authentication-Results field of ours saying why.
func TestMXAuthentication(t *testing.T) {
	e := newMXEnv(t, nil)
	authDNS(e.dns)
	ctx := context.Background()
	// locked.example is ours and publishes p=reject: forgeries of it are
	// refused; example.org publishes nothing: forgeries go to Junk.
	if _, err := e.st.CreateDomain(ctx, "locked.example", "mailstack", e.domain.DKIMKey); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		helo     string // default client.example
		mailFrom string // "" is the null sender
		from     string // From header address
		sign     string // DKIM-sign for this domain
		tamper   bool   // change the body after signing
		wantBox  string // INBOX, Junk or "" (refused)
		wantCode int    // when refused
		spf      authres.ResultValue
		dkim     authres.ResultValue
		dmarc    authres.ResultValue
	}{
		{name: "spf pass", mailFrom: "a@spf-pass.example", from: "a@spf-pass.example", wantBox: "INBOX",
			spf: authres.ResultPass, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "spf fail no dmarc", mailFrom: "a@spf-fail.example", from: "a@spf-fail.example", wantBox: "Junk",
			spf: authres.ResultFail, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "spf softfail", mailFrom: "a@spf-soft.example", from: "a@spf-soft.example", wantBox: "INBOX",
			spf: authres.ResultSoftFail, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "spf neutral", mailFrom: "a@spf-neutral.example", from: "a@spf-neutral.example", wantBox: "INBOX",
			spf: authres.ResultNeutral, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "spf none", mailFrom: "a@nospf.example", from: "a@nospf.example", wantBox: "INBOX",
			spf: authres.ResultNone, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "quoted sender with ; reported safely", mailFrom: `"a;b"@spf-pass.example`, from: "a@spf-pass.example", wantBox: "INBOX",
			spf: authres.ResultPass, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "null sender uses helo", helo: "spf-pass.example", from: "mailer-daemon@spf-pass.example", wantBox: "INBOX",
			spf: authres.ResultPass, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "dkim pass", mailFrom: "a@nospf.example", from: "a@dkim.example", sign: "dkim.example", wantBox: "INBOX",
			spf: authres.ResultNone, dkim: authres.ResultPass, dmarc: authres.ResultNone},
		{name: "dkim fail", mailFrom: "a@nospf.example", from: "a@dkim.example", sign: "dkim.example", tamper: true, wantBox: "INBOX",
			spf: authres.ResultNone, dkim: authres.ResultFail, dmarc: authres.ResultNone},
		{name: "spf fail rescued by dkim of the author", mailFrom: "a@spf-fail.example", from: "a@forwarded.example", sign: "forwarded.example",
			wantBox: "INBOX", spf: authres.ResultFail, dkim: authres.ResultPass, dmarc: authres.ResultNone},
		{name: "dmarc pass by dkim despite spf fail", mailFrom: "a@spf-fail.example", from: "a@reject.example", sign: "reject.example",
			wantBox: "INBOX", spf: authres.ResultFail, dkim: authres.ResultPass, dmarc: authres.ResultPass},
		{name: "dmarc pass relaxed subdomain", mailFrom: "a@nospf.example", from: "news@mail.relaxed.example", sign: "relaxed.example",
			wantBox: "INBOX", spf: authres.ResultNone, dkim: authres.ResultPass, dmarc: authres.ResultPass},
		{name: "dmarc reject", mailFrom: "a@reject.example", from: "a@reject.example", wantCode: 550},
		{name: "dmarc reject, spf pass unaligned", mailFrom: "a@spf-pass.example", from: "ceo@reject.example", wantCode: 550},
		{name: "dmarc reject, tampered dkim", mailFrom: "a@nospf.example", from: "a@reject.example", sign: "reject.example", tamper: true, wantCode: 550},
		{name: "dmarc reject, strict alignment", mailFrom: "a@nospf.example", from: "a@news.strict.example", sign: "strict.example", wantCode: 550},
		{name: "dmarc sp=reject via organisational domain", mailFrom: "a@nospf.example", from: "a@sub.org.example", wantCode: 550},
		{name: "dmarc p=none on the organisational domain itself", mailFrom: "a@nospf.example", from: "a@org.example", wantBox: "INBOX",
			spf: authres.ResultNone, dkim: authres.ResultNone, dmarc: authres.ResultFail},
		{name: "dmarc quarantine", mailFrom: "a@quarantine.example", from: "a@quarantine.example", wantBox: "Junk",
			spf: authres.ResultFail, dkim: authres.ResultNone, dmarc: authres.ResultFail},
		{name: "dmarc none", mailFrom: "a@none.example", from: "a@none.example", wantBox: "INBOX",
			spf: authres.ResultFail, dkim: authres.ResultNone, dmarc: authres.ResultFail},
		{name: "dmarc pct<100 reject is quarantine", mailFrom: "a@pct.example", from: "a@pct.example", wantBox: "Junk",
			spf: authres.ResultFail, dkim: authres.ResultNone, dmarc: authres.ResultFail},
		{name: "dmarc record unavailable", mailFrom: "a@nospf.example", from: "a@tempfail.example", wantCode: 451},
		{name: "forged local sender, no dmarc record", mailFrom: "a@nospf.example", from: "alice@example.org", wantBox: "Junk",
			spf: authres.ResultNone, dkim: authres.ResultNone, dmarc: authres.ResultNone},
		{name: "forged local sender, our p=reject", mailFrom: "a@nospf.example", from: "boss@locked.example", wantCode: 550},
		{name: "several From domains", mailFrom: "a@spf-pass.example", from: "a@spf-pass.example, b@reject.example", wantBox: "Junk",
			spf: authres.ResultPass, dkim: authres.ResultNone, dmarc: authres.ResultPermError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			helo := tc.helo
			if helo == "" {
				helo = "client.example"
			}
			marker := fmt.Sprintf("<case-%d@test>", time.Now().UnixNano())
			msg := crlf(fmt.Sprintf("From: %s\nTo: bob@example.org\nSubject: %s\nMessage-ID: %s\n\nHello.\n", tc.from, tc.name, marker))
			if tc.sign != "" {
				msg = e.dns.sign(t, tc.sign, msg)
			}
			if tc.tamper {
				msg = strings.Replace(msg, "Hello.", "Hello, changed.", 1)
			}
			before, err := e.st.CountMessageContents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = send(e.dial(t, helo, false), tc.mailFrom, []string{"bob@example.org"}, msg)
			box, stored := e.find(t, e.bob.ID, marker)
			if tc.wantBox == "" {
				if smtpCode(err) != tc.wantCode || box != "" {
					t.Fatalf("got %v, stored in %q; want %d and nothing stored", err, box, tc.wantCode)
				}
				// 5.7.1 delivery not authorized (a DMARC reject, RFC 7372
				// §3.3 uses 5.7.1 too); 4.7.0 for a check to retry.
				wantEnh := map[int]smtp.EnhancedCode{550: {5, 7, 1}, 451: {4, 7, 0}}[tc.wantCode]
				var se *smtp.SMTPError
				if errorsAs(err, &se); se.EnhancedCode != wantEnh {
					t.Errorf("enhanced code %v, want %v", se.EnhancedCode, wantEnh)
				}
				if after, _ := e.st.CountMessageContents(ctx); after != before {
					t.Errorf("refused message left %d content rows", after-before)
				}
				return
			}
			if err != nil || box != tc.wantBox {
				t.Fatalf("got %v, stored in %q; want %s", err, box, tc.wantBox)
			}
			if !strings.HasSuffix(stored, msg) {
				t.Errorf("message not stored byte-exact after our headers:\n%s", stored)
			}
			res := ourResults(t, header(t, stored))
			for method, want := range map[string]authres.ResultValue{"spf": tc.spf, "dkim": tc.dkim, "dmarc": tc.dmarc} {
				if len(res[method]) != 1 || value(res[method][0]) != want {
					t.Errorf("%s: got %+v, want %s", method, res[method], want)
				}
			}
			if spf := res["spf"][0].(*authres.SPFResult); spf.Helo != helo {
				t.Errorf("spf smtp.helo %q, want %q", spf.Helo, helo)
			}
			if d := res["dkim"][0].(*authres.DKIMResult); tc.sign != "" && d.Domain != tc.sign {
				t.Errorf("dkim header.d %q, want %s", d.Domain, tc.sign)
			}
		})
	}
}

// TestMXForgedResults: an incoming Authentication-Results field claiming
// our hostname is removed; one from another host is kept as received.
func TestMXForgedResults(t *testing.T) {
	e := newMXEnv(t, nil)
	authDNS(e.dns)
	msg := crlf("Authentication-Results: MX.example.org;\n dkim=pass header.d=reject.example\n" +
		"Authentication-Results: (upstream) mx.example.org; spf=pass smtp.mailfrom=x@reject.example\n" +
		"Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=a@spf-pass.example\n" +
		"From: a@spf-pass.example\nSubject: forged results\n\nHi.\n")
	if err := send(e.dial(t, "client.example", false), "a@spf-pass.example", []string{"bob@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	box, stored := e.find(t, e.bob.ID, "forged results")
	if box != "INBOX" {
		t.Fatalf("stored in %q", box)
	}
	h := header(t, stored)
	res := ourResults(t, h)
	if len(res["dkim"]) != 1 || value(res["dkim"][0]) != authres.ResultNone {
		t.Errorf("forged dkim=pass survived: %+v", res["dkim"])
	}
	if !strings.Contains(stored, "Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=a@spf-pass.example\r\n") {
		t.Errorf("another host's results were not kept:\n%s", stored)
	}
	if strings.Contains(stored, "header.d=reject.example") || strings.Contains(stored, "(upstream)") {
		t.Errorf("forged results still present:\n%s", stored)
	}
}

// TestMXRecipients: only existing local recipients are accepted; every
// relay form is refused.
func TestMXRecipients(t *testing.T) {
	e := newMXEnv(t, nil)
	ctx := context.Background()
	if err := e.st.CreateAlias(ctx, "info@example.org", "bob@example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateDomain(ctx, "catchall.example", "mailstack", e.domain.DKIMKey); err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateAlias(ctx, "@catchall.example", "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	relay := smtp.EnhancedCode{5, 7, 1}
	for _, tc := range []struct {
		rcpt    string
		code    int
		enhCode smtp.EnhancedCode
	}{
		{"bob@example.org", 250, smtp.EnhancedCode{}},
		{"BOB@Example.ORG", 250, smtp.EnhancedCode{}},
		{"bob@example.org.", 250, smtp.EnhancedCode{}},
		{"bob+lists@example.org", 250, smtp.EnhancedCode{}},
		{"info@example.org", 250, smtp.EnhancedCode{}},
		{"anything@catchall.example", 250, smtp.EnhancedCode{}},
		{"@elsewhere.example:bob@example.org", 250, smtp.EnhancedCode{}}, // source route ignored (RFC 5321 App. C)
		{"nobody@example.org", 550, smtp.EnhancedCode{5, 1, 1}},
		{"victim@elsewhere.example", 554, relay},
		{"@example.org:victim@elsewhere.example", 554, relay},
		{"@example.org,@mx.example.org:victim@elsewhere.example", 554, relay},
		{"victim%elsewhere.example@example.org", 554, relay},
		{"victim%elsewhere.example@catchall.example", 554, relay},
		{`"victim@elsewhere.example"@example.org`, 554, relay},
		{`"victim@elsewhere.example"@catchall.example`, 554, relay},
		{"victim!elsewhere.example@catchall.example", 554, relay},
		{"bob@[127.0.0.1]", 554, relay},
		{"victim@[192.0.2.1]", 554, relay},
		{"bob@example.org@elsewhere.example", 554, relay},
		{"victim@elsewhere.example%example.org", 554, relay},
	} {
		t.Run(tc.rcpt, func(t *testing.T) {
			c := e.dial(t, "client.example", false)
			if err := c.Mail("someone@elsewhere.example", nil); err != nil {
				t.Fatal(err)
			}
			err := c.Rcpt(tc.rcpt, nil)
			var se *smtp.SMTPError
			switch {
			case tc.code == 250 && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code != 250 && (!errorsAs(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.enhCode):
				t.Fatalf("got %v, want %d %v", err, tc.code, tc.enhCode)
			}
		})
	}
}

// TestMXLimits: SIZE, recipients per message, connections per IP, command
// and data timeouts.
func TestMXLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("size", func(t *testing.T) {
		e := newMXEnv(t, nil)
		c := e.dial(t, "client.example", false)
		if ok, v := c.Extension("SIZE"); !ok || v != "65536" {
			t.Errorf("SIZE advertised as %q %v", v, ok)
		}
		big := crlf("From: a@nospf.example\nSubject: big\n\n") + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 1000)
		err := send(c, "a@nospf.example", []string{"bob@example.org"}, big)
		var se *smtp.SMTPError
		if !errorsAs(err, &se) || se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) {
			t.Fatalf("over-size message: %v", err)
		}
		// Declared too big: refused at MAIL.
		c2 := e.dial(t, "client.example", false)
		if err := c2.Mail("a@nospf.example", &smtp.MailOptions{Size: 1 << 20}); smtpCode(err) != 552 {
			t.Errorf("MAIL SIZE=1MiB: %v", err)
		}
		if n, err := e.st.CountMessageContents(ctx); err != nil || n != 0 {
			t.Errorf("%d messages stored (%v)", n, err)
		}
		if m := storetest.Mailbox(t, e.st, e.bob.ID, "INBOX"); len(m) != 0 {
			t.Errorf("INBOX has %d messages", len(m))
		}
	})
	t.Run("recipients", func(t *testing.T) {
		e := newMXEnv(t, func(c *smtpd.Config, _ *smtpd.MXOptions) { c.MaxRecipients = 3 })
		c := e.dial(t, "client.example", false)
		if err := c.Mail("a@nospf.example", nil); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := c.Rcpt(fmt.Sprintf("bob+%d@example.org", i), nil); err != nil {
				t.Fatal(err)
			}
		}
		var se *smtp.SMTPError
		if err := c.Rcpt("alice@example.org", nil); !errorsAs(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 5, 3}) {
			t.Fatalf("4th recipient: %v", err)
		}
	})
	t.Run("connections per IP", func(t *testing.T) {
		e := newMXEnv(t, func(_ *smtpd.Config, o *smtpd.MXOptions) { o.MaxConnsPerIP = 2 })
		c1 := e.dial(t, "one.example", false)
		e.dial(t, "two.example", false)
		if smtpCode(hello(e.addr)) != 421 {
			t.Fatal("third connection not refused with 421")
		}
		if err := c1.Quit(); err != nil {
			t.Fatal(err)
		}
		// The slot is free once the server closed the first connection.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := hello(e.addr)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("slot never freed: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("command timeout", func(t *testing.T) {
		e := newMXEnv(t, func(c *smtpd.Config, _ *smtpd.MXOptions) { c.ReadTimeout = 200 * time.Millisecond })
		tp := rawDial(t, e.addr)
		time.Sleep(500 * time.Millisecond)
		if code, msg, _ := tp.ReadResponse(0); code != 421 {
			t.Errorf("idle client got %d %s, want 421", code, msg)
		}
	})
	t.Run("data timeout", func(t *testing.T) {
		e := newMXEnv(t, func(_ *smtpd.Config, o *smtpd.MXOptions) { o.DataTimeout = 200 * time.Millisecond })
		tp := rawDial(t, e.addr)
		converse(t, tp, "EHLO client.example", 250, "MAIL FROM:<a@nospf.example>", 250, "RCPT TO:<bob@example.org>", 250, "DATA", 354)
		tp.PrintfLine("Subject: slow\r\n\r\nfirst line") //nolint:errcheck // checked by the reply
		time.Sleep(500 * time.Millisecond)
		code, msg, _ := tp.ReadResponse(0)
		if code != 451 && code != 421 {
			t.Errorf("stalled DATA got %d %s, want 451 or 421", code, msg)
		}
		if n, _ := e.st.CountMessageContents(ctx); n != 0 {
			t.Errorf("%d messages stored", n)
		}
	})
	t.Run("slow but steady data", func(t *testing.T) {
		// Each read may wait DataTimeout; the whole message may take longer.
		const timeout = 300 * time.Millisecond
		e := newMXEnv(t, func(c *smtpd.Config, o *smtpd.MXOptions) { c.ReadTimeout, o.DataTimeout = timeout, timeout })
		tp := rawDial(t, e.addr)
		converse(t, tp, "EHLO client.example", 250, "MAIL FROM:<a@nospf.example>", 250, "RCPT TO:<bob@example.org>", 250, "DATA", 354)
		tp.PrintfLine("From: a@nospf.example\r\nSubject: trickle\r\n") //nolint:errcheck // checked by the reply
		for i := range 12 {
			time.Sleep(timeout / 3)
			if err := tp.PrintfLine("line %d", i); err != nil {
				t.Fatal(err)
			}
		}
		if err := tp.PrintfLine("."); err != nil {
			t.Fatal(err)
		}
		if code, msg, _ := tp.ReadResponse(0); code != 250 {
			t.Fatalf("slow but steady DATA got %d %s, want 250", code, msg)
		}
		if box, _ := e.find(t, e.bob.ID, "line 11\r\n"); box != "INBOX" {
			t.Errorf("stored in %q", box)
		}
	})
}

// hello connects, says EHLO and quits.
func hello(addr string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		return err
	}
	return c.Quit()
}

// rawDial opens a plain-text SMTP connection and reads the greeting.
func rawDial(t testing.TB, addr string) *textproto.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return rawConn(t, conn)
}

// rawConn reads the greeting on conn and returns it as a text connection,
// closed when the test ends.
func rawConn(t testing.TB, conn net.Conn) *textproto.Conn {
	t.Helper()
	tp := textproto.NewConn(conn)
	t.Cleanup(func() { tp.Close() })
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	return tp
}

// TestMXMalformed: ugly messages are delivered, byte for byte after the
// two fields we add in front; a malformed header does not hide its From
// field from DMARC and the forged-sender check, and a message without a
// usable From domain fails DMARC (Junk).
func TestMXMalformed(t *testing.T) {
	e := newMXEnv(t, nil)
	authDNS(e.dns)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		msg     string
		wantBox string // "" refused with 550 5.7.1
		dmarc   authres.ResultValue
	}{
		{"truncated multipart", crlf("From: a@spf-pass.example\nSubject: m1\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XYZ\n\n--XYZ\nContent-Type: text/plain\n\nfirst part, never closed\n--XYZ\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAAA\n"), "INBOX", authres.ResultNone},
		{"8-bit headers", crlf("From: J\xf6rg <a@spf-pass.example>\nSubject: m2 caf\xe9 \xff\xfe\nX-Raw: \x80\x81\n\nbody \xe9\n"), "INBOX", authres.ResultNone},
		{"no body separator", crlf("From: a@spf-pass.example\nSubject: m3\nX-Last: header only\n"), "INBOX", authres.ResultNone},
		{"unparseable From", crlf("From: <<<a@spf-pass.example\nSubject: m5\n\nbody\n"), "INBOX", authres.ResultNone},
		{"line without colon after From", crlf("From: a@spf-pass.example\nSubject: m7\nthis line has no colon\n\nbody\n"), "INBOX", authres.ResultNone},
		// No From domain at all: DMARC fails (RFC 7489 §6.6.1), Junk.
		{"not a header at all", crlf("m4 this is not a header line\nnor this\n\nbody\n"), "Junk", authres.ResultPermError},
		{"bare continuation first", crlf(" m6 starts with a continuation\nSubject: x\n\nbody\n"), "Junk", authres.ResultPermError},
		{"no From field", crlf("Subject: m8 no author\n\nbody\n"), "Junk", authres.ResultPermError},
		{"From without address", crlf("From: undisclosed-recipients:;\nSubject: m9\n\nbody\n"), "Junk", authres.ResultPermError},
		// A bad line must not make the From field invisible to DMARC.
		{"p=reject From, line without colon", crlf("From: a@reject.example\nSubject: m10\nthis line has no colon\n\nbody\n"), "", ""},
		{"p=reject From after a line without colon", crlf("Subject: m11\nno colon here\nFrom: a@reject.example\n\nbody\n"), "", ""},
		{"p=reject From, 8-bit field name", crlf("From: a@reject.example\nX-Caf\xe9: y\nSubject: m12\n\nbody\n"), "", ""},
		{"p=reject From, continuation first", crlf(" m13 continuation\nFrom: a@reject.example\n\nbody\n"), "", ""},
		// Nor from the forged-local-sender check.
		{"forged local From, line without colon", crlf("From: alice@example.org\nSubject: m14\nthis line has no colon\n\nbody\n"), "Junk", authres.ResultNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := e.st.CountMessageContents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = send(e.dial(t, "client.example", false), "a@spf-pass.example", []string{"bob@example.org"}, tc.msg)
			if tc.wantBox == "" {
				var se *smtp.SMTPError
				if !errorsAs(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
					t.Fatalf("got %v, want 550 5.7.1", err)
				}
				if after, _ := e.st.CountMessageContents(ctx); after != before {
					t.Errorf("refused message left %d content rows", after-before)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var found string
			for _, m := range storetest.Mailbox(t, e.st, e.bob.ID, tc.wantBox) {
				if strings.HasSuffix(m, tc.msg) {
					found = m
				}
			}
			if found == "" {
				t.Fatalf("not delivered byte-exact to %s", tc.wantBox)
			}
			pre := found[:len(found)-len(tc.msg)]
			h := header(t, pre+"\r\n")
			if f := h.Fields(); len(h.Values("Received")) != 1 || len(h.Values("Authentication-Results")) != 1 || f.Len() != 2 {
				t.Errorf("added header is not exactly Received + Authentication-Results:\n%s", pre)
			}
			if res := ourResults(t, h); len(res["dmarc"]) != 1 || value(res["dmarc"][0]) != tc.dmarc {
				t.Errorf("dmarc %+v, want %s", res["dmarc"], tc.dmarc)
			}
		})
	}
}

// TestMXThreeRecipients: one message for three local people (one of them
// twice, via an alias) is one content row and three INBOX entries,
// visible over IMAP as soon as the 250 came back.
func TestMXThreeRecipients(t *testing.T) {
	e := newMXEnv(t, nil)
	authDNS(e.dns)
	ctx := context.Background()
	carol, carolPass := e.account(t, "carol@example.org")
	if err := e.st.CreateAlias(ctx, "info@example.org", "bob@example.org"); err != nil {
		t.Fatal(err)
	}
	msg := crlf("From: a@spf-pass.example\nTo: everyone\nSubject: for three\n\nHello all.\n")
	err := send(e.dial(t, "client.example", false), "a@spf-pass.example",
		[]string{"alice@example.org", "bob@example.org", "carol@example.org", "info@example.org"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.CountMessageContents(ctx); err != nil || n != 1 {
		t.Errorf("%d content rows (%v), want 1", n, err)
	}

	imapAddr := e.imapServer(t)
	for _, u := range []struct{ user, pass string }{
		{"alice@example.org", e.alicePass}, {"bob@example.org", e.bobPass}, {carol.Address, carolPass},
	} {
		ic, err := imapclient.DialTLS(imapAddr, &imapclient.Options{TLSConfig: e.clientTLS})
		if err != nil {
			t.Fatal(err)
		}
		defer ic.Close()
		if err := ic.Login(u.user, u.pass).Wait(); err != nil {
			t.Fatal(err)
		}
		sel, err := ic.Select("INBOX", nil).Wait()
		if err != nil || sel.NumMessages != 1 {
			t.Fatalf("%s: SELECT INBOX: %+v %v (bob must get one copy despite the alias)", u.user, sel, err)
		}
		section := &imap.FetchItemBodySection{}
		msgs, err := ic.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: FETCH: %v %v", u.user, msgs, err)
		}
		body := string(msgs[0].FindBodySection(section))
		if !strings.HasPrefix(body, "Received: from client.example ([127.0.0.1])\r\n\tby mx.example.org (mailstack) with ESMTP id ") ||
			!strings.HasSuffix(body, msg) || strings.Contains(body, "\tfor <") {
			t.Errorf("%s: message over IMAP:\n%s", u.user, body)
		}
	}
}

// TestMXStartTLS: STARTTLS is offered (not required), AUTH never, and the
// Received field notes the TLS version and cipher.
func TestMXStartTLS(t *testing.T) {
	e := newMXEnv(t, nil)
	authDNS(e.dns)
	tp := rawDial(t, e.addr)
	cmd := func(line string) (int, string) {
		t.Helper()
		if err := tp.PrintfLine("%s", line); err != nil {
			t.Fatal(err)
		}
		code, msg, _ := tp.ReadResponse(0)
		return code, msg
	}
	if code, ehlo := cmd("EHLO client.example"); code != 250 || !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Errorf("EHLO: %d\n%s", code, ehlo)
	}
	if code, msg := cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@example.org\x00"+e.alicePass))); code/100 != 5 {
		t.Errorf("AUTH on the MX: %d %s", code, msg)
	}

	c := e.dial(t, "", true)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered after STARTTLS")
	}
	msg := crlf("From: a@spf-pass.example\nSubject: over tls\n\nSecret.\n")
	if err := send(c, "a@spf-pass.example", []string{"bob@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	box, stored := e.find(t, e.bob.ID, "over tls")
	if box != "INBOX" {
		t.Fatalf("stored in %q", box)
	}
	h := header(t, stored)
	received := h.Get("Received")
	for _, want := range []string{"with ESMTPS id", "(using TLS 1.3 with cipher TLS_", "for <bob@example.org>"} {
		if !strings.Contains(received, want) {
			t.Errorf("Received lacks %q: %s", want, received)
		}
	}
}

// TestMXNullSender: bounces (MAIL FROM:<>) are accepted.
func TestMXNullSender(t *testing.T) {
	e := newMXEnv(t, nil)
	msg := crlf("From: MAILER-DAEMON@elsewhere.example\nSubject: Undelivered Mail Returned to Sender\n\nsorry\n")
	if err := send(e.dial(t, "elsewhere.example", false), "", []string{"alice@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	if box, _ := e.find(t, e.alice.ID, "Undelivered Mail"); box != "INBOX" {
		t.Errorf("bounce stored in %q", box)
	}
}
