package imapd

import (
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailstack/mailstack/store"
)

var (
	systemFlags    = []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}
	permanentFlags = append(append([]imap.Flag{}, systemFlags...), imap.FlagWildcard)
)

// Select implements imapserver.Session (SELECT and EXAMINE).
func (s *session) Select(name string, opts *imap.SelectOptions) (*imap.SelectData, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	s.unselect()
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if err != nil {
		return nil, storeError(err, "SELECT")
	}
	if mb.NoSelect {
		return nil, storeError(store.ErrNoSelect, "SELECT")
	}
	sel, mb, err := s.srv.feed.open(s.ctx, s.accountID(), mb.ID, opts.ReadOnly)
	if err != nil {
		return nil, storeError(err, "SELECT")
	}
	s.sel, s.mailbox = sel, mb
	data := &imap.SelectData{
		Flags:          systemFlags,
		PermanentFlags: permanentFlags,
		NumMessages:    uint32(sel.count()),
		UIDNext:        imap.UID(mb.UIDNext),
		UIDValidity:    mb.UIDValidity,
	}
	if opts.ReadOnly {
		data.PermanentFlags = []imap.Flag{}
	}
	return data, nil
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
	if s.mailbox != nil && s.mailbox.ID == mb.ID {
		// Deleting the selected mailbox closes it first, as Dovecot does,
		// so this session gets its OK rather than the BYE other sessions
		// get.
		s.unselect()
	}
	if err := s.srv.st.DeleteMailbox(s.ctx, s.accountID(), name); err != nil {
		return storeError(err, "DELETE")
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
// STATUS).
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
	// Parents, and parents of subscribed mailboxes, from one pass.
	parents, subscribedParents := map[string]bool{}, map[string]bool{}
	for _, mb := range all {
		name := mb.Name
		for {
			i := strings.LastIndexByte(name, store.Delimiter)
			if i < 0 {
				break
			}
			name = name[:i]
			parents[name] = true
			if mb.Subscribed {
				subscribedParents[name] = true
			}
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
	for _, mb := range all {
		if !matches(mb.Name) {
			continue
		}
		var childInfo *imap.ListDataChildInfo
		if opts.SelectSubscribed && !mb.Subscribed {
			// RECURSIVEMATCH: a parent of a subscribed mailbox is listed
			// with CHILDINFO, not as subscribed.
			if !opts.SelectRecursiveMatch || !subscribedParents[mb.Name] {
				continue
			}
			childInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if opts.SelectSpecialUse && mb.SpecialUse == "" {
			continue
		}
		data := &imap.ListData{Delim: store.Delimiter, Mailbox: mb.Name, ChildInfo: childInfo}
		if mb.NoSelect {
			data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
		}
		if parents[mb.Name] {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if mb.Subscribed && (opts.ReturnSubscribed || opts.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if mb.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(mb.SpecialUse))
		}
		if opts.ReturnStatus != nil && !mb.NoSelect {
			data.Status = s.statusData(mb, opts.ReturnStatus)
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
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
