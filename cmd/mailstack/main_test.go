package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/tlsconfig"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/pglocal"
	"github.com/mailstack/mailstack/store/storetest"
)

// asMainEnv makes the test binary run mailstack's main instead of the
// tests, so tests can run mailstack as a process of its own (signals,
// pipes, other users) with exactly the code under test.
const asMainEnv = "MAILSTACK_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
		return
	}
	storetest.Main(m)
}

// mailstackCommand returns a command running mailstack (this test binary
// as main) with args.
func mailstackCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	return cmd
}

// syncBuffer is a bytes.Buffer safe for a writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mailstack runs one command line and returns its output and error.
func mailstack(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String() + errOut.String(), err
}

// command runs one command line as main does and returns what it printed
// and its exit status.
func command(stdin string, args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = runMain(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

// oneSentence reports whether s is exactly one line ending in a full stop.
func oneSentence(s string) bool {
	line, ok := strings.CutSuffix(s, "\n")
	return ok && !strings.Contains(line, "\n") && strings.HasSuffix(line, ".")
}

func TestAdminCommands(t *testing.T) {
	url := storetest.NewURL(t)
	db := "--database-url=" + url
	var firstAppPassword string
	steps := []struct {
		stdin   string
		args    []string
		wantErr bool
		// want is a regexp that stdout must match, or, for an error, the
		// one line on stderr.
		want   string
		before func(t *testing.T)                // runs before the command
		after  func(t *testing.T, stdout string) // gets stdout of a success
	}{
		{stdin: "", args: []string{"domain", "add", db, "Example.ORG"}, want: `mailstack\._domainkey\.example\.org\.\s+TXT\s+"v=DKIM1; k=rsa; p=[^"]{200,}" "[^"]+"\n`}, // split as 'dns' does
		{args: []string{"domain", "add", db, "example.org"}, wantErr: true, want: `^The domain example\.org already exists\.$`},
		{args: []string{"domain", "list", db}, want: `example\.org\s+mailstack`},
		{args: []string{"domain", "del", db, "nope.example"}, wantErr: true, want: `^Domain nope\.example is not served here \(see 'mailstack domain list'\)\.$`},
		{stdin: "s3cret-main\n", args: []string{"user", "add", db, "alice@example.org"},
			want: `(?s)INBOX, Drafts, Sent, Archive, Junk and Trash.*\n\s+[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}\n`,
			after: func(t *testing.T, out string) {
				firstAppPassword = regexp.MustCompile(`[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}`).FindString(out)
			}},
		{stdin: "long-enough\n", args: []string{"user", "add", db, "alice@example.org"}, wantErr: true, want: `^An account alice@example\.org already exists\.$`},
		{stdin: "long-enough\n", args: []string{"user", "add", db, "bob@nowhere.example"}, wantErr: true, want: `^Domain nowhere\.example is not served here \(see 'mailstack domain list'\)\.$`},
		{stdin: "x\n", args: []string{"user", "add", db, "not-an-address"}, wantErr: true, want: `^"not-an-address" is not an address of the form user@domain\.$`},
		{args: []string{"user", "add", db, "carol@example.org"}, wantErr: true, want: `^No password given on standard input\.$`},
		{stdin: "1234567\n", args: []string{"user", "add", db, "carol@example.org"}, wantErr: true,
			want: `^The main password is too short: use at least 8 characters\.$`},
		// Flags after the address, and a quota with a unit.
		{stdin: "carols-password\n", args: []string{"user", "add", "carol@example.org", db, "-quota", "1G"}, want: `Account carol@example\.org created`},
		{args: []string{"user", "list", db}, want: `(?s)alice@example\.org\s+active\s+unlimited.*carol@example\.org\s+active\s+1073741824`},
		{stdin: "daves-password\n", args: []string{"user", "add", db, "-admin", "dave@example.org"}, want: `Account dave@example\.org created`,
			after: func(t *testing.T, _ string) { wantAdmins(t, url, "dave@example.org") }},
		{args: []string{"user", "admin", db, "carol@example.org"}, want: `carol@example\.org is an administrator`,
			after: func(t *testing.T, _ string) { wantAdmins(t, url, "carol@example.org", "dave@example.org") }},
		{args: []string{"user", "admin", db, "-off", "dave@example.org"}, want: `dave@example\.org is no longer an administrator`,
			after: func(t *testing.T, _ string) { wantAdmins(t, url, "carol@example.org") }},
		{args: []string{"user", "admin", db, "ghost@example.org"}, wantErr: true, want: `^No account ghost@example\.org exists\.$`},
		{stdin: "12345678\n", args: []string{"user", "passwd", db, "carol@example.org"}, want: `changed`},
		// App password numbers count per account: carol's first is 1.
		{args: []string{"app-password", "list", "carol@example.org", db}, want: `(?m)^1\s+first device`},
		{args: []string{"alias", "add", db, "postmaster@example.org", "alice@example.org"}, want: `now goes to alice@example.org`},
		{args: []string{"alias", "add", db, "postmaster@example.org", "alice@example.org"}, wantErr: true, want: `^An alias postmaster@example\.org already exists\.$`},
		{args: []string{"alias", "add", db, "info@example.org", "ghost@example.org"}, wantErr: true, want: `^No account ghost@example\.org exists\.$`},
		{args: []string{"alias", "add", db, "info@other.example", "alice@example.org"}, wantErr: true, want: `^Domain other\.example is not served here`},
		{args: []string{"alias", "add", db, "alice@example.org", "alice@example.org"}, wantErr: true, want: `^An account alice@example\.org already exists\.$`},
		{args: []string{"alias", "add", db, "bad address@example.org", "alice@example.org"}, wantErr: true, want: `^Alias "bad address@example\.org" must be user@domain or @domain\.$`},
		{args: []string{"alias", "list", db, "example.org"}, want: `postmaster@example\.org\s+alice@example\.org`},
		{args: []string{"alias", "del", db, "ghost@example.org"}, wantErr: true, want: `^No alias ghost@example\.org exists\.$`},
		{args: []string{"app-password", "add", db, "alice@example.org", "iPhone"}, want: `App password 2 \(iPhone\)`},
		{args: []string{"app-password", "revoke", db, "alice@example.org", "2"}, want: `revoked`},
		{args: []string{"app-password", "revoke", db, "alice@example.org", "99"}, wantErr: true, want: `^No app password 99 exists\.$`},
		{args: []string{"app-password", "revoke", db, "carol@example.org", "2"}, wantErr: true, want: `^No app password 2 exists\.$`},
		{args: []string{"app-password", "add", "carol@example.org", "laptop", db}, want: `App password 2 \(laptop\) for carol@example\.org`},
		{args: []string{"app-password", "revoke", "carol@example.org", "1", db}, want: `App password 1 of carol@example\.org revoked`},
		{args: []string{"app-password", "revoke", db, "alice@example.org", "two"}, wantErr: true, want: `^App password ID "two" is not a number; see 'mailstack app-password list alice@example\.org'\.$`},
		{args: []string{"app-password", "list", db, "ghost@example.org"}, wantErr: true, want: `^No account ghost@example\.org exists\.$`},
		{args: []string{"app-password", "list", db, "alice@example.org"}, want: `(?s)1\s+first device.*never.*active.*2\s+iPhone.*revoked`},
		{args: []string{"activity", db, "alice@example.org"},
			before: func(t *testing.T) {
				st, err := store.Open(context.Background(), url, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				if _, err := st.Authenticate(context.Background(), store.Credentials{Username: "alice@example.org", Password: firstAppPassword,
					Protocol: store.ProtocolIMAP, RemoteIP: "192.0.2.7", Client: "iPhone Mail 18.2 (iOS 18.2)"}); err != nil {
					t.Fatalf("login with the first app password: %v", err)
				}
				if _, err := st.Authenticate(context.Background(), store.Credentials{Username: "alice@example.org", Password: "guess",
					Protocol: store.ProtocolSMTP, RemoteIP: "192.0.2.8"}); err == nil {
					t.Fatal("a wrong password logged in")
				}
			},
			want: `(?m)^WHEN\s+PROTOCOL\s+APP\s+IP\s+CLIENT\s+RESULT\n` +
				`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+smtp\s+-\s+192\.0\.2\.8\s+-\s+failed: wrong password\n` +
				`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+imap\s+first device\s+192\.0\.2\.7\s+iPhone Mail 18\.2 \(iOS 18\.2\)\s+ok\n`},
		{args: []string{"app-password", "list", db, "alice@example.org"},
			want: `(?m)^ID\s+LABEL\s+CREATED\s+LAST USED\s+FROM\s+CLIENT\s+STATE\n` +
				`1\s+first device\s+\d{4}-\d\d-\d\d\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+192\.0\.2\.7\s+iPhone Mail 18\.2 \(iOS 18\.2\)\s+active\n` +
				`2\s+iPhone\s+\d{4}-\d\d-\d\d\s+never\s+-\s+-\s+revoked \d{4}-\d\d-\d\d\n`},
		{args: []string{"activity", db, "ghost@example.org"}, wantErr: true, want: `^No account ghost@example\.org exists\.$`},
		{stdin: "new-main\n", args: []string{"user", "passwd", db, "alice@example.org"}, want: `changed`},
		{stdin: "new-main\n", args: []string{"user", "passwd", db, "ghost@example.org"}, wantErr: true, want: `^No account ghost@example\.org exists\.$`},
		{args: []string{"user", "disable", db, "alice@example.org"}, want: `disabled`},
		{args: []string{"user", "disable", db, "ghost@example.org"}, wantErr: true, want: `^No account ghost@example\.org exists\.$`},
		{args: []string{"user", "list", db}, want: `alice@example\.org\s+disabled`},
		{args: []string{"domain", "del", db, "example.org"}, wantErr: true, want: `^Domain example\.org still has accounts; delete them first\.$`},
		{args: []string{"alias", "del", db, "postmaster@example.org"}, want: `deleted`},
		{args: []string{"user", "del", db, "alice@example.org"}, wantErr: true,
			want: `^Alice@example\.org not deleted: confirm by typing the address, or give -yes\.$`},
		{stdin: "no\n", args: []string{"user", "del", db, "alice@example.org"}, wantErr: true, want: `not deleted`},
		{stdin: "alice@example.org\n", args: []string{"user", "del", db, "alice@example.org"}, want: `deleted`},
		{args: []string{"user", "del", db, "-yes", "carol@example.org"}, want: `deleted`},
		{args: []string{"user", "del", db, "-yes", "dave@example.org"}, want: `deleted`},
		{args: []string{"user", "del", db, "alice@example.org", "-yes"}, wantErr: true, want: `^No account alice@example\.org exists\.$`},
		{args: []string{"domain", "del", db, "example.org"}, want: `deleted`},
		{args: []string{"queue", "delete", db, "12345"}, wantErr: true, want: `^No queue entry 12345 exists\.$`},

		// Command-line mistakes.
		{args: []string{"frobnicate"}, wantErr: true, want: `^Unknown command "frobnicate"; run 'mailstack help' for the list\.$`},
		{args: []string{"user"}, wantErr: true, want: `^The user command needs a subcommand: add, list, passwd, disable, enable, admin, del\.$`},
		{args: []string{"user", "frob"}, wantErr: true, want: `^"frob" is not a subcommand of user; use one of: add, list`},
		{args: []string{"user", "add", db}, wantErr: true, want: `^Usage: mailstack user add \[flags\] ADDRESS; see 'mailstack user add -h'\.$`},
		{args: []string{"user", "add", "-bogus", "x@example.org"}, wantErr: true, want: `^Bad command line for mailstack user add: flag provided but not defined: -bogus; see 'mailstack user add -h'\.$`},
		{args: []string{"version"}, want: `^mailstack \S+.*, go1\.`},
		{args: []string{"user", "-h"}, want: `^Usage: mailstack user add\|list\|passwd\|disable\|enable\|admin\|del \[flags\] \[args\]\n`},
		{args: []string{"user", "add", "-h"}, want: `(?s)^Usage: mailstack user add \[flags\] ADDRESS\n.*-database-url`},
		{args: []string{"serve", "extra"}, wantErr: true, want: `^Serve takes flags only, not "extra"; see 'mailstack serve -h'\.$`},
		{args: []string{"user", "list", db, "-log-level=loud"}, wantErr: true, want: `^Log level "loud" \(-log-level or MAILSTACK_LOG_LEVEL\) is not one of debug, info, warn or error\.$`},

		// The database cannot be reached or used.
		{args: []string{"user", "list", "--database-url=postgres://mailstack@127.0.0.1:1/mail?connect_timeout=10"}, wantErr: true,
			want: `^Cannot connect to PostgreSQL at 127\.0\.0\.1:1 \(database mail\): connection refused\.$`},
		{args: []string{"user", "list", "--database-url=postgres://%zz"}, wantErr: true,
			want: `^The database URL \(-database-url or MAILSTACK_DATABASE_URL\) is not a valid PostgreSQL URL\.$`},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before(t)
		}
		stdout, stderr, code := command(s.stdin, s.args...)
		if (code != 0) != s.wantErr {
			t.Fatalf("mailstack %v: exit %d, want error %v\nstdout:\n%s\nstderr:\n%s", s.args, code, s.wantErr, stdout, stderr)
		}
		got := stdout
		if s.wantErr {
			if !oneSentence(stderr) {
				t.Fatalf("mailstack %v: stderr is not one line ending in '.':\n%s", s.args, stderr)
			}
			got = strings.TrimSuffix(stderr, "\n")
		} else if stderr != "" {
			t.Fatalf("mailstack %v: stderr on success:\n%s", s.args, stderr)
		}
		if !regexp.MustCompile(s.want).MatchString(got) {
			t.Fatalf("mailstack %v: output does not match %q:\n%s", s.args, s.want, got)
		}
		if s.after != nil {
			s.after(t, stdout)
		}
	}
}

// TestManagedPostgresErrors checks that a managed PostgreSQL that cannot
// start is reported in one sentence, with the detail in the debug log.
func TestManagedPostgresErrors(t *testing.T) {
	t.Setenv("MAILSTACK_DATABASE_URL", "")
	broken := t.TempDir()
	if err := os.MkdirAll(filepath.Join(broken, "postgres"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A data directory that claims to be a cluster and is not one.
	if err := os.WriteFile(filepath.Join(broken, "postgres", "PG_VERSION"), []byte("not a version\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		want string
	}{
		{"broken cluster", broken, `^The managed PostgreSQL in ` + regexp.QuoteMeta(filepath.Join(broken, "postgres")) + ` failed to start: [^\n]*postgresql\.conf[^\n]* \(details with -log-level=debug\)\.$`},
		{"data dir is a file", notDir, `^The managed PostgreSQL in ` + regexp.QuoteMeta(filepath.Join(notDir, "postgres")) + ` failed to start: mkdir .*: not a directory \(details with -log-level=debug\)\.$`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := command("", "user", "list", "--data-dir="+tt.dir)
			if code == 0 || !oneSentence(stderr) || !regexp.MustCompile(tt.want).MatchString(strings.TrimSpace(stderr)) {
				t.Fatalf("exit %d, stderr:\n%s\nwant one line matching %s", code, stderr, tt.want)
			}
			// The debug log has the full story: postgres' own words.
			_, stderr, _ = command("", "user", "list", "--data-dir="+tt.dir, "-log-level=debug")
			if !strings.Contains(stderr, `msg="command failed"`) {
				t.Fatalf("no debug record of the failure:\n%s", stderr)
			}
		})
	}
}

// TestConcurrentMigrate runs two migrations at once on an empty database:
// both must succeed (the advisory lock serialises them).
func TestConcurrentMigrate(t *testing.T) {
	url := storetest.NewURL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA public CASCADE; CREATE SCHEMA public`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := mailstack(t, "", "migrate", "--database-url="+url)
			errs <- err
		}()
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent migrate: %v", err)
		}
	}
	out, err := mailstack(t, "", "domain", "list", "--database-url="+url)
	if err != nil || !strings.Contains(out, "DOMAIN") {
		t.Fatalf("schema not usable after migrate: %v %s", err, out)
	}
}

// running is a `mailstack serve` started by a test.
type running struct {
	out   *syncBuffer
	done  chan error
	stop  context.CancelFunc
	addrs map[string]string // from the banner
}

// loopbackListeners turns every listener to a random loopback port (the MX
// listener off), so tests never collide on -dev's fixed ports.
var loopbackListeners = []string{"--imap-addr=127.0.0.1:0", "--imap-starttls-addr=127.0.0.1:0", "--submission-addr=127.0.0.1:0",
	"--submissions-addr=127.0.0.1:0", "--mx-addr=", "--http-addr=127.0.0.1:0", "--https-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}

// launch starts serve with args; it runs until stopped or the test ends.
func launch(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: &syncBuffer{}, done: make(chan error, 1), stop: cancel, addrs: map[string]string{}}
	go func() { r.done <- run(ctx, append([]string{"serve"}, args...), strings.NewReader(""), r.out, r.out) }()
	t.Cleanup(func() { r.shutdown(t) })
	return r
}

// ready waits for the banner and reads the listener addresses from it.
func (r *running) ready(t *testing.T) *running {
	t.Helper()
	r.waitOutput(t, "Stop with Ctrl-C")
	out := r.out.String()
	banner := out[strings.Index(out, "mailstack is running"):strings.Index(out, "Stop with Ctrl-C")]
	for _, m := range regexp.MustCompile(`(?m)^  (\S+) +(.+)$`).FindAllStringSubmatch(banner, -1) {
		r.addrs[m[1]] = m[2]
	}
	return r
}

// waitOutput waits until serve has printed s.
func (r *running) waitOutput(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(r.out.String(), s) {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("serve exited (%v) before printing %q:\n%s", err, s, r.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not print %q:\n%s", s, r.out.String())
		}
	}
}

// shutdown stops serve and fails the test if it does not exit cleanly.
func (r *running) shutdown(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Errorf("serve: %v\n%s", err, r.out.String())
		}
	case <-time.After(60 * time.Second):
		t.Error("serve did not stop")
	}
}

// healthy asks serve's admin listener for /healthz, which queries the
// database.
func (r *running) healthy(t *testing.T) {
	t.Helper()
	resp, err := http.Get("http://" + r.addrs["admin"] + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s\n%s", resp.Status, r.out.String())
	}
}

// TestServeManagedPostgres starts `serve --dev` with no database URL: it
// must create its PostgreSQL cluster in the data directory, come up, lend
// it to admin commands without losing it when they exit, and stop cleanly.
func TestServeManagedPostgres(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MAILSTACK_DATABASE_URL", "")
	r := launch(t, append([]string{"--dev", "--data-dir=" + dir}, loopbackListeners...)...).ready(t)
	if _, err := os.Stat(filepath.Join(dir, "postgres", "PG_VERSION")); err != nil {
		t.Fatalf("no cluster in the data dir: %v", err)
	}
	out := r.out.String()
	if !regexp.MustCompile(`User name +dev@localhost\nPassword +[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4} `).MatchString(out) {
		t.Fatalf("dev banner lacks credentials:\n%s", out)
	}
	// Explicit flags win over -dev's fixed ports: tests bind random ports only.
	if strings.Contains(out, ":1993") || strings.Contains(out, ":1025") {
		t.Fatalf("-dev overrode explicit listener addresses:\n%s", out)
	}
	pid, _ := os.ReadFile(filepath.Join(dir, "postgres", "postmaster.pid"))
	// While it runs, admin commands use the same server; when they exit,
	// serve keeps it.
	for i := 0; i < 2; i++ {
		res, err := mailstack(t, "", "user", "list", "--data-dir="+dir)
		if err != nil || !strings.Contains(res, "dev@localhost") {
			t.Fatalf("admin command against the running server's cluster: %v\n%s", err, res)
		}
		r.healthy(t)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "postgres", "postmaster.pid")); !bytes.Equal(now, pid) {
		t.Fatalf("the admin commands restarted postgres: postmaster.pid was\n%s\nnow\n%s", pid, now)
	}
	// A second serve on the same data directory is refused in one sentence.
	_, stderr, code := command("", append([]string{"serve", "--dev", "--data-dir=" + dir}, loopbackListeners...)...)
	if code == 0 || !strings.HasSuffix(stderr, "Another mailstack serve already runs the managed PostgreSQL in "+filepath.Join(dir, "postgres")+"; stop it first, or give this one another -data-dir.\n") {
		t.Fatalf("second serve on one data dir: exit %d\n%s", code, stderr)
	}
	r.healthy(t)
	r.shutdown(t)
	if _, err := os.Stat(filepath.Join(dir, "postgres", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postgres still running after serve stopped (postmaster.pid: %v)", err)
	}
}

// TestServeAfterAdminCommand covers the other order: an admin command has
// started the managed PostgreSQL (for itself) when serve starts. Serve must
// not use that server, which stops with the admin command; it waits for it
// and then runs its own, which outlives the admin command.
func TestServeAfterAdminCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MAILSTACK_DATABASE_URL", "")
	ctx := context.Background()
	// The admin command, half-way: its store is open on its own server.
	admin := dbFlags{dataDir: dir}
	log, err := (&dbFlags{logLevel: "warn"}).logger(os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	st, closeAdmin, err := admin.openStore(ctx, log, store.Options{}, pglocal.Guest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateDomain(ctx, "example.org", "mailstack", []byte("key")); err != nil {
		t.Fatal(err)
	}
	r := launch(t, append([]string{"--dev", "--data-dir=" + dir}, loopbackListeners...)...)
	r.waitOutput(t, "waiting for it to finish")
	if strings.Contains(r.out.String(), "mailstack is running") {
		t.Fatalf("serve came up on the admin command's server:\n%s", r.out.String())
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("the admin command lost its database: %v", err)
	}
	closeAdmin() // the admin command exits, stopping its server
	r.ready(t)
	r.healthy(t)
	// The data the admin command wrote is there, and admin commands now use
	// serve's server.
	out, err := mailstack(t, "", "domain", "list", "--data-dir="+dir)
	if err != nil || !strings.Contains(out, "example.org") || !strings.Contains(out, "localhost") {
		t.Fatalf("domain list: %v\n%s", err, out)
	}
	r.healthy(t)
}

// TestServeEnvironment runs serve configured by MAILSTACK_* variables only
// and checks each one took effect on the wire.
func TestServeEnvironment(t *testing.T) {
	url := storetest.NewURL(t)
	ctx := context.Background()
	st := storetest.Open(t, url)
	env := map[string]string{
		"MAILSTACK_DATABASE_URL":          url,
		"MAILSTACK_DATA_DIR":              t.TempDir(),
		"MAILSTACK_HOSTNAME":              "env.example.net",
		"MAILSTACK_DOMAINS":               "example.org, example.com",
		"MAILSTACK_REQUIRE_APP_PASSWORDS": "no",
		"MAILSTACK_MAX_MESSAGE_SIZE":      "123456",
		"MAILSTACK_IMAP_ADDR":             "127.0.0.1:0",
		"MAILSTACK_IMAP_STARTTLS_ADDR":    "",
		"MAILSTACK_SUBMISSION_ADDR":       "127.0.0.1:0",
		"MAILSTACK_SUBMISSIONS_ADDR":      "",
		"MAILSTACK_MX_ADDR":               "",
		"MAILSTACK_HTTP_ADDR":             "",
		"MAILSTACK_HTTPS_ADDR":            "",
		"MAILSTACK_ADMIN_ADDR":            "127.0.0.1:0",
		"MAILSTACK_LOG_LEVEL":             "warn",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	r := launch(t).ready(t)
	if got := slices.Sorted(maps.Keys(r.addrs)); !slices.Equal(got, []string{"admin", "imaps", "outbound", "submission"}) {
		t.Fatalf("listeners %v, want admin, imaps, outbound, submission:\n%s", got, r.out.String())
	}
	if out := r.out.String(); strings.Contains(out, "level=INFO") || !strings.Contains(out, "level=WARN") {
		t.Fatalf("MAILSTACK_LOG_LEVEL=warn: want warnings only:\n%s", out)
	}
	ds, err := st.Domains(ctx)
	if err != nil || len(ds) != 2 || ds[0].Name != "example.com" || ds[1].Name != "example.org" {
		t.Fatalf("domains %+v %v, want example.com and example.org", ds, err)
	}
	if _, err := st.CreateAccount(ctx, "carol@example.org", "carol-main-pw", store.AccountOptions{AllowMainPassword: true}); err != nil {
		t.Fatal(err)
	}
	// MAILSTACK_HOSTNAME: the self-signed certificate is for it.
	var leaf *x509.Certificate
	tlsCfg := &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error { //nolint:gosec // checked by hand below
		leaf = cs.PeerCertificates[0]
		return nil
	}}
	c, err := imapclient.DialTLS(r.addrs["imaps"], &imapclient.Options{TLSConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	if leaf == nil || leaf.VerifyHostname("env.example.net") != nil {
		t.Fatalf("IMAP certificate is not for env.example.net")
	}
	// MAILSTACK_REQUIRE_APP_PASSWORDS=no: the main password works for an
	// account that allows it.
	if err := c.Login("carol@example.org", "carol-main-pw").Wait(); err != nil {
		t.Fatalf("main password with MAILSTACK_REQUIRE_APP_PASSWORDS=no: %v", err)
	}
	// MAILSTACK_MAX_MESSAGE_SIZE: announced by submission.
	sc, err := smtp.Dial(r.addrs["submission"])
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, size := sc.Extension("SIZE"); !ok || size != "123456" {
		t.Fatalf("SIZE %q (%v), want 123456", size, ok)
	}
}

// TestServeSettings checks how flags, MAILSTACK_* variables and -dev
// combine, and that a variable that does not parse is an error naming it.
func TestServeSettings(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string // the one sentence
		check   func(*serveConfig) bool
	}{
		{name: "defaults", check: func(c *serveConfig) bool {
			return c.requireAppPasswords && c.maxMessageSize == 50<<20 && c.maxConnsPerAccount == 50 && c.imapAddr == ":993"
		}},
		{name: "yes/no spellings", env: map[string]string{"MAILSTACK_REQUIRE_APP_PASSWORDS": "no"}, check: func(c *serveConfig) bool { return !c.requireAppPasswords }},
		{name: "off", env: map[string]string{"MAILSTACK_REQUIRE_APP_PASSWORDS": "OFF"}, check: func(c *serveConfig) bool { return !c.requireAppPasswords }},
		{name: "0", env: map[string]string{"MAILSTACK_REQUIRE_APP_PASSWORDS": "0"}, check: func(c *serveConfig) bool { return !c.requireAppPasswords }},
		{name: "yes", env: map[string]string{"MAILSTACK_REQUIRE_APP_PASSWORDS": "yes"}, check: func(c *serveConfig) bool { return c.requireAppPasswords }},
		{name: "flag wins over the variable", env: map[string]string{"MAILSTACK_REQUIRE_APP_PASSWORDS": "no", "MAILSTACK_MAX_MESSAGE_SIZE": "1000"},
			args:  []string{"-require-app-passwords=on", "-max-message-size=2000"},
			check: func(c *serveConfig) bool { return c.requireAppPasswords && c.maxMessageSize == 2000 }},
		{name: "bare bool flag", env: map[string]string{"MAILSTACK_REQUIRE_APP_PASSWORDS": "false"}, args: []string{"-require-app-passwords"},
			check: func(c *serveConfig) bool { return c.requireAppPasswords }},
		{name: "numbers", env: map[string]string{"MAILSTACK_MAX_MESSAGE_SIZE": "1000", "MAILSTACK_MAX_CONNECTIONS_PER_ACCOUNT": " 7 "},
			check: func(c *serveConfig) bool { return c.maxMessageSize == 1000 && c.maxConnsPerAccount == 7 }},
		{name: "-dev", env: map[string]string{"MAILSTACK_DOMAINS": "example.org"}, args: []string{"-dev", "-imap-addr=127.0.0.1:5993"},
			check: func(c *serveConfig) bool {
				return c.hostname == "localhost" && c.domains == "example.org,localhost" && c.imapAddr == "127.0.0.1:5993" &&
					c.imapStartTLSAddr == "127.0.0.1:1143" && c.submissionAddr == "127.0.0.1:1587" && c.submissionsAddr == "127.0.0.1:1465" &&
					c.mxAddr == "127.0.0.1:1025" && c.web.httpAddr == "127.0.0.1:1080" && c.web.httpsAddr == "127.0.0.1:1443" &&
					c.web.adminAddr == "127.0.0.1:19090" && c.web.clientHosts == "hostname"
			}},
		{name: "bad boolean variable", env: map[string]string{"MAILSTACK_REQUIRE_APP_PASSWORDS": "maybe"},
			wantErr: `MAILSTACK_REQUIRE_APP_PASSWORDS="maybe" is not valid: want true or false (or 1/0, yes/no, on/off).`},
		{name: "size with a unit", env: map[string]string{"MAILSTACK_MAX_MESSAGE_SIZE": "20M"}, args: nil,
			check: func(c *serveConfig) bool { return c.maxMessageSize == 20<<20 }},
		{name: "bad size variable", env: map[string]string{"MAILSTACK_MAX_MESSAGE_SIZE": "50 megs"},
			wantErr: `MAILSTACK_MAX_MESSAGE_SIZE="50 megs" is not valid: want bytes, or a number with K, M, G or T (e.g. 50M).`},
		{name: "bad boolean flag", args: []string{"-require-app-passwords=maybe"},
			wantErr: `Bad command line for mailstack serve: invalid boolean value "maybe" for -require-app-passwords: want true or false (or 1/0, yes/no, on/off); see 'mailstack serve -h'.`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"MAILSTACK_REQUIRE_APP_PASSWORDS", "MAILSTACK_MAX_MESSAGE_SIZE", "MAILSTACK_MAX_CONNECTIONS_PER_ACCOUNT",
				"MAILSTACK_DOMAINS", "MAILSTACK_IMAP_ADDR"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c := &cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
			cfg, err := c.parseServe(tt.args)
			if tt.wantErr != "" {
				if err == nil || errorSentence(err) != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}

// TestServeTLS covers where serve's certificate comes from: files given
// with -tls-cert/-tls-key (used as they are, no warning), or none (a
// self-signed one in <data-dir>/tls, with a loud warning).
func TestServeTLS(t *testing.T) {
	url := storetest.NewURL(t)
	files := t.TempDir()
	certPEM, keyPEM, err := tlsconfig.Generate([]string{"mail.test"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(files, "cert.pem"), filepath.Join(files, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	ours, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	const warning = "NO TLS CERTIFICATE CONFIGURED"
	tests := []struct {
		name        string
		args        []string
		wantWarning bool
	}{
		{"certificate files", []string{"--tls-cert=" + certFile, "--tls-key=" + keyFile}, false},
		{"self-signed", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			args := append([]string{"--database-url=" + url, "--data-dir=" + dataDir, "--hostname=mail.test",
				"--imap-addr=127.0.0.1:0", "--imap-starttls-addr=", "--submission-addr=", "--submissions-addr=", "--mx-addr=",
				"--http-addr=", "--https-addr=", "--admin-addr="}, tt.args...)
			r := launch(t, args...).ready(t)
			if got := strings.Contains(r.out.String(), warning); got != tt.wantWarning {
				t.Fatalf("warning %q shown: %v, want %v:\n%s", warning, got, tt.wantWarning, r.out.String())
			}
			conn, err := tls.Dial("tcp", r.addrs["imaps"], &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // compared below
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "* OK") {
				t.Fatalf("IMAP greeting over TLS: %q %v", line, err)
			}
			leaf := conn.ConnectionState().PeerCertificates[0]
			selfSigned := filepath.Join(dataDir, "tls", "selfsigned-cert.pem")
			_, statErr := os.Stat(selfSigned)
			if tt.wantWarning {
				if leaf.Equal(ours) || leaf.VerifyHostname("mail.test") != nil || statErr != nil {
					t.Fatalf("self-signed: served certificate for %v, %s: %v", leaf.DNSNames, selfSigned, statErr)
				}
				return
			}
			if !leaf.Equal(ours) || statErr == nil {
				t.Fatalf("served certificate for %v is not the one in %s (self-signed file: %v)", leaf.DNSNames, certFile, statErr)
			}
			// A client that trusts exactly that certificate verifies it.
			roots := x509.NewCertPool()
			roots.AddCert(ours)
			vc, err := tls.Dial("tcp", r.addrs["imaps"], &tls.Config{RootCAs: roots, ServerName: "mail.test"})
			if err != nil {
				t.Fatalf("verified TLS with the configured certificate: %v", err)
			}
			vc.Close()
		})
	}
}

// TestServeFlagsMatchREADME checks that README.md's configuration table
// lists exactly serve's flags, each with the environment variable its help
// text names.
func TestServeFlagsMatchREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	inREADME := map[string]string{} // flag → env
	cell := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(section, "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 4 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`-") {
			continue
		}
		var flags, envs []string
		for _, m := range cell.FindAllStringSubmatch(cols[1], -1) {
			flags = append(flags, strings.TrimPrefix(m[1], "-"))
		}
		for _, m := range cell.FindAllStringSubmatch(cols[2], -1) {
			envs = append(envs, m[1])
		}
		if len(envs) != 0 && len(envs) != len(flags) {
			t.Fatalf("README row %q: %d flags, %d variables", line, len(flags), len(envs))
		}
		for i, f := range flags {
			if _, dup := inREADME[f]; dup {
				t.Errorf("README lists -%s twice", f)
			}
			inREADME[f] = ""
			if len(envs) > 0 {
				inREADME[f] = envs[i]
			}
		}
	}
	fs, _ := serveFlags()
	inHelp := map[string]string{}
	envRE := regexp.MustCompile(`\(env (MAILSTACK_[A-Z0-9_]+)\)`)
	fs.VisitAll(func(f *flag.Flag) {
		m := envRE.FindAllStringSubmatch(f.Usage, -1)
		switch {
		case len(m) == 1:
			inHelp[f.Name] = m[0][1]
		case len(m) > 1:
			t.Errorf("-%s names %d variables", f.Name, len(m))
		default:
			inHelp[f.Name] = ""
		}
	})
	if len(inHelp) < 20 {
		t.Fatalf("only %d serve flags found", len(inHelp))
	}
	for f, env := range inHelp {
		if got, ok := inREADME[f]; !ok {
			t.Errorf("README lacks -%s (%s)", f, env)
		} else if got != env {
			t.Errorf("-%s: README says variable %q, help says %q", f, got, env)
		}
		if env == "" && f != "dev" {
			t.Errorf("-%s has no MAILSTACK_* variable", f)
		}
	}
	for f := range inREADME {
		if _, ok := inHelp[f]; !ok {
			t.Errorf("README lists -%s, which serve does not have", f)
		}
	}
}

// wantAdmins checks which accounts of the database at url are
// administrators.
func wantAdmins(t *testing.T, url string, want ...string) {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t, url)
	us, err := st.AccountUsages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range us {
		if u.Admin {
			got = append(got, u.Address)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("administrators %q, want %q", got, want)
	}
}
