package imapd

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailstack/mailstack/store"
)

// feed is the process-local change feed (DESIGN.md "Change feed and
// IDLE"). For every mailbox that some local session has selected it keeps
// the modseq applied so far and the selected views; a catch-up reads what
// changed since that modseq (one ChangesSince query) and hands the same
// changes, in the same order, to every view of the mailbox. Wake-ups come
// from the store's LISTEN connection (notify) and, right after their
// commit, from local writes (catchUp), so a writing session finds its own
// updates queued when imapserver polls after the command.
//
// Lock order: feed.mu, then watched.mu, then selected.mu. No lock is held
// while writing to a client.
type feed struct {
	st  *store.Store
	log *slog.Logger

	mu    sync.Mutex
	boxes map[int64]*watched
}

// watched is one mailbox selected by at least one local session.
type watched struct {
	accountID, mailboxID int64
	refs                 int // guarded by feed.mu

	mu     sync.Mutex // serialises catch-ups and registrations
	modseq uint64     // highest modseq applied to every view
	views  map[*selected]struct{}
	gone   atomic.Bool // set under mu; read by open under feed.mu alone
}

// catchUpRetry is the pause before a failed catch-up is tried again.
const catchUpRetry = time.Second

func newFeed(st *store.Store, log *slog.Logger) *feed {
	return &feed{st: st, log: log, boxes: map[int64]*watched{}}
}

// open selects a mailbox for a session: it reads the mailbox and its UIDs
// and registers a view that will receive every later change.
func (f *feed) open(ctx context.Context, accountID, mailboxID int64, readOnly bool) (*selected, *store.Mailbox, error) {
	f.mu.Lock()
	w := f.boxes[mailboxID]
	if w == nil || w.accountID != accountID || w.gone.Load() {
		// A gone entry was deleted (or made \Noselect) while selected and
		// is selectable again now (CREATE of a \Noselect placeholder keeps
		// its id): its views end with BYE; new views need an entry that
		// catch-ups do not skip.
		nw := &watched{accountID: accountID, mailboxID: mailboxID, views: map[*selected]struct{}{}}
		if w == nil || w.accountID == accountID {
			f.boxes[mailboxID] = nw
		}
		w = nw
	}
	w.refs++
	f.mu.Unlock()

	sel, mb, err := f.register(ctx, w, readOnly)
	if err != nil {
		// Not under w.mu: release takes feed.mu (lock order).
		f.release(w)
		return nil, nil, err
	}
	return sel, mb, nil
}

func (f *feed) register(ctx context.Context, w *watched, readOnly bool) (*selected, *store.Mailbox, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	mb, uids, err := f.st.SelectMailbox(ctx, w.accountID, w.mailboxID)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case len(w.views) == 0:
		w.modseq = mb.HighestModSeq
	case mb.HighestModSeq < w.modseq:
		// Our snapshot is older than what the other views were given:
		// bring it forward so that no change falls between the two.
		ch, err := f.st.ChangesSince(ctx, w.accountID, w.mailboxID, mb.HighestModSeq)
		if err != nil {
			return nil, nil, err
		}
		if ch.Mailbox == nil {
			return nil, nil, store.ErrNotFound
		}
		uids = applyToList(uids, ch)
		mb = ch.Mailbox
	}
	// A snapshot newer than w.modseq is fine: the views apply changes
	// idempotently, so re-reading (w.modseq, snapshot] only repeats flags.
	sel := newSelected(w, uids, readOnly)
	w.views[sel] = struct{}{}
	return sel, mb, nil
}

// close unregisters a view.
func (f *feed) close(sel *selected) {
	w := sel.w
	w.mu.Lock()
	delete(w.views, sel)
	w.mu.Unlock()
	f.release(w)
}

func (f *feed) release(w *watched) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.refs--; w.refs == 0 && f.boxes[w.mailboxID] == w {
		delete(f.boxes, w.mailboxID)
	}
}

// notifySafely is notify for the Listen goroutine: a panic is logged, never
// allowed to end the process.
func (f *feed) notifySafely(ctx context.Context, ev store.ChangeEvent) {
	defer func() {
		if v := recover(); v != nil {
			f.log.Error("change feed: panic", "event", ev, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	f.notify(ctx, ev)
}

// notify handles one event from Store.Listen.
func (f *feed) notify(ctx context.Context, ev store.ChangeEvent) {
	if ev.Resync {
		// Notifications may have been lost: re-read every watched mailbox.
		f.mu.Lock()
		all := make([]*watched, 0, len(f.boxes))
		for _, w := range f.boxes {
			all = append(all, w)
		}
		f.mu.Unlock()
		for _, w := range all {
			f.catchUpWatched(ctx, w, 0)
		}
		return
	}
	f.catchUp(ctx, ev.MailboxID, ev.ModSeq)
}

// catchUp brings every view of the mailbox up to date with the database,
// unless modseq (when not 0) has been applied already. It is a no-op for a
// mailbox no local session has selected.
func (f *feed) catchUp(ctx context.Context, mailboxID int64, modseq uint64) {
	f.mu.Lock()
	w := f.boxes[mailboxID]
	f.mu.Unlock()
	if w != nil {
		f.catchUpWatched(ctx, w, modseq)
	}
}

func (f *feed) catchUpWatched(ctx context.Context, w *watched, modseq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone.Load() || len(w.views) == 0 || (modseq != 0 && modseq <= w.modseq) {
		return
	}
	ch, err := f.st.ChangesSince(ctx, w.accountID, w.mailboxID, w.modseq)
	if err != nil {
		// Nothing was applied, so a later catch-up from the same modseq
		// loses nothing; schedule one rather than wait for the next
		// change to this mailbox, which may never come.
		if ctx.Err() == nil {
			f.log.Error("change feed: catch up; retrying", "mailbox", w.mailboxID, "err", err)
			time.AfterFunc(catchUpRetry, func() { f.catchUpWatched(ctx, w, 0) })
		}
		return
	}
	if ch.Mailbox == nil || ch.Mailbox.NoSelect {
		// Deleted (or turned into a \Noselect placeholder): every session
		// that has it selected is ended with BYE at its next poll.
		w.gone.Store(true)
		for sel := range w.views {
			sel.markGone()
		}
		return
	}
	for sel := range w.views {
		f.applySafely(sel, ch)
	}
	w.modseq = max(w.modseq, ch.Mailbox.HighestModSeq)
}

// applySafely hands changes to one view. A panic (a bug in the view
// machinery) must not take down the process or the other sessions: that
// view is marked gone, so its session alone ends with BYE at its next poll.
func (f *feed) applySafely(sel *selected, ch *store.Changes) {
	defer func() {
		if v := recover(); v != nil {
			f.log.Error("change feed: panic applying changes; ending that session", "mailbox", sel.w.mailboxID, "panic", v,
				"stack", string(debug.Stack()))
			sel.markGone()
		}
	}()
	// Called with w.mu held: w.modseq is what ch was read after.
	sel.applySince(ch, sel.w.modseq, true)
}

// watching reports how many mailboxes and views the feed tracks (tests).
func (f *feed) watching() (mailboxes, views int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.boxes {
		mailboxes++
		w.mu.Lock()
		views += len(w.views)
		w.mu.Unlock()
	}
	return mailboxes, views
}
