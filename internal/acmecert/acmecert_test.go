package acmecert_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	pebbledb "github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"golang.org/x/crypto/acme/autocert"

	"github.com/mailstack/mailstack/internal/acmecert"
	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

const hostname = "mail.example.net"

// startDNS runs a DNS server on loopback over TCP (pebble's validation
// authority asks a configured resolver over TCP only) that answers every A
// question with 127.0.0.1 and AAAA with nothing, so the test CA's
// validation of any name reaches the listeners of this test.
func startDNS(t *testing.T) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: tcp, Handler: handler}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return tcp.Addr().String()
}

// testCA is an in-process pebble ACME server on loopback.
type testCA struct {
	dirURL string
	client *http.Client
	roots  *x509.CertPool
}

// startPebble runs pebble (github.com/letsencrypt/pebble/v2, the ACME test
// server Let's Encrypt uses) in this process. Its validation authority
// connects to httpPort (HTTP-01) and tlsPort (TLS-ALPN-01) on whatever the
// DNS server at dnsAddr resolves.
func startPebble(t *testing.T, httpPort, tlsPort int, dnsAddr string) *testCA {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random validation delays
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberate bad-nonce errors
	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(testWriter{t}, "pebble ", 0)
	}
	db := pebbledb.NewMemoryStore()
	authority := ca.New(logger, db, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "test"}})
	validator := va.New(logger, httpPort, tlsPort, false, dnsAddr, db)
	front := wfe.New(logger, db, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(authority.GetRootCert(0).Cert)
	return &testCA{dirURL: srv.URL + wfe.DirectoryPath, client: srv.Client(), roots: roots}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func addDomain(t *testing.T, st *store.Store, name string) {
	t.Helper()
	key, err := dkimkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateDomain(context.Background(), name, "mailstack", key); err != nil {
		t.Fatal(err)
	}
}

// serveTLS handshakes every connection on l with cfg, as the HTTPS and
// mail listeners do.
func serveTLS(t *testing.T, l net.Listener, cfg *tls.Config) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					io.Copy(io.Discard, tc)
				}
			}()
		}
	}()
}

func TestHostPolicy(t *testing.T) {
	st := storetest.New(t)
	addDomain(t, st, "example.org")
	policy := acmecert.HostPolicy(hostname, st)
	tests := []struct {
		host string
		ok   bool
	}{
		{"mail.example.net", true},
		{"MAIL.example.net.", true},
		{"smtp.example.org:80", true}, // Host header of an HTTP-01 request
		{"imap.example.org", true},
		{"smtp.example.org", true},
		{"mta-sts.example.org", true},
		{"autoconfig.example.org", true},
		{"autodiscover.example.org", true},
		{"example.org", false},
		{"www.example.org", false},
		{"imap.example.com", false},
		{"imap.sub.example.org", false},
	}
	for _, tt := range tests {
		if err := policy(context.Background(), tt.host); (err == nil) != tt.ok {
			t.Errorf("policy(%q) = %v, want ok=%v", tt.host, err, tt.ok)
		}
	}
}

// TestTLSALPN01 obtains a certificate from pebble through TLS-ALPN-01 on
// a TLS listener (as on port 443), checks it is cached in PostgreSQL and
// that a second process sharing the database serves it without the CA.
func TestTLSALPN01(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewURL(t)
	st := storetest.Open(t, url)
	addDomain(t, st, "example.org")

	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// HTTP-01 points at a closed port: only TLS-ALPN-01 can succeed.
	pebble := startPebble(t, freePort(t), tlsLn.Addr().(*net.TCPAddr).Port, startDNS(t))
	m, err := acmecert.New(acmecert.Options{Email: "postmaster@example.org", DirectoryURL: pebble.dirURL,
		Hostname: hostname, Domains: st, Cache: st.CertCache(), HTTPClient: pebble.client})
	if err != nil {
		t.Fatal(err)
	}
	serveTLS(t, tlsLn, acmecert.TLSConfig(m, hostname, "http/1.1"))

	dial := func(serverName string) *x509.Certificate {
		t.Helper()
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", tlsLn.Addr().String(), &tls.Config{
			ServerName: serverName, RootCAs: pebble.roots,
			// Without SNI there is no name to verify; checked below.
			InsecureSkipVerify: serverName == "",
		})
		if err != nil {
			t.Fatalf("TLS to %q: %v", serverName, err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	leaf := dial("imap.example.org")
	if !slices.Contains(leaf.DNSNames, "imap.example.org") {
		t.Fatalf("certificate names %v", leaf.DNSNames)
	}
	if _, err := st.CertCache().Get(ctx, "imap.example.org"); err != nil {
		t.Fatalf("certificate not in the PostgreSQL cache: %v", err)
	}
	if _, err := st.CertCache().Get(ctx, "acme_account+key"); err != nil {
		t.Fatalf("ACME account key not in the PostgreSQL cache: %v", err)
	}

	// A client without SNI gets the host name's certificate.
	if noSNI := dial(""); !slices.Contains(noSNI.DNSNames, hostname) {
		t.Errorf("no-SNI certificate names %v, want %s", noSNI.DNSNames, hostname)
	}
	// A name that is not ours gets the host name's certificate too, and
	// no order is placed for it.
	if foreign := dialInsecure(t, tlsLn.Addr().String(), "www.example.com"); !slices.Contains(foreign.DNSNames, hostname) {
		t.Errorf("foreign-SNI certificate names %v", foreign.DNSNames)
	}

	// A second process on the same database, whose CA is unreachable,
	// serves the same certificate from the shared cache.
	st2 := storetest.Open(t, url)
	m2, err := acmecert.New(acmecert.Options{Email: "postmaster@example.org", DirectoryURL: "https://127.0.0.1:1/dir",
		Hostname: hostname, Domains: st2, Cache: st2.CertCache()})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := m2.GetCertificate(&tls.ClientHelloInfo{ServerName: "imap.example.org",
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := x509.ParseCertificate(cert.Certificate[0]); got == nil || got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("second process served a different certificate")
	}
	// And refuses names outside the policy.
	if _, err := m2.GetCertificate(&tls.ClientHelloInfo{ServerName: "www.example.org"}); err == nil {
		t.Error("certificate for a name outside the host policy")
	}
}

func dialInsecure(t *testing.T, addr, serverName string) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// TestHTTP01 obtains a certificate through HTTP-01 on a plain listener (as
// on port 80): TLS-ALPN-01 is tried first and fails (nothing listens on
// the TLS port), then autocert falls back to HTTP-01, which Prewarm uses.
func TestHTTP01(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	addDomain(t, st, "example.org")

	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pebble := startPebble(t, httpLn.Addr().(*net.TCPAddr).Port, freePort(t), startDNS(t))
	m, err := acmecert.New(acmecert.Options{Email: "postmaster@example.org", DirectoryURL: pebble.dirURL,
		Hostname: hostname, Domains: st, Cache: st.CertCache(), HTTPClient: pebble.client})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.HTTPHandler(nil), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(httpLn)
	t.Cleanup(func() { srv.Close() })

	acmecert.Prewarm(ctx, m, slog.New(slog.NewTextHandler(testWriter{t}, nil)), []string{"smtp.example.org"})
	data, err := st.CertCache().Get(ctx, "smtp.example.org")
	if err != nil {
		t.Fatalf("no certificate after Prewarm: %v", err)
	}
	if len(data) == 0 {
		t.Fatal("empty cache entry")
	}
	cert, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "smtp.example.org",
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "smtp.example.org", Roots: pebble.roots, Intermediates: inter}); err != nil {
		t.Errorf("certificate does not verify against the test CA: %v", err)
	}
	if _, err := st.CertCache().Get(ctx, "smtp.example.org+token"); !errors.Is(err, autocert.ErrCacheMiss) {
		// Not a contract, but challenge tokens should be cleaned up.
		t.Logf("token entry after issuance: %v", err)
	}
}

// TestChallengeAnsweredByAnotherProcess: with several processes behind one
// address, the CA's validation connection may reach a process other than
// the one that placed the order. Process A orders; only process B, on the
// same database, listens where the CA connects; B must answer from the
// shared cache, for both challenge types.
func TestChallengeAnsweredByAnotherProcess(t *testing.T) {
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			ctx := context.Background()
			url := storetest.NewURL(t)
			stA, stB := storetest.Open(t, url), storetest.Open(t, url)
			addDomain(t, stA, "example.org")
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			httpPort, tlsPort := freePort(t), port // the other one is closed
			if challenge == "http-01" {
				httpPort, tlsPort = port, freePort(t)
			}
			pebble := startPebble(t, httpPort, tlsPort, startDNS(t))
			manager := func(st *store.Store) *autocert.Manager {
				m, err := acmecert.New(acmecert.Options{Email: "postmaster@example.org", DirectoryURL: pebble.dirURL,
					Hostname: hostname, Domains: st, Cache: st.CertCache(), HTTPClient: pebble.client})
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			a, b := manager(stA), manager(stB)
			if challenge == "http-01" {
				// As in serve: a process with an HTTP listener offers
				// HTTP-01 (autocert tries it once TLS-ALPN-01 fails).
				a.HTTPHandler(nil)
				srv := &http.Server{Handler: b.HTTPHandler(nil), ReadHeaderTimeout: 5 * time.Second}
				go srv.Serve(ln)
				t.Cleanup(func() { srv.Close() })
			} else {
				serveTLS(t, ln, acmecert.TLSConfig(b, hostname, "h2", "http/1.1"))
			}
			cert, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "smtp.example.org",
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
			if err != nil {
				t.Fatalf("process A's order, validated at process B: %v", err)
			}
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil || !slices.Contains(leaf.DNSNames, "smtp.example.org") {
				t.Fatalf("certificate %v: %v", leaf.DNSNames, err)
			}
			if _, err := stB.CertCache().Get(ctx, "smtp.example.org"); err != nil {
				t.Errorf("certificate not in the shared cache: %v", err)
			}
		})
	}
}
