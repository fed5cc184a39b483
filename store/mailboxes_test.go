package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

// TestSubscriptions: subscriptions are names of their own (migration 0004):
// made only by SUBSCRIBE (and for a new account's default mailboxes), kept
// on DELETE, moved by RENAME, removable without a mailbox, and never shared
// between accounts with the same mailbox names.
func TestSubscriptions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	subs := func(acc *store.Account) []string {
		t.Helper()
		got, err := f.st.Subscriptions(ctx, acc.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	defaults := subs(f.a)
	if !slices.Contains(defaults, "INBOX") || !slices.Equal(defaults, subs(f.b)) {
		t.Fatalf("default subscriptions: %q and %q", defaults, subs(f.b))
	}
	for _, acc := range []*store.Account{f.a, f.b} {
		if _, err := f.st.CreateMailbox(ctx, acc.ID, "Club/News", ""); err != nil {
			t.Fatal(err)
		}
	}
	with := func(names ...string) []string {
		return slices.Sorted(slices.Values(append(slices.Clone(defaults), names...)))
	}
	// CREATE subscribes neither the mailbox nor the parent it makes, as in
	// Dovecot (an earlier version subscribed both; imaptest's subscribe and
	// listext scripts expect LSUB to show only what was subscribed).
	if got := subs(f.a); !slices.Equal(got, defaults) {
		t.Fatalf("after CREATE Club/News: %q", got)
	}
	subscribe := func(acc *store.Account, names ...string) {
		t.Helper()
		for _, n := range names {
			if err := f.st.SetSubscribed(ctx, acc.ID, n, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	subscribe(f.a, "Club", "Club/News")
	subscribe(f.b, "Club", "Club/News")

	// Alice's changes leave Bob's subscriptions alone.
	if err := f.st.SetSubscribed(ctx, f.a.ID, "Club", false); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DeleteMailbox(ctx, f.a.ID, "Club/News"); err != nil {
		t.Fatal(err)
	}
	if got := subs(f.a); !slices.Equal(got, with("Club/News")) {
		t.Fatalf("DELETE must keep the subscription: %q", got)
	}
	if err := f.st.SetSubscribed(ctx, f.a.ID, "Club/News", true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SUBSCRIBE of a missing mailbox: %v", err)
	}
	if err := f.st.SetSubscribed(ctx, f.a.ID, "Club/News", false); err != nil {
		t.Fatalf("UNSUBSCRIBE of a deleted mailbox: %v", err)
	}
	if err := f.st.SetSubscribed(ctx, f.a.ID, "Club/News", false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UNSUBSCRIBE of nothing: %v", err)
	}
	if err := f.st.SetSubscribed(ctx, f.a.ID, "Club", false); err != nil {
		t.Fatalf("UNSUBSCRIBE of an existing, unsubscribed mailbox: %v", err)
	}
	if got := subs(f.b); !slices.Equal(got, with("Club", "Club/News")) {
		t.Fatalf("Bob's subscriptions changed: %q", got)
	}

	// RENAME moves the hierarchy's subscriptions (not the unsubscribed
	// parent's, nor a sibling's with the same prefix), without duplicating
	// one already held under the new name.
	for _, n := range []string{"Club/News", "Clubhouse"} {
		if _, err := f.st.CreateMailbox(ctx, f.a.ID, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Society", ""); err != nil {
		t.Fatal(err)
	}
	subscribe(f.a, "Club/News", "Clubhouse", "Society")
	if err := f.st.DeleteMailbox(ctx, f.a.ID, "Society"); err != nil { // leaves "Society" subscribed
		t.Fatal(err)
	}
	if err := f.st.RenameMailbox(ctx, f.a.ID, "Club", "Society"); err != nil {
		t.Fatal(err)
	}
	if got := subs(f.a); !slices.Equal(got, with("Clubhouse", "Society", "Society/News")) {
		t.Fatalf("after RENAME Club Society: %q", got)
	}
	if got := subs(f.b); !slices.Equal(got, with("Club", "Club/News")) {
		t.Fatalf("Bob's subscriptions changed by Alice's RENAME: %q", got)
	}
	// A parent RENAME creates is not subscribed either; the renamed
	// mailbox's subscription moves.
	if err := f.st.RenameMailbox(ctx, f.a.ID, "Clubhouse", "Old/Clubhouse"); err != nil {
		t.Fatal(err)
	}
	if got := subs(f.a); !slices.Equal(got, with("Old/Clubhouse", "Society", "Society/News")) {
		t.Fatalf("after RENAME Clubhouse Old/Clubhouse: %q", got)
	}
	// RENAME INBOX leaves INBOX subscribed and subscribes the new mailbox.
	if err := f.st.RenameMailbox(ctx, f.a.ID, "INBOX", "Saved"); err != nil {
		t.Fatal(err)
	}
	if got := subs(f.a); !slices.Contains(got, "INBOX") || !slices.Contains(got, "Saved") {
		t.Fatalf("after RENAME INBOX: %q", got)
	}
}

// TestMailboxKeywords: the mailbox's keyword list follows every way a
// keyword reaches a message (APPEND, a delivery to several mailboxes,
// STORE adding or replacing, COPY, MOVE, RENAME INBOX, bulk load), only
// grows, is not touched by writes without new keywords, and starts empty
// again when a mailbox is re-created. Only SELECT's read returns it.
func TestMailboxKeywords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	kw := func(acc *store.Account, name string) []string {
		t.Helper()
		snap, err := f.st.SelectMailboxByName(ctx, acc.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		return snap.Mailbox.Keywords
	}
	want := func(step, name string, keywords ...string) {
		t.Helper()
		if got := kw(f.a, name); !slices.Equal(got, keywords) {
			t.Fatalf("%s: %s has keywords %q, want %q", step, name, got, keywords)
		}
	}
	spool := func(i int) *store.Spooled {
		t.Helper()
		sp, err := store.Spool(strings.NewReader(testMessage(i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sp.Close() })
		return sp
	}
	all := []store.UIDRange{{Start: 1, Stop: 0}}
	inbox := f.mailbox(t, f.a, "INBOX")
	arch := f.mailbox(t, f.a, "Archive")
	for _, name := range []string{"Moved", "Multi"} {
		if _, err := f.st.CreateMailbox(ctx, f.a.ID, name, ""); err != nil {
			t.Fatal(err)
		}
	}
	moved, multi := f.mailbox(t, f.a, "Moved"), f.mailbox(t, f.a, "Multi")

	steps := []struct {
		name string
		run  func() error
		box  string
		want []string
	}{
		{"APPEND without keywords", func() error {
			_, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(1)), 0, []string{`\Seen`}, time.Time{})
			return err
		}, "INBOX", nil},
		{"APPEND with $Work", func() error {
			_, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(2)), 0, []string{"$Work", `\Flagged`}, time.Time{})
			return err
		}, "INBOX", []string{"$Work"}},
		{"APPEND of a known keyword", func() error {
			_, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(3)), 0, []string{"$Work"}, time.Time{})
			return err
		}, "INBOX", []string{"$Work"}},
		{"STORE +FLAGS", func() error {
			_, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, all, store.FlagsAdd, []string{"Junk", "$Later"})
			return err
		}, "INBOX", []string{"$Later", "$Work", "Junk"}},
		{"STORE -FLAGS keeps the list", func() error {
			_, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, all, store.FlagsRemove, []string{"Junk", "$Work"})
			return err
		}, "INBOX", []string{"$Later", "$Work", "Junk"}},
		{"STORE +FLAGS \\Seen", func() error {
			_, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, all, store.FlagsAdd, []string{`\Seen`})
			return err
		}, "INBOX", []string{"$Later", "$Work", "Junk"}},
		{"STORE FLAGS", func() error {
			_, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 3, Stop: 3}}, store.FlagsReplace, []string{"Replaced", `\Seen`})
			return err
		}, "INBOX", []string{"$Later", "$Work", "Junk", "Replaced"}},
		{"COPY", func() error {
			_, err := f.st.Copy(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 1, Stop: 2}}, arch.ID)
			return err
		}, "Archive", []string{"$Later"}},
		{"bulk load", func() error {
			_, err := f.st.BulkAppend(ctx, f.a.ID, arch.ID, []*store.Spooled{spool(4), spool(5), spool(6)},
				[][]string{{"Imported"}, nil, {"$Later", "Batch"}}, nil)
			return err
		}, "Archive", []string{"$Later", "Batch", "Imported"}},
		{"MOVE", func() error {
			_, err := f.st.Move(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 3, Stop: 3}}, moved.ID)
			return err
		}, "Moved", []string{"Replaced"}},
		{"delivery to two mailboxes", func() error {
			_, err := f.st.Deliver(ctx, spool(7), []store.Target{
				{AccountID: f.a.ID, MailboxID: multi.ID, Flags: []string{"$Both"}},
				{AccountID: f.a.ID, MailboxID: moved.ID, Flags: []string{"$Both", "$Second"}},
			})
			return err
		}, "Multi", []string{"$Both"}},
		{"delivery to two mailboxes, the other", func() error { return nil }, "Moved", []string{"$Both", "$Second", "Replaced"}},
		{"RENAME INBOX", func() error { return f.st.RenameMailbox(ctx, f.a.ID, "INBOX", "Old") }, "Old", []string{"$Later"}},
		{"RENAME INBOX leaves INBOX's list", func() error { return nil }, "INBOX", []string{"$Later", "$Work", "Junk", "Replaced"}},
	}
	for _, st := range steps {
		if err := st.run(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want(st.name, st.box, st.want...)
	}
	if got := kw(f.b, "INBOX"); len(got) != 0 {
		t.Fatalf("Bob's INBOX has keywords %q", got)
	}
	if got := f.mailbox(t, f.a, "INBOX").Keywords; got != nil {
		t.Fatalf("MailboxByName read the keyword list %q; only SELECT needs it", got)
	}

	// A mailbox deleted into a \Noselect placeholder and re-created starts
	// without keywords.
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Box/Child", ""); err != nil {
		t.Fatal(err)
	}
	parent := f.mailbox(t, f.a, "Box")
	if _, err := f.st.Append(ctx, f.a.ID, parent.ID, strings.NewReader(testMessage(8)), 0, []string{"Old"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	want("APPEND to Box", "Box", "Old")
	if err := f.st.DeleteMailbox(ctx, f.a.ID, "Box"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Box", ""); err != nil {
		t.Fatal(err)
	}
	want("re-created", "Box")
}

// TestSelectMailboxByName: SELECT's one read gives the mailbox with its
// keywords, every UID in order, the first unseen UID and whether the
// mailbox has children, all of the asking account's mailbox only.
func TestSelectMailboxByName(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	for i, flags := range [][]string{{`\Seen`}, {`\Seen`, "$Work"}, nil, nil} {
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, flags, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 1, Stop: 1}}, store.FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Parent/Child", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Placeholder/Child", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DeleteMailbox(ctx, f.a.ID, "Placeholder"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		acc         *store.Account
		name        string
		err         error
		uids        []uint32
		firstUnseen uint32
		children    bool
		keywords    []string
	}{
		{f.a, "inbox", nil, []uint32{2, 3, 4}, 3, false, []string{"$Work"}},
		{f.a, "Parent", nil, nil, 0, true, nil},
		{f.a, "Parent/Child", nil, nil, 0, false, nil},
		{f.a, "Placeholder", store.ErrNoSelect, nil, 0, false, nil},
		{f.a, "Nope", store.ErrNotFound, nil, 0, false, nil},
		{f.b, "INBOX", nil, nil, 0, false, nil},
		{f.b, "Parent", store.ErrNotFound, nil, 0, false, nil},
	}
	for _, tc := range tests {
		snap, err := f.st.SelectMailboxByName(ctx, tc.acc.ID, tc.name)
		if tc.err != nil || err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s %s: %v, want %v", tc.acc.Address, tc.name, err, tc.err)
			}
			continue
		}
		mb := snap.Mailbox
		if mb.AccountID != tc.acc.ID || !strings.EqualFold(mb.Name, tc.name) || !slices.Equal(snap.UIDs, tc.uids) ||
			snap.FirstUnseen != tc.firstUnseen || snap.HasChildren != tc.children || !slices.Equal(mb.Keywords, tc.keywords) ||
			mb.Messages != int64(len(tc.uids)) {
			t.Errorf("%s %s: account %d %s, UIDs %v, first unseen %d, children %v, keywords %q, %d messages",
				tc.acc.Address, tc.name, mb.AccountID, mb.Name, snap.UIDs, snap.FirstUnseen, snap.HasChildren, mb.Keywords, mb.Messages)
		}
	}
}

// TestFirstUnseenUID: the lowest UID without \Seen, 0 when all are seen.
func TestFirstUnseenUID(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	first := func() uint32 {
		t.Helper()
		uid, err := f.st.FirstUnseenUID(ctx, f.a.ID, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		return uid
	}
	if got := first(); got != 0 {
		t.Fatalf("empty mailbox: %d", got)
	}
	for i, flags := range [][]string{{`\Seen`}, nil, nil} {
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, flags, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := first(); got != 2 {
		t.Fatalf("first unseen = %d, want 2", got)
	}
	// Another account's mailbox id gives nothing.
	if uid, err := f.st.FirstUnseenUID(ctx, f.b.ID, inbox.ID); err != nil || uid != 0 {
		t.Fatalf("Bob on Alice's INBOX: %d %v", uid, err)
	}
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 1, Stop: 0}}, store.FlagsAdd, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	if got := first(); got != 0 {
		t.Fatalf("all seen: %d", got)
	}
}

// TestSelectSnapshotUIDs: SELECT's UIDs come from the tombstones when they
// account for every UID below UIDNEXT, and from the live rows when they
// do not (a tombstone lost: the same UIDs either way).
func TestSelectSnapshotUIDs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	st, acc := f.st, f.a
	mb, err := st.CreateMailbox(ctx, acc.ID, "Holes", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if _, err := st.Append(ctx, acc.ID, mb.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	gone := []store.UIDRange{{Start: 2, Stop: 2}, {Start: 5, Stop: 6}, {Start: 12, Stop: 12}}
	if _, err := st.StoreFlags(ctx, acc.ID, mb.ID, gone, store.FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Expunge(ctx, acc.ID, mb.ID, gone); err != nil {
		t.Fatal(err)
	}
	want := []uint32{1, 3, 4, 7, 8, 9, 10, 11}
	check := func(what string) {
		t.Helper()
		snap, err := st.SelectMailboxByName(ctx, acc.ID, "Holes")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(snap.UIDs, want) || snap.Mailbox.Messages != int64(len(want)) {
			t.Fatalf("%s: UIDs %v (%d messages), want %v", what, snap.UIDs, snap.Mailbox.Messages, want)
		}
	}
	check("from the tombstones")
	conn, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DELETE FROM expunged WHERE mailbox_id = $1 AND uid = 5`, mb.ID); err != nil {
		t.Fatal(err)
	}
	check("from the live rows, a tombstone gone")
}
