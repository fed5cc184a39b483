package imapd

import (
	"iter"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/store"
)

// mailboxCommand reads the one argument of a command on a mailbox (SP name
// CRLF): DELETE, SUBSCRIBE, UNSUBSCRIBE.
func (s *session) mailboxCommand(c *cmd) (string, error) {
	if err := c.d.SP(); err != nil {
		return "", err
	}
	name, _, err := s.mailboxArg(c.d)
	if err != nil {
		return "", err
	}
	return name, c.end()
}

// mailboxArg reads a mailbox name argument and decodes it: UTF-8 in UTF-8
// mode, else modified UTF-7. A name that is not valid modified UTF-7 is
// kept as sent (it names no mailbox; CREATE refuses it), except that an
// 8-bit name in valid UTF-8 without "&" is taken as UTF-8, as many
// clients send one without enabling UTF-8.
func (s *session) mailboxArg(d *imapwire.Decoder) (name string, valid bool, err error) {
	raw, err := d.AString()
	if err != nil {
		return "", false, err
	}
	name, valid = s.decodeName(raw)
	return name, valid, nil
}

func (s *session) decodeName(raw string) (string, bool) {
	if s.utf8 {
		return raw, utf8.ValidString(raw)
	}
	name, err := imapwire.DecodeMUTF7(raw)
	if err != nil {
		return raw, !strings.Contains(raw, "&") && utf8.ValidString(raw)
	}
	return name, true
}

func (s *session) cmdCreate(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	name, valid, err := s.mailboxArg(c.d)
	if err != nil {
		return err
	}
	var uses []string
	if c.d.PeekIs(' ') {
		// CREATE-SPECIAL-USE: (USE (\Attr ...)).
		c.d.SP() //nolint:errcheck // peeked
		err := c.d.List(func() error {
			p, err := c.d.Atom()
			if err != nil {
				return err
			}
			if !strings.EqualFold(p, "USE") {
				return bad("Unknown CREATE parameter " + truncate(p))
			}
			if err := c.d.SP(); err != nil {
				return err
			}
			return c.d.List(func() error {
				if err := c.d.Expect('\\', "special-use attribute"); err != nil {
					return err
				}
				a, err := c.d.Atom()
				uses = append(uses, `\`+a)
				return err
			})
		})
		if err != nil {
			return err
		}
	}
	if err := c.end(); err != nil {
		return err
	}
	if !valid {
		return no("CANNOT", "Mailbox name is not valid modified UTF-7")
	}
	use := ""
	switch len(uses) {
	case 0:
	case 1:
		use = canonicalSpecialUse(uses[0])
	default:
		return no("USEATTR", "Only one special-use attribute per mailbox")
	}
	_, err = s.srv.st.CreateMailbox(s.ctx, s.accountID(), name, use)
	if use != "" && errorsIsInvalid(err) {
		return no("USEATTR", "Unsupported special-use attribute "+uses[0])
	}
	if errorsIsInvalid(err) {
		return no("CANNOT", "Invalid mailbox name")
	}
	return storeError(err, "CREATE")
}

// canonicalSpecialUse spells a special-use attribute as RFC 6154 does.
func canonicalSpecialUse(a string) string {
	for _, u := range []string{`\All`, `\Archive`, `\Drafts`, `\Flagged`, `\Junk`, `\Sent`, `\Trash`} {
		if strings.EqualFold(a, u) {
			return u
		}
	}
	return a
}

// cmdDelete deletes a mailbox. INBOX cannot be deleted; a mailbox with
// children becomes \Noselect (done by the store).
func (s *session) cmdDelete(c *cmd) error {
	name, err := s.mailboxCommand(c)
	if err != nil {
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
	s.srv.feed.readChanges(s.ctx, mb.ID)
	return nil
}

// cmdRename renames a mailbox. Children move along; renaming INBOX moves
// its messages to the new mailbox (done by the store).
func (s *session) cmdRename(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	oldName, _, err := s.mailboxArg(c.d)
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	newName, valid, err := s.mailboxArg(c.d)
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	if !valid {
		return no("CANNOT", "Mailbox name is not valid modified UTF-7")
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
	s.srv.feed.readChanges(s.ctx, mb.ID)
	return nil
}

// cmdSubscribe is SUBSCRIBE and UNSUBSCRIBE.
func (s *session) cmdSubscribe(c *cmd) error {
	name, err := s.mailboxCommand(c)
	if err != nil {
		return err
	}
	err = s.srv.st.SetSubscribed(s.ctx, s.accountID(), name, c.name == "SUBSCRIBE")
	if errorsIsInvalid(err) {
		return no("CANNOT", "Invalid mailbox name")
	}
	return storeError(err, c.name)
}

// statusItems are the STATUS data items asked for, in order.
type statusItems []string

func (s *session) statusItemsArg(d *imapwire.Decoder) (statusItems, error) {
	var items statusItems
	err := d.AtomList(func(a string) error {
		a = strings.ToUpper(a)
		switch a {
		case "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT", "APPENDLIMIT",
			"DELETED-STORAGE":
		case "HIGHESTMODSEQ":
			s.enableCondstore()
		default:
			return bad("Unknown STATUS item " + truncate(a))
		}
		items = append(items, a)
		return nil
	})
	if err == nil && len(items) == 0 {
		err = bad("STATUS needs at least one item")
	}
	return items, err
}

// cmdStatus answers STATUS from the mailbox's cached counters: one row.
func (s *session) cmdStatus(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	name, _, err := s.mailboxArg(c.d)
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	items, err := s.statusItemsArg(c.d)
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if err != nil {
		return storeError(err, "STATUS")
	}
	if mb.NoSelect {
		return storeError(store.ErrNoSelect, "STATUS")
	}
	s.enc.Star().Raw("STATUS ").Mailbox(mb.Name).SP()
	if err := s.writeStatus(mb, items); err != nil {
		return err
	}
	s.enc.CRLF()
	return nil
}

// writeStatus writes "(ITEM n ...)".
func (s *session) writeStatus(mb *store.Mailbox, items statusItems) error {
	s.enc.Byte('(')
	for i, it := range items {
		if i > 0 {
			s.enc.SP()
		}
		s.enc.Raw(it).SP()
		switch it {
		case "MESSAGES":
			s.enc.Num64(uint64(mb.Messages))
		case "UIDNEXT":
			s.enc.Num(mb.UIDNext)
		case "UIDVALIDITY":
			s.enc.Num(mb.UIDValidity)
		case "UNSEEN":
			s.enc.Num64(uint64(mb.Unseen))
		case "DELETED":
			s.enc.Num64(uint64(mb.Deleted))
		case "SIZE":
			s.enc.Num64(uint64(mb.Size))
		case "HIGHESTMODSEQ":
			s.enc.Num64(mb.HighestModSeq)
		case "APPENDLIMIT":
			s.enc.Num64(uint64(s.srv.opts.MaxMessageSize))
		case "DELETED-STORAGE":
			n, err := s.statusDeletedStorage(mb)
			if err != nil {
				return err
			}
			s.enc.Num64(uint64(n))
		case "RECENT":
			n, err := s.recentCount(mb)
			if err != nil {
				return err
			}
			s.enc.Num64(uint64(n))
		}
	}
	s.enc.Byte(')')
	return nil
}

// listOptions are LIST-EXTENDED's selection and return options.
type listOptions struct {
	selectSubscribed, selectRecursive, selectSpecialUse bool
	returnSubscribed, returnChildren, returnSpecialUse  bool
	returnStatus                                        statusItems
}

// cmdList is LIST (with LIST-EXTENDED, LIST-STATUS, SPECIAL-USE) and LSUB.
// Two queries at most: the account's mailboxes and, when subscriptions
// matter, its subscriptions.
func (s *session) cmdList(c *cmd) error {
	lsub := c.name == "LSUB"
	var opts listOptions
	if err := c.d.SP(); err != nil {
		return err
	}
	if !lsub && c.d.PeekIs('(') {
		err := c.d.AtomList(func(a string) error {
			switch strings.ToUpper(a) {
			case "SUBSCRIBED":
				opts.selectSubscribed = true
			case "RECURSIVEMATCH":
				opts.selectRecursive = true
			case "SPECIAL-USE":
				opts.selectSpecialUse = true
			case "REMOTE":
			default:
				return bad("Unknown LIST selection option " + truncate(a))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if opts.selectRecursive && !opts.selectSubscribed {
			return bad("RECURSIVEMATCH needs another selection option")
		}
		if err := c.d.SP(); err != nil {
			return err
		}
	}
	ref, err := c.d.AString()
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	var patterns []string
	if !lsub && c.d.PeekIs('(') {
		err = c.d.List(func() error {
			p, err := c.d.ListMailbox()
			patterns = append(patterns, p)
			return err
		})
		if err == nil && len(patterns) == 0 {
			err = bad("LIST needs a pattern")
		}
	} else {
		var p string
		p, err = c.d.ListMailbox()
		patterns = append(patterns, p)
	}
	if err != nil {
		return err
	}
	if !lsub && c.d.PeekIs(' ') {
		c.d.SP() //nolint:errcheck // peeked
		a, err := c.d.Atom()
		if err != nil {
			return err
		}
		if !strings.EqualFold(a, "RETURN") {
			return bad("Expected RETURN")
		}
		if err := c.d.SP(); err != nil {
			return err
		}
		err = c.d.AtomList(func(a string) error {
			switch strings.ToUpper(a) {
			case "SUBSCRIBED":
				opts.returnSubscribed = true
			case "CHILDREN":
				opts.returnChildren = true
			case "SPECIAL-USE":
				opts.returnSpecialUse = true
			case "STATUS":
				if err := c.d.SP(); err != nil {
					return err
				}
				var err error
				opts.returnStatus, err = s.statusItemsArg(c.d)
				return err
			default:
				return bad("Unknown LIST return option " + truncate(a))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := c.end(); err != nil {
		return err
	}
	if len(patterns) == 1 && patterns[0] == "" && !opts.selectSubscribed {
		// LIST "" "": the hierarchy delimiter and root.
		s.enc.Star().Raw(c.name).Raw(` (\Noselect) "/" ""`).CRLF()
		return nil
	}
	return s.list(c.name, ref, patterns, opts)
}

func (s *session) list(resp, ref string, patterns []string, opts listOptions) error {
	lsub := resp == "LSUB"
	if lsub {
		opts.selectSubscribed = true
	}
	refName, _ := s.decodeName(ref)
	var res []*regexp.Regexp
	for _, p := range patterns {
		if p == "" {
			continue
		}
		pat, _ := s.decodeName(p)
		res = append(res, listPattern(refName, pat))
	}
	matches := func(name string) bool {
		for _, re := range res {
			if re.MatchString(name) {
				return true
			}
		}
		return false
	}
	all, err := s.srv.st.Mailboxes(s.ctx, s.accountID())
	if err != nil {
		return err
	}
	subscribed := map[string]bool{}
	var subs []string
	if opts.selectSubscribed || opts.returnSubscribed {
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
	// attrs are the attributes of an existing mailbox.
	attrs := func(mb *store.Mailbox) []string {
		var a []string
		if mb.NoSelect {
			a = append(a, `\Noselect`)
		}
		if parents[mb.Name] {
			a = append(a, `\HasChildren`)
		} else {
			a = append(a, `\HasNoChildren`)
		}
		if mb.SpecialUse != "" {
			a = append(a, mb.SpecialUse)
		}
		return a
	}
	write := func(name string, attrs []string, childInfo bool, mb *store.Mailbox) error {
		s.enc.Star().Raw(resp).Raw(" (").Raw(strings.Join(attrs, " ")).Raw(`) "/" `).Mailbox(name)
		if childInfo {
			s.enc.Raw(` ("CHILDINFO" ("SUBSCRIBED"))`)
		}
		s.enc.CRLF()
		if opts.returnStatus != nil && mb != nil && !mb.NoSelect {
			s.enc.Star().Raw("STATUS ").Mailbox(mb.Name).SP()
			if err := s.writeStatus(mb, opts.returnStatus); err != nil {
				return err
			}
			s.enc.CRLF()
		}
		return nil
	}

	if !opts.selectSubscribed {
		for _, mb := range all {
			if !matches(mb.Name) || opts.selectSpecialUse && mb.SpecialUse == "" {
				continue
			}
			a := attrs(mb)
			if opts.returnSubscribed && subscribed[mb.Name] {
				a = append(a, `\Subscribed`)
			}
			if err := write(mb.Name, a, false, mb); err != nil {
				return err
			}
		}
		return nil
	}

	// Selected by subscription (LIST (SUBSCRIBED) and LSUB): subscribed
	// names, existing or not, plus unsubscribed parents of subscribed
	// names: with RECURSIVEMATCH every matching one whose subscribed
	// descendant does not match itself (CHILDINFO, RFC 5258 §3.5); for
	// LSUB those whose subscribed descendant the pattern does not reach
	// ("%"), flagged \Noselect (RFC 3501 §6.3.9).
	childOnly := map[string]bool{}
	if lsub || opts.selectRecursive {
		for _, n := range subs {
			if matches(n) {
				continue
			}
			for p := range ancestors(n) {
				// A subscribed parent is listed for itself, without
				// CHILDINFO (as Dovecot does).
				if !subscribed[p] && matches(p) {
					childOnly[p] = true
				}
			}
		}
	}
	seen := map[string]bool{}
	var names []string
	for _, n := range subs {
		if matches(n) && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(childOnly)) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		mb := byName[name]
		if opts.selectSpecialUse && (mb == nil || mb.SpecialUse == "") {
			continue
		}
		var a []string
		switch {
		case lsub && (!subscribed[name] || mb == nil):
			// LSUB knows no \NonExistent; Dovecot says \Noselect.
			a = []string{`\Noselect`}
		case mb == nil:
			a = []string{`\NonExistent`}
		default:
			a = attrs(mb)
		}
		if subscribed[name] && !lsub {
			a = append(a, `\Subscribed`)
		}
		if err := write(name, a, !lsub && childOnly[name], mb); err != nil {
			return err
		}
	}
	return nil
}

// listPattern compiles a LIST reference and pattern (RFC 3501 §6.3.8):
// "*" matches anything, "%" anything but the hierarchy delimiter. A
// pattern beginning with the delimiter ignores the reference. INBOX, as
// the first level, matches in any case. Regular expressions run in linear
// time, whatever the pattern (a hand-written backtracking matcher is
// exponential on "*a*a*a...").
func listPattern(ref, pattern string) *regexp.Regexp {
	if strings.HasPrefix(pattern, "/") {
		ref, pattern = "", pattern[1:]
	}
	full := pattern
	if ref != "" {
		if !strings.HasSuffix(ref, "/") {
			ref += "/"
		}
		full = ref + pattern
	}
	var b strings.Builder
	b.WriteString("^")
	first, rest, hasRest := strings.Cut(full, "/")
	if strings.EqualFold(first, "INBOX") {
		b.WriteString("INBOX")
		if hasRest {
			full = "/" + rest
		} else {
			full = ""
		}
	}
	for _, r := range full {
		switch r {
		case '*':
			b.WriteString(".*")
		case '%':
			b.WriteString("[^/]*")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile("(?s)" + b.String())
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
