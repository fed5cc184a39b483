package imapd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
)

// rawConnected reports whether the server still answers on r.
func (r *raw) alive() bool {
	r.t.Helper()
	r.tag++
	tag := fmt.Sprintf("r%d", r.tag)
	fmt.Fprintf(r.c, "%s NOOP\r\n", tag)
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := r.r.ReadString('\n')
		if err != nil {
			return false
		}
		if strings.HasPrefix(l, tag+" OK") {
			return true
		}
	}
}

// readUntilTagged reads lines up to the tagged response of tag, or to the
// end of the connection (then closed is set).
func (r *raw) readUntilTagged(tag string) (lines []string, status string, closed bool) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := r.r.ReadString('\n')
		if err != nil {
			return lines, "", true
		}
		l = strings.TrimRight(l, "\r\n")
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return lines, rest, false
		}
		lines = append(lines, l)
	}
}

// TestMalformedInput: a client's mistake is answered BAD (with a reason),
// never NO [SERVERBUG], and leaves the session usable, unless the input
// cannot be told from commands any more (then BYE and close). Nothing
// stored changes.
func TestMalformedInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("INBOX", crlf(simpleMsg))
	e.deliver("INBOX", crlf(simpleMsg))
	tests := []struct {
		name   string
		input  string // sent as is after "m1 "
		status string // prefix of the tagged answer ("" when the connection must close)
	}{
		{"unbalanced parenthesis", "FETCH 1 (FLAGS UID\r\n", "BAD"},
		{"extra parenthesis", "FETCH 1 (FLAGS))\r\n", "BAD"},
		{"sequence number 0", "FETCH 0:* FLAGS\r\n", "BAD"},
		{"sequence number past 2^32", "FETCH 1:4294967296 FLAGS\r\n", "BAD"},
		{"UID past 2^32", "UID FETCH 4294967297 FLAGS\r\n", "BAD"},
		{"section past 2^31", "FETCH 1 BODY[4294967296]\r\n", "BAD"},
		{"section 0", "FETCH 1 BODY[0]\r\n", "BAD"},
		{"section ending in a dot", "FETCH 1 BODY[1.]\r\n", "BAD"},
		{"partial of size 0", "FETCH 1 BODY[]<0.0>\r\n", "BAD"},
		{"unknown fetch item", "FETCH 1 (FLAGS BOGUS)\r\n", "BAD"},
		{"sequence number past the mailbox", "FETCH 5 FLAGS\r\n", "BAD"},
		{"NUL in a quoted string", "SEARCH SUBJECT \"a\x00b\"\r\n", "BAD"},
		{"NUL in a literal", "SEARCH SUBJECT {3+}\r\na\x00b\r\n", "BAD"},
		{"bad escape", "SEARCH SUBJECT \"a\\xb\"\r\n", "BAD"},
		{"unknown search key", "SEARCH BOGUS\r\n", "BAD"},
		{"search nested too deep", "SEARCH " + strings.Repeat("NOT ", 5000) + "ALL\r\n", "BAD"},
		{"5,000 nested ORs", "SEARCH " + strings.Repeat("OR ALL ", 5000) + "ALL\r\n", "BAD"},
		{"5,000 nested parentheses", "SEARCH " + strings.Repeat("(", 5000) + "ALL" + strings.Repeat(")", 5000) + "\r\n", "BAD"},
		{"bad date", "SEARCH SINCE 32-Foo-2024\r\n", "BAD"},
		{"literal size past 2^63", "SELECT {99999999999999999999}\r\n", ""},
		{"literal size 2^32", "SELECT {4294967296}\r\n", "BAD [TOOBIG]"},
		{"line of 100 KB", "NOOP " + strings.Repeat("x", 100<<10) + "\r\n", ""},
		{"unknown command", "FROB\r\n", "BAD"},
		{"unknown UID command", "UID FROB 1\r\n", "BAD"},
		{"missing argument", "SELECT\r\n", "BAD"},
		{"trailing garbage", "NOOP garbage\r\n", "BAD"},
		{"STORE of an unknown item", "STORE 1 +FLAGZ (\\Seen)\r\n", "BAD"},
		{"CREATE of an empty name", "CREATE \"\"\r\n", "NO"},
		{"CREATE of a/b//c", "CREATE a//b\r\n", "NO"},
		{"CREATE with bad modified UTF-7", "CREATE &Jjo\r\n", "NO"},
		{"LIST with bad modified UTF-7", "LIST \"\" &Jjo*\r\n", "OK"},
		{"APPEND with a bad date", "APPEND INBOX \"32-Foo-2024 00:00:00 +0000\" {1+}\r\nx\r\n", "BAD"},
		{"APPEND without a literal", "APPEND INBOX hello\r\n", "BAD"},
		{"ID with an odd list", "ID (\"name\")\r\n", "BAD"},
		{"bare LF ending", "NOOP\n", "OK"},
		{"control character in an atom", "SEL\x01ECT INBOX\r\n", "BAD"},
		{"8-bit in an atom", "SELECT INB\xc3\x96X\r\n", "BAD"},
		{"bare LF in a quoted string", "STATUS \"INBOX\n", "BAD"},
	}
	before := dbView(t, e.st, e.acc.ID, "INBOX")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.raw()
			r.t = t
			r.cmd("SELECT INBOX")
			fmt.Fprintf(r.c, "m1 %s", tc.input)
			lines, status, closed := r.readUntilTagged("m1")
			if strings.Contains(status, "SERVERBUG") || slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "SERVERBUG") }) {
				t.Fatalf("SERVERBUG for a client's mistake: %q %q", lines, status)
			}
			if tc.status == "" {
				// Answered, then closed.
				if !closed {
					_, _, closed = r.readUntilTagged("never")
				}
				if !closed {
					t.Fatalf("connection still open after %q", status)
				}
				return
			}
			if closed {
				t.Fatalf("connection closed (got %q), want %s", lines, tc.status)
			}
			if !strings.HasPrefix(status, tc.status) {
				t.Fatalf("answer %q, want %s", status, tc.status)
			}
			if !r.alive() {
				t.Fatal("session unusable afterwards")
			}
		})
	}
	if after := dbView(t, e.st, e.acc.ID, "INBOX"); !slices.Equal(before, after) {
		t.Fatalf("INBOX changed: %q -> %q", before, after)
	}
}

// TestResponseTextUTF8: a response text that quotes the client's input
// (cut to 30 bytes) is valid UTF-8 (RFC 9051 text), whatever bytes the
// input held and wherever the cut falls.
func TestResponseTextUTF8(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	r.cmd("SELECT INBOX")
	tests := []struct{ input, want string }{
		{"SEARCH SENTBEFORE \"1-Jan-2020\xff\"", "BAD Invalid date 1-Jan-2020?"},
		{"SEARCH SENTBEFORE \"a" + strings.Repeat("\u00e9", 20) + "\"", "BAD Invalid date a" + strings.Repeat("\u00e9", 14) + "..."},
		{"APPEND INBOX \"\xfe\" {1+}\r\nx", "BAD Invalid date-time ?"},
		{"SEARCH SENTBEFORE \"\u00e9t\u00e9\"", "BAD Invalid date \u00e9t\u00e9"},
	}
	for _, tc := range tests {
		_, status := r.try(tc.input)
		if status != tc.want || !utf8.ValidString(status) {
			t.Errorf("%q: %q, want %q", tc.input, status, tc.want)
		}
	}
}

// TestSearchKeyLikeOption: a search key that starts like RETURN or
// CHARSET, on a line shorter than those words, is answered at once. The
// server must not wait for bytes past the end of the line, which a client
// waiting for the answer never sends.
func TestSearchKeyLikeOption(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("INBOX", crlf(simpleMsg))
	tests := []struct {
		input  string
		status string
	}{
		{"SEARCH CC a", "OK"},
		{"UID SEARCH CC a", "OK"},
		{`SEARCH CC ""`, "OK"},
		{"SEARCH RE", "BAD"},
		{"SEARCH C", "BAD"},
		{"SEARCH RECENT", "OK"},
		{"SEARCH RETURN () ALL", "OK"},
		{"SEARCH CHARSET UTF-8 ALL", "OK"},
	}
	r := e.raw()
	r.cmd("SELECT INBOX")
	for i, tc := range tests {
		tag := fmt.Sprintf("k%d", i)
		fmt.Fprintf(r.c, "%s %s\r\n", tag, tc.input)
		lines, status, closed := r.readUntilTagged(tag)
		if closed || !strings.HasPrefix(status, tc.status) {
			t.Fatalf("%s: %q %q closed=%v, want %s", tc.input, lines, status, closed, tc.status)
		}
	}
}

// TestNoCommandInjection: after any refused command, nothing of its line
// runs, wherever the line is cut: a search string long enough to pass the
// old 50 KiB limit, with a CREATE hidden after it, at every length around
// the line limit and the old one. Lines within the limit get BAD; longer
// ones end the connection.
func TestNoCommandInjection(t *testing.T) {
	e := newEnv(t, envOptions{})
	cuts := []int{50 << 10, 51_200, (50 << 10) + 1, 60 << 10, (64 << 10) - 40, (64 << 10) - 30, (64 << 10) - 25,
		(64 << 10) - 1, 64 << 10, (64 << 10) + 1, 70 << 10, 100 << 10, 1 << 20}
	for _, n := range cuts {
		r := e.raw()
		r.cmd("SELECT INBOX")
		fmt.Fprintf(r.c, "c SEARCH TEXT \"%s\"Z CREATE \"injected\"\r\n", strings.Repeat("A", n))
		lines, status, closed := r.readUntilTagged("c")
		// The whole line, CRLF included, within the limit: BAD and the
		// session goes on. Past it: BAD or nothing, then BYE and close.
		within := len(`c SEARCH TEXT "`)+n+len(`"Z CREATE "injected"`)+2 <= 64<<10
		switch {
		case !closed && !strings.HasPrefix(status, "BAD"):
			t.Errorf("cut at %d: %q %q, want BAD", n, lines, status)
		case within && (closed || !r.alive()):
			t.Errorf("cut at %d: session ended for a line within the limit", n)
		case !within && !closed && r.alive():
			t.Errorf("cut at %d: session goes on after an over-long line", n)
		}
	}
	noInjectedMailbox(t, e)
	for _, n := range cuts {
		if len(`c SEARCH TEXT "`)+n+len(`"`)+2 <= 64<<10 {
			continue // a line within the limit: the next one is a command
		}
		// Lines past the limit end the connection before anything after
		// them is read: check with a fresh account state per cut.
		e2 := newEnv(t, envOptions{})
		r := e2.raw()
		fmt.Fprintf(r.c, "c SEARCH TEXT \"%s\"\r\nZ CREATE after\r\n", strings.Repeat("A", n))
		_, _, closed := r.readUntilTagged("Z")
		if !closed {
			t.Errorf("cut at %d: the command after an over-long line ran", n)
		}
		if _, err := e2.st.MailboxByName(context.Background(), e2.acc.ID, "after"); err == nil {
			t.Errorf("cut at %d: mailbox created after an over-long line", n)
		}
	}
}

// TestNoInjectionAfterNO: a command refused with NO before its end (an
// unknown charset, a database error) has the rest of its line dropped as
// one refused with BAD does: nothing of it runs.
func TestNoInjectionAfterNO(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	r.cmd("SELECT INBOX")
	for i, input := range []string{
		`SEARCH CHARSET "X-NONE"Z CREATE injected1`,
		`SEARCH CHARSET X-NONE Z CREATE injected2`,
		`UID SEARCH CHARSET X-NONE ALL Z CREATE {9+}` + "\r\ninjected3",
	} {
		tag := fmt.Sprintf("n%d", i)
		fmt.Fprintf(r.c, "%s %s\r\n", tag, input)
		lines, status, closed := r.readUntilTagged(tag)
		if closed || !strings.HasPrefix(status, "NO [BADCHARSET") {
			t.Fatalf("%s: %q %q closed=%v, want NO [BADCHARSET]", input, lines, status, closed)
		}
		if !r.alive() {
			t.Fatalf("%s: session unusable afterwards", input)
		}
	}
	noInjectedMailbox(t, e)
}

// TestLiteralBeforeLogin: an unknown command before login (new Outlook
// sends ID with literals; others send what we do not know) gets BAD, and
// its literal is never read as commands: a synchronising one is not
// asked for, a non-synchronising one is dropped.
func TestLiteralBeforeLogin(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name, input string
	}{
		{"synchronising", "x1 XUNKNOWN {23}\r\n"},
		{"non-synchronising", "x1 XUNKNOWN {23+}\r\nx2 LOGIN nobody secret\r\n"},
		{"two non-synchronising", "x1 XUNKNOWN {5+}\r\nhello {23+}\r\nx2 LOGIN nobody secret\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.dialRaw()
			r.t = t
			io.WriteString(r.c, tc.input)
			lines, status, closed := r.readUntilTagged("x1")
			if closed || !strings.HasPrefix(status, "BAD") || len(lines) != 0 {
				t.Fatalf("%q %q closed=%v, want BAD and no continuation", lines, status, closed)
			}
			if _, status := r.try("LOGIN " + e.user + " " + e.pass); !strings.HasPrefix(status, "OK") {
				t.Fatalf("LOGIN afterwards: %q", status)
			}
		})
	}
	// ID with literals before login works.
	r := e.dialRaw()
	io.WriteString(r.c, "i1 ID (\"name\" {7}\r\n")
	if l := r.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("ID literal: %q", l)
	}
	io.WriteString(r.c, "Outlook \"version\" {4+}\r\n16.0)\r\n")
	if lines, status, _ := r.readUntilTagged("i1"); !strings.HasPrefix(status, "OK") || len(lines) != 1 || !strings.HasPrefix(lines[0], `* ID ("name" "mailstack"`) {
		t.Fatalf("ID with literals: %q %q", lines, status)
	}
}

// TestIDRecorded: the client's ID (before or after login) is recorded with
// the login, for the activity log, and on the app password.
func TestIDRecorded(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	before := e.dialRaw()
	before.cmd(`ID ("name" "iPhone Mail" "version" "18.2" "os" "iOS" "os-version" "18.2")`)
	before.cmd("LOGIN " + e.user + " " + e.pass)
	after := e.raw()
	got := after.cmd(`ID ("name" "Thunderbird" "version" "140.1")`)
	if len(got) != 1 || !strings.HasPrefix(got[0], `* ID ("name" "mailstack" "version" `) {
		t.Fatalf("ID answer: %q", got)
	}
	events, err := e.st.AuthEvents(ctx, e.acc.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	var clients []string
	for _, ev := range events {
		clients = append(clients, ev.Client)
	}
	if !slices.Contains(clients, "iPhone Mail 18.2 (iOS 18.2)") || !slices.Contains(clients, "Thunderbird 140.1") {
		t.Fatalf("activity clients = %q", clients)
	}
	aps, err := e.st.AppPasswords(ctx, e.acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(aps, func(a store.AppPassword) bool { return a.ID == e.appID }); i < 0 || aps[i].LastClient != "Thunderbird 140.1" {
		t.Fatalf("app password's last client: %+v", aps)
	}
}

// TestRecent: \Recent (RFC 3501 §2.3.2) is set for exactly one session,
// the first to be told of a message; EXAMINE shows it without taking it;
// STATUS counts what no session has seen; SEARCH RECENT, NEW and OLD
// follow the session's flags; IMAP4rev2 sends no RECENT.
func TestRecent(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 2 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	x := e.raw()
	if got := x.cmd("STATUS INBOX (RECENT)"); !slices.Equal(got, []string{`* STATUS INBOX (RECENT 2)`}) {
		t.Fatalf("STATUS before any SELECT: %q", got)
	}
	if got := x.cmd("EXAMINE INBOX"); !slices.Contains(got, "* 2 RECENT") {
		t.Fatalf("EXAMINE: %q", got)
	}
	a, b := e.raw(), e.raw()
	if got := a.cmd("SELECT INBOX"); !slices.Contains(got, "* 2 RECENT") {
		t.Fatalf("first SELECT: %q", got)
	}
	if got := b.cmd("SELECT INBOX"); !slices.Contains(got, "* 0 RECENT") {
		t.Fatalf("second SELECT: %q", got)
	}
	if got := x.cmd("STATUS INBOX (RECENT)"); !slices.Equal(got, []string{`* STATUS INBOX (RECENT 0)`}) {
		t.Fatalf("STATUS after SELECT: %q", got)
	}
	if got := a.cmd("SEARCH RECENT"); !slices.Equal(got, []string{"* SEARCH 1 2"}) {
		t.Fatalf("A: SEARCH RECENT %q", got)
	}
	if got := b.cmd("SEARCH OLD"); !slices.Equal(got, []string{"* SEARCH 1 2"}) {
		t.Fatalf("B: SEARCH OLD %q", got)
	}
	// A new message: exactly one of the sessions gets it as \Recent,
	// whichever hears of it first.
	e.deliver("INBOX", crlf(simpleMsg))
	recent := 0
	for _, r := range []*raw{a, b} {
		var got []string
		for range 50 {
			if got = r.cmd("NOOP"); slices.Contains(got, "* 3 EXISTS") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		fl := strings.Join(r.cmd("FETCH 3 FLAGS"), " ")
		if strings.Contains(fl, `\Recent`) {
			recent++
			if !slices.Contains(got, "* 3 RECENT") {
				t.Errorf("the session with the \\Recent message was not told: %q", got)
			}
			if got := r.cmd("SEARCH NEW"); !slices.Equal(got, []string{"* SEARCH 3"}) && !slices.Equal(got, []string{"* SEARCH 1 2 3"}) {
				t.Errorf("SEARCH NEW: %q", got)
			}
		}
	}
	if recent != 1 {
		t.Fatalf("%d sessions see the new message as \\Recent, want 1", recent)
	}
	// STORE cannot set \Recent; IMAP4rev2 sessions get no RECENT.
	a.cmd(`STORE 1 +FLAGS (\Recent)`)
	rev2 := e.raw()
	rev2.cmd("ENABLE IMAP4rev2")
	for _, l := range rev2.cmd("SELECT INBOX") {
		if strings.Contains(l, "RECENT") {
			t.Fatalf("IMAP4rev2 SELECT: %q", l)
		}
	}
}

// TestKeywordAnnounced: a keyword another session creates reaches this
// session's FLAGS and PERMANENTFLAGS before any FETCH that carries it
// (imaptest's "Keyword used without being in FLAGS").
func TestKeywordAnnounced(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("INBOX", crlf(simpleMsg))
	a := e.raw()
	a.cmd("SELECT INBOX")
	b := e.login(nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Fresh"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	got := a.cmd("NOOP")
	iFlags := slices.IndexFunc(got, func(l string) bool { return strings.HasPrefix(l, "* FLAGS ") && strings.Contains(l, "$Fresh") })
	iPerm := slices.IndexFunc(got, func(l string) bool {
		return strings.HasPrefix(l, "* OK [PERMANENTFLAGS ") && strings.Contains(l, "$Fresh")
	})
	iFetch := slices.IndexFunc(got, func(l string) bool { return strings.Contains(l, "FETCH") && strings.Contains(l, "$Fresh") })
	if iFlags < 0 || iPerm < 0 || iFetch < 0 || iFlags > iFetch || iPerm > iFetch {
		t.Fatalf("NOOP: %q, want FLAGS and PERMANENTFLAGS with $Fresh before the FETCH", got)
	}
	// Announced once.
	b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsDel, Silent: true, Flags: []imap.Flag{"$Fresh"}}, nil).Close()
	b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Fresh"}}, nil).Close()
	for _, l := range a.cmd("NOOP") {
		if strings.HasPrefix(l, "* FLAGS ") {
			t.Fatalf("keyword announced again: %q", l)
		}
	}
}

// TestBinaryAppend: a message appended as a literal8 (BINARY) whose part
// holds NUL is stored with that part in base64 (no literal could carry it
// to a BODY[] fetch, RFC 3516 §4.3), and BINARY[] gives the original bytes.
func TestBinaryAppend(t *testing.T) {
	e := newEnv(t, envOptions{})
	bin := "\x00-\xe4\n\r\n\n"
	msg := "From: user@domain.org\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + bin
	r := e.raw()
	fmt.Fprintf(r.c, "a1 APPEND INBOX ~{%d+}\r\n%s\r\n", len(msg), msg)
	if _, status, _ := r.readUntilTagged("a1"); !strings.HasPrefix(status, "OK") {
		t.Fatalf("APPEND ~{}: %q", status)
	}
	r.cmd("SELECT INBOX")
	name, body := r.fetchLiteral("FETCH 1 BODY.PEEK[1]")
	if name != "BODY[1]" || bytes.IndexByte(body, 0) >= 0 || strings.TrimSpace(string(body)) != "AC3kCg0KCg==" {
		t.Fatalf("BODY[1] = %s %q, want base64", name, body)
	}
	if name, data := r.fetchLiteral("FETCH 1 BINARY.PEEK[1]"); name != "BINARY[1]" || string(data) != bin {
		t.Fatalf("BINARY[1] = %s %q, want %q", name, data, bin)
	}
}

// TestLiteralPlusAppendLarge: a 40 MB APPEND with a non-synchronising
// literal streams into the store and comes back byte for byte; the heap
// does not grow with it (the benchmark reports the figure).
func TestLiteralPlusAppendLarge(t *testing.T) {
	e := newEnv(t, envOptions{maxMessageSize: 64 << 20})
	msg := largeMessage(40 << 20)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := e.raw()
	start := time.Now()
	fmt.Fprintf(r.c, "a1 APPEND INBOX {%d+}\r\n", len(msg))
	if _, err := r.c.Write(msg); err != nil {
		t.Fatal(err)
	}
	io.WriteString(r.c, "\r\n")
	r.c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, status, _ := r.readUntilTagged("a1"); !strings.HasPrefix(status, "OK") {
		t.Fatalf("APPEND: %q", status)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("40 MB LITERAL+ APPEND in %v; heap in use %d -> %d MiB", time.Since(start).Round(time.Millisecond),
		before.HeapInuse>>20, after.HeapInuse>>20)
	c := e.login(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	fetch := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	m := fetch.Next()
	if m == nil {
		t.Fatal("no message")
	}
	h := sha256.New()
	for {
		item := m.Next()
		if item == nil {
			break
		}
		if sec, ok := item.(imapclient.FetchItemDataBodySection); ok {
			io.Copy(h, sec.Literal)
		}
	}
	if err := fetch.Close(); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(msg); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("stored message differs")
	}
	// Over APPENDLIMIT with LITERAL+: NO [TOOBIG], then the connection
	// ends (the data is on its way and too large to drop); a small one
	// over the limit is dropped and the session goes on.
	small := newEnv(t, envOptions{maxMessageSize: 4096})
	s := small.raw()
	fmt.Fprintf(s.c, "a2 APPEND INBOX {5000+}\r\n%s\r\n", strings.Repeat("x", 5000))
	if _, status, _ := s.readUntilTagged("a2"); !strings.HasPrefix(status, "NO [TOOBIG]") {
		t.Fatalf("small APPEND over the limit: %q", status)
	}
	if !s.alive() {
		t.Fatal("session ended after a small refused literal")
	}
	fmt.Fprintf(s.c, "a3 APPEND INBOX {5000000+}\r\n")
	s.c.Write(bytes.Repeat([]byte("x"), 100_000))
	if _, status, _ := s.readUntilTagged("a3"); !strings.HasPrefix(status, "NO [TOOBIG]") {
		t.Fatalf("large APPEND over the limit: %q", status)
	}
	if _, _, closed := s.readUntilTagged("never"); !closed {
		t.Fatal("connection open after a large refused non-synchronising literal")
	}
}

// largeMessage is a message of about n bytes with short lines.
func largeMessage(n int) []byte {
	var b bytes.Buffer
	b.WriteString(crlf(simpleMsg))
	line := strings.Repeat("0123456789", 7) + "\r\n"
	for b.Len() < n {
		b.WriteString(line)
	}
	return b.Bytes()
}

// TestFetchOfExpungedBody: a message still in the session's view that
// another session (on another server, not heard of yet) has expunged is
// never cut off in the middle of a literal; the session goes on. Its row
// read from the database is gone: it is left out (OK, as ever). Its row
// cached, but a body too large to cache read by chunk (its content no
// longer the account's): NO [EXPUNGEISSUED] before any of its response.
func TestFetchOfExpungedBody(t *testing.T) {
	for _, tc := range []struct {
		size   int
		status string
	}{{10 << 10, "OK"}, {600 << 10, "NO [EXPUNGEISSUED]"}} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) { fetchOfExpungedBody(t, tc.size, tc.status) })
	}
}

func fetchOfExpungedBody(t *testing.T, size int, want string) {
	e := newEnv(t, envOptions{})
	e.deliver("INBOX", string(largeMessage(size)))
	inbox := mailboxID(t, e, "INBOX")
	a := e.raw()
	a.cmd("SELECT INBOX")
	a.cmd("FETCH 1 (FLAGS RFC822.SIZE)") // the row is cached now, not the body
	stall := stallFeed(t, e.srv, inbox)
	e2 := newEnv(t, envOptions{st: e.st})
	b := e2.login(nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	expungeSet(t, b, imap.SeqSetNum(1))
	fmt.Fprintf(a.c, "f1 FETCH 1 BODY.PEEK[]\r\n")
	lines, status, closed := a.readUntilTagged("f1")
	if closed || len(lines) != 0 || !strings.HasPrefix(status, want) {
		t.Fatalf("FETCH of an expunged body: %q %q closed=%v, want %s alone", lines, status, closed, want)
	}
	stall.open()
	if !a.alive() {
		t.Fatal("session ended")
	}
}

// noInjectedMailbox fails the test if a mailbox named injected… exists: the
// rest of a refused line was run as a command.
func noInjectedMailbox(t *testing.T, e *env) {
	t.Helper()
	mbs, err := e.st.Mailboxes(context.Background(), e.acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range mbs {
		if strings.HasPrefix(mb.Name, "injected") {
			t.Errorf("mailbox %q created by the rest of a refused line", mb.Name)
		}
	}
}
