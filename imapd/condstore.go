package imapd

import (
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/store"
)

// CONDSTORE and QRESYNC (RFC 7162): the store keeps a modseq per message
// change and a tombstone per expunge (ARCHITECTURE.md, "Data model");
// this file puts them on the wire.

// enableCondstore records a CONDSTORE-enabling command (RFC 7162 §3.1).
// With a mailbox selected, the client learns its HIGHESTMODSEQ now: it
// may not have been told at SELECT whether it would need it.
func (s *session) enableCondstore() {
	if s.condstore {
		return
	}
	s.condstore = true
	if s.sel != nil {
		s.enc.Star().Raw("OK [HIGHESTMODSEQ ").Num64(s.sel.toldModSeq()).Raw("] Highest").CRLF()
	}
}

// modseqArg reads a mod-sequence value (RFC 7162 §7: at most 2^63-1).
func modseqArg(d *imapwire.Decoder) (uint64, error) {
	n, err := d.Number64()
	if err != nil {
		return 0, err
	}
	if n > 1<<63-1 {
		return 0, bad("Invalid mod-sequence")
	}
	return n, nil
}

// writeModSeq writes " MODSEQ (n)" inside a FETCH response.
func writeModSeq(e *imapwire.Encoder, modseq uint64) {
	e.Raw(" MODSEQ (").Num64(modseq).Byte(')')
}

// writeVanished writes "* VANISHED [(EARLIER) ]uids" for ascending UIDs.
func writeVanished(e *imapwire.Encoder, earlier bool, uids []uint32) {
	if len(uids) == 0 {
		return
	}
	e.Star().Raw("VANISHED ")
	if earlier {
		e.Raw("(EARLIER) ")
	}
	writeSet(e, uids)
	e.CRLF()
}

// qresyncParams are SELECT's QRESYNC parameter (RFC 7162 §3.2.5).
type qresyncParams struct {
	uidValidity uint32
	modseq      uint64
	known       []store.UIDRange // known-uids; nil: all
	seqMatch    bool             // seq-match-data was given
}

// knows reports whether uid is among the client's known UIDs.
func (q *qresyncParams) knows(uid uint32) bool {
	if q.known == nil {
		return true
	}
	for _, r := range q.known {
		if uid >= r.Start && (r.Stop == 0 || uid <= r.Stop) {
			return true
		}
	}
	return false
}

// parseQresync reads "(uidvalidity modseq [known-uids [(seq-match-data)]])"
// after "QRESYNC ". The sequence match data only helps a server that has
// forgotten expunges; this one keeps every tombstone, so it is checked
// for syntax and not used.
func parseQresync(d *imapwire.Decoder) (*qresyncParams, error) {
	q := &qresyncParams{}
	if err := d.Expect('(', "("); err != nil {
		return nil, err
	}
	n, err := d.Number()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, bad("Invalid UIDVALIDITY")
	}
	q.uidValidity = n
	if err := d.SP(); err != nil {
		return nil, err
	}
	if q.modseq, err = modseqArg(d); err != nil {
		return nil, err
	}
	if d.PeekIs(' ') {
		d.SP() //nolint:errcheck // peeked
		if !d.PeekIs('(') {
			set, err := uidRangesArg(d)
			if err != nil {
				return nil, err
			}
			q.known = set
			if d.PeekIs(' ') {
				d.SP() //nolint:errcheck // peeked
			}
		}
		if d.PeekIs('(') {
			d.Consume('(') //nolint:errcheck // peeked
			q.seqMatch = true
			if _, err := d.NumSet(false); err != nil {
				return nil, err
			}
			if err := d.SP(); err != nil {
				return nil, err
			}
			if _, err := uidRangesArg(d); err != nil {
				return nil, err
			}
			if err := d.Expect(')', ")"); err != nil {
				return nil, err
			}
		}
	}
	if err := d.Expect(')', ")"); err != nil {
		return nil, err
	}
	return q, nil
}

// uidRangesArg reads a UID set that cannot be "$" (known-uids).
func uidRangesArg(d *imapwire.Decoder) ([]store.UIDRange, error) {
	set, err := d.NumSet(true)
	if err != nil {
		return nil, err
	}
	uids, ok := set.(imap.UIDSet)
	if !ok || imap.IsSearchRes(set) {
		return nil, bad("Invalid UID set")
	}
	out := make([]store.UIDRange, 0, len(uids))
	for _, r := range uids {
		a, b := uint32(r.Start), uint32(r.Stop)
		if a > b && b != 0 || a == 0 {
			a, b = b, a
		}
		out = append(out, store.UIDRange{Start: a, Stop: b})
	}
	return out, nil
}

// qresyncPage is how many changes a QRESYNC SELECT or a UID FETCH
// (VANISHED) reads at once: memory stays bounded whatever the gap.
const qresyncPage = 5000

// resyncSince tells a client that selected with QRESYNC what changed since
// its modseq (RFC 7162 §3.2.5.1): VANISHED (EARLIER) for the messages
// expunged since, then FETCH (UID FLAGS MODSEQ) for those changed,
// restricted to its known UIDs. Both are made consistent with the view
// the SELECT just reported: a message expunged after that snapshot is
// still in the view and goes out as VANISHED at a poll, which also
// renumbers; a message not yet in the view comes with EXISTS.
func (s *session) resyncSince(sel *view, q *qresyncParams) error {
	var after uint32
	for {
		ch, err := s.srv.st.ChangesPage(s.ctx, s.accountID(), s.mailbox.ID, q.modseq, after, qresyncPage)
		if err != nil {
			return storeError(err, "SELECT")
		}
		var gone []uint32
		for _, u := range ch.Expunged {
			if q.knows(u) && !sel.has(u) {
				gone = append(gone, u)
			}
			after = max(after, u)
		}
		writeVanished(s.enc, true, gone)
		for _, m := range ch.Updated {
			after = max(after, m.UID)
			seq := sel.seqOf(m.UID)
			if seq == 0 || !q.knows(m.UID) {
				continue
			}
			s.announce(m.Flags)
			s.fetchHead(seq, m.UID)
			s.uidItem(m.UID)
			s.enc.Raw("FLAGS ")
			s.flagList(m.UID, m.Flags)
			writeModSeq(s.enc, m.ModSeq)
			s.enc.Raw(")").CRLF()
		}
		if err := s.enc.Err(); err != nil || !ch.Truncated {
			return err
		}
	}
}

// modifiers reads FETCH's modifiers (RFC 7162 §3.1.4, §3.2.6; RFC 9394
// §3.2): "(CHANGEDSINCE n [VANISHED] [PARTIAL range])" in any order.
// CHANGEDSINCE implies the MODSEQ item.
func (r *fetchRequest) modifiers(d *imapwire.Decoder) error {
	err := d.List(func() error {
		a, err := d.Atom()
		if err != nil {
			return err
		}
		switch strings.ToUpper(a) {
		case "CHANGEDSINCE":
			if err := d.SP(); err != nil {
				return err
			}
			r.changedSince, err = modseqArg(d)
			r.hasChangedSince = true
			return err
		case "VANISHED":
			r.vanished = true
		case "PARTIAL":
			if err := d.SP(); err != nil {
				return err
			}
			r.partial, err = parsePartialRange(d)
			return err
		default:
			return bad("Unknown FETCH modifier " + truncate(a))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if r.vanished && !r.hasChangedSince {
		return bad("VANISHED needs CHANGEDSINCE")
	}
	if r.hasChangedSince && !r.has(fetchModSeq) {
		r.add(fetchModSeq, "MODSEQ")
	}
	return nil
}

// changedSince narrows a FETCH's messages to those changed after its
// CHANGEDSINCE (one query on the modseq index, however large the set),
// first writing VANISHED (EARLIER) for those of the set expunged since
// when asked. A message expunged but still in the view is left to the
// poll's VANISHED, which also renumbers.
func (s *session) changedSince(sel *view, set imap.NumSet, refs []msgRef, req *fetchRequest) ([]msgRef, error) {
	if req.vanished {
		ranges, err := sel.resolve(set, s.searchRes)
		if err != nil {
			return nil, err
		}
		if len(ranges) > 0 {
			gone, err := s.srv.st.ExpungedSince(s.ctx, s.accountID(), s.mailbox.ID, ranges, req.changedSince)
			if err != nil {
				return nil, storeError(err, "FETCH")
			}
			writeVanished(s.enc, true, slices.DeleteFunc(gone, sel.has))
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	changed, err := s.srv.st.ChangedSince(s.ctx, s.accountID(), s.mailbox.ID, refRanges(refs), req.changedSince)
	if err != nil {
		return nil, storeError(err, "FETCH")
	}
	return slices.DeleteFunc(refs, func(r msgRef) bool {
		_, ok := slices.BinarySearch(changed, r.uid)
		return !ok
	}), nil
}
