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

// changesFixture is INBOX with 12 messages; after modseq base every one
// got $Big and UID 3 was expunged.
func changesFixture(t *testing.T) (f *fixture, inbox *store.Mailbox, base uint64) {
	t.Helper()
	f = newFixture(t)
	ctx := context.Background()
	inbox = f.mailbox(t, f.a, "INBOX")
	for i := range 12 {
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	base = f.mailbox(t, f.a, "INBOX").HighestModSeq
	all := []store.UIDRange{{Start: 1, Stop: 0}}
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, all, store.FlagsAdd, []string{"$Big"}); err != nil {
		t.Fatal(err)
	}
	three := []store.UIDRange{{Start: 3, Stop: 3}}
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, three, store.FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, three); err != nil {
		t.Fatal(err)
	}
	return f, inbox, base
}

func uidsOf(ms []store.MessageFlags) []uint32 {
	var out []uint32
	for _, m := range ms {
		out = append(out, m.UID)
	}
	return out
}

// A limited read returns every change within its limit and none past it
// (Truncated), for updated messages and expunged UIDs alike, per mailbox of
// one ChangesSinceMany call.
func TestChangesSinceLimit(t *testing.T) {
	f, inbox, base := changesFixture(t)
	ctx := context.Background()
	archive := f.mailbox(t, f.a, "Archive")
	if _, err := f.st.Append(ctx, f.a.ID, archive.ID, strings.NewReader(testMessage(100)), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Expunges alone past the limit: three after modseq expBase.
	for uid := uint32(4); uid <= 6; uid++ {
		r := []store.UIDRange{{Start: uid, Stop: uid}}
		if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, r, store.FlagsAdd, []string{`\Deleted`}); err != nil {
			t.Fatal(err)
		}
	}
	expBase := f.mailbox(t, f.a, "INBOX").HighestModSeq
	if _, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 4, Stop: 6}}); err != nil {
		t.Fatal(err)
	}
	full, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Updated) != 8 || !slices.Equal(full.Expunged, []uint32{3, 4, 5, 6}) || full.Truncated {
		t.Fatalf("unlimited: updated %v, expunged %v, truncated %v", uidsOf(full.Updated), full.Expunged, full.Truncated)
	}
	tests := []struct {
		name      string
		since     uint64
		limit     int
		truncated bool
	}{
		{"no limit", base, 0, false},
		{"limit fits exactly", base, 8, false},
		{"one updated row too many", base, 7, true},
		{"expunges within the limit", expBase, 3, false},
		{"expunges past the limit", expBase, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chs, err := f.st.ChangesSinceMany(ctx, []store.ChangeQuery{
				{AccountID: f.a.ID, MailboxID: inbox.ID, ModSeq: tc.since, Limit: tc.limit},
				{AccountID: f.a.ID, MailboxID: archive.ID, ModSeq: 0, Limit: 1},
			})
			if err != nil {
				t.Fatal(err)
			}
			ch := chs[0]
			if ch.Mailbox == nil || ch.Mailbox.HighestModSeq != f.mailbox(t, f.a, "INBOX").HighestModSeq {
				t.Fatalf("mailbox %+v", ch.Mailbox)
			}
			if ch.Truncated != tc.truncated {
				t.Fatalf("truncated %v, want %v", ch.Truncated, tc.truncated)
			}
			if tc.truncated {
				if ch.Updated != nil || ch.Expunged != nil {
					t.Errorf("a truncated read kept rows: updated %v, expunged %v", uidsOf(ch.Updated), ch.Expunged)
				}
			} else {
				want, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, tc.since)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(ch.Updated, ch.Expunged) != fmt.Sprint(want.Updated, want.Expunged) {
					t.Errorf("got %v %v, want %v %v", ch.Updated, ch.Expunged, want.Updated, want.Expunged)
				}
			}
			// The other mailbox of the same read keeps its own limit.
			if a := chs[1]; a.Truncated || len(a.Updated) != 1 || a.Mailbox == nil {
				t.Errorf("Archive: %+v", a)
			}
		})
	}
}

// Pages, read one after another from the highest UID of the last, give
// exactly the unlimited read, each within its limit.
func TestChangesPage(t *testing.T) {
	f, inbox, base := changesFixture(t)
	ctx := context.Background()
	full, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, base)
	if err != nil {
		t.Fatal(err)
	}
	rows := len(full.Updated) + len(full.Expunged) // 11 + 1
	for _, limit := range []int{1, 4, rows - 1, rows, rows + 5} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			var updated []store.MessageFlags
			var expunged []uint32
			var after uint32
			pages := 0
			for {
				ch, err := f.st.ChangesPage(ctx, f.a.ID, inbox.ID, base, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if ch.Mailbox == nil || ch.Mailbox.ID != inbox.ID {
					t.Fatalf("page %d: mailbox %+v", pages, ch.Mailbox)
				}
				n := len(ch.Updated) + len(ch.Expunged)
				if n > limit || (ch.Truncated && n != limit) {
					t.Fatalf("page %d: %d rows (truncated %v), limit %d", pages, n, ch.Truncated, limit)
				}
				top := after
				for _, u := range append(uidsOf(ch.Updated), ch.Expunged...) {
					if u <= after {
						t.Fatalf("page %d after UID %d has UID %d", pages, after, u)
					}
					top = max(top, u)
				}
				updated, expunged = append(updated, ch.Updated...), append(expunged, ch.Expunged...)
				if !ch.Truncated {
					break
				}
				after = top
			}
			if want := (rows + limit - 1) / limit; pages != want {
				t.Errorf("%d pages, want %d", pages, want)
			}
			if fmt.Sprint(updated, expunged) != fmt.Sprint(full.Updated, full.Expunged) {
				t.Errorf("pages gave %v %v, want %v %v", updated, expunged, full.Updated, full.Expunged)
			}
		})
	}
	// Another account's id reads nothing of the mailbox (invariant 4).
	ch, err := f.st.ChangesPage(ctx, f.b.ID, inbox.ID, 0, 0, 100)
	if err != nil || ch.Mailbox != nil || len(ch.Updated)+len(ch.Expunged) != 0 || ch.Truncated {
		t.Errorf("page as another account: %+v, %v", ch, err)
	}
	chs, err := f.st.ChangesSinceMany(ctx, []store.ChangeQuery{{AccountID: f.b.ID, MailboxID: inbox.ID, Limit: 100}})
	if err != nil || chs[0].Mailbox != nil || len(chs[0].Updated)+len(chs[0].Expunged) != 0 {
		t.Errorf("limited read as another account: %+v, %v", chs[0], err)
	}
	if _, err := f.st.ChangesPage(ctx, f.a.ID, inbox.ID, 0, 0, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("page of 0: %v, want ErrInvalid", err)
	}
}
