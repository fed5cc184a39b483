package mailimport

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestImportIMAPHostileFetch: a source whose first pass lists a UID twice
// or out of order, or mixes in UIDs below the position, still gets each
// of its messages stored exactly once, byte for byte, and a second run
// copies nothing.
func TestImportIMAPHostileFetch(t *testing.T) {
	msgs := []fakeMsg{
		{uid: 3, body: string(textMsg("three", "3"))},
		{uid: 5, body: string(textMsg("five", "5"))},
		{uid: 9, body: string(textMsg("nine", "9"))},
	}
	for _, tc := range []struct {
		name string
		meta []int // indexes into msgs, in the order the server lists them
	}{
		{"in order", []int{0, 1, 2}},
		{"duplicate UIDs", []int{0, 1, 1, 2, 0, 2}},
		{"UIDs backwards", []int{2, 1, 0}},
		{"TLS", []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, &fakeIMAP{tls: tc.name == "TLS", list: []string{`() "/" INBOX`}, msgs: msgs, meta: func(w *bufio.Writer) {
				for i, k := range tc.meta {
					fmt.Fprintf(w, "* %d FETCH %s\r\n", i+1, metaItems(msgs[k]))
				}
			}})
			st := storetest.New(t)
			acc := newAccount(t, st, "alice@example.org")
			var want []rec
			for _, m := range msgs {
				want = append(want, rec{sum: sha256Sum([]byte(m.body)), size: int64(len(m.body)), date: time.Date(1999, 3, 4, 5, 6, 7, 0, time.UTC).Unix()})
			}
			for run := range 2 {
				im := &Importer{Store: st, Account: acc, Log: testLog(t)}
				if err := im.ImportIMAP(context.Background(), f.source(IMAPSource{RetryWait: time.Millisecond})); err != nil {
					t.Fatalf("run %d: %v", run, err)
				}
				equalRecs(t, fmt.Sprintf("run %d", run), storedFolder(t, st, acc, "INBOX"), sortRecs(slices.Clone(want)))
			}
		})
	}
}

// TestImportIMAPHostileServer: a source that stops answering, greets with
// BYE, sends an endless line or a literal it never delivers ends the
// import with an error in bounded time, leaving the account as it was.
func TestImportIMAPHostileServer(t *testing.T) {
	never := func(w *bufio.Writer, tag, args string) bool { return false }
	inbox := []string{`() "/" INBOX`}
	one := []fakeMsg{{uid: 1, body: string(textMsg("one", "1"))}}
	for _, tc := range []struct {
		name    string
		f       *fakeIMAP
		success bool // the import ends well
		failed  int  // with this many messages reported
	}{
		{name: "silent after the greeting", f: &fakeIMAP{on: map[string]func(*bufio.Writer, string, string) bool{"LOGIN": never}}},
		{name: "silent at LIST", f: &fakeIMAP{on: map[string]func(*bufio.Writer, string, string) bool{"LIST": never}}},
		{name: "silent at EXAMINE", f: &fakeIMAP{list: inbox, msgs: one, on: map[string]func(*bufio.Writer, string, string) bool{"EXAMINE": never}}},
		{name: "silent at FETCH", f: &fakeIMAP{list: inbox, msgs: one, on: map[string]func(*bufio.Writer, string, string) bool{"UID": never}}},
		{name: "greeting BYE", f: &fakeIMAP{greeting: "* BYE go away"}},
		{name: "silent over TLS", f: &fakeIMAP{tls: true, silent: true}},
		{name: "silent at LOGIN over TLS", f: &fakeIMAP{tls: true, on: map[string]func(*bufio.Writer, string, string) bool{"LOGIN": never}}},
		{name: "a literal of 10 GB never sent", f: &fakeIMAP{list: inbox, msgs: one, on: map[string]func(*bufio.Writer, string, string) bool{
			"UID": func(w *bufio.Writer, tag, args string) bool {
				if strings.Contains(args, "BODY") {
					fmt.Fprintf(w, "* 1 FETCH (UID 1 BODY[] {10000000000}\r\nFrom: x\r\n")
					return true
				}
				fmt.Fprintf(w, "* 1 FETCH %s\r\n%s OK done\r\n", metaItems(one[0]), tag)
				return false
			}}}, success: true, failed: 1},
		{name: "a 1 MB line", f: &fakeIMAP{on: map[string]func(*bufio.Writer, string, string) bool{
			"LOGIN": func(w *bufio.Writer, tag, args string) bool {
				fmt.Fprintf(w, "* OK %s\r\n%s OK done\r\n", strings.Repeat("x", 1<<20), tag)
				return false
			}}}, success: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.f)
			st := storetest.New(t)
			acc := newAccount(t, st, "alice@example.org")
			im := &Importer{Store: st, Account: acc, Log: testLog(t)}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err := im.ImportIMAP(ctx, f.source(IMAPSource{Retries: 1, RetryWait: time.Millisecond, Timeout: 300 * time.Millisecond}))
			t.Logf("after %v: %v", time.Since(start), err)
			if ctx.Err() != nil {
				t.Fatalf("the import hung: %v", err)
			}
			if (err == nil) != tc.success {
				t.Fatalf("error %v, want success %v", err, tc.success)
			}
			if s := im.Summary(); len(s.Failed) != tc.failed || s.Copied != 0 {
				t.Errorf("summary %+v, want %d failed and none copied", s, tc.failed)
			}
		})
	}
}

// TestImportIMAPBadFolderNames: folders whose names make no mailbox here
// (an empty level, too long) are left out with a reason; the rest, names with ".." among them (a mailbox name is
// no path here), are imported.
func TestImportIMAPBadFolderNames(t *testing.T) {
	long := strings.Repeat("n", 2000)
	f := startFake(t, &fakeIMAP{
		list: []string{`() "/" INBOX`, `() "/" "a//b"`, `() "/" "/lead"`,
			`() "/" "` + long + `"`, `() "/" "../up"`, `() "/" "a/../b"`},
		msgs: []fakeMsg{{uid: 1, body: string(textMsg("one", "1"))}},
	})
	st := storetest.New(t)
	acc := newAccount(t, st, "alice@example.org")
	im := &Importer{Store: st, Account: acc, Log: testLog(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := im.ImportIMAP(ctx, f.source(IMAPSource{RetryWait: time.Millisecond})); err != nil {
		t.Fatalf("import: %v", err)
	}
	s := im.Summary()
	if s.Copied != 3 || len(s.Failed) != 0 {
		t.Errorf("summary %+v, want 3 copied", s)
	}
	if len(s.Skipped) != 3 {
		t.Errorf("skipped %q, want 3", s.Skipped)
	}
	for _, name := range []string{"INBOX", "../up", "a/../b"} {
		if mb, err := st.MailboxByName(ctx, acc.ID, name); err != nil || mb.Messages != 1 {
			t.Errorf("mailbox %s: %+v, %v; want one message", name, mb, err)
		}
	}
}

// TestImportIMAPHostileData: odd flags and dates, a connection cut in the
// middle of a literal, a UIDVALIDITY that changes between runs: every
// message is stored once, byte for byte, over two runs.
func TestImportIMAPHostileData(t *testing.T) {
	var msgs []fakeMsg
	for i := range 5 {
		msgs = append(msgs, fakeMsg{uid: uint32(10 + i), body: string(textMsg(fmt.Sprintf("m%d", i), strings.Repeat("b", 100*i)))})
	}
	var kws []string
	for i := range 300 {
		kws = append(kws, fmt.Sprintf("$K%d", i))
	}
	manyFlags := "(\\Seen \\Unknown $odd-one \\Recent " + strings.Join(kws, " ") + ")"
	for _, tc := range []struct {
		name   string
		f      func() *fakeIMAP
		second func(f *fakeIMAP) // changes the source before the second run
	}{
		{name: "odd dates", f: func() *fakeIMAP {
			m := slices.Clone(msgs)
			m[0].date = `"04-Mar-10000 05:06:07 +0000"`
			m[1].date = `"garbage"`
			m[2].date = `"31-Feb-2020 25:61:61 +9999"`
			return &fakeIMAP{msgs: m}
		}},
		{name: "hundreds of keywords", f: func() *fakeIMAP {
			m := slices.Clone(msgs)
			m[1].flags = manyFlags
			return &fakeIMAP{msgs: m}
		}},
		{name: "cut mid-literal", f: func() *fakeIMAP {
			cuts := 0
			f := &fakeIMAP{msgs: msgs}
			f.on = map[string]func(*bufio.Writer, string, string) bool{"UID": func(w *bufio.Writer, tag, args string) bool {
				hangUp := false
				f.answerFetch(w, tag, args, func(uid uint32) bool {
					if uid == 12 && cuts < 2 { // twice: once in a batch, once alone
						cuts++
						w.WriteString(msgs[2].body[:50])
						hangUp = true
						return false
					}
					return true
				})
				return hangUp
			}}
			return f
		}},
		{name: "new UIDVALIDITY", f: func() *fakeIMAP { return &fakeIMAP{msgs: msgs} }, second: func(f *fakeIMAP) {
			f.uidValidity = 8
			for i := range f.msgs {
				f.msgs[i].uid += 100
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f()
			f.list = []string{`() "/" INBOX`}
			f.msgs = slices.Clone(f.msgs)
			startFake(t, f)
			st := storetest.New(t)
			acc := newAccount(t, st, "alice@example.org")
			var want []rec
			for _, m := range msgs {
				want = append(want, rec{sum: sha256Sum([]byte(m.body)), size: int64(len(m.body))})
			}
			for run := range 2 {
				if run == 1 && tc.second != nil {
					tc.second(f)
				}
				im := &Importer{Store: st, Account: acc, Log: testLog(t)}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := im.ImportIMAP(ctx, f.source(IMAPSource{RetryWait: time.Millisecond, Timeout: 5 * time.Second}))
				cancel()
				if err != nil {
					t.Fatalf("run %d: %v", run, err)
				}
				var got []rec
				for _, r := range storedFolder(t, st, acc, "INBOX") {
					r.flags, r.date = "", 0
					got = append(got, r)
				}
				equalRecs(t, fmt.Sprintf("run %d", run), sortRecs(got), sortRecs(slices.Clone(want)))
			}
		})
	}
}

// TestImportIMAPAccountsApart: two accounts importing the same source each
// get every message once; one's import state neither skips nor touches
// the other's mail.
func TestImportIMAPAccountsApart(t *testing.T) {
	f := startFake(t, &fakeIMAP{list: []string{`() "/" INBOX`, `() "/" Work`},
		msgs: []fakeMsg{{uid: 1, body: string(textMsg("one", "1"))}, {uid: 2, body: string(textMsg("two", "2"))}}})
	st := storetest.New(t)
	ctx := context.Background()
	alice, bob := newAccount(t, st, "alice@example.org"), newAccount(t, st, "bob@example.org")
	for _, acc := range []*store.Account{alice, bob, alice} {
		im := &Importer{Store: st, Account: acc, Log: testLog(t)}
		if err := im.ImportIMAP(ctx, f.source(IMAPSource{RetryWait: time.Millisecond})); err != nil {
			t.Fatal(err)
		}
	}
	for _, acc := range []*store.Account{alice, bob} {
		for _, name := range []string{"INBOX", "Work"} {
			if got := storedFolder(t, st, acc, name); len(got) != 2 {
				t.Errorf("%s %s holds %d messages, want 2", acc.Address, name, len(got))
			}
		}
	}
}
