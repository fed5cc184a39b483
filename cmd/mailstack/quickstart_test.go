package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestQuickstart runs quickstart against a loopback DNS server (address,
// reverse DNS and a blocklist), a loopback stand-in for a remote port 25
// and loopback listen addresses, for a host that passes every check and
// for one that fails them, and checks the settings file, the domain and
// account it creates, and what it prints.
func TestQuickstart(t *testing.T) {
	// A remote mail server's port 25, greeting as one does.
	smtpProbe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { smtpProbe.Close() })
	go func() {
		for {
			c, err := smtpProbe.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 mx.remote.example ESMTP\r\n")) //nolint:errcheck
			c.Close()
		}
	}()
	closedPort := freeAddr(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	dnsAddr := startZone(t,
		"mail.example.org. 60 IN A 203.0.113.5",
		"5.113.0.203.in-addr.arpa. 60 IN PTR mail.example.org.",
		"mail.example.net. 60 IN A 198.51.100.7",
		"7.100.51.198.bl.test. 60 IN A 127.0.0.2",
		"loop.example.com. 60 IN A 127.0.0.1",
	)
	t.Setenv("MAILSTACK_HOSTNAME", "")
	os.Unsetenv("MAILSTACK_HOSTNAME")
	for _, v := range []string{"MAILSTACK_MX_ADDR", "MAILSTACK_HTTP_ADDR", "MAILSTACK_IMAP_STARTTLS_ADDR", "MAILSTACK_HTTPS_ADDR",
		"MAILSTACK_SUBMISSIONS_ADDR", "MAILSTACK_SUBMISSION_ADDR"} {
		t.Setenv(v, freeAddr(t))
	}
	tests := []struct {
		name    string
		args    []string
		busy    bool     // one listen address is taken
		want    []string // regexps the output must match
		account bool
	}{
		{name: "good host", args: []string{"-hostname=mail.example.org", "-address=you@example.org", "-port25-probe=" + smtpProbe.Addr().String(), "example.org"},
			account: true,
			want: []string{
				`ok +address of mail.example.org +203\.0\.113\.5`,
				`ok +reverse DNS of 203\.0\.113\.5 +mail\.example\.org`,
				`ok +blocklist bl\.test +not listed`,
				`ok +outgoing port 25 +open`,
				`ok +port 127\.0\.0\.1:\d+ +free \(IMAP SSL/TLS\)`,
				`All checks passed\.`,
				`Domain example\.org and account you@example\.org created\.`,
				`(?m)^example\.org\. 3600 IN MX 10 mail\.example\.org\.$`,
				`(?m)^mailstack\._domainkey\.example\.org\. 3600 IN TXT "v=DKIM1; k=rsa; p=`,
				`User name +you@example\.org`,
				`IMAP +imap\.example\.org port \d+, SSL/TLS`,
				`SMTP +smtp\.example\.org port \d+, STARTTLS`,
			}},
		{name: "failing host", args: []string{"-hostname=mail.example.net", "-address=you@example.net", "-port25-probe=" + closedPort, "-no-account", "example.net"},
			busy: true,
			want: []string{
				`ok +address of mail\.example\.net +198\.51\.100\.7`,
				`PROBLEM +reverse DNS of 198\.51\.100\.7 +none: ask your ISP`,
				`PROBLEM +blocklist bl\.test +198\.51\.100\.7 is listed \(127\.0\.0\.2\)`,
				`PROBLEM +outgoing port 25 +blocked`,
				`PROBLEM +port 127\.0\.0\.1:\d+ +in use by another program \(IMAP SSL/TLS\)`,
				`4 problem\(s\)`,
				`Next: docker compose up -d; then docker compose exec mailstack mailstack quickstart -for compose -env= -checks=false -address you@example\.net example\.net`,
			}},
		{name: "loopback host", args: []string{"-hostname=loop.example.com", "-address=you@example.com", "-port25-probe=" + smtpProbe.Addr().String(), "-no-account", "example.com"},
			want: []string{`PROBLEM +address of loop\.example\.com +127\.0\.0\.1 is not a public address`, `1 problem\(s\)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			imapAddr := freeAddr(t)
			if tt.busy {
				imapAddr = busy.Addr().String()
			}
			t.Setenv("MAILSTACK_IMAP_ADDR", imapAddr)
			url := storetest.NewURL(t)
			envFile := filepath.Join(t.TempDir(), ".env")
			args := append([]string{"quickstart", "-for=compose", "-env=" + envFile, "-dns-server=" + dnsAddr, "-dnsbl=bl.test",
				"-timeout=2s", "--database-url=" + url}, tt.args...)
			stdout, stderr, code := command("a-long-main-password\n", args...)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !regexp.MustCompile(w).MatchString(stdout) {
					t.Errorf("output lacks %s:\n%s", w, stdout)
				}
			}
			// The settings file: mode 0600, read by sh as compose would.
			fi, err := os.Stat(envFile)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("settings file mode %v, want 0600", fi.Mode().Perm())
			}
			out, err := exec.Command("sh", "-c", `set -a; . "$1"; echo "$MAILSTACK_HOSTNAME $MAILSTACK_DOMAINS $MAILSTACK_ACME_EMAIL $POSTGRES_PASSWORD"`, "sh", envFile).Output()
			if err != nil {
				t.Fatal(err)
			}
			host := strings.TrimPrefix(tt.args[0], "-hostname=")
			domain := tt.args[len(tt.args)-1]
			if !regexp.MustCompile(`^` + regexp.QuoteMeta(host+" "+domain+" you@"+domain) + ` [0-9a-f]{48}\n$`).Match(out) {
				t.Errorf("settings file gives %q", out)
			}
			// Run again, it refuses to overwrite the file.
			if _, stderr, code := command("a-long-main-password\n", args...); code == 0 || !strings.Contains(stderr, "exists already") {
				t.Errorf("second run: exit %d, %s", code, stderr)
			}
			st := storetest.Open(t, url)
			acc, err := st.AccountByAddress(context.Background(), "you@"+domain)
			if (err == nil) != tt.account {
				t.Fatalf("account you@%s: %v, want created %v", domain, err, tt.account)
			}
			if !tt.account {
				return
			}
			// The printed app password logs in.
			secret := appPasswordRE.FindString(stdout)
			if _, err := st.Authenticate(context.Background(), store.Credentials{Username: acc.Address, Password: secret,
				Protocol: store.ProtocolIMAP, RemoteIP: "192.0.2.1"}); err != nil {
				t.Errorf("login with the printed app password %q: %v", secret, err)
			}
		})
	}
}
