package imapd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/store"
)

// METADATA (RFC 5464): entries of the account (mailbox "", the server
// entries of METADATA-SERVER, which METADATA implies) and of each mailbox,
// kept in the store (migration 0009). /private and /shared entries are
// both the account's own, as there are no shared mailboxes; names are
// case-insensitive and kept in lower case (as Dovecot does). Limits are
// the store's (MaxMetadataValue, ...): a longer value is refused with
// [METADATA MAXSIZE n], one past the account's count or total size with
// [METADATA TOOMANY]. Private entries are supported everywhere, so
// [METADATA NOPRIVATE] is never sent. Some entries are computed and
// cannot be set: the server's /shared/admin (the postmaster of the
// account's domain, which always takes mail) and a mailbox's
// /private/specialuse (RFC 6154 §4).

const (
	metadataMaxName    = 1024 // octets of an entry name
	metadataMaxEntries = 1000 // entry names in one command
)

// entryNameArg reads an entry name and checks it (RFC 5464 §3.2, the
// rules Dovecot applies): "/private" or "/shared" and below, no "*" or
// "%", no control characters, no empty component, UTF-8. It is returned
// in lower case.
func entryNameArg(c *cmd) (string, error) {
	name, err := c.d.AString()
	if err != nil {
		return "", err
	}
	if len(name) > metadataMaxName {
		return "", bad(fmt.Sprintf("Entry name too long (at most %d octets)", metadataMaxName))
	}
	if !utf8.ValidString(name) {
		return "", bad("Entry name is not UTF-8")
	}
	if !strings.HasPrefix(name, "/") {
		return "", bad("Entry name must begin with /")
	}
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case b == '/' && (i+1 == len(name) || name[i+1] == '/'):
			return "", bad("Entry name with an empty component")
		case b == '*' || b == '%':
			return "", bad("Entry name can't contain * or %")
		case b < 0x20 || b == 0x7f:
			return "", bad("Entry name can't contain control characters")
		}
	}
	name = asciiLower(name)
	top, _, _ := strings.Cut(name[1:], "/")
	if top != "private" && top != "shared" {
		return "", bad("Entry name must begin with /private or /shared")
	}
	return name, nil
}

// asciiLower lowers ASCII letters only: entry names compare so (RFC 5464
// §3.2 names are case-insensitive; non-ASCII is left as sent).
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// metadataTarget resolves the mailbox of a metadata command: nil for the
// server entries (""), else the account's mailbox of that name.
func (s *session) metadataTarget(name, what string) (*store.Mailbox, error) {
	if name == "" {
		return nil, nil
	}
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if err != nil {
		return nil, storeError(err, what)
	}
	return mb, nil
}

// computedEntries are the entries of the server (mb nil) or of a mailbox
// that are not stored but derived, and cannot be set.
func (s *session) computedEntries(mb *store.Mailbox) []store.MetadataEntry {
	if mb == nil {
		_, domain, ok := strings.Cut(s.login.Address, "@")
		if !ok {
			return nil
		}
		v := []byte("mailto:postmaster@" + domain)
		return []store.MetadataEntry{{Name: "/shared/admin", Value: v, Size: int64(len(v))}}
	}
	if mb.SpecialUse != "" {
		v := []byte(mb.SpecialUse)
		return []store.MetadataEntry{{Name: "/private/specialuse", Value: v, Size: int64(len(v))}}
	}
	return nil
}

// readOnlyEntry says whether an entry name is computed for the target.
func readOnlyEntry(mailbox bool, name string) bool {
	if mailbox {
		return name == "/private/specialuse"
	}
	return name == "/shared/admin"
}

// metadataOptions reads GETMETADATA's options, "MAXSIZE n DEPTH d)" after
// the "(".
func metadataOptions(c *cmd, q *store.MetadataQuery) error {
	var maxSet, depthSet bool
	return c.d.ListRest(func() error {
		opt, err := c.d.Atom()
		if err != nil {
			return err
		}
		if err := c.d.SP(); err != nil {
			return err
		}
		switch opt = strings.ToUpper(opt); {
		case opt == "MAXSIZE" && !maxSet:
			n, err := c.d.Number()
			q.MaxSize, maxSet = int64(n), true
			return err
		case opt == "DEPTH" && !depthSet:
			d, err := c.d.Atom()
			if err != nil {
				return err
			}
			switch strings.ToLower(d) {
			case "0":
				q.Depth = 0
			case "1":
				q.Depth = 1
			case "infinity":
				q.Depth = -1
			default:
				return bad("DEPTH is 0, 1 or infinity")
			}
			depthSet = true
			return nil
		case opt == "MAXSIZE" || opt == "DEPTH":
			return bad(opt + " given twice")
		}
		return bad("Unknown GETMETADATA option " + truncate(opt))
	})
}

// cmdGetMetadata is GETMETADATA [(options)] mailbox entries: one METADATA
// response with the entries asked for (a missing one as NIL at depth 0, as
// Dovecot does), and [METADATA LONGENTRIES n] if MAXSIZE left some out.
func (s *session) cmdGetMetadata(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	q := store.MetadataQuery{MaxSize: -1}
	// The options come before the mailbox in RFC 5464's syntax and after
	// it in its examples (and in go-imap's client): both are taken.
	options := func() error {
		if err := metadataOptions(c, &q); err != nil {
			return err
		}
		return c.d.SP()
	}
	optionsSeen := c.d.PeekIs('(')
	if optionsSeen {
		c.d.Expect('(', "(") //nolint:errcheck // peeked
		if err := options(); err != nil {
			return err
		}
	}
	mbName, _, err := s.mailboxArg(c.d)
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	entry := func() error {
		if len(q.Names) >= metadataMaxEntries {
			return bad("Too many entry names")
		}
		name, err := entryNameArg(c)
		if err == nil && !slices.Contains(q.Names, name) {
			q.Names = append(q.Names, name)
		}
		return err
	}
	list, err := c.d.Consume('(')
	if err == nil && list && !optionsSeen && (c.d.PeekWord("MAXSIZE") || c.d.PeekWord("DEPTH")) {
		if err = options(); err == nil {
			list, err = c.d.Consume('(')
		}
	}
	switch {
	case err != nil:
	case list:
		err = c.d.ListRest(entry)
	default:
		err = entry()
	}
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	mb, err := s.metadataTarget(mbName, "GETMETADATA")
	if err != nil {
		return err
	}
	stored, err := s.srv.st.Metadata(s.ctx, s.accountID(), targetID(mb), q)
	if err != nil {
		return err
	}
	found := stored
	for _, e := range s.computedEntries(mb) {
		if q.Matches(e.Name) {
			found = append(found, e)
		}
	}
	slices.SortFunc(found, func(a, b store.MetadataEntry) int { return strings.Compare(a.Name, b.Name) })
	// The order: each name asked for, then what lies below it.
	var out []store.MetadataEntry
	var longest int64
	seen := map[string]bool{}
	add := func(e store.MetadataEntry) {
		if seen[e.Name] {
			return
		}
		seen[e.Name] = true
		if q.MaxSize >= 0 && e.Size > q.MaxSize {
			longest = max(longest, e.Size)
			return
		}
		out = append(out, e)
	}
	for _, name := range q.Names {
		i, ok := slices.BinarySearchFunc(found, name, func(e store.MetadataEntry, n string) int { return strings.Compare(e.Name, n) })
		switch {
		case ok:
			add(found[i])
		case q.Depth == 0:
			add(store.MetadataEntry{Name: name, Size: -1}) // NIL
		}
		if q.Depth != 0 {
			for _, e := range found {
				if strings.HasPrefix(e.Name, name+"/") {
					add(e)
				}
			}
		}
	}
	if len(out) > 0 {
		s.enc.Star().Raw("METADATA ")
		if mb == nil {
			s.enc.Quoted("")
		} else {
			s.enc.Mailbox(mb.Name)
		}
		s.enc.Raw(" (")
		for i, e := range out {
			if i > 0 {
				s.enc.SP()
			}
			writeAString(s, e.Name)
			s.enc.SP()
			writeMetadataValue(s, e)
		}
		s.enc.Byte(')').CRLF()
	}
	if longest > 0 {
		c.okCode = fmt.Sprintf("METADATA LONGENTRIES %d", longest)
	}
	return nil
}

// writeMetadataValue writes an entry's value: NIL for a missing one (Size
// -1), a literal8 for one holding NUL (set as a literal8), else a string.
func writeMetadataValue(s *session, e store.MetadataEntry) {
	switch {
	case e.Size < 0:
		s.enc.Raw("NIL")
	case bytes.IndexByte(e.Value, 0) >= 0:
		s.enc.LiteralHeader(int64(len(e.Value)), true).Bytes(e.Value)
	default:
		s.enc.String(string(e.Value))
	}
}

// targetID is the store's id of a metadata target: 0 for the server.
func targetID(mb *store.Mailbox) int64 {
	if mb == nil {
		return 0
	}
	return mb.ID
}

// cmdSetMetadata is SETMETADATA mailbox (entry value ...): sets (or, with
// NIL, deletes) all the entries or none. Values may be quoted strings,
// literals or literal8s; a literal longer than the limit is refused before
// the client sends it.
func (s *session) cmdSetMetadata(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	mbName, _, err := s.mailboxArg(c.d)
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	var entries []store.MetadataEntry
	var total int64
	err = c.d.List(func() error {
		if len(entries) >= metadataMaxEntries {
			return no("METADATA TOOMANY", "Too many entries")
		}
		name, err := entryNameArg(c)
		if err != nil {
			return err
		}
		if name == "/private" || name == "/shared" {
			return bad("Entries are below /private or /shared")
		}
		if err := c.d.SP(); err != nil {
			return err
		}
		v, err := s.metadataValue(c, total)
		if err != nil {
			return err
		}
		total += int64(len(name) + len(v))
		entries = append(entries, store.MetadataEntry{Name: name, Value: v})
		return nil
	})
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	mb, err := s.metadataTarget(mbName, "SETMETADATA")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if readOnlyEntry(mb != nil, e.Name) {
			return no("CANNOT", "The "+e.Name+" entry cannot be changed")
		}
	}
	err = s.srv.st.SetMetadata(s.ctx, s.accountID(), targetID(mb), entries)
	switch {
	case errors.Is(err, store.ErrMetadataFull):
		return no("METADATA TOOMANY", fmt.Sprintf("Metadata is full (at most %d entries, %d octets in all)",
			store.MaxMetadataEntries, store.MaxMetadataTotal))
	case err != nil:
		return storeError(err, "SETMETADATA")
	}
	return nil
}

// metadataValue reads one SETMETADATA value: NIL (nil), a quoted string,
// a literal or a literal8. total is what the command's earlier entries
// hold: one command carries at most an account's total.
func (s *session) metadataValue(c *cmd, total int64) ([]byte, error) {
	b, err := c.d.Peek()
	if err != nil {
		return nil, err
	}
	switch b {
	case '"':
		v, err := c.d.Quoted()
		if err == nil && len(v) > store.MaxMetadataValue {
			err = no(fmt.Sprintf("METADATA MAXSIZE %d", store.MaxMetadataValue), "Value too long")
		}
		return []byte(v), err
	case '{', '~':
	default:
		v, err := c.d.NString()
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, nil
		}
		return []byte(*v), nil
	}
	lit, err := c.d.LiteralHeader(true)
	if err != nil {
		return nil, err
	}
	switch {
	case lit.Size > store.MaxMetadataValue:
		return nil, s.refuseLiteral(c, lit, fmt.Sprintf("METADATA MAXSIZE %d", store.MaxMetadataValue),
			fmt.Sprintf("Value too long (at most %d octets)", store.MaxMetadataValue))
	case total+lit.Size > store.MaxMetadataTotal:
		return nil, s.refuseLiteral(c, lit, "METADATA TOOMANY", "Too much metadata in one command")
	}
	if err := c.d.Accept(lit); err != nil {
		return nil, err
	}
	v := make([]byte, lit.Size)
	if _, err := io.ReadFull(c.d.LiteralReader(lit), v); err != nil {
		return nil, err
	}
	if !lit.Binary && bytes.IndexByte(v, 0) >= 0 {
		return nil, bad("NUL in a literal; send it as a literal8 (~{n})")
	}
	return v, nil
}

// writeAString writes s as an atom when it can be one (entry names
// usually can, as Dovecot sends them), else as a string.
func writeAString(s *session, str string) {
	for i := 0; i < len(str); i++ {
		if !imapwire.IsAtomChar(str[i]) {
			s.enc.String(str)
			return
		}
	}
	if str == "" || strings.EqualFold(str, "NIL") {
		s.enc.String(str)
		return
	}
	s.enc.Raw(str)
}
