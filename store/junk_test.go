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

// learnState returns alice's one junk_learn row, or nil if none.
func learnState(t *testing.T, f *fixture) *store.LearnState {
	t.Helper()
	states, err := f.st.LearnStates(context.Background(), f.a.ID)
	if err != nil {
		t.Fatal(err)
	}
	switch len(states) {
	case 0:
		return nil
	case 1:
		return &states[0]
	}
	t.Fatalf("%d rows for one message: %+v", len(states), states)
	return nil
}

// TestJunkLearnQueue: which MOVE and COPY queue learning, and that a
// message is queued again only when the user's verdict changes.
func TestJunkLearnQueue(t *testing.T) {
	ctx := context.Background()
	f := newFixtureOpts(t, store.Options{LearnJunk: true})
	res, err := f.st.Append(ctx, f.a.ID, f.mailbox(t, f.a, "INBOX").ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	where := "INBOX"
	move := func(to string, copyOnly bool) {
		t.Helper()
		src, dst := f.mailbox(t, f.a, where).ID, f.mailbox(t, f.a, to).ID
		op := f.st.Move
		if copyOnly {
			op = f.st.Copy
		}
		if _, err := op(ctx, f.a.ID, src, []store.UIDRange{{Start: 1, Stop: 0}}, dst); err != nil {
			t.Fatal(err)
		}
		if !copyOnly {
			where = to
		}
	}
	// learn runs the learner's part: claim, and record success.
	learn := func() {
		t.Helper()
		jobs, err := f.st.ClaimLearn(ctx, 10, time.Minute)
		if err != nil || len(jobs) != 1 {
			t.Fatalf("claim: %+v %v", jobs, err)
		}
		j := jobs[0]
		if j.AccountID != f.a.ID || j.Address != "alice@example.org" || j.MessageID != res.MessageID || j.Size == 0 {
			t.Fatalf("job %+v", j)
		}
		if err := f.st.RecordLearn(ctx, j.Lease, []store.LearnOutcome{{AccountID: j.AccountID, MessageID: j.MessageID, Done: true}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		name     string
		to       string
		copyOnly bool
		learn    bool // run the learner afterwards
		// the row afterwards: none, or pending/learned as spam or ham
		wantRow  bool
		wantSpam bool
		wantDone bool
	}{
		{name: "INBOX to Archive teaches nothing", to: "Archive"},
		{name: "Archive to Trash teaches nothing", to: "Trash"},
		{name: "Trash to Junk is spam", to: "Junk", wantRow: true, wantSpam: true},
		{name: "learned", learn: true, wantRow: true, wantSpam: true, wantDone: true},
		{name: "Junk to Trash teaches nothing", to: "Trash", wantRow: true, wantSpam: true, wantDone: true},
		{name: "COPY back into Junk: learned already", to: "Junk", copyOnly: true, wantRow: true, wantSpam: true, wantDone: true},
		{name: "Trash to Junk again: learned already", to: "Junk", wantRow: true, wantSpam: true, wantDone: true},
		{name: "Junk to INBOX is ham", to: "INBOX", wantRow: true, wantSpam: false},
		{name: "back to Junk before learning: spam, as learned", to: "Junk", wantRow: true, wantSpam: true, wantDone: true},
		{name: "COPY to Archive is ham", to: "Archive", copyOnly: true, wantRow: true, wantSpam: false},
		{name: "ham learned", learn: true, wantRow: true, wantSpam: false, wantDone: true},
	} {
		if step.to != "" {
			move(step.to, step.copyOnly)
		}
		if step.learn {
			learn()
		}
		st := learnState(t, f)
		switch {
		case !step.wantRow && st != nil:
			t.Fatalf("%s: row %+v, want none", step.name, st)
		case !step.wantRow:
		case st == nil:
			t.Fatalf("%s: no row", step.name)
		case st.Spam != step.wantSpam || st.Done != step.wantDone:
			t.Fatalf("%s: row %+v, want spam %v done %v", step.name, st, step.wantSpam, step.wantDone)
		}
	}
	if bob, _ := f.st.LearnStates(ctx, f.b.ID); len(bob) != 0 {
		t.Errorf("bob has rows: %+v", bob)
	}
}

// TestJunkLearnOff: without Options.LearnJunk nothing is queued.
func TestJunkLearnOff(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.st.Append(ctx, f.a.ID, f.mailbox(t, f.a, "INBOX").ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Move(ctx, f.a.ID, f.mailbox(t, f.a, "INBOX").ID, []store.UIDRange{{Start: 1, Stop: 0}}, f.mailbox(t, f.a, "Junk").ID); err != nil {
		t.Fatal(err)
	}
	if st := learnState(t, f); st != nil {
		t.Fatalf("row %+v with learning off", st)
	}
}

// TestJunkLearnKeepsContent: a message expunged before it was learned
// keeps its content until then; a failed attempt is due again later, and a
// lease taken over cannot record.
func TestJunkLearnKeepsContent(t *testing.T) {
	ctx := context.Background()
	f := newFixtureOpts(t, store.Options{LearnJunk: true})
	junk := f.mailbox(t, f.a, "Junk").ID
	if _, err := f.st.Append(ctx, f.a.ID, f.mailbox(t, f.a, "INBOX").ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Move(ctx, f.a.ID, f.mailbox(t, f.a, "INBOX").ID, []store.UIDRange{{Start: 1, Stop: 0}}, junk); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Expunge(ctx, f.a.ID, junk, []store.UIDRange{{Start: 1, Stop: 0}}); err != nil {
		t.Fatal(err)
	}
	if n, err := f.st.CollectGarbage(ctx, 0); err != nil || n != 0 {
		t.Fatalf("collected %d contents (%v) while learning is pending", n, err)
	}

	// A crashed learner's lease runs out; the next claim takes the row.
	jobs, err := f.st.ClaimLearn(ctx, 10, 200*time.Millisecond)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %+v %v", jobs, err)
	}
	if again, _ := f.st.ClaimLearn(ctx, 10, time.Minute); len(again) != 0 {
		t.Fatalf("claimed twice: %+v", again)
	}
	time.Sleep(300 * time.Millisecond)
	jobs2, err := f.st.ClaimLearn(ctx, 10, time.Minute)
	if err != nil || len(jobs2) != 1 || jobs2[0].Attempts != 2 {
		t.Fatalf("claim after the lease: %+v %v", jobs2, err)
	}
	body, err := io.ReadAll(f.st.LearnBody(ctx, &jobs2[0]))
	if err != nil || string(body) != testMessage(1) {
		t.Fatalf("body %q %v", body, err)
	}
	j := jobs2[0]
	err = f.st.RecordLearn(ctx, jobs[0].Lease, []store.LearnOutcome{{AccountID: j.AccountID, MessageID: j.MessageID, Done: true}})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("record under the old lease: %v", err)
	}
	// rspamd was down: due again later, content still kept.
	err = f.st.RecordLearn(ctx, j.Lease, []store.LearnOutcome{{AccountID: j.AccountID, MessageID: j.MessageID, Next: time.Now().Add(time.Hour), Error: "down"}})
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := f.st.ClaimLearn(ctx, 10, time.Minute); len(again) != 0 {
		t.Fatalf("deferred row claimed at once: %+v", again)
	}
	if next, ok, err := f.st.NextLearnAttempt(ctx); err != nil || !ok || time.Until(next) < 50*time.Minute {
		t.Fatalf("next attempt %v %v %v", next, ok, err)
	}
	if n, err := f.st.LearnBacklog(ctx); err != nil || n != 1 {
		t.Fatalf("backlog %d %v", n, err)
	}
	if n, _ := f.st.CollectGarbage(ctx, 0); n != 0 {
		t.Fatalf("collected %d contents while learning is deferred", n)
	}
}
