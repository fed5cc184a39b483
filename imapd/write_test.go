package imapd

import (
	"context"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func flagsOf(t *testing.T, c *imapclient.Client) map[imap.UID][]imap.Flag {
	t.Helper()
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	out := map[imap.UID][]imap.Flag{}
	for _, m := range msgs {
		out[m.UID] = messageFlags(m.Flags)
	}
	return out
}

func TestStore(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	for i := 0; i < 3; i++ {
		appendMsg(t, c, "INBOX", crlf(simpleMsg))
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		set   imap.NumSet
		flags imap.StoreFlags
		resp  int // FETCH responses expected
		want  map[imap.UID][]imap.Flag
	}{
		{"add", imap.SeqSet{{Start: 1, Stop: 2}}, imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen, "$Work"}}, 2,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen, "$Work"}, 2: {imap.FlagSeen, "$Work"}, 3: {}}},
		{"remove by UID", imap.UIDSetNum(2), imap.StoreFlags{Op: imap.StoreFlagsDel, Flags: []imap.Flag{"$Work"}}, 1,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen, "$Work"}, 2: {imap.FlagSeen}, 3: {}}},
		{"replace silently", imap.SeqSet{{Start: 2, Stop: 0}}, imap.StoreFlags{Op: imap.StoreFlagsSet, Silent: true, Flags: []imap.Flag{imap.FlagFlagged, imap.FlagAnswered}}, 0,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen, "$Work"}, 2: {imap.FlagAnswered, imap.FlagFlagged}, 3: {imap.FlagAnswered, imap.FlagFlagged}}},
		{"unchanged still reported", imap.SeqSetNum(1), imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, 1,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen, "$Work"}, 2: {imap.FlagAnswered, imap.FlagFlagged}, 3: {imap.FlagAnswered, imap.FlagFlagged}}},
		{"\\Recent is ignored", imap.SeqSetNum(3), imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{"\\Recent", imap.FlagDraft}}, 1,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen, "$Work"}, 2: {imap.FlagAnswered, imap.FlagFlagged}, 3: {imap.FlagAnswered, imap.FlagFlagged, imap.FlagDraft}}},
		// Keywords are case-insensitive (as in Dovecot): one spelling per
		// message, the first one's.
		{"add in another case", imap.SeqSetNum(1), imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{"$work", "$WORK"}}, 1,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen, "$Work"}, 2: {imap.FlagAnswered, imap.FlagFlagged}, 3: {imap.FlagAnswered, imap.FlagFlagged, imap.FlagDraft}}},
		{"remove in another case", imap.SeqSetNum(1), imap.StoreFlags{Op: imap.StoreFlagsDel, Flags: []imap.Flag{"$WORK"}}, 1,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen}, 2: {imap.FlagAnswered, imap.FlagFlagged}, 3: {imap.FlagAnswered, imap.FlagFlagged, imap.FlagDraft}}},
		{"replace with a keyword twice", imap.SeqSetNum(2), imap.StoreFlags{Op: imap.StoreFlagsSet, Flags: []imap.Flag{"foo", "Foo"}}, 1,
			map[imap.UID][]imap.Flag{1: {imap.FlagSeen}, 2: {"foo"}, 3: {imap.FlagAnswered, imap.FlagFlagged, imap.FlagDraft}}},
	}
	for _, s := range steps {
		msgs, err := c.Store(s.set, &s.flags, nil).Collect()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if len(msgs) != s.resp {
			t.Errorf("%s: %d FETCH responses, want %d", s.name, len(msgs), s.resp)
		}
		for _, m := range msgs {
			if want := s.want[imap.UID(m.SeqNum)]; !slices.Equal(messageFlags(m.Flags), want) {
				t.Errorf("%s: FETCH %d FLAGS %v, want %v", s.name, m.SeqNum, m.Flags, want)
			}
		}
		got := flagsOf(t, c)
		for uid, want := range s.want {
			if !slices.Equal(got[uid], want) && !(len(got[uid]) == 0 && len(want) == 0) {
				t.Errorf("%s: uid %d flags %v, want %v", s.name, uid, got[uid], want)
			}
		}
	}
}

func TestCopyMoveExpunge(t *testing.T) {
	e := newEnv(t, envOptions{})
	var expunged []uint32
	c := e.login(&imapclient.UnilateralDataHandler{Expunge: func(seq uint32) { expunged = append(expunged, seq) }})
	for i := 0; i < 5; i++ {
		appendMsg(t, c, "INBOX", crlf(simpleMsg))
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	arch, _ := e.st.MailboxByName(context.Background(), e.acc.ID, "Archive")

	// COPY with COPYUID.
	cp, err := c.Copy(imap.SeqSet{{Start: 2, Stop: 3}}, "Archive").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if cp.UIDValidity != arch.UIDValidity || cp.SourceUIDs.String() != "2:3" || cp.DestUIDs.String() != "1:2" {
		t.Fatalf("COPYUID = %+v", cp)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Missing").Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Fatalf("COPY to missing: %v", err)
	}

	// MOVE: COPYUID, then EXPUNGEs from the poll, once.
	mv, err := c.Move(imap.UIDSetNum(4, 5), "Archive").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if mv.SourceUIDs.String() != "4:5" || mv.DestUIDs.String() != "3:4" {
		t.Fatalf("MOVE COPYUID = %+v", mv)
	}
	if !slices.Equal(expunged, []uint32{5, 4}) {
		t.Fatalf("MOVE expunges = %v, want [5 4]", expunged)
	}

	// EXPUNGE reports each expunged message once, highest first.
	expunged = nil
	if err := c.Store(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	// UID EXPUNGE only touches the given UIDs.
	data, err := c.UIDExpunge(imap.UIDSetNum(2)).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(data, []uint32{2}) {
		t.Fatalf("UID EXPUNGE 2 = %v", data)
	}
	data, err = c.Expunge().Collect()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(data, []uint32{2, 1}) {
		t.Fatalf("EXPUNGE = %v", data)
	}
	st, err := c.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 4 {
		t.Fatalf("Archive: %+v %v", st, err)
	}
	if mb := c.Mailbox(); mb.NumMessages != 0 {
		t.Fatalf("client view: %d messages", mb.NumMessages)
	}

	// MOVE into the selected mailbox itself gives the message a new UID
	// there, as Dovecot does: COPYUID, the old one expunged, the new one
	// EXISTS.
	if _, err := c.Select("Archive", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	expunged = nil
	mv, err = c.Move(imap.UIDSetNum(1), "Archive").Wait()
	if err != nil {
		t.Fatalf("MOVE into the same mailbox: %v", err)
	}
	if mv.SourceUIDs.String() != "1" || mv.DestUIDs.String() != "5" || !slices.Equal(expunged, []uint32{1}) {
		t.Fatalf("MOVE into the same mailbox: COPYUID %+v, expunged %v", mv, expunged)
	}
	if got := flagsOf(t, c); len(got) != 4 || !slices.Contains(slices.Collect(maps.Keys(got)), 5) {
		t.Fatalf("Archive after MOVE into itself: %v, want UIDs 2:5", got)
	}
}

func TestAppend(t *testing.T) {
	e := newEnv(t, envOptions{maxMessageSize: 4096})
	c := e.login(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	date := time.Date(2023, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600))
	cmd := c.Append("INBOX", int64(len(crlf(simpleMsg))), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen, "$Keep"}, Time: date})
	io.WriteString(cmd, crlf(simpleMsg))
	cmd.Close()
	res, err := cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := e.st.MailboxByName(context.Background(), e.acc.ID, "INBOX")
	if res.UID != 1 || res.UIDValidity != mb.UIDValidity {
		t.Fatalf("APPENDUID = %+v", res)
	}
	// The session sees its own APPEND through the poll (EXISTS).
	if n := c.Mailbox().NumMessages; n != 1 {
		t.Fatalf("EXISTS after APPEND: %d", n)
	}
	m := fetchOne(t, c, 1, &imap.FetchOptions{Flags: true, InternalDate: true})
	if !slices.Equal(m.Flags, []imap.Flag{imap.FlagSeen, "$Keep"}) || !m.InternalDate.Equal(date) {
		t.Fatalf("appended: %+v", m)
	}

	// Over APPENDLIMIT: NO [TOOBIG] before the literal is sent.
	big := strings.Repeat("x", 5000)
	cmd = c.Append("INBOX", int64(len(big)), nil)
	io.WriteString(cmd, big)
	cmd.Close()
	if _, err := cmd.Wait(); imapCode(err) != imap.ResponseCodeTooBig {
		t.Fatalf("APPEND over limit: %v", err)
	}
	// imapclient drops the connection after a refused synchronising
	// literal; carry on with a new one.
	c = e.login(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Missing mailbox: NO [TRYCREATE].
	cmd = c.Append("Nope", int64(len(crlf(simpleMsg))), nil)
	io.WriteString(cmd, crlf(simpleMsg))
	cmd.Close()
	if _, err := cmd.Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Fatalf("APPEND to missing mailbox: %v", err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if n := c.Mailbox().NumMessages; n != 1 {
		t.Fatalf("messages after refused APPENDs: %d", n)
	}
}

// APPEND dates at the ends of IMAP's four-digit years: stored as the same
// instant and written back with a four-digit year (at another offset when
// the UTC year has five digits or a minus); a zone no place has is BAD and
// stores nothing.
func TestAppendDateRange(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	r.cmd("SELECT INBOX")
	msg := crlf(simpleMsg)
	for i, tc := range []struct {
		date, want string // want "": BAD
	}{
		{"31-Dec-9999 23:59:59 -1200", "31-Dec-9999 23:59:59 -1200"},
		{"31-Dec-9999 23:59:59 +0000", "31-Dec-9999 23:59:59 +0000"},
		{"01-Jan-0000 00:00:00 +1400", "01-Jan-0000 00:00:00 +1400"},
		{"01-Jan-0000 00:00:00 +0000", "01-Jan-0000 00:00:00 +0000"},
		{" 6-May-2024 07:08:09 +0200", "06-May-2024 05:08:09 +0000"},
		{"31-Dec-9999 23:59:59 -1201", ""},
		{"01-Jan-2024 00:00:00 +1401", ""},
		{"01-Jan-2024 00:00:00 -2359", ""},
	} {
		_, status := r.try(fmt.Sprintf("APPEND INBOX \"%s\" {%d+}\r\n%s", tc.date, len(msg), msg))
		if tc.want == "" {
			if !strings.HasPrefix(status, "BAD") {
				t.Errorf("APPEND %q: %s, want BAD", tc.date, status)
			}
			continue
		}
		if !strings.HasPrefix(status, "OK") {
			t.Fatalf("APPEND %q: %s", tc.date, status)
		}
		untagged := r.cmd(fmt.Sprintf("UID FETCH %d INTERNALDATE", i+1))
		var line string
		for _, l := range untagged {
			if strings.Contains(l, "INTERNALDATE") {
				line = l
			}
		}
		if want := `INTERNALDATE "` + tc.want + `"`; !strings.Contains(line, want) {
			t.Errorf("APPEND %q: %q, want %s", tc.date, line, want)
		}
	}
	if got := r.cmd("STATUS INBOX (MESSAGES)"); len(got) != 1 || !strings.HasSuffix(got[0], "(MESSAGES 5)") {
		t.Errorf("STATUS %q, want 5 messages: the refused APPENDs store nothing", got)
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sessionsOf returns how many authenticated sessions of the account the
// server holds; a session lets go of its slot when it has finished with
// the connection (so after its last command returned).
func (e *env) sessionsOf() int {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	return e.srv.conns[e.acc.ID]
}

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "mailstack-spool-*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// A client that disconnects in the middle of an APPEND literal leaves
// nothing behind: no message, no content row, no spool file (in memory up
// to 1 MiB, in a temporary file above). Cut after the literal but before
// the CRLF that ends the command line, nothing is stored either: the
// store commits only once the whole command arrived (as Dovecot waits for
// the end of the line).
func TestAppendDisconnect(t *testing.T) {
	tests := []struct {
		name       string
		size, sent int
		spoolFile  bool // the spool went to a temporary file
		stored     bool
	}{
		{"in the literal, spooled in memory", 100_000, 50_000, false, false},
		{"in the literal, spooled to a file", 2 << 20, 3 << 19, true, false},
		{"after the literal, before its CRLF", 100_000, 100_000, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp) // where store.Spool puts its files
			e := newEnv(t, envOptions{})
			r := e.raw()
			msg := crlf(simpleMsg)
			msg += strings.Repeat(strings.Repeat("y", 78)+"\r\n", (tc.size-len(msg))/80+1)
			msg = msg[:tc.size]
			fmt.Fprintf(r.c, "b APPEND INBOX {%d}\r\n", tc.size)
			if l := r.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("no continuation: %q", l)
			}
			if _, err := io.WriteString(r.c, msg[:tc.sent]); err != nil {
				t.Fatal(err)
			}
			if tc.spoolFile {
				waitFor(t, "the spool file", func() bool { return len(spoolFiles(t, tmp)) == 1 })
			}
			ctx := context.Background()
			if tc.stored {
				waitFor(t, "the APPEND to commit", func() bool {
					mb, err := e.st.MailboxByName(ctx, e.acc.ID, "INBOX")
					return err == nil && mb.Messages == 1
				})
				// No OK without the end of the command line.
				r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if l, err := r.r.ReadString('\n'); err == nil {
					t.Fatalf("answer before the CRLF: %q", l)
				}
			}
			r.c.Close()
			waitFor(t, "the session to end", func() bool { return e.sessionsOf() == 0 })
			if files := spoolFiles(t, tmp); len(files) != 0 {
				t.Errorf("spool files left: %v", files)
			}
			mb, err := e.st.MailboxByName(ctx, e.acc.ID, "INBOX")
			if err != nil {
				t.Fatal(err)
			}
			n, err := e.st.CountMessageContents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.stored {
				if mb.Messages != 0 || mb.UIDNext != 1 || n != 0 {
					t.Fatalf("after an interrupted APPEND: %d messages, uidnext %d, %d contents", mb.Messages, mb.UIDNext, n)
				}
				return
			}
			if mb.Messages != 1 || mb.Size != int64(tc.size) || n != 1 {
				t.Fatalf("after an APPEND cut before its CRLF: %d messages of %d bytes, %d contents", mb.Messages, mb.Size, n)
			}
			c := e.login(nil)
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			m := fetchOne(t, c, 1, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
			if got := m.FindBodySection(&imap.FetchItemBodySection{}); string(got) != msg {
				t.Fatalf("stored message differs (%d bytes, want %d)", len(got), len(msg))
			}
		})
	}
}

func TestSearch(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	for i := 0; i < 6; i++ {
		var flags []imap.Flag
		if i%2 == 0 {
			flags = append(flags, imap.FlagSeen)
		}
		appendMsg(t, c, "INBOX", crlf(simpleMsg), flags...)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Expunge UID 1 so sequence numbers and UIDs differ.
	c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	if _, err := c.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	unseen := &imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}
	res, err := c.Search(unseen, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := res.AllSeqNums(); !slices.Equal(got, []uint32{1, 3, 5}) {
		t.Fatalf("SEARCH UNSEEN = %v", got)
	}
	res, err = c.UIDSearch(unseen, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := res.AllUIDs(); !slices.Equal(got, []imap.UID{2, 4, 6}) {
		t.Fatalf("UID SEARCH UNSEEN = %v", got)
	}
	res, err = c.UIDSearch(unseen, &imap.SearchOptions{ReturnMin: true, ReturnMax: true, ReturnCount: true}).Wait()
	if err != nil || res.Min != 2 || res.Max != 6 || res.Count != 3 {
		t.Fatalf("ESEARCH = %+v %v", res, err)
	}
	// SEARCHRES (imapclient cannot send RETURN (SAVE)): save, then "$".
	r := e.raw()
	r.cmd("SELECT INBOX")
	// RFC 5182 §2.4: no ESEARCH for SAVE alone.
	if got := r.cmd("UID SEARCH RETURN (SAVE) UNSEEN"); len(got) != 0 {
		t.Fatalf("SEARCH RETURN (SAVE): %q, want nothing", got)
	}
	if got := strings.Join(r.cmd("FETCH $ (UID)"), "|"); got != "* 1 FETCH (UID 2)|* 3 FETCH (UID 4)|* 5 FETCH (UID 6)" {
		t.Fatalf("FETCH $ = %q", got)
	}
	if got := strings.Join(r.cmd("UID SEARCH UID $ SEEN"), "|"); got != "* SEARCH" {
		t.Fatalf("SEARCH UID $ SEEN = %q", got)
	}
	if got := strings.Join(r.cmd("SEARCH RETURN (COUNT) UID $"), "|"); !strings.HasSuffix(got, "COUNT 3") {
		t.Fatalf("SEARCH RETURN (COUNT) UID $ = %q", got)
	}
	res, err = c.Search(&imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 2, Stop: 0}}}, Flag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil || !slices.Equal(res.AllSeqNums(), []uint32{2, 4}) {
		t.Fatalf("SEARCH 2:* SEEN = %+v %v", res, err)
	}
	res, err = c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "hello"}}}, nil).Wait()
	if err != nil || len(res.AllSeqNums()) != 5 {
		t.Fatalf("SEARCH SUBJECT hello = %+v %v", res, err)
	}
}
