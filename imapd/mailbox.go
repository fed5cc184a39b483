package imapd

import (
	"iter"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailstack/mailstack/store"
)

var systemFlags = []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}

// maxListedKeywords caps the keywords written in FLAGS and PERMANENTFLAGS,
// so that a mailbox where clients invented thousands of keywords does not
// make every SELECT huge; \* still lets clients use the others.
const maxListedKeywords = 256

// Select implements imapserver.Session (SELECT and EXAMINE). Everything
// it answers comes from one snapshot read in one statement (the feed's
// open, store.SelectMailboxByName), including the first unseen message for
// IMAP4rev1 clients ([UNSEEN n]) and whether the mailbox has children for
// the LIST response IMAP4rev2 requires.
func (s *session) Select(name string, opts *imap.SelectOptions) (*imap.SelectData, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	s.unselect()
	sel, snap, err := s.srv.feed.open(s.ctx, s.accountID(), name, opts.ReadOnly)
	if err != nil {
		return nil, storeError(err, "SELECT")
	}
	mb := snap.Mailbox
	s.sel, s.mailbox = sel, mb
	keywords := mb.Keywords[:min(len(mb.Keywords), maxListedKeywords)]
	flags := slices.Clone(systemFlags)
	for _, k := range keywords {
		flags = append(flags, imap.Flag(k))
	}
	data := &imap.SelectData{
		Flags:          flags,
		PermanentFlags: append(slices.Clone(flags), imap.FlagWildcard),
		NumMessages:    uint32(sel.count()),
		UIDNext:        imap.UID(mb.UIDNext),
		UIDValidity:    mb.UIDValidity,
	}
	if opts.ReadOnly {
		data.PermanentFlags = []imap.Flag{}
	}
	if s.conn.EnabledCaps().Has(imap.CapIMAP4rev2) {
		// RFC 9051 §6.3.2: the LIST response of the mailbox, whose name
		// may differ from the one asked for (INBOX in another case).
		data.List = &imap.ListData{Delim: store.Delimiter, Mailbox: mb.Name, Attrs: childAttr(snap.HasChildren)}
		if mb.SpecialUse != "" {
			data.List.Attrs = append(data.List.Attrs, imap.MailboxAttr(mb.SpecialUse))
		}
	} else if snap.FirstUnseen != 0 {
		// IMAP4rev1's [UNSEEN n], numbered in this session's view (0
		// when the view does not have it: then no message of the view is
		// unseen).
		data.FirstUnseenSeqNum = sel.seqOf(snap.FirstUnseen)
	}
	return data, nil
}

func childAttr(has bool) []imap.MailboxAttr {
	if has {
		return []imap.MailboxAttr{imap.MailboxAttrHasChildren}
	}
	return []imap.MailboxAttr{imap.MailboxAttrHasNoChildren}
}

// Create implements imapserver.Session, with CREATE-SPECIAL-USE.
func (s *session) Create(name string, opts *imap.CreateOptions) error {
	if err := s.begin(); err != nil {
		return err
	}
	use := ""
	switch len(opts.SpecialUse) {
	case 0:
	case 1:
		use = string(opts.SpecialUse[0])
	default:
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Only one special-use attribute per mailbox"}
	}
	_, err := s.srv.st.CreateMailbox(s.ctx, s.accountID(), name, use)
	if use != "" && errorsIsInvalid(err) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Unsupported special-use attribute " + use}
	}
	return storeError(err, "CREATE")
}

// Delete implements imapserver.Session. INBOX cannot be deleted; a mailbox
// with children becomes \Noselect (done by the store).
func (s *session) Delete(name string) error {
	if err := s.begin(); err != nil {
		return err
	}
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if err != nil {
		return storeError(err, "DELETE")
	}
	if err := s.srv.st.DeleteMailbox(s.ctx, s.accountID(), name); err != nil {
		// Still selected: a refused DELETE (INBOX, say) changes nothing.
		return storeError(err, "DELETE")
	}
	if s.mailbox != nil && s.mailbox.ID == mb.ID {
		// Deleting the selected mailbox closes it, as Dovecot does, so
		// this session gets its OK rather than the BYE other sessions get
		// (its view, marked gone by a catch-up, is dropped before the
		// next poll could report that).
		s.unselect()
	}
	s.srv.feed.catchUp(s.ctx, mb.ID, 0)
	return nil
}

// Rename implements imapserver.Session. Children move along; renaming
// INBOX moves its messages to the new mailbox (done by the store).
func (s *session) Rename(oldName, newName string, _ *imap.RenameOptions) error {
	if err := s.begin(); err != nil {
		return err
	}
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), oldName)
	if err != nil {
		return storeError(err, "RENAME")
	}
	if err := s.srv.st.RenameMailbox(s.ctx, s.accountID(), oldName, newName); err != nil {
		return storeError(err, "RENAME")
	}
	// A renamed mailbox keeps its id, UIDs and UIDVALIDITY: sessions that
	// have it selected carry on. Renaming INBOX expunges its messages.
	s.srv.feed.catchUp(s.ctx, mb.ID, 0)
	return nil
}

// Subscribe implements imapserver.Session.
func (s *session) Subscribe(name string) error {
	if err := s.begin(); err != nil {
		return err
	}
	return storeError(s.srv.st.SetSubscribed(s.ctx, s.accountID(), name, true), "SUBSCRIBE")
}

// Unsubscribe implements imapserver.Session.
func (s *session) Unsubscribe(name string) error {
	if err := s.begin(); err != nil {
		return err
	}
	return storeError(s.srv.st.SetSubscribed(s.ctx, s.accountID(), name, false), "UNSUBSCRIBE")
}

// Status implements imapserver.Session from the mailbox's cached counters:
// one row.
func (s *session) Status(name string, opts *imap.StatusOptions) (*imap.StatusData, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if err != nil {
		return nil, storeError(err, "STATUS")
	}
	if mb.NoSelect {
		return nil, storeError(store.ErrNoSelect, "STATUS")
	}
	if opts.DeletedStorage {
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "STATUS DELETED-STORAGE is not supported"}
	}
	return s.statusData(mb, opts), nil
}

func (s *session) statusData(mb *store.Mailbox, opts *imap.StatusOptions) *imap.StatusData {
	u32 := func(n int64) *uint32 { v := uint32(n); return &v }
	size := mb.Size
	limit := s.AppendLimit()
	d := &imap.StatusData{
		Mailbox:     mb.Name,
		UIDNext:     imap.UID(mb.UIDNext),
		UIDValidity: mb.UIDValidity,
		NumMessages: u32(mb.Messages),
		NumUnseen:   u32(mb.Unseen),
		NumDeleted:  u32(mb.Deleted),
		NumRecent:   u32(0),
		Size:        &size,
	}
	if opts.AppendLimit {
		d.AppendLimit = &limit
	}
	return d
}

// List implements imapserver.Session: LIST and LSUB with reference and
// patterns, LIST-EXTENDED selection options (SUBSCRIBED, RECURSIVEMATCH,
// SPECIAL-USE) and return options (CHILDREN, SUBSCRIBED, SPECIAL-USE,
// STATUS). Two queries: the account's mailboxes and, when subscriptions
// matter, its subscriptions.
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, opts *imap.ListOptions) error {
	if err := s.begin(); err != nil {
		return err
	}
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter and root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: store.Delimiter})
	}
	if opts.ReturnStatus != nil && opts.ReturnStatus.DeletedStorage {
		return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "STATUS DELETED-STORAGE is not supported"}
	}
	all, err := s.srv.st.Mailboxes(s.ctx, s.accountID())
	if err != nil {
		return err
	}
	subscribed := map[string]bool{}
	var subs []string
	if opts.SelectSubscribed || opts.ReturnSubscribed {
		if subs, err = s.srv.st.Subscriptions(s.ctx, s.accountID()); err != nil {
			return err
		}
		for _, n := range subs {
			subscribed[n] = true
		}
	}
	byName := make(map[string]*store.Mailbox, len(all))
	parents := map[string]bool{} // names with a mailbox below them
	for _, mb := range all {
		byName[mb.Name] = mb
		for p := range ancestors(mb.Name) {
			parents[p] = true
		}
	}
	matches := func(name string) bool {
		for _, p := range patterns {
			if imapserver.MatchList(name, store.Delimiter, ref, canonicalPattern(ref, p)) {
				return true
			}
		}
		return false
	}
	lsub := isLSub(w)
	// attrs are the attributes of an existing mailbox.
	attrs := func(mb *store.Mailbox) []imap.MailboxAttr {
		var a []imap.MailboxAttr
		if mb.NoSelect {
			a = append(a, imap.MailboxAttrNoSelect)
		}
		a = append(a, childAttr(parents[mb.Name])...)
		if mb.SpecialUse != "" {
			a = append(a, imap.MailboxAttr(mb.SpecialUse))
		}
		return a
	}
	write := func(data *imap.ListData, mb *store.Mailbox) error {
		if opts.ReturnStatus != nil && mb != nil && !mb.NoSelect {
			data.Status = s.statusData(mb, opts.ReturnStatus)
		}
		return w.WriteList(data)
	}

	if !opts.SelectSubscribed {
		for _, mb := range all {
			if !matches(mb.Name) || opts.SelectSpecialUse && mb.SpecialUse == "" {
				continue
			}
			data := &imap.ListData{Delim: store.Delimiter, Mailbox: mb.Name, Attrs: attrs(mb)}
			if opts.ReturnSubscribed && subscribed[mb.Name] {
				data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
			}
			if err := write(data, mb); err != nil {
				return err
			}
		}
		return nil
	}

	// Selected by subscription (LIST (SUBSCRIBED) and LSUB): subscribed
	// names, existing or not, plus unsubscribed parents of subscribed
	// names: with RECURSIVEMATCH every matching one (CHILDINFO, RFC 5258
	// §3.5); for LSUB those whose subscribed descendant the pattern does
	// not reach ("%"), flagged \Noselect (RFC 3501 §6.3.9).
	childOnly := map[string]bool{}
	if lsub || opts.SelectRecursiveMatch {
		for _, n := range subs {
			if lsub && matches(n) {
				continue
			}
			for p := range ancestors(n) {
				if !subscribed[p] && matches(p) {
					childOnly[p] = true
				}
			}
		}
	}
	names := slices.Sorted(maps.Keys(childOnly))
	for _, n := range subs {
		if matches(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		mb := byName[name]
		if opts.SelectSpecialUse && (mb == nil || mb.SpecialUse == "") {
			continue
		}
		data := &imap.ListData{Delim: store.Delimiter, Mailbox: name}
		switch {
		case lsub && (childOnly[name] || mb == nil):
			// LSUB knows no \NonExistent; Dovecot says \Noselect.
			data.Attrs = []imap.MailboxAttr{imap.MailboxAttrNoSelect}
		case mb == nil:
			data.Attrs = []imap.MailboxAttr{imap.MailboxAttrNonExistent}
		default:
			data.Attrs = attrs(mb)
		}
		if childOnly[name] {
			if !lsub {
				data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
			}
		} else if !lsub {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if err := write(data, mb); err != nil {
			return err
		}
	}
	return nil
}

// ancestors yields the parent names of name, nearest first.
func ancestors(name string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for {
			i := strings.LastIndexByte(name, store.Delimiter)
			if i < 0 {
				return
			}
			name = name[:i]
			if !yield(name) {
				return
			}
		}
	}
}

// isLSub reports whether w answers LSUB rather than LIST: imapserver routes
// both to Session.List with the same options and keeps the difference in an
// unexported field, yet the two differ (LSUB flags unsubscribed parents
// \Noselect, LIST (SUBSCRIBED) does not list them). Reading the field is
// tied to go-imap beta.8; TestLSub fails if it moves.
func isLSub(w *imapserver.ListWriter) bool {
	f := reflect.ValueOf(w).Elem().FieldByName("lsub")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}

// canonicalPattern makes the INBOX prefix of a pattern case-insensitive, as
// INBOX itself is (RFC 9051 §5.1).
func canonicalPattern(ref, pattern string) string {
	if ref != "" {
		return pattern
	}
	first, rest, found := strings.Cut(pattern, string(store.Delimiter))
	if strings.EqualFold(first, "INBOX") {
		if found {
			return "INBOX" + string(store.Delimiter) + rest
		}
		return "INBOX"
	}
	return pattern
}
