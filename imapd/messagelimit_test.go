package imapd

import (
	"slices"
	"strings"
	"testing"
)

// TestMessageLimit: with MESSAGELIMIT=5 (RFC 9738), a FETCH of more
// messages answers the first five and says [LIMIT]; a STORE, COPY, MOVE
// or UID EXPUNGE of more is refused whole with NO [LIMIT] and changes
// nothing; SEARCH and plain EXPUNGE are not limited.
func TestMessageLimit(t *testing.T) {
	e := newEnv(t, envOptions{messageLimit: 5})
	for range 8 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	r := e.raw()
	if caps := r.cmd("CAPABILITY"); !strings.Contains(caps[0], " MESSAGELIMIT=5") {
		t.Fatalf("capabilities: %q", caps)
	}
	r.cmd("SELECT INBOX")

	got, status := r.try("UID FETCH 1:* (FLAGS)")
	if uids := fetchedUIDs(t, got); !slices.Equal(uids, []string{"1", "2", "3", "4", "5"}) || !strings.HasPrefix(status, "OK [LIMIT]") {
		t.Fatalf("UID FETCH past the limit: %q %s", got, status)
	}
	// Within the limit (after PARTIAL or CHANGEDSINCE narrowed it): no code.
	for _, c := range []string{"UID FETCH 1:* (FLAGS) (PARTIAL -1:-5)", "FETCH 4:8 (FLAGS)", "UID FETCH 3:7 (UID)"} {
		if got, status := r.try(c); len(got) != 5 || !strings.HasPrefix(status, "OK") || strings.Contains(status, "LIMIT") {
			t.Fatalf("%s: %q %s", c, got, status)
		}
	}

	refused(t, r, "NO [LIMIT]",
		`UID STORE 1:* +FLAGS (\Deleted)`,
		`STORE 1:6 +FLAGS.SILENT (\Deleted)`,
		"UID COPY 1:8 Trash",
		"MOVE 2:7 Trash",
		"UID MOVE 1:* Trash",
		"UID EXPUNGE 1:*",
	)
	if got := r.cmd("STATUS Trash (MESSAGES)"); len(grep(got, `\(MESSAGES 0\)$`)) != 1 {
		t.Fatalf("refused COPY/MOVE copied: %q", got)
	}
	if got := r.cmd(`SEARCH DELETED`); !slices.Equal(got, []string{"* SEARCH"}) {
		t.Fatalf("refused STORE stored: %q", got)
	}

	// Five at a time is fine; SEARCH and EXPUNGE are not limited.
	r.cmd(`UID STORE 1:5 +FLAGS.SILENT (\Deleted)`)
	r.cmd(`UID STORE 6:8 +FLAGS.SILENT (\Deleted)`)
	if got := r.cmd("SEARCH DELETED"); !slices.Equal(got, []string{"* SEARCH 1 2 3 4 5 6 7 8"}) {
		t.Fatalf("SEARCH: %q", got)
	}
	if got := r.cmd("EXPUNGE"); len(grep(got, `EXPUNGE`)) != 8 {
		t.Fatalf("EXPUNGE: %q", got)
	}
}
