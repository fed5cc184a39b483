package imapd

import (
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/store"
)

// SORT (RFC 5256) with the DISPLAYFROM/DISPLAYTO keys (RFC 5957) and
// ESORT's RETURN options (RFC 5267), and THREAD (thread.go). Messages are
// selected with SEARCH's parser and the store's search and ordered by the
// keys the store computed at delivery, in one query.

// sortKeys maps SORT's key names to the store's.
var sortKeys = map[string]store.SortKey{
	"ARRIVAL": store.SortArrival, "CC": store.SortCc, "DATE": store.SortDate, "FROM": store.SortFrom,
	"SIZE": store.SortSize, "SUBJECT": store.SortSubject, "TO": store.SortTo,
	"DISPLAYFROM": store.SortDisplayFrom, "DISPLAYTO": store.SortDisplayTo,
}

// parseSortCriteria reads "(" [REVERSE] key *(SP [REVERSE] key) ")".
func parseSortCriteria(c *cmd) ([]store.SortCriterion, error) {
	var order []store.SortCriterion
	reverse := false
	err := c.d.AtomList(func(a string) error {
		a = strings.ToUpper(a)
		if a == "REVERSE" {
			if reverse {
				return bad("REVERSE REVERSE")
			}
			reverse = true
			return nil
		}
		k, ok := sortKeys[a]
		if !ok {
			return bad("Unknown sort key " + truncate(a))
		}
		order = append(order, store.SortCriterion{Key: k, Reverse: reverse})
		reverse = false
		return nil
	})
	if err != nil {
		return nil, err
	}
	if reverse || len(order) == 0 {
		return nil, bad("Sort criteria need a sort key")
	}
	return order, nil
}

// readSearchProgram reads what SORT and THREAD end with: a charset (which
// they require) and search keys, up to the end of the command.
func (s *session) readSearchProgram(c *cmd) (*imap.SearchCriteria, *searchParser, error) {
	if err := c.d.SP(); err != nil {
		return nil, nil, err
	}
	if err := searchCharset(c.d); err != nil {
		return nil, nil, err
	}
	return s.searchKeys(c)
}

// cmdSort is SORT and UID SORT.
func (s *session) cmdSort(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	ret, err := parseSearchReturn(c.d, "SORT")
	if err != nil {
		return err
	}
	order, err := parseSortCriteria(c)
	if err != nil {
		return err
	}
	criteria, p, err := s.readSearchProgram(c)
	if err != nil {
		return err
	}
	view, sc := s.viewCriteria(criteria, p)
	var uids []uint32
	if sc != nil {
		uids, err = s.srv.st.Sort(s.ctx, s.accountID(), s.mailbox.ID, sc, order)
	}
	if err != nil {
		if ret.save {
			s.searchRes = nil
		}
		return storeError(err, "SORT")
	}
	uids, nums := inView(uids, view, c.uid)
	if ret.save {
		saved := slices.Clone(savedResult(uids, ret))
		slices.Sort(saved)
		s.searchRes = saved
		if ret.saveOnly() {
			return nil
		}
	}
	modseq, err := s.resultModSeq(p, s.mailbox.ID, uids, ret)
	if err != nil {
		return storeError(err, "SORT")
	}
	if ret.extended {
		writeESearch(s.enc, c, nums, ret, modseq)
	} else {
		writeNumbers(s.enc, "SORT", nums, modseq)
	}
	return nil
}

// viewCriteria returns the session's view and the store criteria of a
// SORT or THREAD over it (nil if the view is empty), narrowed to the
// view's UID range as searchUIDs does.
func (s *session) viewCriteria(criteria *imap.SearchCriteria, p *searchParser) ([]uint32, *store.SearchCriteria) {
	if p.modseq {
		s.enableCondstore()
	}
	view := s.sel.snapshot()
	s.recentCriteria(criteria)
	if len(view) == 0 {
		return view, nil
	}
	sc := toStoreCriteria(criteria, view, s.searchRes)
	sc.UIDs = append(sc.UIDs, []store.UIDRange{{Start: view[0], Stop: view[len(view)-1]}})
	return view, sc
}

// inView keeps the UIDs (in their order) that the view has, and returns
// them with the numbers to report: the UIDs themselves, or sequence
// numbers unless uid.
func inView(uids, view []uint32, uid bool) (kept, nums []uint32) {
	kept = uids[:0]
	nums = make([]uint32, 0, len(uids))
	for _, u := range uids {
		j, ok := slices.BinarySearch(view, u)
		if !ok {
			continue
		}
		kept = append(kept, u)
		if uid {
			nums = append(nums, u)
		} else {
			nums = append(nums, uint32(j+1))
		}
	}
	return kept, nums
}
