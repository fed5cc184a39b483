package imapd

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// Tests of instant sync (issue 4) beyond idle_test.go: a concurrent stress
// test across two servers, 1,000 IDLE sessions, bounded memory of a session
// that never polls, and the corner cases that the stress test turned up.

// twoServers starts two servers, each with its own pool and LISTEN
// connection, on one database (two mailstack processes).
func twoServers(tb testing.TB, o envOptions, so store.Options) (url string, e1, e2 *env) {
	return twoServersWith(tb, o, so, so)
}

// twoServersWith is twoServers with store options for each server.
func twoServersWith(tb testing.TB, o envOptions, so1, so2 store.Options) (url string, e1, e2 *env) {
	tb.Helper()
	url = storetest.NewURL(tb)
	open := func(so store.Options) *store.Store {
		st, err := store.Open(context.Background(), url, so)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(st.Close)
		return st
	}
	o.st = open(so1)
	e1 = newEnv(tb, o)
	o.st = open(so2)
	e2 = newEnv(tb, o)
	// Each feed re-reads its mailboxes once its LISTEN connection is up;
	// tests that stall or count catch-ups start after that.
	for _, e := range []*env{e1, e2} {
		waitFor(tb, "the change feed to listen", func() bool {
			e.srv.feed.mu.Lock()
			defer e.srv.feed.mu.Unlock()
			return e.srv.feed.resyncs > 0 && !e.srv.feed.resyncing
		})
	}
	return url, e1, e2
}

// ---- a client's view of the selected mailbox, read off the wire ----

// wireView is a client's model of its selected mailbox (sequence number →
// UID and flags), updated from the server's responses in the order they
// arrive: EXISTS, EXPUNGE and FETCH, unilateral or answering the client's
// own commands. It reads the byte stream below imapclient because
// imapclient hands a unilateral FETCH to UnilateralDataHandler.Fetch on a
// goroutine of its own (so its order against EXPUNGE, and against a later
// FETCH of the same message, is lost) and routes a FETCH that arrives
// during a FETCH or STORE command to that command. A response that cannot
// be right (EXISTS shrinking, EXPUNGE or FETCH out of range, a FETCH naming
// another UID than the one the client has at that number) is recorded as
// an error.
type wireView struct {
	mu    sync.Mutex
	msgs  []wireMsg
	errs  []string
	buf   []byte
	skip  int // literal bytes still to skip
	count struct{ exists, expunge, fetch int }
	// onLine, if set, sees every response line as it is read (the
	// latency benchmark's clock).
	onLine func(string)
}

type wireMsg struct {
	uid   uint32   // 0: not known yet (announced by EXISTS)
	flags []string // sorted; nil: not known yet
}

var (
	literalRe = regexp.MustCompile(`\{(\d+)\+?\}$`)
	uidRe     = regexp.MustCompile(`\bUID (\d+)`)
	flagsRe   = regexp.MustCompile(`\bFLAGS \(([^)]*)\)`)
)

func (v *wireView) reset() {
	v.mu.Lock()
	v.msgs = nil
	v.mu.Unlock()
}

func (v *wireView) feed(p []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.buf = append(v.buf, p...)
	for {
		if v.skip > 0 {
			k := min(v.skip, len(v.buf))
			v.buf, v.skip = v.buf[k:], v.skip-k
			if v.skip > 0 {
				break
			}
			continue
		}
		i := bytes.Index(v.buf, []byte("\r\n"))
		if i < 0 {
			break
		}
		line := string(v.buf[:i])
		v.buf = v.buf[i+2:]
		if m := literalRe.FindStringSubmatch(line); m != nil {
			v.skip, _ = strconv.Atoi(m[1])
		}
		v.line(line)
	}
	if len(v.buf) == 0 {
		v.buf = nil
	}
}

func (v *wireView) errorf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Sprintf(format, args...))
}

func (v *wireView) line(line string) {
	if v.onLine != nil {
		v.onLine(line)
	}
	rest, ok := strings.CutPrefix(line, "* ")
	if !ok {
		return
	}
	f := strings.SplitN(rest, " ", 3)
	if len(f) < 2 {
		return
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return
	}
	switch strings.ToUpper(f[1]) {
	case "EXISTS":
		v.count.exists++
		if n < len(v.msgs) {
			v.errorf("EXISTS %d with %d messages in view", n, len(v.msgs))
			return
		}
		for len(v.msgs) < n {
			v.msgs = append(v.msgs, wireMsg{})
		}
	case "EXPUNGE":
		v.count.expunge++
		if n < 1 || n > len(v.msgs) {
			v.errorf("EXPUNGE %d with %d messages in view", n, len(v.msgs))
			return
		}
		v.msgs = slices.Delete(v.msgs, n-1, n)
	case "FETCH":
		v.count.fetch++
		if n < 1 || n > len(v.msgs) {
			v.errorf("FETCH %d with %d messages in view: %s", n, len(v.msgs), line)
			return
		}
		m := &v.msgs[n-1]
		if u := uidRe.FindStringSubmatch(f[2]); u != nil {
			uid, _ := strconv.ParseUint(u[1], 10, 32)
			if m.uid != 0 && m.uid != uint32(uid) {
				v.errorf("FETCH %d UID %d, but the client has UID %d there", n, uid, m.uid)
			}
			m.uid = uint32(uid)
		}
		if fl := flagsRe.FindStringSubmatch(f[2]); fl != nil {
			// \Recent is the session's, not the message's.
			m.flags = sortedFlags(slices.DeleteFunc(strings.Fields(fl[1]), func(f string) bool { return f == `\Recent` }))
		}
	}
}

func sortedFlags(fs []string) []string {
	out := append([]string{}, fs...)
	sort.Strings(out)
	return out
}

// storeLocal applies a client's own STORE .SILENT to its model, as a
// client does when it sends one.
func (v *wireView) storeLocal(pick func(i int, m wireMsg) bool, op imap.StoreFlagsOp, flags []imap.Flag) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, m := range v.msgs {
		if !pick(i, m) || m.flags == nil {
			continue
		}
		set := map[string]bool{}
		for _, f := range m.flags {
			set[f] = true
		}
		if op == imap.StoreFlagsSet {
			clear(set)
		}
		for _, f := range flags {
			set[string(f)] = op != imap.StoreFlagsDel
		}
		nf := []string{}
		for f, on := range set {
			if on {
				nf = append(nf, f)
			}
		}
		v.msgs[i].flags = sortedFlags(nf)
	}
}

// randomKnown returns a random (seq, uid) of a message whose UID the
// client knows, or 0, 0.
func (v *wireView) randomKnown(rng *rand.Rand) (uint32, uint32) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.msgs) == 0 {
		return 0, 0
	}
	for range 8 {
		i := rng.IntN(len(v.msgs))
		if rng.IntN(2) == 0 {
			// Half the time one of a few hot messages, so that sessions
			// collide on the same message often.
			i = rng.IntN(min(len(v.msgs), 4))
		}
		if v.msgs[i].uid != 0 {
			return uint32(i + 1), v.msgs[i].uid
		}
	}
	return 0, 0
}

func (v *wireView) firstUnknown() uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, m := range v.msgs {
		if m.uid == 0 || m.flags == nil {
			return uint32(i + 1)
		}
	}
	return 0
}

func (v *wireView) size() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.msgs)
}

// compare checks the model against the database ("uid:flags" lines) and
// returns what differs; unknown entries only need the right count.
func (v *wireView) compare(db []wireMsg) (diffs []string, unknown int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	diffs = append(diffs, v.errs...)
	if len(v.msgs) != len(db) {
		diffs = append(diffs, fmt.Sprintf("%d messages in view, %d in the database", len(v.msgs), len(db)))
	}
	for i := range min(len(v.msgs), len(db)) {
		m, d := v.msgs[i], db[i]
		if m.uid == 0 {
			unknown++
			continue
		}
		if m.uid != d.uid {
			diffs = append(diffs, fmt.Sprintf("seq %d: UID %d in view, %d in the database", i+1, m.uid, d.uid))
			continue
		}
		if m.flags != nil && !slices.Equal(m.flags, d.flags) {
			diffs = append(diffs, fmt.Sprintf("seq %d UID %d: flags %v in view, %v in the database", i+1, m.uid, m.flags, d.flags))
		}
	}
	return diffs, unknown
}

type tapConn struct {
	net.Conn
	v *wireView
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.v != nil {
		c.v.feed(p[:n])
	}
	return n, err
}

// connect dials e over TLS and logs in; v (if not nil) taps what the server
// sends. It returns errors rather than failing, for use on goroutines.
func connect(addr, user, pass string, h *imapclient.UnilateralDataHandler, v *wireView) (*imapclient.Client, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	c := imapclient.New(&tapConn{Conn: conn, v: v}, &imapclient.Options{UnilateralDataHandler: h})
	if err := c.Login(user, pass).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("login %s: %w", user, err)
	}
	return c, nil
}

// dbMessages is the mailbox as the database has it.
func dbMessages(t testing.TB, st *store.Store, accountID, mailboxID int64) []wireMsg {
	t.Helper()
	var out []wireMsg
	err := st.FetchMeta(context.Background(), accountID, mailboxID, []store.UIDRange{{Start: 1, Stop: 0}}, store.FetchOptions{},
		func(m *store.MessageMeta) error {
			out = append(out, wireMsg{uid: m.UID, flags: sortedFlags(m.Flags)})
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// feedModSeq is the modseq a server's feed has applied to the views of a
// mailbox (0 when no local session has it selected).
func feedModSeq(srv *Server, mailboxID int64) uint64 {
	srv.feed.mu.Lock()
	w := srv.feed.boxes[mailboxID]
	srv.feed.mu.Unlock()
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.modseq
}

// waitFeeds waits until every server's feed has applied the mailbox's
// current highest modseq: the NOTIFY of the last change has been handled.
func waitFeeds(t testing.TB, st *store.Store, accountID, mailboxID int64, srvs ...*Server) {
	t.Helper()
	mb, err := st.MailboxByID(context.Background(), accountID, mailboxID)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, srv := range srvs {
		for feedModSeq(srv, mailboxID) < mb.HighestModSeq {
			if time.Now().After(deadline) {
				t.Fatalf("feed stuck at modseq %d, database at %d", feedModSeq(srv, mailboxID), mb.HighestModSeq)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func mailboxID(t testing.TB, e *env, name string) int64 {
	t.Helper()
	mb, err := e.st.MailboxByName(context.Background(), e.acc.ID, name)
	if err != nil {
		t.Fatal(err)
	}
	return mb.ID
}

// ---- regression tests for what the stress test found ----

// A STORE .SILENT must not swallow another session's change to the same
// message that the client has not been told yet: the feed merges both into
// one pending FETCH, and dropping it as "the client knows what it set"
// left the client without the other change for good.
func TestSilentStoreKeepsOthersChange(t *testing.T) {
	for _, sameServer := range []bool{true, false} {
		t.Run(fmt.Sprintf("sameServer=%v", sameServer), func(t *testing.T) {
			_, e1, e2 := twoServers(t, envOptions{}, store.Options{MaxConns: 4})
			other := e2
			if sameServer {
				other = e1
			}
			e1.deliver("INBOX", crlf(simpleMsg))
			e1.deliver("INBOX", crlf(simpleMsg))
			v := &wireView{}
			a, err := connect(e1.addr, e1.user, e1.pass, nil, v)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if _, err := a.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect(); err != nil {
				t.Fatal(err)
			}
			inbox := mailboxID(t, e1, "INBOX")
			// Another session's change, committed before A's own and not
			// yet polled by A (A sends no command in between).
			if _, err := other.st.StoreFlags(context.Background(), e1.acc.ID, inbox, []store.UIDRange{{Start: 1, Stop: 2}},
				store.FlagsAdd, []string{"$Other"}); err != nil {
				t.Fatal(err)
			}
			silent := func(uid uint32, f imap.Flag) {
				t.Helper()
				v.storeLocal(func(_ int, m wireMsg) bool { return m.uid == uid }, imap.StoreFlagsAdd, []imap.Flag{f})
				if err := a.Store(imap.UIDSetNum(imap.UID(uid)), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
					Flags: []imap.Flag{f}}, nil).Close(); err != nil {
					t.Fatal(err)
				}
				waitFeeds(t, e1.st, e1.acc.ID, inbox, e1.srv)
				if err := a.Noop().Wait(); err != nil {
					t.Fatal(err)
				}
			}
			silent(1, imap.FlagSeen)
			db := dbMessages(t, e1.st, e1.acc.ID, inbox)
			if diffs, _ := v.compare(db); len(diffs) > 0 {
				t.Fatalf("A's view after its STORE .SILENT: %q", diffs)
			}
			// Alone, A's own silent change is not echoed.
			before := v.count.fetch
			silent(2, imap.FlagFlagged)
			if diffs, _ := v.compare(dbMessages(t, e1.st, e1.acc.ID, inbox)); len(diffs) > 0 {
				t.Fatalf("A's view after its second STORE .SILENT: %q", diffs)
			}
			if n := v.count.fetch - before; n != 0 {
				t.Errorf("own STORE .SILENT echoed in %d FETCH responses", n)
			}
		})
	}
}

// A mailbox deleted while selected (the session is told nothing yet: it
// sends no command), then selectable again under the same id (CREATE of the
// \Noselect placeholder a DELETE of a parent leaves): a new session that
// selects it must get updates, although the old session's view of the
// deleted mailbox is still registered.
func TestReselectAfterDeleteAndRecreate(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.login(nil)
	if err := b.Create("P/C", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	old := e.login(nil)
	if _, err := old.Select("P", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("P").Wait(); err != nil { // P has a child: it becomes \Noselect
		t.Fatal(err)
	}
	if err := b.Create("P", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	rec := newWireRecorder()
	rec.idleIn(t, e, "P")
	appendMsg(t, b, "P", crlf(simpleMsg))
	rec.expect(t, "append to the re-created mailbox", "* 1 EXISTS")
	// The old session learns its mailbox went away.
	if err := old.Noop().Wait(); err == nil {
		t.Fatal("NOOP in a deleted-then-recreated mailbox succeeded")
	}
}

// Deleted and renamed while selected, across two servers (idle_test.go
// covers one server): a session on server 1 whose mailbox is deleted on
// server 2 gets BYE; renamed, it carries on and sees new messages.
func TestSelectedMailboxDeletedOrRenamedAcrossServers(t *testing.T) {
	_, e1, e2 := twoServers(t, envOptions{}, store.Options{MaxConns: 4})
	b := e2.login(nil)
	createMailboxes(t, b, "Work", "Play")
	a := e1.idleIn(nil, "Work")
	if err := b.Delete("Work").Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("session on server 1 not ended after its mailbox was deleted on server 2")
	}

	rec := newWireRecorder()
	rec.idleIn(t, e1, "Play")
	if err := b.Rename("Play", "Games", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, b, "Games", crlf(simpleMsg))
	rec.expect(t, "append after rename", "* 1 EXISTS")
}

// A view that breaks (here: its internal state corrupted, standing in for
// a bug) ends only its own session with BYE; other sessions on the same
// mailbox and the process carry on.
func TestBrokenViewEndsOnlyItsSession(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 3 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	victim := e.login(nil)
	if _, err := victim.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	good := e.login(rec.handler())
	if _, err := good.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Break the victim's view: the first one registered.
	inbox := mailboxID(t, e, "INBOX")
	w := watchedEntry(e.srv, inbox)
	w.mu.Lock()
	var broken int
	for sel := range w.views {
		sel.mu.Lock()
		if len(sel.uids) == 3 && broken == 0 && sel.flags != nil {
			// Pick any one view; which one does not matter for the check
			// below, which counts survivors.
			sel.flags = nil // the next flag change panics in merge
			broken++
		}
		sel.mu.Unlock()
	}
	w.mu.Unlock()

	b := e.login(nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	// Exactly one of victim/good is ended at its next command; the other
	// (and b) carry on.
	errV := victim.Noop().Wait()
	errG := good.Noop().Wait()
	if (errV == nil) == (errG == nil) {
		t.Fatalf("NOOP errors: victim %v, good %v; want exactly one session ended", errV, errG)
	}
	survivor := victim
	if errV != nil {
		survivor = good
	}
	msgs, err := survivor.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 || !slices.Contains(msgs[0].Flags, imap.FlagSeen) {
		t.Fatalf("survivor FETCH = %+v, %v", msgs, err)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
}

// ---- concurrent stress ----

type stressClient struct {
	id     int
	e      *env // its server: store-level deliveries go through its store
	inbox  int64
	c      *imapclient.Client
	helper *imapclient.Client // selected on Archive: COPY in from there
	v      *wireView
	idler  bool
	rng    *rand.Rand
	ops    map[string]int
	unilat struct{ exists, expunge, fetch atomic.Int64 }
}

var stressFlags = []imap.Flag{imap.FlagSeen, imap.FlagFlagged, imap.FlagAnswered, imap.FlagDraft, "$Work", "$Later", "Junk"}

func (sc *stressClient) randomFlags() []imap.Flag {
	n := 1 + sc.rng.IntN(2)
	out := make([]imap.Flag, 0, n)
	for range n {
		f := stressFlags[sc.rng.IntN(len(stressFlags))]
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func (sc *stressClient) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(uint32) { sc.unilat.expunge.Add(1) },
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				sc.unilat.exists.Add(1)
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			msg.Collect() //nolint:errcheck // counted only; the wire view checks content
			sc.unilat.fetch.Add(1)
		},
	}
}

// step runs one random operation.
func (sc *stressClient) step() error {
	c, rng := sc.c, sc.rng
	r := rng.IntN(100)
	if sc.idler && r < 15 {
		sc.ops["IDLE"]++
		cmd, err := c.Idle()
		if err != nil {
			return fmt.Errorf("IDLE: %w", err)
		}
		time.Sleep(time.Duration(10+rng.IntN(60)) * time.Millisecond)
		if err := cmd.Close(); err != nil {
			return fmt.Errorf("IDLE DONE: %w", err)
		}
		return cmd.Wait()
	}
	if first := sc.v.firstUnknown(); first != 0 && r < 30 {
		// What a client does after EXISTS: fetch what is new.
		sc.ops["FETCH new"]++
		_, err := c.Fetch(imap.SeqSet{{Start: first, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
		return err
	}
	r = rng.IntN(100)
	seq, uid := sc.v.randomKnown(rng)
	switch {
	case r < 10:
		sc.ops["APPEND"]++
		msg := crlf(fmt.Sprintf("From: s%d@example.test\nSubject: stress %d\n\nbody %d\n", sc.id, rng.Int(), rng.Int()))
		cmd := c.Append("INBOX", int64(len(msg)), &imap.AppendOptions{Flags: sc.randomFlags()})
		if _, err := io.WriteString(cmd, msg); err != nil {
			return err
		}
		if err := cmd.Close(); err != nil {
			return err
		}
		_, err := cmd.Wait()
		return err
	case r < 16:
		// A delivery as SMTP makes it: only the NOTIFY tells anyone,
		// this server's sessions included.
		sc.ops["deliver"]++
		msg := crlf(fmt.Sprintf("From: smtp%d@example.test\nSubject: delivered %d\n\nbody\n", sc.id, rng.Int()))
		_, err := sc.e.st.Append(context.Background(), sc.e.acc.ID, sc.inbox, strings.NewReader(msg), 0,
			fromIMAPFlags(sc.randomFlags()), time.Time{})
		return err
	case r < 40 && uid != 0:
		op := imap.StoreFlagsAdd
		if rng.IntN(2) == 0 {
			op = imap.StoreFlagsDel
		}
		silent := rng.IntN(2) == 0
		flags := sc.randomFlags()
		var set imap.NumSet = imap.UIDSetNum(imap.UID(uid))
		name := "UID STORE"
		if rng.IntN(4) == 0 {
			set, name = imap.SeqSetNum(seq), "STORE" // by sequence number
		}
		if silent {
			name += " .SILENT"
			sc.v.storeLocal(func(_ int, m wireMsg) bool { return m.uid == uid }, op, flags)
		}
		sc.ops[name]++
		return c.Store(set, &imap.StoreFlags{Op: op, Silent: silent, Flags: flags}, nil).Close()
	case r < 54 && uid != 0:
		// Mark one message \Deleted, then UID EXPUNGE it or EXPUNGE
		// everything marked (others' marked messages too).
		uidForm := r < 48
		sc.v.storeLocal(func(_ int, m wireMsg) bool { return m.uid == uid }, imap.StoreFlagsAdd, []imap.Flag{imap.FlagDeleted})
		if err := c.Store(imap.UIDSetNum(imap.UID(uid)), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
			Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			return err
		}
		if uidForm {
			sc.ops["UID EXPUNGE"]++
			_, err := c.UIDExpunge(imap.UIDSetNum(imap.UID(uid))).Collect()
			return err
		}
		sc.ops["EXPUNGE"]++
		_, err := c.Expunge().Collect()
		return err
	case r < 64 && uid != 0:
		sc.ops["UID MOVE"]++
		_, err := c.Move(imap.UIDSetNum(imap.UID(uid)), "Archive").Wait()
		return err
	case r < 78:
		sc.ops["COPY in"]++
		if err := sc.helper.Noop().Wait(); err != nil {
			return err
		}
		n := sc.helper.Mailbox().NumMessages
		if n == 0 {
			return nil
		}
		_, err := sc.helper.Copy(imap.SeqSetNum(1+uint32(rng.IntN(int(n)))), "INBOX").Wait()
		return err
	case r < 86:
		// Sequence-number FETCH of everything: every response is checked
		// against the client's model by the wire view.
		sc.ops["FETCH 1:*"]++
		_, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
		return err
	default:
		sc.ops["NOOP"]++
		return c.Noop().Wait()
	}
}

// Eight clients, four on each of two servers sharing a database, all with
// INBOX selected, mutate it at random for a bounded time; some IDLE between
// bursts. Each client's model of the mailbox is built only from what the
// server sends (and its own STORE .SILENT). Afterwards, once both feeds
// have caught up, a NOOP must bring every model to exactly the database.
func TestSyncStress(t *testing.T) {
	// Long and self-contained: overlaps TestLiteralLimit's wait.
	t.Parallel()
	const (
		clients  = 8
		initial  = 50
		duration = 5 * time.Second
		maxOps   = 500
	)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("IMAPD_STRESS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("IMAPD_STRESS_SEED: %v", err)
		}
	}
	// The seed fixes each client's choices; the interleaving still
	// varies from run to run.
	t.Logf("seed %d (IMAPD_STRESS_SEED=%d repeats these choices)", seed, seed)
	_, e1, e2 := twoServers(t, envOptions{}, store.Options{MaxConns: 8})
	inbox, archive := mailboxID(t, e1, "INBOX"), mailboxID(t, e1, "Archive")
	for i := range initial {
		e1.deliver("INBOX", crlf(fmt.Sprintf("Subject: seed %d\n\nseed\n", i)))
	}
	for i := range 10 {
		e1.deliver("Archive", crlf(fmt.Sprintf("Subject: archived %d\n\nold\n", i)))
	}
	var scs []*stressClient
	for i := range clients {
		e := e1
		if i%2 == 1 {
			e = e2
		}
		sc := &stressClient{id: i, e: e, inbox: inbox, v: &wireView{}, idler: i%4 < 2, rng: rand.New(rand.NewPCG(uint64(i), seed)),
			ops: map[string]int{}}
		var err error
		if sc.c, err = connect(e.addr, e.user, e.pass, sc.handler(), sc.v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.c.Close() })
		if sc.helper, err = connect(e.addr, e.user, e.pass, nil, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.helper.Close() })
		if _, err := sc.c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := sc.helper.Select("Archive", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := sc.c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect(); err != nil {
			t.Fatal(err)
		}
		scs = append(scs, sc)
	}

	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, sc := range scs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < maxOps && time.Now().Before(deadline); n++ {
				if err := sc.step(); err != nil {
					errs <- fmt.Errorf("client %d: %w", sc.id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	waitFeeds(t, e1.st, e1.acc.ID, inbox, e1.srv, e2.srv)
	db := dbMessages(t, e1.st, e1.acc.ID, inbox)
	total := map[string]int{}
	for _, sc := range scs {
		if err := sc.c.Noop().Wait(); err != nil {
			t.Fatalf("client %d: NOOP: %v", sc.id, err)
		}
		// The model as the client built it, before it asks for anything.
		diffs, unknown := sc.v.compare(db)
		for _, d := range diffs {
			t.Errorf("client %d: %s", sc.id, d)
		}
		// Then fetch what it has not seen yet: all of it must agree.
		if _, err := sc.c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect(); err != nil && len(db) > 0 {
			t.Fatalf("client %d: FETCH: %v", sc.id, err)
		}
		diffs, _ = sc.v.compare(db)
		for _, d := range diffs {
			t.Errorf("client %d after FETCH 1:*: %s", sc.id, d)
		}
		if n := sc.c.Mailbox().NumMessages; int(n) != len(db) {
			t.Errorf("client %d: imapclient counts %d messages, database %d", sc.id, n, len(db))
		}
		n := 0
		for op, k := range sc.ops {
			total[op] += k
			n += k
		}
		t.Logf("client %d (server %d, idler %v): %d ops, %d not yet fetched at the end; unilateral EXISTS %d EXPUNGE %d FETCH %d; on the wire EXISTS %d EXPUNGE %d FETCH %d",
			sc.id, sc.id%2+1, sc.idler, n, unknown, sc.unilat.exists.Load(), sc.unilat.expunge.Load(), sc.unilat.fetch.Load(),
			sc.v.count.exists, sc.v.count.expunge, sc.v.count.fetch)
	}
	sum := 0
	for _, k := range total {
		sum += k
	}
	t.Logf("%d operations: %v; INBOX has %d messages, Archive %d", sum, total, len(db), len(dbMessages(t, e1.st, e1.acc.ID, archive)))
}

// ---- 1,000 idle sessions ----

// raiseNoFile lifts the soft open-files limit to need if it is below.
func raiseNoFile(tb testing.TB, need uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		tb.Fatalf("open files: hard limit %d < %d needed", lim.Max, need)
	}
	old := lim.Cur
	lim.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		lim.Cur = old
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) //nolint:errcheck
	})
}

type crowdAccount struct {
	user, pass string
	id, inbox  int64
}

// crowd is many sessions, each with INBOX of one of several accounts
// selected and in IDLE, spread over servers.
type crowd struct {
	accounts []crowdAccount
	sessions []*crowdSession
}

type crowdSession struct {
	acc     int
	server  int
	c       *imapclient.Client
	idle    *imapclient.IdleCommand
	exists  atomic.Uint32
	flagged atomic.Bool
	notify  chan<- struct{}
}

// newCrowd creates accounts (each INBOX holding seed messages) and
// perAccount idle sessions for each, alternating between the servers.
func newCrowd(tb testing.TB, envs []*env, accounts, perAccount, seed int) *crowd {
	tb.Helper()
	ctx := context.Background()
	st := envs[0].st
	cr := &crowd{}
	for i := range accounts {
		user := fmt.Sprintf("crowd%d@example.test", i)
		acc, secret, inbox := newAccount(tb, st, user, "main-password", "crowd")
		for j := range seed {
			if _, err := st.Append(ctx, acc.ID, inbox, strings.NewReader(crlf(fmt.Sprintf("Subject: %d\n\nhi\n", j))), 0, nil, time.Time{}); err != nil {
				tb.Fatal(err)
			}
		}
		cr.accounts = append(cr.accounts, crowdAccount{user: user, pass: secret, id: acc.ID, inbox: inbox})
	}
	for i := range accounts * perAccount {
		cr.sessions = append(cr.sessions, &crowdSession{acc: i % accounts, server: (i / accounts) % len(envs)})
	}
	work := make(chan *crowdSession)
	errs := make(chan error, len(cr.sessions))
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				a := cr.accounts[s.acc]
				c, err := connect(envs[s.server].addr, a.user, a.pass, s.handler(), nil)
				if err != nil {
					errs <- err
					continue
				}
				s.c = c
				if _, err := c.Select("INBOX", nil).Wait(); err != nil {
					errs <- err
					continue
				}
				if s.idle, err = c.Idle(); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, s := range cr.sessions {
		work <- s
	}
	close(work)
	wg.Wait()
	close(errs)
	tb.Cleanup(func() {
		for _, s := range cr.sessions {
			if s.c != nil {
				s.c.Close()
			}
		}
	})
	for err := range errs {
		tb.Fatal(err)
	}
	return cr
}

func (s *crowdSession) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				s.exists.Store(*d.NumMessages)
				s.signal()
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err == nil && slices.Contains(buf.Flags, imap.FlagFlagged) {
				s.flagged.Store(true)
				s.signal()
			}
		},
	}
}

func (s *crowdSession) signal() {
	if s.notify != nil {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// waitAll waits until ok holds for every session, or fails after limit.
func (cr *crowd) waitAll(tb testing.TB, what string, limit time.Duration, ok func(*crowdSession) bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for {
		missing := 0
		for _, s := range cr.sessions {
			if !ok(s) {
				missing++
			}
		}
		if missing == 0 {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			tb.Fatalf("%s: %d of %d sessions still waiting after %v", what, missing, len(cr.sessions), limit)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// backends counts the database's server processes (pooled and LISTEN
// connections of both servers, and this one).
func backends(tb testing.TB, url string) int {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// 1,000 sessions (20 accounts × 50, half on each server) sit in IDLE. A
// change made on server 2 to every account's INBOX reaches all of them on
// both servers; a fresh session stays responsive meanwhile; the sessions
// hold no database connection while idle.
func TestThousandIdle(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 sessions")
	}
	const accounts, perAccount, seed = 20, 50, 2
	raiseNoFile(t, 4*accounts*perAccount+512)
	// Each account has 25 sessions per server, plus a writer and a fresh
	// session: a cap of 30 per account and server leaves room.
	url, e1, e2 := twoServers(t, envOptions{maxConns: 30}, store.Options{})
	start := time.Now()
	cr := newCrowd(t, []*env{e1, e2}, accounts, perAccount, seed)
	t.Logf("%d sessions logged in, selected and idle in %v", len(cr.sessions), time.Since(start).Round(time.Millisecond))
	n := backends(t, url)
	t.Logf("database backends with %d idle sessions: %d", len(cr.sessions), n)
	// Two pools of at most store.DefaultMaxConns each, two LISTEN
	// connections, the count query's own: idle sessions hold none.
	if max := 2*store.DefaultMaxConns + 3; n > max {
		t.Errorf("%d database backends with idle sessions, want at most %d", n, max)
	}

	// Writers on server 2, one per account.
	writers := make([]*imapclient.Client, accounts)
	for i, a := range cr.accounts {
		c, err := connect(e2.addr, a.user, a.pass, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		writers[i] = c
	}
	each := func(fn func(c *imapclient.Client) error) {
		var wg sync.WaitGroup
		for _, c := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(c); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}

	// APPEND on server 2 → EXISTS in all 1,000.
	t0 := time.Now()
	each(func(c *imapclient.Client) error {
		msg := crlf(simpleMsg)
		cmd := c.Append("INBOX", int64(len(msg)), nil)
		io.WriteString(cmd, msg) //nolint:errcheck // Close reports it
		if err := cmd.Close(); err != nil {
			return err
		}
		_, err := cmd.Wait()
		return err
	})
	cmdTime := time.Since(t0)
	fan := cr.waitAll(t, "EXISTS after APPEND", 10*time.Second, func(s *crowdSession) bool { return s.exists.Load() >= seed+1 })
	t.Logf("APPEND on server 2 to %d mailboxes: commands done in %v, EXISTS in all %d sessions %v after the first command",
		accounts, cmdTime.Round(time.Microsecond), len(cr.sessions), (cmdTime + fan).Round(time.Microsecond))

	// STORE +FLAGS on server 2 → FETCH in all 1,000.
	t0 = time.Now()
	each(func(c *imapclient.Client) error {
		return c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
	})
	cmdTime = time.Since(t0)
	fan = cr.waitAll(t, "FETCH after STORE", 10*time.Second, func(s *crowdSession) bool { return s.flagged.Load() })
	t.Logf("STORE +FLAGS on server 2 in %d mailboxes: commands done in %v, FETCH in all %d sessions %v after the first command",
		accounts, cmdTime.Round(time.Microsecond), len(cr.sessions), (cmdTime + fan).Round(time.Microsecond))

	// A fresh session on each server stays responsive.
	for i, e := range []*env{e1, e2} {
		a := cr.accounts[i]
		t0 := time.Now()
		c, err := connect(e.addr, a.user, a.pass, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		login := time.Since(t0)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, Envelope: true}).Collect()
		if err != nil || len(msgs) != seed+1 {
			t.Fatalf("fresh FETCH: %d messages, %v", len(msgs), err)
		}
		total := time.Since(t0)
		t.Logf("server %d with %d idle sessions: fresh TLS+LOGIN %v, +SELECT+FETCH %v", i+1, len(cr.sessions),
			login.Round(time.Microsecond), total.Round(time.Microsecond))
		if total > 2*time.Second {
			t.Errorf("server %d: fresh login+select+fetch took %v", i+1, total)
		}
		c.Logout().Wait() //nolint:errcheck
	}

	// Every session is still alive and its IDLE ends cleanly.
	for _, s := range cr.sessions {
		if err := s.idle.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range cr.sessions {
		if err := s.idle.Wait(); err != nil {
			t.Fatalf("IDLE of a crowd session: %v", err)
		}
	}
}

// ---- bounded memory ----

// pendingSize is the size of a view's pending state (test hook).
func (v *view) pendingSize() (expunged, added, flags int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.expunged), len(v.added), len(v.flags)
}

// A session that has a mailbox selected but sends nothing (no IDLE, no
// command) while 10,000 flag changes (and some appends and expunges) hit
// the mailbox keeps at most one pending entry per message.
func TestNeverPollingSessionBounded(t *testing.T) {
	// Long and self-contained: overlaps TestLiteralLimit's wait.
	t.Parallel()
	const messages = 20
	e := newEnv(t, envOptions{})
	for range messages {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	inbox := mailboxID(t, e, "INBOX")
	quiet := e.login(nil)
	if _, err := quiet.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	w := watchedEntry(e.srv, inbox)
	w.mu.Lock()
	var sel *view
	for s := range w.views {
		sel = s
	}
	w.mu.Unlock()

	ctx := context.Background()
	flags := []string{`\Seen`, `\Flagged`, "$A", "$B", "$C"}
	changes, maxPending, nextCheck := 0, 0, 1000
	check := func() {
		x, a, f := sel.pendingSize()
		maxPending = max(maxPending, x+a+f)
		live, view := dbMessages(t, e.st, e.acc.ID, inbox), sel.count()
		if f > view || x > view || a > len(live) {
			t.Fatalf("after %d changes: pending expunged %d, added %d, flags %d; view %d, mailbox %d",
				changes, x, a, f, view, len(live))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	for changes < 10000 {
		// Ten messages at a time: about 1,500 transactions for 10,000
		// message flag changes.
		lo := uint32(1 + rng.IntN(messages-9))
		op := store.FlagsAdd
		if rng.IntN(2) == 0 {
			op = store.FlagsRemove
		}
		ch, err := e.st.StoreFlags(ctx, e.acc.ID, inbox, []store.UIDRange{{Start: lo, Stop: lo + 9}}, op,
			[]string{flags[rng.IntN(len(flags))]})
		if err != nil {
			t.Fatal(err)
		}
		changes += len(ch)
		if len(ch) == 0 {
			changes++ // count the attempt so the loop ends even if nothing changes
		}
		if changes >= nextCheck {
			nextCheck += 1000
			waitFeeds(t, e.st, e.acc.ID, inbox, e.srv)
			check()
		}
	}
	// Churn: appends and expunges of new and old messages.
	for i := range 200 {
		res := e.deliver("INBOX", crlf(simpleMsg))
		if i%2 == 0 {
			e.st.StoreFlags(ctx, e.acc.ID, inbox, []store.UIDRange{{Start: res.UID, Stop: res.UID}}, store.FlagsAdd, []string{`\Deleted`}) //nolint:errcheck
			if _, err := e.st.Expunge(ctx, e.acc.ID, inbox, []store.UIDRange{{Start: res.UID, Stop: res.UID}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFeeds(t, e.st, e.acc.ID, inbox, e.srv)
	check()
	x, a, f := sel.pendingSize()
	t.Logf("%d flag changes + 200 appends (100 expunged) in %v; pending now: expunged %d, added %d, flags %d (max seen %d); view %d messages",
		changes, time.Since(start).Round(time.Millisecond), x, a, f, maxPending, sel.count())
	if a != 100 || f > messages {
		t.Errorf("pending added %d (want 100), flags %d (want ≤ %d)", a, f, messages)
	}
	// The session still catches up correctly when it finally polls.
	if err := quiet.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := viewOf(t, quiet), dbView(t, e.st, e.acc.ID, "INBOX"); !slices.Equal(got, want) {
		t.Fatalf("after NOOP: view %q, database %q", got, want)
	}
}

// ---- the feed under stress of its own: stalls, races, failures ----

// stall holds a server's remote catch-ups (its runners' and resyncs', not
// local writes') of one mailbox (0: all) until open; held receives the
// mailbox of each catch-up that starts to wait. It counts how many wait
// at once.
type stall struct {
	held    chan int64
	release chan struct{}
	once    sync.Once
	in, max atomic.Int32
}

func stallFeed(t testing.TB, srv *Server, mailboxID int64) *stall {
	s := &stall{held: make(chan int64, 1000), release: make(chan struct{})}
	h := func(id int64) {
		if mailboxID != 0 && id != mailboxID {
			return
		}
		n := s.in.Add(1)
		defer s.in.Add(-1)
		for m := s.max.Load(); n > m && !s.max.CompareAndSwap(m, n); m = s.max.Load() {
		}
		select {
		case s.held <- id:
		default:
		}
		select {
		case <-s.release:
		case <-srv.ctx.Done():
		}
	}
	srv.feed.beforeCatchUp.Store(&h)
	t.Cleanup(s.open)
	return s
}

func (s *stall) open() { s.once.Do(func() { close(s.release) }) }

// waitHeld waits until a catch-up of the mailbox is held.
func (s *stall) waitHeld(t testing.TB, mailboxID int64) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case id := <-s.held:
			if id == mailboxID {
				return
			}
		case <-timeout:
			t.Fatalf("no catch-up of mailbox %d held", mailboxID)
		}
	}
}

func waitClosed(t testing.TB, c *imapclient.Client, what string) {
	t.Helper()
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: session not ended", what)
	}
}

// sawLine reports whether the recorder has a line with prefix among what
// it recorded (consuming them).
func (r *wireRecorder) sawLine(prefix string) bool {
	for {
		select {
		case l := <-r.ch:
			if strings.HasPrefix(l, prefix) {
				return true
			}
		case <-time.After(2 * time.Second):
			return false
		}
	}
}

// A mailbox with children deleted (it stays as a \Noselect placeholder,
// same id) and created again before server 1's feed sees the middle state:
// a catch-up then finds it selectable again with a new UIDVALIDITY, and no
// expunge for the old messages (they went with the delete). The old
// session must end (BYE), not carry on with the old mailbox's UIDs; a new
// SELECT gets a fresh entry that receives updates, also when it comes
// while the old entry still looks alive.
func TestRecreatedMailboxEndsOldSessions(t *testing.T) {
	for _, selectWhileStalled := range []bool{false, true} {
		t.Run(fmt.Sprintf("selectWhileStalled=%v", selectWhileStalled), func(t *testing.T) {
			_, e1, e2 := twoServers(t, envOptions{}, store.Options{MaxConns: 4})
			b := e2.login(nil)
			if err := b.Create("P/C", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			e2.deliver("P", crlf(simpleMsg))
			e2.deliver("P", crlf(simpleMsg))
			p := mailboxID(t, e1, "P")
			old := newWireRecorder()
			a := old.idleIn(t, e1, "P")
			stalled := stallFeed(t, e1.srv, p)
			if err := b.Delete("P").Wait(); err != nil {
				t.Fatal(err)
			}
			stalled.waitHeld(t, p) // server 1 has heard of the delete, not read it
			if err := b.Create("P", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			e2.deliver("P", crlf(simpleMsg)) // UID 3 of the new P

			rec := newWireRecorder()
			c := rec.login(t, e1)
			selectP := func() {
				var data *imap.SelectData
				var err error
				rec.quiet(func() { data, err = c.Select("P", nil).Wait() })
				if err != nil {
					t.Fatal(err)
				}
				if data.NumMessages != 1 {
					t.Fatalf("new P: %d messages", data.NumMessages)
				}
				rec.startIdle(t, "P")
			}
			if selectWhileStalled {
				// The SELECT sees the new UIDVALIDITY first: the old
				// session ends at once, the feed still held.
				selectP()
				waitClosed(t, a, "old session after a SELECT of the re-created mailbox")
				stalled.open()
			} else {
				stalled.open()
				waitClosed(t, a, "old session after the feed caught up")
				selectP()
			}
			if !old.sawLine("* BYE Selected mailbox was deleted and re-created") {
				t.Error("old session ended without the re-created BYE")
			}
			e2.deliver("P", crlf(simpleMsg))
			rec.expect(t, "append to the re-created mailbox", "* 2 EXISTS")
		})
	}
}

// A SELECT that takes the mailbox's feed entry just before a catch-up
// finds the mailbox gone (here: the catch-up is played by the test, which
// holds the entry's lock and marks it gone) must not register its view
// into the dead entry, where no change would ever reach it.
func TestSelectRacingGoneEntry(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.login(nil)
	if _, err := a.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	inbox := mailboxID(t, e, "INBOX")
	f := e.srv.feed
	f.mu.Lock()
	w := f.boxes[inbox]
	f.mu.Unlock()

	rec := newWireRecorder()
	c := rec.login(t, e)
	rec.on.Store(false)
	w.mu.Lock() // a catch-up in progress
	done := make(chan error, 1)
	go func() { _, err := c.Select("INBOX", nil).Wait(); done <- err }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		f.mu.Lock()
		refs := w.refs
		f.mu.Unlock()
		if refs == 2 { // the SELECT holds the entry and waits for its lock
			break
		}
		if time.Now().After(deadline) {
			w.mu.Unlock()
			t.Fatalf("SELECT did not reach the entry (refs %d)", refs)
		}
		time.Sleep(time.Millisecond)
	}
	f.goneLocked(w, byeDeleted)
	w.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec.on.Store(true)
	f.mu.Lock()
	fresh := f.boxes[inbox]
	f.mu.Unlock()
	if fresh == w {
		t.Fatal("the gone entry is still the mailbox's entry")
	}
	rec.startIdle(t, "INBOX")
	e.deliver("INBOX", crlf(simpleMsg))
	rec.expect(t, "delivery after the race", "* 1 EXISTS")
	if err := a.Noop().Wait(); err == nil {
		t.Error("the session of the gone entry carries on")
	}
}

// A catch-up that hangs (a slow query, a pool with no free connection) for
// one mailbox delays neither the LISTEN connection nor any other mailbox,
// and one mailbox never has more than one catch-up waiting.
func TestSlowCatchUpDelaysOnlyItsMailbox(t *testing.T) {
	_, e1, e2 := twoServers(t, envOptions{}, store.Options{MaxConns: 4})
	b := e2.login(nil)
	if err := b.Create("Slow", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	slow := mailboxID(t, e1, "Slow")
	idleOn := func(mailbox string) *wireRecorder {
		rec := newWireRecorder()
		rec.idleIn(t, e1, mailbox)
		return rec
	}
	recSlow, recInbox := idleOn("Slow"), idleOn("INBOX")
	stalled := stallFeed(t, e1.srv, slow)
	for range 3 {
		e2.deliver("Slow", crlf(simpleMsg))
	}
	stalled.waitHeld(t, slow)
	e2.deliver("INBOX", crlf(simpleMsg))
	recInbox.expect(t, "INBOX while Slow's catch-up hangs", "* 1 EXISTS")
	recSlow.expectHeld(t, "Slow while its catch-up hangs")
	stalled.open()
	recSlow.expect(t, "Slow after the catch-up", "* 3 EXISTS")
	if n := stalled.max.Load(); n != 1 {
		t.Errorf("%d catch-ups of one mailbox waited at once, want 1", n)
	}
}

// A catch-up that panics (a bug) is logged and retried by the mailbox's
// runner, the only one: the update arrives, the process carries on.
func TestCatchUpPanicRetried(t *testing.T) {
	_, e1, e2 := twoServers(t, envOptions{retry: 20 * time.Millisecond}, store.Options{MaxConns: 4})
	rec := newWireRecorder()
	rec.idleIn(t, e1, "INBOX")
	var calls, in, most atomic.Int32
	// Every catch-up waits until all three deliveries have committed, so
	// the first one that succeeds sees all three whatever the timing;
	// the notifications pile up meanwhile.
	delivered := make(chan struct{})
	h := func(int64) {
		n := in.Add(1)
		defer in.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-delivered
		if calls.Add(1) <= 3 {
			panic("test: a bug in the catch-up")
		}
	}
	e1.srv.feed.beforeCatchUp.Store(&h)
	for range 3 {
		e2.deliver("INBOX", crlf(simpleMsg))
	}
	close(delivered)
	rec.expect(t, "after failed catch-ups", "* 3 EXISTS")
	if n := calls.Load(); n < 4 {
		t.Errorf("%d catch-ups, want at least 4 (3 panics, then success)", n)
	}
	if n := most.Load(); n != 1 {
		t.Errorf("%d catch-ups of one mailbox at once, want 1", n)
	}
	e2.deliver("INBOX", crlf(simpleMsg))
	rec.expect(t, "after recovery", "* 4 EXISTS")
}

// Deleting an account ends its selected sessions on every server at once
// (the IDLE credential re-check would take a minute).
func TestDeleteAccountEndsSessions(t *testing.T) {
	_, e1, e2 := twoServers(t, envOptions{}, store.Options{MaxConns: 4})
	var recs []*wireRecorder
	var cs []*imapclient.Client
	for _, e := range []*env{e1, e2} {
		rec := newWireRecorder()
		c := rec.idleIn(t, e, "INBOX")
		recs, cs = append(recs, rec), append(cs, c)
	}
	if err := e2.st.DeleteAccount(context.Background(), e1.user); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		waitClosed(t, c, fmt.Sprintf("session on server %d of a deleted account", i+1))
		if !recs[i].sawLine("* BYE ") {
			t.Errorf("server %d: no BYE", i+1)
		}
	}
}

// ---- bounded memory: the hard cap ----

// A view whose pending changes exceed its cap (here 5, on a mailbox of 20:
// STORE 1:* +FLAGS, an expunge and appends, none polled yet) drops them and
// resyncs at its next poll that may report EXPUNGE: the client then gets
// exactly the EXPUNGE, EXISTS and FETCH FLAGS that bring its model to the
// database. FETCH in between reports no EXPUNGE; an IDLE session resyncs
// at once.
func TestPendingCapResync(t *testing.T) {
	const messages, limit = 20, 5
	e := newEnv(t, envOptions{maxPending: limit})
	for range messages {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	inbox := mailboxID(t, e, "INBOX")
	open := func() (*wireRecorder, *imapclient.Client) {
		rec := newWireRecorder()
		c := rec.login(t, e)
		rec.quiet(func() {
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect(); err != nil {
				t.Fatal(err)
			}
		})
		return rec, c
	}
	quietRec, quiet := open()
	var sel *view // quiet's: the only view so far
	w := watchedEntry(e.srv, inbox)
	w.mu.Lock()
	for s := range w.views {
		sel = s
	}
	w.mu.Unlock()
	idleRec, idler := open()
	if _, err := idler.Idle(); err != nil {
		t.Fatal(err)
	}

	b := e.login(nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Store(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Big"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Store(imap.UIDSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.UIDExpunge(imap.UIDSetNum(3)).Collect(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, b, "INBOX", crlf(simpleMsg))
	appendMsg(t, b, "INBOX", crlf(simpleMsg))
	if x, a, f := sel.pendingSize(); x+a+f != 0 || !sel.needsResync() {
		t.Fatalf("a view past its cap: pending %d/%d/%d, resync %v", x, a, f, sel.needsResync())
	}

	// The idler resyncs by itself.
	deadline := time.Now().Add(10 * time.Second)
	for {
		diffs, _ := idleRec.v.compare(dbMessages(t, e.st, e.acc.ID, inbox))
		if len(diffs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("IDLE session past its cap: %q", diffs)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// FETCH may not report the expunge: the numbers stay.
	msgs, err := quiet.Fetch(imap.SeqSetNum(4), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].UID != 4 {
		t.Fatalf("FETCH 4 during a pending resync: %+v, %v", msgs, err)
	}
	var lines []string
	for len(quietRec.ch) > 0 {
		lines = append(lines, <-quietRec.ch)
	}
	if slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, " EXPUNGE") }) {
		t.Fatalf("FETCH reported an expunge: %q", lines)
	}
	lines = nil
	if err := quiet.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	for len(quietRec.ch) > 0 {
		lines = append(lines, <-quietRec.ch)
	}
	var exp, exists, fetch int
	for _, l := range lines {
		switch {
		case strings.HasSuffix(l, " EXPUNGE"):
			exp++
		case strings.HasSuffix(l, " EXISTS"):
			exists++
		case strings.Contains(l, " FETCH ("):
			fetch++
		}
	}
	if exp != 1 || exists != 1 || fetch != messages-1 {
		t.Errorf("resync sent %d EXPUNGE, %d EXISTS, %d FETCH; want 1, 1, %d: %q", exp, exists, fetch, messages-1, lines)
	}
	quietRec.matches(t, "after the resync", e.st, e.acc.ID, inbox)
	if sel.needsResync() {
		t.Error("still resyncing after NOOP")
	}

	// Afterwards changes flow as before.
	if err := b.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := quiet.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	quietRec.expect(t, "after the resync, one change", `* 1 FETCH (UID 1 FLAGS (\Flagged $Big))`)
	quietRec.matches(t, "after one more change", e.st, e.acc.ID, inbox)
}

// A bulk change past the cap (STORE on all 30 messages, cap 5) is read
// whole by no catch-up: the views drop their pending changes, and the feed
// moves on to the mailbox's modseq. A view's resync then reads it in pages
// of at most 5, each written before the next is read; changes made
// between pages, to UIDs already re-read and to later ones (flags, an
// expunge each, a new message), all reach the client, whose model ends
// exactly at the database. A view that overflows again on every pass of
// its resync ends with BYE.
func TestResyncInPages(t *testing.T) {
	const messages, limit = 30, 5
	e := newEnv(t, envOptions{maxPending: limit})
	for range messages {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	inbox := mailboxID(t, e, "INBOX")
	ctx := context.Background()
	rec := newWireRecorder()
	c := rec.login(t, e)
	rec.selectInbox(t, c)
	w := watchedEntry(e.srv, inbox)
	var sel *view
	w.mu.Lock()
	for s := range w.views {
		sel = s
	}
	w.mu.Unlock()
	storeFlags := func(uids []store.UIDRange, flags ...string) {
		t.Helper()
		if _, err := e.st.StoreFlags(ctx, e.acc.ID, inbox, uids, store.FlagsAdd, flags); err != nil {
			t.Fatal(err)
		}
	}
	all := []store.UIDRange{{Start: 1, Stop: 0}}
	one := func(uid uint32) []store.UIDRange { return []store.UIDRange{{Start: uid, Stop: uid}} }

	// The bulk change, caught up with as a local write is.
	storeFlags(all, "$Big")
	e.srv.feed.readChanges(ctx, inbox)
	if x, a, f := sel.pendingSize(); x+a+f != 0 || !sel.needsResync() {
		t.Fatalf("after a change past the cap: pending %d/%d/%d, resync %v", x, a, f, sel.needsResync())
	}
	mb, err := e.st.MailboxByID(ctx, e.acc.ID, inbox)
	if err != nil {
		t.Fatal(err)
	}
	if got := feedModSeq(e.srv, inbox); got != mb.HighestModSeq {
		t.Fatalf("feed at modseq %d after the bulk change, mailbox at %d", got, mb.HighestModSeq)
	}

	pages := 0
	hook := func(s *view, page int) {
		if s != sel {
			return
		}
		pages++
		if x, a, f := sel.pendingSize(); x+a+f > limit {
			t.Errorf("page %d: %d pending, cap %d", page, x+a+f, limit)
		}
		if page != 2 {
			return
		}
		// UIDs 1-10 are re-read and told: changes to them are merged as
		// usual; those to UIDs 25, 27 and a new one are left to the pages.
		storeFlags(one(1), "$Mid")
		storeFlags(one(25), "$Mid")
		for _, uid := range []uint32{2, 27} {
			storeFlags(one(uid), `\Deleted`)
			if _, err := e.st.Expunge(ctx, e.acc.ID, inbox, one(uid)); err != nil {
				t.Error(err)
			}
		}
		if _, err := e.st.Append(ctx, e.acc.ID, inbox, strings.NewReader(crlf(simpleMsg)), 0, nil, time.Time{}); err != nil {
			t.Error(err)
		}
		e.srv.feed.readChanges(ctx, inbox)
		if x, a, f := sel.pendingSize(); x != 1 || a != 0 || f != 1 {
			t.Errorf("merged between pages: pending %d/%d/%d, want UID 2's expunge and UID 1's flags only", x, a, f)
		}
	}
	e.srv.feed.beforeResyncPage.Store(&hook)
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	rec.matches(t, "after the resync in pages", e.st, e.acc.ID, inbox)
	if want := messages/limit + 1; pages < want {
		t.Errorf("%d pages for %d changes, cap %d: want at least %d", pages, messages+5, limit, want)
	}
	if sel.needsResync() {
		t.Error("still resyncing after NOOP")
	}
	// Afterwards changes flow as before.
	storeFlags(one(3), `\Flagged`)
	e.srv.feed.readChanges(ctx, inbox)
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	rec.matches(t, "after one more change", e.st, e.acc.ID, inbox)

	// Another bulk change on every pass of the resync, after two pages:
	// its changes to the UIDs those re-read are past the cap by
	// themselves (the rest are left to later pages), whether the feed
	// reads them or has them inline from the notification.
	passes := 0
	storm := func(s *view, page int) {
		if s != sel || page != 2 {
			return
		}
		passes++
		storeFlags(all, fmt.Sprintf("$Storm%d", passes))
		e.srv.feed.readChanges(ctx, inbox)
	}
	e.srv.feed.beforeResyncPage.Store(&storm)
	storeFlags(all, "$Start")
	e.srv.feed.readChanges(ctx, inbox)
	c.Noop().Wait() //nolint:errcheck // the server ends the session
	waitClosed(t, c, "a session overflowing on every pass of its resync")
	if !rec.sawLine("* BYE " + byeTooManyChanges) {
		t.Error("no BYE saying why")
	}
	if passes != maxResyncPasses {
		t.Errorf("%d passes, want %d", passes, maxResyncPasses)
	}
}

// The feed applies a change that came with its notification as it is when
// it follows on from what the views have, and reads the database when it
// does not: a change in between that came as a wake-up only (EXPUNGE), or
// one the feed never heard of.
func TestInlineChanges(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 4 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	inbox := mailboxID(t, e, "INBOX")
	ctx := context.Background()
	rec := newWireRecorder()
	c := rec.login(t, e)
	rec.selectInbox(t, c)
	w := watchedEntry(e.srv, inbox)
	// The runner, woken by the real notifications, waits; this test
	// hands the feed its events itself.
	stall := stallFeed(t, e.srv, inbox)
	f := e.srv.feed
	mb, err := e.st.MailboxByID(ctx, e.acc.ID, inbox)
	if err != nil {
		t.Fatal(err)
	}
	one := func(uid uint32) []store.UIDRange { return []store.UIDRange{{Start: uid, Stop: uid}} }
	noop := func() {
		t.Helper()
		if err := c.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
	}
	storeFlags := func(uid uint32, op store.FlagOp, flags ...string) store.MailboxChange {
		t.Helper()
		changed, err := e.st.StoreFlags(ctx, e.acc.ID, inbox, one(uid), op, flags)
		if err != nil || len(changed) != 1 {
			t.Fatalf("store flags: %v, %d changed", err, len(changed))
		}
		return store.MailboxChange{MailboxID: inbox, ModSeq: changed[0].ModSeq, UIDValidity: mb.UIDValidity,
			Changes: &store.Changes{Updated: changed}}
	}
	handle := func(evs ...store.MailboxChange) {
		t.Helper()
		if err := f.handle(ctx, w, evs); err != nil {
			t.Fatal(err)
		}
		noop()
	}
	lie := func(modseq uint64, uid uint32, flag string) store.MailboxChange {
		return store.MailboxChange{MailboxID: inbox, ModSeq: modseq, UIDValidity: mb.UIDValidity, Changes: &store.Changes{
			Updated: []store.MessageFlags{{UID: uid, Flags: []string{flag}, ModSeq: modseq}}}}
	}

	// Taken as it is, not read: the database says otherwise.
	base := feedModSeq(e.srv, inbox)
	told := lie(base+1, 1, "$Told")
	storeFlags(1, store.FlagsAdd, "$Real")
	handle(told)
	rec.expect(t, "a change that follows on", "* 1 FETCH (UID 1 FLAGS ($Told))")

	// An event the views have already changes nothing.
	handle(told)
	rec.expect(t, "a change applied already")

	// A real change that follows on sets the record straight.
	fix := storeFlags(1, store.FlagsReplace, `\Answered`)
	handle(fix)
	rec.expect(t, "a real change that follows on", `* 1 FETCH (UID 1 FLAGS (\Answered))`)
	rec.matches(t, "a real change that follows on", e.st, e.acc.ID, inbox)

	// A change without its notification (the view is a change behind),
	// then one with: that does not follow on, so the feed reads both.
	storeFlags(2, store.FlagsAdd, `\Flagged`)
	third := storeFlags(3, store.FlagsAdd, `\Seen`)
	handle(third)
	if got := feedModSeq(e.srv, inbox); got != third.ModSeq {
		t.Fatalf("feed at modseq %d, want %d", got, third.ModSeq)
	}
	rec.expect(t, "after a gap", `* 2 FETCH (UID 2 FLAGS (\Flagged))`, `* 3 FETCH (UID 3 FLAGS (\Seen))`)
	rec.matches(t, "after a gap", e.st, e.acc.ID, inbox)

	// The next modseq of another UIDVALIDITY (the mailbox deleted and
	// created again under the same id): read, not applied.
	real := storeFlags(2, store.FlagsAdd, "$Real2")
	other := lie(real.ModSeq, 2, "$OtherMailbox")
	other.UIDValidity++
	handle(other)
	rec.expect(t, "another UIDVALIDITY", `* 2 FETCH (UID 2 FLAGS (\Flagged $Real2))`)

	// Events are handled in commit order: a wake-up (a delete, say) before
	// a change that would follow on is read first, and the read covers the
	// change.
	real = storeFlags(3, store.FlagsAdd, "$Real3")
	handle(store.MailboxChange{MailboxID: inbox}, lie(real.ModSeq, 3, "$Lie"))
	rec.expect(t, "a wake-up, then a change", `* 3 FETCH (UID 3 FLAGS (\Seen $Real3))`)
	rec.matches(t, "a wake-up, then a change", e.st, e.acc.ID, inbox)

	// In commit order: a change with its notification, an EXPUNGE (a
	// wake-up only), another change: the first applies, the last reads.
	first := storeFlags(1, store.FlagsReplace, `\Deleted`)
	if _, err := e.st.Expunge(ctx, e.acc.ID, inbox, one(1)); err != nil {
		t.Fatal(err)
	}
	last := storeFlags(4, store.FlagsAdd, "$Last")
	handle(first, store.MailboxChange{MailboxID: inbox, ModSeq: first.ModSeq + 1}, last)
	rec.expect(t, "after a change, an expunge and a change", "* 1 EXPUNGE", "* 3 FETCH (UID 4 FLAGS ($Last))")
	rec.matches(t, "after a change, an expunge and a change", e.st, e.acc.ID, inbox)

	// The held runner, let go, finds every real notification applied.
	stall.open()
	waitFeeds(t, e.st, e.acc.ID, inbox, e.srv)
	noop()
	rec.expect(t, "after the runner")
	rec.matches(t, "after the runner", e.st, e.acc.ID, inbox)
}

// A view registered from a snapshot newer than the feed's modseq must not
// be handed the older states in between as they were (a change that comes
// with its notification is the state at its modseq): its client would see
// flags go backwards. Up to the newest snapshot a view read, the feed
// reads the present state instead.
func TestInlineChangesOlderThanSnapshot(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 2 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	inbox := mailboxID(t, e, "INBOX")
	first := newWireRecorder()
	a := first.login(t, e)
	first.selectInbox(t, a)
	// Hold the runner at its first catch-up, and again at the next.
	gate := make(chan struct{})
	held := make(chan struct{}, 10)
	h := func(id int64) {
		if id != inbox {
			return
		}
		held <- struct{}{}
		<-gate
	}
	e.srv.feed.beforeCatchUp.Store(&h)
	ctx := context.Background()
	one := []store.UIDRange{{Start: 1, Stop: 1}}
	if _, err := e.st.StoreFlags(ctx, e.acc.ID, inbox, one, store.FlagsAdd, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	<-held
	if _, err := e.st.StoreFlags(ctx, e.acc.ID, inbox, one, store.FlagsRemove, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	// B selects now: its snapshot has UID 1 without \Seen, ahead of the
	// feed, which has not applied the first change yet.
	w := watchedEntry(e.srv, inbox)
	views := func() []*view {
		w.mu.Lock()
		defer w.mu.Unlock()
		return slices.Collect(maps.Keys(w.views))
	}
	viewA := views()[0]
	rec := newWireRecorder()
	b := rec.login(t, e)
	rec.selectInbox(t, b)
	var viewB *view
	for _, v := range views() {
		if v != viewA {
			viewB = v
		}
	}
	idle, err := b.Idle()
	if err != nil {
		t.Fatal(err)
	}
	// The runner applies the first change, then is held at the second
	// while B's IDLE tells B whatever the first did to its view: it has
	// once its view holds nothing pending.
	gate <- struct{}{}
	<-held
	waitFor(t, "B's IDLE to take its view's changes", func() bool {
		x, a, f := viewB.pendingSize()
		return x+a+f == 0
	})
	close(gate)
	waitFeeds(t, e.st, e.acc.ID, inbox, e.srv)
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	rec.matches(t, "B after the feed caught up", e.st, e.acc.ID, inbox)
	// The NOOP's reply came after all B was sent: every line is in rec.ch.
	for {
		select {
		case l := <-rec.ch:
			if strings.Contains(l, `\Seen`) {
				t.Fatalf("B, whose snapshot was newer, was told an older state: %s", l)
			}
			continue
		default:
		}
		break
	}
	if err := a.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	first.matches(t, "A after the feed caught up", e.st, e.acc.ID, inbox)
}
