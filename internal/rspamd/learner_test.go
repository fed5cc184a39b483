package rspamd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/internal/rspamd/rspamdtest"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// longBody has words enough for rspamd's classifier to learn from.
const longBody = `Dear customer, we are pleased to announce our annual winter sale with
discounts on every item in the catalogue, from garden furniture and kitchen
appliances to books, toys and clothing for the whole family. Visit our shop
before the end of the month, bring this letter and receive a free gift with
every purchase above fifty euros. Delivery is free within the country.`

// TestLearnerRetries: a message moved into Junk while rspamd is stopped
// is kept in the queue and learned once rspamd is back; nothing is lost.
func TestLearnerRetries(t *testing.T) {
	ctx := context.Background()
	srv := rspamdtest.Start(t)
	st, err := store.Open(ctx, storetest.NewURL(t), store.Options{LearnJunk: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.CreateDomain(ctx, "example.org", "mail", []byte("key")); err != nil {
		t.Fatal(err)
	}
	acc, err := st.CreateAccount(ctx, "carol@example.org", "carol-main-pw", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	box := func(name string) int64 {
		mb, err := st.MailboxByName(ctx, acc.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		return mb.ID
	}
	if _, err := st.Append(ctx, acc.ID, box("INBOX"), strings.NewReader(message("sale", longBody)), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	m := metrics.New(nil)
	l := rspamd.NewLearner(rspamd.LearnerConfig{Store: st, Client: client(t, srv.URL, srv.ControllerURL),
		RetryBase: time.Millisecond, Metrics: m})

	srv.Stop(t)
	if _, err := st.Move(ctx, acc.ID, box("INBOX"), []store.UIDRange{{Start: 1, Stop: 0}}, box("Junk")); err != nil {
		t.Fatal(err)
	}
	if n, err := l.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("run with rspamd stopped: %d %v", n, err)
	}
	states, err := st.LearnStates(ctx, acc.ID)
	if err != nil || len(states) != 1 || states[0].Done || states[0].LastError == "" {
		t.Fatalf("after a failed attempt: %+v %v", states, err)
	}

	srv.Start(t)
	time.Sleep(10 * time.Millisecond) // the retry delay
	if n, err := l.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("run with rspamd back: %d %v", n, err)
	}
	if spam, ham := srv.Learned(t, "carol@example.org"); spam != 1 || ham != 0 {
		t.Fatalf("rspamd learned %d spam, %d ham for carol; want 1, 0", spam, ham)
	}
	states, err = st.LearnStates(ctx, acc.ID)
	if err != nil || len(states) != 1 || !states[0].Done || states[0].LastError != "" || states[0].Attempts != 2 {
		t.Fatalf("after learning: %+v %v", states, err)
	}
	if ok, retry := m.JunkLearned.With("spam", "ok").Value(), m.JunkLearned.With("spam", "retry").Value(); ok != 1 || retry != 1 {
		t.Errorf("metrics: %v ok, %v retry; want 1, 1", ok, retry)
	}
}
