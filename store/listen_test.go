package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// listen runs st.Listen until stop is called or the test ends; its events
// arrive on the channel, which buffers n.
func listen(t *testing.T, st *store.Store, n int) (events chan store.ChangeEvent, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	events = make(chan store.ChangeEvent, n)
	done := make(chan error, 1)
	go func() { done <- st.Listen(ctx, func(ev store.ChangeEvent) { events <- ev }) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return events, stop
}

// awaitResync fails the test unless the first event is the resync that
// follows LISTEN.
func awaitResync(t *testing.T, events <-chan store.ChangeEvent) {
	t.Helper()
	select {
	case ev := <-events:
		if !ev.Resync {
			t.Fatalf("first event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no LISTEN")
	}
}

// Wake is a wake-up on its own, behind every change committed before it;
// Listening says whether the connection listens.
func TestWake(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if f.st.Listening() {
		t.Error("listening before any subscriber")
	}
	events, stop := listen(t, f.st, 16)
	awaitResync(t, events)
	if !f.st.Listening() {
		t.Error("not listening after the resync that follows LISTEN")
	}
	defer func() {
		stop()
		if f.st.Listening() {
			t.Error("listening after the last subscriber left")
		}
	}()
	inbox := f.mailbox(t, f.a, "INBOX")
	res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.Wake(ctx, -7); err != nil {
		t.Fatal(err)
	}
	var got []store.MailboxChange
	for len(got) < 2 {
		select {
		case ev := <-events:
			got = append(got, store.MailboxChange{MailboxID: ev.MailboxID, ModSeq: ev.ModSeq})
		case <-time.After(10 * time.Second):
			t.Fatalf("got %+v, want the append then the wake-up", got)
		}
	}
	want := []store.MailboxChange{{MailboxID: inbox.ID, ModSeq: res.ModSeq}, {MailboxID: -7}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestListenReconnects(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	events, stop := listen(t, f.st, 16)
	inbox := f.mailbox(t, f.a, "INBOX")

	// The listener connects asynchronously: append until one arrives.
	var got store.ChangeEvent
	deadline := time.After(10 * time.Second)
wait:
	for {
		res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-events:
			if got.Resync {
				continue // the resync after the first LISTEN
			}
			if got.MailboxID != inbox.ID || got.ModSeq > res.ModSeq || time.Since(got.At) > time.Minute || time.Since(got.At) < -time.Minute {
				t.Fatalf("event %+v for append %+v", got, res)
			}
			break wait
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("no notification")
		}
	}

	// Kill the LISTEN backend: the feed must reconnect and ask for a resync.
	conn, err := pgx.ConnectConfig(ctx, f.st.ConnConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query LIKE 'LISTEN%' AND datname = current_database()`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d LISTEN backends, want 1", killed)
	}
	for {
		select {
		case ev := <-events:
			if ev.Resync {
				// After the resync, new notifications flow again.
				res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(2)), 0, nil, time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				for ev := range events {
					if ev.ModSeq == res.ModSeq {
						stop()
						return
					}
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no resync after the LISTEN connection was killed")
		}
	}
}

// freezeProxy forwards TCP connections on 127.0.0.1 to a PostgreSQL
// server. freeze makes every connection open at that moment silently dead
// (nothing forwarded either way, nothing closed: a half-open connection as
// a vanished peer or a stuck NAT leaves it); later connections work.
type freezeProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   []*proxied
	release chan struct{}
}

type proxied struct {
	frozen atomic.Bool
}

func newFreezeProxy(t *testing.T, cfg *pgx.ConnConfig) *freezeProxy {
	t.Helper()
	network, addr := "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if strings.HasPrefix(cfg.Host, "/") {
		network, addr = "unix", filepath.Join(cfg.Host, fmt.Sprintf(".s.PGSQL.%d", cfg.Port))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, release: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		close(p.release)
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial(network, addr)
			if err != nil {
				c.Close()
				continue
			}
			pc := &proxied{}
			p.mu.Lock()
			p.conns = append(p.conns, pc)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer dst.Close()
				defer src.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if pc.frozen.Load() {
						<-p.release // hold both ends open, forward nothing
						return
					}
					if n > 0 {
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			go pipe(b, c)
			go pipe(c, b)
		}
	}()
	return p
}

func (p *freezeProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.frozen.Store(true)
	}
}

// connString is cfg as a keyword/value connection string, pointed at
// host:port if given.
func connString(cfg *pgx.ConnConfig, hostPort string) string {
	host, port := cfg.Host, strconv.Itoa(int(cfg.Port))
	if hostPort != "" {
		host, port, _ = net.SplitHostPort(hostPort)
	}
	s := fmt.Sprintf("host=%s port=%s dbname=%s user=%s sslmode=disable", host, port, cfg.Database, cfg.User)
	if cfg.Password != "" {
		s += " password=" + cfg.Password
	}
	return s
}

// A LISTEN connection that goes silently dead (no FIN, no RST: the proxy
// in front of it stops forwarding) is found out by the liveness check;
// the feed reconnects, asks for a resync, and notifications flow again. A
// healthy quiet connection passes its checks without reconnecting: the
// checks come often, but each may take a generous PingTimeout (a loaded
// machine can be slow to answer SELECT 1) before the connection counts as
// dead.
func TestListenDetectsDeadConnection(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := f.st.ConnConfig()
	proxy := newFreezeProxy(t, cfg)
	checks := make(chan struct{}, 1)
	st, err := store.Open(ctx, connString(cfg, ""), store.Options{Listen: store.ListenOptions{
		URL:           connString(cfg, proxy.ln.Addr().String()),
		CheckInterval: 100 * time.Millisecond,
		PingTimeout:   3 * time.Second,
		OnCheck: func() {
			select {
			case checks <- struct{}{}:
			default:
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	events, stop := listen(t, st, 64)
	inbox := f.mailbox(t, f.a, "INBOX")
	next := func(what string) store.ChangeEvent {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no event", what)
		}
		panic("unreachable")
	}
	appendOne := func(i int) uint64 {
		t.Helper()
		res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return res.ModSeq
	}
	if ev := next("first LISTEN"); !ev.Resync {
		t.Fatalf("first event %+v, want the resync", ev)
	}
	// Quiet through several liveness checks: they pass, nothing reconnects
	// (a reconnection would send its resync before the next check).
	for range 5 {
		select {
		case <-checks:
		case ev := <-events:
			t.Fatalf("event %+v on a quiet, healthy connection", ev)
		case <-time.After(10 * time.Second):
			t.Fatal("no liveness check passed")
		}
	}
	select {
	case ev := <-events:
		t.Fatalf("event %+v on a quiet, healthy connection", ev)
	default:
	}
	if ms := appendOne(1); next("append through the proxy").ModSeq != ms {
		t.Fatal("wrong notification")
	}

	proxy.freeze()
	lost := appendOne(2) // its notification is stuck in the dead connection
	ev := next("after the freeze")
	if !ev.Resync {
		t.Fatalf("event %+v after the freeze, want a resync (modseq %d was lost)", ev, lost)
	}
	ms := appendOne(3)
	if ev := next("append after the reconnect"); ev.Resync || ev.ModSeq != ms {
		t.Fatalf("event %+v, want modseq %d", ev, ms)
	}
	stop()
}

// DeleteAccount announces every mailbox of the account (sessions that have
// one selected end at once).
func TestDeleteAccountNotifies(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	events, stop := listen(t, f.st, 64)
	awaitResync(t, events)
	mbs, err := f.st.Mailboxes(ctx, f.b.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]bool{}
	for _, mb := range mbs {
		want[mb.ID] = true
	}
	if err := f.st.DeleteAccount(ctx, "bob@example.org"); err != nil {
		t.Fatal(err)
	}
	got := map[int64]bool{}
	logins := 0
	for len(got) < len(want) || logins == 0 {
		select {
		case ev := <-events:
			if ev.Logins != nil {
				if *ev.Logins != (store.LoginChange{AccountID: f.b.ID}) {
					t.Fatalf("login event %+v", ev.Logins)
				}
				logins++
				continue
			}
			if !want[ev.MailboxID] || ev.ModSeq != 0 {
				t.Fatalf("event %+v; bob's mailboxes %v", ev, want)
			}
			got[ev.MailboxID] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("notified %v of bob's mailboxes %v", got, want)
		}
	}
	if err := f.st.DeleteAccount(ctx, "bob@example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting again: %v, want ErrNotFound", err)
	}
	stop()
}

// TestLoginChangesNotified: revoking an app password, disabling and
// deleting an account announce it on LoginChannel in the same statement;
// re-enabling and refused changes announce nothing.
func TestLoginChangesNotified(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	events, stop := listen(t, f.st, 64)
	next := func() *store.LoginChange {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.Logins != nil {
					return ev.Logins
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no login event")
			}
		}
	}
	awaitResync(t, events)
	_, ap, err := f.st.CreateAppPassword(ctx, f.b.ID, "phone")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.RevokeAppPassword(ctx, f.a.ID, ap.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoking another account's app password: %v", err)
	}
	if err := f.st.RevokeAppPassword(ctx, f.b.ID, ap.ID); err != nil {
		t.Fatal(err)
	}
	if got := next(); *got != (store.LoginChange{AccountID: f.b.ID, AppPasswordID: ap.ID}) {
		t.Fatalf("revoke: %+v", got)
	}
	if err := f.st.SetDisabled(ctx, "bob@example.org", false); err != nil {
		t.Fatal(err)
	}
	if err := f.st.SetDisabled(ctx, "bob@example.org", true); err != nil {
		t.Fatal(err)
	}
	// Re-enabling announced nothing: the next event is the disable.
	if got := next(); *got != (store.LoginChange{AccountID: f.b.ID}) {
		t.Fatalf("disable: %+v", got)
	}
	l := &store.Login{AccountID: f.b.ID, AppPasswordID: 7}
	if !(&store.LoginChange{AccountID: f.b.ID}).Affects(l) || (&store.LoginChange{AccountID: f.b.ID, AppPasswordID: 8}).Affects(l) ||
		(&store.LoginChange{AccountID: f.a.ID}).Affects(l) {
		t.Fatal("LoginChange.Affects")
	}
	stop()
}

// TestNotificationsCarryChanges: a delivery's and a flag change's
// notification carry the change itself, exactly what a read of the changes
// at its modseq returns, so that the change feed needs no read of its own;
// a change too large for a payload, and every other kind, is a wake-up.
func TestNotificationsCarryChanges(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	events, _ := listen(t, f.st, 1024)
	select {
	case <-events: // the resync after LISTEN: from now on nothing is missed
	case <-time.After(10 * time.Second):
		t.Fatal("LISTEN did not come up")
	}
	inbox := f.mailbox(t, f.a, "INBOX")
	next := func(t *testing.T) store.ChangeEvent {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.MailboxID == inbox.ID {
					return ev
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no notification")
			}
		}
	}
	appendMsg := func(t *testing.T, body string, flags ...string) *store.AppendResult {
		t.Helper()
		res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(body), 0, flags, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	longKeywords := make([]string, 100)
	for i := range longKeywords {
		longKeywords[i] = fmt.Sprintf("$%079d", i) // 8,000 bytes together
	}
	big := testMessage(0) + strings.Repeat("x", store.ChunkSize) + "\r\n"
	for range 2 {
		appendMsg(t, testMessage(1))
		next(t)
	}
	all := []store.UIDRange{{Start: 1, Stop: 0}}
	tests := []struct {
		name   string
		change func(t *testing.T) uint64 // the modseq of the change
		inline bool
	}{
		{"append with flags", func(t *testing.T) uint64 {
			res := appendMsg(t, testMessage(2), `\Seen`, "$Work", `\Recent`, "$Home")
			if want := []string{`\Seen`, "$Home", "$Work"}; !slices.Equal(res.Flags, want) {
				t.Errorf("append result flags %q, want %q", res.Flags, want)
			}
			return res.ModSeq
		}, true},
		{"append without flags", func(t *testing.T) uint64 { return appendMsg(t, testMessage(3)).ModSeq }, true},
		{"append of several chunks", func(t *testing.T) uint64 { return appendMsg(t, big, `\Flagged`).ModSeq }, true},
		{"store +flags", func(t *testing.T) uint64 { return storeFlags(t, f, inbox.ID, all, store.FlagsAdd, "$Tag", `\Answered`) }, true},
		{"store -flags", func(t *testing.T) uint64 { return storeFlags(t, f, inbox.ID, all, store.FlagsRemove, "$Work") }, true},
		{"store flags", func(t *testing.T) uint64 { return storeFlags(t, f, inbox.ID, all, store.FlagsReplace) }, true},
		{"append with 8,000 bytes of keywords", func(t *testing.T) uint64 { return appendMsg(t, testMessage(4), longKeywords...).ModSeq }, false},
		{"store of 8,000 bytes of keywords", func(t *testing.T) uint64 {
			return storeFlags(t, f, inbox.ID, []store.UIDRange{{Start: 1, Stop: 1}}, store.FlagsAdd, longKeywords...)
		}, false},
		{"store on more messages than go inline", func(t *testing.T) uint64 {
			for i := range 200 {
				appendMsg(t, testMessage(100+i))
				next(t)
			}
			return storeFlags(t, f, inbox.ID, all, store.FlagsAdd, `\Seen`)
		}, false},
		{"expunge", func(t *testing.T) uint64 {
			storeFlags(t, f, inbox.ID, []store.UIDRange{{Start: 2, Stop: 3}}, store.FlagsAdd, `\Deleted`)
			next(t)
			if _, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, nil); err != nil {
				t.Fatal(err)
			}
			mb, err := f.st.MailboxByID(ctx, f.a.ID, inbox.ID)
			if err != nil {
				t.Fatal(err)
			}
			return mb.HighestModSeq
		}, true},
		{"move within the mailbox: one notification", func(t *testing.T) uint64 {
			if _, err := f.st.Move(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 1, Stop: 1}}, inbox.ID); err != nil {
				t.Fatal(err)
			}
			mb, err := f.st.MailboxByID(ctx, f.a.ID, inbox.ID)
			if err != nil {
				t.Fatal(err)
			}
			return mb.HighestModSeq
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			modseq := tt.change(t)
			ev := next(t)
			if ev.ModSeq != modseq {
				t.Fatalf("notification at modseq %d, change at %d", ev.ModSeq, modseq)
			}
			if !tt.inline {
				if ev.Changes != nil {
					t.Fatalf("changes inline: %+v", ev.Changes)
				}
				return
			}
			if ev.Changes == nil {
				t.Fatal("no changes inline")
			}
			if ev.UIDValidity != inbox.UIDValidity {
				t.Fatalf("inline UIDVALIDITY %d, mailbox's %d", ev.UIDValidity, inbox.UIDValidity)
			}
			want, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, modseq-1)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ev.Changes.Updated, want.Updated) || !slices.Equal(ev.Changes.Expunged, want.Expunged) {
				t.Fatalf("inline changes %+v / %v, read %+v / %v", ev.Changes.Updated, ev.Changes.Expunged, want.Updated, want.Expunged)
			}
		})
	}
}

// listenBackends counts the LISTEN connections on the fixture's database.
func listenBackends(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, store.ListenApplicationName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitWake waits for a worker's wake-up.
func waitWake(t *testing.T, what string, wake <-chan struct{}) {
	t.Helper()
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no wake-up", what)
	}
}

// waitEvent returns the next event that satisfies ok, skipping others.
func waitEvent(t *testing.T, what string, events <-chan store.ChangeEvent, ok func(store.ChangeEvent) bool) store.ChangeEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s: no event", what)
		}
	}
}

func isResync(ev store.ChangeEvent) bool { return ev.Resync }

// TestListenOneConnection: the change feed, the queue worker and the junk
// learner of a process share one LISTEN connection; each hears its own
// channel, and each is told when the connection comes back; subscribers
// come and go without disturbing the others, and the last one closes it.
func TestListenOneConnection(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	workCtx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	events := make(chan store.ChangeEvent, 64)
	queue, learn := make(chan struct{}, 1), make(chan struct{}, 1)
	done := make(chan struct{}, 3)
	go func() { f.st.Listen(feedCtx, func(ev store.ChangeEvent) { events <- ev }); done <- struct{}{} }()
	go func() { f.st.ListenQueue(workCtx, queue); done <- struct{}{} }()
	go func() { f.st.ListenLearn(workCtx, learn); done <- struct{}{} }()
	waitEvent(t, "first LISTEN", events, isResync)
	waitWake(t, "queue, first LISTEN", queue)
	waitWake(t, "learner, first LISTEN", learn)
	if n := listenBackends(t, conn); n != 1 {
		t.Fatalf("%d LISTEN connections, want 1", n)
	}

	inbox := f.mailbox(t, f.a, "INBOX")
	res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, "append", events, func(ev store.ChangeEvent) bool { return ev.MailboxID == inbox.ID && ev.ModSeq == res.ModSeq })
	for _, ch := range []struct {
		name string
		wake chan struct{}
	}{{store.QueueChannel, queue}, {store.LearnChannel, learn}} {
		if _, err := conn.Exec(ctx, `SELECT pg_notify($1, '')`, ch.name); err != nil {
			t.Fatal(err)
		}
		waitWake(t, ch.name, ch.wake)
	}

	// The connection dropped: everyone hears of it, once it is back.
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, store.ListenApplicationName); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, "resync after the drop", events, isResync)
	waitWake(t, "queue after the drop", queue)
	waitWake(t, "learner after the drop", learn)

	// The feed leaves; the workers keep the connection.
	stopFeed()
	<-done
	if _, err := conn.Exec(ctx, `SELECT pg_notify($1, '')`, store.QueueChannel); err != nil {
		t.Fatal(err)
	}
	waitWake(t, "queue, the feed gone", queue)
	if n := listenBackends(t, conn); n != 1 {
		t.Fatalf("%d LISTEN connections with the feed gone, want 1", n)
	}

	// A late subscriber joins the open connection and is told at once.
	lateCtx, stopLate := context.WithCancel(ctx)
	late := make(chan store.ChangeEvent, 8)
	go func() { f.st.Listen(lateCtx, func(ev store.ChangeEvent) { late <- ev }); done <- struct{}{} }()
	waitEvent(t, "late subscriber", late, isResync)
	stopLate()
	<-done

	stopWorkers()
	<-done
	<-done
	for deadline := time.Now().Add(10 * time.Second); listenBackends(t, conn) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the LISTEN connection outlived its last subscriber")
		}
	}
}

// TestListenThroughPgBouncer: with the pool behind a transaction-pooling
// PgBouncer (default_query_exec_mode=cache_describe) and
// ListenOptions.URL pointing at PostgreSQL, migrations work and a
// submission committed through PgBouncer reaches the change feed and the
// queue worker through the direct LISTEN connection.
func TestListenThroughPgBouncer(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, storetest.PgBouncer(t, f.url)+"&default_query_exec_mode=cache_describe",
		store.Options{Listen: store.ListenOptions{URL: f.url}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	events := make(chan store.ChangeEvent, 64)
	queue := make(chan struct{}, 1)
	go st.Listen(ctx, func(ev store.ChangeEvent) { events <- ev }) //nolint:errcheck
	go st.ListenQueue(ctx, queue)
	waitEvent(t, "first LISTEN", events, isResync)
	waitWake(t, "queue, first LISTEN", queue)

	inbox := f.mailbox(t, f.b, "INBOX")
	queueOne(t, &fixture{st: st, url: f.url, a: f.a, b: f.b})
	ev := waitEvent(t, "delivery through PgBouncer", events, func(ev store.ChangeEvent) bool { return ev.MailboxID == inbox.ID })
	if ev.Changes == nil || len(ev.Changes.Updated) != 1 {
		t.Fatalf("delivery event %+v: want its change inline", ev)
	}
	waitWake(t, "queue through PgBouncer", queue)
	if due, err := st.ClaimQueued(ctx, 10, time.Minute); err != nil || len(due) != 2 {
		t.Fatalf("claim through PgBouncer: %+v %v", due, err)
	}
}
