package imapd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of PARTIAL (RFC 9394): paged SEARCH results and the FETCH
// modifier.

func TestSearchPartial(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 20 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	r := e.raw()
	r.cmd("SELECT INBOX")
	r.cmd(`UID STORE 2,4,6,8,10,12,14,16,18,20 +FLAGS.SILENT (\Flagged)`)
	tests := []struct {
		cmd, want string // want: the ESEARCH response after the tag
	}{
		{"UID SEARCH RETURN (PARTIAL 1:3) FLAGGED", " UID PARTIAL (1:3 2,4,6)"},
		{"UID SEARCH RETURN (PARTIAL -1:-3) FLAGGED", " UID PARTIAL (-1:-3 16,18,20)"},
		{"UID SEARCH RETURN (PARTIAL -3:-1) FLAGGED", " UID PARTIAL (-1:-3 16,18,20)"},
		{"UID SEARCH RETURN (PARTIAL 3:1) FLAGGED", " UID PARTIAL (1:3 2,4,6)"},
		{"SEARCH RETURN (PARTIAL 9:20) FLAGGED", " PARTIAL (9:20 18,20)"},
		{"UID SEARCH RETURN (PARTIAL 11:20) FLAGGED", " UID PARTIAL (11:20 NIL)"},
		{"UID SEARCH RETURN (PARTIAL -10:-30) FLAGGED", " UID PARTIAL (-10:-30 2)"},
		{"UID SEARCH RETURN (PARTIAL 1:5) UID 1,3:4,7,10,15", " UID PARTIAL (1:5 1,3:4,7,10)"},
		{"UID SEARCH RETURN (PARTIAL 1:4) UNFLAGGED DELETED", " UID PARTIAL (1:4 NIL)"},
		// MIN, MAX and COUNT are of the whole result.
		{"UID SEARCH RETURN (MIN MAX COUNT PARTIAL 2:3) FLAGGED", " UID MIN 2 MAX 20 COUNT 10 PARTIAL (2:3 4,6)"},
		{"UID SEARCH RETURN (COUNT PARTIAL -1:-1) UNFLAGGED", " UID COUNT 10 PARTIAL (-1:-1 19)"},
	}
	for _, tc := range tests {
		got := r.cmd(tc.cmd)
		want := fmt.Sprintf(`* ESEARCH (TAG "r%d")%s`, r.tag, tc.want)
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: %q, want %q", tc.cmd, got, want)
		}
	}

	refused(t, r, "BAD",
		"UID SEARCH RETURN (ALL PARTIAL 1:2) FLAGGED", // RFC 9394 §3.1
		"UID SEARCH RETURN (PARTIAL) FLAGGED",
		"UID SEARCH RETURN (PARTIAL 0:5) FLAGGED",
		"UID SEARCH RETURN (PARTIAL 1:-5) FLAGGED",
		"UID SEARCH RETURN (PARTIAL 1:*) FLAGGED",
		"UID SEARCH RETURN (PARTIAL 5) FLAGGED",
		"UID SEARCH RETURN (PARTIAL 1:4294967296) FLAGGED",
		"UID SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) FLAGGED",
		"UID FETCH 1:* (FLAGS) (PARTIAL 0:1)",
		"UID FETCH 1:* (FLAGS) (PARTIAL)",
	)

	// SAVE with PARTIAL saves the window only.
	if got := r.cmd("UID SEARCH RETURN (SAVE PARTIAL -1:-2) FLAGGED"); len(got) != 1 || !strings.HasSuffix(got[0], "PARTIAL (-1:-2 18,20)") {
		t.Fatalf("SAVE PARTIAL: %q", got)
	}
	if got := fetchedUIDs(t, r.cmd("UID FETCH $ (FLAGS)")); !slices.Equal(got, []string{"18", "20"}) {
		t.Fatalf("$ after SAVE PARTIAL: %v", got)
	}

	// The FETCH modifier: the last five messages of the set, the first
	// two; with CHANGEDSINCE, a window of what changed since.
	if got := fetchedUIDs(t, r.cmd("UID FETCH 1:* (FLAGS) (PARTIAL -1:-5)")); !slices.Equal(got, []string{"16", "17", "18", "19", "20"}) {
		t.Fatalf("PARTIAL -1:-5: %v", got)
	}
	if got := fetchedUIDs(t, r.cmd("UID FETCH 3:* (FLAGS) (PARTIAL 1:2)")); !slices.Equal(got, []string{"3", "4"}) {
		t.Fatalf("PARTIAL 1:2: %v", got)
	}
	if got := r.cmd("FETCH 1:* (UID) (PARTIAL 20:30)"); len(got) != 1 || got[0] != "* 20 FETCH (UID 20)" {
		t.Fatalf("FETCH PARTIAL 20:30: %q", got)
	}
	h := one(t, r.cmd("FETCH 20 (MODSEQ)"), `MODSEQ \((\d+)\)`)
	r.cmd(`UID STORE 5,7,9 +FLAGS.SILENT (\Answered)`)
	got := r.cmd(fmt.Sprintf("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %s PARTIAL -1:-2)", h))
	if uids := fetchedUIDs(t, got); !slices.Equal(uids, []string{"7", "9"}) || len(grep(got, `MODSEQ \(\d+\)`)) != 2 {
		t.Fatalf("CHANGEDSINCE with PARTIAL: %q", got)
	}
}

// fetchedUIDs returns the UIDs of FETCH or UIDFETCH responses in order.
func fetchedUIDs(t *testing.T, lines []string) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		if m := grep([]string{l}, ` UIDFETCH `); len(m) == 1 {
			out = append(out, strings.Fields(l)[1])
			continue
		}
		if len(grep([]string{l}, ` FETCH `)) == 1 {
			out = append(out, one(t, []string{l}, `UID (\d+)`))
		}
	}
	return out
}

// TestImaptestSearchPartial runs imaptest's search-partial script, which
// imaptest itself skips (it is filed under CONTEXT=SEARCH, which this
// server does not offer: PARTIAL alone does not need it), from a copy
// without that requirement.
func TestImaptestSearchPartial(t *testing.T) {
	dir := imaptestDir(t)
	tests := t.TempDir()
	for _, name := range []string{"search-partial", "search-partial.mbox"} {
		b, err := os.ReadFile(filepath.Join(dir, "tests", name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "search-partial" {
			b = []byte(strings.Replace(string(b), "capabilities: CONTEXT=SEARCH\n", "", 1))
		}
		if err := os.WriteFile(filepath.Join(tests, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, envOptions{})
	host, port, _ := net.SplitHostPort(e.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "imaptest"), "host="+host, "port="+port, "ssl=any-cert",
		"user="+e.user, "pass="+e.pass, "test="+tests)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if !strings.Contains(string(out), "1 test groups: 0 failed, 0 skipped") || strings.Contains(string(out), "\nError:") {
		t.Fatalf("imaptest search-partial (%v):\n%s", err, out)
	}
}
