package imapd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// Dovecot's imaptest (built in ../shared/tools/imaptest beside the
// repository; it needs libdovecot from Debian's dovecot-core, which
// deploy/install-deps installs) drives a real server over TLS: its
// compliance scripts, and its stress mode, which checks every answer of
// many concurrent sessions. Missing, it fails the test: CI has it.

// imaptestDir returns the directory of imaptest and its scripts.
func imaptestDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MAILSTACK_IMAPTEST_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "tools", "imaptest")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "imaptest")); err != nil {
		t.Fatalf("imaptest is required (../shared/tools/imaptest beside the repository, or MAILSTACK_IMAPTEST_DIR): %v", err)
	}
	return dir
}

var totalsRe = regexp.MustCompile(`(?m)^(\d+) test groups: (\d+) failed, (\d+) skipped.*\nbase protocol: (\d+)/(\d+) individual commands failed\nextensions: (\d+)/(\d+) individual commands failed`)

// TestImaptestCompliance: every compliance script of the capabilities the
// server offers passes: 0 failed groups, 0 failed commands.
func TestImaptestCompliance(t *testing.T) {
	dir := imaptestDir(t)
	e := newEnv(t, envOptions{})
	host, port, _ := net.SplitHostPort(e.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "run-compliance"), host, port, e.user, e.pass).CombinedOutput()
	m := totalsRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("imaptest did not finish (%v):\n%s", err, out)
	}
	t.Logf("%s groups, %s/%s base and %s/%s extension commands failed", m[1], m[4], m[5], m[6], m[7])
	if string(m[2]) != "0" || string(m[4]) != "0" || string(m[6]) != "0" || strings.Contains(string(out), "\nError:") {
		t.Fatalf("imaptest compliance failures:\n%s", out)
	}
}

// TestImaptestStress: imaptest's stress mix (LIST, STATUS, SELECT, FETCH,
// STORE, EXPUNGE, APPEND...) from 6 sessions kept open on 3 accounts, for
// 10 seconds, over TLS: imaptest checks every answer against its model of
// the mailboxes (flags, keywords announced in FLAGS, EXPUNGE and EXISTS
// consistency) and prints "Error:" for each violation. There must be none.
// Throughput is measured by the README's Performance command, not here.
func TestImaptestStress(t *testing.T) {
	dir := imaptestDir(t)
	e := newEnv(t, envOptions{maxConns: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	mbox := filepath.Join(tmp, "sample.mbox")
	if out, err := exec.CommandContext(ctx, "python3", filepath.Join(dir, "gen-mbox.py"), mbox, "300", "7").CombinedOutput(); err != nil {
		t.Fatalf("gen-mbox: %v\n%s", err, out)
	}
	var users strings.Builder
	for i := range 3 {
		addr := fmt.Sprintf("stress%d@example.test", i)
		acc, err := e.st.CreateAccount(ctx, addr, "main-password", store.AccountOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secret, _, err := e.st.CreateAppPassword(ctx, acc.ID, "imaptest")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&users, "%s:%s\n", addr, secret)
	}
	userfile := filepath.Join(tmp, "users.txt")
	if err := os.WriteFile(userfile, []byte(users.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(e.addr)
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "imaptest"), "host="+host, "port="+port, "ssl=any-cert",
		"userfile="+userfile, "user=u%d", "clients=6", "mbox="+mbox, "seed=123", "secs=10", "logout=0")
	cmd.Dir = tmp
	out, err := cmd.CombinedOutput()
	if err != nil && ctx.Err() != nil {
		t.Fatalf("imaptest: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var errs []string
	for _, l := range lines {
		if strings.HasPrefix(l, "Error:") {
			errs = append(errs, l)
		}
	}
	total := 0
	if len(lines) > 0 {
		for _, f := range strings.Fields(lines[len(lines)-1]) {
			n, _ := strconv.Atoi(f)
			total += n
		}
	}
	t.Logf("%d commands in 10 s from 6 sessions", total)
	if len(errs) > 0 || total == 0 {
		t.Fatalf("imaptest stress: %d errors, %d commands:\n%s", len(errs), total, strings.Join(errs, "\n"))
	}
}
