package imapd

import (
	"slices"
	"strconv"

	"github.com/mailstack/mailstack/store"
)

// MESSAGELIMIT (RFC 9738): the server announces the most messages one
// command processes. A FETCH past it answers the first ones (lowest UIDs)
// and ends OK [LIMIT]; a STORE, COPY, MOVE or UID EXPUNGE past it is
// refused whole with NO [LIMIT] and changes nothing, so that a client
// never has to work out which part of a write happened. SEARCH is one SQL
// statement whatever the mailbox's size and is not limited (PARTIAL bounds
// its answer); a plain EXPUNGE and CLOSE name no messages.

// DefaultMessageLimit is MESSAGELIMIT when Options.MessageLimit is 0. It is
// the span UIDBATCHES must serve (so one batch always fits one command)
// and high enough that clients unaware of the extension, which fetch the
// flags of "1:*" on every sync, keep working on any mailbox up to that
// size.
const DefaultMessageLimit = 100_000

func (o Options) messageLimit() int {
	if o.MessageLimit > 0 {
		return o.MessageLimit
	}
	return DefaultMessageLimit
}

// limitFetch keeps the first MESSAGELIMIT of a FETCH's messages and makes
// its tagged OK say so.
func (s *session) limitFetch(c *cmd, refs []msgRef) []msgRef {
	lim := s.srv.opts.messageLimit()
	if len(refs) <= lim {
		return refs
	}
	c.okCode = "LIMIT"
	c.okText = "FETCH answered the first " + strconv.Itoa(lim) + " messages only (MESSAGELIMIT); ask for the rest separately"
	return refs[:lim]
}

// checkLimit refuses a write to more than MESSAGELIMIT messages.
func (s *session) checkLimit(what string, n int) error {
	if lim := s.srv.opts.messageLimit(); n > lim {
		return no("LIMIT", what+" of "+strconv.Itoa(n)+" messages refused: at most "+strconv.Itoa(lim)+" at once (MESSAGELIMIT)")
	}
	return nil
}

// countIn counts the messages of the view in UID ranges (from resolve:
// ascending within each range, ranges possibly overlapping).
func (v *view) countIn(ranges []store.UIDRange) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	sorted := slices.Clone(ranges)
	slices.SortFunc(sorted, func(a, b store.UIDRange) int { return int(int64(a.Start) - int64(b.Start)) })
	n := 0
	var next uint32 // UIDs below next are counted already
	for _, r := range sorted {
		start := max(r.Start, next)
		if r.Stop < start {
			continue
		}
		i, _ := slices.BinarySearch(v.uids, start)
		j, found := slices.BinarySearch(v.uids, r.Stop)
		if found {
			j++
		}
		n += j - i
		if r.Stop == ^uint32(0) {
			break
		}
		next = r.Stop + 1
	}
	return n
}
