package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/internal/mailimport/dovecottest"
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
