package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"howett.net/plist"

	"github.com/mailstack/mailstack/internal/dnscheck/dnstest"
	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

// The fake relay's certificate (testdata/relay-cert.pem, for 127.0.0.1,
// valid until 2124) is added to the roots every TLS client of this test
// binary trusts: serve verifies its relay against the system roots, as it
// must, and has no switch to turn that off. Set before any test runs,
// because Go reads SSL_CERT_FILE once, on first use of the system roots.
func init() {
	if f, err := filepath.Abs(filepath.Join("testdata", "relay-cert.pem")); err == nil {
		os.Setenv("SSL_CERT_FILE", f)
	}
}

var appPasswordRE = regexp.MustCompile(`[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}`)

// setupDomain creates example.org and alice@example.org and returns the
// database flag, the database URL and alice's first app password.
func setupDomain(t *testing.T) (db, url, appPassword string) {
	t.Helper()
	url = storetest.NewURL(t)
	db = "--database-url=" + url
	if out, err := mailstack(t, "", "domain", "add", db, "example.org"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := mailstack(t, "main-secret\n", "user", "add", db, "alice@example.org")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	appPassword = appPasswordRE.FindString(out)
	if appPassword == "" {
		t.Fatalf("no app password in:\n%s", out)
	}
	return db, url, appPassword
}

// serveProc is a `mailstack serve` running for one test.
type serveProc struct {
	addrs map[string]string // banner: listener name → address
	out   *syncBuffer
}

// startServe runs `mailstack serve` on the database at url until the test
// ends, with every listener off unless args turn it on, and returns the
// addresses from its banner.
func startServe(t *testing.T, url string, args ...string) *serveProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &serveProc{addrs: map[string]string{}, out: &syncBuffer{}}
	done := make(chan error, 1)
	full := append([]string{"serve", "--database-url=" + url, "--data-dir=" + t.TempDir(),
		"--hostname=mail.example.net", "--domains=example.org",
		"--imap-addr=", "--imap-starttls-addr=", "--submission-addr=", "--submissions-addr=", "--mx-addr=",
		"--http-addr=", "--https-addr=", "--admin-addr="}, args...)
	go func() { done <- run(ctx, full, strings.NewReader(""), p.out, p.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v\n%s", err, p.out.String())
			}
		case <-time.After(60 * time.Second):
			t.Error("serve did not stop")
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.out.String(), "Stop with Ctrl-C") {
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("serve exited: %v\n%s", err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up:\n%s", p.out.String())
		}
	}
	out := p.out.String()
	banner := out[strings.Index(out, "mailstack is running"):strings.Index(out, "Stop with Ctrl-C")]
	for _, m := range regexp.MustCompile(`(?m)^  (\S+) +(.+)$`).FindAllStringSubmatch(banner, -1) {
		p.addrs[m[1]] = m[2]
	}
	return p
}

// addr returns a listener's address, failing the test if it is not up.
func (p *serveProc) addr(t *testing.T, name string) string {
	t.Helper()
	a, ok := p.addrs[name]
	if !ok {
		t.Fatalf("no %s listener in the banner:\n%s", name, p.out.String())
	}
	return a
}

// metrics returns the admin listener's /metrics text.
func (p *serveProc) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + p.addr(t, "admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// waitMetrics polls /metrics until every line matches one of want's
// regular expressions (anchored to whole lines), so that counters
// incremented just after a reply was sent are seen.
func (p *serveProc) waitMetrics(t *testing.T, step string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		text := p.metrics(t)
		var missing []string
		for _, w := range want {
			if !regexp.MustCompile(`(?m)^` + w + `$`).MatchString(text) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /metrics lacks %q:\n%s", step, missing, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// insecureTLS is for serve's self-signed certificate.
var insecureTLS = &tls.Config{InsecureSkipVerify: true}

// submit sends msg through serve's submission listener (STARTTLS, AUTH
// PLAIN with an app password).
func submit(t *testing.T, addr, user, pass, from string, to []string, msg string) {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatalf("AUTH as %s: %v", user, err)
	}
	if err := c.SendMail(from, to, strings.NewReader(msg)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

// startRelay starts a smarthost on loopback (STARTTLS with testdata's
// certificate, AUTH PLAIN) that records what it is given, and returns it
// with its MAILSTACK_RELAY URL.
func startRelay(t *testing.T) (*smtptest.Server, string) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join("testdata", "relay-cert.pem"), filepath.Join("testdata", "relay-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	const user, pass = "relayuser", "relay-secret"
	r := smtptest.Start(t, smtptest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Domain: "relay.example", User: user, Password: pass})
	return r, "smtp://" + user + ":" + pass + "@" + r.Addr
}

// idleRecorder collects the EXISTS counts an IMAP client is told.
type idleRecorder chan uint32

func (r idleRecorder) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{Mailbox: func(d *imapclient.UnilateralDataMailbox) {
		if d.NumMessages != nil {
			r <- *d.NumMessages
		}
	}}
}

func (r idleRecorder) waitExists(t *testing.T, step string, n uint32) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-r:
			if got == n {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no EXISTS %d", step, n)
		}
	}
}

// imapLogin logs in over implicit TLS.
func imapLogin(t *testing.T, addr, user, pass string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: insecureTLS, UnilateralDataHandler: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("IMAP login as %s: %v", user, err)
	}
	return c
}

func TestMobileconfigCommand(t *testing.T) {
	db, url, _ := setupDomain(t)
	file := filepath.Join(t.TempDir(), "alice.mobileconfig")
	out, err := mailstack(t, "", "mobileconfig", db, "-hostname=mail.example.net", "alice@example.org", "-o", file, "-label", "Alice's iPhone")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "app-password revoke alice@example.org 2") {
		t.Errorf("no revoke hint:\n%s", out)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("profile mode %v, want 0600 (it holds a password)", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(file)
	var doc struct {
		PayloadType    string
		PayloadContent []map[string]any
	}
	if _, err := plist.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.PayloadType != "Configuration" || len(doc.PayloadContent) != 1 {
		t.Fatalf("profile: %+v", doc)
	}
	mail := doc.PayloadContent[0]
	for k, want := range map[string]any{
		"PayloadType":                  "com.apple.mail.managed",
		"EmailAddress":                 "alice@example.org",
		"IncomingMailServerHostName":   "imap.example.org",
		"IncomingMailServerPortNumber": uint64(993),
		"IncomingMailServerUseSSL":     true,
		"IncomingMailServerUsername":   "alice@example.org",
		"OutgoingMailServerHostName":   "smtp.example.org",
		"OutgoingMailServerPortNumber": uint64(587),
		"OutgoingMailServerUseSSL":     true,
		"OutgoingMailServerUsername":   "alice@example.org",
	} {
		if mail[k] != want {
			t.Errorf("%s = %#v, want %#v", k, mail[k], want)
		}
	}
	pw, _ := mail["IncomingPassword"].(string)
	if mail["OutgoingPassword"] != pw || !appPasswordRE.MatchString(pw) {
		t.Fatalf("passwords: %q %q", pw, mail["OutgoingPassword"])
	}
	st := storetest.Open(t, url)
	ctx := context.Background()
	acc, _ := st.AccountByAddress(ctx, "alice@example.org")
	aps, _ := st.AppPasswords(ctx, acc.ID)
	if len(aps) != 2 || aps[1].Label != "Alice's iPhone" {
		t.Errorf("app passwords: %+v", aps)
	}

	// The profile's password works as a device would use it: IMAP over
	// TLS and SMTP submission with STARTTLS, on a running server.
	srv := startServe(t, url, "--imap-addr=127.0.0.1:0", "--submission-addr=127.0.0.1:0")
	c := imapLogin(t, srv.addr(t, "imaps"), "alice@example.org", pw, nil)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	if sel.NumMessages != 0 || sel.UIDValidity == 0 {
		t.Errorf("SELECT INBOX: %+v", sel)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Error(err)
	}
	sc, err := smtp.DialStartTLS(srv.addr(t, "submission"), insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Auth(sasl.NewPlainClient("", "alice@example.org", pw)); err != nil {
		t.Errorf("submission AUTH with the profile's password: %v", err)
	}

	// To standard output, with the hostname style.
	out, err = mailstack(t, "", "mobileconfig", db, "-hostname=mail.example.net", "-client-hosts=hostname", "alice@example.org")
	if err != nil || !strings.Contains(out, "<string>mail.example.net</string>") || strings.Contains(out, "imap.example.org") {
		t.Errorf("stdout profile: %v\n%s", err, out)
	}
	if _, err := mailstack(t, "", "mobileconfig", db, "nobody@example.org"); err == nil {
		t.Error("profile for a missing account")
	}
}

// TestDNSCommand compares `mailstack dns` with a golden file (the DKIM key
// differs per run and is masked), checks the output is a valid zone file,
// and verifies, with the printed DKIM record, the signature of a message
// the server itself signed and sent out through a relay.
func TestDNSCommand(t *testing.T) {
	db, url, alicePass := setupDomain(t)
	for _, v := range []string{"MAILSTACK_IMAP_ADDR", "MAILSTACK_IMAP_STARTTLS_ADDR", "MAILSTACK_SUBMISSION_ADDR", "MAILSTACK_SUBMISSIONS_ADDR", "MAILSTACK_CLIENT_HOSTS"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	out, err := mailstack(t, "", "dns", db, "-hostname=mail.example.net", "-mta-sts-mode=enforce", "example.org")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Parse as a zone file and find the DKIM record.
	var dkimTXT string
	zp := dns.NewZoneParser(strings.NewReader(out), "", "")
	n := 0
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		n++
		if txt, isTXT := rr.(*dns.TXT); isTXT && txt.Hdr.Name == "mailstack._domainkey.example.org." {
			dkimTXT = strings.Join(txt.Txt, "")
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("not a valid zone file: %v\n%s", err, out)
	}
	if n < 15 || dkimTXT == "" {
		t.Fatalf("%d records, DKIM %q:\n%s", n, dkimTXT, out)
	}

	masked := regexp.MustCompile(`p=[A-Za-z0-9+/="\s]+"`).ReplaceAllString(out, `p=<DKIM PUBLIC KEY>"`)
	golden := filepath.Join("testdata", "dns-example.org.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(masked), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if masked != string(want) {
		t.Errorf("dns output differs from %s (run go test -update to accept):\n%s", golden, masked)
	}

	// Alice submits to a remote address; the server signs the message and
	// hands it to the relay; a receiver verifies it with the printed record.
	relay, relayURL := startRelay(t)
	srv := startServe(t, url, "--submission-addr=127.0.0.1:0", "--relay="+relayURL)
	submit(t, srv.addr(t, "submission"), "alice@example.org", alicePass, "alice@example.org", []string{"bob@remote.example"},
		"From: Alice <alice@example.org>\r\nTo: bob@remote.example\r\nSubject: signed by the server\r\n"+
			"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <dns-test@example.org>\r\n\r\nHello, Bob.\r\n")
	msgs := relay.Wait(t, 1)
	if msgs[0].From != "alice@example.org" || len(msgs[0].To) != 1 || msgs[0].To[0] != "bob@remote.example" {
		t.Errorf("relayed envelope: from %q to %q", msgs[0].From, msgs[0].To)
	}
	var lookups []string
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msgs[0].Data), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		lookups = append(lookups, name)
		if name != "mailstack._domainkey.example.org" {
			return nil, fmt.Errorf("no TXT record at %s", name)
		}
		return []string{dkimTXT}, nil
	}})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.org" {
		t.Fatalf("DKIM verification of the relayed message with the printed record: %v %+v (lookups %q)\n%s", err, vs, lookups, msgs[0].Data)
	}
}

// TestPostmaster checks that postmaster@ every served domain reaches an
// account (RFC 5321 §4.5.1), where the DMARC and TLS-RPT records that
// `mailstack dns` prints send reports, unless an account or alias of that
// name says otherwise. Delivery through the MX is in TestServeMetrics.
func TestPostmaster(t *testing.T) {
	db, url, _ := setupDomain(t)
	out, err := mailstack(t, "", "domain", "add", db, "example.net")
	if err != nil || !strings.Contains(out, "postmaster@example.net") {
		t.Fatalf("domain add does not say where postmaster mail goes: %v\n%s", err, out)
	}
	st := storetest.Open(t, url)
	ctx := context.Background()
	check := func(step string, want map[string]string) {
		t.Helper()
		for addr, owner := range want {
			acc, err := st.ResolveRecipient(ctx, addr)
			switch {
			case owner == "" && !errors.Is(err, store.ErrNotFound):
				t.Errorf("%s: %s resolves to %v, %v; want not found", step, addr, acc, err)
			case owner != "" && (err != nil || acc.Address != owner):
				t.Errorf("%s: %s resolves to %v, %v; want %s", step, addr, acc, err, owner)
			}
		}
	}
	check("one account", map[string]string{
		"postmaster@example.org":        "alice@example.org",
		"PostMaster+dmarc@Example.ORG":  "alice@example.org",
		"postmaster@example.net":        "alice@example.org", // no account there yet: the server's first
		"postmaster@not-served.example": "",
		"nobody@example.org":            "",
	})
	for _, u := range []string{"carol@example.net", "dave@example.net"} {
		if out, err := mailstack(t, "password-of-"+u+"\n", "user", "add", db, u); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	check("accounts in both domains", map[string]string{
		"postmaster@example.org": "alice@example.org",
		"postmaster@example.net": "carol@example.net", // the domain's own first account
	})
	if out, err := mailstack(t, "", "user", "disable", db, "carol@example.net"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	check("first account disabled", map[string]string{"postmaster@example.net": "dave@example.net"})
	if out, err := mailstack(t, "", "alias", "add", db, "postmaster@example.org", "dave@example.net"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	check("explicit alias", map[string]string{"postmaster@example.org": "dave@example.net"})
}

// TestServeMetrics drives a running server the way clients and other
// servers do and checks what /metrics says about it: IDLE sessions, an MX
// delivery (to postmaster, which must reach alice), the notification lag
// of changes, a submission and its delivery through the relay.
func TestServeMetrics(t *testing.T) {
	_, url, alicePass := setupDomain(t)
	relay, relayURL := startRelay(t)
	// The MX's SPF/DKIM/DMARC lookups go to a loopback DNS server, never
	// the internet: reporter.example has no records at all.
	dnsAddr := startZone(t)
	srv := startServe(t, url, "--imap-addr=127.0.0.1:0", "--submission-addr=127.0.0.1:0", "--mx-addr=127.0.0.1:0",
		"--admin-addr=127.0.0.1:0", "--relay="+relayURL, "--dns-server="+dnsAddr)
	imapAddr := srv.addr(t, "imaps")

	events := make(idleRecorder, 100)
	idler := imapLogin(t, imapAddr, "alice@example.org", alicePass, events.handler())
	if _, err := idler.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	// A change committed before the change feed listens reaches the
	// session by the resync after it connects, without a notification
	// (and so without a lag to observe): wait for it.
	srv.waitMetrics(t, "in IDLE", `mailstack_imap_idle_sessions 1`, `mailstack_logins_total\{protocol="imap",result="ok"\} 1`,
		`mailstack_change_feed_up 1`)

	// A DMARC report arrives on the MX for postmaster@example.org. The
	// sender's domain has no DMARC policy (NXDOMAIN), so it goes to INBOX.
	mx, err := smtp.Dial(srv.addr(t, "mx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := mx.SendMail("", []string{"postmaster@example.org"}, strings.NewReader(
		"From: reports@reporter.example\r\nTo: postmaster@example.org\r\nSubject: Report Domain: example.org\r\n"+
			"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nreport\r\n")); err != nil {
		t.Fatalf("MX delivery to postmaster: %v", err)
	}
	mx.Quit()
	events.waitExists(t, "MX delivery to postmaster, seen in alice's IDLE", 1)
	srv.waitMetrics(t, "after the MX delivery",
		`mailstack_messages_in_total\{service="mx"\} 1`,
		`mailstack_connections_total\{service="mx"\} 1`,
		`mailstack_notify_lag_seconds_count [1-9][0-9]*`)
	lagBefore := metricValue(t, srv.metrics(t), "mailstack_notify_lag_seconds_count")

	// A change from a second connection reaches the first through the
	// change feed, and is counted in the lag histogram.
	other := imapLogin(t, imapAddr, "alice@example.org", alicePass, nil)
	msg := "Subject: from the other connection\r\n\r\nhi\r\n"
	app := other.Append("INBOX", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
	if _, err := io.WriteString(app, msg); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Wait(); err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	events.waitExists(t, "APPEND from the second connection, seen in IDLE", 2)
	deadline := time.Now().Add(30 * time.Second)
	for metricValue(t, srv.metrics(t), "mailstack_notify_lag_seconds_count") <= lagBefore {
		if time.Now().After(deadline) {
			t.Fatalf("notify lag count stayed at %v after a change from another connection", lagBefore)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	srv.waitMetrics(t, "IDLE done", `mailstack_imap_idle_sessions 0`, `mailstack_logins_total\{protocol="imap",result="ok"\} 2`)

	// Alice sends to a remote address: accepted on submission, delivered
	// through the relay.
	submit(t, srv.addr(t, "submission"), "alice@example.org", alicePass, "alice@example.org", []string{"bob@remote.example"},
		"From: alice@example.org\r\nTo: bob@remote.example\r\nSubject: out\r\n\r\nhi\r\n")
	relay.Wait(t, 1)
	srv.waitMetrics(t, "after the relayed submission",
		`mailstack_messages_in_total\{service="submission"\} 1`,
		`mailstack_messages_out_total\{result="delivered"\} 1`,
		`mailstack_logins_total\{protocol="smtp",result="ok"\} 1`,
		`mailstack_queue_depth 0`)
}

// metricValue returns the value of the sample named exactly name.
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no %s in:\n%s", name, text)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// startZone serves records on a loopback DNS server (dnstest.Zone).
func startZone(t *testing.T, records ...string) string { return dnstest.Zone(t, records...) }

// TestDoctorCommand runs doctor against a loopback DNS server that has
// only the host's address and the MX: the rest must be reported missing
// and the command must fail.
func TestDoctorCommand(t *testing.T) {
	db, _, _ := setupDomain(t)
	dnsAddr := startZone(t, "mail.example.net. 60 IN A 127.0.0.1", "example.org. 60 IN MX 10 mail.example.net.")
	out, err := mailstack(t, "", "doctor", db, "-hostname=mail.example.net", "-dns-server="+dnsAddr, "-timeout=1s", "example.org")
	if err == nil || !strings.Contains(err.Error(), "problem") {
		t.Fatalf("doctor succeeded on an incomplete zone: %v\n%s", err, out)
	}
	for _, want := range []string{
		`ok +MX +example.org +10 mail.example.net`,
		`missing +TXT +_dmarc.example.org \(DMARC\) +publish: "v=DMARC1; p=quarantine`,
		`missing +TXT +example.org \(SPF\)`,
		`missing +CNAME +imap.example.org`,
		`Ports and certificates`,
		// mta-sts.example.org does not resolve, so the policy cannot be fetched.
		// Errors name the server asked, not the system's resolver.
		`error +MTA-STS policy +https://mta-sts.example.org/.well-known/mta-sts.txt +.*lookup mta-sts.example.org on ` + regexp.QuoteMeta(dnsAddr) + `: no such host`,
		`error +autoconfig +https://autoconfig.example.org/mail/config-v1.1.xml `,
		`(?m)^Summary: \d+ ok(, \d+ [a-z ]+)+: \d+ problem\(s\)\. 'mailstack dns example.org' prints the records to publish\.$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

// TestServeACMEWithCertFiles: ACME and certificate files are two answers
// to one question; asking for both is refused in one sentence.
func TestServeACMEWithCertFiles(t *testing.T) {
	url := storetest.NewURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out syncBuffer
	err := run(ctx, []string{"serve", "--database-url=" + url, "--data-dir=" + t.TempDir(), "--hostname=mail.example.net",
		"--acme-email=admin@example.org", "--tls-cert=/etc/ssl/fullchain.pem", "--tls-key=/etc/ssl/privkey.pem",
		"--imap-addr=", "--imap-starttls-addr=", "--submission-addr=", "--submissions-addr=", "--mx-addr=",
		"--http-addr=", "--https-addr=", "--admin-addr="}, strings.NewReader(""), &out, &out)
	if err == nil {
		t.Fatalf("serve started with both ACME and certificate files:\n%s", out.String())
	}
	msg := err.Error()
	if !strings.Contains(msg, "-acme-email") || !strings.Contains(msg, "-tls-cert") || strings.Contains(msg, "\n") ||
		strings.Count(strings.TrimSuffix(msg, "."), ". ") > 0 || strings.Contains(msg, "no such file") {
		t.Errorf("error %q: want one sentence naming both settings", msg)
	}
}

// TestServeHTTP starts serve with its web listeners on loopback and checks
// autoconfig, the MTA-STS policy, the redirect, /healthz and /metrics.
func TestServeHTTP(t *testing.T) {
	url := storetest.NewURL(t)
	// Autoconfig advertises the configured ports, so the mail listeners get
	// fixed free loopback ports rather than :0.
	imapAddr, submissionAddr := freeAddr(t), freeAddr(t)
	_, submissionPort, _ := net.SplitHostPort(submissionAddr)
	srv := startServe(t, url, "--mta-sts-mode=enforce", "--imap-addr="+imapAddr, "--submission-addr="+submissionAddr,
		"--http-addr=127.0.0.1:0", "--https-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0")
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: insecureTLS},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	get := func(base, host, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	httpBase, httpsBase, adminBase := "http://"+srv.addr(t, "http"), "https://"+srv.addr(t, "https"), "http://"+srv.addr(t, "admin")
	tests := []struct {
		base, host, path string
		status           int
		contains         string
	}{
		{httpsBase, "autoconfig.example.org", "/mail/config-v1.1.xml?emailaddress=alice@example.org", 200, "<hostname>imap.example.org</hostname>"},
		{httpBase, "autoconfig.example.org", "/mail/config-v1.1.xml", 200, "<port>" + submissionPort + "</port>"},
		{httpsBase, "mta-sts.example.org", "/.well-known/mta-sts.txt", 200, "mode: enforce\r\nmx: mail.example.net\r\n"},
		{httpBase, "mta-sts.example.org", "/.well-known/mta-sts.txt", 308, ""},
		{httpBase, "mail.example.net", "/healthz", 200, "ok"},
		{httpsBase, "mail.example.net", "/healthz", 200, "ok"},
		{httpsBase, "mail.example.net", "/signin", 200, `<form method="post" action="/signin"`},
		{httpsBase, "mail.example.net", "/", 303, ""},
		{httpBase, "mail.example.net", "/signin", 308, ""},
		{adminBase, "127.0.0.1", "/healthz", 200, "ok"},
		{adminBase, "127.0.0.1", "/metrics", 200, "mailstack_queue_depth 0\n"},
		{adminBase, "127.0.0.1", "/metrics", 200, "# TYPE mailstack_logins_total counter"},
		{adminBase, "127.0.0.1", "/metrics", 200, `mailstack_logins_total{protocol="imap",result="failed"} 1` + "\n"},
		{adminBase, "127.0.0.1", "/metrics", 200, `mailstack_connections_total{service="imap"} 1` + "\n"},
	}
	// A failed IMAP login, to be seen in the metrics.
	c, err := imapclient.DialTLS(imapAddr, &imapclient.Options{TLSConfig: insecureTLS})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login("nobody@example.org", "wrong").Wait(); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	c.Close()
	for _, tt := range tests {
		status, body := get(tt.base, tt.host, tt.path)
		if status != tt.status || !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s%s (Host %s): %d %q", tt.base, tt.path, tt.host, status, body)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
