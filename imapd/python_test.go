package imapd

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"
)

// TestPythonImaplib proves a non-Go client works: Python's imaplib runs
// testdata/imaplib_client.py against the real TLS listener. A missing
// python3 is a failure, not a skip.
func TestPythonImaplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is required for this test: %v", err)
	}
	e := newEnv(t, envOptions{})
	host, port, err := net.SplitHostPort(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "testdata/imaplib_client.py", host, port, e.user, e.pass).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("imaplib client: %v", err)
	}
}
