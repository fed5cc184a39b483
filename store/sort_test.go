package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// sortSubjects are stored by every delivery path; their base subjects sort
// as sortSubjectOrder (UIDs).
var sortSubjects = []string{
	"Subject: Re: [list] Banana\n",
	"Subject: =?utf-8?q?=C3=A4pfel?=\n", // "äpfel": A, U+0308, ... sorts after "APPLE"
	"Subject: apple (fwd)\n",
	"Subject: [Fwd: Cherry]\n",
	"", // none: the empty string, first
}

var sortSubjectOrder = []uint32{5, 3, 2, 1, 4}

// sortSentDate is the Date: field of UID 2: Jan 2 where it was written,
// Jan 3 in UTC. SENTON compares the first.
const sortSentDate = "Date: Tue, 2 Jan 2024 23:30:00 -0500\n"

// checkSentOn checks the sent-date key of sortTestMessage's messages in
// mailbox: only UID 2 was sent on Jan 2; the others have no Date: field
// and are compared by their INTERNALDATE, on or after today (the date the
// test began on, in UTC).
func checkSentOn(t *testing.T, st *store.Store, accountID, mailboxID int64, today time.Time, what string) {
	t.Helper()
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	for _, tc := range []struct {
		c    store.SearchCriteria
		want []uint32
	}{
		{store.SearchCriteria{SentOn: day(2024, 1, 2)}, []uint32{2}},
		{store.SearchCriteria{SentOn: day(2024, 1, 3)}, nil},
		{store.SearchCriteria{SentBefore: day(2024, 1, 3)}, []uint32{2}},
		{store.SearchCriteria{SentSince: day(2024, 1, 3)}, []uint32{1, 3, 4, 5}},
		{store.SearchCriteria{SentSince: today}, []uint32{1, 3, 4, 5}},
	} {
		got, err := st.Search(context.Background(), accountID, mailboxID, &tc.c)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: search %+v = %v %v, want %v", what, tc.c, got, err, tc.want)
		}
	}
}

func sortTestMessage(i int, big bool) string {
	date := ""
	if i == 1 {
		date = sortSentDate
	}
	m := crlf("From: a@example.com\n" + sortSubjects[i] + date + "Message-ID: <" + string(rune('a'+i)) + "@t>\n\nbody\n")
	if big {
		m += strings.Repeat("x", store.ChunkSize+10) + "\r\n"
	}
	return m
}

// TestSortKeysEveryPath: the keys are stored by Deliver in one round
// trip, by Deliver's transaction (a message over one chunk) and by
// BulkAppend, and read back the same; Sort orders by them and keeps
// accounts apart.
func TestSortKeysEveryPath(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	today := time.Now().UTC()
	var want []store.ThreadMessage
	for _, path := range []string{"OneTrip", "Tx", "Bulk"} {
		mb, err := f.st.CreateMailbox(ctx, f.a.ID, path, "")
		if err != nil {
			t.Fatal(err)
		}
		var spooled []*store.Spooled
		for i := range sortSubjects {
			sp, err := store.Spool(strings.NewReader(sortTestMessage(i, path == "Tx")), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			if path == "Bulk" {
				spooled = append(spooled, sp)
				continue
			}
			if _, err := f.st.Deliver(ctx, sp, []store.Target{{AccountID: f.a.ID, MailboxID: mb.ID}}); err != nil {
				t.Fatal(err)
			}
		}
		if path == "Bulk" {
			if _, err := f.st.BulkAppend(ctx, f.a.ID, mb.ID, spooled, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		got, err := f.st.Sort(ctx, f.a.ID, mb.ID, nil, []store.SortCriterion{{Key: store.SortSubject}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, sortSubjectOrder) {
			t.Errorf("%s: SORT (SUBJECT) = %v, want %v", path, got, sortSubjectOrder)
		}
		checkSentOn(t, f.st, f.a.ID, mb.ID, today, path)
		msgs, err := f.st.ThreadMessages(ctx, f.a.ID, mb.ID, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		for i := range msgs {
			msgs[i].Date = time.Time{} // the internal date: now
		}
		if want == nil {
			want = msgs
			if len(msgs) != 5 || msgs[0].Subject != "BANANA" || !msgs[0].Reply || msgs[0].MessageID != "a@t" || !msgs[3].Reply || msgs[3].Subject != "CHERRY" {
				t.Errorf("thread keys %+v", msgs)
			}
		} else if !slices.Equal(msgs, want) {
			t.Errorf("%s: thread keys %+v, want %+v", path, msgs, want)
		}
		if _, err := f.st.Sort(ctx, f.b.ID, mb.ID, nil, []store.SortCriterion{{Key: store.SortSubject}}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("another account's mailbox: %v", err)
		}
	}
}

// A Date: field of year 0 (which parses; PostgreSQL's date has no year 0)
// is delivered by every path, with no sent day: SENTON compares its
// INTERNALDATE.
func TestSentDayYearZero(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	msg := crlf("Date: Sun, 2 Jan 0000 10:00:00 +0000\nSubject: old\n\nbody\n")
	internal := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, path := range []string{"OneTrip", "Tx", "Bulk"} {
		mb, err := f.st.CreateMailbox(ctx, f.a.ID, path, "")
		if err != nil {
			t.Fatal(err)
		}
		m := msg
		if path == "Tx" {
			m += strings.Repeat("x", store.ChunkSize+10) + "\r\n"
		}
		sp, err := store.Spool(strings.NewReader(m), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		if path == "Bulk" {
			_, err = f.st.BulkAppend(ctx, f.a.ID, mb.ID, []*store.Spooled{sp}, nil, []time.Time{internal})
		} else {
			_, err = f.st.Deliver(ctx, sp, []store.Target{{AccountID: f.a.ID, MailboxID: mb.ID, InternalDate: internal}})
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		got, err := f.st.Search(ctx, f.a.ID, mb.ID, &store.SearchCriteria{SentOn: internal})
		if err != nil || !slices.Equal(got, []uint32{1}) {
			t.Errorf("%s: SENTON its internal date found %v %v, want [1]", path, got, err)
		}
	}
}

// TestSortKeysBackfill: contents stored before migration 13 (no keys,
// their ids in message_keys_backfill) get their keys when the store
// migrates, over several batches; so do contents whose keys lack the sent
// day added by migration 19, and those an older process stored since.
func TestSortKeysBackfill(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewURL(t)
	st := storetest.Open(t, url)
	if _, err := st.CreateDomain(ctx, "example.org", "mail", []byte("key")); err != nil {
		t.Fatal(err)
	}
	acc, err := st.CreateAccount(ctx, "a@example.org", "main-password", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := st.MailboxByName(ctx, acc.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	for i := range sortSubjects {
		if _, err := st.Append(ctx, acc.ID, inbox.ID, strings.NewReader(sortTestMessage(i, false)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// More than one batch of the backfill.
	for i := range 1100 {
		msg := crlf("Subject: filler\nMessage-ID: <" + strings.Repeat("f", 1+i%7) + string(rune('0'+i%10)) + "x" + strings.Repeat("y", i/10) + "@t>\n\nx\n")
		if _, err := st.Append(ctx, acc.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// Two Date: fields: the last counts.
	twice := crlf("Date: Fri, 5 Jan 2024 10:00:00 +0000\nDate: Sat, 6 Jan 2024 10:00:00 +0000\nSubject: twice\n\nx\n")
	res, err := st.Append(ctx, acc.ID, inbox.ID, strings.NewReader(twice), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := st.ThreadMessages(ctx, acc.ID, inbox.ID, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	jan2 := &store.SearchCriteria{SentOn: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)}
	jan6 := &store.SearchCriteria{SentOn: time.Date(2024, 1, 6, 0, 0, 0, 0, time.UTC)}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Its stored envelope as an older mimeindex made it: the first Date.
	var raw []byte
	if err := conn.QueryRow(ctx, `SELECT m.structure FROM messages m JOIN mailbox_messages mm ON mm.message_id = m.id
		WHERE mm.mailbox_id = $1 AND mm.uid = $2`, inbox.ID, res.UID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var old mimeindex.Message
	if err := json.Unmarshal(raw, &old); err != nil {
		t.Fatal(err)
	}
	old.Envelope.Date = "Fri, 5 Jan 2024 10:00:00 +0000"
	if raw, err = json.Marshal(&old); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE messages m SET structure = $1 FROM mailbox_messages mm
		WHERE mm.message_id = m.id AND mm.mailbox_id = $2 AND mm.uid = $3`, raw, inbox.ID, res.UID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, sql string }{
		{"migration 13", `DELETE FROM message_keys;
			INSERT INTO message_keys_backfill SELECT 0, max(id) FROM messages`},
		{"migration 19", `UPDATE message_keys SET sent_day = NULL;
			INSERT INTO message_keys_backfill SELECT 0, max(id) FROM messages`},
		// Keys as a process of an older mailstack writes them after
		// migration 19: no sent day, and no backfill planned.
		{"older process", `UPDATE message_keys SET sent_day = NULL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// As the migration leaves a database that has contents.
			if _, err := conn.Exec(ctx, tc.sql); err != nil {
				t.Fatal(err)
			}
			if got, err := st.Search(ctx, acc.ID, inbox.ID, jan2); err != nil || len(got) != 0 {
				t.Fatalf("before the backfill, SENTON found %v %v: the setup did not take", got, err)
			}
			if err := st.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			after, err := st.ThreadMessages(ctx, acc.ID, inbox.ID, nil, true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(before, after) {
				t.Errorf("after the backfill %+v\nwant %+v", after[:5], before[:5])
			}
			if got, err := st.Search(ctx, acc.ID, inbox.ID, jan2); err != nil || !slices.Equal(got, []uint32{2}) {
				t.Errorf("after the backfill, SENTON found %v %v, want [2]", got, err)
			}
			if got, err := st.Search(ctx, acc.ID, inbox.ID, jan6); err != nil || !slices.Equal(got, []uint32{res.UID}) {
				t.Errorf("after the backfill, SENTON the last Date found %v %v, want [%d]", got, err, res.UID)
			}
			var left int
			if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM message_keys k WHERE k.message_id = m.id))
				+ (SELECT count(*) FROM message_keys_backfill)`).Scan(&left); err != nil || left != 0 {
				t.Errorf("%d contents without keys or backfill rows left (%v)", left, err)
			}
		})
	}
}
