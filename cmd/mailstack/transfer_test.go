package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailstack/mailstack/internal/mailimport/dovecottest"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestImportExportCommands: import imap from Dovecot (the password on
// stdin), export as Maildir and mbox, import each into a new account; a
// second IMAP import copies nothing; mistakes are one sentence.
func TestImportExportCommands(t *testing.T) {
	d := dovecottest.Start(t, func(maildir string) {
		dovecottest.WriteMaildir(t, maildir, "INBOX", 30, 400)
		dovecottest.WriteMaildir(t, maildir, "Sent Messages", 5, 400)
		dovecottest.WriteMaildir(t, maildir, "Lists/Go", 7, 4000)
	})
	db := "--database-url=" + storetest.NewURL(t)
	maildir, mbox := t.TempDir(), t.TempDir()
	for _, tc := range []struct {
		stdin   string
		args    []string
		wantErr bool
		want    string // regexp of the output
	}{
		{args: []string{"domain", "add", db, "example.org"}, want: `DKIM`},
		{stdin: "alice-main-pw\n", args: []string{"user", "add", db, "alice@example.org"}, want: `created`},
		{stdin: "bob-main-pw\n", args: []string{"user", "add", db, "bob@example.org"}, want: `created`},
		{stdin: "carol-main-pw\n", args: []string{"user", "add", db, "carol@example.org"}, want: `created`},
		{stdin: d.Pass + "\n", args: []string{"import", "imap", db, "alice@example.org", "-from", d.URL()},
			want: `(?m)^Imported 42 messages \([0-9.]+ MiB\); 0 skipped as already there; 0 failed\.$`},
		{stdin: d.Pass + "\n", args: []string{"import", "imap", db, "alice@example.org", "-from", d.URL()},
			want: `(?m)^Imported 0 messages \(0\.0 MiB\); 0 skipped as already there; 0 failed\.$`},
		{stdin: "wrong\n", args: []string{"import", "imap", db, "alice@example.org", "-from", d.URL()}, wantErr: true,
			want: `(?m)^Log in to 127\.0\.0\.1:\d+ as src@example\.test: .*\.$`},
		{args: []string{"import", "imap", db, "alice@example.org", "-from", "imaps://pw:secret@imap.example.com"}, wantErr: true,
			want: `never in the URL`},
		{args: []string{"export", db, "alice@example.org", maildir}, want: `^Exported 42 messages \([0-9.]+ MiB\) of \d+ mailboxes to .* as maildir\.$`},
		{args: []string{"export", db, "alice@example.org", mbox, "-format", "mbox"}, want: `as mbox\.$`},
		{args: []string{"export", db, "alice@example.org", t.TempDir(), "-format", "pst"}, wantErr: true, want: `^Unknown format "pst": maildir or mbox\.$`},
		{args: []string{"import", "maildir", db, "bob@example.org", maildir}, want: `(?m)^Imported 42 messages`},
		{args: []string{"import", "maildir", db, "bob@example.org", maildir}, want: `(?m)^Imported 0 messages \(0\.0 MiB\); 42 skipped as already there; 0 failed\.$`},
		{args: []string{"import", "mbox", db, "carol@example.org", mbox}, want: `(?m)^Imported 42 messages`},
		{args: []string{"import", "mbox", db, "ghost@example.org", mbox}, wantErr: true, want: `^No account ghost@example\.org exists\.$`},
		{args: []string{"import", "pst", db}, wantErr: true, want: `^"pst" is not a subcommand of import; use one of: imap, mbox, maildir\.$`},
	} {
		stdout, stderr, code := command(tc.stdin, tc.args...)
		out := stdout
		if tc.wantErr {
			out = stderr
			if code == 0 || !oneSentence(stderr) {
				t.Errorf("%v: status %d, stderr %q: want one sentence and a failure", tc.args, code, stderr)
			}
		} else if code != 0 {
			t.Errorf("%v: status %d: %s%s", tc.args, code, stdout, stderr)
			continue
		}
		if !regexp.MustCompile(tc.want).MatchString(strings.TrimSuffix(out, "\n")) {
			t.Errorf("%v: output %q does not match %q", tc.args, out, tc.want)
		}
	}
}

// BenchmarkImportIMAP imports 20,000 messages (about 3 KB each, in four
// folders) from Dovecot on loopback with `mailstack import imap` as a
// process of its own, and reports messages per second and the process's
// peak RSS.
func BenchmarkImportIMAP(b *testing.B) {
	const perFolder = 5000
	folders := []string{"INBOX", "Sent Messages", "Lists/Go", "Archive"}
	var size int64
	d := dovecottest.Start(b, func(maildir string) {
		for _, f := range folders {
			size += dovecottest.WriteMaildir(b, maildir, f, perFolder, 3000)
		}
	})
	// Dovecot indexes the Maildir on first access: not part of the import.
	c := d.Client()
	for _, f := range folders {
		if _, err := c.Select(f, nil).Wait(); err != nil {
			b.Fatal(err)
		}
	}
	c.Logout().Wait()
	url := storetest.NewURL(b)
	st, err := store.Open(context.Background(), url, store.Options{MaxConns: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateDomain(context.Background(), "example.org", "sel", []byte("k")); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var elapsed time.Duration
	var maxRSS int64
	for i := range b.N {
		b.StopTimer()
		addr := fmt.Sprintf("bench%d@example.org", i)
		if _, err := st.CreateAccount(context.Background(), addr, "main-password", store.AccountOptions{}); err != nil {
			b.Fatal(err)
		}
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(exe, "import", "imap", "--database-url="+url, addr, "-from", d.URL())
		cmd.Env = append(os.Environ(), asMainEnv+"=1")
		cmd.Stdin = strings.NewReader(d.Pass + "\n")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		b.StartTimer()
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("import: %v\n%s", err, out.String())
		}
		elapsed += time.Since(start)
		if !strings.Contains(out.String(), fmt.Sprintf("Imported %d messages", perFolder*len(folders))) {
			b.Fatalf("import: %s", out.String())
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			maxRSS = max(maxRSS, ru.Maxrss) // KiB on Linux
		}
	}
	msgs := float64(perFolder * len(folders) * b.N)
	b.ReportMetric(msgs/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(size*int64(b.N))/elapsed.Seconds()/(1<<20), "MiB/s")
	b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MiB")
}
