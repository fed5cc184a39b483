package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
	"howett.net/plist"

	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

// setupDomain creates example.org and alice@example.org and returns the
// database flag.
func setupDomain(t *testing.T) (db string, url string) {
	t.Helper()
	url = storetest.NewURL(t)
	db = "--database-url=" + url
	if out, err := mailstack(t, "", "domain", "add", db, "example.org"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := mailstack(t, "main-secret\n", "user", "add", db, "alice@example.org"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return db, url
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func TestMobileconfigCommand(t *testing.T) {
	db, url := setupDomain(t)
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
	// The embedded password is a working, labelled app password. (An
	// IMAP-level login belongs here too once imapd is wired into serve.)
	pw, _ := mail["IncomingPassword"].(string)
	if mail["OutgoingPassword"] != pw || !regexp.MustCompile(`^[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}$`).MatchString(pw) {
		t.Fatalf("passwords: %q %q", pw, mail["OutgoingPassword"])
	}
	st := openStore(t, url)
	ctx := context.Background()
	for _, proto := range []string{store.ProtocolIMAP, store.ProtocolSMTP} {
		login, err := st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: pw, Protocol: proto, RemoteIP: "127.0.0.1"})
		if err != nil || login.AppPasswordID == 0 {
			t.Fatalf("%s login with the profile's password: %+v %v", proto, login, err)
		}
	}
	acc, _ := st.AccountByAddress(ctx, "alice@example.org")
	aps, _ := st.AppPasswords(ctx, acc.ID)
	if len(aps) != 2 || aps[1].Label != "Alice's iPhone" {
		t.Errorf("app passwords: %+v", aps)
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
// and verifies a DKIM signature made with the stored key against the
// printed record.
func TestDNSCommand(t *testing.T) {
	db, url := setupDomain(t)
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

	// Sign with the stored key as the server does; verify with the
	// printed record as a receiver would.
	st := openStore(t, url)
	d, err := st.DomainByName(context.Background(), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := dkimkey.Signer(d.DKIMKey)
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello.\r\n"
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{Domain: "example.org", Selector: d.DKIMSelector, Signer: signer}); err != nil {
		t.Fatal(err)
	}
	vs, err := dkim.VerifyWithOptions(&signed, &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		if name != "mailstack._domainkey.example.org" {
			t.Errorf("lookup of %q", name)
		}
		return []string{dkimTXT}, nil
	}})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("DKIM verification with the printed record: %v %+v", err, vs)
	}
}

// TestDoctorCommand runs doctor against a loopback DNS server that has
// only the host's address and the MX: the rest must be reported missing
// and the command must fail.
func TestDoctorCommand(t *testing.T) {
	db, _ := setupDomain(t)
	zone := map[string]dns.RR{}
	for _, s := range []string{"mail.example.net. 60 IN A 127.0.0.1", "example.org. 60 IN MX 10 mail.example.net."} {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		zone[rr.Header().Name+"/"+dns.TypeToString[rr.Header().Rrtype]] = rr
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true // an empty answer is then "no such record", not a lame referral
		q := r.Question[0]
		if rr, ok := zone[strings.ToLower(q.Name)+"/"+dns.TypeToString[q.Qtype]]; ok {
			m.Answer = append(m.Answer, rr)
		} else if q.Name != "example.org." && q.Name != "mail.example.net." {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })

	out, err := mailstack(t, "", "doctor", db, "-hostname=mail.example.net", "-dns-server="+pc.LocalAddr().String(), "-timeout=1s", "example.org")
	if err == nil || !strings.Contains(err.Error(), "problem") {
		t.Fatalf("doctor succeeded on an incomplete zone: %v\n%s", err, out)
	}
	for _, want := range []string{
		`ok +MX +example.org +10 mail.example.net`,
		`missing +TXT +_dmarc.example.org \(DMARC\) +publish: "v=DMARC1; p=quarantine`,
		`missing +TXT +example.org \(SPF\)`,
		`missing +CNAME +imap.example.org`,
		`Ports and certificates`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

// TestServeHTTP starts serve with its web listeners on loopback and checks
// autoconfig, the MTA-STS policy, the redirect, /healthz and /metrics.
func TestServeHTTP(t *testing.T) {
	url := storetest.NewURL(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	// Autoconfig advertises the configured ports, so the mail listeners get
	// fixed free loopback ports rather than :0.
	imapAddr, submissionAddr := freeAddr(t), freeAddr(t)
	_, submissionPort, _ := net.SplitHostPort(submissionAddr)
	go func() {
		done <- run(ctx, []string{"serve", "--database-url=" + url, "--data-dir=" + t.TempDir(),
			"--hostname=mail.example.net", "--domains=example.org", "--mta-sts-mode=enforce",
			"--imap-addr=" + imapAddr, "--imap-starttls-addr=", "--submission-addr=" + submissionAddr, "--submissions-addr=", "--mx-addr=",
			"--http-addr=127.0.0.1:0", "--https-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"},
			strings.NewReader(""), &out, &out)
	}()
	// Listener addresses come from the banner; the IMAP/SMTP wiring may
	// or may not be present in this build, so only the web ones are used.
	addrs := map[string]string{}
	deadline := time.Now().Add(60 * time.Second)
	for len(addrs) < 3 {
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up:\n%s", out.String())
		}
		if strings.Contains(out.String(), "mailstack is running") {
			for _, m := range regexp.MustCompile(`(?m)^\s+(http|https|admin)\s+(127\.0\.0\.1:\d+)$`).FindAllStringSubmatch(out.String(), -1) {
				addrs[m[1]] = m[2]
			}
			if len(addrs) < 3 {
				t.Fatalf("banner lacks web listeners:\n%s", out.String())
			}
		}
	}
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // self-signed
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	get := func(base, host, path string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	httpBase, httpsBase, adminBase := "http://"+addrs["http"], "https://"+addrs["https"], "http://"+addrs["admin"]
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
		{adminBase, "127.0.0.1", "/healthz", 200, "ok"},
		{adminBase, "127.0.0.1", "/metrics", 200, "mailstack_queue_depth 0\n"},
		{adminBase, "127.0.0.1", "/metrics", 200, "# TYPE mailstack_logins_total counter"},
		{adminBase, "127.0.0.1", "/metrics", 200, `mailstack_logins_total{protocol="imap",result="failed"} 1` + "\n"},
		{adminBase, "127.0.0.1", "/metrics", 200, `mailstack_connections_total{service="imap"} 1` + "\n"},
	}
	// A failed IMAP login, to be seen in the metrics.
	c, err := imapclient.DialTLS(imapAddr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login("nobody@example.org", "wrong").Wait(); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	c.Close()
	for _, tt := range tests {
		status, body, _ := get(tt.base, tt.host, tt.path)
		if status != tt.status || !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s%s (Host %s): %d %q", tt.base, tt.path, tt.host, status, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not stop")
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
