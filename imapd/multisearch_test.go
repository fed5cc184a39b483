package imapd

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// esearchLine is one MULTISEARCH response: "* ESEARCH (TAG "t" MAILBOX m
// UIDVALIDITY v) UID data".
var esearchLine = regexp.MustCompile(`^\* ESEARCH \(TAG "([^"]*)" MAILBOX ("[^"]*"|[^ ]+) UIDVALIDITY (\d+)\) UID(.*)$`)

// multiResults parses the ESEARCH responses of the command tagged tag
// into "mailbox: data" lines in the order sent, checking the tag and that
// each UIDVALIDITY is the one of alice's mailbox of that name.
func multiResults(t *testing.T, tag string, untagged []string, uidvalidity map[string]uint32) []string {
	t.Helper()
	var out []string
	for _, l := range untagged {
		if !strings.HasPrefix(l, "* ESEARCH") {
			continue
		}
		m := esearchLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("malformed ESEARCH response %q", l)
		}
		name := strings.Trim(m[2], `"`)
		if m[1] != tag {
			t.Fatalf("%q: tag %q, want %q", l, m[1], tag)
		}
		if want := fmt.Sprint(uidvalidity[name]); m[3] != want {
			t.Fatalf("%q: UIDVALIDITY %s, want %s (alice's %s)", l, m[3], want, name)
		}
		out = append(out, name+":"+m[4])
	}
	return out
}

func TestMultiSearch(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	msg := func(subject, body string) string {
		return crlf("From: Bob <bob@example.test>\nTo: alice@example.test\nSubject: " + subject +
			"\nDate: Mon, 6 May 2024 07:08:09 +0000\n\n" + body + "\n")
	}
	put := func(accountID int64, mailbox, body string, flags ...string) uint32 {
		t.Helper()
		mb, err := e.st.MailboxByName(ctx, accountID, mailbox)
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.st.Append(ctx, accountID, mb.ID, strings.NewReader(msg("s", body)), 0, flags, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return res.UID
	}
	for _, n := range []string{"Work", "Work/Projects", "Work/Projects/Deep", "Unsubscribed", "Reports/Café"} {
		if _, err := e.st.CreateMailbox(ctx, e.acc.ID, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	// A subscription outlives its mailbox: "Gone" names none.
	if _, err := e.st.CreateMailbox(ctx, e.acc.ID, "Gone", ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"Work", "Gone"} {
		if err := e.st.SetSubscribed(ctx, e.acc.ID, n, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.DeleteMailbox(ctx, e.acc.ID, "Gone"); err != nil {
		t.Fatal(err)
	}
	// Alice's messages; UIDs start at 1 in every mailbox.
	put(e.acc.ID, "INBOX", "the budget report", `\Flagged`, `\Seen`) // 1
	put(e.acc.ID, "INBOX", "lunch?")                                 // 2
	put(e.acc.ID, "INBOX", "budget again", `\Seen`)                  // 3
	put(e.acc.ID, "Junk", "cheap budget pills")
	put(e.acc.ID, "Work", "budget for work", `\Seen`)
	put(e.acc.ID, "Work", "nothing", `\Seen`)
	put(e.acc.ID, "Work/Projects", "project budget", `\Flagged`, `\Seen`)
	put(e.acc.ID, "Work/Projects/Deep", "deep budget", `\Seen`)
	put(e.acc.ID, "Archive", "archived budget", `\Seen`)
	put(e.acc.ID, "Unsubscribed", "budget nobody follows", `\Seen`)
	put(e.acc.ID, "Reports/Café", "budget en français", `\Seen`)

	// Bob has mailboxes of the same names and more, and matches
	// everywhere: none of it may show in alice's answers.
	bob, err := e.st.CreateAccount(ctx, "bob@example.test", "bob-password", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"Work", "Secret"} {
		if _, err := e.st.CreateMailbox(ctx, bob.ID, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"INBOX", "Work", "Work", "Work", "Secret"} {
		put(bob.ID, n, "bob's budget bobsecret", `\Flagged`)
	}

	uidvalidity := map[string]uint32{}
	all, err := e.st.Mailboxes(ctx, e.acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range all {
		uidvalidity[mb.Name] = mb.UIDValidity
		uidvalidity[strings.ReplaceAll(mb.Name, "é", "&AOk-")] = mb.UIDValidity // as on the wire
	}

	budget := []string{"Archive: ALL 1", "INBOX: ALL 1,3", "Junk: ALL 1", "Reports/Caf&AOk-: ALL 1",
		"Unsubscribed: ALL 1", "Work: ALL 1", "Work/Projects: ALL 1", "Work/Projects/Deep: ALL 1"}
	const (
		auth = 1 << iota // run in the authenticated state
		sel              // run with INBOX selected
		both = auth | sel
	)
	tests := []struct {
		name   string
		states int
		cmd    string
		status string // prefix of the tagged response
		want   []string
	}{
		{"personal, content key", both, `ESEARCH IN (personal) BODY budget`, "OK", budget},
		{"personal, upper case and CHARSET", both, `ESEARCH IN (PERSONAL) CHARSET UTF-8 BODY BUDGET`, "OK", budget},
		{"inboxes: INBOX and Junk", both, `ESEARCH IN (inboxes) BODY budget`, "OK",
			[]string{"INBOX: ALL 1,3", "Junk: ALL 1"}},
		{"subscribed", both, `ESEARCH IN (subscribed) BODY budget`, "OK",
			[]string{"Archive: ALL 1", "INBOX: ALL 1,3", "Junk: ALL 1", "Work: ALL 1"}},
		{"subtree", both, `ESEARCH IN (subtree Work) BODY budget`, "OK",
			[]string{"Work: ALL 1", "Work/Projects: ALL 1", "Work/Projects/Deep: ALL 1"}},
		{"subtree-one", both, `ESEARCH IN (subtree-one Work) BODY budget`, "OK",
			[]string{"Work: ALL 1", "Work/Projects: ALL 1"}},
		{"subtree of a mailbox's parent only", both, `ESEARCH IN (subtree-one Reports) BODY budget`, "OK",
			[]string{"Reports/Caf&AOk-: ALL 1"}},
		{"mailboxes, one missing", both, `ESEARCH IN (mailboxes (Work "Nonexistent" "Reports/Caf&AOk-")) BODY budget`, "OK",
			[]string{"Reports/Caf&AOk-: ALL 1", "Work: ALL 1"}},
		{"mailboxes, none exists", both, `ESEARCH IN (mailboxes Nonexistent) ALL`, "OK", nil},
		{"mailboxes of another account", both, `ESEARCH IN (mailboxes (Secret Work)) RETURN (ALL COUNT) FLAGGED`, "OK", nil},
		{"another account's text", both, `ESEARCH IN (personal) TEXT bobsecret`, "OK", nil},
		{"several filters, each mailbox once", both, `ESEARCH IN (inboxes subtree-one Work mailboxes INBOX) BODY budget`, "OK",
			[]string{"INBOX: ALL 1,3", "Junk: ALL 1", "Work: ALL 1", "Work/Projects: ALL 1"}},
		{"flag key, MIN MAX COUNT", both, `ESEARCH IN (personal) RETURN (MIN MAX COUNT) FLAGGED`, "OK",
			[]string{"INBOX: MIN 1 MAX 1 COUNT 1", "Work/Projects: MIN 1 MAX 1 COUNT 1"}},
		{"RETURN () is ALL", both, `ESEARCH IN (mailboxes INBOX) RETURN () UNSEEN`, "OK", []string{"INBOX: ALL 2"}},
		{"COUNT leaves out mailboxes without matches", both, `ESEARCH IN (subtree Work) RETURN (COUNT) UNSEEN`, "OK", nil},
		{"sequence numbers per mailbox", both, `ESEARCH IN (subtree Work) 2`, "OK",
			[]string{"Work: ALL 2"}},
		{"n:* is the last message past the end", both, `ESEARCH IN (subtree-one Work) 2:*`, "OK",
			[]string{"Work: ALL 2", "Work/Projects: ALL 1"}},
		{"UID * per mailbox", both, `ESEARCH IN (mailboxes (INBOX Work)) UID *`, "OK",
			[]string{"INBOX: ALL 3", "Work: ALL 2"}},
		{"OR, NOT", both, `ESEARCH IN (personal) OR FLAGGED NOT SEEN`, "OK",
			[]string{"INBOX: ALL 1:2", "Junk: ALL 1", "Work/Projects: ALL 1"}},
		{"PARTIAL", both, `ESEARCH IN (mailboxes INBOX) RETURN (PARTIAL -1:-1) ALL`, "OK", []string{"INBOX: PARTIAL (-1:-1 3)"}},
		{"MODSEQ", both, `ESEARCH IN (mailboxes Work) RETURN (COUNT) MODSEQ 1`, "OK", []string{"Work: COUNT 2 MODSEQ 3"}},

		{"selected", sel, `ESEARCH IN (selected) RETURN (COUNT) BODY budget`, "OK", []string{"INBOX: COUNT 2"}},
		{"no IN is selected", sel, `ESEARCH RETURN (MAX) ALL`, "OK", []string{"INBOX: MAX 3"}},
		{"RECENT is the session's, in the selected mailbox only", sel, `ESEARCH IN (personal) RECENT`, "OK",
			[]string{"INBOX: ALL 1:3"}},
		{"selected-delayed", sel, `ESEARCH IN (selected-delayed) UNSEEN`, "OK", []string{"INBOX: ALL 2"}},
		{"selected and others", sel, `ESEARCH IN (selected subtree-one Work) BODY budget`, "OK",
			[]string{"INBOX: ALL 1,3", "Work: ALL 1", "Work/Projects: ALL 1"}},
		{"SAVE with the selected mailbox", sel, `ESEARCH IN (selected) RETURN (SAVE) BODY budget`, "OK", nil},
		{"SAVE with other mailboxes", sel, `ESEARCH IN (selected mailboxes Work) RETURN (SAVE) ALL`, "BAD", nil},
		{"SAVE with personal", sel, `ESEARCH IN (personal) RETURN (SAVE COUNT) ALL`, "BAD", nil},

		{"selected without a selected mailbox", auth, `ESEARCH IN (selected) ALL`, "BAD", nil},
		{"no IN without a selected mailbox", auth, `ESEARCH ALL`, "BAD", nil},
		{"SAVE without a selected mailbox", auth, `ESEARCH IN (personal) RETURN (SAVE) ALL`, "BAD", nil},

		{"unknown filter", both, `ESEARCH IN (everything) ALL`, "BAD", nil},
		{"scope options", both, `ESEARCH IN (personal (depth 1)) ALL`, "BAD", nil},
		{"empty source", both, `ESEARCH IN () ALL`, "BAD", nil},
		{"mailboxes without a name", both, `ESEARCH IN (mailboxes) ALL`, "BAD", nil},
		{"mailboxes with an empty list", both, `ESEARCH IN (mailboxes ()) ALL`, "BAD", nil},
		{"too many names", both, `ESEARCH IN (mailboxes (` + strings.Repeat("a ", maxESearchNames) + `b)) ALL`, "BAD", nil},
		{"no search key", both, `ESEARCH IN (personal)`, "BAD", nil},
		{"unknown return option", both, `ESEARCH IN (personal) RETURN (EVERYTHING) ALL`, "BAD", nil},
		{"unknown charset", both, `ESEARCH IN (personal) CHARSET KOI8-R ALL`, "NO [BADCHARSET]", nil},
	}
	authSession, selSession := e.raw(), e.raw()
	selSession.cmd("SELECT INBOX")
	for _, tc := range tests {
		for _, st := range []struct {
			name string
			bit  int
			r    *raw
		}{{"authenticated", auth, authSession}, {"selected", sel, selSession}} {
			if tc.states&st.bit == 0 {
				continue
			}
			t.Run(tc.name+"/"+st.name, func(t *testing.T) {
				r := st.r
				untagged, status := r.try(tc.cmd)
				if !strings.HasPrefix(status, tc.status) {
					t.Fatalf("%s: %s, want %s", tc.cmd, status, tc.status)
				}
				got := multiResults(t, fmt.Sprintf("r%d", r.tag), untagged, uidvalidity)
				if !slices.Equal(got, tc.want) {
					t.Fatalf("%s:\n got %q\nwant %q", tc.cmd, got, tc.want)
				}
			})
		}
	}

	// The SAVE above kept INBOX's result for "$", in the selected mailbox
	// only; elsewhere "$" matches nothing.
	untagged, _ := selSession.try(`UID SEARCH UID $`)
	if got := searchUIDList(t, untagged); !slices.Equal(got, []uint32{1, 3}) {
		t.Fatalf(`UID SEARCH UID $ after ESEARCH SAVE: %v`, got)
	}
	untagged, _ = selSession.try(`ESEARCH IN (selected mailboxes Work) UID $`)
	if got := multiResults(t, fmt.Sprintf("r%d", selSession.tag), untagged, uidvalidity); !slices.Equal(got, []string{"INBOX: ALL 1,3"}) {
		t.Fatalf(`ESEARCH UID $: %q`, got)
	}

	// A message delivered after SELECT is found in other mailboxes at
	// once, in the selected one only once the session was told of it.
	put(e.acc.ID, "INBOX", "late budget")
	put(e.acc.ID, "Work", "late budget")
	untagged, _ = selSession.try(`ESEARCH IN (selected mailboxes Work) RETURN (COUNT) BODY budget`)
	got := multiResults(t, fmt.Sprintf("r%d", selSession.tag), untagged, uidvalidity)
	if want := []string{"INBOX: COUNT 2", "Work: COUNT 2"}; !slices.Equal(got, want) {
		t.Fatalf("after deliveries: %q, want %q", got, want)
	}
	// The delivery's notification reaches the session on its own time:
	// NOOP until the session is told (at once, usually during the ESEARCH).
	exists := func(l string) bool { return strings.HasSuffix(l, " EXISTS") }
	for deadline := time.Now().Add(10 * time.Second); !slices.ContainsFunc(untagged, exists); {
		if time.Now().After(deadline) {
			t.Fatalf("no EXISTS for the new INBOX message: %q", untagged)
		}
		time.Sleep(5 * time.Millisecond)
		untagged, _ = selSession.try(`NOOP`)
	}
	untagged, _ = selSession.try(`ESEARCH RETURN (COUNT) BODY budget`)
	if got := multiResults(t, fmt.Sprintf("r%d", selSession.tag), untagged, uidvalidity); !slices.Equal(got, []string{"INBOX: COUNT 3"}) {
		t.Fatalf("after EXISTS: %q", got)
	}

	// UIDONLY refuses sequence numbers in ESEARCH too.
	u := e.raw()
	u.cmd("ENABLE UIDONLY")
	if _, status := u.try(`ESEARCH IN (personal) 1:2`); !strings.HasPrefix(status, "BAD [UIDREQUIRED]") {
		t.Fatalf("ESEARCH 1:2 under UIDONLY: %s", status)
	}
	untagged, _ = u.try(`ESEARCH IN (inboxes) RETURN (MIN) UID 1:*`)
	if got := multiResults(t, fmt.Sprintf("r%d", u.tag), untagged, uidvalidity); !slices.Equal(got, []string{"INBOX: MIN 1", "Junk: MIN 1"}) {
		t.Fatalf("ESEARCH UID 1:* under UIDONLY: %q", got)
	}

	// The capability is offered.
	if caps := authSession.cmd("CAPABILITY"); !strings.Contains(caps[0], " MULTISEARCH") {
		t.Fatalf("CAPABILITY: %q", caps)
	}
}
