package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// fixture is a store with one domain and two accounts.
type fixture struct {
	st   *store.Store
	url  string // the database, for a direct connection
	a, b *store.Account
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureOpts(t, store.Options{})
}

func newFixtureOpts(t testing.TB, opts store.Options) *fixture {
	t.Helper()
	return newFixtureAt(t, storetest.NewURL(t), opts)
}

// newFixtureAt is newFixture on the (empty or migrated) database at url.
func newFixtureAt(t testing.TB, url string, opts store.Options) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.CreateDomain(ctx, "example.org", "mail", []byte("key")); err != nil {
		t.Fatal(err)
	}
	a, err := st.CreateAccount(ctx, "alice@example.org", "alice-main-pw", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateAccount(ctx, "bob@example.org", "bob-main-pw", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{st: st, url: url, a: a, b: b}
}

func (f *fixture) mailbox(t testing.TB, acc *store.Account, name string) *store.Mailbox {
	t.Helper()
	mb, err := f.st.MailboxByName(context.Background(), acc.ID, name)
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

func testMessage(i int) string {
	return fmt.Sprintf("From: a@example.com\r\nTo: alice@example.org\r\nSubject: test %d\r\nMessage-ID: <%d@example.com>\r\n\r\nHello %d\r\n", i, i, i)
}

func TestDefaultMailboxes(t *testing.T) {
	f := newFixture(t)
	mbs, err := f.st.Mailboxes(context.Background(), f.a.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mb := range mbs {
		got[mb.Name] = mb.SpecialUse
	}
	for _, want := range store.DefaultMailboxes() {
		su, ok := got[want.Name]
		if !ok || su != want.SpecialUse {
			t.Errorf("mailbox %s: got special-use %q (exists %v), want %q", want.Name, su, ok, want.SpecialUse)
		}
	}
}

func TestConcurrentAppend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	results := make(chan *store.AppendResult, workers*each)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(w*1000+i)), 0, nil, time.Time{})
				if err != nil {
					errs <- err
					return
				}
				results <- res
			}
		}()
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Order results by UID: modseq must ascend with UID, both unique.
	var all []*store.AppendResult
	for r := range results {
		all = append(all, r)
	}
	slices.SortFunc(all, func(x, y *store.AppendResult) int { return int(x.UID) - int(y.UID) })
	if len(all) != workers*each {
		t.Fatalf("got %d results, want %d", len(all), workers*each)
	}
	for i := 1; i < len(all); i++ {
		if all[i].UID <= all[i-1].UID || all[i].ModSeq <= all[i-1].ModSeq {
			t.Fatalf("not strictly ascending at %d: uid %d->%d modseq %d->%d", i, all[i-1].UID, all[i].UID, all[i-1].ModSeq, all[i].ModSeq)
		}
	}
	mb, uids, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != workers*each || mb.Messages != int64(workers*each) || mb.Unseen != int64(workers*each) {
		t.Fatalf("mailbox has %d uids, counts messages=%d unseen=%d; want %d", len(uids), mb.Messages, mb.Unseen, workers*each)
	}
	if mb.UIDNext != all[len(all)-1].UID+1 || mb.HighestModSeq != all[len(all)-1].ModSeq {
		t.Fatalf("uidnext %d highestmodseq %d; last uid %d modseq %d", mb.UIDNext, mb.HighestModSeq, all[len(all)-1].UID, all[len(all)-1].ModSeq)
	}
}

func TestDedup(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	binbox := f.mailbox(t, f.b, "INBOX")
	msg := testMessage(1)
	r1, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.st.Append(ctx, f.b.ID, binbox.ID, strings.NewReader(msg), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int64]bool{}
	for _, c := range []struct {
		acc int64
		mb  int64
		uid uint32
	}{{f.a.ID, inbox.ID, r1.UID}, {f.b.ID, binbox.ID, r2.UID}} {
		err := f.st.FetchMeta(ctx, c.acc, c.mb, []store.UIDRange{{c.uid, c.uid}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
			ids[m.MessageID] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("same content stored as %d messages, want 1", len(ids))
	}
	n, err := f.st.CountMessageContents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d message contents stored, want 1", n)
	}
}

func TestIsolation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bInbox := f.mailbox(t, f.b, "INBOX")
	aInbox := f.mailbox(t, f.a, "INBOX")
	res, err := f.st.Append(ctx, f.b.ID, bInbox.ID, strings.NewReader(testMessage(7)), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var bMsgID int64
	if err := f.st.FetchMeta(ctx, f.b.ID, bInbox.ID, []store.UIDRange{{1, 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		bMsgID = m.MessageID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	all := []store.UIDRange{{1, 0}}
	a := f.a.ID
	checks := []struct {
		name string
		fn   func() error
	}{
		{"MailboxByID", func() error { _, err := f.st.MailboxByID(ctx, a, bInbox.ID); return err }},
		{"SelectMailbox", func() error { _, _, err := f.st.SelectMailbox(ctx, a, bInbox.ID); return err }},
		{"Append", func() error {
			_, err := f.st.Append(ctx, a, bInbox.ID, strings.NewReader(testMessage(8)), 0, nil, time.Time{})
			return err
		}},
		{"OpenBody", func() error { _, err := f.st.OpenBody(ctx, a, bMsgID, 0, -1); return err }},
		{"Copy from B", func() error { _, err := f.st.Copy(ctx, a, bInbox.ID, all, aInbox.ID); return err }},
		{"Copy to B", func() error { _, err := f.st.Copy(ctx, a, aInbox.ID, all, bInbox.ID); return err }},
		{"Move from B", func() error { _, err := f.st.Move(ctx, a, bInbox.ID, all, aInbox.ID); return err }},
		{"StoreFlags", func() error {
			_, err := f.st.StoreFlags(ctx, a, bInbox.ID, all, store.FlagsAdd, []string{store.FlagDeleted})
			return err
		}},
		{"Expunge", func() error { _, err := f.st.Expunge(ctx, a, bInbox.ID, nil); return err }},
		{"ChangesSince", func() error {
			ch, err := f.st.ChangesSince(ctx, a, bInbox.ID, 0)
			if err == nil && ch.Mailbox != nil {
				return nil
			}
			return store.ErrNotFound
		}},
		{"RevokeAppPassword", func() error {
			_, ap, err := f.st.CreateAppPassword(ctx, f.b.ID, "phone")
			if err != nil {
				return nil // would make the check pass vacuously: fail instead
			}
			return f.st.RevokeAppPassword(ctx, a, ap.ID)
		}},
	}
	for _, c := range checks {
		if err := c.fn(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s on B's data as A: err = %v, want ErrNotFound", c.name, err)
		}
	}
	// FetchMeta on B's mailbox as A yields nothing; listing shows only A's.
	n := 0
	if err := f.st.FetchMeta(ctx, a, bInbox.ID, all, store.FetchOptions{}, func(*store.MessageMeta) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("FetchMeta as A returned %d of B's messages", n)
	}
	mbs, err := f.st.Mailboxes(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range mbs {
		if mb.AccountID != a {
			t.Errorf("Mailboxes(A) lists %s of account %d", mb.Name, mb.AccountID)
		}
	}
	// B's message is untouched.
	mb, uids, err := f.st.SelectMailbox(ctx, f.b.ID, bInbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != 1 || uids[0] != res.UID || mb.Deleted != 0 {
		t.Fatalf("B's mailbox changed: uids %v deleted %d", uids, mb.Deleted)
	}
	body, err := f.st.OpenBody(ctx, f.b.ID, bMsgID, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	if string(got) != testMessage(7) {
		t.Fatalf("B's body changed")
	}
}

func TestAppPasswords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	secret, ap, err := f.st.CreateAppPassword(ctx, f.a.ID, "iPhone")
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 19 || strings.Count(secret, "-") != 3 {
		t.Fatalf("secret %q is not abcd-efgh-ijkl-mnop", secret)
	}
	login := func(pw, proto string) (*store.Login, error) {
		return f.st.Authenticate(ctx, store.Credentials{Username: "Alice@Example.org", Password: pw, Protocol: proto, RemoteIP: "192.0.2.1"})
	}
	tests := []struct {
		name    string
		pw      string
		proto   string
		wantErr error
		wantApp bool
	}{
		{"app password over IMAP", secret, store.ProtocolIMAP, nil, true},
		{"app password typed in capitals with spaces", strings.ToUpper(strings.ReplaceAll(secret, "-", " ")), store.ProtocolSMTP, nil, true},
		{"main password over IMAP refused", "alice-main-pw", store.ProtocolIMAP, store.ErrAuthFailed, false},
		{"main password over SMTP refused", "alice-main-pw", store.ProtocolSMTP, store.ErrAuthFailed, false},
		{"main password for management", "alice-main-pw", store.ProtocolManage, nil, false},
		{"wrong password", "nope", store.ProtocolIMAP, store.ErrAuthFailed, false},
	}
	for _, tt := range tests {
		l, err := login(tt.pw, tt.proto)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && (l.AccountID != f.a.ID || (l.AppPasswordID == ap.ID) != tt.wantApp) {
			t.Errorf("%s: login %+v", tt.name, l)
		}
	}
	l, err := login(secret, store.ProtocolIMAP)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.CheckSession(ctx, l); err != nil {
		t.Fatalf("session invalid before revocation: %v", err)
	}
	if err := f.st.RevokeAppPassword(ctx, f.a.ID, ap.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.st.CheckSession(ctx, l); !errors.Is(err, store.ErrAccountGone) {
		t.Fatalf("open session after revocation: %v, want ErrAccountGone", err)
	}
	if _, err := login(secret, store.ProtocolIMAP); !errors.Is(err, store.ErrAuthFailed) {
		t.Fatalf("revoked app password: err = %v", err)
	}
	if _, err := f.st.Authenticate(ctx, store.Credentials{Username: "nobody@example.org", Password: "x", Protocol: store.ProtocolIMAP, RemoteIP: "192.0.2.9"}); !errors.Is(err, store.ErrAuthFailed) {
		t.Fatalf("unknown user: err = %v", err)
	}
	events, err := f.st.AuthEvents(ctx, f.a.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	// 6 table rows + 1 login + 1 revoked attempt; the unknown user has no account.
	if len(events) != 8 {
		t.Fatalf("%d auth events recorded, want 8: %+v", len(events), events)
	}
	last := events[0]
	if last.Success || last.Reason != "revoked app password" || last.AppPassword != "iPhone" || last.RemoteIP != "192.0.2.1" {
		t.Fatalf("newest event %+v", last)
	}
	aps, err := f.st.AppPasswords(ctx, f.a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(aps) != 1 || aps[0].RevokedAt == nil || aps[0].LastUsedAt == nil || aps[0].LastUsedIP != "192.0.2.1" {
		t.Fatalf("app passwords %+v", aps)
	}
}

func TestThrottle(t *testing.T) {
	f := newFixtureOpts(t, store.Options{Throttle: store.ThrottlePolicy{MaxDelay: 5 * time.Millisecond, AccountLimit: 10, IPLimit: 20}})
	ctx := context.Background()
	secret, _, err := f.st.CreateAppPassword(ctx, f.a.ID, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	login := func(user, pw, ip string) error {
		_, err := f.st.Authenticate(ctx, store.Credentials{Username: user, Password: pw, Protocol: store.ProtocolIMAP, RemoteIP: ip})
		return err
	}
	// Guesses at alice from several IPs: after 10 failures the account
	// refuses further guesses (and the refusals do not extend the count).
	for i := 0; i < 10; i++ {
		if err := login("alice@example.org", "guess", fmt.Sprintf("198.51.100.%d", i%3)); !errors.Is(err, store.ErrAuthFailed) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	for i := 0; i < 5; i++ {
		if err := login("alice@example.org", "guess", "198.51.100.9"); !errors.Is(err, store.ErrThrottled) {
			t.Fatalf("guess past the account limit: %v", err)
		}
	}
	// The owner's device, with its app password, is not locked out.
	if err := login("alice@example.org", secret, "203.0.113.5"); err != nil {
		t.Fatalf("owner's app password during an attack on the account: %v", err)
	}
	// One IP failing against many accounts is cut off entirely, even with
	// a right password.
	for i := 0; i < 20; i++ {
		login(fmt.Sprintf("user%d@example.org", i), "guess", "192.0.2.66")
	}
	if err := login("alice@example.org", secret, "192.0.2.66"); !errors.Is(err, store.ErrThrottled) {
		t.Fatalf("right password from a throttled IP: %v", err)
	}
}

// TestLargeMessageStreaming stores a 30 MB message and reads it back,
// checking bytes and that neither direction holds the message in memory.
func TestLargeMessageStreaming(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	const size = 30 << 20
	header := "From: a@example.com\r\nSubject: big\r\nContent-Type: application/octet-stream\r\n\r\n"
	seed := make([]byte, 64<<10)
	rand.Read(seed)
	gen := func() io.Reader {
		return io.MultiReader(strings.NewReader(header), io.LimitReader(&repeatReader{data: seed}, size-int64(len(header))))
	}
	before := heapAlloc()
	var peak peakHeap
	peak.start()
	res, err := f.st.Append(ctx, f.a.ID, inbox.ID, gen(), 0, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var msgID, gotSize int64
	if err := f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{res.UID, res.UID}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		msgID, gotSize = m.MessageID, m.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if gotSize != size {
		t.Fatalf("stored size %d, want %d", gotSize, size)
	}
	body, err := f.st.OpenBody(ctx, f.a.ID, msgID, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameReaders(body, gen()); err != nil {
		t.Fatal(err)
	}
	growth := peak.stop() - before
	t.Logf("30 MB round trip: peak heap growth %d KiB", growth>>10)
	if growth > 4<<20 {
		t.Fatalf("peak heap grew by %d MiB for a 30 MiB message", growth>>20)
	}
	// A byte range across a chunk boundary.
	part, err := f.st.OpenBody(ctx, f.a.ID, msgID, store.ChunkSize-10, 20)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(part)
	want, _ := io.ReadAll(io.LimitReader(skip(gen(), store.ChunkSize-10), 20))
	if !bytes.Equal(got, want) {
		t.Fatalf("range read: got %q want %q", got, want)
	}
}

type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}

func skip(r io.Reader, n int64) io.Reader {
	io.CopyN(io.Discard, r, n)
	return r
}

func sameReaders(a, b io.Reader) error {
	bufA, bufB := make([]byte, 32<<10), make([]byte, 32<<10)
	var off int64
	for {
		na, errA := io.ReadFull(a, bufA)
		nb, errB := io.ReadFull(b, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return fmt.Errorf("bodies differ near offset %d", off)
		}
		off += int64(na)
		if errA != nil || errB != nil {
			if (errA == nil) != (errB == nil) {
				return fmt.Errorf("lengths differ at %d: %v / %v", off, errA, errB)
			}
			if errA != io.EOF && errA != io.ErrUnexpectedEOF {
				return errA
			}
			return nil
		}
	}
}

func heapAlloc() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// peakHeap samples HeapAlloc while an operation runs. HeapAlloc counts
// garbage not yet collected too, and by default the collector lets a small
// heap grow by 4 MiB of garbage before running; so while sampling, GOGC is
// set low, to make HeapAlloc follow what the operation actually holds.
type peakHeap struct {
	done    chan struct{}
	max     chan int64
	oldGOGC int
}

func (p *peakHeap) start() {
	p.oldGOGC = debug.SetGCPercent(5)
	p.done, p.max = make(chan struct{}), make(chan int64, 1)
	go func() {
		var peak int64
		var ms runtime.MemStats
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, int64(ms.HeapAlloc))
			select {
			case <-p.done:
				p.max <- peak
				return
			case <-tick.C:
			}
		}
	}()
}

func (p *peakHeap) stop() int64 {
	close(p.done)
	peak := <-p.max
	debug.SetGCPercent(p.oldGOGC)
	return peak
}

func TestMalformedMIME(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	cases := []struct{ name, msg string }{
		{"truncated multipart", "Content-Type: multipart/mixed; boundary=xyz\r\n\r\n--xyz\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xyz\r\nContent-Type: text/html\r\n\r\n<b>cut"},
		{"bad encodings", "Content-Type: text/plain; charset=bogus-42\r\nContent-Transfer-Encoding: base64\r\nSubject: =?utf-8?B?!!!not-base64?=\r\n\r\n@@@ not base64 @@@\r\n"},
		{"8-bit headers", "Subject: caf\xe9 \xc3\xa9t\xc3\xa9\r\nFrom: J\xf6rg <j@example.com>\r\n\r\nbody\r\n"},
		{"no header/body separator", "Subject: no body\r\nFrom: x@example.com"},
		{"no header at all", "just some text\nwith LF lines\n"},
		{"empty", ""},
		{"NUL bytes", "Subject: a\x00b\r\n\r\n\x00\x00\xff\r\n"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			date := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
			res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(c.msg), 0, []string{`\Seen`, "$Label" + fmt.Sprint(i)}, date)
			if err != nil {
				t.Fatalf("append: %v", err)
			}
			var meta store.MessageMeta
			err = f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{res.UID, res.UID}}, store.FetchOptions{Structure: true, Header: true}, func(m *store.MessageMeta) error {
				meta = *m
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if meta.Structure == nil || meta.Structure.Root == nil {
				t.Fatal("no structure stored")
			}
			if !meta.InternalDate.Equal(date) || meta.Size != int64(len(c.msg)) {
				t.Errorf("date %v size %d", meta.InternalDate, meta.Size)
			}
			if !slices.Equal(meta.Flags, []string{`\Seen`, "$Label" + fmt.Sprint(i)}) {
				t.Errorf("flags %v", meta.Flags)
			}
			body, err := f.st.OpenBody(ctx, f.a.ID, meta.MessageID, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(body)
			if err != nil || string(got) != c.msg {
				t.Fatalf("stored bytes differ (err %v): %q", err, got)
			}
			if !strings.HasPrefix(c.msg, string(meta.Header)) {
				t.Fatalf("header %q is not a prefix", meta.Header)
			}
		})
	}
}

func TestFlagsCopyMoveExpunge(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	archive := f.mailbox(t, f.a, "Archive")
	for i := 0; i < 5; i++ {
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	upd, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{2, 3}}, store.FlagsAdd, []string{`\Seen`, `\Deleted`, "work"})
	if err != nil {
		t.Fatal(err)
	}
	if len(upd) != 2 || upd[0].UID != 2 || !slices.Equal(upd[0].Flags, []string{`\Seen`, `\Deleted`, "work"}) {
		t.Fatalf("StoreFlags returned %+v", upd)
	}
	// Setting the same flags again changes nothing.
	again, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{2, 3}}, store.FlagsAdd, []string{`\Seen`})
	if err != nil || len(again) != 0 {
		t.Fatalf("no-op store: %+v %v", again, err)
	}
	cp, err := f.st.Copy(ctx, f.a.ID, inbox.ID, []store.UIDRange{{1, 0}}, archive.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cp.SrcUIDs, []uint32{1, 2, 3, 4, 5}) || !slices.Equal(cp.DstUIDs, []uint32{1, 2, 3, 4, 5}) || cp.UIDValidity != archive.UIDValidity {
		t.Fatalf("copy result %+v", cp)
	}
	exp, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, nil)
	if err != nil || !slices.Equal(exp.UIDs, []uint32{2, 3}) || exp.ModSeq == 0 || exp.UIDValidity != inbox.UIDValidity {
		t.Fatalf("expunge: %v %v", exp, err)
	}
	mv, err := f.st.Move(ctx, f.a.ID, inbox.ID, []store.UIDRange{{4, 5}}, archive.ID)
	if err != nil || !slices.Equal(mv.DstUIDs, []uint32{6, 7}) {
		t.Fatalf("move: %+v %v", mv, err)
	}
	ch, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Expunged, []uint32{2, 3, 4, 5}) || len(ch.Updated) != 1 || ch.Updated[0].UID != 1 {
		t.Fatalf("changes: %+v", ch)
	}
	ibx, _, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	arc, _, err := f.st.SelectMailbox(ctx, f.a.ID, archive.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ibx.Messages != 1 || ibx.Unseen != 1 || ibx.Deleted != 0 || arc.Messages != 7 || arc.Unseen != 5 || arc.Deleted != 2 {
		t.Fatalf("counts inbox %+v archive %+v", ibx, arc)
	}
}

// TestMoveWithinMailbox: MOVE into the mailbox the messages are in (as
// Dovecot and imaptest's move script expect) gives them new UIDs there,
// keeping flags, keywords, dates and content, with COPYUID data; the counts
// stay, UIDNEXT moves past the new UIDs, and a set that matches nothing
// changes nothing.
func TestMoveWithinMailbox(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	flags := [][]string{{`\Seen`}, {`\Deleted`, "$Work"}, nil}
	for i, fl := range flags {
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, fl, time.Date(2026, 1, i+1, 0, 0, 0, 0, time.UTC)); err != nil {
			t.Fatal(err)
		}
	}
	type meta struct {
		flags     []string
		date      time.Time
		messageID int64
	}
	read := func() (*store.Mailbox, map[uint32]meta) {
		t.Helper()
		mb, _, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		ms := map[uint32]meta{}
		err = f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{1, 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
			ms[m.UID] = meta{slices.Clone(m.Flags), m.InternalDate.UTC(), m.MessageID}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return mb, ms
	}
	before, old := read()
	res, err := f.st.Move(ctx, f.a.ID, inbox.ID, []store.UIDRange{{1, 2}}, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.SrcUIDs, []uint32{1, 2}) || !slices.Equal(res.DstUIDs, []uint32{4, 5}) || res.UIDValidity != inbox.UIDValidity {
		t.Fatalf("move result %+v", res)
	}
	after, now := read()
	if len(now) != 3 || !reflect.DeepEqual(now[4], old[1]) || !reflect.DeepEqual(now[5], old[2]) || !reflect.DeepEqual(now[3], old[3]) {
		t.Fatalf("messages before %+v, after %+v", old, now)
	}
	if after.Messages != before.Messages || after.Unseen != before.Unseen || after.Deleted != before.Deleted ||
		after.Size != before.Size || after.UIDNext != 6 || after.HighestModSeq != before.HighestModSeq+1 {
		t.Fatalf("mailbox before %+v, after %+v", before, after)
	}
	ch, err := f.st.ChangesSince(ctx, f.a.ID, inbox.ID, before.HighestModSeq)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Updated) != 2 || ch.Updated[0].UID != 4 || ch.Updated[1].UID != 5 || !slices.Equal(ch.Expunged, []uint32{1, 2}) {
		t.Fatalf("changes %+v", ch)
	}
	none, err := f.st.Move(ctx, f.a.ID, inbox.ID, []store.UIDRange{{1, 2}}, inbox.ID)
	if err != nil || len(none.SrcUIDs) != 0 {
		t.Fatalf("move of expunged UIDs: %+v %v", none, err)
	}
	if mb, _ := read(); mb.HighestModSeq != after.HighestModSeq || mb.UIDNext != after.UIDNext {
		t.Fatalf("a move of nothing changed the mailbox: %+v", mb)
	}
}

func TestMailboxHierarchy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.a.ID
	if _, err := f.st.CreateMailbox(ctx, a, "Projects/2026/Q4", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.CreateMailbox(ctx, a, "projects/2026/Q4", ""); err != nil {
		t.Fatal("names other than INBOX are case-sensitive:", err)
	}
	if _, err := f.st.CreateMailbox(ctx, a, "Projects", ""); !errors.Is(err, store.ErrExists) {
		t.Fatalf("create existing: %v", err)
	}
	if err := f.st.DeleteMailbox(ctx, a, "inbox"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("delete INBOX: %v", err)
	}
	old := f.mailbox(t, f.a, "Projects")
	if err := f.st.DeleteMailbox(ctx, a, "Projects"); err != nil {
		t.Fatal(err)
	}
	if mb := f.mailbox(t, f.a, "Projects"); !mb.NoSelect {
		t.Fatal("deleted parent with children is not \\Noselect")
	}
	if err := f.st.DeleteMailbox(ctx, a, "Projects"); !errors.Is(err, store.ErrHasChildren) {
		t.Fatalf("delete \\Noselect with children: %v", err)
	}
	if err := f.st.RenameMailbox(ctx, a, "Projects", "Work/Old"); err != nil {
		t.Fatal(err)
	}
	if mb := f.mailbox(t, f.a, "Work/Old/2026/Q4"); mb == nil {
		t.Fatal("child not renamed")
	}
	if err := f.st.RenameMailbox(ctx, a, "Work", "Archive"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("rename onto existing: %v", err)
	}
	// Re-created mailboxes get a larger UIDVALIDITY.
	if _, err := f.st.CreateMailbox(ctx, a, "Projects", ""); err != nil {
		t.Fatal(err)
	}
	if nw := f.mailbox(t, f.a, "Projects"); nw.UIDValidity <= old.UIDValidity {
		t.Fatalf("uidvalidity %d not above old %d", nw.UIDValidity, old.UIDValidity)
	}
	// Renaming INBOX moves its messages and keeps INBOX.
	inbox := f.mailbox(t, f.a, "INBOX")
	if _, err := f.st.Append(ctx, a, inbox.ID, strings.NewReader(testMessage(1)), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.RenameMailbox(ctx, a, "INBOX", "Old Inbox"); err != nil {
		t.Fatal(err)
	}
	if got := f.mailbox(t, f.a, "INBOX"); got.Messages != 0 || got.ID != inbox.ID {
		t.Fatalf("INBOX after rename: %+v", got)
	}
	if got := f.mailbox(t, f.a, "Old Inbox"); got.Messages != 1 {
		t.Fatalf("renamed INBOX: %+v", got)
	}
}

func TestRecipients(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.st.CreateAlias(ctx, "postmaster@example.org", "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.CreateAlias(ctx, "@example.org", "bob@example.org"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want string
	}{
		{"alice@example.org", "alice@example.org"},
		{"Alice+news@Example.org", "alice@example.org"},
		{"postmaster@example.org", "alice@example.org"},
		{"postmaster+x@example.org", "alice@example.org"},
		{"random@example.org", "bob@example.org"},
		{"alice@other.example", ""},
	}
	for _, tt := range tests {
		if got := resolvedTo(t, f.st, tt.addr); got != tt.want {
			t.Errorf("ResolveRecipient(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	owns, err := f.st.OwnsAddress(ctx, f.a.ID, "postmaster+tag@example.org")
	if err != nil || !owns {
		t.Fatalf("alice owns postmaster+tag: %v %v", owns, err)
	}
	owns, err = f.st.OwnsAddress(ctx, f.b.ID, "alice@example.org")
	if err != nil || owns {
		t.Fatalf("bob owns alice: %v %v", owns, err)
	}
}

// TestAddressForms: every store function that takes an address reads it
// by the one rule of internal/mailaddr: white space around it ignored,
// case folded, a trailing dot on the domain dropped, the domain after the
// last @, a +tag cut at the first + unless it leads.
func TestAddressForms(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.st.CreateAlias(ctx, " @Example.ORG. ", "Bob@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.CreateAlias(ctx, "Info@example.org.", " ALICE@example.org "); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ addr, want string }{
		{" Alice@Example.ORG. ", "alice@example.org"},
		{"alice+x+y@example.org", "alice@example.org"},
		{"INFO+tag@example.org", "alice@example.org"},
		{"+alice@example.org", "bob@example.org"},            // no subaddress: the catch-all's
		{"alice@example.org@example.org", "bob@example.org"}, // local part "alice@example.org"
		{"alice@example.org@other.example", ""},
		{"alice@", ""},
		{"@example.org", ""},
	} {
		if got := resolvedTo(t, f.st, tc.addr); got != tc.want {
			t.Errorf("ResolveRecipient(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	for _, tc := range []struct {
		addr string
		owns bool
	}{
		{"ALICE@example.org.", true},
		{"info+tag@example.org", true},
		// "+tag" is no subaddress: its base would read as the catch-all
		// "@example.org", which is bob's but no one's to send as.
		{"+tag@example.org", false},
		{"alice@example.org@example.org", false},
	} {
		if owns, err := f.st.OwnsAddress(ctx, f.a.ID, tc.addr); err != nil || owns != tc.owns {
			t.Errorf("OwnsAddress(alice, %q) = %v, %v; want %v", tc.addr, owns, err, tc.owns)
		}
		if owns, err := f.st.OwnsAddress(ctx, f.b.ID, tc.addr); err != nil || owns {
			t.Errorf("OwnsAddress(bob, %q) = %v, %v", tc.addr, owns, err)
		}
	}
	if acc, err := f.st.AccountByAddress(ctx, " Alice@Example.org. "); err != nil || acc.ID != f.a.ID {
		t.Errorf("AccountByAddress: %v %v", acc, err)
	}
	if err := f.st.SetPassword(ctx, " BOB@example.org. ", "new-password-1234"); err != nil {
		t.Errorf("SetPassword with white space and a trailing dot: %v", err)
	}
	for _, bad := range []string{"a b@example.org", `"a"@example.org`, "a@b@example.org", "<a@example.org>", "a\x01@example.org", "@example.org", "a@."} {
		if _, err := f.st.CreateAccount(ctx, bad, "password-1234", store.AccountOptions{}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CreateAccount(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if err := f.st.CreateAlias(ctx, "@", "alice@example.org"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateAlias(@): %v", err)
	}
	acc, err := f.st.CreateAccount(ctx, "Carol@Example.org.", "password-1234", store.AccountOptions{})
	if err != nil || acc.Address != "carol@example.org" {
		t.Fatalf("CreateAccount with a trailing dot: %v %v", acc, err)
	}
	if err := f.st.DeleteAlias(ctx, "INFO@example.org."); err != nil {
		t.Errorf("DeleteAlias: %v", err)
	}
}

// resolvedTo returns the address of the account mail for addr goes to, ""
// for none.
func resolvedTo(t *testing.T, st *store.Store, addr string) string {
	t.Helper()
	acc, err := st.ResolveRecipient(context.Background(), addr)
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return acc.Address
}

func BenchmarkAppend10KB(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	inbox := f.mailbox(b, f.a, "INBOX")
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 160)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg := fmt.Sprintf("From: a@example.com\r\nSubject: bench %d\r\n\r\n%s", i, body)
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(body) + 40))
}

func BenchmarkAppPasswordLogin(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	secret, _, err := f.st.CreateAppPassword(ctx, f.a.ID, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: secret, Protocol: store.ProtocolIMAP, RemoteIP: "127.0.0.1"}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPruneAuthEvents(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		f.st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: "x", Protocol: store.ProtocolIMAP, RemoteIP: "192.0.2.1"})
	}
	if n, err := f.st.PruneAuthEvents(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("pruned %d recent events, %v", n, err)
	}
	if n, err := f.st.PruneAuthEvents(ctx, 0); err != nil || n != 3 {
		t.Fatalf("pruned %d events, %v; want 3", n, err)
	}
}

func TestCollectGarbage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	trash := f.mailbox(t, f.a, "Trash")
	for i := 0; i < 3; i++ {
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// Message 1 stays, 2 lives on in Trash, 3 is gone everywhere.
	if _, err := f.st.Copy(ctx, f.a.ID, inbox.ID, []store.UIDRange{{2, 2}}, trash.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{2, 3}}, store.FlagsAdd, []string{store.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Expunge(ctx, f.a.ID, inbox.ID, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := f.st.CollectGarbage(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("within grace: deleted %d, %v", n, err)
	}
	if n, err := f.st.CollectGarbage(ctx, 0); err != nil || n != 1 {
		t.Fatalf("deleted %d, %v; want 1", n, err)
	}
	if n, _ := f.st.CountMessageContents(ctx); n != 2 {
		t.Fatalf("%d contents left, want 2", n)
	}
	// What is left still reads back.
	err := f.st.FetchMeta(ctx, f.a.ID, trash.ID, []store.UIDRange{{1, 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		r, err := f.st.OpenBody(ctx, f.a.ID, m.MessageID, 0, -1)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(r)
		if err == nil && string(b) != testMessage(1) {
			err = fmt.Errorf("body %q", b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestQuota(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acc, err := f.st.CreateAccount(ctx, "small@example.org", "pw", store.AccountOptions{QuotaBytes: 300})
	if err != nil {
		t.Fatal(err)
	}
	inbox := f.mailbox(t, acc, "INBOX")
	msg := strings.Repeat("x", 200)
	if _, err := f.st.Append(ctx, acc.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Append(ctx, acc.ID, inbox.ID, strings.NewReader(msg+"y"), 0, nil, time.Time{}); !errors.Is(err, store.ErrOverQuota) {
		t.Fatalf("over quota: %v", err)
	}
	if _, err := f.st.Append(ctx, acc.ID, inbox.ID+1000, strings.NewReader("x"), 0, nil, time.Time{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing mailbox: %v", err)
	}
	if _, err := f.st.Append(ctx, acc.ID, inbox.ID, strings.NewReader(strings.Repeat("z", 101)), 100, nil, time.Time{}); !errors.Is(err, store.ErrTooBig) {
		t.Fatalf("over max size: %v", err)
	}
	// COPY counts against the quota too (MOVE does not change usage).
	trash := f.mailbox(t, acc, "Trash")
	if _, err := f.st.Copy(ctx, acc.ID, inbox.ID, []store.UIDRange{{1, 0}}, trash.ID); !errors.Is(err, store.ErrOverQuota) {
		t.Fatalf("copy over quota: %v", err)
	}
	if _, err := f.st.Move(ctx, acc.ID, inbox.ID, []store.UIDRange{{1, 0}}, trash.ID); err != nil {
		t.Fatalf("move within quota: %v", err)
	}
	if _, err := f.st.Move(ctx, acc.ID, trash.ID, []store.UIDRange{{1, 0}}, inbox.ID); err != nil {
		t.Fatalf("move back: %v", err)
	}
	mb, uids, err := f.st.SelectMailbox(ctx, acc.ID, inbox.ID)
	if err != nil || len(uids) != 1 || mb.Size != 200 || mb.UIDNext != 3 {
		t.Fatalf("after refusals: %+v %v %v", mb, uids, err)
	}
}

// TestHierarchyVersusMessageWrites renames a mailbox back and forth while
// messages are copied into it: the two lock orders (account row, then
// mailbox rows; mailbox rows, then the account's foreign-key share lock)
// must not deadlock.
func TestHierarchyVersusMessageWrites(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	work, err := f.st.CreateMailbox(ctx, f.a.ID, "Work", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(testMessage(i)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	errs := make(chan error, 2)
	go func() {
		for time.Now().Before(deadline) {
			if _, err := f.st.Copy(ctx, f.a.ID, inbox.ID, []store.UIDRange{{1, 0}}, work.ID); err != nil {
				errs <- fmt.Errorf("copy: %w", err)
				return
			}
		}
		errs <- nil
	}()
	go func() {
		names := []string{"Work", "Work2"}
		for i := 0; time.Now().Before(deadline); i++ {
			if err := f.st.RenameMailbox(ctx, f.a.ID, names[i%2], names[(i+1)%2]); err != nil {
				errs <- fmt.Errorf("rename: %w", err)
				return
			}
			if _, err := f.st.CreateMailbox(ctx, f.a.ID, "Tmp", ""); err != nil {
				errs <- fmt.Errorf("create: %w", err)
				return
			}
			if err := f.st.DeleteMailbox(ctx, f.a.ID, "Tmp"); err != nil {
				errs <- fmt.Errorf("delete: %w", err)
				return
			}
		}
		errs <- nil
	}()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestMainPasswordPolicy checks when IMAP/SMTP accept the main password
// (ARCHITECTURE.md: only if the server allows it and the account does not
// require app passwords), that a refusal looks exactly like a wrong
// password to the client, and that the activity log tells them apart.
func TestMainPasswordPolicy(t *testing.T) {
	ctx := context.Background()
	type attempt struct {
		name       string
		user, pw   string
		proto      string
		wantOK     bool
		wantReason string // newest auth event's reason for the user
	}
	tests := []struct {
		name        string
		serverAllow bool
		attempts    []attempt
	}{
		{"server allows the main password", true, []attempt{
			{"account allows: accepted", "carol@example.org", "carol-main-pw", store.ProtocolIMAP, true, "main password"},
			{"account allows, wrong password", "carol@example.org", "nope", store.ProtocolSMTP, false, store.ReasonWrongPassword},
			{"account requires app passwords: refused", "alice@example.org", "alice-main-pw", store.ProtocolIMAP, false, store.ReasonMainRefused},
			{"account requires app passwords, wrong password", "alice@example.org", "nope", store.ProtocolIMAP, false, store.ReasonWrongPassword},
			{"management always takes the main password", "alice@example.org", "alice-main-pw", store.ProtocolManage, true, "main password"},
			// alice now has 2 recent failures; a third makes checking a
			// password that cannot succeed not worth an argon2id hash.
			{"account requires app passwords, wrong password again", "alice@example.org", "nope2", store.ProtocolIMAP, false, store.ReasonWrongPassword},
			{"past the free failures the main password is not checked", "alice@example.org", "alice-main-pw", store.ProtocolIMAP, false, store.ReasonNotAppPassword},
		}},
		{"server requires app passwords", false, []attempt{
			{"account allows: still refused", "carol@example.org", "carol-main-pw", store.ProtocolIMAP, false, store.ReasonMainRefused},
			{"wrong password", "carol@example.org", "nope", store.ProtocolSMTP, false, store.ReasonWrongPassword},
			{"management takes the main password", "carol@example.org", "carol-main-pw", store.ProtocolManage, true, "main password"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureOpts(t, store.Options{AllowMainPassword: tt.serverAllow})
			carol, err := f.st.CreateAccount(ctx, "carol@example.org", "carol-main-pw", store.AccountOptions{AllowMainPassword: true})
			if err != nil {
				t.Fatal(err)
			}
			if f.a.RequireAppPasswords != true || carol.RequireAppPasswords != false {
				t.Fatalf("require_app_passwords: alice %v carol %v", f.a.RequireAppPasswords, carol.RequireAppPasswords)
			}
			ids := map[string]int64{"alice@example.org": f.a.ID, "carol@example.org": carol.ID}
			for i, at := range tt.attempts {
				l, err := f.st.Authenticate(ctx, store.Credentials{Username: at.user, Password: at.pw, Protocol: at.proto,
					RemoteIP: fmt.Sprintf("198.51.100.%d", i)})
				switch {
				case at.wantOK && err != nil:
					t.Fatalf("%s: %v", at.name, err)
				case at.wantOK && (l.AccountID != ids[at.user] || l.AppPasswordID != 0):
					t.Fatalf("%s: login %+v", at.name, l)
				case !at.wantOK && err != store.ErrAuthFailed: //nolint:errorlint // the very same error value: identical on the wire
					t.Fatalf("%s: err = %v, want exactly ErrAuthFailed", at.name, err)
				}
				evs, err := f.st.AuthEvents(ctx, ids[at.user], 1)
				if err != nil {
					t.Fatal(err)
				}
				if len(evs) != 1 || evs[0].Success != at.wantOK || evs[0].Reason != at.wantReason || evs[0].Protocol != at.proto {
					t.Fatalf("%s: newest event %+v, want success %v reason %q", at.name, evs, at.wantOK, at.wantReason)
				}
			}
		})
	}

	t.Run("unknown user is recorded", func(t *testing.T) {
		f := newFixture(t)
		const ip = "192.0.2.77"
		if _, err := f.st.Authenticate(ctx, store.Credentials{Username: "Ghost@Example.org", Password: "x", Protocol: store.ProtocolIMAP, RemoteIP: ip}); err != store.ErrAuthFailed { //nolint:errorlint
			t.Fatalf("unknown user: err = %v, want exactly ErrAuthFailed", err)
		}
		evs, err := f.st.FailedAuthEventsFrom(ctx, ip, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Username != "ghost@example.org" || evs[0].Reason != store.ReasonUnknownUser ||
			evs[0].Protocol != store.ProtocolIMAP || evs[0].Success || time.Since(evs[0].At) > time.Hour {
			t.Fatalf("events from %s: %+v", ip, evs)
		}
	})
}

// TestConcurrentDedup delivers the same multi-chunk content from 8
// goroutines at once: one content row with its chunks, 8 messages.
func TestConcurrentDedup(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	body := make([]byte, 2*store.ChunkSize+1000)
	rand.Read(body)
	msg := "From: a@example.com\r\nSubject: same\r\nContent-Type: application/octet-stream\r\n\r\n" + fmt.Sprintf("%x", body)
	wantChunks := int64((len(msg) + store.ChunkSize - 1) / store.ChunkSize)
	const workers = 8
	start := make(chan struct{})
	errs := make(chan error, workers)
	for range workers {
		go func() {
			<-start
			_, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{})
			errs <- err
		}()
	}
	close(start)
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	contents, err := f.st.CountMessageContents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Chunks are counted behind the store's back: no API needs them.
	conn, err := pgx.ConnectConfig(ctx, f.st.ConnConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var chunks, size int64
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(sum(length(data)), 0) FROM message_chunks`).Scan(&chunks, &size); err != nil {
		t.Fatal(err)
	}
	if contents != 1 || chunks != wantChunks || size != int64(len(msg)) {
		t.Fatalf("%d contents in %d chunks of %d bytes, want 1 in %d of %d", contents, chunks, size, wantChunks, len(msg))
	}
	mb, uids, err := f.st.SelectMailbox(ctx, f.a.ID, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != workers || mb.Messages != workers {
		t.Fatalf("%d messages in INBOX (%d uids), want %d", mb.Messages, len(uids), workers)
	}
	err = f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{1, 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		body, err := f.st.OpenBody(ctx, f.a.ID, m.MessageID, 0, -1)
		if err != nil {
			return err
		}
		return sameReaders(body, strings.NewReader(msg))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestThrottleDelay checks the growing delay after the free failures. Only
// lower bounds are asserted: a loaded machine can only make attempts slower.
func TestThrottleDelay(t *testing.T) {
	pol := store.ThrottlePolicy{FreeFailures: 2, MaxDelay: 300 * time.Millisecond, AccountLimit: 50, IPLimit: 50}
	f := newFixtureOpts(t, store.Options{Throttle: pol})
	ctx := context.Background()
	// Attempt k starts with k recent failures; from k = FreeFailures on it
	// waits 100ms << (k - FreeFailures), at most MaxDelay.
	wantAtLeast := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}
	for k, want := range wantAtLeast {
		t0 := time.Now()
		_, err := f.st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: "guess", Protocol: store.ProtocolIMAP, RemoteIP: "198.51.100.1"})
		took := time.Since(t0)
		if !errors.Is(err, store.ErrAuthFailed) {
			t.Fatalf("attempt %d: %v", k, err)
		}
		t.Logf("attempt %d took %v", k, took)
		if took < want {
			t.Fatalf("attempt %d took %v, want at least %v", k, took, want)
		}
	}
}

// TestThrottleSharedAcrossPools shows that failures counted through one
// Store (one process) slow down and then refuse attempts through another
// on the same database.
func TestThrottleSharedAcrossPools(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewURL(t)
	pol := store.ThrottlePolicy{FreeFailures: 2, MaxDelay: 200 * time.Millisecond, AccountLimit: 4, IPLimit: 50}
	open := func() *store.Store {
		st, err := store.Open(ctx, url, store.Options{Throttle: pol, MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	a, b := open(), open()
	if _, err := a.CreateDomain(ctx, "example.org", "mail", []byte("key")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAccount(ctx, "alice@example.org", "alice-main-pw", store.AccountOptions{}); err != nil {
		t.Fatal(err)
	}
	guess := func(st *store.Store, ip string) (time.Duration, error) {
		t0 := time.Now()
		_, err := st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: "guess", Protocol: store.ProtocolIMAP, RemoteIP: ip})
		return time.Since(t0), err
	}
	for i := range pol.FreeFailures {
		if _, err := guess(a, fmt.Sprintf("198.51.100.%d", i)); !errors.Is(err, store.ErrAuthFailed) {
			t.Fatalf("guess %d through A: %v", i, err)
		}
	}
	// B has seen no failure itself, yet delays: the count is in the database.
	took, err := guess(b, "198.51.100.10")
	if !errors.Is(err, store.ErrAuthFailed) || took < 100*time.Millisecond {
		t.Fatalf("guess through B after %d failures through A: %v after %v, want a failure after at least 100ms", pol.FreeFailures, err, took)
	}
	if _, err := guess(a, "198.51.100.11"); !errors.Is(err, store.ErrAuthFailed) {
		t.Fatalf("last guess through A: %v", err)
	}
	// 4 failures now: the account limit, reached through both stores.
	if _, err := guess(b, "198.51.100.12"); !errors.Is(err, store.ErrThrottled) {
		t.Fatalf("guess through B past the account limit: %v, want ErrThrottled", err)
	}
}
