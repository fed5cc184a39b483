package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestServeThroughPgBouncer runs serve the supported PgBouncer way: the
// pool through a transaction-pooling PgBouncer, with
// default_query_exec_mode=cache_describe (no named prepared statements,
// which PgBouncer before 1.21 cannot carry), the LISTEN connection and
// migrations direct (-database-listen-url). A submission committed through PgBouncer must
// wake an IMAP IDLE session and the outbound queue worker through the
// one direct LISTEN connection, long before the worker's one-minute poll.
func TestServeThroughPgBouncer(t *testing.T) {
	_, direct, alicePass := setupDomain(t)
	bouncer := storetest.PgBouncer(t, direct) + "&default_query_exec_mode=cache_describe"
	relay, relayURL := startRelay(t)
	srv := startServe(t, bouncer, "--database-listen-url="+direct, "--imap-addr=127.0.0.1:0",
		"--submission-addr=127.0.0.1:0", "--relay="+relayURL)

	events := make(idleRecorder, 100)
	idler := imapLogin(t, srv.addr(t, "imaps"), "alice@example.org", alicePass, events.handler())
	if _, err := idler.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	// One LISTEN connection, on PostgreSQL itself, for IMAP and the queue.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var listeners int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND application_name = $1`, store.ListenApplicationName).Scan(&listeners); err != nil {
		t.Fatal(err)
	}
	if listeners != 1 {
		t.Fatalf("%d LISTEN connections, want 1", listeners)
	}

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve:\n%s", srv.out.String())
		}
	})
	start := time.Now()
	submit(t, srv.addr(t, "submission"), "alice@example.org", alicePass, "alice@example.org",
		[]string{"alice@example.org", "bob@remote.example"},
		"From: alice@example.org\r\nTo: alice@example.org, bob@remote.example\r\nSubject: through PgBouncer\r\n\r\nhi\r\n")
	events.waitExists(t, "submission to alice, seen in IDLE", 1)
	relay.Wait(t, 1)
	// The waits allow 30 s; the worker would otherwise sleep a minute.
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %v: woken by the poll, not by the notification", d)
	}
}
