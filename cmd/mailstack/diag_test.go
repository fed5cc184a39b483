package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mailstack/mailstack/store/storetest"
)

// TestServeWarnings: settings that start but cannot be what the operator
// meant (the example file's placeholders, the machine's own name as host
// name) are warned about; real settings and --dev are not.
func TestServeWarnings(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string // substrings of warnings; none: no warning
	}{
		{name: "example env file", env: map[string]string{"MAILSTACK_HOSTNAME": "mail.example.org", "MAILSTACK_DOMAINS": "example.org",
			"PGPASSWORD": "change-me-to-something-long-and-random"},
			want: []string{"host name is an example placeholder", "served domain is an example placeholder", "database password is the example file's placeholder"}},
		{name: "machine name", want: []string{"no host name set: using the machine's name"}},
		{name: "no dot", args: []string{"-hostname=mailbox"}, want: []string{"not a public DNS name"}},
		{name: "real settings", args: []string{"-hostname=mail.mailstack.dev", "-domains=mailstack.dev"}},
		{name: "dev", args: []string{"-dev"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"MAILSTACK_HOSTNAME", "MAILSTACK_DOMAINS", "PGPASSWORD"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, err := (&cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}).parseServe(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			cfg.warnSettings(slog.New(slog.NewTextHandler(&buf, nil)))
			got := buf.String()
			if n := strings.Count(got, "level=WARN"); n != len(tt.want) {
				t.Fatalf("%d warnings, want %d:\n%s", n, len(tt.want), got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("no warning %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestListenError: a port below 1024 refused to a user says what to do.
func TestListenError(t *testing.T) {
	denied := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
	got := errorSentence(listenError("imaps", ":993", denied))
	for _, want := range []string{"Cannot listen on :993 (imaps): ports below 1024 need root or the CAP_NET_BIND_SERVICE capability",
		"setcap cap_net_bind_service=+ep", "'mailstack serve --dev'"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	inUse := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	if got := errorSentence(listenError("imaps", ":993", inUse)); strings.Contains(got, "CAP_NET_BIND_SERVICE") {
		t.Errorf("a port in use is not a privilege problem: %q", got)
	}
}

// TestServeWaitsForDatabase: serve started before its PostgreSQL (compose
// starts both at once; podman-compose ignores service_healthy) waits for
// it instead of exiting, and comes up once the database answers. The
// database's TCP port is a proxy to the test cluster's unix socket that
// starts listening only after serve said it waits.
func TestServeWaitsForDatabase(t *testing.T) {
	url := storetest.NewURL(t)
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(cfg.Host, fmt.Sprintf(".s.PGSQL.%d", cfg.Port))
	addr := freeAddr(t) // nothing listens there yet
	tcpURL := fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", cfg.User, addr, cfg.Database)
	r := launch(t, "--database-url="+tcpURL, "--data-dir="+t.TempDir(), "--hostname=mail.example.net",
		"--imap-addr=", "--imap-starttls-addr=", "--submission-addr=", "--submissions-addr=", "--mx-addr=",
		"--http-addr=", "--https-addr=", "--admin-addr=127.0.0.1:0")
	r.waitOutput(t, "PostgreSQL is not reachable yet; waiting for it")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", socket)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c) //nolint:errcheck
				io.Copy(c, u)    //nolint:errcheck
			}()
		}
	}()
	r.ready(t)
	r.healthy(t)
}
