package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

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
