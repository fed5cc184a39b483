package imapd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/internal/rspamd/rspamdtest"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestJunkLearning: over IMAP, a MOVE into Junk makes rspamd learn the
// message as spam for that user, a MOVE out of Junk as ham, through the
// store's queue and the learner (internal/rspamd); a move into Trash
// teaches nothing, and a message is learned again only when the user
// changed their mind. (It lived in smtpd, whose MX only delivered the two
// messages.)
func TestJunkLearning(t *testing.T) {
	srv := rspamdtest.Start(t)
	client, err := rspamd.New(rspamd.Config{URL: srv.URL, ControllerURL: srv.ControllerURL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The IMAP side runs on a store with learning on, as serve sets it
	// up when rspamd is configured.
	lst, err := store.Open(ctx, storetest.NewURL(t), store.Options{LearnJunk: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lst.Close)
	e := newEnv(t, envOptions{st: lst})
	if _, err := lst.CreateDomain(ctx, "example.org", "mailstack", []byte("k")); err != nil {
		t.Fatal(err)
	}
	bob, bobPass, inbox := newAccount(t, lst, "bob@example.org", "main-password", "test")
	learner := rspamd.NewLearner(rspamd.LearnerConfig{Store: lst, Client: client, Log: testLogger(t)})
	done := make(chan struct{})
	go func() { defer close(done); learner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// An ordinary message in INBOX, another in Junk (rspamd learns
	// nothing from GTUBE, so that cannot serve here).
	junk, err := lst.MailboxByName(ctx, bob.ID, "Junk")
	if err != nil {
		t.Fatal(err)
	}
	for i, box := range []int64{inbox, junk.ID} {
		msg := crlf(fmt.Sprintf("From: Anna <a@spf-pass.example>\nTo: bob@example.org\nSubject: notes %d\nMessage-ID: <learn-%d@spf-pass.example>\n\n%s\n", i, i, rspamdtest.Prose))
		if _, err := lst.Append(ctx, bob.ID, box, strings.NewReader(msg), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}

	ic := e.dial(nil)
	defer ic.Close()
	if err := ic.Login("bob@example.org", bobPass).Wait(); err != nil {
		t.Fatal(err)
	}
	move := func(from, to string) {
		t.Helper()
		if _, err := ic.Select(from, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.Move(imap.SeqSetNum(1), to).Wait(); err != nil {
			t.Fatalf("MOVE %s to %s: %v", from, to, err)
		}
	}
	waitLearned := func(spam, ham int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			s, h := srv.Learned(t, "bob@example.org")
			if s == spam && h == ham {
				return
			}
			if time.Now().After(deadline) {
				states, _ := lst.LearnStates(ctx, bob.ID)
				t.Fatalf("rspamd learned %d spam, %d ham for bob; want %d, %d (queue: %+v)", s, h, spam, ham, states)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	copyTo := func(from string, seq uint32, to string) {
		t.Helper()
		if _, err := ic.Select(from, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.Copy(imap.SeqSetNum(seq), to).Wait(); err != nil {
			t.Fatalf("COPY %s to %s: %v", from, to, err)
		}
	}

	// A is in INBOX, B in Junk.
	move("INBOX", "Junk") // A: spam. Junk: B, A
	waitLearned(1, 0)
	if _, err := ic.Select("Junk", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.Move(imap.SeqSetNum(2), "INBOX").Wait(); err != nil { // A: ham after all (relearned)
		t.Fatal(err)
	}
	waitLearned(0, 1)
	move("Junk", "Trash") // B, deleted: teaches nothing (not ham)
	move("INBOX", "Junk") // A: spam again, relearned
	waitLearned(1, 0)
	copyTo("Trash", 1, "Junk") // B: spam. Junk: A, B
	waitLearned(2, 0)
	// Said again, nothing new: A into Junk once more (via Trash), B out to
	// Trash and back.
	move("Junk", "Trash")      // A. Trash: B, A
	copyTo("Trash", 2, "Junk") // A
	states, err := lst.LearnStates(ctx, bob.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 {
		t.Fatalf("queue rows %+v, want one per message", states)
	}
	for _, st := range states {
		if !st.Done || st.LastError != "" || !st.Spam || st.Learned == nil || !*st.Learned {
			t.Errorf("queue row %+v: want learned as spam, nothing pending", st)
		}
	}
	if s, h := srv.Learned(t, "bob@example.org"); s != 2 || h != 0 {
		t.Errorf("rspamd learned %d spam, %d ham for bob; want 2, 0", s, h)
	}
	if s, h := srv.Learned(t, "alice@example.org"); s != 0 || h != 0 {
		t.Errorf("alice's statistics changed: %d spam, %d ham", s, h)
	}
}
