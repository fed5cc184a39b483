package store_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// queueOne submits a message for bob (local) and two remote recipients.
func queueOne(t *testing.T, f *fixture) {
	t.Helper()
	ctx := context.Background()
	msg, err := store.Spool(strings.NewReader("From: alice@example.org\r\nSubject: q\r\n\r\nbody\r\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer msg.Close()
	inbox := f.mailbox(t, f.b, "INBOX")
	_, err = f.st.Submit(ctx, msg, []store.Target{{AccountID: f.b.ID, MailboxID: inbox.ID}}, []store.Outbound{
		{AccountID: f.a.ID, MailFrom: "alice@example.org", RcptTo: "x@remote.test"},
		{AccountID: f.a.ID, MailFrom: "alice@example.org", RcptTo: "y@other.test"},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestQueueLease(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	queueOne(t, f)
	if n, _ := f.st.CountMessageContents(ctx); n != 1 {
		t.Fatalf("%d contents stored, want 1 shared by the INBOX copy and the queue", n)
	}
	// A worker claims both rows with a short lease and "crashes".
	rows, err := f.st.ClaimQueued(ctx, 10, 300*time.Millisecond)
	if err != nil || len(rows) != 2 {
		t.Fatalf("claim: %v %v", rows, err)
	}
	if rows[0].RcptTo != "y@other.test" || rows[0].Attempts != 1 || rows[0].Lease == "" || rows[0].Size == 0 {
		t.Errorf("claimed rows not sorted by domain or incomplete: %+v", rows)
	}
	if again, _ := f.st.ClaimQueued(ctx, 10, time.Minute); len(again) != 0 {
		t.Fatalf("leased rows were claimed again: %+v", again)
	}
	if err := f.st.RetryQueued(ctx, rows[0].ID); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("retry of a row being delivered: %v, want ErrInvalid", err)
	}
	time.Sleep(400 * time.Millisecond)
	taken, err := f.st.ClaimQueued(ctx, 10, time.Minute)
	if err != nil || len(taken) != 2 || taken[0].Attempts != 2 {
		t.Fatalf("expired lease: rows not reclaimed: %+v %v", taken, err)
	}
	// The first worker comes back: it no longer holds the rows.
	if err := f.st.QueueDelivered(ctx, rows[0].ID, rows[0].Lease); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("stale delete: %v, want ErrLeaseLost", err)
	}
	if err := f.st.QueueBounce(ctx, []int64{rows[0].ID, rows[1].ID}, rows[0].Lease, f.a.ID, nil); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("stale bounce: %v, want ErrLeaseLost", err)
	}
	// The second worker defers one and delivers the other.
	if err := f.st.QueueDeferred(ctx, taken[0].ID, taken[0].Lease, time.Now().Add(time.Hour), "451 later"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.QueueDelivered(ctx, taken[1].ID, taken[1].Lease); err != nil {
		t.Fatal(err)
	}
	list, err := f.st.QueueEntries(ctx)
	if err != nil || len(list) != 1 || list[0].LastError != "451 later" || list[0].Lease != "" {
		t.Fatalf("queue after defer: %+v %v", list, err)
	}
	if next, ok, err := f.st.NextQueueAttempt(ctx); err != nil || !ok || time.Until(next) < 59*time.Minute {
		t.Errorf("next attempt %v %v %v", next, ok, err)
	}
	// retry makes it due now, and wakes listeners.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wake := make(chan struct{}, 1)
	go f.st.ListenQueue(lctx, wake)
	<-wake // the catch-up wake-up after connecting
	if err := f.st.RetryQueued(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("no NOTIFY wake-up after retry")
	}
	if due, _ := f.st.ClaimQueued(ctx, 10, time.Minute); len(due) != 1 {
		t.Fatalf("retried row not due: %+v", due)
	}
	if err := f.st.DeleteQueued(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DeleteQueued(ctx, list[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func TestQueueBounceDeliversOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	queueOne(t, f)
	rows, err := f.st.ClaimQueued(ctx, 10, time.Minute)
	if err != nil || len(rows) != 2 {
		t.Fatal(rows, err)
	}
	body, header, err := f.st.OpenQueued(ctx, rows[0].ID)
	if err != nil || !strings.HasPrefix(string(header), "From: alice@example.org") {
		t.Fatalf("open queued: %q %v", header, err)
	}
	var b strings.Builder
	if _, err := io.Copy(&b, body); err != nil || !strings.HasSuffix(b.String(), "\r\n\r\nbody\r\n") {
		t.Fatalf("queued body %q %v", b.String(), err)
	}
	dsn, err := store.Spool(strings.NewReader("From: MAILER-DAEMON@example.org\r\nSubject: bounce\r\n\r\nx\r\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dsn.Close()
	ids := []int64{rows[0].ID, rows[1].ID}
	if err := f.st.QueueBounce(ctx, ids, rows[0].Lease, f.a.ID, dsn); err != nil {
		t.Fatal(err)
	}
	if err := f.st.QueueBounce(ctx, ids, rows[0].Lease, f.a.ID, dsn); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("second bounce: %v", err)
	}
	if mb := f.mailbox(t, f.a, "INBOX"); mb.Messages != 1 {
		t.Errorf("sender INBOX has %d messages, want exactly one DSN", mb.Messages)
	}
}

func TestQueueRelease(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	queueOne(t, f)
	rows, err := f.st.ClaimQueued(ctx, 10, time.Hour)
	if err != nil || len(rows) == 0 {
		t.Fatalf("claim: %+v %v", rows, err)
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
		if r.Attempts != 1 {
			t.Fatalf("claimed row %+v", r)
		}
	}
	if err := f.st.QueueRelease(ctx, ids, "not-the-lease"); err != nil {
		t.Fatal(err)
	}
	if again, _ := f.st.ClaimQueued(ctx, 10, time.Hour); len(again) != 0 {
		t.Fatal("released with a wrong lease token")
	}
	if err := f.st.QueueRelease(ctx, ids, rows[0].Lease); err != nil {
		t.Fatal(err)
	}
	again, err := f.st.ClaimQueued(ctx, 10, time.Hour)
	if err != nil || len(again) != len(rows) {
		t.Fatalf("after release the rows are due again: %+v %v", again, err)
	}
	for _, r := range again {
		if r.Attempts != 1 {
			t.Fatalf("attempt count not restored: %+v", r)
		}
	}
}
