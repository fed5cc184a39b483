package mailimport

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/internal/mailimport/dovecottest"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// helperEnv makes the test binary run helperImport instead of the tests.
const helperEnv = "MAILIMPORT_TEST_HELPER"

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
	d := dovecottest.Start(t, func(maildir string) {
		dovecottest.WriteMaildir(t, maildir, "INBOX", 150, 500)
		dovecottest.WriteMaildir(t, maildir, "Sent Messages", 60, 300)
		dovecottest.WriteMaildir(t, maildir, "Work/Projects", 40, 2000)
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
		"HELPER_URL="+d.URL(), "HELPER_PASSWORD="+d.Pass)
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
	if err := im.ImportIMAP(ctx, IMAPSource{URL: d.URL(), Password: d.Pass}); err != nil {
		t.Fatal(err)
	}
	c := d.Client()
	for src, dst := range map[string]string{"INBOX": "INBOX", "Sent Messages": "Sent", "Work/Projects": "Work/Projects"} {
		equalRecs(t, dst, storedFolder(t, st, acc, dst), sourceRecs(t, c, src))
	}
	if n := counts(); n != 250 {
		t.Errorf("%d messages in all, want 250", n)
	}
}

// TestImportIMAPConnectionLimit: a server that allows two connections
// where the importer wants six refuses the rest at login ([UNAVAILABLE]);
// the import goes on with the two and copies everything.
func TestImportIMAPConnectionLimit(t *testing.T) {
	folders := []string{"INBOX", "A", "B", "C", "D", "E"}
	d := dovecottest.StartOptions(t, dovecottest.Options{MaxUserIPConnections: 2, Populate: func(maildir string) {
		for _, f := range folders {
			dovecottest.WriteMaildir(t, maildir, f, 20, 200)
		}
	}})
	st := storetest.New(t)
	acc := newAccount(t, st, "alice@example.org")
	im := &Importer{Store: st, Account: acc, Log: testLog(t)}
	if err := im.ImportIMAP(context.Background(), IMAPSource{URL: d.URL(), Password: d.Pass, Connections: 6, RetryWait: 20 * time.Millisecond}); err != nil {
		t.Fatalf("import: %v", err)
	}
	if s := im.Summary(); s.Copied != 120 || len(s.Failed) != 0 {
		t.Errorf("summary %+v, want 120 copied", s)
	}
	if !strings.Contains(d.Log(), "Maximum number of connections") {
		t.Errorf("Dovecot refused no connection: the test tests nothing")
	}
}
