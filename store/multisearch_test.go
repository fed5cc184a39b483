package store_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// TestSearchMailboxes checks the many-mailbox search against Search of each
// mailbox, for criteria SQL decides, the text index decides and only the
// scan decides, before and after indexing, and that another account's
// mailbox given by id yields nothing.
func TestSearchMailboxes(t *testing.T) {
	const flagged = `\Flagged`
	f := newFixture(t)
	ctx := context.Background()
	msg := func(subject, body string) string {
		return "From: a@example.com\r\nTo: alice@example.org\r\nSubject: " + subject +
			"\r\nDate: Mon, 6 May 2024 07:08:09 +0000\r\n\r\n" + body + "\r\n"
	}
	put := func(mb *store.Mailbox, acc *store.Account, subject, body string, flags ...string) {
		t.Helper()
		if _, err := f.st.Append(ctx, acc.ID, mb.ID, strings.NewReader(msg(subject, body)), 0, flags, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	inbox, work, empty := f.mailbox(t, f.a, "INBOX"), f.mailbox(t, f.a, "Archive"), f.mailbox(t, f.a, "Trash")
	bobInbox := f.mailbox(t, f.b, "INBOX")
	put(inbox, f.a, "budget", "quarterly budget", flagged)       // 1
	put(inbox, f.a, "lunch", "sandwiches")                       // 2
	put(inbox, f.a, "again", "the budget again", store.FlagSeen) // 3
	put(work, f.a, "plans", "budget plans", flagged)             // 1
	put(work, f.a, "other", "nothing")                           // 2
	put(bobInbox, f.b, "budget", "bob's budget", flagged)

	ids := []int64{inbox.ID, work.ID, empty.ID, bobInbox.ID}
	tests := []struct {
		name string
		c    store.SearchCriteria
		want map[int64][]uint32
	}{
		{"flag (SQL)", store.SearchCriteria{Flag: []string{flagged}},
			map[int64][]uint32{inbox.ID: {1}, work.ID: {1}}},
		{"all", store.SearchCriteria{}, map[int64][]uint32{inbox.ID: {1, 2, 3}, work.ID: {1, 2}}},
		{"body (index or scan)", store.SearchCriteria{Body: []string{"BUDGET"}},
			map[int64][]uint32{inbox.ID: {1, 3}, work.ID: {1}}},
		{"body and not seen", store.SearchCriteria{Body: []string{"budget"}, NotFlag: []string{store.FlagSeen}},
			map[int64][]uint32{inbox.ID: {1}, work.ID: {1}}},
		{"or of text and flag", store.SearchCriteria{Or: [][2]store.SearchCriteria{{
			{Text: []string{"sandwiches"}}, {Flag: []string{flagged}}}}},
			map[int64][]uint32{inbox.ID: {1, 2}, work.ID: {1}}},
		{"sent date (scan only)", store.SearchCriteria{SentSince: time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC), Body: []string{"plans"}},
			map[int64][]uint32{work.ID: {1}}},
		{"no match", store.SearchCriteria{Body: []string{"absent"}}, map[int64][]uint32{}},
	}
	for _, mode := range []string{"scan", "index"} {
		if mode == "index" {
			indexAll(t, f.st)
		}
		for _, tc := range tests {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				got, err := f.st.SearchMailboxes(ctx, f.a.ID, ids, &tc.c)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
				// The same as Search, mailbox by mailbox.
				for _, id := range ids[:3] {
					one, err := f.st.Search(ctx, f.a.ID, id, &tc.c)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(one, got[id]) {
						t.Fatalf("mailbox %d: Search %v, SearchMailboxes %v", id, one, got[id])
					}
				}
			})
		}
	}
	if got, err := f.st.SearchMailboxes(ctx, f.a.ID, nil, nil); err != nil || len(got) != 0 {
		t.Fatalf("no mailboxes: %v %v", got, err)
	}
}
