package mailimport

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/internal/mailimport/dovecottest"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

func textMsg(subject, body string) []byte {
	return crlf(fmt.Sprintf("From: Bob <bob@example.test>\nTo: src@example.test\nSubject: %s\nMessage-ID: <%s@example.test>\n\n%s\n",
		subject, strings.ReplaceAll(subject, " ", "."), body))
}

// bigMsg is a message of about size bytes: a text and a base64 part.
func bigMsg(size int) []byte {
	var b bytes.Buffer
	b.Write(crlf("From: bob@example.test\nSubject: thirty megabytes\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nsee attached\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"))
	line := 0
	for b.Len() < size {
		fmt.Fprintf(&b, "%076d\r\n", line)
		line++
	}
	b.Write(crlf("--b1--\n"))
	return b.Bytes()
}

// malformed MIME: a boundary that never closes, a bad base64 body, a
// header with raw 8-bit bytes and a line without a colon.
var malformed = [][]byte{
	crlf("From: bob@example.test\nSubject: broken multipart\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"abc\"\n\n--abc\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!not base64 at all!!!\n--ab\nno closing boundary\n"),
	crlf("From: \xff\xfe bob@example.test\nSubject: \xe9t\xe9 raw 8-bit\nthis header line has no colon\nContent-Type: text/plain; charset=\"\n\nbody\n"),
	crlf("Subject: nested\nContent-Type: multipart/alternative; boundary=x\n\n--x\nContent-Type: message/rfc822\n\nContent-Type: multipart/mixed; boundary=\n\n--\n--x--\n"),
}

var (
	old1999 = time.Date(1999, 3, 4, 5, 6, 7, 0, time.FixedZone("", -5*3600))
	old2005 = time.Date(2005, 12, 31, 23, 59, 59, 0, time.UTC)
)

// fixture is the source account and what each target mailbox must hold.
type fixture struct {
	d       *dovecottest.Server
	expect  map[string][]rec  // target mailbox -> messages
	targets map[string]string // source folder -> target mailbox (All Mail, Starred and Broken aside)
	broken  string            // the file made unreadable
}

// fillSource fills Dovecot's account with iCloud- and Gmail-like folders
// and reads back what it holds, as the expectation. One message of
// "Broken" is made unreadable for Dovecot: it must be reported, the rest
// imported.
func fillSource(t *testing.T, d *dovecottest.Server) *fixture {
	c := d.Client()
	for _, f := range []string{"Sent Messages", "Deleted Messages", "Work", "Work/Projects", "Big", "Broken",
		"[Gmail]/All Mail", "[Gmail]/Sent Mail", "[Gmail]/Starred", "[Gmail]/Spam"} {
		if err := c.Create(f, nil).Wait(); err != nil {
			t.Fatalf("create %s: %v", f, err)
		}
	}
	inbox := [][]byte{textMsg("hello", "first"), textMsg("flags", "seen and answered"), textMsg("keywords", "forwarded and labelled")}
	appendMsg(t, c, "INBOX", inbox[0], old1999)
	appendMsg(t, c, "INBOX", inbox[1], old2005, imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged)
	appendMsg(t, c, "INBOX", inbox[2], time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC), imap.FlagSeen, "$Forwarded", "Work", "$Label1")
	for i, m := range malformed {
		appendMsg(t, c, "INBOX", m, old2005.AddDate(0, 0, i), imap.FlagDraft)
	}
	appendMsg(t, c, "Sent Messages", textMsg("sent from iphone", "hi"), old2005, imap.FlagSeen)
	appendMsg(t, c, "Deleted Messages", textMsg("deleted", "bye"), old2005, imap.FlagSeen, imap.FlagDeleted)
	appendMsg(t, c, "Work", textMsg("work", "top level"), old2005)
	appendMsg(t, c, "Work/Projects", textMsg("project a", "a"), old2005, "$Important")
	appendMsg(t, c, "Work/Projects", textMsg("project b", "b"), old2005)
	appendMsg(t, c, "Big", bigMsg(30<<20), old2005, imap.FlagSeen)
	for i := range 3 {
		appendMsg(t, c, "Broken", textMsg(fmt.Sprintf("broken %d", i), "x"), old2005)
	}
	// Gmail: All Mail holds the labelled messages again and two archived
	// ones; Starred is a view.
	for _, m := range inbox {
		appendMsg(t, c, "[Gmail]/All Mail", m, old2005, imap.FlagSeen)
	}
	appendMsg(t, c, "[Gmail]/All Mail", textMsg("archived one", "only in all mail"), old1999, imap.FlagSeen)
	appendMsg(t, c, "[Gmail]/All Mail", textMsg("archived two", "only in all mail"), old2005)
	appendMsg(t, c, "[Gmail]/Sent Mail", textMsg("sent from gmail", "hi"), old2005, imap.FlagSeen)
	appendMsg(t, c, "[Gmail]/Starred", inbox[1], old2005, imap.FlagFlagged)
	appendMsg(t, c, "[Gmail]/Spam", textMsg("spam", "buy"), old2005)

	targets := map[string]string{"INBOX": "INBOX", "Sent Messages": "Sent", "[Gmail]/Sent Mail": "Sent", "Deleted Messages": "Trash",
		"[Gmail]/Spam": "Junk", "Work": "Work", "Work/Projects": "Work/Projects", "Big": "Big"}
	f := &fixture{d: d, expect: map[string][]rec{}, targets: targets}
	targets["Broken"] = "Broken"
	defer delete(targets, "Broken")
	held := map[[32]byte]int{}
	for src, dst := range targets {
		rs := sourceRecs(t, c, src)
		if src == "Broken" {
			rs = rs[:0]
			for _, r := range sourceRecs(t, c, src) {
				if r.size != int64(len(textMsg("broken 1", "x"))) || r.sum != sumOf(textMsg("broken 1", "x")) {
					rs = append(rs, r)
				}
			}
		}
		f.expect[dst] = sortRecs(append(f.expect[dst], rs...))
		for _, r := range rs {
			held[r.sum]++
		}
	}
	for _, r := range sourceRecs(t, c, "[Gmail]/All Mail") {
		if held[r.sum] > 0 {
			held[r.sum]--
			continue
		}
		f.expect["Archive"] = append(f.expect["Archive"], r)
	}
	if len(f.expect["Archive"]) != 2 {
		t.Fatalf("fixture: All Mail should add 2 messages, adds %d", len(f.expect["Archive"]))
	}
	// Make "broken 1" unreadable for Dovecot's mail process.
	files, _ := filepath.Glob(filepath.Join(d.Maildir, "Broken", "*", "*"))
	n := 0
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil && bytes.Contains(b, []byte("Subject: broken 1")) {
			if err := os.Chmod(file, 0); err != nil {
				t.Fatal(err)
			}
			f.broken = file
			n++
		}
	}
	if n != 1 {
		t.Fatalf("fixture: found %d files of the message to break", n)
	}
	return f
}

func sumOf(b []byte) [32]byte {
	return sha256Sum(b)
}

// check compares every target mailbox with the expectation.
func (f *fixture) check(t *testing.T, st *store.Store, acc *store.Account) {
	t.Helper()
	for name, want := range f.expect {
		equalRecs(t, "mailbox "+name, storedFolder(t, st, acc, name), want)
	}
	if _, err := st.MailboxByName(context.Background(), acc.ID, "[Gmail]/Starred"); err == nil {
		t.Errorf("Starred, a view, was imported as a mailbox")
	}
}

func (f *fixture) messages() int64 {
	n := 0
	for _, rs := range f.expect {
		n += len(rs)
	}
	return int64(n)
}

// TestImportIMAP imports a Dovecot account with iCloud- and Gmail-like
// folders: every message byte-identical with its flags and date, in the
// mailbox its folder maps to; a message Dovecot cannot send is reported
// and the rest imported; a second run copies nothing; a message added
// later is all a third run copies.
func TestImportIMAP(t *testing.T) {
	ctx := context.Background()
	d := dovecottest.Start(t, nil)
	f := fillSource(t, d)
	st := storetest.New(t)
	acc := newAccount(t, st, "alice@example.org")

	var out bytes.Buffer
	im := &Importer{Store: st, Account: acc, Log: testLog(t), Progress: NewProgress(&out, false)}
	src := IMAPSource{URL: d.URL(), Password: d.Pass, Connections: 3, RetryWait: 10 * time.Millisecond}
	if err := im.ImportIMAP(ctx, src); err != nil {
		t.Fatalf("import: %v\n%s", err, d.Log())
	}
	im.Progress.Finish()
	t.Logf("progress:\n%s", out.String())
	sum := im.Summary()
	if sum.Copied != f.messages() || sum.Duplicates != 3 {
		t.Errorf("summary: copied %d, duplicates %d; want %d and 3 (All Mail's copies of INBOX)", sum.Copied, sum.Duplicates, f.messages())
	}
	if len(sum.Failed) != 1 || sum.Failed[0].Folder != "Broken" || sum.Failed[0].ID != "UID 2" {
		t.Errorf("failures: %v, want UID 2 of Broken", sum.Failed)
	}
	if len(sum.Skipped) != 1 || !strings.HasPrefix(sum.Skipped[0], "[Gmail]/Starred") {
		t.Errorf("skipped folders: %v, want [Gmail]/Starred", sum.Skipped)
	}
	f.check(t, st, acc)
	f.compareMbsync(t, st, acc)

	// Again: nothing new.
	im2 := &Importer{Store: st, Account: acc, Log: testLog(t)}
	if err := im2.ImportIMAP(ctx, src); err != nil {
		t.Fatal(err)
	}
	if s := im2.Summary(); s.Copied != 0 || s.Duplicates != 0 || len(s.Failed) != 0 {
		t.Errorf("second run: %+v, want nothing done", s)
	}
	f.check(t, st, acc)

	// A week later: one new message.
	c := d.Client()
	late := textMsg("a week later", "new")
	appendMsg(t, c, "Work/Projects", late, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), imap.FlagSeen)
	f.expect["Work/Projects"] = sourceRecs(t, c, "Work/Projects")
	im3 := &Importer{Store: st, Account: acc, Log: testLog(t)}
	if err := im3.ImportIMAP(ctx, src); err != nil {
		t.Fatal(err)
	}
	if s := im3.Summary(); s.Copied != 1 || len(s.Failed) != 0 {
		t.Errorf("third run: %+v, want 1 copied", s)
	}
	f.check(t, st, acc)
}

// compareMbsync mirrors the source and the imported account with mbsync
// and compares them folder by folder as the import maps them: the same
// messages (as mbsync stores them) with the same flags.
func (f *fixture) compareMbsync(t *testing.T, st *store.Store, acc *store.Account) {
	t.Helper()
	// mbsync would stop at the message Dovecot cannot send.
	if err := os.Chmod(f.broken, 0o600); err != nil {
		t.Fatal(err)
	}
	source := mbsyncMirror(t, fmt.Sprintf("Host 127.0.0.1\nPort %s\nUser %s\nPass %s\nSSLType None\nAuthMechs LOGIN",
		f.d.Addr[strings.LastIndexByte(f.d.Addr, ':')+1:], f.d.User, f.d.Pass))
	imported := mbsyncMirror(t, serveIMAP(t, st, acc))
	want := map[string][]string{}
	held := map[string]int{}
	for src, dst := range f.targets {
		want[dst] = append(want[dst], source[src]...)
		for _, m := range source[src] {
			sum, _, _ := strings.Cut(m, "/")
			held[sum]++
		}
	}
	for _, m := range source["[Gmail]/All Mail"] {
		sum, _, _ := strings.Cut(m, "/")
		if held[sum] > 0 {
			held[sum]--
			continue
		}
		want["Archive"] = append(want["Archive"], m)
	}
	for dst, msgs := range want {
		if got, w := imported[dst], sortedStrings(msgs); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("mbsync of %s: imported %v, source %v", dst, got, w)
		}
	}
	if len(imported["INBOX"]) != 6 || len(imported["Archive"]) != 2 {
		t.Errorf("mbsync of the imported account: %d in INBOX, %d in Archive; want 6 and 2", len(imported["INBOX"]), len(imported["Archive"]))
	}
}
