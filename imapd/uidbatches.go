package imapd

import (
	"strconv"
)

// UIDBATCHES (RFC 10022, draft-ietf-mailmaint-imap-uidbatches-22):
// "UIDBATCHES size [first:last]" splits the selected mailbox into batches
// of size messages, newest first, and answers the UID range of each:
//
//	C: a UIDBATCHES 1000 1:3
//	S: * UIDBATCHES (TAG "a") 215295:214296,214295:213190,213189:212001
//
// A phone then fetches batch after batch with UID FETCH (under UIDONLY it
// has no sequence numbers to count with). The last batch of the mailbox
// ends at UID 1 whether or not that message exists (§3.1.4).
//
// The batches are computed from the session's view: it holds the UIDs the
// client numbers, ascending, in memory already, so each batch boundary is
// one index into it (batch k starts at the (k-1)*size-th UID from the top)
// and the command costs no database round trip at all, whatever the
// mailbox's size. It also makes the batches agree with what the client has
// been told (EXISTS, VANISHED) rather than with messages it has not heard
// of yet.

// UIDBATCHES limits. The draft has servers accept batch sizes of 500 and
// more and serve ranges spanning 100,000 messages; smaller batches are
// accepted down to minBatchSize (tests, small mailboxes), larger spans up
// to maxBatchSpan messages (the response stays under a few hundred KB).
const (
	minBatchSize = 10
	maxBatchSpan = 1_000_000
)

// cmdUIDBatches is UIDBATCHES.
func (s *session) cmdUIDBatches(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	size, err := c.d.Number()
	if err != nil {
		return err
	}
	if size == 0 {
		return badCode("CLIENTBUG", "Invalid batch size")
	}
	first, last := uint32(1), uint32(0) // last 0: every batch
	if c.d.PeekIs(' ') {
		c.d.SP() //nolint:errcheck // peeked
		if first, err = c.d.Number(); err != nil {
			return err
		}
		if err := c.d.Expect(':', ":"); err != nil {
			return err
		}
		if last, err = c.d.Number(); err != nil {
			return err
		}
		if first == 0 || last == 0 || first > last {
			return badCode("CLIENTBUG", "Invalid batch range") // §3.1.5: BAD, not reordered
		}
	}
	if err := c.end(); err != nil {
		return err
	}
	if size < minBatchSize {
		return no("TOOFEW", "Batch size must be at least "+strconv.Itoa(minBatchSize))
	}
	sel := s.sel
	span := uint64(sel.count())
	if last != 0 {
		span = uint64(size) * uint64(last-first+1)
	}
	if span > maxBatchSpan {
		return no("TOOMANY", "UID ranges may span at most "+strconv.Itoa(maxBatchSpan)+" messages; ask for fewer batches")
	}
	e := s.enc
	e.Star().Raw("UIDBATCHES (TAG ").Quoted(c.tag).Byte(')')
	sep := byte(' ')
	sel.batches(size, first, last, func(hi, lo uint32) {
		e.Byte(sep).Num(hi).Byte(':').Num(lo)
		sep = ','
	})
	e.CRLF()
	return e.Err()
}

// batches calls fn with the UID range (highest, lowest) of batches first
// to last (0: to the end) of size messages each, counted from the newest
// message of the view. The last batch of the view ends at UID 1.
func (v *view) batches(size, first, last uint32, fn func(hi, lo uint32)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := uint64(len(v.uids))
	for k := uint64(first); last == 0 || k <= uint64(last); k++ {
		skip := (k - 1) * uint64(size) // messages above this batch
		if skip >= n {
			return
		}
		top := n - 1 - skip // index of the batch's highest UID
		lo := uint32(1)
		if top >= uint64(size) {
			lo = v.uids[top-uint64(size)+1]
		}
		fn(v.uids[top], lo)
	}
}
