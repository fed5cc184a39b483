package imapd

import (
	"slices"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// Search implements imapserver.Session. The matching itself is searchUIDs
// (search.go, with "$" standing for the saved result); this builds the
// response in sequence numbers or UIDs, with the ESEARCH return options,
// and saves the result for SEARCHRES.
//
// imapserver turns RETURN (SAVE) alone into RETURN (SAVE ALL): the client
// then gets an ESEARCH ALL response RFC 5182 says it should not (harmless:
// clients ignore it, but it costs bandwidth on large results). The two
// cannot be told apart here.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, opts *imap.SearchOptions) (*imap.SearchData, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	sel, err := s.selectedView()
	if err != nil {
		return nil, err
	}
	view := sel.snapshot()
	uids, err := searchUIDsSaved(s.ctx, s.srv.st, s.accountID(), s.mailbox.ID, view, criteria, s.searchRes)
	if err != nil {
		if opts.ReturnSave {
			s.searchRes = nil // RFC 5182 §2.1: a failed SAVE leaves "$" empty
		}
		return nil, storeError(err, "SEARCH")
	}
	// Only messages of the client's view, whatever the matcher returned.
	uids = slices.DeleteFunc(uids, func(u uint32) bool {
		_, ok := slices.BinarySearch(view, u)
		return !ok
	})
	if opts.ReturnSave {
		s.searchRes = savedResult(uids, opts)
	}
	data := &imap.SearchData{Count: uint32(len(uids))}
	if kind == imapserver.NumKindUID {
		set := imap.UIDSet{}
		for _, u := range uids {
			set.AddNum(imap.UID(u))
		}
		data.All = set
		if len(uids) > 0 {
			data.Min, data.Max = uids[0], uids[len(uids)-1]
		}
		return data, nil
	}
	set := imap.SeqSet{}
	for _, u := range uids {
		i, _ := slices.BinarySearch(view, u)
		seq := uint32(i + 1)
		set.AddNum(seq)
		if data.Min == 0 {
			data.Min = seq
		}
		data.Max = seq
	}
	data.All = set
	return data, nil
}

// savedResult is what SEARCH RETURN (SAVE ...) remembers (RFC 5182 §2.4):
// with MIN and/or MAX but neither ALL nor COUNT, only the messages those
// report; otherwise the whole result.
func savedResult(uids []uint32, opts *imap.SearchOptions) []uint32 {
	if opts.ReturnAll || opts.ReturnCount || !opts.ReturnMin && !opts.ReturnMax {
		return uids
	}
	saved := []uint32{}
	if len(uids) == 0 {
		return saved
	}
	if opts.ReturnMin {
		saved = append(saved, uids[0])
	}
	if opts.ReturnMax && (len(saved) == 0 || saved[0] != uids[len(uids)-1]) {
		saved = append(saved, uids[len(uids)-1])
	}
	return saved
}
