package imapd

import (
	"errors"
	"io"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailstack/mailstack/store"
)

// The write commands below write nothing the poll would repeat: after its
// commit each asks the feed to catch the mailbox up, and the poll that
// imapserver runs before the tagged OK reports EXISTS/EXPUNGE/FETCH to
// this session like to any other. Only what the protocol puts in the
// command's own flow is written here (FETCH for a non-silent STORE,
// COPYUID for MOVE).

// Append implements imapserver.Session. The literal streams into the
// store's spool; nothing is committed unless the whole message arrived.
func (s *session) Append(name string, r imap.LiteralReader, opts *imap.AppendOptions) (*imap.AppendData, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	if r.Size() > s.srv.opts.MaxMessageSize {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too big"}
	}
	mb, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "APPEND: no such mailbox"}
	}
	if err != nil {
		return nil, storeError(err, "APPEND")
	}
	if mb.NoSelect {
		return nil, storeError(store.ErrNoSelect, "APPEND")
	}
	body := &fullReader{r: r, left: r.Size()}
	res, err := s.srv.st.Append(s.ctx, s.accountID(), mb.ID, body, s.srv.opts.MaxMessageSize, fromIMAPFlags(opts.Flags), opts.Time)
	if err != nil {
		return nil, storeError(err, "APPEND")
	}
	s.srv.feed.catchUpWith(s.ctx, store.ChangeEvent{MailboxID: mb.ID, ModSeq: res.ModSeq, UIDValidity: res.UIDValidity, Changes: &store.Changes{
		Updated: []store.MessageFlags{{UID: res.UID, Flags: res.Flags, ModSeq: res.ModSeq}}}})
	return &imap.AppendData{UID: imap.UID(res.UID), UIDValidity: res.UIDValidity}, nil
}

// Store implements imapserver.Session.
func (s *session) Store(w *imapserver.FetchWriter, set imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	if err := s.begin(); err != nil {
		return err
	}
	sel, err := s.selectedView()
	if err != nil {
		return err
	}
	if sel.readOnly {
		return s.readOnlyErr()
	}
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil || len(ranges) == 0 {
		return err
	}
	op := store.FlagsReplace
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op = store.FlagsAdd
	case imap.StoreFlagsDel:
		op = store.FlagsRemove
	}
	changed, err := s.srv.st.StoreFlags(s.ctx, s.accountID(), s.mailbox.ID, ranges, op, fromIMAPFlags(flags.Flags))
	if err != nil {
		return storeError(err, "STORE")
	}
	s.srv.feed.catchUpWithFlags(s.ctx, s.mailbox, changed)
	if flags.Silent {
		// The client knows what it set; others' concurrent changes to the
		// same messages still come through the poll.
		for _, c := range changed {
			sel.reported(c.UID, c.Flags)
		}
		s.pollChecked = true
		return nil
	}
	_, byUID := set.(imap.UIDSet)
	write := func(uid uint32, flags []string) error {
		seq := sel.seqOf(uid)
		if seq == 0 {
			return nil
		}
		rw := w.CreateMessage(seq)
		if byUID {
			rw.WriteUID(imap.UID(uid))
		}
		rw.WriteFlags(toIMAPFlags(flags))
		if err := rw.Close(); err != nil {
			return err
		}
		sel.reported(uid, flags)
		return nil
	}
	if all := allChanged(sel.uidsIn(ranges), changed); all != nil {
		// Every message of the set changed: StoreFlags returned the flags
		// of each, no need to read them again.
		for _, c := range all {
			if err := write(c.UID, c.Flags); err != nil {
				return err
			}
		}
		s.pollChecked = true
		return nil
	}
	err = s.forEachMeta(sel, ranges, store.FetchOptions{}, metaBatch, func(m *store.MessageMeta) error {
		return write(m.UID, m.Flags)
	})
	if err == nil {
		s.pollChecked = true
	}
	return err
}

// allChanged returns the changes of the messages uids (ascending), if
// changed (ascending) has one for each of them; else nil.
func allChanged(uids []uint32, changed []store.MessageFlags) []store.MessageFlags {
	if len(uids) == 0 || len(changed) < len(uids) {
		return nil
	}
	out := make([]store.MessageFlags, 0, len(uids))
	j := 0
	for _, u := range uids {
		for j < len(changed) && changed[j].UID < u {
			j++
		}
		if j == len(changed) || changed[j].UID != u {
			return nil
		}
		out = append(out, changed[j])
	}
	return out
}

// Copy implements imapserver.Session (COPY, UID COPY) with COPYUID.
func (s *session) Copy(set imap.NumSet, dest string) (*imap.CopyData, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	sel, err := s.selectedView()
	if err != nil {
		return nil, err
	}
	dst, err := s.destination(dest, "COPY")
	if err != nil {
		return nil, err
	}
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil || len(ranges) == 0 {
		return nil, err
	}
	res, err := s.srv.st.Copy(s.ctx, s.accountID(), s.mailbox.ID, ranges, dst.ID)
	if err != nil {
		return nil, storeError(err, "COPY")
	}
	s.srv.feed.catchUp(s.ctx, dst.ID, 0)
	return copyData(res), nil
}

// Move implements imapserver.SessionMove (MOVE, UID MOVE): COPYUID first,
// the EXPUNGEs come from the poll.
func (s *session) Move(w *imapserver.MoveWriter, set imap.NumSet, dest string) error {
	if err := s.begin(); err != nil {
		return err
	}
	sel, err := s.selectedView()
	if err != nil {
		return err
	}
	if sel.readOnly {
		return s.readOnlyErr()
	}
	dst, err := s.destination(dest, "MOVE")
	if err != nil {
		return err
	}
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil || len(ranges) == 0 {
		return err
	}
	res, err := s.srv.st.Move(s.ctx, s.accountID(), s.mailbox.ID, ranges, dst.ID)
	if err != nil {
		return storeError(err, "MOVE")
	}
	s.srv.feed.catchUp(s.ctx, dst.ID, 0)
	s.srv.feed.catchUp(s.ctx, s.mailbox.ID, 0)
	if data := copyData(res); data != nil {
		return w.WriteCopyData(data)
	}
	return nil
}

func (s *session) destination(name, cmd string) (*store.Mailbox, error) {
	dst, err := s.srv.st.MailboxByName(s.ctx, s.accountID(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: cmd + ": no such mailbox"}
	}
	if err != nil {
		return nil, storeError(err, cmd)
	}
	if dst.NoSelect {
		return nil, storeError(store.ErrNoSelect, cmd)
	}
	return dst, nil
}

func copyData(res *store.CopyResult) *imap.CopyData {
	if res == nil || len(res.SrcUIDs) == 0 {
		return nil
	}
	d := &imap.CopyData{UIDValidity: res.UIDValidity}
	for i := range res.SrcUIDs {
		d.SourceUIDs.AddNum(imap.UID(res.SrcUIDs[i]))
		d.DestUIDs.AddNum(imap.UID(res.DstUIDs[i]))
	}
	return d
}

// Expunge implements imapserver.Session: EXPUNGE, UID EXPUNGE, and the
// silent expunge of CLOSE (whose writer is the zero ExpungeWriter).
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if err := s.begin(); err != nil {
		return err
	}
	sel, err := s.selectedView()
	if err != nil {
		return err
	}
	isClose := *w == (imapserver.ExpungeWriter{})
	if sel.readOnly {
		if isClose {
			return nil // CLOSE after EXAMINE expunges nothing
		}
		return s.readOnlyErr()
	}
	// Only messages the client knows of: a plain EXPUNGE is 1:* of the view.
	set := imap.UIDSet{{Start: 1, Stop: 0}}
	if uids != nil {
		set = *uids
	}
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil || len(ranges) == 0 {
		return err
	}
	gone, err := s.srv.st.Expunge(s.ctx, s.accountID(), s.mailbox.ID, ranges)
	if err != nil {
		return storeError(err, "EXPUNGE")
	}
	if len(gone) > 0 {
		s.srv.feed.catchUp(s.ctx, s.mailbox.ID, 0)
	}
	return nil
}

// fullReader turns an early end of the literal (the client went away: the
// literal reader reports a plain io.EOF) into io.ErrUnexpectedEOF, so the
// store never commits a truncated message.
type fullReader struct {
	r    io.Reader
	left int64
}

func (f *fullReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= int64(n)
	if err == io.EOF && f.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}
