package imapd

import (
	"errors"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
)

var systemFlags = []string{`\Answered`, `\Flagged`, `\Deleted`, `\Seen`, `\Draft`}

// maxListedKeywords caps the keywords written in SELECT's FLAGS and
// PERMANENTFLAGS, so that a mailbox where clients invented thousands of
// keywords does not make every SELECT huge; \* still lets clients use
// the others, and each is announced with a new FLAGS response the first
// time the session is told of a message that has it.
const maxListedKeywords = 256

// cmdSelect is SELECT and EXAMINE. Everything it answers comes from one
// snapshot read in one statement (the feed's open,
// store.SelectMailboxByName), including the first unseen message for
// IMAP4rev1 clients ([UNSEEN n]) and whether the mailbox has children for
// the LIST response IMAP4rev2 requires.
func (s *session) cmdSelect(c *cmd) error {
	readOnly := c.name == "EXAMINE"
	if err := c.d.SP(); err != nil {
		return err
	}
	name, _, err := s.mailboxArg(c.d)
	if err != nil {
		return err
	}
	var condstore bool
	var qr *qresyncParams
	if c.d.PeekIs(' ') {
		c.d.SP() //nolint:errcheck // peeked
		err := c.d.List(func() error {
			a, err := c.d.Atom()
			if err != nil {
				return err
			}
			switch strings.ToUpper(a) {
			case "CONDSTORE":
				condstore = true
			case "QRESYNC":
				if !s.qresync {
					return bad("QRESYNC is not enabled")
				}
				if err := c.d.SP(); err != nil {
					return err
				}
				if qr, err = parseQresync(c.d); err == nil && qr.seqMatch && s.uidonly {
					err = errUIDRequired("QRESYNC sequence match data")
				}
				return err
			default:
				return bad("Unknown " + c.name + " parameter " + truncate(a))
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
	wasSelected := s.sel != nil
	s.unselect()
	if wasSelected && (s.rev2 || s.qresync) {
		// RFC 7162 §3.2.11 as well as IMAP4rev2.
		s.enc.Status("*", "OK", "CLOSED", "Previous mailbox closed.")
	}
	if condstore {
		s.enableCondstore() // nothing selected now: no HIGHESTMODSEQ of its own
	}
	sel, snap, err := s.srv.feed.open(s.ctx, s.accountID(), name, readOnly)
	if err != nil {
		return storeError(err, c.name)
	}
	mb := snap.Mailbox
	s.sel, s.mailbox = sel, mb
	if err := s.initRecent(sel, mb); err != nil {
		s.unselect()
		return err
	}
	sel.setKeywords(mb.Keywords[:min(len(mb.Keywords), maxListedKeywords)])
	s.writeFlags(sel)
	s.enc.Star().Num(uint32(sel.count())).Raw(" EXISTS").CRLF()
	if !s.rev2 {
		s.toldRecent = sel.recentCount()
		s.enc.Star().Num(uint32(s.toldRecent)).Raw(" RECENT").CRLF()
		// [UNSEEN n], numbered in this session's view (nothing when the
		// view does not have it: then no message of the view is unseen).
		if n := sel.seqOf(snap.FirstUnseen); snap.FirstUnseen != 0 && n != 0 && !s.uidonly {
			s.enc.Star().Raw("OK [UNSEEN ").Num(n).Raw("] First unseen message").CRLF()
		}
	}
	s.enc.Star().Raw("OK [UIDVALIDITY ").Num(mb.UIDValidity).Raw("] UIDs valid").CRLF()
	s.enc.Star().Raw("OK [UIDNEXT ").Num(mb.UIDNext).Raw("] Predicted next UID").CRLF()
	// Every SELECT (RFC 7162 §3.1.2.1): a client that never enables
	// CONDSTORE ignores it.
	s.enc.Star().Raw("OK [HIGHESTMODSEQ ").Num64(mb.HighestModSeq).Raw("] Highest").CRLF()
	if s.rev2 {
		// RFC 9051 §6.3.2: the LIST response of the mailbox, whose name
		// may differ from the one asked for (INBOX in another case).
		s.enc.Star().Raw("LIST (")
		if snap.HasChildren {
			s.enc.Raw(`\HasChildren`)
		} else {
			s.enc.Raw(`\HasNoChildren`)
		}
		if mb.SpecialUse != "" {
			s.enc.SP().Raw(mb.SpecialUse)
		}
		s.enc.Raw(`) "/" `).Mailbox(mb.Name).CRLF()
	}
	if qr != nil && qr.uidValidity == mb.UIDValidity {
		// Another UIDVALIDITY: the client starts over, told nothing more.
		if err := s.resyncSince(sel, qr); err != nil {
			s.unselect()
			return err
		}
	}
	c.okCode, c.okText = "READ-WRITE", c.name+" completed"
	if readOnly {
		c.okCode = "READ-ONLY"
	}
	return nil
}

// writeFlags writes FLAGS and PERMANENTFLAGS with the view's keywords.
func (s *session) writeFlags(sel *view) {
	kws := sel.keywordList()
	s.enc.Star().Raw("FLAGS (").Raw(strings.Join(systemFlags, " "))
	for _, k := range kws {
		s.enc.SP().Raw(k)
	}
	s.enc.Raw(")").CRLF()
	s.enc.Star().Raw("OK [PERMANENTFLAGS (")
	if !sel.readOnly {
		s.enc.Raw(strings.Join(systemFlags, " "))
		for _, k := range kws {
			s.enc.SP().Raw(k)
		}
		s.enc.Raw(` \*`)
	}
	s.enc.Raw(")] Permanent flags").CRLF()
}

// writeMessageFlags writes a FLAGS item's list, announcing first (with a
// new FLAGS response) any keyword the session has not been told of: a
// client must never see a keyword in FETCH that FLAGS did not list.
func (s *session) announce(flags []string) {
	if s.sel != nil && s.sel.learnKeywords(flags) {
		s.writeFlags(s.sel)
	}
}

// flagList appends "(\Seen kw ...)" with \Recent where it applies.
func (s *session) flagList(uid uint32, flags []string) {
	s.enc.Byte('(')
	n := 0
	if s.sel != nil && s.sel.isRecent(uid) {
		s.enc.Raw(`\Recent`)
		n++
	}
	for _, f := range flags {
		if n > 0 {
			s.enc.SP()
		}
		s.enc.Raw(f)
		n++
	}
	s.enc.Byte(')')
}

// cmdClose is CLOSE (which expunges \Deleted messages silently, unless
// the mailbox is read-only) and UNSELECT.
func (s *session) cmdClose(c *cmd) error {
	if err := c.end(); err != nil {
		return err
	}
	sel, mb := s.sel, s.mailbox
	if c.name == "CLOSE" && !sel.readOnly {
		ranges, err := sel.resolve(allUIDs, nil)
		if err != nil {
			return err
		}
		if len(ranges) > 0 {
			gone, err := s.srv.st.Expunge(s.ctx, s.accountID(), mb.ID, ranges)
			if err != nil {
				return storeError(err, "CLOSE")
			}
			s.unselect()
			s.srv.feed.applyOwnExpunge(s.ctx, mb.ID, gone)
		}
	}
	s.unselect()
	return nil
}

func (s *session) unselect() {
	if s.sel != nil {
		s.srv.feed.close(s.sel)
		s.sel, s.mailbox, s.searchRes = nil, nil, nil
	}
}

// poll writes the pending updates of sel: the only place unsolicited
// updates come from. It takes the view as an argument because IDLE
// polls it after the session may have moved on.
func (s *session) poll(sel *view, allowExpunge bool) (err error) {
	if sel == nil {
		return nil
	}
	defer func() {
		// Never let a bug in the view machinery take the process down:
		// end only this session.
		if v := recover(); v != nil {
			s.log.Error("panic while polling; ending session", "panic", v, "stack", string(debug.Stack()))
			s.bye(byeInternal)
			err = errSessionEnded
		}
	}()
	if allowExpunge && sel.needsResync() {
		// The view dropped its pending changes (too many): read them
		// again, told page by page. Only here, where EXPUNGE may be
		// reported.
		var werr error
		rerr := s.srv.feed.resyncView(s.ctx, sel, func(ups []update) error {
			werr = s.writeUpdates(sel, ups)
			return werr
		})
		if werr != nil {
			return werr
		}
		if rerr != nil {
			// Without the resync the view cannot be made right: a new
			// session will be.
			if s.ctx.Err() == nil {
				s.log.Error("resync of a view past its limit", "err", rerr)
				s.bye("Temporary server failure while catching up with changes; please reconnect")
			}
			return errSessionEnded
		}
	}
	if why, gone := sel.goneReason(); gone {
		// A deleted account ends its sessions with its own words.
		if err := s.begin(); errors.Is(err, errSessionEnded) {
			return err
		}
		s.bye(why)
		return errSessionEnded
	}
	if err := s.claimRecent(sel); err != nil {
		return err
	}
	return s.writeUpdates(sel, sel.take(allowExpunge))
}

// writeUpdates sends updates taken from the view.
func (s *session) writeUpdates(sel *view, ups []update) error {
	var vanished []uint32
	for i, u := range ups {
		switch {
		case u.expunge != 0 && s.vanishes():
			// VANISHED instead of EXPUNGE (RFC 7162 §3.2.10, RFC 9586): the run of
			// expunges (highest first) in one response, UIDs ascending.
			vanished = append(vanished, u.uid)
			if i+1 == len(ups) || ups[i+1].expunge == 0 {
				slices.Reverse(vanished)
				writeVanished(s.enc, false, vanished)
				vanished = vanished[:0]
			}
		case u.expunge != 0:
			s.enc.Star().Num(u.expunge).Raw(" EXPUNGE").CRLF()
		case u.exists != 0:
			s.enc.Star().Num(u.exists).Raw(" EXISTS").CRLF()
			// RECENT goes with EXISTS when the count changed (RFC 3501
			// §7.3.2; IMAP4rev2 has no RECENT).
			if n := sel.recentCount(); !s.rev2 && n != s.toldRecent {
				s.toldRecent = n
				s.enc.Star().Num(uint32(n)).Raw(" RECENT").CRLF()
			}
		default:
			s.announce(u.flags)
			s.fetchHead(u.seq, u.uid)
			s.uidItem(u.uid)
			s.enc.Raw("FLAGS ")
			s.flagList(u.uid, u.flags)
			if s.condstore {
				writeModSeq(s.enc, u.modseq)
			}
			s.enc.Raw(")").CRLF()
		}
	}
	if len(ups) > 0 && ups[0].expunge != 0 && !s.rev2 {
		// Expunged \Recent messages lower the count, which EXISTS did
		// not tell if none came (Dovecot sends it too).
		if n := sel.recentCount(); n != s.toldRecent {
			s.toldRecent = n
			s.enc.Star().Num(uint32(n)).Raw(" RECENT").CRLF()
		}
	}
	return s.enc.Err()
}

// readOnlyErr answers a write to a mailbox opened with EXAMINE.
func readOnlyErr() error { return no("CANNOT", "Mailbox is read-only (EXAMINE)") }

// allUIDs is the UID set 1:*.
var allUIDs = imap.UIDSet{{Start: 1, Stop: 0}}
