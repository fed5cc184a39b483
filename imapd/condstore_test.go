package imapd

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/store"
)

// Tests of CONDSTORE and QRESYNC (RFC 7162) over the wire, as a phone's
// client would use them.

// grep returns the lines matching re.
func grep(lines []string, re string) []string {
	var out []string
	rx := regexp.MustCompile(re)
	for _, l := range lines {
		if rx.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// one returns the first submatch of re in lines, failing if none matches.
func one(t *testing.T, lines []string, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	for _, l := range lines {
		if m := rx.FindStringSubmatch(l); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
	}
	t.Fatalf("no line matches %q in %q", re, lines)
	return ""
}

func num(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCondstore(t *testing.T) {
	e := newEnv(t, envOptions{})
	for i := 0; i < 4; i++ {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	r := e.raw()
	if caps := r.cmd("CAPABILITY"); len(grep(caps, ` CONDSTORE .*QRESYNC`)) == 0 {
		t.Fatalf("capabilities: %q", caps)
	}
	h0 := num(t, one(t, r.cmd("SELECT INBOX"), `^\* OK \[HIGHESTMODSEQ (\d+)\]`))

	// FETCH MODSEQ enables CONDSTORE: the client learns HIGHESTMODSEQ.
	got := r.cmd("FETCH 1:4 (MODSEQ)")
	if h := num(t, one(t, got, `^\* OK \[HIGHESTMODSEQ (\d+)\]`)); h != h0 {
		t.Fatalf("HIGHESTMODSEQ %d after enabling, %d at SELECT", h, h0)
	}
	if n := len(grep(got, `^\* \d FETCH \(MODSEQ \(\d+\)\)$`)); n != 4 {
		t.Fatalf("FETCH MODSEQ: %q", got)
	}

	// STORE answers with the new MODSEQ; .SILENT still tells it.
	m1 := num(t, one(t, r.cmd(`STORE 1 +FLAGS (\Seen)`), `^\* 1 FETCH \(FLAGS \((?:\\Recent )?\\Seen\) MODSEQ \((\d+)\)\)$`))
	if m1 <= h0 {
		t.Fatalf("modseq %d after STORE, %d before", m1, h0)
	}
	m2 := num(t, one(t, r.cmd(`UID STORE 2 +FLAGS.SILENT (\Flagged)`), `^\* 2 FETCH \(UID 2 MODSEQ \((\d+)\)\)$`))
	if m2 <= m1 {
		t.Fatalf("modseq %d after a second STORE, %d before", m2, m1)
	}

	// CHANGEDSINCE: only what changed after it, with MODSEQ.
	got = r.cmd(fmt.Sprintf("FETCH 1:* (FLAGS) (CHANGEDSINCE %d)", h0))
	for i := range got {
		got[i] = withoutRecent(got[i])
	}
	want := []string{
		fmt.Sprintf(`* 1 FETCH (FLAGS (\Seen) MODSEQ (%d))`, m1),
		fmt.Sprintf(`* 2 FETCH (FLAGS (\Flagged) MODSEQ (%d))`, m2),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("CHANGEDSINCE %d: %q, want %q", h0, got, want)
	}
	if got := r.cmd(fmt.Sprintf("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)", m2)); len(got) != 0 {
		t.Fatalf("CHANGEDSINCE the last change: %q", got)
	}

	// UNCHANGEDSINCE: exactly the messages changed after it fail.
	tests := []struct {
		cmd, status string
		fetched     []string // sequence numbers answered with FETCH
	}{
		{fmt.Sprintf(`STORE 1:4 (UNCHANGEDSINCE %d) +FLAGS (\Answered)`, h0), "OK [MODIFIED 1:2]", []string{"3", "4"}},
		{fmt.Sprintf(`UID STORE 1:4 (UNCHANGEDSINCE %d) -FLAGS (\Answered)`, m1), "OK [MODIFIED 2:4]", []string{"1"}},
		{`STORE 1,3 (UNCHANGEDSINCE 0) +FLAGS (\Draft)`, "OK [MODIFIED 1,3]", nil},
	}
	for _, tc := range tests {
		untagged, status := r.try(tc.cmd)
		if !strings.HasPrefix(status, tc.status) {
			t.Fatalf("%s: %s, want %s", tc.cmd, status, tc.status)
		}
		var fetched []string
		for _, l := range grep(untagged, `^\* \d+ FETCH`) {
			fetched = append(fetched, strings.Fields(l)[1])
			if !strings.Contains(l, "MODSEQ (") {
				t.Fatalf("%s: FETCH without MODSEQ: %q", tc.cmd, l)
			}
		}
		if !slices.Equal(fetched, tc.fetched) {
			t.Fatalf("%s: FETCH for %v, want %v (%q)", tc.cmd, fetched, tc.fetched, untagged)
		}
	}

	// SEARCH MODSEQ answers with the highest modseq of the matches, or
	// with MIN alone of the one returned.
	got = r.cmd(fmt.Sprintf("SEARCH MODSEQ %d", m2))
	hi := num(t, one(t, r.cmd(`FETCH 4 (MODSEQ)`), `^\* 4 FETCH \(MODSEQ \((\d+)\)\)`))
	if want := fmt.Sprintf("* SEARCH 2 3 4 (MODSEQ %d)", hi); len(got) != 1 || got[0] != want {
		t.Fatalf("SEARCH MODSEQ: %q, want %q", got, want)
	}
	got = r.cmd(fmt.Sprintf(`UID SEARCH RETURN (MIN) MODSEQ "/flags/\\seen" all %d`, m2))
	if want := fmt.Sprintf(`* ESEARCH (TAG "r%d") UID MIN 2 MODSEQ %d`, r.tag, m2); len(got) != 1 || got[0] != want {
		t.Fatalf("ESEARCH MODSEQ: %q, want %q", got, want)
	}
	if got := r.cmd(fmt.Sprintf("SEARCH MODSEQ %d", hi+1)); len(got) != 1 || got[0] != "* SEARCH" {
		t.Fatalf("SEARCH MODSEQ past the highest: %q", got)
	}

	// STATUS HIGHESTMODSEQ is the mailbox's.
	if got := one(t, r.cmd("STATUS INBOX (HIGHESTMODSEQ MESSAGES)"), `^\* STATUS INBOX \(HIGHESTMODSEQ (\d+) MESSAGES 4\)$`); num(t, got) != hi {
		t.Fatalf("STATUS HIGHESTMODSEQ %s, want %d", got, hi)
	}

	// Another session's change comes with its MODSEQ.
	r2 := e.raw()
	r2.cmd("ENABLE CONDSTORE")
	r2.cmd("SELECT INBOX")
	m := num(t, one(t, r2.cmd(`STORE 2 +FLAGS (\Deleted)`), `MODSEQ \((\d+)\)`))
	if got := r.cmd("NOOP"); len(grep(got, fmt.Sprintf(`^\* 2 FETCH \(UID 2 FLAGS \([^)]+\) MODSEQ \(%d\)\)$`, m))) != 1 {
		t.Fatalf("unsolicited FETCH: %q", got)
	}

	// Bad modifiers are refused, and leave the flags alone.
	for _, c := range []string{
		`STORE 1 (UNCHANGEDSINCE) +FLAGS (\Seen)`,
		`STORE 1 (FOO 1) +FLAGS (\Seen)`,
		`FETCH 1 (FLAGS) (CHANGEDSINCE x)`,
		`FETCH 1 (FLAGS) (VANISHED)`,
		`UID FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)`, // QRESYNC not enabled
		`SEARCH MODSEQ "/flags/\\seen" bogus 1`,
		`SELECT INBOX (QRESYNC (1 1))`,
	} {
		if _, status := r.try(c); !strings.HasPrefix(status, "BAD") {
			t.Errorf("%s: %s, want BAD", c, status)
		}
	}
}

// TestQresync reconnects as a phone does: SELECT with QRESYNC after
// changes made by another server process (issue 12's cross-process
// requirement), then follows changes live as VANISHED.
func TestQresync(t *testing.T) {
	_, e1, e2 := twoServers(t, envOptions{}, store.Options{})
	for i := 0; i < 10; i++ {
		e1.deliver("INBOX", crlf(simpleMsg))
	}
	r := e1.raw()
	if got := r.cmd("ENABLE QRESYNC CONDSTORE"); !slices.Equal(got, []string{"* ENABLED QRESYNC"}) {
		t.Fatalf("ENABLE: %q", got)
	}
	sel := r.cmd("SELECT INBOX")
	uidv := one(t, sel, `UIDVALIDITY (\d+)`)
	h := num(t, one(t, sel, `HIGHESTMODSEQ (\d+)`))
	r.cmd("LOGOUT")

	// Server 2 changes flags, expunges and delivers while the phone is away.
	o := e2.raw()
	o.cmd("ENABLE CONDSTORE")
	o.cmd("SELECT INBOX")
	o.cmd(`UID STORE 2,7 +FLAGS (\Seen)`)
	o.cmd(`UID STORE 3,5 +FLAGS.SILENT (\Deleted)`)
	o.cmd("EXPUNGE")
	e2.deliver("INBOX", crlf(simpleMsg)) // UID 11

	r = e1.raw()
	r.cmd("ENABLE QRESYNC")
	got := r.cmd(fmt.Sprintf("SELECT INBOX (QRESYNC (%s %d))", uidv, h))
	if v := grep(got, `VANISHED`); !slices.Equal(v, []string{"* VANISHED (EARLIER) 3,5"}) {
		t.Fatalf("VANISHED: %q", got)
	}
	fetches := grep(got, `FETCH`)
	if len(fetches) != 3 || !strings.HasPrefix(fetches[0], `* 2 FETCH (UID 2 FLAGS (\Seen) MODSEQ (`) ||
		!strings.HasPrefix(fetches[1], `* 5 FETCH (UID 7 FLAGS (\Seen) MODSEQ (`) ||
		!strings.HasPrefix(fetches[2], `* 9 FETCH (UID 11 FLAGS (`) {
		t.Fatalf("FETCH after QRESYNC: %q", fetches)
	}
	if i, j := slices.Index(got, "* VANISHED (EARLIER) 3,5"), slices.Index(got, fetches[0]); i > j {
		t.Fatalf("VANISHED after FETCH: %q", got)
	}
	h2 := num(t, one(t, got, `HIGHESTMODSEQ (\d+)`))

	// Known UIDs narrow the answer; another UIDVALIDITY gets none.
	got = r.cmd(fmt.Sprintf("SELECT INBOX (QRESYNC (%s %d 1:4))", uidv, h))
	if got[0] != "* OK [CLOSED] Previous mailbox closed." {
		t.Fatalf("no CLOSED first: %q", got)
	}
	if v, f := grep(got, `VANISHED`), grep(got, `FETCH`); !slices.Equal(v, []string{"* VANISHED (EARLIER) 3"}) || len(f) != 1 {
		t.Fatalf("with known UIDs: %q", got)
	}
	if got := r.cmd(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d))", num(t, uidv)+1, h)); len(grep(got, `VANISHED|FETCH`)) != 0 {
		t.Fatalf("another UIDVALIDITY: %q", got)
	}
	// Up to date: nothing to tell.
	if got := r.cmd(fmt.Sprintf("SELECT INBOX (QRESYNC (%s %d))", uidv, h2)); len(grep(got, `VANISHED|FETCH`)) != 0 {
		t.Fatalf("up to date: %q", got)
	}

	// Live: server 2's expunge arrives as VANISHED, its flag change with
	// MODSEQ, in IDLE.
	fmt.Fprintf(r.c, "i1 IDLE\r\n")
	if l := r.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	var idle []string
	until := func(want string) {
		t.Helper()
		for !slices.Contains(idle, want) {
			idle = append(idle, r.line())
		}
	}
	o.cmd(`UID STORE 4 +FLAGS.SILENT (\Deleted)`)
	o.cmd("EXPUNGE")
	until("* VANISHED 4")
	m8 := one(t, o.cmd(`UID STORE 8 +FLAGS (\Flagged)`), `MODSEQ \((\d+)\)`)
	until(`* 5 FETCH (UID 8 FLAGS (\Flagged) MODSEQ (` + m8 + `))`)
	fmt.Fprintf(r.c, "DONE\r\n")
	for l := r.line(); !strings.HasPrefix(l, "i1 OK"); l = r.line() {
		idle = append(idle, l)
	}
	if len(grep(idle, `EXPUNGE`)) != 0 {
		t.Fatalf("IDLE after QRESYNC: %q", idle)
	}

	// UID FETCH (VANISHED): what vanished since, within the set.
	got = r.cmd(fmt.Sprintf("UID FETCH 1:6 (FLAGS) (CHANGEDSINCE %d VANISHED)", h))
	if v := grep(got, `VANISHED`); !slices.Equal(v, []string{"* VANISHED (EARLIER) 3:5"}) || len(grep(got, `FETCH \(UID 2 `)) != 1 {
		t.Fatalf("UID FETCH VANISHED: %q", got)
	}
	// The session's own EXPUNGE is VANISHED too.
	r.cmd(`UID STORE 1 +FLAGS.SILENT (\Deleted)`)
	got, status := r.try("EXPUNGE")
	if len(grep(got, `EXPUNGE`)) != 0 || !slices.Contains(got, "* VANISHED 1") {
		t.Fatalf("own EXPUNGE: %q", got)
	}
	// Its tagged OK says where the client is now (VANISHED has no modseq).
	if hm := one(t, []string{status}, `^OK \[HIGHESTMODSEQ (\d+)\]`); num(t, hm) <= h2 {
		t.Fatalf("EXPUNGE's OK: %s (HIGHESTMODSEQ %d before)", status, h2)
	}
}

// TestUnchangedSinceRace runs conditional STOREs from two server processes
// against the same message and modseq: exactly one wins.
func TestUnchangedSinceRace(t *testing.T) {
	_, e1, e2 := twoServers(t, envOptions{}, store.Options{})
	e1.deliver("INBOX", crlf(simpleMsg))
	for round := 0; round < 20; round++ {
		a, b := e1.raw(), e2.raw()
		a.cmd("SELECT INBOX")
		b.cmd("SELECT INBOX")
		ms := one(t, a.cmd("FETCH 1 (MODSEQ)"), `MODSEQ \((\d+)\)`)
		b.cmd("FETCH 1 (MODSEQ)")
		flag := fmt.Sprintf("$Round%d", round)
		res := make(chan string, 2)
		for _, r := range []*raw{a, b} {
			go func(r *raw) {
				r.tag++
				tag := fmt.Sprintf("r%d", r.tag)
				fmt.Fprintf(r.c, "%s STORE 1 (UNCHANGEDSINCE %s) +FLAGS (%s)\r\n", tag, ms, flag)
				for {
					l, err := r.r.ReadString('\n')
					if err != nil {
						res <- err.Error()
						return
					}
					if rest, ok := strings.CutPrefix(l, tag+" "); ok {
						res <- strings.TrimSpace(rest)
						return
					}
				}
			}(r)
		}
		s1, s2 := <-res, <-res
		won := 0
		for _, s := range []string{s1, s2} {
			switch {
			case strings.HasPrefix(s, "OK [MODIFIED 1]"):
			case strings.HasPrefix(s, "OK"):
				won++
			default:
				t.Fatalf("round %d: %q", round, s)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d winners (%q, %q)", round, won, s1, s2)
		}
		a.c.Close()
		b.c.Close()
	}
}

// TestViewNeverTellsOlderFlags: a session told a message's flags by its
// own STORE at modseq 6 must not be told the state of modseq 5 when the
// feed applies another session's earlier commit after it (imaptest's
// "MODSEQ dropped" with CONDSTORE), nor repeat modseq 6.
func TestViewNeverTellsOlderFlags(t *testing.T) {
	ch := func(ms uint64, flags ...string) *store.Changes {
		return &store.Changes{Mailbox: &store.Mailbox{HighestModSeq: ms},
			Updated: []store.MessageFlags{{UID: 1, Flags: flags, ModSeq: ms}}}
	}
	v := newView(nil, []uint32{1, 2}, false)
	v.applySince(ch(4), 0, false)
	v.take(true)
	v.reported(1, []string{`\Seen`, `\Flagged`}, 6) // own STORE, ahead of the feed
	v.applySince(ch(5, `\Flagged`), 4, true)        // another session's, committed before
	if got := v.take(true); len(got) != 0 {
		t.Fatalf("older state told: %v", got)
	}
	v.applySince(ch(6, `\Seen`, `\Flagged`), 5, true)
	if got := v.take(true); len(got) != 0 {
		t.Fatalf("own state told again: %v", got)
	}
	if len(v.ahead) != 0 {
		t.Fatalf("ahead not pruned: %v", v.ahead)
	}
	v.applySince(ch(7, `\Seen`), 6, true) // a later change is news
	if got := v.take(true); len(got) != 1 || got[0].modseq != 7 {
		t.Fatalf("later change: %v", got)
	}
}
