package imapd

import (
	"strconv"
	"strings"

	"github.com/mailstack/mailstack/imapd/imapwire"
)

// PARTIAL (RFC 9394): a SEARCH return option and a FETCH modifier that
// keep only a window of the messages, counted in the ascending order of
// the result: "1:100" is the first hundred, "-1:-100" the last hundred.
// A phone pages through a large mailbox newest first with
// "UID SEARCH RETURN (PARTIAL -1:-50) UNSEEN" or
// "UID FETCH 1:* (FLAGS) (PARTIAL -1:-50)".

// partialRange is a PARTIAL range, normalised so that lo <= hi: positions
// lo to hi (1-based) from the first message, or from the last when last.
type partialRange struct {
	lo, hi uint32
	last   bool
}

// parsePartialRange reads a range ("1:500" or "-1:-500") as an atom.
func parsePartialRange(d *imapwire.Decoder) (*partialRange, error) {
	a, err := d.Atom()
	if err != nil {
		return nil, err
	}
	return partialRangeOf(a)
}

// partialRangeOf parses a range; the ends may come in either order, both
// negative or both positive, never 0.
func partialRangeOf(a string) (*partialRange, error) {
	x, y, ok := strings.Cut(a, ":")
	if !ok {
		return nil, bad("Invalid PARTIAL range " + truncate(a))
	}
	neg := strings.HasPrefix(x, "-")
	if neg != strings.HasPrefix(y, "-") {
		return nil, bad("Invalid PARTIAL range " + truncate(a))
	}
	num := func(s string) (uint32, bool) {
		s = strings.TrimPrefix(s, "-")
		if s == "" || s[0] < '1' || s[0] > '9' {
			return 0, false
		}
		n, err := strconv.ParseUint(s, 10, 32)
		return uint32(n), err == nil
	}
	lo, ok1 := num(x)
	hi, ok2 := num(y)
	if !ok1 || !ok2 {
		return nil, bad("Invalid PARTIAL range " + truncate(a))
	}
	return &partialRange{lo: min(lo, hi), hi: max(lo, hi), last: neg}, nil
}

// String spells the range for the ESEARCH response.
func (p *partialRange) String() string {
	if p.last {
		return "-" + strconv.FormatUint(uint64(p.lo), 10) + ":-" + strconv.FormatUint(uint64(p.hi), 10)
	}
	return strconv.FormatUint(uint64(p.lo), 10) + ":" + strconv.FormatUint(uint64(p.hi), 10)
}

// window returns the half-open index range [i, j) of n ascending items
// that the range selects.
func (p *partialRange) window(n int) (int, int) {
	lo, hi := int(p.lo), int(p.hi)
	if lo > n {
		return 0, 0
	}
	if p.last {
		return max(0, n-hi), n - lo + 1
	}
	return lo - 1, min(hi, n)
}

// partialOf cuts the window out of ascending items; a nil range keeps
// them all.
func partialOf[T any](p *partialRange, items []T) []T {
	if p == nil {
		return items
	}
	i, j := p.window(len(items))
	return items[i:j]
}

// refs applies a FETCH's PARTIAL modifier to its messages.
func (p *partialRange) refs(refs []msgRef) []msgRef { return partialOf(p, refs) }

// writePartial writes " PARTIAL (range set)" of an ESEARCH response, NIL
// for an empty window.
func writePartial(e *imapwire.Encoder, p *partialRange, nums []uint32) {
	e.Raw(" PARTIAL (").Raw(p.String()).SP()
	if len(nums) == 0 {
		e.Raw("NIL")
	} else {
		writeSet(e, nums)
	}
	e.Byte(')')
}
