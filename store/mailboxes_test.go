package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// TestSubscriptions: subscriptions are names of their own (migration 0004):
// kept on DELETE, moved by RENAME, removable without a mailbox, and never
// shared between accounts with the same mailbox names.
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
	if got := subs(f.a); !slices.Equal(got, with("Club", "Club/News")) {
		t.Fatalf("after CREATE Club/News: %q", got)
	}

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
	// RENAME INBOX leaves INBOX subscribed and subscribes the new mailbox.
	if err := f.st.RenameMailbox(ctx, f.a.ID, "INBOX", "Saved"); err != nil {
		t.Fatal(err)
	}
	if got := subs(f.a); !slices.Contains(got, "INBOX") || !slices.Contains(got, "Saved") {
		t.Fatalf("after RENAME INBOX: %q", got)
	}
}

// TestMailboxKeywords: the mailbox's keyword list follows every way a
// keyword reaches a message (APPEND, STORE, COPY, bulk load), only grows,
// and starts empty again when a mailbox is re-created.
func TestMailboxKeywords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	kw := func(name string) []string {
		t.Helper()
		return f.mailbox(t, f.a, name).Keywords
	}
	inbox := f.mailbox(t, f.a, "INBOX")
	if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(1)), 0, []string{`\Seen`}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := kw("INBOX"); len(got) != 0 {
		t.Fatalf("keywords without any: %q", got)
	}
	if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(2)), 0, []string{"$Work", `\Flagged`}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := kw("INBOX"); !slices.Equal(got, []string{"$Work"}) {
		t.Fatalf("after APPEND with $Work: %q", got)
	}
	uids := []store.UIDRange{{Start: 1, Stop: 0}}
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, uids, store.FlagsAdd, []string{"Junk", "$Later"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, uids, store.FlagsRemove, []string{"Junk", "$Work"}); err != nil {
		t.Fatal(err)
	}
	if got := kw("INBOX"); !slices.Equal(got, []string{"$Later", "$Work", "Junk"}) {
		t.Fatalf("after STORE: %q", got)
	}
	arch := f.mailbox(t, f.a, "Archive")
	if _, err := f.st.Copy(ctx, f.a.ID, inbox.ID, uids, arch.ID); err != nil {
		t.Fatal(err)
	}
	if got := kw("Archive"); !slices.Equal(got, []string{"$Later"}) {
		t.Fatalf("after COPY: %q", got)
	}
	sp, err := store.Spool(strings.NewReader(testMessage(3)), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, err := f.st.BulkAppend(ctx, f.a.ID, arch.ID, []*store.Spooled{sp}, [][]string{{"Imported"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := kw("Archive"); !slices.Equal(got, []string{"$Later", "Imported"}) {
		t.Fatalf("after a bulk load: %q", got)
	}
	if got := f.mailbox(t, f.b, "INBOX").Keywords; len(got) != 0 {
		t.Fatalf("Bob's INBOX has keywords %q", got)
	}

	// A mailbox deleted into a \Noselect placeholder and re-created starts
	// without keywords.
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Box/Child", ""); err != nil {
		t.Fatal(err)
	}
	parent := f.mailbox(t, f.a, "Box")
	if _, err := f.st.Append(ctx, f.a.ID, parent.ID, strings.NewReader(testMessage(4)), 0, []string{"Old"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DeleteMailbox(ctx, f.a.ID, "Box"); err != nil {
		t.Fatal(err)
	}
	if got := kw("Box"); len(got) != 0 {
		t.Fatalf("placeholder keywords: %q", got)
	}
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Box", ""); err != nil {
		t.Fatal(err)
	}
	if got := kw("Box"); len(got) != 0 {
		t.Fatalf("re-created mailbox keywords: %q", got)
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
