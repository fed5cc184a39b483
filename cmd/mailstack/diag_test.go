package main

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
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
