package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// TestMetadata: METADATA entries (migration 0009) of an account and of its
// mailboxes: set, replace, delete, depth selection, MAXSIZE, the limits
// (all or nothing), isolation between accounts, and that a mailbox's
// entries go with it when it is deleted (or left \Noselect) and move with
// it on RENAME.
func TestMetadata(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	names := func(acc *store.Account, mailboxID int64, q store.MetadataQuery) string {
		t.Helper()
		got, err := f.st.Metadata(ctx, acc.ID, mailboxID, q)
		if err != nil {
			t.Fatal(err)
		}
		var l []string
		for _, e := range got {
			if e.Value == nil {
				l = append(l, fmt.Sprintf("%s:(%d)", e.Name, e.Size))
			} else {
				l = append(l, e.Name+":"+string(e.Value))
			}
		}
		return strings.Join(l, " ")
	}
	set := func(acc *store.Account, mailboxID int64, kv ...string) error {
		var es []store.MetadataEntry
		for i := 0; i < len(kv); i += 2 {
			e := store.MetadataEntry{Name: kv[i]}
			if kv[i+1] != "<nil>" {
				e.Value = []byte(kv[i+1])
			}
			es = append(es, e)
		}
		return f.st.SetMetadata(ctx, acc.ID, mailboxID, es)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	work, err := f.st.CreateMailbox(ctx, f.a.ID, "Work", "")
	must(err)
	must(set(f.a, 0, "/private/a", "1", "/private/a/b", "2", "/private/a/b/c", "3", "/shared/a", "s", "/private/a", "1x"))
	must(set(f.a, work.ID, "/private/comment", "work", "/shared/comment", "team"))
	all := store.MetadataQuery{Names: []string{"/private", "/shared"}, Depth: -1, MaxSize: -1}
	for _, c := range []struct {
		q    store.MetadataQuery
		want string
	}{
		{all, "/private/a:1x /private/a/b:2 /private/a/b/c:3 /shared/a:s"},
		{store.MetadataQuery{Names: []string{"/private/a"}, MaxSize: -1}, "/private/a:1x"},
		{store.MetadataQuery{Names: []string{"/private/a"}, Depth: 1, MaxSize: -1}, "/private/a:1x /private/a/b:2"},
		{store.MetadataQuery{Names: []string{"/private/a", "/shared/a"}, Depth: -1, MaxSize: 1}, "/private/a:(2) /private/a/b:2 /private/a/b/c:3 /shared/a:s"},
		{store.MetadataQuery{Names: []string{"/private/nothing"}, MaxSize: -1}, ""},
	} {
		if got := names(f.a, 0, c.q); got != c.want {
			t.Errorf("%+v: %q, want %q", c.q, got, c.want)
		}
	}
	if got := names(f.a, work.ID, all); got != "/private/comment:work /shared/comment:team" {
		t.Errorf("mailbox entries: %q", got)
	}
	// Account b sees nothing of a's and cannot write to a's mailbox.
	if got := names(f.b, 0, all) + names(f.b, work.ID, all); got != "" {
		t.Errorf("account b sees %q", got)
	}
	if err := set(f.b, work.ID, "/private/x", "y"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b sets a's mailbox: %v", err)
	}
	// Delete with nil; deleting what is not there is no error.
	must(set(f.a, 0, "/private/a/b/c", "<nil>", "/private/none", "<nil>"))
	if got := names(f.a, 0, all); got != "/private/a:1x /private/a/b:2 /shared/a:s" {
		t.Errorf("after delete: %q", got)
	}
	// RENAME keeps them; DELETE drops them, with children too (\Noselect).
	must(f.st.RenameMailbox(ctx, f.a.ID, "Work", "Job"))
	if got := names(f.a, work.ID, all); got != "/private/comment:work /shared/comment:team" {
		t.Errorf("after rename: %q", got)
	}
	if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Job/Sub", ""); err != nil {
		t.Fatal(err)
	}
	must(f.st.DeleteMailbox(ctx, f.a.ID, "Job"))
	if got := names(f.a, work.ID, all); got != "" {
		t.Errorf("after delete (\\Noselect): %q", got)
	}
	sub := f.mailbox(t, f.a, "Job/Sub")
	must(set(f.a, sub.ID, "/private/x", "y"))
	must(f.st.DeleteMailbox(ctx, f.a.ID, "Job/Sub"))
	if got := names(f.a, sub.ID, all); got != "" {
		t.Errorf("after delete: %q", got)
	}
	if err := set(f.a, sub.ID, "/private/x", "y"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("set on a deleted mailbox: %v", err)
	}

	// Limits: the count, then the total size; a refused command leaves
	// nothing behind.
	var kv []string
	for i := range store.MaxMetadataEntries - 3 { // 3 are there
		kv = append(kv, fmt.Sprintf("/private/n/%d", i), "v")
	}
	must(set(f.a, 0, kv...))
	if err := set(f.a, 0, "/private/one-too-many", "v", "/private/a", "changed"); !errors.Is(err, store.ErrMetadataFull) {
		t.Fatalf("entry %d: %v", store.MaxMetadataEntries+1, err)
	}
	if got := names(f.a, 0, store.MetadataQuery{Names: []string{"/private/a"}, MaxSize: -1}); got != "/private/a:1x" {
		t.Errorf("after a refused set: %q", got)
	}
	must(set(f.a, 0, "/private/a", strings.Repeat("x", store.MaxMetadataValue))) // a replacement is no new entry
	for i := range kv {
		if kv[i] == "v" {
			kv[i] = "<nil>"
		}
	}
	must(set(f.a, 0, kv...))
	big := strings.Repeat("y", store.MaxMetadataValue)
	var bigs []string
	for i := range store.MaxMetadataTotal / store.MaxMetadataValue {
		bigs = append(bigs, fmt.Sprintf("/private/big/%d", i), big)
	}
	if err := set(f.a, 0, bigs...); !errors.Is(err, store.ErrMetadataFull) {
		t.Fatalf("over the total size: %v", err)
	}
	must(set(f.b, 0, bigs[2:]...)) // another account has its own room
}

// MetadataQuery.Matches, for entries that are not stored, selects what
// Metadata selects of stored ones.
func TestMetadataMatchesAgrees(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	stored := []string{"/private/a", "/private/a/b", "/private/a/b/c", "/private/ab", "/private/a/", "/shared/a", "/private"}
	var es []store.MetadataEntry
	for _, n := range stored {
		es = append(es, store.MetadataEntry{Name: n, Value: []byte("v")})
	}
	if err := f.st.SetMetadata(ctx, f.a.ID, 0, es); err != nil {
		t.Fatal(err)
	}
	for _, names := range [][]string{{"/private/a"}, {"/private"}, {"/private/a", "/shared"}, {"/private/a/b/c"}, {"/nothing"}} {
		for _, depth := range []int{0, 1, -1} {
			q := store.MetadataQuery{Names: names, Depth: depth, MaxSize: -1}
			got, err := f.st.Metadata(ctx, f.a.ID, 0, q)
			if err != nil {
				t.Fatal(err)
			}
			var sql, goes []string
			for _, e := range got {
				sql = append(sql, e.Name)
			}
			for _, n := range stored {
				if q.Matches(n) {
					goes = append(goes, n)
				}
			}
			slices.Sort(goes)
			if !slices.Equal(sql, goes) {
				t.Errorf("%v depth %d: Metadata %q, Matches %q", names, depth, sql, goes)
			}
		}
	}
}

// TestQuotaUsage: Quota sums the account's mailboxes in one query;
// DeletedSize is what an EXPUNGE frees.
func TestQuotaUsage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	work, err := f.st.CreateMailbox(ctx, f.a.ID, "Work", "")
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for i, mb := range []*store.Mailbox{inbox, work, work} {
		msg := testMessage(i)
		var flags []string
		if i == 2 {
			flags = []string{store.FlagDeleted}
		}
		if _, err := f.st.Append(ctx, f.a.ID, mb.ID, strings.NewReader(msg), 0, flags, time.Time{}); err != nil {
			t.Fatal(err)
		}
		size += int64(len(msg))
	}
	q, err := f.st.Quota(ctx, f.a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if q != (store.QuotaUsage{LimitBytes: 0, UsedBytes: size, Messages: 3}) {
		t.Errorf("quota: %+v, want %d bytes in 3 messages", q, size)
	}
	if q, err := f.st.Quota(ctx, f.b.ID); err != nil || q != (store.QuotaUsage{}) {
		t.Errorf("b's quota: %+v, %v", q, err)
	}
	del, err := f.st.DeletedSize(ctx, f.a.ID, work.ID)
	if want := int64(len(testMessage(2))); err != nil || del != want {
		t.Errorf("deleted size: %d, %v; want %d", del, err, want)
	}
	if del, err := f.st.DeletedSize(ctx, f.b.ID, work.ID); err != nil || del != 0 {
		t.Errorf("b asks for a's mailbox: %d, %v", del, err)
	}
}
