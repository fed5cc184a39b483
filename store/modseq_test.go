package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// Every kind of change bumps the HIGHESTMODSEQ of each mailbox it touches by
// exactly one (one transaction, one step: what CONDSTORE/QRESYNC and the
// change feed's "one transaction" test rely on), leaves other mailboxes
// alone, and ChangesSince(previous) returns exactly that change.
func TestHighestModSeqPerChange(t *testing.T) {
	type change struct {
		updated  []string // "uid:flags" of new or changed messages
		expunged []uint32
		noselect bool
	}
	type env struct {
		f       *fixture
		t       *testing.T
		inbox   int64
		archive int64
		parent  int64 // "P", which has a child "P/C"
		child   int64
	}
	ctx := context.Background()
	tests := []struct {
		name string
		do   func(e *env)
		// want: mailbox name -> change (a mailbox not listed must not move)
		want func(e *env) map[int64]change
	}{
		{"APPEND", func(e *env) {
			if _, err := e.f.st.Append(ctx, e.f.a.ID, e.inbox, strings.NewReader(testMessage(100)), 0,
				[]string{`\Seen`, "$Work"}, time.Time{}); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"4:[\\Seen $Work]"}}}
		}},
		{"delivery to two mailboxes in one transaction", func(e *env) {
			msg, err := store.Spool(strings.NewReader(testMessage(101)), 0)
			if err != nil {
				e.t.Fatal(err)
			}
			defer msg.Close()
			if _, err := e.f.st.Deliver(ctx, msg, []store.Target{
				{AccountID: e.f.a.ID, MailboxID: e.inbox}, {AccountID: e.f.a.ID, MailboxID: e.archive}}); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"4:[]"}}, e.archive: {updated: []string{"3:[]"}}}
		}},
		{"BulkAppendFunc: one step for the whole batch", func(e *env) {
			i := 0
			flags := [][]string{nil, {`\Seen`}, {"$Work"}}
			if _, err := e.f.st.BulkAppendFunc(ctx, e.f.a.ID, e.inbox, func() (*store.BulkMessage, error) {
				if i == len(flags) {
					return nil, nil
				}
				msg, err := store.Spool(strings.NewReader(testMessage(200+i)), 0)
				if err != nil {
					return nil, err
				}
				m := &store.BulkMessage{Msg: msg, Flags: flags[i]}
				i++
				return m, nil
			}); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"4:[]", "5:[\\Seen]", "6:[$Work]"}}}
		}},
		{"COPY into the same mailbox", func(e *env) {
			if _, err := e.f.st.Copy(ctx, e.f.a.ID, e.inbox, []store.UIDRange{{2, 3}}, e.inbox); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"4:[]", "5:[\\Seen]"}}}
		}},
		{"rename INBOX: its messages move to a new mailbox in one step each", func(e *env) {
			if err := e.f.st.RenameMailbox(ctx, e.f.a.ID, "INBOX", "Old"); err != nil {
				e.t.Fatal(err)
			}
			// The new mailbox holds them, all at its highest modseq.
			old := e.f.mailbox(e.t, e.f.a, "Old")
			ch, err := e.f.st.ChangesSince(ctx, e.f.a.ID, old.ID, 0)
			if err != nil {
				e.t.Fatal(err)
			}
			var upd []string
			for _, m := range ch.Updated {
				upd = append(upd, fmt.Sprintf("%d:%v", m.UID, m.Flags))
				if m.ModSeq != ch.Mailbox.HighestModSeq {
					e.t.Errorf("Old: message %d has modseq %d, mailbox %d", m.UID, m.ModSeq, ch.Mailbox.HighestModSeq)
				}
			}
			if want := []string{"1:[]", "2:[]", "3:[\\Seen]"}; !slices.Equal(upd, want) {
				e.t.Errorf("Old: %q, want %q", upd, want)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {expunged: []uint32{1, 2, 3}}}
		}},
		{"STORE +FLAGS", func(e *env) {
			storeFlags(e.t, e.f, e.inbox, []store.UIDRange{{1, 2}}, store.FlagsAdd, `\Flagged`)
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"1:[\\Flagged]", "2:[\\Flagged]"}}}
		}},
		{"STORE -FLAGS", func(e *env) {
			storeFlags(e.t, e.f, e.inbox, []store.UIDRange{{3, 3}}, store.FlagsRemove, `\Seen`)
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"3:[]"}}}
		}},
		{"STORE FLAGS (replace)", func(e *env) {
			storeFlags(e.t, e.f, e.inbox, []store.UIDRange{{1, 0}}, store.FlagsReplace, `\Answered`, "$Label1")
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"1:[\\Answered $Label1]", "2:[\\Answered $Label1]", "3:[\\Answered $Label1]"}}}
		}},
		{"STORE that changes nothing: no step", func(e *env) {
			storeFlags(e.t, e.f, e.inbox, []store.UIDRange{{3, 3}}, store.FlagsAdd, `\Seen`) // 3 is \Seen already
		}, func(e *env) map[int64]change { return nil }},
		{"COPY in", func(e *env) {
			if _, err := e.f.st.Copy(ctx, e.f.a.ID, e.archive, []store.UIDRange{{1, 0}}, e.inbox); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"4:[]", "5:[\\Flagged]"}}}
		}},
		{"COPY of nothing: no step", func(e *env) {
			if _, err := e.f.st.Copy(ctx, e.f.a.ID, e.archive, []store.UIDRange{{50, 60}}, e.inbox); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change { return nil }},
		{"MOVE out", func(e *env) {
			if _, err := e.f.st.Move(ctx, e.f.a.ID, e.inbox, []store.UIDRange{{2, 3}}, e.archive); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{
				e.inbox:   {expunged: []uint32{2, 3}},
				e.archive: {updated: []string{"3:[]", "4:[\\Seen]"}},
			}
		}},
		{"MOVE within the mailbox: copies and expunges in one step", func(e *env) {
			if _, err := e.f.st.Move(ctx, e.f.a.ID, e.inbox, []store.UIDRange{{2, 3}}, e.inbox); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.inbox: {updated: []string{"4:[]", "5:[\\Seen]"}, expunged: []uint32{2, 3}}}
		}},
		{"EXPUNGE", func(e *env) {
			storeFlags(e.t, e.f, e.inbox, []store.UIDRange{{1, 1}, {3, 3}}, store.FlagsAdd, `\Deleted`)
			// The step of the STORE is checked by its own case; measure
			// only the expunge.
		}, nil},
		{"UID EXPUNGE of some", func(e *env) {
			storeFlags(e.t, e.f, e.inbox, []store.UIDRange{{1, 0}}, store.FlagsAdd, `\Deleted`)
		}, nil},
		{"delete with children", func(e *env) {
			if err := e.f.st.DeleteMailbox(ctx, e.f.a.ID, "P"); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.parent: {noselect: true}}
		}},
		{"rename: one step for the mailbox and each child, no message change", func(e *env) {
			if err := e.f.st.RenameMailbox(ctx, e.f.a.ID, "P", "Q"); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env) map[int64]change {
			return map[int64]change{e.parent: {}, e.child: {}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			e := &env{f: f, t: t, inbox: f.mailbox(t, f.a, "INBOX").ID, archive: f.mailbox(t, f.a, "Archive").ID}
			// INBOX: 1, 2, 3 (\Seen); Archive: 1, 2 (\Flagged); P (one message), P/C.
			for i := 1; i <= 3; i++ {
				var fl []string
				if i == 3 {
					fl = []string{`\Seen`}
				}
				if _, err := f.st.Append(ctx, f.a.ID, e.inbox, strings.NewReader(testMessage(i)), 0, fl, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			for i := 1; i <= 2; i++ {
				var fl []string
				if i == 2 {
					fl = []string{`\Flagged`}
				}
				if _, err := f.st.Append(ctx, f.a.ID, e.archive, strings.NewReader(testMessage(10+i)), 0, fl, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range []string{"P/C"} {
				if _, err := f.st.CreateMailbox(ctx, f.a.ID, n, ""); err != nil {
					t.Fatal(err)
				}
			}
			e.parent, e.child = f.mailbox(t, f.a, "P").ID, f.mailbox(t, f.a, "P/C").ID
			if _, err := f.st.Append(ctx, f.a.ID, e.parent, strings.NewReader(testMessage(20)), 0, nil, time.Time{}); err != nil {
				t.Fatal(err)
			}

			want := tc.want
			if want == nil {
				// The EXPUNGE cases: set \Deleted first, then measure the
				// expunge on its own.
				tc.do(e)
				var ranges []store.UIDRange
				var gone []uint32
				if tc.name == "EXPUNGE" {
					gone = []uint32{1, 3} // plain EXPUNGE: every \Deleted message
				} else {
					ranges = []store.UIDRange{{2, 3}} // UID EXPUNGE 2:3 of 1:3 \Deleted
					gone = []uint32{2, 3}
				}
				want = func(*env) map[int64]change { return map[int64]change{e.inbox: {expunged: gone}} }
				tc.do = func(e *env) {
					got, err := f.st.Expunge(ctx, f.a.ID, e.inbox, ranges)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(got.UIDs, gone) {
						t.Fatalf("expunged %v, want %v", got, gone)
					}
				}
			}

			all := []int64{e.inbox, e.archive, e.parent, e.child}
			before := map[int64]uint64{}
			for _, id := range all {
				mb, err := f.st.MailboxByID(ctx, f.a.ID, id)
				if err != nil {
					t.Fatal(err)
				}
				before[id] = mb.HighestModSeq
			}
			tc.do(e)
			w := want(e)
			for _, id := range all {
				ch, err := f.st.ChangesSince(ctx, f.a.ID, id, before[id])
				if err != nil {
					t.Fatal(err)
				}
				if ch.Mailbox == nil {
					t.Fatalf("mailbox %d gone", id)
				}
				wc, changed := w[id]
				step := uint64(0)
				if changed {
					step = 1
				}
				if got := ch.Mailbox.HighestModSeq - before[id]; got != step {
					t.Errorf("mailbox %s: highestmodseq moved by %d, want %d", ch.Mailbox.Name, got, step)
				}
				var upd []string
				for _, m := range ch.Updated {
					upd = append(upd, fmt.Sprintf("%d:%v", m.UID, m.Flags))
					if m.ModSeq != ch.Mailbox.HighestModSeq {
						t.Errorf("mailbox %s: message %d has modseq %d, mailbox %d", ch.Mailbox.Name, m.UID, m.ModSeq, ch.Mailbox.HighestModSeq)
					}
				}
				if !slices.Equal(upd, wc.updated) || !slices.Equal(ch.Expunged, wc.expunged) || ch.Mailbox.NoSelect != wc.noselect {
					t.Errorf("mailbox %s: ChangesSince = updated %q expunged %v noselect %v; want %q %v %v",
						ch.Mailbox.Name, upd, ch.Expunged, ch.Mailbox.NoSelect, wc.updated, wc.expunged, wc.noselect)
				}
				// Nothing changed after the new highestmodseq.
				after, err := f.st.ChangesSince(ctx, f.a.ID, id, ch.Mailbox.HighestModSeq)
				if err != nil {
					t.Fatal(err)
				}
				if len(after.Updated)+len(after.Expunged) != 0 {
					t.Errorf("mailbox %s: changes after its highestmodseq: %+v", ch.Mailbox.Name, after)
				}
			}
		})
	}
}

// storeFlags changes flags and returns the modseq of the change (0: none).
func storeFlags(t *testing.T, f *fixture, mailbox int64, r []store.UIDRange, op store.FlagOp, flags ...string) uint64 {
	t.Helper()
	changed, err := f.st.StoreFlags(context.Background(), f.a.ID, mailbox, r, op, flags)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) == 0 {
		return 0
	}
	return changed[0].ModSeq
}

// Eight writers change one mailbox at once (STORE, APPEND, EXPUNGE) while
// a poller applies ChangesSince in a loop to a model of its own, as the
// change feed does. A change committed below a modseq the poller already
// read past would be lost to it for good: afterwards the model must equal
// the database, every write that changed something must have taken
// exactly one modseq step (no step skipped, none shared), and the poller
// never sees a change at or below what it applied.
func TestChangesSinceConcurrentWriters(t *testing.T) {
	const writers, opsEach, seed = 8, 40, 20
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX").ID
	for i := range seed {
		if _, err := f.st.Append(ctx, f.a.ID, inbox, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	model := map[uint32]string{}
	apply := func(ch *store.Changes, after uint64) uint64 {
		t.Helper()
		if ch.Mailbox == nil || ch.Mailbox.HighestModSeq < after {
			t.Fatalf("ChangesSince(%d): mailbox %+v", after, ch.Mailbox)
		}
		for _, m := range ch.Updated {
			if m.ModSeq <= after || m.ModSeq > ch.Mailbox.HighestModSeq {
				t.Fatalf("ChangesSince(%d) up to %d: message %d at modseq %d", after, ch.Mailbox.HighestModSeq, m.UID, m.ModSeq)
			}
			model[m.UID] = fmt.Sprint(m.Flags)
		}
		for _, u := range ch.Expunged {
			delete(model, u)
		}
		return ch.Mailbox.HighestModSeq
	}
	ch, err := f.st.ChangesSince(ctx, f.a.ID, inbox, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := apply(ch, 0)

	var mu sync.Mutex
	var steps int        // writes that changed something
	var modseqs []uint64 // the modseqs those that report one were given
	record := func(ms uint64) {
		mu.Lock()
		defer mu.Unlock()
		steps++
		if ms != 0 {
			modseqs = append(modseqs, ms)
		}
	}
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			flags := []string{`\Seen`, `\Flagged`, "$A", "$B"}
			for i := range opsEach {
				uid := uint32(1 + rng.IntN(seed+writers*opsEach/3))
				switch r := rng.IntN(10); {
				case r < 5:
					op := store.FlagsAdd
					if rng.IntN(2) == 0 {
						op = store.FlagsRemove
					}
					ch, err := f.st.StoreFlags(ctx, f.a.ID, inbox, []store.UIDRange{{Start: uid, Stop: uid + uint32(rng.IntN(4))}}, op,
						[]string{flags[rng.IntN(len(flags))]})
					if err != nil {
						errs <- err
						return
					}
					if len(ch) > 0 {
						record(ch[0].ModSeq)
					}
				case r < 8:
					res, err := f.st.Append(ctx, f.a.ID, inbox, strings.NewReader(testMessage(1000*w+i)), 0, nil, time.Time{})
					if err != nil {
						errs <- err
						return
					}
					record(res.ModSeq)
				default:
					ch, err := f.st.StoreFlags(ctx, f.a.ID, inbox, []store.UIDRange{{Start: uid, Stop: uid}}, store.FlagsAdd, []string{`\Deleted`})
					if err != nil {
						errs <- err
						return
					}
					if len(ch) > 0 {
						record(ch[0].ModSeq)
					}
					gone, err := f.st.Expunge(ctx, f.a.ID, inbox, []store.UIDRange{{Start: uid, Stop: uid}})
					if err != nil {
						errs <- err
						return
					}
					if len(gone.UIDs) > 0 {
						record(gone.ModSeq)
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	last, polls := start, 0
	for running := true; running; {
		select {
		case <-done:
			running = false // one more poll below sees the end state
		default:
		}
		ch, err := f.st.ChangesSince(ctx, f.a.ID, inbox, last)
		if err != nil {
			t.Fatal(err)
		}
		last = apply(ch, last)
		polls++
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var db []string
	if err := f.st.FetchMeta(ctx, f.a.ID, inbox, []store.UIDRange{{Start: 1, Stop: 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		db = append(db, fmt.Sprintf("%d:%v", m.UID, m.Flags))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var rebuilt []string
	for uid, fl := range model {
		rebuilt = append(rebuilt, fmt.Sprintf("%d:%s", uid, fl))
	}
	slices.SortFunc(rebuilt, func(a, b string) int {
		var x, y int
		fmt.Sscanf(a, "%d:", &x)
		fmt.Sscanf(b, "%d:", &y)
		return x - y
	})
	if !slices.Equal(rebuilt, db) {
		t.Errorf("rebuilt from ChangesSince:\n%q\ndatabase:\n%q", rebuilt, db)
	}
	if got := int(last - start); got != steps {
		t.Errorf("highest modseq moved by %d for %d changing writes", got, steps)
	}
	slices.Sort(modseqs)
	for i := 1; i < len(modseqs); i++ {
		if modseqs[i] == modseqs[i-1] {
			t.Errorf("two writes share modseq %d", modseqs[i])
		}
	}
	if len(modseqs) > 0 && (modseqs[0] <= start || modseqs[len(modseqs)-1] > last) {
		t.Errorf("modseqs %d..%d outside (%d, %d]", modseqs[0], modseqs[len(modseqs)-1], start, last)
	}
	t.Logf("%d changing writes, modseq %d → %d, %d polls, %d messages", steps, start, last, polls, len(db))
}

// STOREs on the same messages at once (StoreFlags is one statement whose
// snapshot predates its wait for the mailbox lock): no writer's flag is
// lost, every changing STORE takes its own modseq step, and the mailbox's
// cached counts equal the messages' flags afterwards.
func TestConcurrentStoreFlags(t *testing.T) {
	const writers, rounds, msgs = 8, 15, 4
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX").ID
	for i := range msgs {
		if _, err := f.st.Append(ctx, f.a.ID, inbox, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	before := f.mailbox(t, f.a, "INBOX").HighestModSeq
	all := []store.UIDRange{{Start: 1, Stop: 0}}
	var steps atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				// Each writer's own keyword stays; \Seen and \Deleted flip
				// back and forth under everyone.
				ops := []struct {
					op    store.FlagOp
					flags []string
				}{
					{store.FlagsAdd, []string{fmt.Sprintf("k%d", w)}},
					{store.FlagOp(r % 2), []string{store.FlagSeen}},
					{store.FlagOp((r + w) % 2), []string{store.FlagDeleted}},
				}
				for _, o := range ops {
					changed, err := f.st.StoreFlags(ctx, f.a.ID, inbox, all, o.op, o.flags)
					if err != nil {
						errs <- err
						return
					}
					if len(changed) > 0 {
						steps.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mb := f.mailbox(t, f.a, "INBOX")
	if got, want := mb.HighestModSeq, before+uint64(steps.Load()); got != want {
		t.Errorf("highestmodseq %d after %d changing STOREs from %d, want %d", got, steps.Load(), before, want)
	}
	var unseen, deleted int64
	err := f.st.FetchMeta(ctx, f.a.ID, inbox, all, store.FetchOptions{}, func(m *store.MessageMeta) error {
		for w := range writers {
			if !slices.Contains(m.Flags, fmt.Sprintf("k%d", w)) {
				t.Errorf("message %d lost keyword k%d: %v", m.UID, w, m.Flags)
			}
		}
		if !slices.Contains(m.Flags, store.FlagSeen) {
			unseen++
		}
		if slices.Contains(m.Flags, store.FlagDeleted) {
			deleted++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if mb.Unseen != unseen || mb.Deleted != deleted || mb.Messages != msgs {
		t.Errorf("cached counts messages %d unseen %d deleted %d, flags say %d, %d, %d",
			mb.Messages, mb.Unseen, mb.Deleted, msgs, unseen, deleted)
	}
}
