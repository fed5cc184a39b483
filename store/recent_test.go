package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// TestClaimRecentConcurrent: sessions claiming \Recent while messages
// arrive, as sessions in several processes do, get every UID exactly once
// between them: the ranges they own never overlap and, once the last
// message is claimed, cover every UID.
func TestClaimRecentConcurrent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	const messages, claimers = 60, 8
	var highest atomic.Uint32 // the highest UID a session could know of
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		for i := range messages {
			res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{})
			if err != nil {
				t.Error(err)
				return
			}
			highest.Store(res.UID)
		}
	}()
	type claim struct{ first, upTo uint32 }
	var mu sync.Mutex
	var claims []claim
	var wg sync.WaitGroup
	for range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for last := false; !last; {
				select {
				case <-appended:
					last = true // one more claim, of everything
				default:
				}
				upTo := highest.Load()
				if upTo == 0 {
					continue
				}
				first, err := f.st.ClaimRecent(ctx, f.a.ID, inbox.ID, upTo)
				if err != nil {
					t.Error(err)
					return
				}
				if first != 0 {
					mu.Lock()
					claims = append(claims, claim{first, upTo})
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.SortFunc(claims, func(a, b claim) int { return int(a.first) - int(b.first) })
	next := uint32(1)
	for _, c := range claims {
		if c.first != next || c.upTo < c.first {
			t.Fatalf("claims %v: [%d, %d] does not follow on from %d", claims, c.first, c.upTo, next-1)
		}
		next = c.upTo + 1
	}
	if next != messages+1 {
		t.Fatalf("claims %v end at %d, want %d", claims, next-1, messages)
	}
	if n, err := f.st.CountRecent(ctx, f.a.ID, inbox.ID); err != nil || n != 0 {
		t.Fatalf("CountRecent after every claim: %d %v", n, err)
	}
	t.Logf("%d claims by %d sessions", len(claims), claimers)
}

// TestRecent: what ClaimRecent hands out and CountRecent counts through
// deliveries, claims, expunges, a move within the mailbox and RENAME
// INBOX; the mark is in every mailbox read; another account's id reaches
// nothing.
func TestRecent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	if inbox.FirstRecentUID != 1 {
		t.Fatalf("new INBOX: first recent UID %d", inbox.FirstRecentUID)
	}
	appendN := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	uids := func(r ...store.UIDRange) []store.UIDRange { return r }
	steps := []struct {
		name      string
		do        func() error
		claim     uint32 // ClaimRecent(claim) after do, if not 0
		wantFirst uint32
		wantCount int64 // CountRecent at the end of the step
	}{
		{"five deliveries", func() error { appendN(5); return nil }, 0, 0, 5},
		{"a session claims up to 3", nil, 3, 1, 2},
		{"a second session finds 1 to 3 claimed", nil, 3, 0, 2},
		{"expunge 4 (unclaimed) and 2 (claimed)", func() error {
			if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, uids(store.UIDRange{Start: 2, Stop: 2}, store.UIDRange{Start: 4, Stop: 4}),
				store.FlagsAdd, []string{`\Deleted`}); err != nil {
				return err
			}
			_, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, nil)
			return err
		}, 0, 0, 1},
		{"a delivery", func() error { appendN(1); return nil }, 0, 0, 2},
		{"a claim beyond the last UID claims no later message", nil, 100, 4, 0},
		{"a delivery after it is recent", func() error { appendN(1); return nil }, 0, 0, 1},
		{"a claim of nothing new", nil, 6, 0, 1},
		{"a move within the mailbox makes new, unclaimed UIDs", func() error {
			_, err := f.st.Move(ctx, f.a.ID, inbox.ID, uids(store.UIDRange{Start: 1, Stop: 1}), inbox.ID)
			return err
		}, 0, 0, 2},
		{"the session claims them", nil, 8, 7, 0},
	}
	for _, st := range steps {
		if st.do != nil {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		if st.claim != 0 {
			first, err := f.st.ClaimRecent(ctx, f.a.ID, inbox.ID, st.claim)
			if err != nil || first != st.wantFirst {
				t.Fatalf("%s: ClaimRecent(%d) = %d, %v; want %d", st.name, st.claim, first, err, st.wantFirst)
			}
		}
		if n, err := f.st.CountRecent(ctx, f.a.ID, inbox.ID); err != nil || n != st.wantCount {
			t.Fatalf("%s: CountRecent = %d, %v; want %d", st.name, n, err, st.wantCount)
		}
	}
	// Every read of the mailbox row carries the mark.
	mb := f.mailbox(t, f.a, "INBOX")
	snap, err := f.st.SelectMailboxByName(ctx, f.a.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	page, err := f.st.ChangesPage(ctx, f.a.ID, inbox.ID, 0, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]uint32{"MailboxByName": mb.FirstRecentUID, "SelectMailboxByName": snap.Mailbox.FirstRecentUID,
		"ChangesSince": ch.Mailbox.FirstRecentUID, "ChangesPage": page.Mailbox.FirstRecentUID} {
		if got != 9 {
			t.Errorf("%s: first recent UID %d, want 9", name, got)
		}
	}

	// Bob's account id reaches none of Alice's mailboxes.
	if _, err := f.st.ClaimRecent(ctx, f.b.ID, inbox.ID, 100); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ClaimRecent with another account: %v", err)
	}
	if _, err := f.st.CountRecent(ctx, f.b.ID, inbox.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CountRecent with another account: %v", err)
	}

	// RENAME INBOX: the moved messages are recent nowhere; INBOX's next
	// delivery is.
	appendN(1)
	if err := f.st.RenameMailbox(ctx, f.a.ID, "INBOX", "Old"); err != nil {
		t.Fatal(err)
	}
	old := f.mailbox(t, f.a, "Old")
	if n, err := f.st.CountRecent(ctx, f.a.ID, old.ID); err != nil || n != 0 || old.Messages != 6 || old.FirstRecentUID != old.UIDNext {
		t.Fatalf("after RENAME INBOX: %d recent of %+v, %v", n, old, err)
	}
	appendN(1)
	if n, err := f.st.CountRecent(ctx, f.a.ID, inbox.ID); err != nil || n != 1 {
		t.Fatalf("INBOX after RENAME and a delivery: %d recent, %v", n, err)
	}
}
