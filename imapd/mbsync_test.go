package imapd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/internal/tlsconfig"
)

// TestMbsync: isync's mbsync, a real client (deploy/install-deps installs
// it), mirrors every mailbox to a local Maildir over TLS and back: the
// server's messages arrive whole, a message written locally is uploaded,
// local flags and a local deletion reach the server, a flag set on the
// server reaches the Maildir.
func TestMbsync(t *testing.T) {
	e, mbsync, rc, local := newMbsyncEnv(t, `Channel all
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
`, func(e *env) {
		for i := range 3 {
			e.deliver("INBOX", crlf(fmt.Sprintf("From: bob@example.test\nTo: alice@example.test\nSubject: m%d\nMessage-ID: <m%d@example.test>\n\nbody %d\n", i, i, i)))
		}
	})
	sync := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, mbsync, "-c", rc, "-a").CombinedOutput(); err != nil {
			t.Fatalf("mbsync: %v\n%s", err, out)
		}
	}
	maildir := func(box string) map[string]string { // file name -> content
		t.Helper()
		out := map[string]string{}
		for _, sub := range []string{"cur", "new"} {
			files, _ := filepath.Glob(filepath.Join(local, box, sub, "*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				out[f] = string(b)
			}
		}
		return out
	}

	sync()
	inbox := maildir("INBOX")
	if len(inbox) != 3 {
		t.Fatalf("INBOX in the Maildir: %d messages, want 3", len(inbox))
	}
	for _, body := range inbox {
		if !strings.Contains(body, "Subject: m") || !strings.HasSuffix(body, "\n") {
			t.Fatalf("message as synced: %q", body)
		}
	}
	for _, box := range []string{"Archive", "Drafts", "Junk", "Sent", "Trash"} {
		if _, err := os.Stat(filepath.Join(local, box, "cur")); err != nil {
			t.Errorf("mailbox %s not mirrored: %v", box, err)
		}
	}

	// Local changes: one message read and flagged, one deleted, one new
	// in Archive.
	var names []string
	for f := range inbox {
		names = append(names, f)
	}
	slices.Sort(names)
	flagged := filepath.Join(local, "INBOX", "cur", filepath.Base(strings.Split(names[0], ":2,")[0])+":2,FS")
	if err := os.Rename(names[0], flagged); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(names[1]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(local, "Archive", "new", "1.local"), []byte("From: me@example.test\nSubject: local\n\nwritten here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// mbsync refuses to trust a Maildir modified within the last second.
	time.Sleep(1100 * time.Millisecond)
	sync()

	c := e.login(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%d:%v", m.UID, messageFlags(m.Flags)))
	}
	if len(got) != 2 || !slices.Contains(got, `1:[\Seen \Flagged]`) && !slices.Contains(got, `1:[\Flagged \Seen]`) {
		t.Fatalf("INBOX on the server after the sync: %q, want UID 1 seen and flagged, one deleted", got)
	}
	st, err := c.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Fatalf("Archive on the server: %+v %v", st, err)
	}

	// A flag set on the server reaches the Maildir (R: answered).
	if err := c.Store(imap.UIDSetNum(msgs[1].UID), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagAnswered}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	sync()
	answered := 0
	for f := range maildir("INBOX") {
		if _, info, ok := strings.Cut(f, ":2,"); ok && strings.Contains(info, "R") {
			answered++
		}
	}
	if answered != 1 {
		t.Fatalf("answered messages in the Maildir: %d, want 1 (%v)", answered, maildir("INBOX"))
	}
}

// newMbsyncEnv starts a server whose certificate mbsync can verify (its
// own, trusted as a CA), lets fill seed it, and writes an mbsyncrc with
// an IMAP store "remote" for the account, a Maildir store "local" and the
// given channel section. It returns the mbsync binary and the paths of
// the configuration and of the Maildir root.
func newMbsyncEnv(t *testing.T, channel string, fill func(*env)) (e *env, mbsync, rc, local string) {
	t.Helper()
	mbsync, err := exec.LookPath("mbsync")
	if err != nil {
		t.Fatalf("mbsync (isync) is required for this test: %v", err)
	}
	dir := t.TempDir()
	cfg, err := tlsconfig.SelfSigned(filepath.Join(dir, "tls"), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	e = newEnv(t, envOptions{tlsConfig: cfg})
	fill(e)
	certs, err := filepath.Glob(filepath.Join(dir, "tls", "*cert*.pem"))
	if err != nil || len(certs) != 1 {
		t.Fatalf("certificate: %v %v", certs, err)
	}
	host, port, _ := strings.Cut(e.addr, ":")
	local = filepath.Join(dir, "local")
	if err := os.Mkdir(local, 0o700); err != nil {
		t.Fatal(err)
	}
	rc = filepath.Join(dir, "mbsyncrc")
	conf := fmt.Sprintf(`IMAPAccount a
Host %s
Port %s
User %s
Pass %s
SSLType IMAPS
CertificateFile %s
SystemCertificates no

IMAPStore remote
Account a

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

%s`, host, port, e.user, e.pass, certs[0], local, local, channel)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return e, mbsync, rc, local
}
