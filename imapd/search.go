package imapd

import (
	"context"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/store"
)

// searchUIDs evaluates an IMAP SEARCH over the session's current view.
// view[i] is the UID of sequence number i+1. Returns matching UIDs ascending.
//
// Only messages in the view can match: a message appended after the view
// was taken stays invisible until the view has it. "$" (SEARCHRES) stands
// for the empty set here; use searchUIDsSaved to give it a saved result.
func searchUIDs(ctx context.Context, st *store.Store, accountID, mailboxID int64, view []uint32, criteria *imap.SearchCriteria) ([]uint32, error) {
	return searchUIDsSaved(ctx, st, accountID, mailboxID, view, criteria, nil)
}

// searchUIDsSaved is searchUIDs with "$" (RFC 5182 SEARCHRES) standing for
// saved, the UIDs saved by the last SEARCH RETURN (SAVE) (nil: none saved,
// so "$" matches nothing).
func searchUIDsSaved(ctx context.Context, st *store.Store, accountID, mailboxID int64, view []uint32, criteria *imap.SearchCriteria, saved []uint32) ([]uint32, error) {
	if len(view) == 0 {
		return nil, nil
	}
	c := toStoreCriteria(criteria, view, saved)
	// Narrow the query to the view's UID range; the exact view is applied
	// below (messages after it are excluded here already).
	c.UIDs = append(c.UIDs, []store.UIDRange{{Start: view[0], Stop: view[len(view)-1]}})
	uids, err := st.Search(ctx, accountID, mailboxID, c)
	if err != nil {
		return nil, err
	}
	return intersectSorted(uids, view), nil
}

// rawHeaderKey prefixes the field name of a HEADER search key in the
// criteria the parser builds (go-imap's SearchCriteria has one list for
// FROM and HEADER From); a field name cannot hold NUL.
const rawHeaderKey = "\x00"

// toStoreCriteria converts an IMAP criterion; view may be empty only if
// the criterion has no sequence numbers and no "*" (see needsView).
func toStoreCriteria(in *imap.SearchCriteria, view []uint32, saved []uint32) *store.SearchCriteria {
	out := &store.SearchCriteria{}
	if in == nil {
		return out
	}
	var last uint32 // what "*" stands for
	if len(view) > 0 {
		last = view[len(view)-1]
	}
	for _, set := range in.SeqNum {
		out.UIDs = append(out.UIDs, seqSetToUIDs(set, view))
	}
	for _, set := range in.UID {
		if imap.IsSearchRes(set) {
			out.UIDs = append(out.UIDs, uidsToRanges(saved))
			continue
		}
		out.UIDs = append(out.UIDs, uidSetToRanges(set, last))
	}
	out.Since, out.Before = in.Since, in.Before
	out.SentSince, out.SentBefore = in.SentSince, in.SentBefore
	out.Larger, out.Smaller = in.Larger, in.Smaller
	for _, f := range in.Flag {
		out.Flag = append(out.Flag, string(f))
	}
	for _, f := range in.NotFlag {
		out.NotFlag = append(out.NotFlag, string(f))
	}
	for _, h := range in.Header {
		if k, raw := strings.CutPrefix(h.Key, rawHeaderKey); raw {
			out.RawHeader = append(out.RawHeader, store.HeaderMatch{Key: k, Value: h.Value})
			continue
		}
		out.Header = append(out.Header, store.HeaderMatch{Key: h.Key, Value: h.Value})
	}
	out.Body = append(out.Body, in.Body...)
	out.Text = append(out.Text, in.Text...)
	for i := range in.Not {
		out.Not = append(out.Not, *toStoreCriteria(&in.Not[i], view, saved))
	}
	for i := range in.Or {
		out.Or = append(out.Or, [2]store.SearchCriteria{
			*toStoreCriteria(&in.Or[i][0], view, saved),
			*toStoreCriteria(&in.Or[i][1], view, saved),
		})
	}
	if in.ModSeq != nil {
		out.ModSeq = in.ModSeq.ModSeq
	}
	return out
}

// seqSetToUIDs maps sequence numbers to UID ranges of a non-empty view:
// "*" is the last message, "n:*" with n beyond the view is "*:n" (the last
// message), a number beyond the view matches nothing. The result is never
// nil-equivalent to "no restriction": an empty slice matches nothing.
// Because the view is ascending and newer messages have larger UIDs, the
// UID range between two view entries holds no other live message of the
// view, so ranges map to ranges.
func seqSetToUIDs(set imap.SeqSet, view []uint32) []store.UIDRange {
	n := uint32(len(view))
	out := []store.UIDRange{}
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
		out = append(out, store.UIDRange{Start: view[a-1], Stop: view[b-1]})
	}
	return out
}

// uidSetToRanges resolves "*" in a UID set to the largest UID of the view
// (RFC 9051: "n:*" always includes the last message, even if n is larger).
func uidSetToRanges(set imap.UIDSet, last uint32) []store.UIDRange {
	out := []store.UIDRange{}
	for _, r := range set {
		a, b := uint32(r.Start), uint32(r.Stop)
		if a == 0 {
			a = last
		}
		if b == 0 {
			b = last
		}
		if a > b {
			a, b = b, a
		}
		out = append(out, store.UIDRange{Start: a, Stop: b})
	}
	return out
}

// uidsToRanges turns a UID list into ranges.
func uidsToRanges(uids []uint32) []store.UIDRange {
	uids = slices.Clone(uids)
	slices.Sort(uids)
	out := []store.UIDRange{}
	for _, u := range uids {
		if n := len(out); n > 0 && out[n-1].Stop+1 == u {
			out[n-1].Stop = u
			continue
		}
		out = append(out, store.UIDRange{Start: u, Stop: u})
	}
	return out
}

// intersectSorted returns the elements of a that are also in b; both are
// ascending.
func intersectSorted(a, b []uint32) []uint32 {
	var out []uint32
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}
