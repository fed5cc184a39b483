package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"howett.net/plist"
)

// TestServeDev runs serve --dev twice as a developer would and checks what
// its banner promises: its own data directory (never the production
// settings'), one active app password whatever the number of starts, the
// CA file every client needs, which port is SSL/TLS and which STARTTLS, a
// curl line that works as printed, the autoconfig URL, a redirect to the
// HTTPS port, and an Apple profile for the dev listeners.
func TestServeDev(t *testing.T) {
	home := t.TempDir()
	prod := t.TempDir()
	t.Setenv("XDG_DATA_HOME", home)
	// Production settings, which --dev must not use.
	t.Setenv("MAILSTACK_DATA_DIR", prod)
	t.Setenv("MAILSTACK_DATABASE_URL", "postgres://mailstack@db.invalid/mailstack")
	httpAddr, httpsAddr := freeAddr(t), freeAddr(t)
	_, httpsPort, _ := net.SplitHostPort(httpsAddr)
	args := []string{"--dev", "--imap-addr=127.0.0.1:0", "--imap-starttls-addr=127.0.0.1:0", "--submission-addr=127.0.0.1:0",
		"--submissions-addr=127.0.0.1:0", "--mx-addr=", "--http-addr=" + httpAddr, "--https-addr=" + httpsAddr, "--admin-addr=127.0.0.1:0"}
	var previous string
	for start := 1; start <= 2; start++ {
		r := launch(t, args...).ready(t)
		out := r.out.String()
		field := func(re string) []string {
			t.Helper()
			m := regexp.MustCompile(`(?m)^` + re + `$`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("start %d: banner lacks %s:\n%s", start, re, out)
			}
			return m
		}
		pass := field(`Password +([a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}) .*`)[1]
		imapAddrs := field(`IMAP +(\S+) SSL/TLS, or (\S+) STARTTLS`)
		smtpAddrs := field(`SMTP +(\S+) SSL/TLS, or (\S+) STARTTLS`)
		caFile := field(` +(/\S+\.pem)`)[1]
		autoconfig := field(`Autoconfig +(http://\S+)`)[1]
		curl := field(`Try it +(curl .*)`)[1]

		if _, err := os.Stat(filepath.Join(home, "mailstack-dev", "postgres", "PG_VERSION")); err != nil {
			t.Fatalf("no cluster in the dev data directory: %v", err)
		}
		if entries, _ := os.ReadDir(prod); len(entries) != 0 {
			t.Fatalf("serve --dev wrote into MAILSTACK_DATA_DIR: %v", entries)
		}
		// The CA file is all a client needs to verify every listener.
		pem, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			t.Fatalf("%s holds no certificate", caFile)
		}
		verified := &tls.Config{RootCAs: roots, ServerName: "localhost"}
		for i, dial := range []func() (*imapclient.Client, error){
			func() (*imapclient.Client, error) {
				return imapclient.DialTLS(imapAddrs[1], &imapclient.Options{TLSConfig: verified})
			},
			func() (*imapclient.Client, error) {
				return imapclient.DialStartTLS(imapAddrs[2], &imapclient.Options{TLSConfig: verified})
			},
		} {
			c, err := dial()
			if err != nil {
				t.Fatalf("IMAP %s verified with the CA file: %v", imapAddrs[i+1], err)
			}
			if err := c.Login("dev@localhost", pass).Wait(); err != nil {
				t.Fatalf("IMAP login with the banner's password: %v", err)
			}
			if previous != "" {
				if err := imapLoginErr(imapAddrs[1], verified, previous); err == nil {
					t.Fatal("the previous start's app password still works")
				}
			}
			c.Close()
		}
		for i, dial := range []func() (*smtp.Client, error){
			func() (*smtp.Client, error) { return smtp.DialTLS(smtpAddrs[1], verified) },
			func() (*smtp.Client, error) { return smtp.DialStartTLS(smtpAddrs[2], verified) },
		} {
			c, err := dial()
			if err != nil {
				t.Fatalf("SMTP %s verified with the CA file: %v", smtpAddrs[i+1], err)
			}
			if err := c.Auth(sasl.NewPlainClient("", "dev@localhost", pass)); err != nil {
				t.Fatalf("SMTP login with the banner's password: %v", err)
			}
			c.Close()
		}
		// The curl line works as printed: it lists the mailboxes.
		if res, err := exec.Command("sh", "-c", curl+" --silent --show-error --max-time 20").CombinedOutput(); err != nil || !strings.Contains(string(res), "INBOX") {
			t.Fatalf("%s: %v\n%s", curl, err, res)
		}
		resp, err := http.Get(autoconfig)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", autoconfig, resp, err)
		}
		resp.Body.Close()
		// HTTP redirects to the HTTPS listener's port.
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err = client.Get("http://" + httpAddr + "/somewhere")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "https://127.0.0.1:"+httpsPort+"/somewhere" {
			t.Fatalf("redirect to %q, want the HTTPS port %s", loc, httpsPort)
		}
		// However often it starts, one dev app password is active.
		list, err := mailstack(t, "", "app-password", "list", "-dev", "dev@localhost")
		if err != nil || strings.Count(list, "active") != 1 || strings.Count(list, "revoked") != start-1 {
			t.Fatalf("start %d: app passwords %v\n%s", start, err, list)
		}
		previous = pass
		r.shutdown(t)
	}

	// An Apple profile for serve --dev points at its listeners.
	out, err := mailstack(t, "", "mobileconfig", "-dev", "dev@localhost", "-o", filepath.Join(t.TempDir(), "dev.mobileconfig"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(strings.TrimSpace(regexp.MustCompile(`to (\S+) with`).FindStringSubmatch(out)[1])), "dev.mobileconfig"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ PayloadContent []map[string]any }
	if _, err := plist.Unmarshal(b, &doc); err != nil || len(doc.PayloadContent) != 1 {
		t.Fatalf("profile: %v %+v", err, doc)
	}
	mail := doc.PayloadContent[0]
	for k, want := range map[string]any{
		"IncomingMailServerHostName": "localhost", "IncomingMailServerPortNumber": uint64(1993),
		"OutgoingMailServerHostName": "localhost", "OutgoingMailServerPortNumber": uint64(1587),
	} {
		if mail[k] != want {
			t.Errorf("dev profile %s = %#v, want %#v", k, mail[k], want)
		}
	}
}

// imapLoginErr tries one IMAP login.
func imapLoginErr(addr string, cfg *tls.Config, pass string) error {
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: cfg})
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Login("dev@localhost", pass).Wait()
}
