package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestInterruptWithClosedOutput is Ctrl-C on `mailstack serve --dev | tee
// log` (or 2>&1 | tee): the terminal's SIGINT ends tee first, so the pipe
// mailstack logs to is closed while it shuts down. It must still stop its
// PostgreSQL cleanly (no crash recovery at the next start) and exit 0,
// not die of SIGPIPE.
func TestInterruptWithClosedOutput(t *testing.T) {
	pgControlData, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_controldata")
	if len(pgControlData) == 0 {
		t.Fatal("pg_controldata not found in /usr/lib/postgresql/*/bin (deploy/install-deps installs it)")
	}
	dir := t.TempDir()
	t.Setenv("MAILSTACK_DATABASE_URL", "")
	cmd := mailstackCommand(t, append([]string{"serve", "--dev", "--data-dir=" + dir, "--log-level=debug"}, loopbackListeners...)...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill() }) //nolint:errcheck // already exited unless the test failed
	sc := bufio.NewScanner(r)
	var seen []string
	for !strings.Contains(strings.Join(seen, "\n"), "Stop with Ctrl-C") {
		if !sc.Scan() {
			t.Fatalf("serve ended before its banner:\n%s", strings.Join(seen, "\n"))
		}
		seen = append(seen, sc.Text())
	}
	r.Close() // tee is gone
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("mailstack died of %v", ws.Signal())
		}
		t.Fatalf("mailstack exited with %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pgControlData[0], filepath.Join(dir, "postgres")).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_controldata: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Database cluster state:               shut down\n") {
		t.Fatalf("the cluster was not shut down cleanly:\n%s", out)
	}
}
