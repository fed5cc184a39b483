package imapd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

// recorder turns unilateral responses into lines like "EXISTS 3",
// "EXPUNGE 2", "FETCH 1 UID 1 FLAGS (\Seen)", for a client not in IDLE:
// the answer to its last command is the barrier after which nothing more
// may come. imapclient runs the FETCH handler on a goroutine of its own,
// so a FETCH line may come after that answer: tests that expect or exclude
// FETCH lines, and tests in IDLE, use wireRecorder.
type recorder struct {
	ch chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 1000)} }

func (r *recorder) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { r.ch <- fmt.Sprintf("EXPUNGE %d", seq) },
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				r.ch <- fmt.Sprintf("EXISTS %d", *d.NumMessages)
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				r.ch <- "FETCH error " + err.Error()
				return
			}
			flags := messageFlags(buf.Flags)
			fl := make([]string, len(flags))
			for i, f := range flags {
				fl[i] = string(f)
			}
			r.ch <- fmt.Sprintf("FETCH %d UID %d FLAGS (%s)", buf.SeqNum, buf.UID, strings.Join(fl, " "))
		},
	}
}

// expect waits for exactly these lines, in order; then nothing more may
// have come.
func (r *recorder) expect(t *testing.T, step string, want ...string) {
	t.Helper()
	expectLines(t, r.ch, step, func() {}, want...)
}

// settler is the barrier after which a wireRecorder may tell that
// nothing more came: the client logged in on e, in IDLE in mailbox
// mailboxID (idle not nil), or not.
type settler struct {
	e         *env
	c         *imapclient.Client
	mailboxID int64
	idle      *imapclient.IdleCommand
}

// startIdle starts IDLE on the client, which has mailbox selected.
func (s *settler) startIdle(t testing.TB, mailbox string) {
	t.Helper()
	s.mailboxID = mailboxID(t, s.e, mailbox)
	s.resumeIdle(t)
}

// resumeIdle starts IDLE again in the same mailbox.
func (s *settler) resumeIdle(t testing.TB) {
	t.Helper()
	idle, err := s.c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	s.idle = idle
}

// stopIdle ends IDLE (DONE) and waits for its tagged OK.
func (s *settler) stopIdle(t testing.TB) {
	t.Helper()
	idle := s.idle
	s.idle = nil
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}

// settle returns once the client has read all the server will say of
// the changes committed so far. A client not in IDLE is told only in
// answer to a command, and the test's last one has been answered: nothing
// to wait for. For one in IDLE, the server's feed first handles every
// notification committed so far (unless held: the test holds the feed,
// which can tell nothing), then DONE is answered after a last poll of the
// session, and IDLE starts again.
func (s *settler) settle(t testing.TB, held bool) {
	t.Helper()
	if s.idle == nil {
		return
	}
	if !held {
		settleFeed(t, s.e.srv, s.e.st, s.mailboxID)
	}
	s.stopIdle(t)
	s.resumeIdle(t)
}

// settleFeed waits until srv's feed has handled every notification
// committed so far: a wake-up of an id no mailbox has (store.Wake) has
// reached the feed (NOTIFYs arrive in commit order), and neither the
// runner of mailboxID nor a resync has anything left to do.
func settleFeed(t testing.TB, srv *Server, st *store.Store, mailboxID int64) {
	t.Helper()
	ctx := context.Background()
	id := -rand.Int64N(1<<62) - 1
	seen := make(chan struct{})
	var once sync.Once
	h := func(ev store.MailboxChange) {
		if ev.MailboxID == id {
			once.Do(func() { close(seen) })
		}
	}
	// One barrier at a time per server: the hook has one slot.
	if !srv.feed.afterNotify.CompareAndSwap(nil, &h) {
		t.Fatal("settleFeed: another barrier waits on this server")
	}
	defer srv.feed.afterNotify.Store(nil)
	deadline := time.Now().Add(10 * time.Second)
	for sent := false; !sent; {
		if err := st.Wake(ctx, id); err != nil {
			t.Fatal(err)
		}
		select {
		case <-seen:
			sent = true
		case <-time.After(time.Second):
			// A NOTIFY sent while the LISTEN connection reconnects is
			// lost (the resync after it covers the changes): again.
			if time.Now().After(deadline) {
				t.Fatal("the feed did not hear a wake-up")
			}
		}
	}
	for feedBusy(srv, mailboxID) {
		if time.Now().After(deadline) {
			t.Fatalf("the feed of mailbox %d did not settle", mailboxID)
		}
		time.Sleep(time.Millisecond)
	}
}

// feedBusy reports whether srv's feed has work queued or under way for
// the mailbox, or a resync.
func feedBusy(srv *Server, mailboxID int64) bool {
	f := srv.feed
	f.mu.Lock()
	w, resyncing := f.boxes[mailboxID], f.resyncing
	f.mu.Unlock()
	if resyncing {
		return true
	}
	if w == nil {
		return false
	}
	w.kick.Lock()
	defer w.kick.Unlock()
	return w.running || len(w.events) > 0 || w.overflow
}

// expectLines waits for exactly these lines on ch, in order; then settle
// makes sure the client has read whatever else the server had to say,
// and nothing more may have come.
func expectLines(t *testing.T, ch <-chan string, step string, settle func(), want ...string) {
	t.Helper()
	var got []string
	timeout := time.After(5 * time.Second)
	for len(got) < len(want) {
		select {
		case l := <-ch:
			got = append(got, l)
		case <-timeout:
			t.Fatalf("%s: got %q, want %q", step, got, want)
		}
	}
	settle()
	for len(ch) > 0 {
		got = append(got, <-ch)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", step, got, want)
	}
}

// viewOf returns "uid:flags" of every message as the client sees it.
func viewOf(t *testing.T, c *imapclient.Client) []string {
	t.Helper()
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i, m := range msgs {
		if m.SeqNum != uint32(i+1) {
			t.Fatalf("FETCH 1:* returned seq %d at position %d", m.SeqNum, i+1)
		}
		out = append(out, fmt.Sprintf("%d:%v", m.UID, messageFlags(m.Flags)))
	}
	if n := c.Mailbox().NumMessages; int(n) != len(out) {
		t.Fatalf("client thinks %d messages exist, FETCH 1:* returned %d", n, len(out))
	}
	return out
}

// dbView is the same from the database.
func dbView(t *testing.T, st *store.Store, accountID int64, mailbox string) []string {
	t.Helper()
	ctx := context.Background()
	mb, err := st.MailboxByName(ctx, accountID, mailbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	err = st.FetchMeta(ctx, accountID, mb.ID, []store.UIDRange{{Start: 1, Stop: 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		out = append(out, fmt.Sprintf("%d:%v", m.UID, m.Flags))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wireRecorder records the untagged responses a client reads, exactly as
// they come off the wire and in their order ("* 3 EXISTS"), while it is
// on, and builds the client's model of its mailbox from everything read
// (wireView). imapclient's unilateral handler is no good for this: it runs
// FETCH handlers on goroutines of their own, so their order against
// EXPUNGE and EXISTS is lost.
type wireRecorder struct {
	settler
	v  *wireView
	ch chan string
	on atomic.Bool
}

func newWireRecorder() *wireRecorder {
	r := &wireRecorder{v: &wireView{}, ch: make(chan string, 10000)}
	r.on.Store(true)
	r.v.onLine = func(l string) {
		if r.on.Load() && strings.HasPrefix(l, "* ") && !announcement(l) {
			r.ch <- withoutRecent(l)
		}
	}
	return r
}

// announcement reports whether l only tells the client what it may see
// next: the keyword list (FLAGS, PERMANENTFLAGS: a keyword is announced
// before a message carries it) or the \Recent count that goes with EXISTS.
// The sync tests record the changes themselves.
func announcement(l string) bool {
	return strings.HasPrefix(l, "* FLAGS ") || strings.HasPrefix(l, "* OK [PERMANENTFLAGS ") || strings.HasSuffix(l, " RECENT")
}

// login connects to e through the recorder and logs in.
func (r *wireRecorder) login(t testing.TB, e *env) *imapclient.Client {
	t.Helper()
	var c *imapclient.Client
	var err error
	r.quiet(func() { c, err = connect(e.addr, e.user, e.pass, nil, r.v) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r.e, r.c = e, c
	return c
}

// selectInbox selects INBOX on c and fetches the UID and flags of every
// message, unrecorded: the model starts from the mailbox as it is.
func (r *wireRecorder) selectInbox(t testing.TB, c *imapclient.Client) {
	t.Helper()
	r.quiet(func() {
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect(); err != nil {
			t.Fatal(err)
		}
	})
}

// watchedEntry is the feed's entry of a mailbox some session selected.
func watchedEntry(srv *Server, mailboxID int64) *watched {
	srv.feed.mu.Lock()
	defer srv.feed.mu.Unlock()
	return srv.feed.boxes[mailboxID]
}

// idleIn logs in on e, selects mailbox without recording and starts IDLE.
func (r *wireRecorder) idleIn(t testing.TB, e *env, mailbox string) *imapclient.Client {
	t.Helper()
	c := r.login(t, e)
	r.quiet(func() {
		if _, err := c.Select(mailbox, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	})
	r.startIdle(t, mailbox)
	return c
}

// quiet runs fn (the client's own commands) without recording; the model
// still sees everything.
func (r *wireRecorder) quiet(fn func()) {
	r.on.Store(false)
	defer r.on.Store(true)
	fn()
}

// expect waits for exactly these lines, in order; then, past the
// settler's barrier, nothing more may have come.
func (r *wireRecorder) expect(t *testing.T, step string, want ...string) {
	t.Helper()
	expectLines(t, r.ch, step, func() { r.settle(t, false) }, want...)
}

// expectHeld is expect while the test holds the feed of the client's
// mailbox (or the process's LISTEN connection): the barrier is the round
// trip alone.
func (r *wireRecorder) expectHeld(t *testing.T, step string, want ...string) {
	t.Helper()
	expectLines(t, r.ch, step, func() { r.settle(t, true) }, want...)
}

// matches checks the client's model, built only from what it was sent,
// against the database.
func (r *wireRecorder) matches(t *testing.T, step string, st *store.Store, accountID, mailboxID int64) {
	t.Helper()
	if diffs, _ := r.v.compare(dbMessages(t, st, accountID, mailboxID)); len(diffs) > 0 {
		t.Fatalf("%s: the client's model differs from the database: %q", step, diffs)
	}
}

// idleScenario: A idles on INBOX via envA; B (via envB, possibly another
// server on the same database) changes INBOX; A gets exactly the updates,
// read off the wire in order, and its model (built from nothing else)
// equals the database after each step, before A fetches anything again.
func idleScenario(t *testing.T, envA, envB *env) {
	for i := 0; i < 2; i++ {
		envA.deliver("INBOX", crlf(simpleMsg))
	}
	inbox := mailboxID(t, envA, "INBOX")
	rec := newWireRecorder()
	a := rec.login(t, envA)
	rec.selectInbox(t, a)
	b := envB.login(nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	rec.startIdle(t, "INBOX")
	check := func(step string) {
		t.Helper()
		rec.stopIdle(t)
		rec.matches(t, step, envA.st, envA.acc.ID, inbox)
		rec.quiet(func() {
			if got, want := viewOf(t, a), dbView(t, envA.st, envA.acc.ID, "INBOX"); !slices.Equal(got, want) {
				t.Fatalf("%s: A's view %q, database %q", step, got, want)
			}
		})
		rec.matches(t, step+", after FETCH 1:*", envA.st, envA.acc.ID, inbox)
		rec.startIdle(t, "INBOX")
	}

	appendMsg(t, b, "INBOX", crlf(simpleMsg))
	rec.expect(t, "APPEND", "* 3 EXISTS")
	check("APPEND")

	if err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged, imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "STORE +FLAGS", `* 1 FETCH (UID 1 FLAGS (\Seen \Flagged))`)
	check("STORE +FLAGS")

	if err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsDel, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "STORE -FLAGS", `* 1 FETCH (UID 1 FLAGS (\Seen))`)
	check("STORE -FLAGS")

	if err := b.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "STORE \\Deleted", `* 2 FETCH (UID 2 FLAGS (\Deleted))`)
	if _, err := b.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "EXPUNGE", "* 2 EXPUNGE")
	check("EXPUNGE")

	// MOVE out: UIDs 1 and 3 remain; move 1.
	if _, err := b.Move(imap.UIDSetNum(1), "Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "MOVE out", "* 1 EXPUNGE")
	check("MOVE out")

	// COPY in from another mailbox.
	if _, err := b.Select("Archive", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Copy(imap.SeqSetNum(1), "INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "COPY in", "* 2 EXISTS")
	check("COPY in")

	// A store-level delivery (as SMTP does): only the NOTIFY tells.
	envB.deliver("INBOX", crlf(simpleMsg))
	rec.expect(t, "delivery", "* 3 EXISTS")
	check("delivery")

	// Several changes at once come in order: EXPUNGEs (highest first),
	// then EXISTS, then FETCH.
	rec.stopIdle(t)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	expungeSet(t, b, imap.SeqSet{{Start: 1, Stop: 2}})
	appendMsg(t, b, "INBOX", crlf(simpleMsg))
	appendMsg(t, b, "INBOX", crlf(simpleMsg))
	if err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Done"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	// A remote server's feed catches up before A polls.
	waitFeeds(t, envA.st, envA.acc.ID, inbox, envA.srv)
	if err := a.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "batch", "* 2 EXPUNGE", "* 1 EXPUNGE", "* 3 EXISTS", "* 1 FETCH (UID 5 FLAGS ($Done))")
	rec.matches(t, "batch", envA.st, envA.acc.ID, inbox)
	rec.quiet(func() {
		if got, want := viewOf(t, a), dbView(t, envA.st, envA.acc.ID, "INBOX"); !slices.Equal(got, want) {
			t.Fatalf("batch: A's view %q, database %q", got, want)
		}
	})
}

func TestIdleSameServer(t *testing.T) {
	e := newEnv(t, envOptions{})
	idleScenario(t, e, e)
}

func TestIdleAcrossServers(t *testing.T) {
	_, e1, e2 := twoServers(t, envOptions{}, store.Options{MaxConns: 8})
	idleScenario(t, e1, e2)
}

// Without IDLE, pending updates come with the next command; FETCH, STORE
// and SEARCH must not report EXPUNGE (RFC 9051 §7.5.1), the UID forms and
// NOOP may.
func TestPendingExpungesWaitForAllowedCommand(t *testing.T) {
	e := newEnv(t, envOptions{})
	for i := 0; i < 3; i++ {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	rec := newRecorder()
	a := e.login(rec.handler())
	if _, err := a.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	b := e.login(nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	b.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	if _, err := b.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, b, "INBOX", crlf(simpleMsg))

	// FETCH: the expunged message keeps its number, EXISTS counts it.
	msgs, err := a.Fetch(imap.SeqSetNum(3), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].UID != 3 {
		t.Fatalf("FETCH 3 = %+v %v", msgs, err)
	}
	rec.expect(t, "after FETCH", "EXISTS 4")
	// FETCH of the expunged message returns nothing.
	msgs, err = a.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(msgs) != 0 {
		t.Fatalf("FETCH 2 = %+v %v", msgs, err)
	}
	rec.expect(t, "after FETCH 2")
	if err := a.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "after NOOP", "EXPUNGE 2")
	if got, want := viewOf(t, a), dbView(t, e.st, e.acc.ID, "INBOX"); !slices.Equal(got, want) {
		t.Fatalf("A's view %q, database %q", got, want)
	}
}

func TestSelectedMailboxDeleted(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.login(nil)
	createMailboxes(t, b, "Work", "Play", "Parent/Child")
	// Idle session: BYE as soon as the mailbox is gone.
	a := e.idleIn(nil, "Work")
	if err := b.Delete("Work").Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("idling session not ended after its mailbox was deleted")
	}
	// Non-idle session, mailbox turned \Noselect by DELETE of a parent.
	a2 := e.login(nil)
	if _, err := a2.Select("Parent", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("Parent").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := a2.Noop().Wait(); err == nil {
		t.Fatal("NOOP in a deleted mailbox succeeded")
	}
	// Renamed while selected: the session carries on.
	a3 := e.login(nil)
	if _, err := a3.Select("Play", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Rename("Play", "Games", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, b, "Games", crlf(simpleMsg))
	if err := a3.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if n := a3.Mailbox().NumMessages; n != 1 {
		t.Fatalf("renamed mailbox: %d messages", n)
	}
	// The process stays healthy; the feed forgets closed views.
	a3.Logout().Wait()
	b.Logout().Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if boxes, views := e.srv.feed.watching(); boxes == 0 && views == 0 {
			break
		}
		if time.Now().After(deadline) {
			boxes, views := e.srv.feed.watching()
			t.Fatalf("feed still watches %d mailboxes, %d views", boxes, views)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Killing server 1's LISTEN backend (pg_terminate_backend) loses the
// notifications of everything done before it listens again: held down by
// the store's hook until server 2 has done an APPEND, a STORE and an
// EXPUNGE, the feed's resync must then tell A (IDLE on server 1) exactly
// what it missed, in order, and A's model must equal the database; one
// more change proves updates flow again.
func TestListenReconnectResync(t *testing.T) {
	var armed atomic.Bool
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	so1 := store.Options{MaxConns: 4, Listen: store.ListenOptions{BeforeConnect: func(ctx context.Context) {
		if !armed.Load() {
			return
		}
		select {
		case held <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}}}
	url, e1, e2 := twoServersWith(t, envOptions{}, so1, store.Options{MaxConns: 4})
	for range 3 {
		e1.deliver("INBOX", crlf(simpleMsg))
	}
	inbox := mailboxID(t, e1, "INBOX")
	rec := newWireRecorder()
	a := rec.login(t, e1)
	rec.selectInbox(t, a)
	rec.startIdle(t, "INBOX")
	b := e2.login(nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Both servers' LISTEN connections are up; kill them (server 2's comes
	// back at once, server 1's is held).
	armed.Store(true)
	var killed int
	for deadline := time.Now().Add(10 * time.Second); killed < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("killed %d LISTEN connections, want 2", killed)
		}
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, store.ListenApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		killed += n
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("server 1's feed did not try to reconnect")
	}

	// Server 1 listens to nothing now.
	appendMsg(t, b, "INBOX", crlf(simpleMsg)) // UID 4
	if err := b.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	expungeSet(t, b, imap.UIDSetNum(2))
	rec.expectHeld(t, "while server 1's feed is down")
	close(release)
	rec.expect(t, "after the reconnect", "* 2 EXPUNGE", "* 3 EXISTS", `* 1 FETCH (UID 1 FLAGS (\Flagged))`)
	rec.matches(t, "after the reconnect", e1.st, e1.acc.ID, inbox)

	e2.deliver("INBOX", crlf(simpleMsg))
	rec.expect(t, "a delivery after the reconnect", "* 4 EXISTS")
	rec.matches(t, "after a delivery", e1.st, e1.acc.ID, inbox)
}

// RFC 9051 §7 (and 7.5.1): with an expunge pending, FETCH, STORE and
// SEARCH report no EXPUNGE and keep every sequence number (the expunged
// message still counts); UID FETCH, UID STORE, UID SEARCH and NOOP may
// report it, and each does, once; numbers shift only then.
func TestPendingExpungeRFC9051(t *testing.T) {
	for _, cmd := range []string{"UID FETCH 1:* (FLAGS)", `UID STORE 4 +FLAGS (\Seen)`, "UID SEARCH ALL", "NOOP"} {
		t.Run(cmd, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			for range 4 {
				e.deliver("INBOX", crlf(simpleMsg))
			}
			a := e.raw()
			a.cmd("SELECT INBOX")
			b := e.login(nil)
			if _, err := b.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			expungeSet(t, b, imap.UIDSetNum(2))
			// Same server: the feed has applied the expunge to A's view
			// before B's EXPUNGE returned.
			noExpunge := func(c string, want ...string) {
				t.Helper()
				got := a.cmd(c)
				for i, l := range got {
					got[i] = withoutRecent(l)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s: %q, want %q", c, got, want)
				}
			}
			noExpunge("FETCH 1:4 (UID)", "* 1 FETCH (UID 1)", "* 3 FETCH (UID 3)", "* 4 FETCH (UID 4)")
			noExpunge(`STORE 3 +FLAGS (\Flagged)`, `* 3 FETCH (FLAGS (\Flagged))`)
			noExpunge("SEARCH ALL", "* SEARCH 1 3 4")
			noExpunge("FETCH 4 (UID)", "* 4 FETCH (UID 4)")

			got := a.cmd(cmd)
			if n := slices.Index(got, "* 2 EXPUNGE"); n < 0 || slices.Index(got[n+1:], "* 2 EXPUNGE") >= 0 {
				t.Fatalf("%s: %q, want one \"* 2 EXPUNGE\"", cmd, got)
			}
			if got := a.cmd("FETCH 3 (UID)"); !slices.Equal(got, []string{"* 3 FETCH (UID 4)"}) {
				t.Fatalf("after %s: FETCH 3 = %q, want UID 4", cmd, got)
			}
			if got := a.cmd("NOOP"); len(got) != 0 {
				t.Fatalf("second NOOP after %s: %q", cmd, got)
			}
		})
	}
}

// The view machinery on its own: ordering and the poll rules.
func TestSelectedView(t *testing.T) {
	mf := func(uid uint32, flags ...string) store.MessageFlags {
		return store.MessageFlags{UID: uid, Flags: flags}
	}
	tests := []struct {
		name    string
		view    []uint32
		changes []store.Changes
		allow   bool
		want    []update
		after   []uint32
	}{
		{"expunges highest first, then EXISTS, then FETCH", []uint32{1, 2, 3, 4},
			[]store.Changes{{Expunged: []uint32{2, 4}, Updated: []store.MessageFlags{mf(1, `\Seen`), mf(5)}}}, true,
			[]update{{expunge: 4, uid: 4}, {expunge: 2, uid: 2}, {exists: 3}, {seq: 1, uid: 1, flags: []string{`\Seen`}}}, []uint32{1, 3, 5}},
		{"created and expunged unseen: never shown", []uint32{1},
			[]store.Changes{{Updated: []store.MessageFlags{mf(2)}}, {Expunged: []uint32{2}}}, true,
			nil, []uint32{1}},
		{"expunge of an unknown message ignored", []uint32{1},
			[]store.Changes{{Expunged: []uint32{7}}}, true, nil, []uint32{1}},
		{"flags of an expunged message not reported", []uint32{1, 2},
			[]store.Changes{{Updated: []store.MessageFlags{mf(2, `\Deleted`)}}, {Expunged: []uint32{2}}}, true,
			[]update{{expunge: 2, uid: 2}}, []uint32{1}},
		{"no EXPUNGE when not allowed; numbers kept", []uint32{1, 2, 3},
			[]store.Changes{{Expunged: []uint32{2}, Updated: []store.MessageFlags{mf(3, `\Flagged`), mf(4)}}}, false,
			[]update{{exists: 4}, {seq: 3, uid: 3, flags: []string{`\Flagged`}}}, []uint32{1, 2, 3, 4}},
		{"repeated changes merge per message", []uint32{1},
			[]store.Changes{{Updated: []store.MessageFlags{mf(1, `\Seen`)}}, {Updated: []store.MessageFlags{mf(1)}}, {Updated: []store.MessageFlags{mf(1, `\Answered`)}}}, true,
			[]update{{seq: 1, uid: 1, flags: []string{`\Answered`}}}, []uint32{1}},
		{"a snapshot newer than the changes: idempotent", []uint32{1, 3},
			[]store.Changes{{Expunged: []uint32{2}, Updated: []store.MessageFlags{mf(3)}}}, true,
			[]update{{seq: 2, uid: 3, flags: []string{}}}, []uint32{1, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newView(nil, slices.Clone(tc.view), false)
			for i := range tc.changes {
				v.applySince(&tc.changes[i], 0, false)
			}
			got := v.take(tc.allow)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("updates %v, want %v", got, tc.want)
			}
			if !slices.Equal(v.uids, tc.after) {
				t.Errorf("view %v, want %v", v.uids, tc.after)
			}
			if again := v.take(true); len(again) != 0 && tc.allow {
				t.Errorf("second poll %v", again)
			}
		})
	}
}

// A panic while applying changes (a bug) ends only that view's session.
func TestFeedPanicEndsOnlyThatView(t *testing.T) {
	f := newFeed(context.Background(), nil, testLogger(t))
	w := &watched{mailboxID: 1, views: map[*view]struct{}{}}
	good := newView(w, []uint32{1, 2}, false)
	bad := newView(w, []uint32{1, 2}, false)
	bad.expunged = nil // writing to it panics
	ch := &store.Changes{Expunged: []uint32{2}}
	f.applySafely(bad, ch, 0)
	f.applySafely(good, ch, 0)
	if !bad.isGone() || good.isGone() {
		t.Fatalf("gone: bad %v good %v", bad.isGone(), good.isGone())
	}
	if got := good.take(true); len(got) != 1 || got[0].expunge != 2 {
		t.Fatalf("good view updates %v", got)
	}
}
