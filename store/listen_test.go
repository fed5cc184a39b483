package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

func TestListenReconnects(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan store.ChangeEvent, 16)
	done := make(chan error, 1)
	go func() { done <- f.st.Listen(ctx, func(ev store.ChangeEvent) { events <- ev }) }()
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
						cancel()
						<-done
						return
					}
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no resync after the LISTEN connection was killed")
		}
	}
}
