package imapd

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
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
	if len(lsub) != 6 || !slices.Contains(lsub, `* LSUB (\HasNoChildren \Subscribed) "/" "Lists/Go"`) {
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
	if err != nil || len(msgs) != 1 || len(msgs[0].Flags) != 0 {
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
