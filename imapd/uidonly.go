package imapd

import (
	"github.com/emersion/go-imap/v2"
)

// UIDONLY (RFC 9586): once a client has enabled it, nothing it sends or
// receives carries a message sequence number. Messages are named by UID
// in UIDFETCH responses ("* 42 UIDFETCH (FLAGS (\Seen))"), expunges are
// VANISHED (as under QRESYNC), SELECT leaves out [UNSEEN n], and every
// command that takes sequence numbers is refused with BAD [UIDREQUIRED].
// The session keeps its view all the same: the view is what tells it which
// messages the client has heard of.

// seqCommands take message sequence numbers in their plain form; their UID
// forms remain (RFC 9586 §3).
var seqCommands = map[string]bool{"FETCH": true, "STORE": true, "SEARCH": true, "COPY": true, "MOVE": true,
	"SORT": true, "THREAD": true}

// errUIDRequired answers a sequence number sent by a UIDONLY client.
func errUIDRequired(what string) error {
	return badCode("UIDREQUIRED", what+" uses message sequence numbers; UIDONLY is enabled")
}

// uidRequired refuses, before its arguments are read, a command that
// addresses messages by sequence number once UIDONLY is enabled.
func (s *session) uidRequired(c *cmd) error {
	if s.uidonly && !c.uid && seqCommands[c.name] {
		return errUIDRequired(c.name)
	}
	return nil
}

// hasSeqNums reports whether search criteria name messages by sequence
// number (UID SEARCH 1:5 ALL), which UIDONLY forbids (RFC 9586 §3.4).
func hasSeqNums(c *imap.SearchCriteria) bool {
	return anyCriteria(c, func(c *imap.SearchCriteria) bool { return len(c.SeqNum) > 0 })
}

// fetchHead starts a FETCH response: "* seq FETCH (", or under UIDONLY
// "* uid UIDFETCH (".
func (s *session) fetchHead(seq, uid uint32) {
	if s.uidonly {
		s.enc.Star().Num(uid).Raw(" UIDFETCH (")
		return
	}
	s.enc.Star().Num(seq).Raw(" FETCH (")
}

// uidItem writes "UID n " inside a FETCH response where the protocol
// requires it (UID STORE and unsolicited flag updates); a UIDFETCH response
// carries the UID already.
func (s *session) uidItem(uid uint32) {
	if !s.uidonly {
		s.enc.Raw("UID ").Num(uid).SP()
	}
}

// vanishes reports whether expunges are told with VANISHED (QRESYNC or
// UIDONLY) rather than EXPUNGE.
func (s *session) vanishes() bool { return s.qresync || s.uidonly }
