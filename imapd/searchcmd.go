package imapd

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/imapd/imapwire"
)

// maxSearchKeys bounds the keys of one SEARCH (nesting is bounded by the
// decoder's MaxDepth): each becomes SQL.
const maxSearchKeys = 1000

// searchParser reads search keys into go-imap's SearchCriteria.
type searchParser struct {
	d      *imapwire.Decoder
	keys   int
	modseq bool // a MODSEQ key was read: the answer carries a modseq
}

// criteria reads search keys up to the end of the command (top level) or
// the closing parenthesis, ANDed.
func (p *searchParser) criteria(c *imap.SearchCriteria, inList bool) error {
	for {
		if err := p.key(c); err != nil {
			return err
		}
		if inList && p.d.PeekIs(')') || !inList && p.d.AtEnd() {
			return nil
		}
		if err := p.d.SP(); err != nil {
			return err
		}
	}
}

// key reads one search key and ANDs it into c.
func (p *searchParser) key(c *imap.SearchCriteria) error {
	if p.keys++; p.keys > maxSearchKeys {
		return bad("Too many search keys")
	}
	d := p.d
	b, err := d.Peek()
	if err != nil {
		return err
	}
	switch {
	case b == '(':
		leave, err := d.Nest()
		if err != nil {
			return err
		}
		defer leave()
		d.Consume('(') //nolint:errcheck // peeked
		var sub imap.SearchCriteria
		if err := p.criteria(&sub, true); err != nil {
			return err
		}
		if err := d.Expect(')', ")"); err != nil {
			return err
		}
		c.And(&sub)
		return nil
	case b >= '0' && b <= '9' || b == '*' || b == '$':
		set, err := d.NumSet(false)
		if err != nil {
			return err
		}
		switch set := set.(type) {
		case imap.SeqSet:
			c.SeqNum = append(c.SeqNum, set)
		case imap.UIDSet: // "$"
			c.UID = append(c.UID, set)
		}
		return nil
	}
	a, err := d.Atom()
	if err != nil {
		return err
	}
	arg := func() (string, error) {
		if err := d.SP(); err != nil {
			return "", err
		}
		return d.AString()
	}
	date := func() (time.Time, error) {
		s, err := arg()
		if err != nil {
			return time.Time{}, err
		}
		t, err := time.Parse("2-Jan-2006", s)
		if err != nil {
			return time.Time{}, bad("Invalid date " + truncate(s))
		}
		return t, nil
	}
	num := func() (int64, error) {
		if err := d.SP(); err != nil {
			return 0, err
		}
		n, err := d.Number64()
		return int64(n), err
	}
	flag := func(f string, not bool) {
		if not {
			c.NotFlag = append(c.NotFlag, imap.Flag(f))
		} else {
			c.Flag = append(c.Flag, imap.Flag(f))
		}
	}
	header := func(name string) error {
		v, err := arg()
		c.Header = append(c.Header, imap.SearchCriteriaHeaderField{Key: name, Value: v})
		return err
	}
	switch strings.ToUpper(a) {
	case "ALL":
	case "ANSWERED", "DELETED", "FLAGGED", "SEEN", "DRAFT", "RECENT":
		flag(`\`+titleCase(a), false)
	case "UNANSWERED", "UNDELETED", "UNFLAGGED", "UNSEEN", "UNDRAFT":
		flag(`\`+titleCase(a[2:]), true)
	case "NEW":
		flag(`\Recent`, false)
		flag(`\Seen`, true)
	case "OLD":
		flag(`\Recent`, true)
	case "KEYWORD", "UNKEYWORD":
		if err := d.SP(); err != nil {
			return err
		}
		k, err := d.Atom()
		if err != nil {
			return err
		}
		flag(k, strings.EqualFold(a, "UNKEYWORD"))
	case "BCC", "CC", "FROM", "TO", "SUBJECT":
		return header(titleCase(a))
	case "HEADER":
		if err := d.SP(); err != nil {
			return err
		}
		name, err := d.AString()
		if err != nil {
			return err
		}
		// Matched against the field as written, addresses not parsed
		// (Dovecot's HEADER), unlike FROM/TO/CC/BCC.
		return header(rawHeaderKey + name)
	case "BODY", "TEXT":
		v, err := arg()
		if err != nil {
			return err
		}
		if strings.EqualFold(a, "BODY") {
			c.Body = append(c.Body, v)
		} else {
			c.Text = append(c.Text, v)
		}
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE":
		t, err := date()
		if err != nil {
			return err
		}
		var sub imap.SearchCriteria
		switch strings.ToUpper(a) {
		case "BEFORE":
			sub.Before = t
		case "ON":
			sub.Since, sub.Before = t, t.AddDate(0, 0, 1)
		case "SINCE":
			sub.Since = t
		case "SENTBEFORE":
			sub.SentBefore = t
		case "SENTON":
			sub.SentSince, sub.SentBefore = t, t.AddDate(0, 0, 1)
		case "SENTSINCE":
			sub.SentSince = t
		}
		c.And(&sub)
	case "LARGER", "SMALLER":
		n, err := num()
		if err != nil {
			return err
		}
		var sub imap.SearchCriteria
		if strings.EqualFold(a, "LARGER") {
			sub.Larger = n
		} else if n == 0 {
			// Nothing is smaller than 0 bytes; Smaller 0 means "no
			// limit" to SearchCriteria.
			sub.Not = []imap.SearchCriteria{{}}
		} else {
			sub.Smaller = n
		}
		c.And(&sub)
	case "UID":
		if err := d.SP(); err != nil {
			return err
		}
		set, err := d.NumSet(true)
		if err != nil {
			return err
		}
		c.UID = append(c.UID, set.(imap.UIDSet))
	case "MODSEQ":
		// RFC 7162 §3.1.5. A per-flag entry name is accepted and
		// answered with the message's modseq, which is never lower.
		if err := d.SP(); err != nil {
			return err
		}
		if b, err := d.Peek(); err == nil && (b < '0' || b > '9') {
			if _, err := d.AString(); err != nil {
				return err
			}
			if err := d.SP(); err != nil {
				return err
			}
			t, err := d.Atom()
			if err != nil {
				return err
			}
			if t = strings.ToLower(t); t != "priv" && t != "shared" && t != "all" {
				return bad("Invalid MODSEQ entry type")
			}
			if err := d.SP(); err != nil {
				return err
			}
		}
		ms, err := modseqArg(d)
		if err != nil {
			return err
		}
		p.modseq = true
		if c.ModSeq == nil || ms > c.ModSeq.ModSeq { // And leaves ModSeq out
			c.ModSeq = &imap.SearchCriteriaModSeq{ModSeq: ms}
		}
	case "NOT":
		leave, err := d.Nest()
		if err != nil {
			return err
		}
		defer leave()
		if err := d.SP(); err != nil {
			return err
		}
		var sub imap.SearchCriteria
		if err := p.key(&sub); err != nil {
			return err
		}
		c.Not = append(c.Not, sub)
	case "OR":
		leave, err := d.Nest()
		if err != nil {
			return err
		}
		defer leave()
		var pair [2]imap.SearchCriteria
		for i := range pair {
			if err := d.SP(); err != nil {
				return err
			}
			if err := p.key(&pair[i]); err != nil {
				return err
			}
		}
		c.Or = append(c.Or, pair)
	default:
		return bad("Unknown search key " + truncate(a))
	}
	return nil
}

// titleCase makes "ANSWERED" "Answered".
func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + strings.ToLower(s[1:])
}

// searchReturn is the RETURN options of an extended SEARCH (ESEARCH).
type searchReturn struct {
	extended             bool // RETURN was given: answer with ESEARCH
	min, max, all, count bool
	save                 bool
	partial              *partialRange // PARTIAL (RFC 9394)
}

// saveOnly says that RETURN asked for SAVE alone: no ESEARCH response.
func (r searchReturn) saveOnly() bool {
	return r.save && !r.min && !r.max && !r.count && !r.all && r.partial == nil
}

// cmdSearch is SEARCH and UID SEARCH. The matching itself is searchUIDs
// (search.go, with "$" standing for the saved result); this builds the
// response in sequence numbers or UIDs, with the ESEARCH return options,
// and saves the result for SEARCHRES.
func (s *session) cmdSearch(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	ret, err := parseSearchReturn(c.d, "SEARCH")
	if err != nil {
		return err
	}
	criteria, p, err := s.searchProgram(c)
	if err != nil {
		return err
	}
	if p.modseq {
		s.enableCondstore()
	}
	sel := s.sel
	view := sel.snapshot()
	s.recentCriteria(criteria)
	uids, err := searchUIDsSaved(s.ctx, s.srv.st, s.accountID(), s.mailbox.ID, view, criteria, s.searchRes)
	if err != nil {
		if ret.save {
			s.searchRes = nil // RFC 5182 §2.1: a failed SAVE leaves "$" empty
		}
		return storeError(err, "SEARCH")
	}
	if ret.save {
		s.searchRes = savedResult(uids, ret)
		if ret.saveOnly() {
			return nil // RETURN (SAVE) alone: no ESEARCH response
		}
	}
	nums := uids
	if !c.uid {
		nums = make([]uint32, len(uids))
		for i, u := range uids {
			j, _ := slices.BinarySearch(view, u)
			nums[i] = uint32(j + 1)
		}
	}
	e := s.enc
	if s.rev2 && !ret.extended {
		// IMAP4rev2 has no SEARCH response: ESEARCH ALL.
		ret.extended, ret.all = true, true
	}
	// With a MODSEQ key, the highest modseq of what is returned (RFC 7162
	// §3.1.5): of every match, or of the MIN and MAX messages only.
	modseq, err := s.resultModSeq(p, s.mailbox.ID, uids, ret)
	if err != nil {
		return storeError(err, "SEARCH")
	}
	if !ret.extended {
		writeNumbers(e, "SEARCH", nums, modseq)
		return nil
	}
	writeESearch(e, c, nums, ret, modseq)
	return nil
}

// searchProgram reads what SEARCH and ESEARCH end with: an optional
// charset and the search keys, up to the end of the command.
func (s *session) searchProgram(c *cmd) (*imap.SearchCriteria, *searchParser, error) {
	if peekWord(c.d, "CHARSET") {
		if err := c.d.SP(); err != nil {
			return nil, nil, err
		}
		if err := searchCharset(c.d); err != nil {
			return nil, nil, err
		}
	}
	return s.searchKeys(c)
}

// searchKeys reads search keys up to the end of the command; with
// UIDONLY, sequence numbers among them are refused.
func (s *session) searchKeys(c *cmd) (*imap.SearchCriteria, *searchParser, error) {
	p := &searchParser{d: c.d}
	var criteria imap.SearchCriteria
	if err := p.criteria(&criteria, false); err != nil {
		return nil, nil, err
	}
	if err := c.end(); err != nil {
		return nil, nil, err
	}
	if s.uidonly && hasSeqNums(&criteria) {
		return nil, nil, errUIDRequired(c.name)
	}
	return &criteria, p, nil
}

// resultModSeq is the highest modseq of what a SEARCH or SORT with a
// MODSEQ key returns (RFC 7162 §3.1.5): of every match, or of the MIN and
// MAX messages only; 0 without a MODSEQ key. uids are of the mailbox
// mailboxID (the selected one but for ESEARCH).
func (s *session) resultModSeq(p *searchParser, mailboxID int64, uids []uint32, ret searchReturn) (uint64, error) {
	if !p.modseq || len(uids) == 0 {
		return 0, nil
	}
	of := uids
	if ret.extended && !ret.all && !ret.count {
		of = savedResult(uids, ret)
	}
	return s.srv.st.MaxModSeq(s.ctx, s.accountID(), mailboxID, of)
}

// writeNumbers writes a SEARCH or SORT response: the numbers and, with a
// MODSEQ search key, the highest modseq (RFC 7162 §3.1.5).
func writeNumbers(e *imapwire.Encoder, name string, nums []uint32, modseq uint64) {
	e.Star().Raw(name)
	for _, n := range nums {
		e.SP().Num(n)
	}
	if modseq > 0 {
		e.Raw(" (MODSEQ ").Num64(modseq).Byte(')')
	}
	e.CRLF()
}

// writeESearch writes the ESEARCH response (RFC 4731, RFC 5267) of a
// SEARCH or SORT whose result is nums, in the order reported: MIN and MAX
// are its first and last, ALL keeps its order (ascending runs compacted).
func writeESearch(e *imapwire.Encoder, c *cmd, nums []uint32, ret searchReturn, modseq uint64) {
	e.Star().Raw("ESEARCH (TAG ").Quoted(c.tag).Raw(")")
	if c.uid {
		e.Raw(" UID")
	}
	writeESearchData(e, nums, ret, modseq)
}

// writeESearchData writes what follows an ESEARCH response's correlator
// and UID indicator, and the line's end.
func writeESearchData(e *imapwire.Encoder, nums []uint32, ret searchReturn, modseq uint64) {
	if len(nums) > 0 {
		if ret.all {
			e.Raw(" ALL ")
			writeSet(e, nums)
		}
		if ret.min {
			e.Raw(" MIN ").Num(nums[0])
		}
		if ret.max {
			e.Raw(" MAX ").Num(nums[len(nums)-1])
		}
	}
	if ret.count {
		e.Raw(" COUNT ").Num(uint32(len(nums)))
	}
	if ret.partial != nil {
		writePartial(e, ret.partial, partialOf(ret.partial, nums))
	}
	if modseq > 0 {
		e.Raw(" MODSEQ ").Num64(modseq)
	}
	e.CRLF()
}

// parseSearchReturn reads the RETURN options of an extended SEARCH or SORT
// (RFC 4731, RFC 5267) and the space after them, if the next word is
// RETURN.
func parseSearchReturn(d *imapwire.Decoder, command string) (searchReturn, error) {
	var ret searchReturn
	if !peekWord(d, "RETURN") {
		return ret, nil
	}
	ret.extended = true
	if err := d.SP(); err != nil {
		return ret, err
	}
	wantRange := false
	err := d.AtomList(func(o string) error {
		if wantRange {
			wantRange = false
			var err error
			ret.partial, err = partialRangeOf(o)
			return err
		}
		switch strings.ToUpper(o) {
		case "PARTIAL":
			if ret.partial != nil {
				return bad("PARTIAL given twice")
			}
			wantRange = true
		case "MIN":
			ret.min = true
		case "MAX":
			ret.max = true
		case "ALL":
			ret.all = true
		case "COUNT":
			ret.count = true
		case "SAVE":
			ret.save = true
		default:
			return bad("Unknown " + command + " return option " + truncate(o))
		}
		return nil
	})
	if err == nil && wantRange {
		err = bad("PARTIAL needs a range")
	}
	if err != nil {
		return ret, err
	}
	if ret.all && ret.partial != nil {
		return ret, bad("ALL and PARTIAL cannot be combined") // RFC 9394 §3.1
	}
	if !ret.min && !ret.max && !ret.count && !ret.save && ret.partial == nil {
		ret.all = true // RETURN () is RETURN (ALL)
	}
	return ret, d.SP()
}

// searchCharset reads a charset argument: UTF-8 and US-ASCII are
// supported (search strings are matched as UTF-8).
func searchCharset(d *imapwire.Decoder) error {
	cs, err := d.AString()
	if err != nil {
		return err
	}
	if !strings.EqualFold(cs, "UTF-8") && !strings.EqualFold(cs, "US-ASCII") {
		return no("BADCHARSET", "Unsupported charset; use UTF-8")
	}
	return d.SP()
}

// peekWord consumes word (case-insensitive) if the next atom is it.
// Search keys starting with R or C (RECENT, CC) are not eaten: only the
// whole word counts.
func peekWord(d *imapwire.Decoder, word string) bool {
	if !d.PeekWord(word) {
		return false
	}
	_, err := d.Atom()
	return err == nil
}

// writeSet writes ascending numbers as a compact sequence set.
func writeSet(e *imapwire.Encoder, nums []uint32) {
	e.Raw(string(appendSet(nil, nums)))
}

// appendSet appends ascending numbers to b as a compact sequence set
// ("1:3,7").
func appendSet(b []byte, nums []uint32) []byte {
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(nums[i]), 10)
		if j > i {
			b = append(b, ':')
			b = strconv.AppendUint(b, uint64(nums[j]), 10)
		}
		i = j + 1
	}
	return b
}

// savedResult is what SEARCH RETURN (SAVE ...) remembers (RFC 5182 §2.4,
// RFC 9394 §3.1): with MIN, MAX and/or PARTIAL but neither ALL nor COUNT,
// only the messages those report, ascending; otherwise the whole result.
func savedResult(uids []uint32, ret searchReturn) []uint32 {
	if ret.all || ret.count || !ret.min && !ret.max && ret.partial == nil {
		return uids
	}
	saved := []uint32{}
	if len(uids) == 0 {
		return saved
	}
	window := partialOf(ret.partial, uids)
	if ret.partial == nil {
		window = nil
	}
	if ret.min && (len(window) == 0 || window[0] != uids[0]) {
		saved = append(saved, uids[0])
	}
	saved = append(saved, window...)
	if last := uids[len(uids)-1]; ret.max && (len(saved) == 0 || saved[len(saved)-1] != last) {
		saved = append(saved, last)
	}
	return saved
}

// recentCriteria replaces \Recent in flag criteria by the session's
// recent UIDs: \Recent is per session, not stored with the message.
func (s *session) recentCriteria(c *imap.SearchCriteria) {
	recent := s.sel.recentSet()
	c.Flag = slices.DeleteFunc(c.Flag, func(f imap.Flag) bool {
		if strings.EqualFold(string(f), `\Recent`) {
			c.UID = append(c.UID, recent)
			return true
		}
		return false
	})
	c.NotFlag = slices.DeleteFunc(c.NotFlag, func(f imap.Flag) bool {
		if strings.EqualFold(string(f), `\Recent`) {
			c.Not = append(c.Not, imap.SearchCriteria{UID: []imap.UIDSet{recent}})
			return true
		}
		return false
	})
	for i := range c.Not {
		s.recentCriteria(&c.Not[i])
	}
	for i := range c.Or {
		s.recentCriteria(&c.Or[i][0])
		s.recentCriteria(&c.Or[i][1])
	}
}
