package imapd

import "github.com/mailstack/mailstack/store"

// \Recent (RFC 3501 §2.3.2) belongs to exactly one session: the first to be
// told of a message. The store keeps, per mailbox, the first UID no session
// has claimed; a session claims up to the highest UID it knows in one
// statement, at SELECT and whenever its view learns of new messages.
// Sessions of one process share what they know was claimed (watched), so
// only one of them asks the database.

// initRecent gives a newly selected view its \Recent messages: SELECT
// claims those no session has seen (a statement only when there are
// any); EXAMINE shows them without claiming (RFC 3501 §6.3.2).
func (s *session) initRecent(sel *view, mb *store.Mailbox) error {
	top := sel.maxAdded()
	if top == 0 || mb.FirstRecentUID == 0 || top < mb.FirstRecentUID {
		sel.addRecent(0, top)
		return nil
	}
	if sel.readOnly {
		sel.addRecent(mb.FirstRecentUID, top)
		return nil
	}
	first, err := s.srv.st.ClaimRecent(s.ctx, s.accountID(), mb.ID, top)
	if err != nil {
		return err
	}
	sel.addRecent(first, top)
	sel.w.claimed(top)
	return nil
}

// claimRecent claims \Recent for the messages the view is about to
// report. A failure costs only the flag: it is logged, not returned.
func (s *session) claimRecent(sel *view) error {
	if sel.readOnly {
		return nil
	}
	top, upTo := sel.maxAdded(), sel.recentClaimedUpTo()
	if top <= upTo {
		return nil
	}
	if sel.w.claimedUpTo() >= top {
		// Another session of this process claimed them.
		sel.addRecent(0, top)
		return nil
	}
	first, err := s.srv.st.ClaimRecent(s.ctx, s.accountID(), s.mailbox.ID, top)
	if err != nil {
		if s.ctx.Err() != nil {
			return errSessionEnded
		}
		s.log.Warn("claim \\Recent", "err", err)
		return nil
	}
	sel.addRecent(first, top)
	sel.w.claimed(top)
	return nil
}

// recentCount counts a mailbox's messages no session has claimed as
// \Recent (STATUS RECENT): a statement only when there may be any.
func (s *session) recentCount(mb *store.Mailbox) (int64, error) {
	if mb.FirstRecentUID >= mb.UIDNext {
		return 0, nil
	}
	return s.srv.st.CountRecent(s.ctx, s.accountID(), mb.ID)
}
