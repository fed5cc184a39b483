package mailimport

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// helperEnv makes the test binary run helperImport instead of the tests.
const helperEnv = "MAILIMPORT_TEST_HELPER"

// writeMaildir writes n messages into a folder of a Dovecot Maildir
// (LAYOUT=fs: INBOX is the root), as a mail program would, every third
// one seen; returns their total size.
func writeMaildir(t testing.TB, maildir, folder string, n, size int) int64 {
	t.Helper()
	dir := maildir
	if folder != "INBOX" {
		dir = filepath.Join(maildir, filepath.FromSlash(folder))
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pad := strings.Repeat("lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n", max(size/58, 1))
	var total int64
	for i := range n {
		body := fmt.Sprintf("From: sender%d@example.test\r\nTo: src@example.test\r\nSubject: %s message %d\r\nMessage-ID: <%s.%d@example.test>\r\n\r\n%s",
			i%97, folder, i, strings.ReplaceAll(folder, "/", "."), i, pad)
		info := ""
		if i%3 == 0 {
			info = "S"
		}
		p := filepath.Join(dir, "cur", fmt.Sprintf("%d.M%dP1.test,S=%d:2,%s", 1500000000+i, i, len(body), info))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		date := time.Unix(int64(1500000000+i*60), 0)
		if err := os.Chtimes(p, date, date); err != nil {
			t.Fatal(err)
		}
		total += int64(len(body))
	}
	return total
}

// helperImport runs one import (arguments in the environment), printing
// "committed" after each batch, until it is killed.
func helperImport() int {
	ctx := context.Background()
	st, err := store.Open(ctx, os.Getenv("HELPER_DB"), store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	acc, err := st.AccountByAddress(ctx, os.Getenv("HELPER_ACCOUNT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	im := &Importer{Store: st, Account: acc, BatchMessages: 10, afterCommit: func() {
		fmt.Println("committed")
		time.Sleep(20 * time.Millisecond)
	}}
	if err := im.ImportIMAP(ctx, IMAPSource{URL: os.Getenv("HELPER_URL"), Password: os.Getenv("HELPER_PASSWORD"), Connections: 2}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestImportIMAPKilled kills an import process (SIGKILL) after a few of
// its batches have committed, runs the import again, and finds every
// message of the source exactly once.
func TestImportIMAPKilled(t *testing.T) {
	d := startDovecot(t, func(maildir string) {
		writeMaildir(t, maildir, "INBOX", 150, 500)
		writeMaildir(t, maildir, "Sent Messages", 60, 300)
		writeMaildir(t, maildir, "Work/Projects", 40, 2000)
	})
	url := storetest.NewURL(t)
	ctx := context.Background()
	st, err := store.Open(ctx, url, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	acc := newAccount(t, st, "alice@example.org")

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=1", "HELPER_DB="+url, "HELPER_ACCOUNT="+acc.Address,
		"HELPER_URL="+d.url(), "HELPER_PASSWORD="+d.pass)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	commits := 0
	for commits < 8 && sc.Scan() {
		if sc.Text() == "committed" {
			commits++
		}
	}
	cmd.Process.Kill() //nolint:errcheck // it may have ended: the test then says so
	cmd.Wait()         //nolint:errcheck // killed
	if commits < 8 {
		t.Fatalf("the import ended after %d batches, before it was killed: %s", commits, stderr.String())
	}
	counts := func() (n int64) {
		for _, name := range []string{"INBOX", "Sent", "Work/Projects"} {
			if mb, err := st.MailboxByName(ctx, acc.ID, name); err == nil {
				n += mb.Messages
			}
		}
		return n
	}
	if n := counts(); n < 80 || n >= 250 {
		t.Fatalf("after the kill the account holds %d messages: not midway", n)
	}
	t.Logf("killed after %d batches, %d messages stored", commits, counts())

	im := &Importer{Store: st, Account: acc, Log: testLog(t)}
	if err := im.ImportIMAP(ctx, IMAPSource{URL: d.url(), Password: d.pass}); err != nil {
		t.Fatal(err)
	}
	c := d.client()
	for src, dst := range map[string]string{"INBOX": "INBOX", "Sent Messages": "Sent", "Work/Projects": "Work/Projects"} {
		equalRecs(t, dst, storedFolder(t, st, acc, dst), sourceRecs(t, c, src))
	}
	if n := counts(); n != 250 {
		t.Errorf("%d messages in all, want 250", n)
	}
}
