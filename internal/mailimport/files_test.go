package mailimport

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// fillAccount stores a variety of messages directly: "From " and ">From "
// at line starts (mbox's escaping), LF-only and CRLF lines, 8-bit bytes,
// a body of several chunks, flags and keywords, old dates, nested
// mailboxes.
func fillAccount(t *testing.T, st *store.Store, acc *store.Account) {
	ctx := context.Background()
	big := bigMsg(600 << 10)
	msgs := map[string][]struct {
		body  []byte
		flags []string
		date  time.Time
	}{
		"INBOX": {
			{textMsg("plain", "hello"), nil, old1999},
			{[]byte("Subject: from lines\n\nFrom the start\n>From quoted\n>>From twice\nnot From here\nFrom \n"), []string{`\Seen`}, old2005},
			{[]byte("Subject: lf only\n\nbody\n"), []string{`\Answered`, `$Forwarded`, `Work`}, old2005},
			{[]byte("Subject: empty lines at the end\r\n\r\nbody\r\n\r\n\r\n"), []string{`\Flagged`, `\Draft`, `\Deleted`}, old2005},
			{malformed[0], []string{`$Label1`}, old2005},
			{malformed[1], nil, old2005},
		},
		"Sent":          {{textMsg("sent", "s"), []string{`\Seen`}, old1999}},
		"Work/Projects": {{textMsg("deep", "d"), []string{`$Important`}, old2005}, {big, nil, old2005}},
		"Trash":         {{textMsg("x", "x"), []string{`\Seen`, `\Deleted`}, old2005}},
	}
	for name, list := range msgs {
		mb, err := st.MailboxByName(ctx, acc.ID, name)
		if err != nil {
			if mb, err = st.CreateMailbox(ctx, acc.ID, name, ""); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range list {
			if _, err := st.Append(ctx, acc.ID, mb.ID, bytes.NewReader(m.body), 0, m.flags, m.date); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestExportImportRoundTrip exports an account to Maildir and to mbox,
// imports each into a new account and compares every mailbox: contents
// byte for byte and dates (and flags and keywords with Maildir; mbox
// keeps none). Importing the same files again copies nothing.
func TestExportImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	src := newAccount(t, st, "src@example.org")
	fillAccount(t, st, src)
	mbs, err := st.Mailboxes(ctx, src.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		format    string
		withFlags bool
	}{
		{FormatMaildir, true},
		{FormatMbox, false},
	} {
		t.Run(tc.format, func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			ex := &Exporter{Store: st, Account: src, Progress: NewProgress(&out, false)}
			sum, err := ex.Export(ctx, dir, tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Messages != 10 || sum.DroppedKeywords != 0 {
				t.Errorf("export summary %+v, want 10 messages", sum)
			}
			dst := newAccount(t, st, "dst"+string(rune('0'+i))+"@example.org")
			im := &Importer{Store: st, Account: dst, Log: testLog(t), BatchMessages: 3}
			imp := func(im *Importer) func(context.Context, string) error {
				if tc.format == FormatMbox {
					return im.ImportMbox
				}
				return im.ImportMaildir
			}
			if err := imp(im)(ctx, dir); err != nil {
				t.Fatal(err)
			}
			if s := im.Summary(); s.Copied != 10 || len(s.Failed) != 0 {
				t.Errorf("import summary %+v, want 10 copied", s)
			}
			for _, mb := range mbs {
				want := storedFolder(t, st, src, mb.Name)
				if !tc.withFlags {
					for i := range want {
						want[i].flags = ""
					}
					want = sortRecs(want)
				}
				equalRecs(t, tc.format+" "+mb.Name, storedFolder(t, st, dst, mb.Name), want)
			}
			again := &Importer{Store: st, Account: dst}
			if err := imp(again)(ctx, dir); err != nil {
				t.Fatal(err)
			}
			if s := again.Summary(); s.Copied != 0 || s.Duplicates != 10 {
				t.Errorf("second import: %+v, want 10 duplicates and nothing copied", s)
			}
		})
	}
}

// TestMboxReader reads hand-written mbox files: the escaping of mboxrd,
// the empty line before each From_ line, a last message without one,
// dates of From_ lines.
func TestMboxReader(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		dates    []string
	}{
		{"two", "From a Thu Jan  1 10:00:00 1999\nSubject: 1\n\nx\n\nFrom b Sat Dec 31 23:59:59 2005\nSubject: 2\n\n>From y\n>>From z\n\n",
			[]string{"Subject: 1\n\nx\n", "Subject: 2\n\nFrom y\n>From z\n"}, []string{"1999-01-01T10:00:00Z", "2005-12-31T23:59:59Z"}},
		{"no final empty line", "From a Thu Jan  1 10:00:00 1999\nA: b\n\nlast", []string{"A: b\n\nlast"}, []string{"1999-01-01T10:00:00Z"}},
		{"empty lines kept", "From x\r\nA: b\r\n\r\n\n\n\nFrom y\n\n", []string{"A: b\r\n\r\n\n\n", ""}, []string{"0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"}},
		{"empty file", "", nil, nil},
		// A From_ line longer than the reader's buffer: none of it is the
		// message that follows.
		{"long From_ line", "From a\nA: b\n\nFrom " + strings.Repeat("x", 200<<10) + " Thu Jan  1 10:00:00 1999\nB: c\n",
			[]string{"A: b\n", "B: c\n"}, []string{"0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"}},
		// CRLF lines throughout: the empty line before a From_ line is
		// CRLF, and as much the format's as LF in a file of LF lines.
		{"CRLF", "From a Thu Jan  1 10:00:00 1999\r\nA: b\r\n\r\nx\r\n\r\nFrom b Thu Jan  1 10:00:00 1999\r\nB: c\r\n\r\n>From y\r\n\r\n",
			[]string{"A: b\r\n\r\nx\r\n", "B: c\r\n\r\nFrom y\r\n"}, []string{"1999-01-01T10:00:00Z", "1999-01-01T10:00:00Z"}},
		{"NUL bytes, garbage date", "From a Thu Jan 99 10:00:00 1999\nA: \x00b\n\n\x00\n", []string{"A: \x00b\n\n\x00\n"}, []string{"0001-01-01T00:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMboxReader(strings.NewReader(tc.in))
			var got, dates []string
			for {
				from, ok, err := r.next()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				var b bytes.Buffer
				if _, err := b.ReadFrom(r); err != nil {
					t.Fatal(err)
				}
				got = append(got, b.String())
				dates = append(dates, fromLineDate(from).Format(time.RFC3339))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || strings.Join(dates, "|") != strings.Join(tc.dates, "|") {
				t.Errorf("got %q %q, want %q %q", got, dates, tc.want, tc.dates)
			}
		})
	}
	if _, _, err := newMboxReader(strings.NewReader("Subject: not mbox\n")).next(); err == nil {
		t.Error("a file without From_ line was read as mbox")
	}
}

// TestImportMaildirLayouts reads Maildir++ (".Sent", ".Work.Projects")
// and directory trees, flags from names, keywords from dovecot-keywords.
func TestImportMaildirLayouts(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	write := func(path, body string, date time.Time) {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, sub := range []string{"cur", "new", "tmp"} {
			os.MkdirAll(filepath.Join(filepath.Dir(filepath.Dir(p)), sub), 0o700)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, date, date); err != nil {
			t.Fatal(err)
		}
	}
	write("cur/1.a:2,RS", "Subject: inbox\n\n1\n", old1999)
	write("new/2.b", "Subject: new\n\n2\n", old2005)
	write(".Sent Messages/cur/3.c:2,Sa", "Subject: sent\n\n3\n", old2005)
	write(".Sent Messages/dovecot-keywords", "0 $Forwarded\n1 unused\n", old2005)
	write(".Work.Projects/cur/4.d:2,FTb", "Subject: project\n\n4\n", old2005)
	write(".Work.Projects/dovecot-keywords", "0 a\n1 Work\n", old2005)
	write("Lists/go/cur/5.e:2,", "Subject: fs layout\n\n5\n", old2005)
	st := storetest.New(t)
	acc := newAccount(t, st, "m@example.org")
	im := &Importer{Store: st, Account: acc}
	if err := im.ImportMaildir(ctx, root); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mailbox string
		flags   []string
		date    time.Time
	}{
		{"INBOX", []string{"", `\Answered \Seen`}, old1999},
		{"Sent", []string{`$Forwarded \Seen`}, old2005},
		{"Work/Projects", []string{`Work \Deleted \Flagged`}, old2005},
		{"Lists/go", []string{""}, old2005},
	} {
		got := storedFolder(t, st, acc, tc.mailbox)
		var flags []string
		for _, r := range got {
			flags = append(flags, r.flags)
		}
		if len(got) != len(tc.flags) || strings.Join(sortedStrings(flags), "|") != strings.Join(sortedStrings(tc.flags), "|") {
			t.Errorf("%s: flags %q, want %q", tc.mailbox, flags, tc.flags)
		}
	}
	if s := im.Summary(); s.Copied != 5 {
		t.Errorf("summary %+v, want 5 copied", s)
	}
}

// TestBadMessagesDoNotStop: a message over the size limit, in an mbox
// and in a Maildir, or a symbolic link in a Maildir (not followed: it may
// point anywhere the importing user can read) is reported; the messages
// around it are imported. A Maildir++ folder whose name makes no mailbox
// is skipped.
func TestBadMessagesDoNotStop(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	big := strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name    string
		setup   func(dir string) string // returns the path to import
		mbox    bool
		failed  []string // Failure.ID of each failure
		reason  string   // of the first
		skipped int      // folders
	}{
		{"mbox", func(dir string) string {
			p := filepath.Join(dir, "INBOX.mbox")
			os.WriteFile(p, []byte("From a Thu Jan  1 10:00:00 1999\nSubject: 1\n\nok\n\nFrom b Thu Jan  1 10:00:00 1999\nSubject: 2\n\n"+big+"\n\nFrom c Thu Jan  1 10:00:00 1999\nSubject: 3\n\nok\n\n"), 0o600)
			return p
		}, true, []string{"message 2"}, "larger than the limit of 1000 bytes", 0},
		{"maildir", func(dir string) string {
			for _, sub := range []string{"cur", "new", "tmp"} {
				os.MkdirAll(filepath.Join(dir, sub), 0o700)
			}
			os.WriteFile(filepath.Join(dir, "cur", "1.a:2,S"), []byte("Subject: 1\n\nok\n"), 0o600)
			os.WriteFile(filepath.Join(dir, "cur", "2.b:2,S"), []byte("Subject: 2\n\n"+big+"\n"), 0o600)
			os.WriteFile(filepath.Join(dir, "cur", "3.c:2,S"), []byte("Subject: 3\n\nok\n"), 0o600)
			return dir
		}, false, []string{"cur/2.b:2,S"}, "larger than the limit of 1000 bytes", 0},
		{"maildir-symlink", func(dir string) string {
			secret := filepath.Join(t.TempDir(), "secret")
			os.WriteFile(secret, []byte("Subject: outside\n\nnot mail\n"), 0o600)
			for _, sub := range []string{"cur", "new", "tmp", ".a..b/cur"} {
				os.MkdirAll(filepath.Join(dir, sub), 0o700)
			}
			os.WriteFile(filepath.Join(dir, "cur", "1.a:2,S"), []byte("Subject: 1\n\nok\n"), 0o600)
			os.Symlink(secret, filepath.Join(dir, "cur", "2.b:2,S"))
			os.WriteFile(filepath.Join(dir, "new", "3.c"), []byte("Subject: 3\n\nok\n"), 0o600)
			os.WriteFile(filepath.Join(dir, ".a..b", "cur", "4.d:2,"), []byte("Subject: 4\n\nok\n"), 0o600)
			return dir
		}, false, []string{"cur/2.b:2,S"}, "symbolic link", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acc := newAccount(t, st, tc.name+"@example.org")
			im := &Importer{Store: st, Account: acc, MaxMessageSize: 1000}
			path := tc.setup(t.TempDir())
			imp := im.ImportMaildir
			if tc.mbox {
				imp = im.ImportMbox
			}
			if err := imp(ctx, path); err != nil {
				t.Fatal(err)
			}
			s := im.Summary()
			var ids []string
			for _, f := range s.Failed {
				ids = append(ids, f.ID)
			}
			if s.Copied != 2 || strings.Join(ids, ",") != strings.Join(tc.failed, ",") || !strings.Contains(s.Failed[0].Reason, tc.reason) || len(s.Skipped) != tc.skipped {
				t.Errorf("summary %+v, want 2 copied, failures %v (%s), %d skipped", s, tc.failed, tc.reason, tc.skipped)
			}
			if got := storedFolder(t, st, acc, "INBOX"); len(got) != 2 {
				t.Errorf("INBOX holds %d messages, want 2", len(got))
			}
		})
	}
}
