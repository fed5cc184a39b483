package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestQueueCommands(t *testing.T) {
	url := storetest.NewURL(t)
	db := "--database-url=" + url
	ctx := context.Background()
	st := storetest.Open(t, url)
	if _, err := st.CreateDomain(ctx, "example.org", "s", []byte("k")); err != nil {
		t.Fatal(err)
	}
	acc, err := st.CreateAccount(ctx, "alice@example.org", "pw", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := store.Spool(strings.NewReader("From: alice@example.org\r\n\r\nx\r\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer msg.Close()
	if _, err := st.Submit(ctx, nil, msg, nil, []store.Outbound{{AccountID: acc.ID, MailFrom: "alice@example.org", RcptTo: "carol@remote.test"}}); err != nil {
		t.Fatal(err)
	}
	q, err := st.QueueEntries(ctx)
	if err != nil || len(q) != 1 {
		t.Fatal(q, err)
	}
	id := fmt.Sprint(q[0].ID)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"queue", "list", db}, "carol@remote.test"},
		{[]string{"queue", "retry", db, id}, "due now"},
		{[]string{"queue", "delete", db, id}, "deleted"},
		{[]string{"queue", "list", db}, "empty"},
	} {
		out, err := mailstack(t, "", tc.args...)
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: %q %v, want %q", tc.args[:2], out, err, tc.want)
		}
	}
	if _, err := mailstack(t, "", "queue", "delete", db, id); err == nil {
		t.Error("deleting a missing entry succeeded")
	}
}
