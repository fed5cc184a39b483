package imapd

import (
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/store"
)

// view is one session's view of its selected mailbox: the UIDs in the
// order the client numbers them, plus the changes not yet told to the
// client. Pending changes are merged per UID rather than queued, so a
// session that never polls holds at most one entry per message of the
// mailbox, whatever the rate of changes; and past limit entries (a
// mailbox larger than that, changed wholesale) it drops them altogether
// and resyncs from the database at its next poll that may report
// EXPUNGE, in pages of at most limit changes (feed.resyncView).
type view struct {
	w        *watched
	readOnly bool
	wake     chan struct{} // IDLE wake-up, capacity 1
	limit    int           // cap on pending entries; 0: none

	mu       sync.Mutex
	uids     []uint32                // the client's view, ascending
	expunged map[uint32]struct{}     // in uids, expunged, not yet reported
	added    []uint32                // live, after uids, not yet reported (EXISTS)
	flags    map[uint32]pendingFlags // new flags of messages in uids, not yet reported
	gone     string                  // BYE text once the mailbox went away
	// merged is the modseq the view and its pending changes are at; told
	// the modseq the client was last told everything of (no pending
	// change left then). Changes after told are all the client may miss.
	merged, told uint64
	overflow     bool // pending changes dropped past limit: resync at the next poll
	// ahead holds the modseqs of flag states the client was told by its
	// own commands (STORE, FETCH setting \Seen) before the feed merged
	// them: a change at or below that modseq reaching the view later
	// (another session's earlier commit, applied after) is not news and
	// must not be told, or flags and MODSEQ would go backwards. Entries
	// go once merged has passed them.
	ahead map[uint32]uint64
	// resyncing says a resync has told the client afresh of UIDs up to
	// cursor only: merges leave changes to higher UIDs to its later pages.
	resyncing bool
	cursor    uint32

	// keywords are those the client has been told of in FLAGS, in order.
	keywords []string
	known    map[string]bool
	// recent are the UIDs this session was the first to be told of
	// (\Recent, RFC 3501), ascending ranges; recentUpTo is the highest
	// UID it tried to claim.
	recent     []store.UIDRange
	recentUpTo uint32
}

// pendingFlags is the newest flag state of one message not yet told to the
// client. sole says that it is the work of exactly one transaction and
// that the client had been told (or had no pending change of) the state
// before it: only then may a session's own STORE.SILENT drop it, because
// the client can work it out itself. Merged from several transactions, it
// may carry another session's change the client knows nothing of.
type pendingFlags struct {
	flags  []string
	modseq uint64 // the modseq of that state (CONDSTORE's MODSEQ)
	sole   bool
}

func newView(w *watched, uids []uint32, readOnly bool) *view {
	return &view{
		w:        w,
		readOnly: readOnly,
		wake:     make(chan struct{}, 1),
		uids:     uids,
		expunged: map[uint32]struct{}{},
		flags:    map[uint32]pendingFlags{},
	}
}

// applyToList applies changes to a plain UID list (a view nobody has seen
// yet).
func applyToList(uids []uint32, ch *store.Changes) []uint32 {
	if len(ch.Expunged) > 0 {
		gone := make(map[uint32]bool, len(ch.Expunged))
		for _, u := range ch.Expunged {
			gone[u] = true
		}
		uids = slices.DeleteFunc(uids, func(u uint32) bool { return gone[u] })
	}
	for _, m := range ch.Updated {
		if len(uids) == 0 || m.UID > uids[len(uids)-1] {
			uids = append(uids, m.UID)
		}
	}
	return uids
}

func (v *view) index(uid uint32) (int, bool) {
	return slices.BinarySearch(v.uids, uid)
}

func (v *view) maxKnown() uint32 {
	if n := len(v.added); n > 0 {
		return v.added[n-1]
	}
	if n := len(v.uids); n > 0 {
		return v.uids[n-1]
	}
	return 0
}

// applyUpTo merges changes read by the feed that bring the mailbox up to
// modseq (0: not known), after modseq base (if baseKnown). It is
// idempotent: the same change seen twice (a snapshot newer than the
// feed's modseq) changes nothing but a repeated FLAGS report. Every
// transaction raises a mailbox's modseq by exactly one, so changes up to
// base+1 are the work of one transaction; without a known base no flag
// change counts as sole (see pendingFlags).
func (v *view) applyUpTo(ch *store.Changes, modseq, base uint64, baseKnown bool) {
	one := baseKnown && modseq == base+1
	if v.merge(ch, modseq, one) {
		v.signal()
	}
}

func (v *view) merge(ch *store.Changes, modseq uint64, oneTx bool) (changed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mergeLocked(ch, modseq, oneTx, v.limit)
}

// mergeLocked merges changes up to modseq (0: not known).
func (v *view) mergeLocked(ch *store.Changes, modseq uint64, oneTx bool, limit int) (changed bool) {
	if v.overflow {
		// Everything after told is read again at the resync.
		return false
	}
	if ch.Truncated {
		// More changes than the feed reads at once (a bulk STORE):
		// more than limit too, so drop everything as past it.
		v.dropPending()
		return true
	}
	v.merged = max(v.merged, modseq)
	pending := len(v.expunged) + len(v.added) + len(v.flags)
	over := func() bool {
		if limit <= 0 || pending <= limit {
			return false
		}
		v.dropPending()
		return true
	}
	// A resync's later pages read the current state of higher UIDs.
	later := func(uid uint32) bool { return v.resyncing && uid > v.cursor }
	for _, uid := range ch.Expunged {
		if later(uid) {
			continue
		}
		if _, ok := v.index(uid); ok {
			// Only a message the view had is reported as expunged.
			if _, had := v.expunged[uid]; !had {
				pending++
			}
			v.expunged[uid] = struct{}{}
			if _, had := v.flags[uid]; had {
				delete(v.flags, uid)
				pending--
			}
			changed = true
			if over() {
				return true
			}
		} else if i, ok := slices.BinarySearch(v.added, uid); ok {
			// Created and expunged before the client heard of it: never shown.
			v.added = slices.Delete(v.added, i, i+1)
			pending--
		}
	}
	for _, m := range ch.Updated {
		if later(m.UID) {
			continue
		}
		if ms, ok := v.ahead[m.UID]; ok && m.ModSeq <= ms {
			continue
		}
		if m.UID > v.maxKnown() {
			v.added = append(v.added, m.UID)
			pending++
			changed = true
			if over() {
				return true
			}
			continue
		}
		if _, ok := v.index(m.UID); ok {
			if _, exp := v.expunged[m.UID]; !exp {
				_, had := v.flags[m.UID]
				v.flags[m.UID] = pendingFlags{flags: m.Flags, modseq: m.ModSeq, sole: oneTx && !had}
				if !had {
					pending++
				}
				changed = true
				if over() {
					return true
				}
			}
		}
		// Otherwise: not yet reported (the client fetches its flags), or
		// already expunged in this view.
	}
	if len(v.ahead) > 0 {
		maps.DeleteFunc(v.ahead, func(_ uint32, ms uint64) bool { return ms <= v.merged })
	}
	v.settle()
	return changed
}

// dropPending drops the pending changes, for a resync from told.
func (v *view) dropPending() {
	v.expunged, v.added, v.flags = map[uint32]struct{}{}, nil, map[uint32]pendingFlags{}
	v.overflow = true
}

// settle records that the client knows everything up to merged once no
// change is pending (and no resync is half done).
func (v *view) settle() {
	if !v.overflow && !v.resyncing && len(v.expunged) == 0 && len(v.added) == 0 && len(v.flags) == 0 {
		v.told = v.merged
	}
}

// needsResync reports whether the view dropped its pending changes.
func (v *view) needsResync() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.overflow
}

// beginResync starts (or starts over) a resync of a view that dropped its
// pending changes, with w.mu held: at is w.modseq, which every page read
// from now on is at least at. It returns the modseq to re-read the
// changes after: told, the last one the client was told everything of.
// Starting over from there after some pages repeats only flags: the
// expunges told are out of the view, the new messages told are in it.
func (v *view) beginResync(at uint64) (base uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.overflow, v.resyncing, v.cursor = false, true, 0
	v.expunged, v.added, v.flags = map[uint32]struct{}{}, nil, map[uint32]pendingFlags{}
	// The views have been given everything up to at; this one will have
	// been told all of it once the pages are done.
	v.merged = max(v.merged, at)
	return v.told
}

// resyncStep says how a resync goes on after a page.
type resyncStep int

const (
	resyncMore  resyncStep = iota // read the page after the cursor
	resyncDone                    // the view is up to date
	resyncAgain                   // it overflowed again: begin anew
	resyncGone                    // the mailbox went away: the poll ends the session
)

// resyncPage merges one page of the changes after the resync's base (read
// under w.mu: store.ChangesPage) and returns the responses that tell the
// client, as take(true) does, with whatever catch-ups merged meanwhile for
// the UIDs already re-read, and the UID the next page starts after. The
// last page (not Truncated) ends the resync.
func (v *view) resyncPage(ch *store.Changes) ([]update, uint32, resyncStep) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.overflow || !v.resyncing {
		return nil, 0, resyncAgain
	}
	v.cursor = math.MaxUint32
	if ch.Truncated {
		v.cursor = 0
		for _, m := range ch.Updated {
			v.cursor = max(v.cursor, m.UID)
		}
		for _, u := range ch.Expunged {
			v.cursor = max(v.cursor, u)
		}
	}
	// Without the modseq: a page's snapshot may be newer than what the
	// lower UIDs were told (merged stays the feed's); a page is never
	// Truncated to the merge.
	v.mergeLocked(&store.Changes{Updated: ch.Updated, Expunged: ch.Expunged}, 0, false, 0)
	if ch.Truncated {
		return v.takeLocked(true), v.cursor, resyncMore
	}
	v.resyncing, v.cursor = false, 0
	return v.takeLocked(true), 0, resyncDone
}

// markGone ends the view: its session is told why with BYE at its next
// poll.
func (v *view) markGone(why string) {
	v.mu.Lock()
	if v.gone == "" {
		v.gone = why
	}
	v.mu.Unlock()
	v.signal()
}

func (v *view) isGone() bool {
	_, gone := v.goneReason()
	return gone
}

func (v *view) goneReason() (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gone, v.gone != ""
}

func (v *view) signal() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// reported records that the client knows these flags of a message from
// its own command: told in the command's FETCH responses (STORE, FETCH
// with implicit \Seen), or set by its own STORE .SILENT, so the poll need
// not repeat them. Only a pending change that is the work of that one
// transaction alone is dropped: a pending state merged from several
// transactions may include another session's change (say +FLAGS $Other
// committed just before this session's +FLAGS.SILENT \Seen) that the
// client was never told, and dropping it would leave the client's flags
// wrong for good. Reporting a state the client already knows is harmless.
//
// modseq is that of the state told: a pending change older than it is
// dropped, and one merged later is ignored (see ahead).
func (v *view) reported(uid uint32, flags []string, modseq uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p, ok := v.flags[uid]; ok && (p.sole && slices.Equal(p.flags, flags) || p.modseq < modseq) {
		delete(v.flags, uid)
	}
	if modseq > v.merged && len(v.ahead) < maxAhead {
		if v.ahead == nil {
			v.ahead = map[uint32]uint64{}
		}
		v.ahead[uid] = max(v.ahead[uid], modseq)
	}
}

// maxAhead bounds view.ahead; past it a late change may be told again
// (flags briefly going back), which only a bulk STORE racing the feed
// could cause.
const maxAhead = 10_000

type update struct {
	expunge uint32 // sequence number (of uid), or
	exists  uint32 // message count, or
	seq     uint32 // FETCH FLAGS of seq/uid
	uid     uint32
	flags   []string
	modseq  uint64 // of the flags
}

// take moves the pending changes into the client's view and returns the
// responses that tell the client: EXPUNGEs numbered in the view as it was,
// highest first, then EXISTS, then FETCH FLAGS. Without allowExpunge
// (during FETCH, STORE, SEARCH; RFC 9051 §7.5.1) expunged messages stay in
// the view, still numbered, until a command that allows them.
func (v *view) take(allowExpunge bool) []update {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.takeLocked(allowExpunge)
}

func (v *view) takeLocked(allowExpunge bool) []update {
	var out []update
	if allowExpunge && len(v.expunged) > 0 {
		kept := v.uids[:0:0]
		for i := len(v.uids) - 1; i >= 0; i-- {
			if _, ok := v.expunged[v.uids[i]]; ok {
				out = append(out, update{expunge: uint32(i + 1), uid: v.uids[i]})
			}
		}
		for _, u := range v.uids {
			if _, ok := v.expunged[u]; !ok {
				kept = append(kept, u)
			}
		}
		v.uids = kept
		clear(v.expunged)
	}
	if len(v.added) > 0 {
		v.uids = append(v.uids, v.added...)
		v.added = nil
		out = append(out, update{exists: uint32(len(v.uids))})
	}
	if len(v.flags) > 0 {
		start := len(out)
		for uid, p := range v.flags {
			if i, ok := v.index(uid); ok {
				out = append(out, update{seq: uint32(i + 1), uid: uid, flags: p.flags, modseq: p.modseq})
			}
		}
		sort.Slice(out[start:], func(a, b int) bool { return out[start+a].seq < out[start+b].seq })
		clear(v.flags)
	}
	v.settle()
	return out
}

// count is the number of messages the client knows of.
func (v *view) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.uids)
}

// seqOf returns the client's sequence number of uid, or 0.
func (v *view) seqOf(uid uint32) uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if i, ok := v.index(uid); ok {
		return uint32(i + 1)
	}
	return 0
}

// resolve turns a client's message set into UID ranges for SQL. Sequence
// numbers are looked up in the view, never in the database; UID ranges are
// clipped to the highest UID the client knows, so that no command touches
// a message the client has not been told about. searchRes is the saved
// SEARCH result, for "$".
func (v *view) resolve(set imap.NumSet, searchRes []uint32) ([]store.UIDRange, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.resolveLocked(set, searchRes)
}

func (v *view) resolveLocked(set imap.NumSet, searchRes []uint32) ([]store.UIDRange, error) {
	n := uint32(len(v.uids))
	if seqs, ok := set.(imap.SeqSet); ok {
		// RFC 3501 §6.4.8 / Dovecot: a sequence number beyond the
		// mailbox is an error, not an empty match ("*" always resolves).
		for _, r := range seqs {
			if r.Start > n || r.Stop > n {
				if n > 0 || (r.Start != 1 || r.Stop != 0) {
					return nil, bad("Invalid message sequence number")
				}
			}
		}
	}
	if n == 0 {
		return nil, nil
	}
	var out []store.UIDRange
	switch set := set.(type) {
	case imap.SeqSet:
		for _, r := range set {
			a, b := r.Start, r.Stop
			if a == 0 {
				a = n
			}
			if b == 0 {
				b = n
			}
			if a > b {
				a, b = b, a
			}
			if a > n {
				continue
			}
			b = min(b, n)
			out = append(out, store.UIDRange{Start: v.uids[a-1], Stop: v.uids[b-1]})
		}
	case imap.UIDSet:
		top := v.uids[n-1]
		if imap.IsSearchRes(set) {
			for _, u := range searchRes {
				if u <= top {
					out = append(out, store.UIDRange{Start: u, Stop: u})
				}
			}
			return out, nil
		}
		for _, r := range set {
			a, b := uint32(r.Start), uint32(r.Stop)
			if a == 0 {
				a = top
			}
			if b == 0 {
				b = top
			}
			if a > b {
				a, b = b, a
			}
			if a > top {
				continue
			}
			out = append(out, store.UIDRange{Start: a, Stop: min(b, top)})
		}
	}
	return out, nil
}

// snapshot copies the client's view (for SEARCH).
func (v *view) snapshot() []uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.uids)
}

func fromIMAPFlags(fs []imap.Flag) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, string(f))
	}
	return out
}

// setKeywords sets the keywords SELECT announced.
func (v *view) setKeywords(kws []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keywords = slices.Clone(kws)
	v.known = make(map[string]bool, len(kws))
	for _, k := range kws {
		v.known[strings.ToLower(k)] = true
	}
}

// keywordList returns the keywords announced so far.
func (v *view) keywordList() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.keywords)
}

// learnKeywords adds the keywords among flags that were not announced yet
// and reports whether there were any (a new FLAGS response is due).
func (v *view) learnKeywords(flags []string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	added := false
	for _, f := range flags {
		if strings.HasPrefix(f, `\`) {
			continue
		}
		if k := strings.ToLower(f); !v.known[k] {
			if v.known == nil {
				v.known = map[string]bool{}
			}
			v.known[k] = true
			v.keywords = append(v.keywords, f)
			added = true
		}
	}
	return added
}

// addRecent records that the session claimed UIDs [first, upTo] as recent.
func (v *view) addRecent(first, upTo uint32) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if first != 0 && first <= upTo {
		v.recent = append(v.recent, store.UIDRange{Start: first, Stop: upTo})
	}
	v.recentUpTo = max(v.recentUpTo, upTo)
}

// isRecent reports whether uid is \Recent for this session.
func (v *view) isRecent(uid uint32) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	i, _ := slices.BinarySearchFunc(v.recent, uid, func(r store.UIDRange, u uint32) int {
		switch {
		case r.Stop < u:
			return -1
		case r.Start > u:
			return 1
		}
		return 0
	})
	return i < len(v.recent) && v.recent[i].Start <= uid && uid <= v.recent[i].Stop
}

// recentCount counts the messages of the view that are \Recent.
func (v *view) recentCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, r := range v.recent {
		i, _ := slices.BinarySearch(v.uids, r.Start)
		j, found := slices.BinarySearch(v.uids, r.Stop)
		if found {
			j++
		}
		n += j - i
	}
	return n
}

// maxAdded is the highest UID the view knows of, told or pending.
func (v *view) maxAdded() uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.maxKnown()
}

// recentSet returns the session's \Recent UIDs as a UID set (empty, not
// nil-like, when there are none: it then matches nothing).
func (v *view) recentSet() imap.UIDSet {
	v.mu.Lock()
	defer v.mu.Unlock()
	set := imap.UIDSet{}
	for _, r := range v.recent {
		set = append(set, imap.UIDRange{Start: imap.UID(r.Start), Stop: imap.UID(r.Stop)})
	}
	return set
}

// recentClaimedUpTo is the highest UID the session tried to claim.
func (v *view) recentClaimedUpTo() uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.recentUpTo
}

// msgRef is a message of the view a command addresses: its UID and the
// sequence number the client knows it by.
type msgRef struct{ uid, seq uint32 }

// refs resolves a client's message set against the view (resolve's rules)
// in one pass under its lock: the messages it addresses, ascending. The
// sequence numbers stay valid for the command: the view changes only at
// the poll after it.
func (v *view) refs(set imap.NumSet, searchRes []uint32) ([]msgRef, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ranges, err := v.resolveLocked(set, searchRes)
	if err != nil || len(ranges) == 0 {
		return nil, err
	}
	var out []msgRef
	for _, r := range ranges {
		i, _ := slices.BinarySearch(v.uids, r.Start)
		for ; i < len(v.uids) && v.uids[i] <= r.Stop; i++ {
			out = append(out, msgRef{uid: v.uids[i], seq: uint32(i + 1)})
		}
	}
	if len(ranges) > 1 {
		// Ranges of a set may come in any order and overlap.
		slices.SortFunc(out, func(a, b msgRef) int { return int(a.seq) - int(b.seq) })
		out = slices.CompactFunc(out, func(a, b msgRef) bool { return a.seq == b.seq })
	}
	return out, nil
}

// refRanges turns refs (ascending) into UID ranges for SQL: a run of
// consecutive sequence numbers is one range, which holds no other message
// of the view.
func refRanges(refs []msgRef) []store.UIDRange {
	var out []store.UIDRange
	for i, r := range refs {
		if n := len(out); n > 0 && refs[i-1].seq+1 == r.seq {
			out[n-1].Stop = r.uid
			continue
		}
		out = append(out, store.UIDRange{Start: r.uid, Stop: r.uid})
	}
	return out
}

// toldModSeq is the modseq the client has been told everything of: what
// HIGHESTMODSEQ may say without making it miss a change.
func (v *view) toldModSeq() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.told
}

// has reports whether uid is in the client's view.
func (v *view) has(uid uint32) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.index(uid)
	return ok
}
