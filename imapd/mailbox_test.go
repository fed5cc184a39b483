package imapd

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
)

// listNames runs LIST and returns "name attrs..." lines, sorted.
func listNames(t *testing.T, c *imapclient.Client, ref, pattern string, opts *imap.ListOptions) []string {
	t.Helper()
	list, err := c.List(ref, pattern, opts).Collect()
	if err != nil {
		t.Fatalf("LIST %q %q: %v", ref, pattern, err)
	}
	var out []string
	for _, l := range list {
		attrs := make([]string, len(l.Attrs))
		for i, a := range l.Attrs {
			attrs[i] = string(a)
		}
		sort.Strings(attrs)
		s := l.Mailbox
		if len(attrs) > 0 {
			s += " " + strings.Join(attrs, " ")
		}
		if l.ChildInfo != nil && l.ChildInfo.Subscribed {
			s += " CHILDINFO"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func TestListPatterns(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	for _, name := range []string{"Work/Projects/Alpha", "Work/Reports", "INBOX/Sub"} {
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatalf("CREATE %s: %v", name, err)
		}
	}
	tests := []struct {
		ref, pattern string
		want         []string
	}{
		{"", "*", []string{
			`Archive \Archive \HasNoChildren`, `Drafts \Drafts \HasNoChildren`, `INBOX \HasChildren`,
			`INBOX/Sub \HasNoChildren`, `Junk \HasNoChildren \Junk`, `Sent \HasNoChildren \Sent`,
			`Trash \HasNoChildren \Trash`, `Work \HasChildren`, `Work/Projects \HasChildren`,
			`Work/Projects/Alpha \HasNoChildren`, `Work/Reports \HasNoChildren`}},
		{"", "%", []string{
			`Archive \Archive \HasNoChildren`, `Drafts \Drafts \HasNoChildren`, `INBOX \HasChildren`,
			`Junk \HasNoChildren \Junk`, `Sent \HasNoChildren \Sent`, `Trash \HasNoChildren \Trash`, `Work \HasChildren`}},
		{"", "Work/%", []string{`Work/Projects \HasChildren`, `Work/Reports \HasNoChildren`}},
		{"Work/", "%", []string{`Work/Projects \HasChildren`, `Work/Reports \HasNoChildren`}},
		{"", "Work/*", []string{`Work/Projects \HasChildren`, `Work/Projects/Alpha \HasNoChildren`, `Work/Reports \HasNoChildren`}},
		{"", "*Alpha", []string{`Work/Projects/Alpha \HasNoChildren`}},
		{"", "inbox", []string{`INBOX \HasChildren`}},
		{"", "inbox/%", []string{`INBOX/Sub \HasNoChildren`}},
		{"", "Nothing*", nil},
		{"", "", []string{` \Noselect`}},
	}
	for _, tc := range tests {
		if got := listNames(t, c, tc.ref, tc.pattern, nil); !slices.Equal(got, tc.want) {
			t.Errorf("LIST %q %q:\n got %q\nwant %q", tc.ref, tc.pattern, got, tc.want)
		}
	}
}

func TestListExtended(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	for _, name := range []string{"Lists/Go", "Lists/Rust"} {
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	// CREATE subscribes nothing (as Dovecot): subscribe as a client would.
	if err := c.Subscribe("Lists/Go").Wait(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Lists", "Drafts", "Lists/Rust"} {
		if err := c.Unsubscribe(name).Wait(); err != nil {
			t.Fatalf("UNSUBSCRIBE %s: %v", name, err)
		}
	}
	if err := c.Unsubscribe("Missing").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Fatalf("UNSUBSCRIBE Missing: %v", err)
	}

	got := listNames(t, c, "", "*", &imap.ListOptions{SelectSubscribed: true})
	want := []string{`Archive \Archive \HasNoChildren \Subscribed`, `INBOX \HasNoChildren \Subscribed`,
		`Junk \HasNoChildren \Junk \Subscribed`, `Lists/Go \HasNoChildren \Subscribed`,
		`Sent \HasNoChildren \Sent \Subscribed`, `Trash \HasNoChildren \Subscribed \Trash`}
	if !slices.Equal(got, want) {
		t.Errorf("LIST (SUBSCRIBED):\n got %q\nwant %q", got, want)
	}
	got = listNames(t, c, "", "%", &imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true})
	want = []string{`Archive \Archive \HasNoChildren \Subscribed`, `INBOX \HasNoChildren \Subscribed`,
		`Junk \HasNoChildren \Junk \Subscribed`, `Lists \HasChildren CHILDINFO`,
		`Sent \HasNoChildren \Sent \Subscribed`, `Trash \HasNoChildren \Subscribed \Trash`}
	if !slices.Equal(got, want) {
		t.Errorf("LIST (SUBSCRIBED RECURSIVEMATCH):\n got %q\nwant %q", got, want)
	}
	got = listNames(t, c, "", "*", &imap.ListOptions{SelectSpecialUse: true})
	want = []string{`Archive \Archive \HasNoChildren`, `Drafts \Drafts \HasNoChildren`, `Junk \HasNoChildren \Junk`,
		`Sent \HasNoChildren \Sent`, `Trash \HasNoChildren \Trash`}
	if !slices.Equal(got, want) {
		t.Errorf("LIST (SPECIAL-USE):\n got %q\nwant %q", got, want)
	}
	got = listNames(t, c, "", "Lists*", &imap.ListOptions{ReturnSubscribed: true, ReturnChildren: true})
	want = []string{`Lists \HasChildren`, `Lists/Go \HasNoChildren \Subscribed`, `Lists/Rust \HasNoChildren`}
	if !slices.Equal(got, want) {
		t.Errorf("LIST RETURN (SUBSCRIBED CHILDREN):\n got %q\nwant %q", got, want)
	}

	// LSUB (imapclient only speaks LIST).
	lsub := e.raw().cmd(`LSUB "" "*"`)
	if len(lsub) != 6 || !slices.Contains(lsub, `* LSUB (\HasNoChildren) "/" "Lists/Go"`) {
		t.Fatalf("LSUB: %q", lsub)
	}

	// LIST-STATUS.
	appendMsg(t, c, "Lists/Go", crlf(simpleMsg))
	list, err := c.List("", "Lists/*", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, NumUnseen: true, Size: true}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, l := range list {
		if l.Mailbox == "Lists/Go" {
			found = true
			if l.Status == nil || *l.Status.NumMessages != 1 || *l.Status.NumUnseen != 1 || *l.Status.Size != int64(len(crlf(simpleMsg))) {
				t.Errorf("LIST-STATUS of Lists/Go = %+v", l.Status)
			}
		}
	}
	if !found {
		t.Fatalf("LIST-STATUS: %v", list)
	}
}

func TestCreateDeleteRename(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)

	// CREATE makes intermediate folders; CREATE-SPECIAL-USE.
	if err := c.Create("A/B/C", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Everything", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrAll}}).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Bad", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{"\\Nonsense"}}).Wait(); imapCode(err) != "USEATTR" {
		t.Fatalf("CREATE with unknown USE: %v", err)
	}
	if got := listNames(t, c, "", "Everything", nil); !slices.Equal(got, []string{`Everything \All \HasNoChildren`}) {
		t.Fatalf("special use: %q", got)
	}
	if got := listNames(t, c, "", "A*", nil); !slices.Equal(got, []string{`A \HasChildren`, `A/B \HasChildren`, `A/B/C \HasNoChildren`, `Archive \Archive \HasNoChildren`}) {
		t.Fatalf("intermediate folders: %q", got)
	}
	tests := []struct {
		name string
		run  func() error
		code imap.ResponseCode
	}{
		{"CREATE existing", func() error { return c.Create("A/B", nil).Wait() }, imap.ResponseCodeAlreadyExists},
		{"CREATE INBOX", func() error { return c.Create("inbox", nil).Wait() }, imap.ResponseCodeAlreadyExists},
		{"DELETE INBOX", func() error { return c.Delete("INBOX").Wait() }, imap.ResponseCodeCannot},
		{"DELETE missing", func() error { return c.Delete("Nope").Wait() }, imap.ResponseCodeNonExistent},
		{"RENAME onto existing", func() error { return c.Rename("A", "Drafts", nil).Wait() }, imap.ResponseCodeAlreadyExists},
		{"RENAME missing", func() error { return c.Rename("Nope", "Other", nil).Wait() }, imap.ResponseCodeNonExistent},
		{"RENAME into itself", func() error { return c.Rename("A", "A/B/D", nil).Wait() }, imap.ResponseCodeCannot},
		{"SELECT missing", func() error { _, err := c.Select("Nope", nil).Wait(); return err }, imap.ResponseCodeNonExistent},
		{"STATUS missing", func() error {
			_, err := c.Status("Nope", &imap.StatusOptions{NumMessages: true}).Wait()
			return err
		}, imap.ResponseCodeNonExistent},
		{"SUBSCRIBE missing", func() error { return c.Subscribe("Nope").Wait() }, imap.ResponseCodeNonExistent},
	}
	for _, tc := range tests {
		err := tc.run()
		if imapType(err) != imap.StatusResponseTypeNo || imapCode(err) != tc.code {
			t.Errorf("%s: %v, want NO [%s]", tc.name, err, tc.code)
		}
	}

	// DELETE of a parent keeps it as \Noselect; its child survives.
	appendMsg(t, c, "A/B", crlf(simpleMsg))
	if err := c.Delete("A/B").Wait(); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, c, "", "A/*", nil); !slices.Equal(got, []string{`A/B \HasChildren \Noselect`, `A/B/C \HasNoChildren`}) {
		t.Fatalf("after DELETE A/B: %q", got)
	}
	if _, err := c.Select("A/B", nil).Wait(); err == nil {
		t.Fatal("SELECT of a \\Noselect mailbox succeeded")
	}
	if err := c.Delete("A/B/C").Wait(); err != nil {
		t.Fatal(err)
	}

	// RENAME moves children along.
	if err := c.Create("P/Q", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, c, "P/Q", crlf(simpleMsg))
	if err := c.Rename("P", "X/Y", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, c, "", "X*", nil); !slices.Equal(got, []string{`X \HasChildren`, `X/Y \HasChildren`, `X/Y/Q \HasNoChildren`}) {
		t.Fatalf("after RENAME P X/Y: %q", got)
	}
	st, err := c.Status("X/Y/Q", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Fatalf("STATUS X/Y/Q: %+v %v", st, err)
	}

	// RENAME INBOX moves its messages and leaves INBOX empty.
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	if err := c.Rename("INBOX", "Old Inbox", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{"INBOX": 0, "Old Inbox": 2} {
		st, err := c.Status(name, &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil || *st.NumMessages != want {
			t.Errorf("STATUS %s: %+v %v, want %d messages", name, st, err, want)
		}
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t, envOptions{maxMessageSize: 12345})
	c := e.login(nil)
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	appendMsg(t, c, "INBOX", crlf(simpleMsg), imap.FlagSeen)
	appendMsg(t, c, "INBOX", crlf(simpleMsg), imap.FlagSeen, imap.FlagDeleted)
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true,
		NumUnseen: true, NumDeleted: true, Size: true, AppendLimit: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := e.st.MailboxByName(t.Context(), e.acc.ID, "INBOX")
	if *st.NumMessages != 3 || st.UIDNext != 4 || st.UIDValidity != mb.UIDValidity || *st.NumUnseen != 1 ||
		*st.NumDeleted != 1 || *st.Size != 3*int64(len(crlf(simpleMsg))) || st.AppendLimit == nil || *st.AppendLimit != 12345 {
		t.Fatalf("STATUS = %+v", st)
	}
}

func TestSelectExamine(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	appendMsg(t, c, "INBOX", crlf(simpleMsg), imap.FlagDeleted)
	data, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if data.NumMessages != 2 || data.UIDNext != 3 || len(data.PermanentFlags) != 0 {
		t.Fatalf("EXAMINE = %+v", data)
	}
	// Writes are refused in EXAMINE.
	err = c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
	if imapType(err) != imap.StatusResponseTypeNo {
		t.Fatalf("STORE in EXAMINE: %v", err)
	}
	if _, err := c.Expunge().Collect(); imapType(err) != imap.StatusResponseTypeNo {
		t.Fatalf("EXPUNGE in EXAMINE: %v", err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Archive").Wait(); imapType(err) != imap.StatusResponseTypeNo {
		t.Fatalf("MOVE in EXAMINE: %v", err)
	}
	// BODY[] does not set \Seen in EXAMINE.
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatal(msgs, err)
	}
	// CLOSE after EXAMINE expunges nothing.
	if err := c.UnselectAndExpunge().Wait(); err != nil {
		t.Fatal(err)
	}
	data, err = c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if data.NumMessages != 2 || !slices.Contains(data.PermanentFlags, imap.FlagWildcard) {
		t.Fatalf("SELECT = %+v", data)
	}
	msgs, err = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 || len(messageFlags(msgs[0].Flags)) != 0 {
		t.Fatalf("flags after EXAMINE fetch: %+v %v", msgs, err)
	}
	// CLOSE after SELECT expunges \Deleted silently.
	if err := c.UnselectAndExpunge().Wait(); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Fatalf("after CLOSE: %+v %v", st, err)
	}
	// UNSELECT does not expunge.
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	st, err = c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Fatalf("after UNSELECT: %+v %v", st, err)
	}
	if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect(); err == nil {
		t.Fatal("FETCH after UNSELECT succeeded")
	}
}

// TestDeleteSelected: deleting the mailbox this session has selected closes
// it and answers OK (as Dovecot does), rather than ending the session.
func TestDeleteSelected(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if err := c.Create("Doomed", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("Doomed", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("Doomed").Wait(); err != nil {
		t.Fatalf("DELETE of the selected mailbox: %v", err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("session after deleting its selected mailbox: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteRefusedKeepsSelection: a DELETE the server refuses (INBOX in
// any case, a missing mailbox, a \Noselect placeholder with children)
// leaves the selected mailbox selected, as the client believes it is:
// FETCH and STORE still work and changes still arrive.
func TestDeleteRefusedKeepsSelection(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	if err := c.Create("Parent/Child", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("Parent").Wait(); err != nil { // now a \Noselect placeholder
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name string
		code imap.ResponseCode
	}{
		{"INBOX", imap.ResponseCodeCannot},
		{"inbox", imap.ResponseCodeCannot},
		{"Nope", imap.ResponseCodeNonExistent},
		{"Parent", imap.ResponseCodeHasChildren},
	} {
		err := c.Delete(tc.name).Wait()
		if imapType(err) != imap.StatusResponseTypeNo || imapCode(err) != tc.code {
			t.Fatalf("DELETE %s: %v, want NO [%s]", tc.name, err, tc.code)
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true}).Collect()
		if err != nil || len(msgs) != 1 || msgs[0].UID != 1 {
			t.Fatalf("FETCH after DELETE %s: %v %v", tc.name, msgs, err)
		}
		if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
			Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
			t.Fatalf("STORE after DELETE %s: %v", tc.name, err)
		}
		// A store-level delivery reaches the session through LISTEN:
		// poll for it.
		e.deliver("INBOX", crlf(simpleMsg))
		want := uint32(i + 2)
		for deadline := time.Now().Add(10 * time.Second); c.Mailbox().NumMessages != want; {
			if time.Now().After(deadline) {
				t.Fatalf("after DELETE %s and a delivery: %d messages, want %d", tc.name, c.Mailbox().NumMessages, want)
			}
			time.Sleep(10 * time.Millisecond)
			if err := c.Noop().Wait(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestSelectResponses checks the untagged data of SELECT and EXAMINE on the
// wire: [UNSEEN n] numbered in the session's view for IMAP4rev1 clients,
// the LIST response instead for IMAP4rev2 ones, keywords in FLAGS and
// PERMANENTFLAGS, and the READ-WRITE / READ-ONLY codes.
func TestSelectResponses(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	appendMsg(t, c, "INBOX", crlf(simpleMsg), imap.FlagSeen, imap.FlagDeleted) // UID 1, expunged below
	appendMsg(t, c, "INBOX", crlf(simpleMsg), imap.FlagSeen)                   // UID 2
	appendMsg(t, c, "INBOX", crlf(simpleMsg), "$Label")                        // UID 3: first unseen
	appendMsg(t, c, "INBOX", crlf(simpleMsg), "Junk", "$Label")                // UID 4
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Quiet", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, c, "Quiet", crlf(simpleMsg), imap.FlagSeen)

	wantFlags := `* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label Junk)`
	wantPerm := `* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label Junk \*)] Permanent flags`
	r := e.raw()
	untagged, status := r.try("SELECT INBOX")
	for _, want := range []string{"* 3 EXISTS", "* 0 RECENT", "* OK [UNSEEN 2] First unseen message", wantFlags, wantPerm} {
		if !slices.Contains(untagged, want) {
			t.Errorf("SELECT INBOX: no %q in %q", want, untagged)
		}
	}
	if status != "OK [READ-WRITE] SELECT completed" {
		t.Errorf("SELECT INBOX: %q", status)
	}
	untagged, status = r.try("EXAMINE INBOX")
	for _, want := range []string{"* OK [UNSEEN 2] First unseen message", wantFlags, `* OK [PERMANENTFLAGS ()] Permanent flags`} {
		if !slices.Contains(untagged, want) {
			t.Errorf("EXAMINE INBOX: no %q in %q", want, untagged)
		}
	}
	if status != "OK [READ-ONLY] EXAMINE completed" {
		t.Errorf("EXAMINE INBOX: %q", status)
	}
	// Nothing unseen: no [UNSEEN]; no keywords: only the system flags.
	untagged = r.cmd("SELECT Quiet")
	for _, l := range untagged {
		if strings.Contains(l, "UNSEEN") {
			t.Errorf("SELECT Quiet: %q", l)
		}
	}
	if !slices.Contains(untagged, `* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`) {
		t.Errorf("SELECT Quiet: %q", untagged)
	}

	// IMAP4rev2: a LIST response, no [UNSEEN] nor RECENT; SEARCH answers
	// ESEARCH.
	if err := c.Create("INBOX/Sub", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	r2 := e.raw()
	if got := r2.cmd("ENABLE IMAP4rev2"); !slices.Equal(got, []string{"* ENABLED IMAP4rev2"}) {
		t.Fatalf("ENABLE IMAP4rev2: %q", got)
	}
	untagged = r2.cmd("SELECT inbox")
	if !slices.Contains(untagged, `* LIST (\HasChildren) "/" INBOX`) || !slices.Contains(untagged, wantFlags) {
		t.Errorf("SELECT inbox (IMAP4rev2): %q", untagged)
	}
	for _, l := range untagged {
		if strings.Contains(l, "UNSEEN") || strings.Contains(l, "RECENT") {
			t.Errorf("SELECT inbox (IMAP4rev2): %q", l)
		}
	}
	if got := r2.cmd("SEARCH UNSEEN"); len(got) != 1 || !strings.HasPrefix(got[0], "* ESEARCH (TAG ") || !strings.HasSuffix(got[0], ") ALL 2:3") {
		t.Errorf("SEARCH UNSEEN after ENABLE IMAP4rev2: %q", got)
	}
	if got := r2.cmd("UID SEARCH UNSEEN"); len(got) != 1 || !strings.HasSuffix(got[0], ") UID ALL 3:4") {
		t.Errorf("UID SEARCH UNSEEN after ENABLE IMAP4rev2: %q", got)
	}
	untagged = r2.cmd("SELECT Sent")
	if !slices.Contains(untagged, `* LIST (\HasNoChildren \Sent) "/" "Sent"`) {
		t.Errorf("SELECT Sent (IMAP4rev2): %q", untagged)
	}
}

// lsubLines runs LSUB and returns its responses sorted.
func lsubLines(t *testing.T, r *raw, ref, pattern string) []string {
	t.Helper()
	got := r.cmd(fmt.Sprintf("LSUB %q %q", ref, pattern))
	slices.Sort(got)
	return got
}

// TestSubscriptions: subscriptions are names kept apart from mailboxes (RFC
// 3501 §6.3.6/§6.3.9, as Dovecot keeps them): DELETE leaves them,
// UNSUBSCRIBE removes them even without a mailbox, RENAME moves those of
// the renamed hierarchy; LSUB flags an unsubscribed parent of a subscribed
// child \Noselect when "%" hides the child.
func TestSubscriptions(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	r := e.raw()
	if err := c.Create("Proj/A", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// CREATE subscribes nothing (as Dovecot): subscribe as a client would.
	if err := c.Subscribe("Proj/A").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Unsubscribe("Proj").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Unsubscribe("Drafts").Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := lsubLines(t, r, "", "%"), []string{
		`* LSUB (\HasNoChildren \Archive) "/" "Archive"`, `* LSUB (\HasNoChildren \Junk) "/" "Junk"`,
		`* LSUB (\HasNoChildren \Sent) "/" "Sent"`, `* LSUB (\HasNoChildren \Trash) "/" "Trash"`,
		`* LSUB (\HasNoChildren) "/" INBOX`, `* LSUB (\Noselect) "/" "Proj"`,
	}; !slices.Equal(got, want) {
		t.Errorf("LSUB \"\" %%:\n got %q\nwant %q", got, want)
	}
	if got, want := lsubLines(t, r, "", "Proj*"), []string{`* LSUB (\HasNoChildren) "/" "Proj/A"`}; !slices.Equal(got, want) {
		t.Errorf("LSUB \"\" Proj*: %q, want %q", got, want)
	}
	if got, want := lsubLines(t, r, "Proj/", "%"), []string{`* LSUB (\HasNoChildren) "/" "Proj/A"`}; !slices.Equal(got, want) {
		t.Errorf("LSUB Proj/ %%: %q, want %q", got, want)
	}
	// A successful SUBSCRIBE (twice is fine).
	for range 2 {
		if err := c.Subscribe("Drafts").Wait(); err != nil {
			t.Fatalf("SUBSCRIBE Drafts: %v", err)
		}
	}
	if got := listNames(t, c, "", "Drafts", &imap.ListOptions{ReturnSubscribed: true}); !slices.Equal(got, []string{`Drafts \Drafts \HasNoChildren \Subscribed`}) {
		t.Errorf("after SUBSCRIBE Drafts: %q", got)
	}

	// DELETE keeps the subscription: LIST (SUBSCRIBED) says \NonExistent,
	// LSUB \Noselect, plain LIST nothing.
	if err := c.Delete("Proj/A").Wait(); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, c, "", "Proj/*", &imap.ListOptions{SelectSubscribed: true}); !slices.Equal(got, []string{`Proj/A \NonExistent \Subscribed`}) {
		t.Errorf("LIST (SUBSCRIBED) after DELETE: %q", got)
	}
	if got := lsubLines(t, r, "", "Proj/*"); !slices.Equal(got, []string{`* LSUB (\Noselect) "/" "Proj/A"`}) {
		t.Errorf("LSUB after DELETE: %q", got)
	}
	if got := listNames(t, c, "", "Proj/*", nil); len(got) != 0 {
		t.Errorf("LIST after DELETE: %q", got)
	}
	// RECURSIVEMATCH: the existing, unsubscribed parent gets CHILDINFO.
	if got := listNames(t, c, "", "P%", &imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true}); !slices.Equal(got, []string{`Proj \HasNoChildren CHILDINFO`}) {
		t.Errorf("LIST (SUBSCRIBED RECURSIVEMATCH) P%%: %q", got)
	}
	// Re-creating the mailbox finds its subscription.
	if err := c.Create("Proj/A", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, c, "", "Proj/*", &imap.ListOptions{SelectSubscribed: true}); !slices.Equal(got, []string{`Proj/A \HasNoChildren \Subscribed`}) {
		t.Errorf("LIST (SUBSCRIBED) after re-CREATE: %q", got)
	}
	if err := c.Delete("Proj/A").Wait(); err != nil {
		t.Fatal(err)
	}
	// UNSUBSCRIBE works without the mailbox, once.
	if err := c.Unsubscribe("Proj/A").Wait(); err != nil {
		t.Fatalf("UNSUBSCRIBE of a deleted mailbox: %v", err)
	}
	if err := c.Unsubscribe("Proj/A").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Fatalf("second UNSUBSCRIBE: %v, want NO [NONEXISTENT]", err)
	}
	if got := listNames(t, c, "", "Proj*", &imap.ListOptions{SelectSubscribed: true}); len(got) != 0 {
		t.Errorf("LIST (SUBSCRIBED) Proj* after UNSUBSCRIBE: %q", got)
	}

	// RENAME moves the subscriptions of the hierarchy, leaving an
	// unsubscribed child unsubscribed; the parent it creates (New) is
	// not subscribed, as with CREATE.
	createMailboxes(t, c, "Old/Kept", "Old/Dropped")
	for _, n := range []string{"Old", "Old/Kept", "Old/Dropped"} {
		if err := c.Subscribe(n).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Unsubscribe("Old/Dropped").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename("Old", "New/Place", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := listNames(t, c, "", "*", &imap.ListOptions{SelectSubscribed: true}), []string{
		`Archive \Archive \HasNoChildren \Subscribed`, `Drafts \Drafts \HasNoChildren \Subscribed`,
		`INBOX \HasNoChildren \Subscribed`, `Junk \HasNoChildren \Junk \Subscribed`,
		`New/Place \HasChildren \Subscribed`, `New/Place/Kept \HasNoChildren \Subscribed`,
		`Sent \HasNoChildren \Sent \Subscribed`, `Trash \HasNoChildren \Subscribed \Trash`,
	}; !slices.Equal(got, want) {
		t.Errorf("LIST (SUBSCRIBED) after RENAME:\n got %q\nwant %q", got, want)
	}
}

// TestMailboxEdgeCases: DELETE of a \Noselect placeholder that still has
// children, and RENAME INBOX while another session has INBOX selected.
func TestMailboxEdgeCases(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if err := c.Create("Top/Child", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("Top").Wait(); err != nil {
		t.Fatalf("DELETE of a parent: %v", err)
	}
	if err := c.Delete("Top").Wait(); imapType(err) != imap.StatusResponseTypeNo || imapCode(err) != imap.ResponseCodeHasChildren {
		t.Fatalf("DELETE of a \\Noselect parent with children: %v, want NO [HASCHILDREN]", err)
	}
	if got := listNames(t, c, "", "Top*", nil); !slices.Equal(got, []string{`Top \HasChildren \Noselect`, `Top/Child \HasNoChildren`}) {
		t.Fatalf("after the refused DELETE: %q", got)
	}

	// Another session has INBOX selected; this one renames INBOX: the
	// messages move, so that session sees them expunged.
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	expunged := make(chan uint32, 10)
	other := e.login(&imapclient.UnilateralDataHandler{Expunge: func(seq uint32) { expunged <- seq }})
	if data, err := other.Select("INBOX", nil).Wait(); err != nil || data.NumMessages != 2 {
		t.Fatalf("SELECT INBOX: %+v %v", data, err)
	}
	if err := c.Rename("INBOX", "Before", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var got []uint32
	for len(got) < 2 && time.Now().Before(deadline) {
		if err := other.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
	drain:
		for {
			select {
			case seq := <-expunged:
				got = append(got, seq)
			default:
				break drain
			}
		}
	}
	if !slices.Equal(got, []uint32{2, 1}) || other.Mailbox().NumMessages != 0 {
		t.Fatalf("the other session saw EXPUNGE %v and has %d messages, want 2 1 and none", got, other.Mailbox().NumMessages)
	}
	st, err := other.Status("Before", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 2 {
		t.Fatalf("STATUS Before: %+v %v", st, err)
	}
	// The session carries on in the (now empty) INBOX.
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	if err := other.Noop().Wait(); err != nil || other.Mailbox().NumMessages != 1 {
		t.Fatalf("INBOX after RENAME: %d messages, %v", other.Mailbox().NumMessages, err)
	}
}

// TestMailboxNameNotUTF8: a mailbox name that is not UTF-8 (8-bit bytes
// that are not UTF-8, with or without UTF8=ACCEPT) names no mailbox: every
// command taking one answers NO, never NO [SERVERBUG] (PostgreSQL refuses
// such text), and nothing changes. APPEND to a name no mailbox can have
// is NO [CANNOT], not TRYCREATE.
func TestMailboxNameNotUTF8(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("INBOX", crlf(simpleMsg))
	const name = "\"a\xff\""
	cmds := []string{
		"SELECT " + name,
		"EXAMINE " + name,
		"STATUS " + name + " (MESSAGES)",
		"DELETE " + name,
		"RENAME " + name + " x",
		"RENAME Trash " + name,
		"CREATE " + name,
		"SUBSCRIBE " + name,
		"UNSUBSCRIBE " + name,
		"GETMETADATA " + name + " /private/comment",
		"SETMETADATA " + name + " (/private/comment \"x\")",
		"APPEND " + name + " {1+}\r\nx",
		"APPEND \"a//b\" {1+}\r\nx",
		"APPEND \"a//b\" {1}\r\n",
		"COPY 1 " + name,
		"MOVE 1 " + name,
	}
	for _, mode := range []string{"", "UTF8=ACCEPT"} {
		r := e.raw()
		r.t = t
		if mode != "" {
			r.cmd("ENABLE " + mode)
		}
		for _, c := range cmds {
			if strings.HasSuffix(c, "1 "+name) {
				r.cmd("SELECT INBOX")
			}
			_, status := r.try(c)
			// Nor TRYCREATE: CREATE would fail.
			if !strings.HasPrefix(status, "NO") || strings.Contains(status, "SERVERBUG") || strings.Contains(status, "TRYCREATE") {
				t.Errorf("%s %q: %q, want NO", mode, c, status)
			}
		}
	}
	c := e.login(nil)
	if got := listNames(t, c, "", "*", nil); len(got) != 6 {
		t.Errorf("mailboxes after: %q", got)
	}
	if st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 1 {
		t.Errorf("INBOX after: %+v %v", st, err)
	}
}

// TestMailboxNameTooLong: CREATE and RENAME refuse (NO, not NO
// [SERVERBUG]) a name longer than store.MaxMailboxName octets, also one a
// RENAME would give a mailbox below the renamed one; PostgreSQL's indexes
// could not hold a long name that does not compress. Nothing changes.
func TestMailboxNameTooLong(t *testing.T) {
	e := newEnv(t, envOptions{})
	long := func(n int) string {
		var b strings.Builder
		for i := 0; b.Len() < n; i++ {
			fmt.Fprintf(&b, "%x", i*2654435761) // varied, so it does not compress
		}
		return b.String()[:n]
	}
	r := e.raw()
	r.cmd("CREATE " + long(store.MaxMailboxName))
	r.cmd("CREATE p/" + long(store.MaxMailboxName-2))
	tests := []struct{ cmd, status string }{
		{"CREATE " + long(store.MaxMailboxName+1), "NO [CANNOT]"},
		{"CREATE " + long(3000), "NO [CANNOT]"},
		{"CREATE " + long(20000), "NO [CANNOT]"},
		{"CREATE " + long(3000) + "/x", "NO [CANNOT]"},
		{"RENAME Trash " + long(3000), "NO [CANNOT]"},
		{"RENAME p pq", "NO [CANNOT]"}, // p/… would pass the limit
		{"RENAME INBOX " + long(3000), "NO [CANNOT]"},
		{"RENAME p q", "OK"},
	}
	for _, tc := range tests {
		if _, status := r.try(tc.cmd); !strings.HasPrefix(status, tc.status) {
			t.Errorf("%.40s…: %q, want %s", tc.cmd, status, tc.status)
		}
	}
	c := e.login(nil)
	if got := listNames(t, c, "", "*", nil); len(got) != 9 || !slices.Contains(got, "q/"+long(store.MaxMailboxName-2)+` \HasNoChildren`) {
		t.Errorf("mailboxes after: %.300q", got)
	}
}
