package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

// rawConn is a connection behind the store's back, for what no API shows
// (chunks, locks, notifications).
func rawConn(t *testing.T, f *fixture) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(context.Background(), f.st.ConnConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// contentCounts returns how many contents and chunks are stored.
func contentCounts(t *testing.T, conn *pgx.Conn) (contents, chunks int64) {
	t.Helper()
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_chunks)`).
		Scan(&contents, &chunks); err != nil {
		t.Fatal(err)
	}
	return contents, chunks
}

// checkBodies checks that every message of the mailbox reads back as want
// and returns their content ids.
func checkBodies(t *testing.T, f *fixture, acc, mailboxID int64, want string) map[int64]bool {
	t.Helper()
	ctx := context.Background()
	ids := map[int64]bool{}
	err := f.st.FetchMeta(ctx, acc, mailboxID, []store.UIDRange{{1, 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		ids[m.MessageID] = true
		body, err := f.st.OpenBody(ctx, acc, m.MessageID, 0, -1)
		if err != nil {
			return err
		}
		return sameReaders(body, strings.NewReader(want))
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestOneTripDeliveryDedup: a one-chunk message delivered to two accounts at
// once, then appended again, and appended by 8 sessions at the same time,
// is stored once, byte-exact, in one chunk.
func TestOneTripDeliveryDedup(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	conn := rawConn(t, f)
	inbox, trash, binbox := f.mailbox(t, f.a, "INBOX"), f.mailbox(t, f.a, "Trash"), f.mailbox(t, f.b, "INBOX")
	msg := testMessage(7) + strings.Repeat("line\r\n", 1000)
	sp, err := store.Spool(strings.NewReader(msg), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	res, err := f.st.Deliver(ctx, sp, []store.Target{
		{AccountID: f.b.ID, MailboxID: binbox.ID, Flags: []string{store.FlagSeen}},
		{AccountID: f.a.ID, MailboxID: inbox.ID, Flags: []string{"$Work"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].MailboxID != binbox.ID || res[0].UID != 1 || res[1].MailboxID != inbox.ID || res[1].UID != 1 {
		t.Fatalf("results %+v", res)
	}
	if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	const workers = 8
	errs := make(chan error, workers)
	start := make(chan struct{})
	for range workers {
		go func() {
			<-start
			_, err := f.st.Append(ctx, f.a.ID, trash.ID, strings.NewReader(msg), 0, nil, time.Time{})
			errs <- err
		}()
	}
	close(start)
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ids := checkBodies(t, f, f.a.ID, inbox.ID, msg)
	for id := range checkBodies(t, f, f.a.ID, trash.ID, msg) {
		ids[id] = true
	}
	for id := range checkBodies(t, f, f.b.ID, binbox.ID, msg) {
		ids[id] = true
	}
	if contents, chunks := contentCounts(t, conn); len(ids) != 1 || contents != 1 || chunks != 1 {
		t.Fatalf("%d content ids, %d contents in %d chunks; want 1, 1, 1", len(ids), contents, chunks)
	}
	for _, c := range []struct {
		acc, mb              int64
		messages, unseen, kw int
	}{{f.a.ID, inbox.ID, 2, 2, 1}, {f.a.ID, trash.ID, workers, workers, 0}, {f.b.ID, binbox.ID, 1, 0, 0}} {
		mb, uids, err := f.st.SelectMailbox(ctx, c.acc, c.mb)
		if err != nil {
			t.Fatal(err)
		}
		if len(uids) != c.messages || mb.Messages != int64(c.messages) || mb.Unseen != int64(c.unseen) ||
			mb.UIDNext != uint32(c.messages)+1 || mb.Size != int64(c.messages*len(msg)) {
			t.Fatalf("mailbox %d: %+v, uids %v", c.mb, mb, uids)
		}
	}
}

// TestOneTripFallbackAfterGC: garbage collection deletes the content a
// one-trip delivery found while the delivery waits for the content's lock;
// the delivery falls back to its transaction and stores the content anew,
// and the batch's rolled-back work (UID, counts) leaves no trace.
func TestOneTripFallbackAfterGC(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	conn := rawConn(t, f)
	inbox := f.mailbox(t, f.a, "INBOX")
	msg := testMessage(8)
	if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	old := checkBodies(t, f, f.a.ID, inbox.ID, msg)
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{1, 1}}, store.FlagsAdd, []string{store.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, nil); err != nil {
		t.Fatal(err)
	}
	// Lock the unreferenced content as CollectGarbage does.
	gc, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Rollback(ctx)
	var oldID int64
	for id := range old {
		oldID = id
	}
	if _, err := gc.Exec(ctx, `SELECT id FROM messages WHERE id = $1 FOR UPDATE`, oldID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{})
		done <- err
	}()
	// Wait until the delivery waits for the content's row lock.
	watch := rawConn(t, f)
	for deadline := time.Now().Add(30 * time.Second); ; {
		var waiting int
		if err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivery never waited for the content's lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := gc.Exec(ctx, `DELETE FROM messages WHERE id = $1`, oldID); err != nil {
		t.Fatal(err)
	}
	if err := gc.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("delivery hangs")
	}
	ids := checkBodies(t, f, f.a.ID, inbox.ID, msg)
	if len(ids) != 1 || ids[oldID] {
		t.Fatalf("content ids %v; want one new one (old %d)", ids, oldID)
	}
	if contents, chunks := contentCounts(t, conn); contents != 1 || chunks != 1 {
		t.Fatalf("%d contents in %d chunks, want 1 in 1", contents, chunks)
	}
	mb, uids, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	// UID 1 was expunged; the batch's UID 2 rolled back and was handed out
	// again by the transaction.
	if len(uids) != 1 || uids[0] != 2 || mb.UIDNext != 3 || mb.Messages != 1 || mb.Size != int64(len(msg)) || mb.HighestModSeq != 5 {
		t.Fatalf("INBOX %+v, uids %v", mb, uids)
	}
}

// TestOneTripFailureLeavesNothing: a delivery or submission whose later
// target fails (over quota, missing mailbox) after the first one succeeded
// within the same batch commits nothing: no content, no chunk, no change to
// the first mailbox, no queued row, no notification.
func TestOneTripFailureLeavesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	conn := rawConn(t, f)
	inbox, trash := f.mailbox(t, f.a, "INBOX"), f.mailbox(t, f.a, "Trash")
	// Created after alice, so its mailboxes come later in lock order.
	small, err := f.st.CreateAccount(ctx, "small@example.org", "pw", store.AccountOptions{QuotaBytes: 300})
	if err != nil {
		t.Fatal(err)
	}
	sinbox := f.mailbox(t, small, "INBOX")
	if _, err := f.st.Append(ctx, small.ID, sinbox.ID, strings.NewReader(strings.Repeat("x", 200)), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	before, _, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	contents0, chunks0 := contentCounts(t, conn)
	if _, err := conn.Exec(ctx, `LISTEN `+store.MailboxChannel); err != nil {
		t.Fatal(err)
	}
	first := store.Target{AccountID: f.a.ID, MailboxID: inbox.ID}
	remote := []store.Outbound{{AccountID: f.a.ID, MailFrom: "alice@example.org", RcptTo: "x@remote.test"}}
	for i, c := range []struct {
		name   string
		submit bool
		second store.Target
		want   error
	}{
		{"deliver over quota", false, store.Target{AccountID: small.ID, MailboxID: sinbox.ID}, store.ErrOverQuota},
		{"deliver missing mailbox", false, store.Target{AccountID: f.a.ID, MailboxID: sinbox.ID + 1000}, store.ErrNotFound},
		{"deliver other account's mailbox", false, store.Target{AccountID: f.a.ID, MailboxID: sinbox.ID}, store.ErrNotFound},
		{"submit over quota", true, store.Target{AccountID: small.ID, MailboxID: sinbox.ID}, store.ErrOverQuota},
		{"submit missing mailbox", true, store.Target{AccountID: f.a.ID, MailboxID: sinbox.ID + 1000}, store.ErrNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			sp, err := store.Spool(strings.NewReader(testMessage(100+i)+strings.Repeat("y", 150)), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			targets := []store.Target{c.second, first}
			if c.submit {
				_, err = f.st.Submit(ctx, nil, sp, targets, remote)
			} else {
				_, err = f.st.Deliver(ctx, sp, targets)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			after, _, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(after, before) {
				t.Fatalf("INBOX changed: %+v, was %+v", after, before)
			}
			if contents, chunks := contentCounts(t, conn); contents != contents0 || chunks != chunks0 {
				t.Fatalf("%d contents in %d chunks, was %d in %d", contents, chunks, contents0, chunks0)
			}
			if n, err := f.st.QueueDepth(ctx); err != nil || n != 0 {
				t.Fatalf("queue depth %d, %v", n, err)
			}
		})
	}
	// The first notification is this delivery's to Trash: none of the
	// failed ones announced INBOX.
	res, err := f.st.Append(ctx, f.a.ID, trash.ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d %d ", trash.ID, res.ModSeq); !strings.HasPrefix(n.Payload, want) {
		t.Fatalf("first notification %q, want %q...", n.Payload, want)
	}
}
