package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

func spool(t testing.TB, raw string) *store.Spooled {
	t.Helper()
	sp, err := store.Spool(strings.NewReader(raw), 0)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func TestBulkAppend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	// One message before the bulk: UIDs continue after it.
	if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(0)), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	before, _, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}

	const n = 2500 // several batches
	big := "From: big@example.com\r\nSubject: big\r\n\r\n" + strings.Repeat("0123456789abcdef", 3*store.ChunkSize/16+5) + "\r\n"
	raws := make([]string, n)
	var msgs []*store.Spooled
	var flags [][]string
	var dates []time.Time
	var wantSize, wantUnseen, wantDeleted int64
	base := time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		raw := testMessage(i + 1)
		switch {
		case i == 10:
			raw = big
		case i == 20 || i == 21:
			raw = testMessage(0) // same content as the message appended above
		}
		raws[i] = raw
		sp := spool(t, raw)
		defer sp.Close()
		msgs = append(msgs, sp)
		var fl []string
		if i%3 != 0 {
			fl = append(fl, `\Seen`)
		} else {
			wantUnseen++
		}
		if i%10 == 0 {
			fl = append(fl, `\Deleted`, "kw1")
			wantDeleted++
		}
		flags = append(flags, fl)
		dates = append(dates, base.Add(time.Duration(i)*time.Minute))
		wantSize += int64(len(raw))
	}
	res, err := f.st.BulkAppend(ctx, f.a.ID, inbox.ID, msgs, flags, dates)
	if err != nil {
		t.Fatal(err)
	}
	if res.FirstUID != before.UIDNext || res.LastUID != before.UIDNext+n-1 || res.ModSeq != before.HighestModSeq+1 ||
		res.UIDValidity != before.UIDValidity {
		t.Fatalf("result %+v; mailbox before: uidnext %d modseq %d", res, before.UIDNext, before.HighestModSeq)
	}
	mb, uids, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != n+1 || mb.Messages != n+1 || mb.UIDNext != res.LastUID+1 || mb.HighestModSeq != res.ModSeq {
		t.Fatalf("after: %d uids, messages %d, uidnext %d, modseq %d", len(uids), mb.Messages, mb.UIDNext, mb.HighestModSeq)
	}
	if mb.Unseen != before.Unseen+wantUnseen || mb.Deleted != wantDeleted || mb.Size != before.Size+wantSize {
		t.Fatalf("counters unseen %d deleted %d size %d; want %d %d %d", mb.Unseen, mb.Deleted, mb.Size,
			before.Unseen+wantUnseen, wantDeleted, before.Size+wantSize)
	}
	// Identical contents are stored once.
	contents, err := f.st.CountMessageContents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if contents != n-1 { // n-2 distinct in the bulk + testMessage(0)
		t.Fatalf("%d contents stored, want %d", contents, n-1)
	}
	// Every message reads back byte for byte, with flags and date.
	i := 0
	err = f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{res.FirstUID, res.LastUID}}, store.FetchOptions{Structure: true},
		func(m *store.MessageMeta) error {
			if m.UID != res.FirstUID+uint32(i) {
				return fmt.Errorf("message %d has UID %d", i, m.UID)
			}
			if !m.InternalDate.Equal(dates[i]) || m.Size != int64(len(raws[i])) || m.ModSeq != res.ModSeq {
				return fmt.Errorf("uid %d: date %v size %d modseq %d", m.UID, m.InternalDate, m.Size, m.ModSeq)
			}
			want := slices.Clone(flags[i])
			slices.Sort(want)
			got := slices.Clone(m.Flags)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("uid %d: flags %v, want %v", m.UID, got, want)
			}
			if i%97 == 0 || i == 10 {
				r, err := f.st.OpenBody(ctx, f.a.ID, m.MessageID, 0, -1)
				if err != nil {
					return err
				}
				body, err := io.ReadAll(r)
				if err != nil {
					return err
				}
				if !bytes.Equal(body, []byte(raws[i])) {
					return fmt.Errorf("uid %d: body differs (%d bytes, want %d)", m.UID, len(body), len(raws[i]))
				}
				if m.Structure.Envelope == nil || m.Structure.Envelope.Subject == "" {
					return fmt.Errorf("uid %d: no envelope", m.UID)
				}
			}
			i++
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if i != n {
		t.Fatalf("fetched %d messages, want %d", i, n)
	}
	// The change feed sees one change with every new message.
	ch, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, before.HighestModSeq)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Updated) != n {
		t.Fatalf("changes since %d: %d updated, want %d", before.HighestModSeq, len(ch.Updated), n)
	}
	// A later append continues the UID sequence.
	r, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(99999)), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != res.LastUID+1 || r.ModSeq != res.ModSeq+1 {
		t.Fatalf("append after bulk: uid %d modseq %d", r.UID, r.ModSeq)
	}
	// Search sees the bulk-loaded messages (and uses their flags).
	got, err := f.st.Search(ctx, f.a.ID, inbox.ID, &store.SearchCriteria{Flag: []string{"KW1", `\Deleted`}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != int(wantDeleted) {
		t.Fatalf("search kw1: %d results, want %d", len(got), wantDeleted)
	}
}

func TestBulkAppendErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	bInbox := f.mailbox(t, f.b, "INBOX")
	sp := spool(t, testMessage(1))
	defer sp.Close()

	// Another account's mailbox.
	if _, err := f.st.BulkAppend(ctx, f.a.ID, bInbox.ID, []*store.Spooled{sp}, nil, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bulk append into another account's mailbox: %v", err)
	}
	// A bad flag aborts everything.
	sp2 := spool(t, testMessage(2))
	defer sp2.Close()
	if _, err := f.st.BulkAppend(ctx, f.a.ID, inbox.ID, []*store.Spooled{sp, sp2}, [][]string{nil, {`\Bogus`}}, nil); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad flag: %v", err)
	}
	// An iterator error aborts everything too.
	calls := 0
	_, err := f.st.BulkAppendFunc(ctx, f.a.ID, inbox.ID, func() (*store.BulkMessage, error) {
		calls++
		if calls > 1500 {
			return nil, errors.New("source broke")
		}
		return &store.BulkMessage{Msg: spool(t, testMessage(calls))}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "source broke") {
		t.Fatalf("iterator error: %v", err)
	}
	mb, uids, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != 0 || mb.Messages != 0 || mb.UIDNext != 1 {
		t.Fatalf("failed bulk appends left %d messages (counter %d, uidnext %d)", len(uids), mb.Messages, mb.UIDNext)
	}
	// Nothing to append is not an error and changes nothing.
	res, err := f.st.BulkAppend(ctx, f.a.ID, inbox.ID, nil, nil, nil)
	if err != nil || res.FirstUID != 0 {
		t.Fatalf("empty bulk: %+v %v", res, err)
	}
	// The quota applies to the whole bulk.
	small, err := f.st.CreateAccount(ctx, "small@example.org", "pw", store.AccountOptions{QuotaBytes: 300})
	if err != nil {
		t.Fatal(err)
	}
	sInbox := f.mailbox(t, small, "INBOX")
	x1, x2 := spool(t, strings.Repeat("x", 200)), spool(t, strings.Repeat("y", 200))
	defer x1.Close()
	defer x2.Close()
	if _, err := f.st.BulkAppend(ctx, small.ID, sInbox.ID, []*store.Spooled{x1, x2}, nil, nil); !errors.Is(err, store.ErrOverQuota) {
		t.Fatalf("over quota: %v", err)
	}
	if _, err := f.st.BulkAppend(ctx, small.ID, sInbox.ID, []*store.Spooled{x1}, nil, nil); err != nil {
		t.Fatalf("within quota: %v", err)
	}
}
