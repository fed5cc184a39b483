package imapd

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/mailstack/mailstack/store"
)

// SELECT reads its snapshot before taking the mailbox's feed lock
// (feed.open); these play the races between that read and the
// registration, deterministically, against a real database: changes made
// in between reach the new view, whether or not other views exist and
// whether or not their notification was consumed before the view existed.
func TestSelectSnapshotReconciled(t *testing.T) {
	ctx := context.Background()
	type state struct {
		e     *env
		inbox int64
	}
	snapshot := func(t *testing.T, e *env, name string) *store.MailboxSnapshot {
		t.Helper()
		snap, err := e.st.SelectMailboxByName(ctx, e.acc.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	flag := func(t *testing.T, e *env, mailbox int64, lo, hi uint32, flags ...string) {
		t.Helper()
		if _, err := e.st.StoreFlags(ctx, e.acc.ID, mailbox, []store.UIDRange{{Start: lo, Stop: hi}}, store.FlagsAdd, flags); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name       string
		maxPending int
		others     bool // another session has the mailbox selected
		// between runs after the snapshot was read, before registering.
		between  func(t *testing.T, s state)
		err      error
		uids     []uint32
		keywords []string
	}{
		{name: "first view, nothing in between", uids: []uint32{1, 2}},
		{name: "first view, delivery and keyword in between", between: func(t *testing.T, s state) {
			s.e.deliver("INBOX", crlf(simpleMsg))
			flag(t, s.e, s.inbox, 1, 1, "$New")
			// The notifications came while the entry had no view: a
			// catch-up then does nothing.
			s.e.srv.feed.readChanges(ctx, s.inbox)
		}, uids: []uint32{1, 2, 3}, keywords: []string{"$New"}},
		{name: "other views, changes in between", others: true, between: func(t *testing.T, s state) {
			s.e.deliver("INBOX", crlf(simpleMsg))
			flag(t, s.e, s.inbox, 2, 2, "$Other")
			if _, err := s.e.st.StoreFlags(ctx, s.e.acc.ID, s.inbox, []store.UIDRange{{Start: 1, Stop: 1}}, store.FlagsAdd,
				[]string{`\Deleted`}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.e.st.Expunge(ctx, s.e.acc.ID, s.inbox, nil); err != nil {
				t.Fatal(err)
			}
			s.e.srv.feed.readChanges(ctx, s.inbox) // the other views are ahead now
		}, uids: []uint32{2, 3}, keywords: []string{"$Other"}},
		{name: "other views, more changes than a registration reads", maxPending: 2, others: true, between: func(t *testing.T, s state) {
			for range 3 {
				s.e.deliver("INBOX", crlf(simpleMsg))
			}
			flag(t, s.e, s.inbox, 1, 0, "$Bulk")
			s.e.srv.feed.readChanges(ctx, s.inbox)
		}, err: errSnapshotBehind},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{maxPending: tc.maxPending})
			e.deliver("INBOX", crlf(simpleMsg))
			e.deliver("INBOX", crlf(simpleMsg))
			s := state{e: e, inbox: mailboxID(t, e, "INBOX")}
			if tc.others {
				if _, err := e.login(nil).Select("INBOX", nil).Wait(); err != nil {
					t.Fatal(err)
				}
			}
			f := e.srv.feed
			snap := snapshot(t, e, "INBOX")
			w := f.entry(e.acc.ID, s.inbox)
			if tc.between != nil {
				tc.between(t, s)
			}
			sel, _, err := f.register(ctx, w, snap, false, int(f.maxPending.Load()))
			if tc.err != nil {
				f.release(w)
				if !errors.Is(err, tc.err) {
					t.Fatalf("register: %v, want %v", err, tc.err)
				}
				// open reads the mailbox again instead.
				sel, snap, err := f.open(ctx, e.acc.ID, "INBOX", false)
				if err != nil {
					t.Fatal(err)
				}
				defer f.close(sel)
				if want := snapshot(t, e, "INBOX"); !slices.Equal(snap.UIDs, want.UIDs) || !slices.Equal(snap.Mailbox.Keywords, want.Mailbox.Keywords) {
					t.Fatalf("open after a far-behind snapshot: UIDs %v keywords %q, want %v %q",
						snap.UIDs, snap.Mailbox.Keywords, want.UIDs, want.Mailbox.Keywords)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.close(sel)
			if got := sel.snapshot(); !slices.Equal(got, tc.uids) || !slices.Equal(snap.UIDs, tc.uids) {
				t.Fatalf("view %v, snapshot %v, want %v", got, snap.UIDs, tc.uids)
			}
			if !slices.Equal(snap.Mailbox.Keywords, tc.keywords) {
				t.Fatalf("keywords %q, want %q", snap.Mailbox.Keywords, tc.keywords)
			}
			if now := snapshot(t, e, "INBOX"); snap.Mailbox.HighestModSeq != now.Mailbox.HighestModSeq {
				t.Fatalf("view at modseq %d, mailbox at %d", snap.Mailbox.HighestModSeq, now.Mailbox.HighestModSeq)
			}
			// Later changes reach the view.
			res := e.deliver("INBOX", crlf(simpleMsg))
			f.readChanges(ctx, s.inbox)
			if got := sel.maxKnown(); got != res.UID {
				t.Fatalf("after a later delivery the view knows up to UID %d, want %d", got, res.UID)
			}
		})
	}
}

// A SELECT whose snapshot is of a mailbox deleted (with children) and
// re-created before another session selected the new one must read again,
// not end that session: the snapshot is the stale one.
func TestSelectSnapshotOfRecreatedMailbox(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	if err := c.Create("P/C", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	e.deliver("P", crlf(simpleMsg))
	old, err := e.st.SelectMailboxByName(ctx, e.acc.ID, "P")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("P").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("P", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("P", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	f := e.srv.feed
	w := f.entry(e.acc.ID, old.Mailbox.ID)
	_, _, err = f.register(ctx, w, old, false, 0)
	f.release(w)
	if !errors.Is(err, errStaleEntry) {
		t.Fatalf("register of the old snapshot: %v", err)
	}
	if w.gone.Load() {
		t.Fatal("the stale snapshot ended the sessions of the re-created mailbox")
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("session on the re-created mailbox: %v", err)
	}
}
