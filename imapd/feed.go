package imapd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailstack/mailstack/store"
)

// feed is the process-local change feed (ARCHITECTURE.md "Change feed and
// IDLE"). For every mailbox that some local session has selected it keeps
// the modseq applied so far and the selected views; a catch-up reads what
// changed since that modseq (one ChangesSince query) and hands the same
// changes, in the same order, to every view of the mailbox. Wake-ups come
// from the store's LISTEN connection (notify) and, right after their
// commit, from local writes (readChanges, applyOwn), so a writing session finds its own
// updates queued when the session polls after the command.
//
// A per-session queue of changes would grow with every change a session
// has not polled yet, without bound: each view here merges pending
// changes per message and, past maxPending, drops them for a resync
// (view.go). No read holds more than maxPending+1 changes of a mailbox
// either: a catch-up past that (a bulk STORE) makes every view resync
// instead, and a resync reads in pages of maxPending (resyncView).
//
// notify never reads the database itself: it hands the mailbox to that
// mailbox's runner goroutine (at most one per mailbox, started on demand),
// so a slow catch-up of one mailbox holds up neither the LISTEN connection
// nor other mailboxes. Every read has a timeout; a failed one is retried
// by the runner.
//
// Lock order: feed.mu, then watched.mu, then view.mu; watched.kick is
// a leaf. No lock is held while writing to a client.
type feed struct {
	ctx context.Context // the server's: runners stop when it ends
	st  *store.Store
	log *slog.Logger
	// Tunables (tests lower them; atomic because the LISTEN goroutine
	// runs already when they do).
	maxPending atomic.Int64 // cap on a view's pending entries; see view.merge
	rowsCached atomic.Int64 // rows in the watched mailboxes' caches (processRowMax)
	retry      atomic.Int64 // pause (a time.Duration) before a failed catch-up is retried
	// beforeCatchUp, if set, runs before every catch-up that is not a
	// local write's (the runners' and the resync's): tests stall the
	// remote feed with it.
	beforeCatchUp atomic.Pointer[func(mailboxID int64)]
	// beforeResyncPage, if set, runs before each page of a view's resync
	// (tests change the mailbox between pages with it).
	beforeResyncPage atomic.Pointer[func(sel *view, page int)]
	// afterNotify, if set, sees every notification once notify has
	// queued it for its mailbox's runner (tests make a barrier of it with
	// store.Wake).
	afterNotify atomic.Pointer[func(ev store.MailboxChange)]

	mu          sync.Mutex
	boxes       map[int64]*watched
	resyncing   bool // a resync goroutine runs
	resyncAgain bool // and must run once more when done
	resyncs     int  // resyncs done (tests wait for the first)
}

// watched is one mailbox selected by at least one local session.
type watched struct {
	accountID, mailboxID int64
	refs                 int // guarded by feed.mu

	mu     sync.Mutex // serialises catch-ups and registrations
	modseq uint64     // highest modseq applied to every view
	// readAhead is the highest modseq of a state some view read for
	// itself (its SELECT snapshot, a page of its resync), which may be
	// ahead of modseq. A change that comes with its notification is a
	// past state: applied to such a view it would tell the client an
	// older state than it has. So up to readAhead the changes are read
	// instead (a read gives the present state).
	readAhead   uint64
	uidvalidity uint32 // of the mailbox the views selected
	gen         uint64 // bumped by every apply and registration
	views       map[*view]struct{}
	gone        atomic.Bool // set under mu; read by open under feed.mu alone
	// rows caches the rows of messages read recently (cache.go); every
	// change applied to the views is applied to it too.
	rows rowCache
	// recentUpTo is the highest UID a session of this process claimed
	// \Recent up to (recent.go): the others need not ask.
	recentUpTo atomic.Uint32

	kick sync.Mutex // guards the runner's to-do below
	// events are the wake-ups not yet handled, in commit order: with their
	// changes (inline), without (a read), or ModSeq 0 (a read whatever the
	// modseq). Past maxQueued they collapse into one read (overflow).
	events   []store.MailboxChange
	overflow bool
	running  bool // a runner goroutine exists
}

const (
	// maxPending is the default cap on a view's pending entries.
	maxPending = 10000
	// maxQueued bounds the events a runner holds; past it they collapse
	// into one read from the database.
	maxQueued = 64
	// catchUpRetry is the default pause before a failed catch-up is
	// tried again, doubled after each failure up to maxCatchUpRetry.
	catchUpRetry    = time.Second
	maxCatchUpRetry = 30 * time.Second
	// catchUpTimeout bounds one catch-up read, pool wait included.
	catchUpTimeout = 10 * time.Second
	// resyncBatch is how many mailboxes one resync query reads, at most:
	// fewer if their rows could exceed resyncRows (each may return
	// maxPending+1 updated and as many expunged).
	resyncBatch = 500
	resyncRows  = 500_000
	// maxResyncPasses is how often one poll begins a view's resync anew
	// when more changes overflow the view while its pages are written;
	// then the session ends with byeTooManyChanges.
	maxResyncPasses = 3
)

// errStaleEntry says a watched entry went gone under a registration: try
// again with a fresh one.
var errStaleEntry = errors.New("change feed: stale mailbox entry")

// errSnapshotBehind says a SELECT's snapshot is more changes behind its
// mailbox's other views than a registration reads: read it again.
var errSnapshotBehind = errors.New("change feed: snapshot far behind")

func newFeed(ctx context.Context, st *store.Store, log *slog.Logger) *feed {
	f := &feed{ctx: ctx, st: st, log: log, boxes: map[int64]*watched{}}
	f.maxPending.Store(maxPending)
	f.retry.Store(int64(catchUpRetry))
	return f
}

// open selects a mailbox for a session: it reads what SELECT needs of the
// mailbox in one snapshot (store.SelectMailboxByName), holding no lock of
// the feed, so that reading a large mailbox holds up no catch-up of its
// other views; then it registers a view that will receive every later
// change, brought level with the other views (register).
func (f *feed) open(ctx context.Context, accountID int64, name string, readOnly bool) (*view, *store.MailboxSnapshot, error) {
	for attempt := 0; ; attempt++ {
		snap, err := f.st.SelectMailboxByName(ctx, accountID, name)
		if err != nil {
			return nil, nil, err
		}
		w := f.entry(accountID, snap.Mailbox.ID)
		// Bringing the snapshot forward reads at most the views' cap of
		// changes under w.mu; past that, reading the mailbox again
		// without it is the cheaper way, except on the last attempt.
		limit := int(f.maxPending.Load())
		if attempt == 3 {
			limit = 0
		}
		sel, moved, err := f.register(ctx, w, snap, readOnly, limit)
		if err == nil && moved {
			// The snapshot was brought forward: its first unseen
			// message may have changed.
			if snap.FirstUnseen, err = f.st.FirstUnseenUID(ctx, accountID, snap.Mailbox.ID); err != nil {
				f.close(sel)
				return nil, nil, err
			}
		}
		if err == nil {
			return sel, snap, nil
		}
		// Not under w.mu: release takes feed.mu (lock order).
		f.release(w)
		if !errors.Is(err, errStaleEntry) && !errors.Is(err, errSnapshotBehind) || attempt == 3 {
			return nil, nil, err
		}
		// The entry went gone (deleted, or re-created with a new
		// UIDVALIDITY), or the snapshot was of a mailbox since re-created
		// or far behind: read again; the next entry call makes a fresh
		// entry if needed.
	}
}

// entry returns the mailbox's live entry, making one if there is none or
// the one there is gone, and takes a reference.
func (f *feed) entry(accountID, mailboxID int64) *watched {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.boxes[mailboxID]
	if w == nil || w.accountID != accountID || w.gone.Load() {
		// A gone entry was deleted (or made \Noselect, or re-created)
		// while selected: its views end with BYE; new views need an
		// entry that catch-ups do not skip.
		nw := &watched{accountID: accountID, mailboxID: mailboxID, views: map[*view]struct{}{}}
		nw.rows.total, nw.rows.limit = &f.rowsCached, processRowMax
		if w == nil || w.accountID == accountID {
			f.boxes[mailboxID] = nw
		}
		w = nw
	}
	w.refs++
	return w
}

// register adds a view built from snap, which was read without w.mu, and
// reports whether it had to bring snap forward (then snap holds the newer
// state, except FirstUnseen), reading at most limit changes (0: all;
// errSnapshotBehind past it). The view must miss no change: every change
// after the modseq it starts from reaches it through catch-ups, which read
// from w.modseq. With other views, w.modseq says what they were given; for
// the first view it says nothing (a catch-up skips an entry without views,
// so changes announced since the read may be lost), and one row read under
// w.mu says where the mailbox is now.
func (f *feed) register(ctx context.Context, w *watched, snap *store.MailboxSnapshot, readOnly bool, limit int) (*view, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Checked under w.mu, where gone is set: a view added to a gone
	// entry would never hear of a change again.
	if w.gone.Load() {
		return nil, false, errStaleEntry
	}
	mb := snap.Mailbox
	first := len(w.views) == 0
	need := w.modseq // the modseq the snapshot must reach
	switch {
	case first:
		now, err := f.st.MailboxByID(ctx, w.accountID, w.mailboxID)
		switch {
		case err != nil:
			return nil, false, err
		case now.NoSelect:
			return nil, false, store.ErrNoSelect
		case now.UIDValidity != mb.UIDValidity:
			return nil, false, errStaleEntry // re-created since the read
		}
		w.uidvalidity, need = mb.UIDValidity, now.HighestModSeq
	case mb.UIDValidity != w.uidvalidity && mb.HighestModSeq > w.modseq:
		// Deleted and re-created (a \Noselect placeholder made real
		// again) since the other views selected it, and no catch-up has
		// seen it yet: their mailbox is gone.
		f.goneLocked(w, byeRecreated)
		return nil, false, errStaleEntry
	case mb.UIDValidity != w.uidvalidity:
		// The other way round: the snapshot is of the mailbox deleted
		// before the other views selected its re-creation.
		return nil, false, errStaleEntry
	}
	moved := mb.HighestModSeq < need
	if moved {
		// Our snapshot is older than what the other views were given (or
		// than the mailbox now): bring it forward so that no change falls
		// between the two.
		chs, err := f.st.ChangesSinceMany(ctx, []store.ChangeQuery{{AccountID: w.accountID, MailboxID: w.mailboxID,
			ModSeq: mb.HighestModSeq, Limit: limit}})
		if err != nil {
			return nil, false, err
		}
		ch := chs[0]
		switch {
		case ch.Truncated:
			return nil, false, errSnapshotBehind
		case ch.Mailbox == nil:
			return nil, false, store.ErrNotFound
		case ch.Mailbox.NoSelect:
			return nil, false, store.ErrNoSelect
		case ch.Mailbox.UIDValidity != w.uidvalidity:
			f.goneLocked(w, byeRecreated)
			return nil, false, errStaleEntry
		}
		snap.UIDs = applyToList(snap.UIDs, ch)
		ch.Mailbox.Keywords = keywordsAfter(mb.Keywords, ch)
		snap.Mailbox, mb = ch.Mailbox, ch.Mailbox
	}
	if first {
		w.modseq = mb.HighestModSeq
	}
	// A snapshot newer than w.modseq is fine: the views apply changes
	// idempotently, so re-reading (w.modseq, snapshot] only repeats flags;
	// and up to the snapshot no change is applied from its notification
	// (readAhead), which would be a state older than the snapshot's.
	w.readAhead = max(w.readAhead, mb.HighestModSeq)
	sel := newView(w, snap.UIDs, readOnly)
	sel.limit = int(f.maxPending.Load())
	sel.told, sel.merged = mb.HighestModSeq, mb.HighestModSeq
	w.views[sel] = struct{}{}
	w.gen++
	return sel, moved, nil
}

// keywordsAfter is a mailbox's keyword list (sorted; it only grows) after
// the changes ch, which hold every message whose keywords changed.
func keywordsAfter(list []string, ch *store.Changes) []string {
	out := slices.Clone(list)
	have := make(map[string]bool, len(list))
	for _, k := range list {
		have[k] = true
	}
	for _, m := range ch.Updated {
		for _, fl := range m.Flags {
			if !strings.HasPrefix(fl, `\`) && !have[fl] {
				have[fl] = true
				out = append(out, fl)
			}
		}
	}
	slices.Sort(out)
	return out
}

// close unregisters a view.
func (f *feed) close(sel *view) {
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
		w.rows.clear() // its rows no longer count against the process's
	}
}

// notifySafely is notify for the Listen goroutine: a panic is logged, never
// allowed to end the process.
func (f *feed) notifySafely(ev store.MailboxChange) {
	defer func() {
		if v := recover(); v != nil {
			f.log.Error("change feed: panic", "event", ev, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	f.notify(ev)
}

// notify hands a change announced by another process (Store.Listen) to
// its mailbox's runner, without waiting for the database.
func (f *feed) notify(ev store.MailboxChange) {
	f.mu.Lock()
	w := f.boxes[ev.MailboxID]
	f.mu.Unlock()
	if w != nil {
		f.kickWith(w, ev)
	}
	if h := f.afterNotify.Load(); h != nil {
		(*h)(ev)
	}
}

// kick asks the mailbox's runner to catch up to modseq (0: whatever the
// modseq), starting it if it is not running.
func (f *feed) kick(w *watched, modseq uint64) {
	f.kickWith(w, store.MailboxChange{MailboxID: w.mailboxID, ModSeq: modseq})
}

// kickWith queues an event for the mailbox's runner, starting it if it is
// not running. An event with its changes is applied as it is if it
// follows on from what the views have, else the changes are read.
func (f *feed) kickWith(w *watched, ev store.MailboxChange) {
	w.kick.Lock()
	defer w.kick.Unlock()
	switch {
	case w.overflow:
		// A read is due anyway, and covers this event.
	case len(w.events) >= maxQueued:
		w.events, w.overflow = nil, true
	default:
		w.events = append(w.events, ev)
	}
	if !w.running {
		w.running = true
		go f.run(w)
	}
}

// run catches a mailbox up until nothing is asked of it any more. Being
// the only runner of its mailbox, it is also the only pending retry.
func (f *feed) run(w *watched) {
	retry := time.Duration(f.retry.Load())
	for {
		w.kick.Lock()
		events, overflow := w.events, w.overflow
		w.events, w.overflow = nil, false
		if (len(events) == 0 && !overflow) || f.ctx.Err() != nil {
			w.running = false
			w.kick.Unlock()
			return
		}
		w.kick.Unlock()
		if overflow {
			events = []store.MailboxChange{{MailboxID: w.mailboxID}} // a read
		}
		err := f.handleSafely(w, events)
		if err == nil {
			retry = time.Duration(f.retry.Load())
			continue
		}
		if f.ctx.Err() == nil {
			f.log.Error("change feed: catch up; retrying", "mailbox", w.mailboxID, "err", err, "in", retry)
		}
		// What was not applied is read from the modseq the views are at,
		// which loses nothing; do not wait for the next change to this
		// mailbox, which may never come. (Ahead of what came meanwhile:
		// the read covers that too.)
		w.kick.Lock()
		w.events = append([]store.MailboxChange{{MailboxID: w.mailboxID}}, w.events...)
		w.kick.Unlock()
		select {
		case <-f.ctx.Done():
		case <-time.After(retry):
		}
		retry = min(2*retry, maxCatchUpRetry)
	}
}

// handleSafely is handle for the runners: a panic is logged and
// counts as a failure (retried), never allowed to end the process.
func (f *feed) handleSafely(w *watched, events []store.MailboxChange) (err error) {
	defer func() {
		if v := recover(); v != nil {
			f.log.Error("change feed: panic catching up", "mailbox", w.mailboxID, "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	if h := f.beforeCatchUp.Load(); h != nil {
		(*h)(w.mailboxID)
	}
	ctx, cancel := context.WithTimeout(f.ctx, catchUpTimeout)
	defer cancel()
	return f.handle(ctx, w, events)
}

// readChanges brings every view of the mailbox up to date with the
// database: a local write that does not know all it changed calls it
// right after its commit (COPY, MOVE, DELETE, RENAME). It is a no-op for a
// mailbox no local session has selected. A failure is left to the
// mailbox's runner.
func (f *feed) readChanges(ctx context.Context, mailboxID int64) {
	f.applyOwn(ctx, store.MailboxChange{MailboxID: mailboxID}) // a wake-up: a read
}

// applyOwn is readChanges for a local write that knows everything it did to
// the mailbox (ev.Changes, at ev.ModSeq, of ev.UIDValidity): applied as it
// is when the views are at ev.ModSeq-1, which saves the read. Without
// Changes it is readChanges.
func (f *feed) applyOwn(ctx context.Context, ev store.MailboxChange) {
	f.mu.Lock()
	w := f.boxes[ev.MailboxID]
	f.mu.Unlock()
	if w == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if err := f.handle(ctx, w, []store.MailboxChange{ev}); err != nil {
		f.kick(w, 0)
	}
}

// applyOwnFlags is applyOwn for a session's flag change in its
// selected mailbox: changed is every message StoreFlags changed (all at
// one modseq), none if nothing changed.
func (f *feed) applyOwnFlags(ctx context.Context, mb *store.Mailbox, changed []store.MessageFlags) {
	if len(changed) > 0 {
		f.applyOwn(ctx, store.MailboxChange{MailboxID: mb.ID, ModSeq: changed[0].ModSeq, UIDValidity: mb.UIDValidity,
			Changes: &store.Changes{Updated: changed}})
	}
}

// cacheRow adds the row of a message a session of this process just
// stored at meta.ModSeq to its mailbox's row cache, if the feed has
// applied exactly up to that change (so the row is current).
func (f *feed) cacheRow(mailboxID int64, meta store.MessageMeta) {
	f.mu.Lock()
	w := f.boxes[mailboxID]
	f.mu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.modseq == meta.ModSeq && !w.gone.Load() {
		w.rows.put(w.rows.generation(), []store.MessageMeta{meta})
	}
}

// applyOwnExpunge is applyOwn for a session's EXPUNGE: the UIDs it
// removed, at one modseq (none: nothing to tell).
func (f *feed) applyOwnExpunge(ctx context.Context, mailboxID int64, gone *store.Expunged) {
	if len(gone.UIDs) > 0 {
		f.applyOwn(ctx, store.MailboxChange{MailboxID: mailboxID, ModSeq: gone.ModSeq, UIDValidity: gone.UIDValidity,
			Changes: &store.Changes{Expunged: gone.UIDs}})
	}
}

// handle handles events of the mailbox in commit order. An event
// with its changes that follows on from the views (the next modseq, the
// views' UIDVALIDITY, past readAhead) is applied as it is; one the views
// have already is
// skipped; any other (without changes, ModSeq 0, or after a gap: a change
// announced without its changes, or before the views' first read) makes
// it read the mailbox's changes, which covers every later event too, since
// each committed before it was handed over.
func (f *feed) handle(ctx context.Context, w *watched, events []store.MailboxChange) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range events {
		if w.gone.Load() || len(w.views) == 0 {
			return nil
		}
		switch {
		case ev.Changes != nil && ev.ModSeq == w.modseq+1 && ev.UIDValidity == w.uidvalidity && ev.ModSeq > w.readAhead:
			f.applyUpToLocked(w, ev.Changes, ev.ModSeq)
		case ev.ModSeq != 0 && ev.ModSeq <= w.modseq:
			// The views have it.
		default:
			chs, err := f.st.ChangesSinceMany(ctx, []store.ChangeQuery{f.query(w)})
			if err != nil {
				return err
			}
			f.applyLocked(w, chs[0])
			return nil
		}
	}
	return nil
}

// query asks for the changes to w after w.modseq, at most the views' cap
// of them: past it every view drops its pending changes and resyncs
// (store.Changes.Truncated), so a bulk change costs the read no more.
func (f *feed) query(w *watched) store.ChangeQuery {
	return store.ChangeQuery{AccountID: w.accountID, MailboxID: w.mailboxID, ModSeq: w.modseq, Limit: int(f.maxPending.Load())}
}

// BYE texts for a selected mailbox that went away.
const (
	byeDeleted        = "Selected mailbox was deleted, have to disconnect."
	byeRecreated      = "Selected mailbox was deleted and re-created (new UIDVALIDITY), have to disconnect."
	byeInternal       = "Internal error; please reconnect"
	byeTooManyChanges = "Too many changes to the selected mailbox at once; please reconnect"
)

// applyLocked hands changes read after w.modseq to every view; w.mu is
// held. A mailbox deleted, made \Noselect, or re-created with a new
// UIDVALIDITY (deleted with children, then created again: its UIDs are
// another mailbox's now) ends every session that has it selected with
// BYE at its next poll. BYE, rather than an unsolicited OK [UIDVALIDITY]:
// RFC 9051 has no way to replace a selected mailbox under a session, and
// the UIDs, sequence numbers and flags the client holds all belong to the
// mailbox that was deleted; reconnecting makes it SELECT afresh. Changes
// past the read's limit (Truncated) make every view drop its pending
// changes and resync; w.modseq moves to the mailbox's all the same.
func (f *feed) applyLocked(w *watched, ch *store.Changes) {
	switch {
	case ch.Mailbox == nil || ch.Mailbox.NoSelect:
		f.goneLocked(w, byeDeleted)
	case ch.Mailbox.UIDValidity != w.uidvalidity:
		f.goneLocked(w, byeRecreated)
	default:
		f.applyUpToLocked(w, ch, ch.Mailbox.HighestModSeq)
	}
}

// applyUpToLocked hands every view of w changes that bring the mailbox
// from w.modseq up to modseq; w.mu is held.
func (f *feed) applyUpToLocked(w *watched, ch *store.Changes, modseq uint64) {
	w.rows.apply(ch)
	for sel := range w.views {
		f.applySafely(sel, ch, modseq)
	}
	w.modseq = max(w.modseq, modseq)
	w.gen++
}

// goneLocked ends every view of w; w.mu is held.
func (f *feed) goneLocked(w *watched, why string) {
	w.gone.Store(true)
	w.rows.clear()
	for sel := range w.views {
		sel.markGone(why)
	}
}

// applySafely hands changes to one view. A panic (a bug in the view
// machinery) must not take down the process or the other sessions: that
// view is marked gone, so its session alone ends with BYE at its next poll.
func (f *feed) applySafely(sel *view, ch *store.Changes, modseq uint64) {
	defer func() {
		if v := recover(); v != nil {
			f.log.Error("change feed: panic applying changes; ending that session", "mailbox", sel.w.mailboxID, "panic", v,
				"stack", string(debug.Stack()))
			sel.markGone(byeInternal)
		}
	}()
	// Called with w.mu held: w.modseq is what ch was read after.
	sel.applyUpTo(ch, modseq, sel.w.modseq, true)
}

// resync re-reads every watched mailbox (after the LISTEN connection came
// back) on a goroutine of its own; a request while one runs makes it run
// once more.
func (f *feed) resync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resyncing {
		f.resyncAgain = true
		return
	}
	f.resyncing = true
	go func() {
		for {
			f.resyncAllSafely()
			f.mu.Lock()
			again := f.resyncAgain && f.ctx.Err() == nil
			f.resyncAgain, f.resyncing = false, again
			f.resyncs++
			f.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

func (f *feed) resyncAllSafely() {
	defer func() {
		if v := recover(); v != nil {
			f.log.Error("change feed: panic in resync; every mailbox is left to its runner", "panic", v, "stack", string(debug.Stack()))
			f.mu.Lock()
			all := f.all()
			f.mu.Unlock()
			for _, w := range all {
				f.kick(w, 0)
			}
		}
	}()
	f.mu.Lock()
	all := f.all()
	f.mu.Unlock()
	batch := max(1, min(resyncBatch, resyncRows/(2*(int(f.maxPending.Load())+1))))
	for len(all) > 0 {
		n := min(len(all), batch)
		f.resyncBatch(all[:n])
		all = all[n:]
	}
}

func (f *feed) all() []*watched {
	out := make([]*watched, 0, len(f.boxes))
	for _, w := range f.boxes {
		out = append(out, w)
	}
	return out
}

// resyncBatch catches up many mailboxes with one ChangesSinceMany read.
// The read is made without the mailboxes' locks; a mailbox whose entry
// changed meanwhile (another catch-up or a new view: the read may be
// older than what they saw) is left to its runner instead.
func (f *feed) resyncBatch(ws []*watched) {
	type base struct {
		w   *watched
		gen uint64
	}
	var bases []base
	var qs []store.ChangeQuery
	for _, w := range ws {
		w.mu.Lock()
		if !w.gone.Load() && len(w.views) > 0 {
			bases = append(bases, base{w, w.gen})
			qs = append(qs, f.query(w))
		}
		w.mu.Unlock()
	}
	if len(qs) == 0 {
		return
	}
	if h := f.beforeCatchUp.Load(); h != nil {
		for _, q := range qs {
			(*h)(q.MailboxID)
		}
	}
	ctx, cancel := context.WithTimeout(f.ctx, catchUpTimeout)
	chs, err := f.st.ChangesSinceMany(ctx, qs)
	cancel()
	if err != nil {
		if f.ctx.Err() == nil {
			f.log.Error("change feed: resync; leaving it to each mailbox", "mailboxes", len(qs), "err", err)
		}
		for _, b := range bases {
			f.kick(b.w, 0)
		}
		return
	}
	for i, b := range bases {
		w := b.w
		w.mu.Lock()
		fresh := w.gen == b.gen && !w.gone.Load()
		if fresh {
			f.applyLocked(w, chs[i])
		}
		w.mu.Unlock()
		if !fresh {
			f.kick(w, 0)
		}
	}
}

// resyncView brings a view that dropped its pending changes (past its
// limit, or a bulk change past what a catch-up reads) up to date, telling
// the client as it goes: it re-reads the changes after the last modseq the
// client was told everything of in pages of at most the view's limit
// (ascending UID, one snapshot each, read under w.mu so that no catch-up
// interleaves with a page) and hands each page's responses to write before
// reading the next, holding no lock. Catch-ups meanwhile merge the changes
// to the UIDs already re-read; later pages read the others. So memory
// stays within twice the limit however large the change. A view that
// overflows again meanwhile begins anew, at most maxResyncPasses times;
// then its session ends with BYE, and the client's reconnect reads the
// mailbox afresh in one SELECT. Errors from write are returned as they
// are.
func (f *feed) resyncView(ctx context.Context, sel *view, write func([]update) error) error {
	w := sel.w
	limit := sel.limit
	if limit <= 0 {
		limit = int(f.maxPending.Load())
	}
	for range maxResyncPasses {
		w.mu.Lock()
		if w.gone.Load() {
			w.mu.Unlock()
			return nil // the poll ends the session
		}
		base := sel.beginResync(w.modseq)
		w.mu.Unlock()
		var after uint32
		for page := 0; ; page++ {
			if sel.isGone() {
				return nil // a panic applying changes ended it: the poll says so
			}
			if h := f.beforeResyncPage.Load(); h != nil {
				(*h)(sel, page)
			}
			ups, next, step, err := f.resyncPage(ctx, sel, base, after, limit)
			if err != nil {
				return err
			}
			if len(ups) > 0 {
				if err := write(ups); err != nil {
					return err
				}
			}
			if step == resyncMore {
				after = next
				continue
			}
			if step != resyncAgain {
				return nil
			}
			break
		}
	}
	f.log.Warn("change feed: a view overflowed again and again while resyncing; ending its session", "mailbox", w.mailboxID)
	sel.markGone(byeTooManyChanges)
	return nil
}

// resyncPage reads one page of a view's resync under w.mu and merges it.
func (f *feed) resyncPage(ctx context.Context, sel *view, base uint64, after uint32, limit int) ([]update, uint32, resyncStep, error) {
	w := sel.w
	ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone.Load() {
		return nil, 0, resyncGone, nil
	}
	ch, err := f.st.ChangesPage(ctx, w.accountID, w.mailboxID, base, after, limit)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("resync view: %w", err)
	}
	if ch.Mailbox == nil || ch.Mailbox.NoSelect || ch.Mailbox.UIDValidity != w.uidvalidity {
		f.applyLocked(w, ch) // ends every view
		return nil, 0, resyncGone, nil
	}
	w.readAhead = max(w.readAhead, ch.Mailbox.HighestModSeq)
	ups, next, step := sel.resyncPage(ch)
	return ups, next, step, nil
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

// claimed records that a session claimed \Recent up to uid.
func (w *watched) claimed(uid uint32) {
	for {
		old := w.recentUpTo.Load()
		if uid <= old || w.recentUpTo.CompareAndSwap(old, uid) {
			return
		}
	}
}

// claimedUpTo is the highest UID claimed by a session of this process.
func (w *watched) claimedUpTo() uint32 { return w.recentUpTo.Load() }
