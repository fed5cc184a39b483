package imapd

import (
	"errors"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/store"
)

// MULTISEARCH (RFC 7377): the ESEARCH command searches several mailboxes
// of the account, named with the mailbox filters of NOTIFY (RFC 5465 §6)
// plus "subtree-one", in the authenticated state too. The mailboxes come
// from one account-scoped listing, so the account's own mailboxes are the
// bound and another account's are never reached. They are searched by
// SEARCH's store path with no lock held: all but the selected one in one
// store.SearchMailboxes call (one statement for what SQL or the text index
// answers), the selected one over the session's view. Answers are always
// UIDs, one ESEARCH response per mailbox with a match, correlated by TAG,
// MAILBOX and UIDVALIDITY.

// maxESearchNames bounds the mailbox names of one ESEARCH: each is
// compared with every mailbox of the account.
const maxESearchNames = 1000

// esearchSource is one filter of "IN (...)": its name in upper case and,
// for SUBTREE, SUBTREE-ONE and MAILBOXES, the decoded mailbox names.
type esearchSource struct {
	filter string
	names  []string
}

// esearchFilters maps the filters ESEARCH accepts to whether mailbox
// names follow. "selected-delayed" is in RFC 5465's grammar, which RFC
// 7377 takes over; with no notifications to delay it means "selected".
var esearchFilters = map[string]bool{
	"SELECTED": false, "SELECTED-DELAYED": false, "INBOXES": false, "PERSONAL": false,
	"SUBSCRIBED": false, "SUBTREE": true, "SUBTREE-ONE": true, "MAILBOXES": true,
}

// cmdESearch is the ESEARCH command:
//
//	ESEARCH [IN (source-mbox)] [RETURN (options)] [CHARSET x] search-keys
//
// Without IN it searches the selected mailbox. Mailboxes that do not
// exist or cannot be selected are left out without an error (as mox
// does), so a name tells nothing of other accounts either.
func (s *session) cmdESearch(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	var sources []esearchSource
	if peekWord(c.d, "IN") {
		var err error
		if sources, err = s.esearchSources(c.d); err != nil {
			return err
		}
	}
	ret, err := parseSearchReturn(c.d, "ESEARCH")
	if err != nil {
		return err
	}
	if !ret.extended {
		ret.all = true // ESEARCH answers ESEARCH ALL by default (RFC 7377)
	}
	criteria, p, err := s.searchProgram(c)
	if err != nil {
		return err
	}
	if len(sources) == 0 {
		sources = []esearchSource{{filter: "SELECTED"}}
	}
	onlySelected := true
	for _, src := range sources {
		if src.filter != "SELECTED" && src.filter != "SELECTED-DELAYED" {
			onlySelected = false
		} else if s.sel == nil {
			return bad("ESEARCH IN (selected) needs a selected mailbox")
		}
	}
	if ret.save && !onlySelected {
		// RFC 7377: "$" is the result of one mailbox, the selected one.
		return bad("RETURN (SAVE) needs the selected mailbox as the only source")
	}
	if p.modseq {
		s.enableCondstore()
	}
	mailboxes, err := s.esearchMailboxes(sources)
	if err != nil {
		return storeError(err, "ESEARCH")
	}
	// Unless the criteria need each mailbox's UIDs (sequence numbers,
	// "*"), the mailboxes other than the selected one are searched by one
	// store call: one statement for all of them.
	var found map[int64][]uint32
	if !needsView(criteria) {
		var ids []int64
		for _, mb := range mailboxes {
			if !s.isSelected(mb) && mb.Messages > 0 {
				ids = append(ids, mb.ID)
			}
		}
		found, err = s.srv.st.SearchMailboxes(s.ctx, s.accountID(), ids, toStoreCriteria(criteria, nil, nil))
		if err != nil {
			return storeError(err, "ESEARCH")
		}
	}
	for _, mb := range mailboxes {
		if err := s.esearchMailbox(c, mb, criteria, p, ret, found); err != nil {
			if ret.save {
				s.searchRes = nil // RFC 5182 §2.1: a failed SAVE leaves "$" empty
			}
			return storeError(err, "ESEARCH")
		}
	}
	return nil
}

// isSelected reports whether mb is the session's selected mailbox.
func (s *session) isSelected(mb *store.Mailbox) bool {
	return s.sel != nil && mb.ID == s.mailbox.ID
}

// esearchSources reads "SP (" source-mbox [SP "(" scope-options ")"] ")" SP"
// after IN. RFC 7377 defines no scope option, so any is refused.
func (s *session) esearchSources(d *imapwire.Decoder) ([]esearchSource, error) {
	if err := d.SP(); err != nil {
		return nil, err
	}
	var sources []esearchSource
	names := 0
	err := d.List(func() error {
		if d.PeekIs('(') {
			return bad("Unknown ESEARCH scope options")
		}
		a, err := d.Atom()
		if err != nil {
			return err
		}
		f := strings.ToUpper(a)
		named, ok := esearchFilters[f]
		if !ok {
			return bad("Unknown mailbox filter " + truncate(a))
		}
		src := esearchSource{filter: f}
		if named {
			if err := d.SP(); err != nil {
				return err
			}
			name := func() error {
				if names++; names > maxESearchNames {
					return bad("Too many mailbox names")
				}
				n, _, err := s.mailboxArg(d)
				src.names = append(src.names, n)
				return err
			}
			// one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")"
			if d.PeekIs('(') {
				err = d.List(name)
			} else {
				err = name()
			}
			if err != nil {
				return err
			}
			if len(src.names) == 0 {
				return bad(a + " needs a mailbox name")
			}
		}
		sources = append(sources, src)
		return nil
	})
	if err == nil && len(sources) == 0 {
		err = bad("IN needs a mailbox filter")
	}
	if err != nil {
		return nil, err
	}
	return sources, d.SP()
}

// esearchMailboxes resolves the sources to the account's selectable
// mailboxes, each once, in name order: one query for the mailboxes (and
// one for the subscriptions when "subscribed" is asked for), none when
// only the selected mailbox is.
func (s *session) esearchMailboxes(sources []esearchSource) ([]*store.Mailbox, error) {
	want := map[string]bool{} // names searched
	var subtrees, subtreesOne []string
	needList, selected, subscribed, inboxes, personal := false, false, false, false, false
	for _, src := range sources {
		switch src.filter {
		case "SELECTED", "SELECTED-DELAYED":
			selected = true
			continue
		case "INBOXES":
			inboxes = true
		case "PERSONAL":
			personal = true
		case "SUBSCRIBED":
			subscribed = true
		}
		needList = true
		for _, n := range src.names {
			n, err := store.NormalizeMailboxName(n)
			if err != nil {
				continue // names no mailbox
			}
			switch src.filter {
			case "SUBTREE":
				subtrees = append(subtrees, n)
			case "SUBTREE-ONE":
				subtreesOne = append(subtreesOne, n)
			}
			want[n] = true
		}
	}
	if !needList {
		return []*store.Mailbox{s.mailbox}, nil
	}
	all, err := s.srv.st.Mailboxes(s.ctx, s.accountID())
	if err != nil {
		return nil, err
	}
	if subscribed {
		subs, err := s.srv.st.Subscriptions(s.ctx, s.accountID())
		if err != nil {
			return nil, err
		}
		for _, n := range subs {
			want[n] = true
		}
	}
	selectedID := int64(-1)
	if selected {
		selectedID = s.mailbox.ID // cmdESearch checked that one is
	}
	var out []*store.Mailbox
	for _, mb := range all {
		if mb.NoSelect {
			continue
		}
		// Messages are delivered to INBOX and, when judged junk, to
		// the \Junk mailbox (smtpd/mx.go): those are the inboxes.
		take := personal || want[mb.Name] || mb.ID == selectedID ||
			inboxes && (mb.Name == "INBOX" || mb.SpecialUse == `\Junk`)
		for _, t := range subtrees {
			take = take || strings.HasPrefix(mb.Name, t+"/")
		}
		for _, t := range subtreesOne {
			rest, below := strings.CutPrefix(mb.Name, t+"/")
			take = take || below && !strings.ContainsRune(rest, store.Delimiter)
		}
		if take {
			out = append(out, mb)
		}
	}
	return out, nil
}

// esearchMailbox writes the ESEARCH response of one mailbox if anything
// matched. The selected mailbox is searched over the session's view, with
// its \Recent and "$"; another mailbox over what it holds now, where
// \Recent and "$" match nothing: its result is in found, or, when
// found is nil, searched over its UIDs, read for the purpose.
func (s *session) esearchMailbox(c *cmd, mb *store.Mailbox, criteria *imap.SearchCriteria, p *searchParser, ret searchReturn,
	found map[int64][]uint32) error {
	var uids []uint32
	var err error
	switch {
	case s.isSelected(mb):
		crit := cloneCriteria(criteria)
		s.recentCriteria(crit)
		uids, err = searchUIDsSaved(s.ctx, s.srv.st, s.accountID(), mb.ID, s.sel.snapshot(), crit, s.searchRes)
	case found != nil:
		uids = found[mb.ID]
	default:
		var view []uint32
		_, view, err = s.srv.st.SelectMailbox(s.ctx, s.accountID(), mb.ID)
		if err == nil {
			uids, err = searchUIDs(s.ctx, s.srv.st, s.accountID(), mb.ID, view, criteria)
		}
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoSelect) {
		return nil // deleted (or made \Noselect) since it was listed
	}
	if err != nil {
		return err
	}
	if ret.save {
		s.searchRes = savedResult(uids, ret)
	}
	if len(uids) == 0 || ret.saveOnly() {
		return nil // no response for a mailbox without matches (RFC 7377)
	}
	modseq, err := s.resultModSeq(p, mb.ID, uids, ret)
	if err != nil {
		return err
	}
	e := s.enc
	e.Star().Raw("ESEARCH (TAG ").Quoted(c.tag).Raw(" MAILBOX ").Mailbox(mb.Name).
		Raw(" UIDVALIDITY ").Num(mb.UIDValidity).Raw(") UID")
	writeESearchData(e, uids, ret, modseq)
	return nil
}

// needsView reports whether criteria need a mailbox's UIDs to be
// resolved: sequence numbers, or "*" in a UID set.
func needsView(c *imap.SearchCriteria) bool {
	return hasSeqNums(c) || anyCriteria(c, func(c *imap.SearchCriteria) bool {
		for _, set := range c.UID {
			if imap.IsSearchRes(set) {
				continue
			}
			for _, r := range set {
				if r.Start == 0 || r.Stop == 0 {
					return true
				}
			}
		}
		return false
	})
}

// anyCriteria reports whether f holds for c or a criterion nested in it.
func anyCriteria(c *imap.SearchCriteria, f func(*imap.SearchCriteria) bool) bool {
	if f(c) {
		return true
	}
	for i := range c.Not {
		if anyCriteria(&c.Not[i], f) {
			return true
		}
	}
	for i := range c.Or {
		if anyCriteria(&c.Or[i][0], f) || anyCriteria(&c.Or[i][1], f) {
			return true
		}
	}
	return false
}

// cloneCriteria copies what recentCriteria changes (flag and UID lists,
// nested criteria), so that one parsed program serves every mailbox.
func cloneCriteria(c *imap.SearchCriteria) *imap.SearchCriteria {
	out := *c
	out.Flag, out.NotFlag, out.UID = slices.Clone(c.Flag), slices.Clone(c.NotFlag), slices.Clone(c.UID)
	out.Not = make([]imap.SearchCriteria, len(c.Not))
	for i := range c.Not {
		out.Not[i] = *cloneCriteria(&c.Not[i])
	}
	out.Or = make([][2]imap.SearchCriteria, len(c.Or))
	for i := range c.Or {
		out.Or[i] = [2]imap.SearchCriteria{*cloneCriteria(&c.Or[i][0]), *cloneCriteria(&c.Or[i][1])}
	}
	return &out
}
