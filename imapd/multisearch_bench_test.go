package imapd

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

// MULTISEARCH over an account of multiBenchMailboxes mailboxes of
// multiBenchPerMailbox messages each (BenchmarkIMAP's generator, made
// distinct per mailbox: 30 % unseen, 5 % flagged), text indexed, from the
// authenticated state. Run with
//
//	go test -run '^$' -bench MultiSearch -benchtime 20x ./imapd/
const (
	multiBenchMailboxes  = 20
	multiBenchPerMailbox = 1_000
)

func BenchmarkMultiSearch(b *testing.B) {
	env := newBenchEnvWith(b, multiBenchPerMailbox, benchMessage, false,
		func(ctx context.Context, st *store.Store, _ *pgx.Conn) {
			acc, err := st.AccountByAddress(ctx, "bench@example.org")
			if err != nil {
				b.Fatal(err)
			}
			for i := 1; i < multiBenchMailboxes; i++ {
				mb, err := st.CreateMailbox(ctx, acc.ID, fmt.Sprintf("Folders/F%02d", i), "")
				if err != nil {
					b.Fatal(err)
				}
				// A header of its own per mailbox, or the store would keep
				// one content for all the mailboxes' copies.
				folder := func(r *rand.Rand, i int, date time.Time) string {
					return fmt.Sprintf("X-Folder: %d\r\n", mb.ID) + benchMessage(r, i, date)
				}
				if _, err := seedMailboxWith(ctx, st, acc.ID, mb.ID, multiBenchPerMailbox, folder); err != nil {
					b.Fatal(err)
				}
			}
			indexInParallel(b, ctx, st)
		})
	// The store's two ways, in process: one SearchMailboxes call, and
	// Search mailbox by mailbox (what ESEARCH would cost without it).
	ctx := context.Background()
	mbs, err := env.st.Mailboxes(ctx, env.accountID)
	if err != nil {
		b.Fatal(err)
	}
	var ids []int64
	for _, mb := range mbs {
		if mb.Messages > 0 {
			ids = append(ids, mb.ID)
		}
	}
	for _, sc := range []struct {
		name string
		c    store.SearchCriteria
	}{
		{"Unseen", store.SearchCriteria{NotFlag: []string{store.FlagSeen}}},
		{"Body", store.SearchCriteria{Body: []string{"budget"}}},
	} {
		b.Run("Store"+sc.name+"Batch", func(b *testing.B) {
			for b.Loop() {
				if _, err := env.st.SearchMailboxes(ctx, env.accountID, ids, &sc.c); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Store"+sc.name+"PerMailbox", func(b *testing.B) {
			for b.Loop() {
				for _, id := range ids {
					if _, err := env.st.Search(ctx, env.accountID, id, &sc.c); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}

	run := env.lineClient(b)
	for _, bc := range []struct{ name, cmd string }{
		{"PersonalUnseenCount", "ESEARCH IN (personal) RETURN (COUNT) UNSEEN"},
		{"PersonalFlaggedAll", "ESEARCH IN (personal) FLAGGED"},
		{"SubtreeSubject", "ESEARCH IN (subtree Folders) RETURN (COUNT) SUBJECT invoice"},
		{"PersonalBody", "ESEARCH IN (personal) RETURN (COUNT) BODY budget"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				n := 0
				run("c", bc.cmd, func(line []byte) {
					if bytes.HasPrefix(line, []byte("* ESEARCH")) {
						n++
					}
				})
				if n < multiBenchMailboxes-1 {
					b.Fatalf("%s: %d ESEARCH responses", bc.cmd, n)
				}
			}
		})
	}
}
