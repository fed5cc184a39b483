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
// queueAndClaim queues one message for two remote recipients and claims
// both rows.
func queueAndClaim(t *testing.T, f *fixture) []store.QueuedMessage {
	t.Helper()
	queueOne(t, f)
	rows, err := f.st.ClaimQueued(context.Background(), 10, time.Minute)
	if err != nil || len(rows) != 2 {
		t.Fatal(rows, err)
	}
	return rows
}

func queueOne(t *testing.T, f *fixture) {
	t.Helper()
	ctx := context.Background()
	msg, err := store.Spool(strings.NewReader("From: alice@example.org\r\nSubject: q\r\n\r\nbody\r\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer msg.Close()
	inbox := f.mailbox(t, f.b, "INBOX")
	_, err = f.st.Submit(ctx, nil, msg, []store.Target{{AccountID: f.b.ID, MailboxID: inbox.ID}}, []store.Outbound{
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
	if err := f.st.QueueRecord(ctx, rows[0].Lease, []store.QueueOutcome{{ID: rows[0].ID, Kind: store.OutcomeDelivered}}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("stale delete: %v, want ErrLeaseLost", err)
	}
	if err := f.st.QueueBounce(ctx, []int64{rows[0].ID, rows[1].ID}, rows[0].Lease, f.a.ID, nil); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("stale bounce: %v, want ErrLeaseLost", err)
	}
	// The second worker defers one and delivers the other.
	err = f.st.QueueRecord(ctx, taken[0].Lease, []store.QueueOutcome{
		{ID: taken[0].ID, Kind: store.OutcomeDeferred, Next: time.Now().Add(time.Hour), Error: "451 later"},
		{ID: taken[1].ID, Kind: store.OutcomeDelivered},
	})
	if err != nil {
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
	rows := queueAndClaim(t, f)
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

// TestQueueBounceWaits: a failed row is bounced once no recipient of its
// message is being tried — a recipient waiting for a retry does not hold it
// back, one in the middle of an attempt does — and a recipient that fails
// later gets a DSN of its own. Each failed row is bounced exactly once.
func TestQueueBounceWaits(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rows := queueAndClaim(t, f)
	fail := func(r store.QueuedMessage) store.QueueOutcome {
		return store.QueueOutcome{ID: r.ID, Kind: store.OutcomeFailed, Error: "550 no such user",
			DSNStatus: "5.1.1", DSNDiagnostic: "550 5.1.1 no such user", RemoteMTA: "mx." + r.RcptTo[2:]}
	}
	// rows[0] fails for good while rows[1] is still being tried.
	if err := f.st.QueueRecord(ctx, rows[0].Lease, []store.QueueOutcome{fail(rows[0])}); err != nil {
		t.Fatal(err)
	}
	if b, err := f.st.ClaimBounces(ctx, 10, time.Minute); err != nil || len(b) != 0 {
		t.Fatalf("bounce claimed while a recipient is being tried: %+v %v", b, err)
	}
	// rows[1] is deferred: waiting for a retry does not delay the bounce.
	err := f.st.QueueRecord(ctx, rows[1].Lease, []store.QueueOutcome{
		{ID: rows[1].ID, Kind: store.OutcomeDeferred, Next: time.Now().Add(-time.Second), Error: "451 later"},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.st.ClaimBounces(ctx, 10, 300*time.Millisecond)
	if err != nil || len(b) != 1 || b[0].ID != rows[0].ID || b[0].Lease == "" {
		t.Fatalf("bounce claim: %+v %v", b, err)
	}
	if r := b[0]; r.FailedAt == nil || r.DSNStatus != "5.1.1" || r.DSNDiagnostic != "550 5.1.1 no such user" || r.LastError != "550 no such user" || r.RemoteMTA == "" {
		t.Errorf("failed row lacks its DSN fields: %+v", r)
	}
	if b2, _ := f.st.ClaimBounces(ctx, 10, time.Minute); len(b2) != 0 {
		t.Fatalf("bounce claimed twice: %+v", b2)
	}
	// The failed row is not due for delivery, and does not count as due.
	again, err := f.st.ClaimQueued(ctx, 10, time.Minute)
	if err != nil || len(again) != 1 || again[0].ID != rows[1].ID {
		t.Fatalf("claim after a failure: %+v %v", again, err)
	}
	if next, ok, err := f.st.NextQueueAttempt(ctx); err != nil || !ok || time.Until(next) < 50*time.Second {
		t.Errorf("next attempt %v %v %v: a failed row must not make the queue look due", next, ok, err)
	}
	if err := f.st.RetryQueued(ctx, b[0].ID); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("retry of a row being bounced: %v, want ErrInvalid", err)
	}
	// The bouncing worker "crashes": after its lease the row comes back,
	// and the stale lease cannot bounce it.
	time.Sleep(400 * time.Millisecond)
	// rows[1] fails too, in its retry: the next claim has both failures.
	if err := f.st.QueueRecord(ctx, again[0].Lease, []store.QueueOutcome{fail(again[0])}); err != nil {
		t.Fatal(err)
	}
	b3, err := f.st.ClaimBounces(ctx, 10, time.Minute)
	if err != nil || len(b3) != 2 || b3[0].Lease != b3[1].Lease {
		t.Fatalf("bounce not reclaimed after its lease: %+v %v", b3, err)
	}
	if err := f.st.QueueBounce(ctx, []int64{b[0].ID}, b[0].Lease, f.a.ID, nil); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("stale bounce: %v, want ErrLeaseLost", err)
	}
	if err := f.st.QueueBounce(ctx, []int64{b3[0].ID, b3[1].ID}, b3[0].Lease, f.a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if list, _ := f.st.QueueEntries(ctx); len(list) != 0 {
		t.Errorf("queue after the bounce: %+v", list)
	}
}

// TestQueueRetryFailed: retrying a failed row waiting for its DSN makes it
// pending again, with its DSN fields cleared; failing again, it bounces
// with the new error.
func TestQueueRetryFailed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rows := queueAndClaim(t, f)
	err := f.st.QueueRecord(ctx, rows[0].Lease, []store.QueueOutcome{
		{ID: rows[0].ID, Kind: store.OutcomeFailed, Error: "550", DSNStatus: "5.0.0"},
		{ID: rows[1].ID, Kind: store.OutcomeDeferred, Next: time.Now().Add(time.Hour), Error: "451"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.RetryQueued(ctx, rows[0].ID); err != nil {
		t.Fatal(err)
	}
	due, err := f.st.ClaimQueued(ctx, 10, time.Minute)
	if err != nil || len(due) != 1 || due[0].ID != rows[0].ID || due[0].FailedAt != nil || due[0].DSNStatus != "" {
		t.Fatalf("retried failed row: %+v %v", due, err)
	}
	if err := f.st.QueueRecord(ctx, due[0].Lease, []store.QueueOutcome{{ID: due[0].ID, Kind: store.OutcomeFailed, Error: "550 again", DSNStatus: "5.1.1"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DeleteQueued(ctx, rows[1].ID); err != nil {
		t.Fatal(err)
	}
	b, err := f.st.ClaimBounces(ctx, 10, time.Minute)
	if err != nil || len(b) != 1 || b[0].ID != rows[0].ID || b[0].LastError != "550 again" {
		t.Fatalf("bounce after the pending row was deleted: %+v %v", b, err)
	}
}

// TestSubmitChecksLogin: a submission's login is checked in the same round
// trip as the store (one chunk) or in the same transaction (more): one no
// longer valid stores and queues nothing; and RCPT's ResolveRecipientFor
// checks it too, also for an unknown recipient.
func TestSubmitChecksLogin(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.b, "INBOX")
	small := "From: alice@example.org\r\nSubject: q\r\n\r\nbody\r\n"
	large := small + strings.Repeat("x", store.ChunkSize) + "\r\n"
	newLogin := func(t *testing.T, revoke bool) *store.Login {
		t.Helper()
		_, ap, err := f.st.CreateAppPassword(ctx, f.a.ID, "phone")
		if err != nil {
			t.Fatal(err)
		}
		if revoke {
			if err := f.st.RevokeAppPassword(ctx, f.a.ID, ap.ID); err != nil {
				t.Fatal(err)
			}
		}
		return &store.Login{AccountID: f.a.ID, Address: f.a.Address, AppPasswordID: ap.ID}
	}
	for _, tc := range []struct {
		name    string
		body    string
		revoked bool
		local   bool
		remote  bool
		wantErr error
	}{
		{"one chunk, valid", small, false, true, true, nil},
		{"one chunk, revoked", small, true, true, true, store.ErrAccountGone},
		{"one chunk, revoked, remote only", small, true, false, true, store.ErrAccountGone},
		{"one chunk, revoked, local only", small, true, true, false, store.ErrAccountGone},
		{"several chunks, valid", large, false, true, true, nil},
		{"several chunks, revoked", large, true, true, true, store.ErrAccountGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			login := newLogin(t, tc.revoked)
			msg, err := store.Spool(strings.NewReader(tc.body+tc.name), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer msg.Close()
			var targets []store.Target
			var remote []store.Outbound
			if tc.local {
				targets = []store.Target{{AccountID: f.b.ID, MailboxID: inbox.ID}}
			}
			if tc.remote {
				remote = []store.Outbound{{AccountID: f.a.ID, MailFrom: "alice@example.org", RcptTo: "x@remote.test"}}
			}
			before, _ := f.st.MailboxByID(ctx, f.b.ID, inbox.ID)
			queued, _ := f.st.QueueEntries(ctx)
			contents, _ := f.st.CountMessageContents(ctx)
			_, err = f.st.Submit(ctx, login, msg, targets, remote)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("submit: %v, want %v", err, tc.wantErr)
			}
			after, _ := f.st.MailboxByID(ctx, f.b.ID, inbox.ID)
			queuedAfter, _ := f.st.QueueEntries(ctx)
			contentsAfter, _ := f.st.CountMessageContents(ctx)
			grew := after.Messages-before.Messages > 0 || len(queuedAfter) > len(queued) || contentsAfter > contents
			if grew != (tc.wantErr == nil) {
				t.Fatalf("stored or queued: %v (INBOX %d → %d, queue %d → %d, contents %d → %d)", grew,
					before.Messages, after.Messages, len(queued), len(queuedAfter), contents, contentsAfter)
			}
		})
	}

	valid, revoked := newLogin(t, false), newLogin(t, true)
	for _, tc := range []struct {
		name    string
		login   *store.Login
		rcpt    string
		wantErr error
	}{
		{"valid, known", valid, "bob@example.org", nil},
		{"valid, unknown", valid, "nobody@example.org", store.ErrNotFound},
		{"revoked, known", revoked, "bob@example.org", store.ErrAccountGone},
		{"revoked, unknown", revoked, "nobody@example.org", store.ErrAccountGone},
	} {
		t.Run("resolve recipient, "+tc.name, func(t *testing.T) {
			acc, err := f.st.ResolveRecipientFor(ctx, tc.login, tc.rcpt)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("resolve: %v, want %v", err, tc.wantErr)
			}
			if err == nil && acc.ID != f.b.ID {
				t.Fatalf("resolved to account %d, want %d", acc.ID, f.b.ID)
			}
		})
	}
	if err := f.st.SetDisabled(ctx, f.a.Address, true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.ResolveRecipientFor(ctx, valid, "bob@example.org"); !errors.Is(err, store.ErrAccountGone) {
		t.Fatalf("resolve for a disabled account's login: %v, want ErrAccountGone", err)
	}
}
