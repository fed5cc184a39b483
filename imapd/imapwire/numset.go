package imapwire

import (
	"strconv"

	"github.com/emersion/go-imap/v2"
)

// NumSet reads a sequence set ("1:4,7,9:*") as an imap.SeqSet, or as an
// imap.UIDSet when uid is set; "$" (RFC 5182, the saved search result)
// is imap.SearchRes() either way. Zero and numbers past 2^32-1 are
// syntax errors, never wrapped or taken as "*".
func (d *Decoder) NumSet(uid bool) (imap.NumSet, error) {
	if ok, err := d.Consume('$'); err != nil {
		return nil, err
	} else if ok {
		return imap.SearchRes(), nil
	}
	s, err := d.readWhile(func(b byte) bool { return b >= '0' && b <= '9' || b == ':' || b == ',' || b == '*' },
		"sequence set")
	if err != nil {
		return nil, err
	}
	var ranges []imap.SeqRange
	for len(s) > 0 {
		item := s
		rest := ""
		for i := 0; i < len(s); i++ {
			if s[i] == ',' {
				item, rest = s[:i], s[i+1:]
				if rest == "" {
					return nil, syntaxErr("Invalid sequence set: trailing comma")
				}
				break
			}
		}
		s = rest
		lo, hi := item, item
		for i := 0; i < len(item); i++ {
			if item[i] == ':' {
				lo, hi = item[:i], item[i+1:]
				break
			}
		}
		a, err := seqNumber(lo)
		if err != nil {
			return nil, err
		}
		b, err := seqNumber(hi)
		if err != nil {
			return nil, err
		}
		ranges = append(ranges, imap.SeqRange{Start: a, Stop: b})
	}
	if len(ranges) == 0 {
		return nil, syntaxErr("Empty sequence set")
	}
	if uid {
		set := make(imap.UIDSet, len(ranges))
		for i, r := range ranges {
			set[i] = imap.UIDRange{Start: imap.UID(r.Start), Stop: imap.UID(r.Stop)}
		}
		return set, nil
	}
	return imap.SeqSet(ranges), nil
}

// seqNumber parses an nz-number or "*" (0).
func seqNumber(s string) (uint32, error) {
	if s == "*" {
		return 0, nil
	}
	if s == "" {
		return 0, syntaxErr("Invalid sequence set")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, syntaxErr("Invalid message number %s", truncate(s))
	}
	if n == 0 {
		return 0, syntaxErr("Invalid message number 0")
	}
	return uint32(n), nil
}
