package storetest

import (
	"context"
	"io"
	"testing"

	"github.com/mailstack/mailstack/store"
)

// Mailbox returns the raw messages of the account's mailbox name, in UID
// order, failing the test on any error.
func Mailbox(t testing.TB, st *store.Store, accountID int64, name string) []string {
	t.Helper()
	ctx := context.Background()
	mb, err := st.MailboxByName(ctx, accountID, name)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	err = st.FetchMeta(ctx, accountID, mb.ID, []store.UIDRange{{Start: 1, Stop: 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		ids = append(ids, m.MessageID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, id := range ids {
		r, err := st.OpenBody(ctx, accountID, id, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// QueueLen returns how many rows the outbound queue holds.
func QueueLen(t testing.TB, st *store.Store) int {
	t.Helper()
	q, err := st.QueueEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(q)
}
