package imapd

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/store"
)

// The write commands below write nothing the poll would repeat: after its
// commit each asks the feed to catch the mailbox up, and the poll before
// the tagged OK reports EXISTS/EXPUNGE/FETCH to this session like to any
// other. Only what the protocol puts in the command's own flow is written
// here (FETCH for a non-silent STORE, COPYUID for MOVE).

// flagListArg reads a flag list "(\Seen $Work)" or, with bare, flags
// separated by spaces without parentheses (STORE allows both).
func flagListArg(d *imapwire.Decoder, bare bool) ([]string, error) {
	var flags []string
	item := func() error {
		f, err := flagArg(d)
		flags = append(flags, f)
		return err
	}
	if !bare || d.PeekIs('(') {
		return flags, d.List(item)
	}
	for {
		if err := item(); err != nil {
			return nil, err
		}
		if !d.PeekIs(' ') {
			return flags, nil
		}
		d.SP() //nolint:errcheck // peeked
	}
}

// flagArg reads one flag: \System or a keyword atom.
func flagArg(d *imapwire.Decoder) (string, error) {
	sys, err := d.Consume('\\')
	if err != nil {
		return "", err
	}
	a, err := d.Atom()
	if err != nil {
		return "", err
	}
	if sys {
		return `\` + a, nil
	}
	return a, nil
}

// dateTimeArg parses an IMAP date-time ("06-May-2024 07:08:09 +0000"; the
// day may be space-padded). The zone must be one the world has (-1200 to
// +1400): the date is stored in UTC and written back at an offset in that
// range when its UTC year has five digits or a minus (imapwire's Date).
func dateTimeArg(d *imapwire.Decoder) (time.Time, error) {
	s, err := d.Quoted()
	if err != nil {
		return time.Time{}, err
	}
	for _, layout := range []string{"02-Jan-2006 15:04:05 -0700", "_2-Jan-2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			if _, off := t.Zone(); off < -12*3600 || off > 14*3600 {
				return time.Time{}, bad("Time zone out of range in date-time " + truncate(s))
			}
			return t, nil
		}
	}
	return time.Time{}, bad("Invalid date-time " + truncate(s))
}

// cmdAppend streams the literal into the store's spool; nothing is
// committed unless the whole message and the end of the command arrived.
func (s *session) cmdAppend(c *cmd) error {
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
	var flags []string
	if c.d.PeekIs('(') {
		if flags, err = flagListArg(c.d, false); err != nil {
			return err
		}
		if err := c.d.SP(); err != nil {
			return err
		}
	}
	var date time.Time
	if c.d.PeekIs('"') {
		if date, err = dateTimeArg(c.d); err != nil {
			return err
		}
		if err := c.d.SP(); err != nil {
			return err
		}
	}
	lit, err := c.d.LiteralHeader(true)
	if err != nil {
		return err
	}
	if lit.Size > s.srv.opts.MaxMessageSize {
		return s.refuseLiteral(c, lit, "TOOBIG", fmt.Sprintf("Message too big (at most %d bytes)", s.srv.opts.MaxMessageSize))
	}
	if !lit.NonSync && lit.Size > quotaPrecheck {
		// A large upload the account has no room for is refused before
		// the client sends it (quota.go); delivery checks again.
		if full, err := s.srv.st.QuotaFull(s.ctx, s.accountID(), lit.Size); err == nil && full {
			return s.refuseLiteral(c, lit, "OVERQUOTA", "APPEND: quota exceeded")
		}
	}
	flags = slices.DeleteFunc(flags, func(f string) bool { return strings.EqualFold(f, `\Recent`) })
	// Where the message goes: the selected mailbox by its id (and name,
	// which must still be its own), claiming \Recent for it; another by
	// name, resolved by the statement that stores it. A client that waits
	// for the continuation is told TRYCREATE before it uploads, which
	// costs a look-up first; one that does not (LITERAL+) has sent the
	// message already.
	target := store.Target{AccountID: s.accountID(), Flags: flags, InternalDate: date}
	if target.MailboxName, err = store.NormalizeMailboxName(name); err != nil {
		// No such mailbox can exist, nor be created: not TRYCREATE.
		return s.refuseLiteral(c, lit, "CANNOT", "Invalid mailbox name")
	}
	if s.sel != nil && !s.sel.readOnly && target.MailboxName == s.mailbox.Name {
		target.MailboxID, target.ClaimRecent = s.mailbox.ID, true
	}
	if !lit.NonSync && target.MailboxID == 0 {
		if code, text := s.appendTarget(&target); code != "" {
			return s.refuseLiteral(c, lit, code, text)
		}
	}
	if err := c.d.Accept(lit); err != nil {
		return err
	}
	body := &appendBody{r: c.d.LiteralReader(lit), c: c}
	msg, err := store.Spool(body, s.srv.opts.MaxMessageSize)
	if body.err != nil {
		// The command did not end after its literal: nothing stored.
		return body.err
	}
	if err != nil {
		if !body.done {
			// The literal was not read to its end (a store failure, not
			// the client's): the rest cannot be told from commands.
			return &imapwire.Error{Text: "APPEND failed mid-literal", Fatal: true}
		}
		return storeError(err, "APPEND")
	}
	defer msg.Close()
	if lit.Binary {
		enc, err := encodeBinaryParts(msg)
		if err != nil {
			return storeError(err, "APPEND")
		}
		if enc != msg {
			defer enc.Close()
			msg = enc
		}
	}
	results, err := s.srv.st.Deliver(s.ctx, msg, []store.Target{target})
	if errors.Is(err, store.ErrNotFound) {
		// The name names no mailbox, or no longer the selected one:
		// look it up to say why, or to store the message where the name
		// now points.
		if code, text := s.appendTarget(&target); code != "" {
			return no(code, text)
		}
		results, err = s.srv.st.Deliver(s.ctx, msg, []store.Target{target})
	}
	if errors.Is(err, store.ErrInvalid) {
		return no("CANNOT", "APPEND: "+err.Error())
	}
	if err != nil {
		return storeError(err, "APPEND")
	}
	res := results[0]
	if res.Recent && s.sel != nil && res.MailboxID == s.mailbox.ID {
		s.sel.addRecent(res.UID, res.UID)
		s.sel.w.claimed(res.UID)
	}
	s.srv.feed.applyOwn(s.ctx, store.MailboxChange{MailboxID: res.MailboxID, ModSeq: res.ModSeq, UIDValidity: res.UIDValidity, Changes: &store.Changes{
		Updated: []store.MessageFlags{{UID: res.UID, Flags: res.Flags, ModSeq: res.ModSeq}}}})
	// The client (or another of the account's) fetches what it appended
	// soon: what the session knows of it is cached now.
	meta := store.MessageMeta{UID: res.UID, MessageID: res.MessageID, Flags: res.Flags, ModSeq: res.ModSeq,
		InternalDate: res.InternalDate, Size: msg.Size}
	s.srv.feed.cacheRow(res.MailboxID, meta)
	s.srv.contents.putSpooled(res.MessageID, msg)
	c.okCode = fmt.Sprintf("APPENDUID %d %d", res.UIDValidity, res.UID)
	c.okText = "APPEND completed"
	return nil
}

// appendTarget resolves an APPEND's mailbox by name into t (by id, no
// \Recent claim), or says why it cannot take messages.
func (s *session) appendTarget(t *store.Target) (code, text string) {
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), t.MailboxName)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return "TRYCREATE", "APPEND: no such mailbox"
	case err != nil:
		s.log.Error("append: mailbox look-up", "err", err)
		return "UNAVAILABLE", "APPEND: temporary failure; try again"
	case mb.NoSelect:
		return "CANNOT", "APPEND: mailbox cannot be selected"
	}
	t.MailboxID, t.MailboxName, t.ClaimRecent = mb.ID, mb.Name, false
	return "", ""
}

// encodeBinaryParts re-encodes in base64 the parts of a message appended
// as a literal8 (BINARY, RFC 3516) whose content holds NUL: no IMAP literal
// could carry them to a client that fetches BODY[] (Dovecot does the
// same; BINARY[] still returns the original bytes). A message without such
// parts is returned as it is.
func encodeBinaryParts(msg *store.Spooled) (*store.Spooled, error) {
	parts, err := mimeindex.NULParts(msg.ReaderAt(), msg.Structure)
	if err != nil || len(parts) == 0 {
		return msg, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(mimeindex.EncodeParts(msg.ReaderAt(), msg.Size, parts, pw)) }()
	out, err := store.Spool(pr, 0)
	pr.Close()
	return out, err
}

// refuseLiteral answers a command whose literal the server will not take
// with a tagged NO, keeping the connection in step: a synchronising
// literal was never sent; a small non-synchronising one is read and
// dropped; a larger one ends the connection after the NO.
func (s *session) refuseLiteral(c *cmd, lit imapwire.Literal, code, text string) error {
	err := c.d.Refuse(lit, text, code)
	var we *imapwire.Error
	if !errors.As(err, &we) {
		return err
	}
	switch {
	case we.Fatal:
		s.enc.Status(c.tag, "NO", code, text)
		return &protocolViolation{text + "; closing the connection"}
	case !we.Ended:
		if err := c.d.Skip(); err != nil {
			return err
		}
	}
	return no(code, text)
}

// appendBody is an APPEND literal that, at its end, also reads the end of
// the command: the store commits only once it returned io.EOF, so a
// message whose command was cut or malformed after the literal is not
// stored.
type appendBody struct {
	r    io.Reader
	c    *cmd
	done bool  // the literal was read to its end
	err  error // the command did not end properly
}

func (b *appendBody) Read(p []byte) (int, error) {
	switch {
	case b.err != nil:
		return 0, b.err
	case b.done:
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.done = true
		if e := b.c.end(); e != nil {
			if e == io.EOF {
				e = io.ErrUnexpectedEOF // the client went away: no commit
			}
			b.err = e
			return n, e
		}
	}
	return n, err
}

// cmdStore is STORE and UID STORE.
func (s *session) cmdStore(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	set, err := c.d.NumSet(c.uid)
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	var unchangedSince *uint64
	if c.d.PeekIs('(') {
		err := c.d.List(func() error {
			a, err := c.d.Atom()
			if err != nil {
				return err
			}
			if !strings.EqualFold(a, "UNCHANGEDSINCE") || unchangedSince != nil {
				return bad("Unknown STORE modifier " + truncate(a))
			}
			if err := c.d.SP(); err != nil {
				return err
			}
			ms, err := modseqArg(c.d)
			unchangedSince = &ms
			return err
		})
		if err != nil {
			return err
		}
		if err := c.d.SP(); err != nil {
			return err
		}
	}
	item, err := c.d.Atom()
	if err != nil {
		return err
	}
	op := store.FlagsReplace
	item = strings.ToUpper(item)
	switch {
	case strings.HasPrefix(item, "+"):
		op, item = store.FlagsAdd, item[1:]
	case strings.HasPrefix(item, "-"):
		op, item = store.FlagsRemove, item[1:]
	}
	silent := false
	switch item {
	case "FLAGS":
	case "FLAGS.SILENT":
		silent = true
	default:
		return bad("Unknown STORE data item " + truncate(item))
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	flags, err := flagListArg(c.d, true)
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	// \Recent belongs to the server (RFC 3501 §2.3.2): ignored, as
	// Dovecot does.
	flags = slices.DeleteFunc(flags, func(f string) bool { return strings.EqualFold(f, `\Recent`) })
	sel := s.sel
	if unchangedSince != nil {
		s.enableCondstore()
	}
	if sel.readOnly {
		return readOnlyErr()
	}
	refs, err := sel.refs(set, s.searchRes)
	if err != nil || len(refs) == 0 {
		return err
	}
	if err := s.checkLimit("STORE", len(refs)); err != nil {
		return err
	}
	var changed []store.MessageFlags
	var modified []uint32
	if unchangedSince != nil {
		changed, modified, err = s.srv.st.StoreFlagsUnchangedSince(s.ctx, s.accountID(), s.mailbox.ID, refRanges(refs), op, flags, *unchangedSince)
	} else {
		changed, err = s.srv.st.StoreFlags(s.ctx, s.accountID(), s.mailbox.ID, refRanges(refs), op, flags)
	}
	if err != nil {
		return storeError(err, "STORE")
	}
	s.srv.feed.applyOwnFlags(s.ctx, s.mailbox, changed)
	if len(modified) > 0 {
		// RFC 7162 §3.1.3: the messages that failed UNCHANGEDSINCE, in
		// the numbers of the command; no FETCH for them.
		nums, kept := modified, refs[:0]
		if !c.uid {
			nums = make([]uint32, 0, len(modified))
		}
		for _, r := range refs {
			if _, ok := slices.BinarySearch(modified, r.uid); !ok {
				kept = append(kept, r)
			} else if !c.uid {
				nums = append(nums, r.seq)
			}
		}
		refs = kept
		c.okCode, c.okText = "MODIFIED "+string(appendSet(nil, nums)), "Conditional STORE failed for some messages"
	}
	if silent {
		// The client knows what it set; others' concurrent changes to the
		// same messages still come through the poll. A CONDSTORE client
		// still learns the new modseqs (RFC 7162 §3.1.3).
		j := 0 // refs and changed are both by ascending UID
		for _, ch := range changed {
			sel.reported(ch.UID, ch.Flags, ch.ModSeq)
			if s.condstore {
				for refs[j].uid < ch.UID {
					j++
				}
				s.fetchHead(refs[j].seq, ch.UID)
				if c.uid || s.qresync {
					s.uidItem(ch.UID)
				}
				s.enc.Raw("MODSEQ (").Num64(ch.ModSeq).Raw("))").CRLF()
			}
		}
		return s.enc.Err()
	}
	write := func(seq, uid uint32, flags []string, modseq uint64) error {
		s.announce(flags)
		s.fetchHead(seq, uid)
		if c.uid || s.qresync { // RFC 7162 §3.2.4: always the UID then
			s.uidItem(uid)
		}
		s.enc.Raw("FLAGS ")
		s.flagList(uid, flags)
		if s.condstore {
			writeModSeq(s.enc, modseq)
		}
		s.enc.Raw(")").CRLF()
		sel.reported(uid, flags, modseq)
		return s.enc.Err()
	}
	if all := allChanged(refs, changed); all != nil {
		// Every message of the set changed: StoreFlags returned the flags
		// of each, no need to read them again.
		for i, ch := range all {
			if err := write(refs[i].seq, ch.UID, ch.Flags, ch.ModSeq); err != nil {
				return err
			}
		}
		return nil
	}
	return s.forEachMeta(sel, refs, store.FetchOptions{}, metaBatch, func(seq uint32, m *store.MessageMeta) error {
		return write(seq, m.UID, m.Flags, m.ModSeq)
	})
}

// allChanged returns the changes of the messages refs (ascending), if
// changed (ascending) has one for each of them; else nil.
func allChanged(refs []msgRef, changed []store.MessageFlags) []store.MessageFlags {
	if len(refs) == 0 || len(changed) < len(refs) {
		return nil
	}
	out := make([]store.MessageFlags, 0, len(refs))
	j := 0
	for _, r := range refs {
		for j < len(changed) && changed[j].UID < r.uid {
			j++
		}
		if j == len(changed) || changed[j].UID != r.uid {
			return nil
		}
		out = append(out, changed[j])
	}
	return out
}

// copyArgs reads COPY's and MOVE's "set mailbox".
func (s *session) copyArgs(c *cmd) (imap.NumSet, string, error) {
	if err := c.d.SP(); err != nil {
		return nil, "", err
	}
	set, err := c.d.NumSet(c.uid)
	if err != nil {
		return nil, "", err
	}
	if err := c.d.SP(); err != nil {
		return nil, "", err
	}
	name, _, err := s.mailboxArg(c.d)
	if err != nil {
		return nil, "", err
	}
	return set, name, c.end()
}

// cmdCopy is COPY and UID COPY, with COPYUID.
func (s *session) cmdCopy(c *cmd) error {
	set, name, err := s.copyArgs(c)
	if err != nil {
		return err
	}
	sel := s.sel
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil {
		return err
	}
	if err := s.checkLimit("COPY", sel.countIn(ranges)); err != nil {
		return err
	}
	dst, err := s.destination(name, "COPY")
	if err != nil || len(ranges) == 0 {
		return err
	}
	res, err := s.srv.st.Copy(s.ctx, s.accountID(), s.mailbox.ID, ranges, dst.ID)
	if err != nil {
		return storeError(err, "COPY")
	}
	s.srv.feed.readChanges(s.ctx, dst.ID)
	if code := copyUID(res); code != "" {
		c.okCode = code
	}
	return nil
}

// cmdMove is MOVE and UID MOVE (RFC 6851): COPYUID in an untagged OK
// first, the EXPUNGEs from the poll.
func (s *session) cmdMove(c *cmd) error {
	set, name, err := s.copyArgs(c)
	if err != nil {
		return err
	}
	sel := s.sel
	if sel.readOnly {
		return readOnlyErr()
	}
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil {
		return err
	}
	if err := s.checkLimit("MOVE", sel.countIn(ranges)); err != nil {
		return err
	}
	dst, err := s.destination(name, "MOVE")
	if err != nil || len(ranges) == 0 {
		return err
	}
	res, err := s.srv.st.Move(s.ctx, s.accountID(), s.mailbox.ID, ranges, dst.ID)
	if err != nil {
		return storeError(err, "MOVE")
	}
	if dst.ID != s.mailbox.ID {
		s.srv.feed.readChanges(s.ctx, dst.ID)
	}
	s.srv.feed.readChanges(s.ctx, s.mailbox.ID)
	if code := copyUID(res); code != "" {
		s.enc.Status("*", "OK", code, "Moved")
	}
	return nil
}

func (s *session) destination(name, cmd string) (*store.Mailbox, error) {
	dst, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, no("TRYCREATE", cmd+": no such mailbox")
	}
	if err != nil {
		return nil, storeError(err, cmd)
	}
	if dst.NoSelect {
		return nil, storeError(store.ErrNoSelect, cmd)
	}
	return dst, nil
}

// copyUID is the COPYUID response code of a copy, "" if nothing was
// copied.
func copyUID(res *store.CopyResult) string {
	if res == nil || len(res.SrcUIDs) == 0 {
		return ""
	}
	var src, dst imap.UIDSet
	for i := range res.SrcUIDs {
		src.AddNum(imap.UID(res.SrcUIDs[i]))
		dst.AddNum(imap.UID(res.DstUIDs[i]))
	}
	return fmt.Sprintf("COPYUID %d %s %s", res.UIDValidity, src, dst)
}

// cmdExpunge is EXPUNGE and UID EXPUNGE: only messages the client knows
// of are expunged (a plain EXPUNGE is 1:* of the view).
func (s *session) cmdExpunge(c *cmd) error {
	var set imap.NumSet = allUIDs
	if c.uid {
		if err := c.d.SP(); err != nil {
			return err
		}
		var err error
		if set, err = c.d.NumSet(true); err != nil {
			return err
		}
	}
	if err := c.end(); err != nil {
		return err
	}
	sel := s.sel
	if sel.readOnly {
		return readOnlyErr()
	}
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil || len(ranges) == 0 {
		return err
	}
	if c.uid {
		if err := s.checkLimit("UID EXPUNGE", sel.countIn(ranges)); err != nil {
			return err
		}
	}
	gone, err := s.srv.st.Expunge(s.ctx, s.accountID(), s.mailbox.ID, ranges)
	if err != nil {
		return storeError(err, "EXPUNGE")
	}
	s.srv.feed.applyOwnExpunge(s.ctx, s.mailbox.ID, gone)
	c.okModSeq = s.qresync
	return nil
}
