package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

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

func TestAdminCommands(t *testing.T) {
	db := "--database-url=" + storetest.NewURL(t)
	steps := []struct {
		stdin   string
		args    []string
		wantErr bool
		want    string // regexp the output must match
	}{
		{"", []string{"domain", "add", db, "Example.ORG"}, false, `mailstack\._domainkey\.example\.org\s+TXT\s+"v=DKIM1; k=rsa; p=`},
		{"", []string{"domain", "add", db, "example.org"}, true, `already exists`},
		{"", []string{"domain", "list", db}, false, `example\.org\s+mailstack`},
		{"s3cret-main\n", []string{"user", "add", db, "alice@example.org"}, false, `(?s)INBOX, Drafts, Sent, Archive, Junk and Trash.*\n\s+[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}\n`},
		{"x\n", []string{"user", "add", db, "bob@nowhere.example"}, true, `not served here`},
		{"x\n", []string{"user", "add", db, "not-an-address"}, true, `not an address`},
		{"", []string{"user", "add", db, "carol@example.org"}, true, `no password`},
		{"", []string{"user", "list", db}, false, `alice@example\.org\s+active\s+unlimited`},
		{"", []string{"alias", "add", db, "postmaster@example.org", "alice@example.org"}, false, `now goes to alice@example.org`},
		{"", []string{"alias", "list", db, "example.org"}, false, `postmaster@example\.org\s+alice@example\.org`},
		{"", []string{"app-password", "add", db, "alice@example.org", "iPhone"}, false, `App password 2 \(iPhone\)`},
		{"", []string{"app-password", "revoke", db, "alice@example.org", "2"}, false, `revoked`},
		{"", []string{"app-password", "revoke", db, "alice@example.org", "99"}, true, `not found`},
		{"", []string{"app-password", "list", db, "alice@example.org"}, false, `(?s)1\s+first device.*never.*active.*2\s+iPhone.*revoked`},
		{"", []string{"activity", db, "alice@example.org"}, false, `WHEN\s+PROTOCOL\s+APP\s+IP\s+RESULT`},
		{"new-main\n", []string{"user", "passwd", db, "alice@example.org"}, false, `changed`},
		{"", []string{"user", "disable", db, "alice@example.org"}, false, `disabled`},
		{"", []string{"user", "list", db}, false, `alice@example\.org\s+disabled`},
		{"", []string{"domain", "del", db, "example.org"}, true, `still has accounts`},
		{"", []string{"alias", "del", db, "postmaster@example.org"}, false, `deleted`},
		{"", []string{"user", "del", db, "alice@example.org"}, false, `deleted`},
		{"", []string{"domain", "del", db, "example.org"}, false, `deleted`},
		{"", []string{"frobnicate"}, true, ``},
		{"", []string{"user", "add", db}, true, `Usage: mailstack user add`},
	}
	for _, s := range steps {
		out, err := mailstack(t, s.stdin, s.args...)
		if (err != nil) != s.wantErr {
			t.Fatalf("mailstack %v: err = %v, want error %v\n%s", s.args, err, s.wantErr, out)
		}
		if err != nil && s.want == "" {
			continue
		}
		if err != nil {
			out += err.Error()
		}
		if !regexp.MustCompile(s.want).MatchString(out) {
			t.Fatalf("mailstack %v: output does not match %q:\n%s", s.args, s.want, out)
		}
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

// TestServeManagedPostgres starts `serve --dev` with no database URL: it
// must create its PostgreSQL cluster in the data directory, come up, and
// stop cleanly on cancellation.
func TestServeManagedPostgres(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MAILSTACK_DATABASE_URL", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--data-dir=" + dir,
			"--imap-addr=127.0.0.1:0", "--imap-starttls-addr=127.0.0.1:0", "--submission-addr=127.0.0.1:0",
			"--submissions-addr=127.0.0.1:0", "--mx-addr=", "--http-addr=127.0.0.1:0", "--https-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}, strings.NewReader(""), &out, &out)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "mailstack is running") {
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up:\n%s", out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres", "PG_VERSION")); err != nil {
		t.Fatalf("no cluster in the data dir: %v", err)
	}
	if !regexp.MustCompile(`user dev@localhost and app password [a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}`).MatchString(out.String()) {
		t.Fatalf("dev banner lacks credentials:\n%s", out.String())
	}
	// Explicit flags win over -dev's fixed ports: tests bind random ports only.
	if strings.Contains(out.String(), ":1993") || strings.Contains(out.String(), ":1025") {
		t.Fatalf("-dev overrode explicit listener addresses:\n%s", out.String())
	}
	// While it runs, an admin command attaches to the same cluster.
	res, err := mailstack(t, "", "user", "list", "--data-dir="+dir)
	if err != nil || !strings.Contains(res, "dev@localhost") {
		t.Fatalf("admin command against the running server's cluster: %v\n%s", err, res)
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
	if _, err := os.Stat(filepath.Join(dir, "postgres", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postgres still running after serve stopped (postmaster.pid: %v)", err)
	}
}
