package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/internal/mimeindex"
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

// TestSpooledPrepend: a spooled message with trace fields prepended is
// stored exactly as the whole message spooled from scratch would be: the
// same bytes, size, SHA-256 (so one stored content), header and index
// (offsets, sizes, envelope, body structure), also where Prepend must
// index again, and for a message spooled to a file and stored in chunks.
func TestSpooledPrepend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	bobInbox := f.mailbox(t, f.b, "INBOX")
	trace := "Received: from client.example ([192.0.2.1])\r\n\tby mx.example.org (mailstack) with ESMTPS id 1;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=a@example.com\r\n"
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n", 30000) // 2.3 MB
	for _, tc := range []struct{ name, pre, msg string }{
		{"plain", trace, "From: a@example.com\r\nTo: alice@example.org\r\nSubject: plain\r\n\r\nHello\r\n"},
		{"multipart", trace, "From: a@example.com\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n--b--\r\n"},
		{"nested message/rfc822", trace, "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\r\nsee below\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: in@example.net\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naMOk\r\n--i--\r\n--o--\r\n"},
		{"no final newline", trace, "From: a@example.com\r\nSubject: cut\r\n\r\nthe end"},
		{"bare LF", trace, "From: a@example.com\nSubject: lf\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\nbody\n--z--\n"},
		{"submission's Message-ID and Date", "Received: by mx.example.org;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1.2@mx.example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
			"From: alice@example.org\r\nTo: b@example.net\r\nSubject: no id\r\n\r\nhi\r\n"},
		{"DKIM signature", "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=mail;\r\n\th=from:to; bh=x; b=y\r\n", "From: alice@example.org\r\nTo: b@example.net\r\n\r\nsigned\r\n"},
		{"continuation first (indexed again)", trace, " folded\r\nSubject: x\r\n\r\nbody\r\n"},
		{"Content-Type prepended (indexed again)", "Content-Type: text/html\r\n", "Subject: x\r\n\r\n<p>body</p>\r\n"},
		{"spooled to a file, stored in chunks", trace, "From: a@example.com\r\nSubject: big\r\n\r\n" + big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := store.Spool(strings.NewReader(tc.pre+tc.msg), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			got, err := store.Spool(strings.NewReader(tc.msg), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			if err := got.Prepend([]byte(tc.pre)); err != nil {
				t.Fatal(err)
			}
			full := tc.pre + tc.msg
			if got.Size != want.Size || got.SHA256 != want.SHA256 {
				t.Errorf("size %d sha %x, want %d %x", got.Size, got.SHA256, want.Size, want.SHA256)
			}
			if g, w := structureJSON(t, got.Structure), structureJSON(t, want.Structure); g != w {
				t.Errorf("index\n got %s\nwant %s", g, w)
			}
			if b, err := io.ReadAll(got.Reader()); err != nil || string(b) != full {
				t.Errorf("Reader: %d bytes (%v), want %d", len(b), err, len(full))
			}
			// ReaderAt across the seam between the fields and the rest.
			for _, off := range []int{0, len(tc.pre) - 5, len(tc.pre), len(full) - 3} {
				b := make([]byte, min(10, len(full)-off))
				if n, err := got.ReaderAt().ReadAt(b, int64(off)); n != len(b) || string(b) != full[off:off+len(b)] {
					t.Errorf("ReadAt(%d) = %q, %v; want %q", off, b[:n], err, full[off:off+len(b)])
				}
			}
			gh, err := got.Header()
			if err != nil {
				t.Fatal(err)
			}
			if wh, _ := want.Header(); !bytes.Equal(gh, wh) {
				t.Errorf("Header %q, want %q", gh, wh)
			}

			// Stored: what is read back is the message from scratch, and
			// the scratch copy delivered to bob is the same content.
			res, err := f.st.Deliver(ctx, got, []store.Target{{AccountID: f.a.ID, MailboxID: inbox.ID}})
			if err != nil {
				t.Fatal(err)
			}
			var meta store.MessageMeta
			err = f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: res[0].UID, Stop: res[0].UID}},
				store.FetchOptions{Structure: true, Header: true}, func(m *store.MessageMeta) error {
					meta = *m
					meta.Header = bytes.Clone(m.Header)
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if g, w := structureJSON(t, meta.Structure), structureJSON(t, want.Structure); g != w {
				t.Errorf("stored index\n got %s\nwant %s", g, w)
			}
			if wh, _ := want.Header(); !bytes.Equal(meta.Header, wh) || meta.Size != want.Size {
				t.Errorf("stored header %q size %d", meta.Header, meta.Size)
			}
			body, err := io.ReadAll(f.st.OpenRange(ctx, f.a.ID, meta.MessageID, 0, meta.Size))
			if err != nil || string(body) != full {
				t.Errorf("stored body: %d bytes (%v), want %d", len(body), err, len(full))
			}
			res2, err := f.st.Deliver(ctx, want, []store.Target{{AccountID: f.b.ID, MailboxID: bobInbox.ID}})
			if err != nil {
				t.Fatal(err)
			}
			if res2[0].MessageID != res[0].MessageID {
				t.Errorf("from scratch stored as content %d, prepended as %d", res2[0].MessageID, res[0].MessageID)
			}
		})
	}
}

func structureJSON(t *testing.T, m *mimeindex.Message) string {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchmarkSpoolTrace: what the MX does with a received message once its
// checks are done, before (spool the trace fields and the message again)
// and now (Prepend), for a small message and one of 200 KB.
func BenchmarkSpoolTrace(b *testing.B) {
	trace := []byte("Received: from client.example ([192.0.2.1])\r\n\tby mx.example.org (mailstack) with ESMTPS id 1;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=a@example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com\r\n")
	for _, size := range []int{4 << 10, 200 << 10} {
		msg := "From: a@example.com\r\nTo: alice@example.org\r\nSubject: bench\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n" +
			strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef012345678\r\n", size/76) + "--b--\r\n"
		// Each way returns the message as stored, trace fields in front.
		ways := []struct {
			name string
			add  func(m *store.Spooled) (*store.Spooled, error)
		}{
			{"respool", func(m *store.Spooled) (*store.Spooled, error) {
				defer m.Close()
				return store.Spool(io.MultiReader(bytes.NewReader(trace), m.Reader()), 0)
			}},
			{"prepend", func(m *store.Spooled) (*store.Spooled, error) { return m, m.Prepend(trace) }},
		}
		for _, way := range ways {
			b.Run(fmt.Sprintf("%dKB/%s", size>>10, way.name), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					m, err := store.Spool(strings.NewReader(msg), 0)
					if err == nil {
						m, err = way.add(m)
					}
					if err != nil {
						b.Fatal(err)
					}
					m.Close()
				}
			})
		}
	}
}
