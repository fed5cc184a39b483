package dnscheck_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailstack/mailstack/httpd"
	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/dnscheck"
	"github.com/mailstack/mailstack/internal/mtasts"
	"github.com/mailstack/mailstack/internal/tlsconfig"
)

// dnsServer serves a fixed zone on 127.0.0.1 over UDP and TCP (one port),
// truncating UDP answers as a real server does, so long DKIM records
// exercise the resolver's TCP retry.
func dnsServer(t *testing.T, zone string) string {
	t.Helper()
	records := map[string][]dns.RR{} // "name/type"
	names := map[string]bool{}
	zp := dns.NewZoneParser(strings.NewReader(zone), "", "")
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		h := rr.Header()
		key := strings.ToLower(h.Name) + "/" + dns.TypeToString[h.Rrtype]
		records[key] = append(records[key], rr)
		names[strings.ToLower(h.Name)] = true
	}
	if err := zp.Err(); err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		// Follow one CNAME, as a recursive resolver would.
		if cn, ok := records[name+"/CNAME"]; ok && q.Qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, cn...)
			name = strings.ToLower(cn[0].(*dns.CNAME).Target)
		}
		m.Answer = append(m.Answer, records[name+"/"+dns.TypeToString[q.Qtype]]...)
		if len(m.Answer) == 0 && !names[name] {
			m.Rcode = dns.RcodeNameError
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			size := 512
			if o := r.IsEdns0(); o != nil {
				size = int(o.UDPSize())
			}
			m.Truncate(size)
		}
		w.WriteMsg(m)
	})
	// The resolver asks over UDP and TCP at one address: take a random
	// UDP port, then the same TCP port, again if something else holds it.
	var pc net.PacketConn
	var tl net.Listener
	for try := 0; tl == nil; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if tl, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			if try == 20 {
				t.Fatal(err)
			}
		}
	}
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: tl, Handler: handler}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return pc.LocalAddr().String()
}

// A long DKIM value (like an RSA-2048 key) that needs two TXT strings.
var dkimValue = "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 392)

func params() dnscheck.Params {
	return dnscheck.Params{
		Domain: "example.org", Hostname: "mail.example.net", DKIMSelector: "mailstack",
		DKIMRecord: dkimValue, MTASTS: mtasts.New(mtasts.Enforce, "mail.example.net"),
		Clients: clientconf.Default("mail.example.net"),
	}
}

func TestDoctorRecords(t *testing.T) {
	p := params()
	dkimRR := func(v string) string {
		var parts []string
		for len(v) > 200 {
			parts = append(parts, `"`+v[:200]+`"`)
			v = v[200:]
		}
		return strings.Join(append(parts, `"`+v+`"`), " ")
	}
	// Documentation addresses (RFC 5737): never dialled here, and not in
	// /etc/hosts, which Go's resolver reads before DNS.
	zone := `
mail.example.net. 300 IN A 192.0.2.10
10.2.0.192.in-addr.arpa. 300 IN PTR mail.example.net.
example.org. 300 IN MX 10 mail.example.net.
example.org. 300 IN TXT "google-site-verification=xyz"
example.org. 300 IN TXT "v=spf1 a mx ~all"
mailstack._domainkey.example.org. 300 IN TXT ` + dkimRR(strings.ReplaceAll(dkimValue, "; ", ";  ")) + `
_mta-sts.example.org. 300 IN TXT "v=STSv1; id=stale"
_smtp._tls.example.org. 300 IN TXT "v=TLSRPTv1;rua=mailto:postmaster@example.org"
_imaps._tcp.example.org. 300 IN SRV 0 1 993 imap.example.org.
_submissions._tcp.example.org. 300 IN SRV 0 1 465 mail.example.net.
_pop3._tcp.example.org. 300 IN SRV 0 0 0 .
imap.example.org. 300 IN CNAME mail.example.net.
smtp.example.org. 300 IN A 192.0.2.10
mta-sts.example.org. 300 IN A 192.0.2.1
`
	c := &dnscheck.Checker{Resolver: dnscheck.ResolverFor(dnsServer(t, zone))}
	ctx := context.Background()
	got := map[string]dnscheck.Result{}
	for _, r := range c.CheckRecords(ctx, dnscheck.Expected(p)) {
		got[r.Record.Type+" "+r.Record.Name] = r
	}
	tests := []struct {
		key  string
		want dnscheck.Status
	}{
		{"A mail.example.net", dnscheck.OK},
		{"MX example.org", dnscheck.OK},
		{"TXT example.org", dnscheck.Different},                   // SPF present but not ours
		{"TXT mailstack._domainkey.example.org", dnscheck.OK},     // split strings, extra spaces
		{"TXT _dmarc.example.org", dnscheck.Missing},              // NXDOMAIN
		{"TXT _mta-sts.example.org", dnscheck.Different},          // stale id
		{"TXT _smtp._tls.example.org", dnscheck.OK},               // spacing differs only
		{"SRV _imaps._tcp.example.org", dnscheck.OK},              //
		{"SRV _submissions._tcp.example.org", dnscheck.Different}, // wrong target
		{"SRV _submission._tcp.example.org", dnscheck.Missing},    //
		{"SRV _pop3._tcp.example.org", dnscheck.OK},               // "." = not offered
		{"SRV _imap._tcp.example.org", dnscheck.Missing},          //
		{"CNAME imap.example.org", dnscheck.OK},                   // CNAME to the host
		{"CNAME smtp.example.org", dnscheck.OK},                   // same address as the host
		{"CNAME mta-sts.example.org", dnscheck.Different},         // another address
		{"CNAME autoconfig.example.org", dnscheck.Missing},        //
	}
	for _, tt := range tests {
		r, ok := got[tt.key]
		if !ok {
			t.Errorf("%s: not checked", tt.key)
			continue
		}
		if r.Status != tt.want {
			t.Errorf("%s: %s (found %q, %s), want %s", tt.key, r.Status, r.Found, r.Detail, tt.want)
		}
	}
	rev := c.CheckReverse(ctx, "mail.example.net")
	if len(rev) != 1 || rev[0].Status != dnscheck.OK {
		t.Errorf("reverse: %+v", rev)
	}

	var out bytes.Buffer
	n, err := dnscheck.WriteReport(&out, "example.org", c.CheckRecords(ctx, dnscheck.Expected(p)), rev, nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || !strings.Contains(out.String(), `missing    TXT    _dmarc.example.org (DMARC)`) {
		t.Errorf("report (%d problems):\n%s", n, out.String())
	}
}

func TestDoctorEndpoints(t *testing.T) {
	certPEM, keyPEM, err := tlsconfig.Generate([]string{"mail.example.net", "imap.example.org", "smtp.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)

	implicit := listen(t, func(c net.Conn) { tls.Server(c, srvCfg).Handshake() })
	smtpSrv := listen(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		io.WriteString(c, "220 test ESMTP\r\n")
		br.ReadString('\n') // EHLO
		io.WriteString(c, "250-test\r\n250 STARTTLS\r\n")
		br.ReadString('\n') // STARTTLS
		io.WriteString(c, "220 go ahead\r\n")
		tc := tls.Server(c, srvCfg)
		tr := bufio.NewReader(tc)
		tr.ReadString('\n') // EHLO again
		io.WriteString(tc, "250 test\r\n")
		tr.ReadString('\n')
	})
	imapSrv := listen(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		io.WriteString(c, "* OK IMAP4rev1 ready\r\n")
		line, _ := br.ReadString('\n')
		tag, _, _ := strings.Cut(line, " ")
		io.WriteString(c, tag+" OK begin TLS\r\n")
		tls.Server(c, srvCfg).Handshake()
	})
	closed := func() int {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}()

	zone := `
mail.example.net. 300 IN A 127.0.0.1
imap.example.org. 300 IN CNAME mail.example.net.
smtp.example.org. 300 IN A 127.0.0.1
`
	c := &dnscheck.Checker{Resolver: dnscheck.ResolverFor(dnsServer(t, zone))}
	eps := []dnscheck.Endpoint{
		{Service: "imap", Host: "imap.example.org", Port: implicit, TLS: dnscheck.Implicit},
		{Service: "submission", Host: "smtp.example.org", Port: smtpSrv, TLS: dnscheck.StartTLSSMTP},
		{Service: "imap-starttls", Host: "imap.example.org", Port: imapSrv, TLS: dnscheck.StartTLSIMAP},
		{Service: "submissions", Host: "smtp.example.org", Port: closed, TLS: dnscheck.Implicit},
		{Service: "https", Host: "mta-sts.example.org", Port: implicit, TLS: dnscheck.Implicit}, // does not resolve
		{Service: "http", Host: "mail.example.net", Port: implicit, TLS: dnscheck.Plain},
	}
	res := c.CheckEndpoints(context.Background(), eps, dnscheck.ProbeOptions{Timeout: 3 * time.Second, RootCAs: roots})
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	for i, want := range []struct {
		answered, verified bool
	}{{true, true}, {true, true}, {true, true}, {false, false}, {false, false}, {true, false}} {
		r := res[i]
		if r.Answered != want.answered || r.Verified != want.verified {
			t.Errorf("%s: answered %v verified %v (err %v, verify %v); want %v %v", r.Service, r.Answered, r.Verified, r.Err, r.VerifyErr, want.answered, want.verified)
		}
		if want.verified && !r.NotAfter.Equal(leaf.NotAfter) {
			t.Errorf("%s: NotAfter %v, want %v", r.Service, r.NotAfter, leaf.NotAfter)
		}
	}
	// Without the test root, the certificate is reported as not verified.
	res = c.CheckEndpoints(context.Background(), eps[:1], dnscheck.ProbeOptions{Timeout: 3 * time.Second})
	if !res[0].Answered || res[0].Verified || res[0].NotAfter.IsZero() {
		t.Errorf("self-signed without roots: %+v", res[0])
	}
	var out bytes.Buffer
	if _, err := dnscheck.WriteReport(&out, "example.org", nil, nil, res, nil, time.Now()); err != nil || !strings.Contains(out.String(), "bad cert") {
		t.Errorf("report: %v\n%s", err, out.String())
	}
	// Near expiry is a problem.
	res = c.CheckEndpoints(context.Background(), eps[:1], dnscheck.ProbeOptions{Timeout: 3 * time.Second, RootCAs: roots,
		Now: func() time.Time { return leaf.NotAfter.Add(-24 * time.Hour) }})
	out.Reset()
	if n, _ := dnscheck.WriteReport(&out, "example.org", nil, nil, res, nil, leaf.NotAfter.Add(-24*time.Hour)); n != 1 || !strings.Contains(out.String(), "expiring") {
		t.Errorf("near expiry not reported:\n%s", out.String())
	}
}

// listen serves each connection on a loopback port with handle.
func listen(t *testing.T, handle func(net.Conn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

type servedDomains []string

func (d servedDomains) IsLocalDomain(_ context.Context, domain string) (bool, error) {
	for _, x := range d {
		if x == domain {
			return true, nil
		}
	}
	return false, nil
}

// TestDoctorDocuments fetches the MTA-STS policy and the autoconfig file
// from mailstack's own web handlers on a loopback HTTPS server, configured
// right and in the ways a deployment goes wrong.
func TestDoctorDocuments(t *testing.T) {
	p := params()
	certPEM, keyPEM, err := tlsconfig.Generate([]string{"mta-sts.example.org", "autoconfig.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	c := &dnscheck.Checker{Resolver: dnscheck.ResolverFor(dnsServer(t, `
mta-sts.example.org. 300 IN A 127.0.0.1
autoconfig.example.org. 300 IN A 127.0.0.1
`))}
	right := &httpd.Config{Clients: p.Clients, MTASTS: mtasts.Enforce, Domains: servedDomains{"example.org"}}
	hostStyle := p.Clients
	hostStyle.Hosts = clientconf.Hostname
	stale := &httpd.Config{Clients: hostStyle, MTASTS: mtasts.Testing, Domains: servedDomains{"example.org"}}
	notServed := &httpd.Config{Clients: p.Clients, MTASTS: mtasts.Enforce, Domains: servedDomains{"example.net"}}
	redirecting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == httpd.MTASTSPath {
			http.Redirect(w, r, "https://www.example.org/mta-sts.txt", http.StatusMovedPermanently)
			return
		}
		if r.URL.Path == httpd.AutoconfigPath { // clients follow this one
			http.Redirect(w, r, httpd.WellKnownAutoconfigPath+"?"+r.URL.RawQuery, http.StatusFound)
			return
		}
		right.HTTPSHandler().ServeHTTP(w, r)
	})
	tests := []struct {
		name    string
		handler http.Handler
		roots   *x509.CertPool
		want    [2]dnscheck.Status // MTA-STS policy, autoconfig
		detail  [2]string
	}{
		{"served as configured", right.HTTPSHandler(), roots, [2]dnscheck.Status{dnscheck.OK, dnscheck.OK}, [2]string{"mode enforce, mx mail.example.net", "4 servers"}},
		{"stale settings", stale.HTTPSHandler(), roots, [2]dnscheck.Status{dnscheck.Different, dnscheck.Different},
			[2]string{"mode testing, want enforce", "servers imap mail.example.net:143 STARTTLS"}},
		{"domain not served", notServed.HTTPSHandler(), roots, [2]dnscheck.Status{dnscheck.Missing, dnscheck.Missing}, [2]string{"404", "404"}},
		{"redirects", redirecting, roots, [2]dnscheck.Status{dnscheck.Failed, dnscheck.OK}, [2]string{"senders do not follow redirects", "4 servers"}},
		{"untrusted certificate", right.HTTPSHandler(), nil, [2]dnscheck.Status{dnscheck.Failed, dnscheck.Failed}, [2]string{"certificate", "certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			srv := &http.Server{Handler: tt.handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 5 * time.Second,
				ErrorLog: log.New(io.Discard, "", 0)} // the refused handshakes of the untrusted case
			go srv.ServeTLS(ln, "", "")
			t.Cleanup(func() { srv.Close() })
			docs := dnscheck.Documents(p)
			for i := range docs {
				u, err := url.Parse(docs[i].URL)
				if err != nil {
					t.Fatal(err)
				}
				u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
				docs[i].URL = u.String()
			}
			res := c.CheckDocuments(context.Background(), docs, dnscheck.ProbeOptions{Timeout: 5 * time.Second, RootCAs: tt.roots})
			for i, r := range res {
				if r.Status != tt.want[i] || !strings.Contains(r.Detail, tt.detail[i]) {
					t.Errorf("%s: %s %q, want %s with %q", r.Name, r.Status, r.Detail, tt.want[i], tt.detail[i])
				}
			}
			var out bytes.Buffer
			n, err := dnscheck.WriteReport(&out, "example.org", nil, nil, nil, res, time.Now())
			wantProblems := 0
			for _, s := range tt.want {
				if s != dnscheck.OK {
					wantProblems++
				}
			}
			if err != nil || n != wantProblems || !strings.Contains(out.String(), "Web documents") {
				t.Errorf("report: %d problems (want %d), %v:\n%s", n, wantProblems, err, out.String())
			}
		})
	}
}
