package imapd

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestUIDOnly: once a client enabled UIDONLY (RFC 9586) nothing it gets
// carries a sequence number, and whatever it sends with one is refused
// with BAD [UIDREQUIRED].
func TestUIDOnly(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 8 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	r := e.raw()
	caps := r.cmd("CAPABILITY")
	for _, c := range []string{" UIDONLY", " PARTIAL", " UIDBATCHES", " ESEARCH", " CONDSTORE", " MESSAGELIMIT=100000"} {
		if !strings.Contains(caps[0], c+" ") && !strings.HasSuffix(caps[0], c) {
			t.Fatalf("capability %s missing: %q", c, caps)
		}
	}
	if got := r.cmd("ENABLE UIDONLY"); !slices.Equal(got, []string{"* ENABLED UIDONLY"}) {
		t.Fatalf("ENABLE: %q", got)
	}
	sel := r.cmd("SELECT INBOX")
	if len(grep(sel, `UNSEEN`)) != 0 || len(grep(sel, `^\* 8 EXISTS$`)) != 1 {
		t.Fatalf("SELECT: %q", sel)
	}

	// Sequence numbers anywhere are refused, and the session goes on.
	refused(t, r, "BAD [UIDREQUIRED]",
		"FETCH 1 (FLAGS)",
		"FETCH 1:* (UID)",
		`STORE 1 +FLAGS (\Seen)`,
		"SEARCH ALL",
		"SEARCH RETURN (COUNT) UID 1:*",
		"COPY 1 Trash",
		"MOVE 1:2 Trash",
		"UID SEARCH 1:3",
		"UID SEARCH NOT 2",
		"UID SEARCH OR UID 1 3",
		"UID SEARCH RETURN (MIN) UNSEEN (SEEN 1)",
		"SORT (DATE) UTF-8 ALL",
		"UID SORT (DATE) UTF-8 1:2",
		"THREAD REFERENCES UTF-8 ALL",
		"UID THREAD ORDEREDSUBJECT UTF-8 NOT 1",
	)
	if got := r.cmd("UID SEARCH UID 2:3 ALL"); !slices.Equal(got, []string{"* SEARCH 2 3"}) {
		t.Fatalf("UID SEARCH: %q", got)
	}

	// UIDFETCH, with UID only when asked for.
	got := r.cmd("UID FETCH 1:3 (FLAGS)")
	if len(got) != 3 || !strings.HasPrefix(got[0], `* 1 UIDFETCH (FLAGS (`) || strings.Contains(got[0], "UID 1") {
		t.Fatalf("UID FETCH: %q", got)
	}
	if got := r.cmd("UID FETCH 2 (UID RFC822.SIZE)"); len(got) != 1 || !strings.HasPrefix(got[0], "* 2 UIDFETCH (UID 2 RFC822.SIZE ") {
		t.Fatalf("UID FETCH UID: %q", got)
	}
	if got := r.cmd(`UID STORE 2 +FLAGS (\Flagged)`); len(got) != 1 || !strings.HasPrefix(got[0], `* 2 UIDFETCH (FLAGS (`) || !strings.Contains(got[0], `\Flagged`) {
		t.Fatalf("UID STORE: %q", got)
	}
	r.cmd("ENABLE CONDSTORE")
	if got := r.cmd(`UID STORE 3 +FLAGS.SILENT (\Seen)`); len(got) != 1 || len(grep(got, `^\* 3 UIDFETCH \(MODSEQ \(\d+\)\)$`)) != 1 {
		t.Fatalf("UID STORE .SILENT with CONDSTORE: %q", got)
	}

	// Another session's changes: UIDFETCH with MODSEQ, VANISHED.
	o := e.raw()
	o.cmd("SELECT INBOX")
	o.cmd(`UID STORE 4 +FLAGS (\Answered)`)
	o.cmd(`UID STORE 5 +FLAGS.SILENT (\Deleted)`)
	o.cmd("UID EXPUNGE 5")
	got = r.cmd("NOOP")
	if !slices.Contains(got, "* VANISHED 5") || len(grep(got, `^\* 4 UIDFETCH \(FLAGS \([^)]*\\Answered\) MODSEQ \(\d+\)\)$`)) != 1 {
		t.Fatalf("unsolicited updates: %q", got)
	}
	e.deliver("INBOX", crlf(simpleMsg)) // UID 9
	if got := noopUntil(t, r, `EXISTS`); len(got) == 0 || got[0] != "* 8 EXISTS" || len(grep(got, `FETCH|VANISHED`)) != 0 {
		t.Fatalf("new message: %q", got)
	}

	// Its own expunges are VANISHED too.
	r.cmd(`UID STORE 6:7 +FLAGS.SILENT (\Deleted)`)
	if got := r.cmd("UID EXPUNGE 6"); len(got) == 0 || got[0] != "* VANISHED 6" || len(grep(got, `EXPUNGE|FETCH`)) != 0 {
		t.Fatalf("UID EXPUNGE: %q", got)
	}
	if got := r.cmd("EXPUNGE"); len(got) == 0 || got[0] != "* VANISHED 7" || len(grep(got, `EXPUNGE|FETCH`)) != 0 {
		t.Fatalf("EXPUNGE: %q", got)
	}
	if got := r.cmd("UID MOVE 8 Trash"); len(grep(got, `^\* VANISHED 8$`)) != 1 || len(grep(got, `EXPUNGE`)) != 0 {
		t.Fatalf("UID MOVE: %q", got)
	}

	// QRESYNC: the resync is told in UIDFETCH; sequence match data is
	// refused.
	r.cmd("ENABLE QRESYNC")
	o.cmd(`UID STORE 1 +FLAGS (\Draft)`)
	uidv := one(t, sel, `UIDVALIDITY (\d+)`)
	h := one(t, sel, `HIGHESTMODSEQ (\d+)`)
	got = r.cmd(fmt.Sprintf("SELECT INBOX (QRESYNC (%s %s))", uidv, h))
	if v := grep(got, `VANISHED`); !slices.Equal(v, []string{"* VANISHED (EARLIER) 5:8"}) {
		t.Fatalf("QRESYNC VANISHED: %q", got)
	}
	if f := grep(got, `FETCH`); len(f) != 5 || !strings.HasPrefix(f[0], `* 1 UIDFETCH (FLAGS (\Draft) MODSEQ (`) || len(grep(got, ` FETCH `)) != 0 {
		t.Fatalf("QRESYNC UIDFETCH: %q", got)
	}
	if _, status := r.try(fmt.Sprintf("SELECT INBOX (QRESYNC (%s %s 1:9 (1:2 1:2)))", uidv, h)); !strings.HasPrefix(status, "BAD [UIDREQUIRED]") {
		t.Fatalf("QRESYNC with sequence match data: %s", status)
	}

	// UIDONLY is per session: the other one still numbers messages.
	if got := o.cmd("FETCH 1 (UID)"); !slices.Equal(got, []string{"* 1 FETCH (UID 1)"}) {
		t.Fatalf("other session: %q", got)
	}
}

// noopUntil runs NOOP until a response matches re (a change made through
// the store directly arrives with its notification) and returns the
// responses of that NOOP.
func noopUntil(t *testing.T, r *raw, re string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.cmd("NOOP")
		if len(grep(got, re)) > 0 || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refused sends each command and fails the test unless its status starts
// with want and it had no untagged response.
func refused(t *testing.T, r *raw, want string, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if untagged, status := r.try(c); !strings.HasPrefix(status, want) || len(untagged) != 0 {
			t.Errorf("%s: %q %s, want %s", c, untagged, status, want)
		}
	}
}
