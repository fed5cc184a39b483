package imapd

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
)

// TestMetadata: SETMETADATA and GETMETADATA over TLS with imapclient, as
// Delta Chat uses them (/private/devicetoken): server and mailbox entries,
// the computed /shared/admin and /private/specialuse, DEPTH, deletion with
// NIL, entries seen from another session, and a mailbox's entries going
// with the mailbox when it is deleted and moving with it on RENAME.
func TestMetadata(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	val := func(s string) *[]byte { b := []byte(s); return &b }
	get := func(c *imapclient.Client, mailbox string, entries []string, depth imapclient.GetMetadataDepth) string {
		t.Helper()
		data, err := c.GetMetadata(mailbox, entries, &imapclient.GetMetadataOptions{Depth: depth}).Wait()
		if err != nil {
			t.Fatalf("GETMETADATA %q %v: %v", mailbox, entries, err)
		}
		var l []string
		for _, k := range slices.Sorted(maps.Keys(data.Entries)) {
			if v := data.Entries[k]; v == nil {
				l = append(l, k+"=NIL")
			} else {
				l = append(l, k+"="+string(*v))
			}
		}
		return strings.Join(l, " ")
	}
	set := func(mailbox string, entries map[string]*[]byte) {
		t.Helper()
		if err := c.SetMetadata(mailbox, entries).Wait(); err != nil {
			t.Fatalf("SETMETADATA %q: %v", mailbox, err)
		}
	}
	set("", map[string]*[]byte{"/private/devicetoken": val("tok-1"), "/Shared/Comment": val("my server"), "/private/vendor/deltachat/x": val("1")})
	set("INBOX", map[string]*[]byte{"/private/comment": val("inbox note")})
	if err := c.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	set("Work", map[string]*[]byte{"/shared/comment": val("work note")})

	other := e.login(nil)
	for _, tc := range []struct {
		mailbox string
		entries []string
		depth   imapclient.GetMetadataDepth
		want    string
	}{
		{"", []string{"/private/devicetoken", "/shared/admin", "/private/missing"}, imapclient.GetMetadataDepthZero,
			"/private/devicetoken=tok-1 /private/missing=NIL /shared/admin=mailto:postmaster@example.test"},
		{"", []string{"/shared/comment"}, imapclient.GetMetadataDepthZero, "/shared/comment=my server"},
		{"", []string{"/private"}, imapclient.GetMetadataDepthOne, "/private/devicetoken=tok-1"},
		{"", []string{"/private", "/shared"}, imapclient.GetMetadataDepthInfinity,
			"/private/devicetoken=tok-1 /private/vendor/deltachat/x=1 /shared/admin=mailto:postmaster@example.test /shared/comment=my server"},
		{"INBOX", []string{"/private/comment", "/shared/comment"}, imapclient.GetMetadataDepthZero, "/private/comment=inbox note /shared/comment=NIL"},
		{"Sent", []string{"/private/specialuse"}, imapclient.GetMetadataDepthZero, `/private/specialuse=\Sent`},
		{"Work", []string{"/private", "/shared"}, imapclient.GetMetadataDepthInfinity, "/shared/comment=work note"},
	} {
		if got := get(other, tc.mailbox, tc.entries, tc.depth); got != tc.want {
			t.Errorf("GETMETADATA %q %v depth %v: %q, want %q", tc.mailbox, tc.entries, tc.depth, got, tc.want)
		}
	}
	// NIL deletes.
	set("", map[string]*[]byte{"/private/devicetoken": nil, "/private/vendor/deltachat/x": nil})
	if got := get(c, "", []string{"/private"}, imapclient.GetMetadataDepthInfinity); got != "" {
		t.Errorf("after deleting: %q", got)
	}
	// RENAME keeps a mailbox's entries; DELETE drops them.
	if err := c.Rename("Work", "Job", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := get(c, "Job", []string{"/shared/comment"}, 0); got != "/shared/comment=work note" {
		t.Errorf("after RENAME: %q", got)
	}
	if err := c.Delete("Job").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Job", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := get(c, "Job", []string{"/shared/comment"}, 0); got != "/shared/comment=NIL" {
		t.Errorf("after DELETE and CREATE: %q", got)
	}
}

// exchange sends parts of a command, each after the server's previous
// answer line (a continuation request, or the tagged response that ends
// the exchange), and returns every line read.
func (r *raw) exchange(parts ...string) []string {
	r.t.Helper()
	r.tag++
	tag := fmt.Sprintf("r%d", r.tag)
	var lines []string
	for i, p := range parts {
		if i == 0 {
			p = tag + " " + p
		}
		io.WriteString(r.c, p)
		if i == len(parts)-1 {
			break
		}
		l := r.line()
		lines = append(lines, l)
		if !strings.HasPrefix(l, "+") {
			return lines
		}
	}
	for {
		l := r.line()
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return append(lines, rest)
		}
		lines = append(lines, l)
	}
}

// TestMetadataProtocol: the wire forms and the refusals of GETMETADATA and
// SETMETADATA: entry-name checks, read-only entries, unknown mailboxes,
// options, MAXSIZE with LONGENTRIES, literal and literal8 values (binary
// data back as a literal8), values over the limit refused before they are
// sent ([METADATA MAXSIZE]) or read and dropped (LITERAL+), and the
// account's limits ([METADATA TOOMANY]), after which nothing changed.
func TestMetadataProtocol(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	big := store.MaxMetadataValue + 1
	for _, tc := range []struct {
		name  string
		parts []string
		want  string // lines joined with |, the tagged one without its tag
	}{
		{"missing entry", []string{"GETMETADATA \"\" /private/none\r\n"}, `* METADATA "" (/private/none NIL)|OK GETMETADATA completed`},
		{"set quoted", []string{"SETMETADATA INBOX (/private/comment \"hello\" /shared/x/y \"z\")\r\n"}, `OK SETMETADATA completed`},
		{"get list", []string{"GETMETADATA INBOX (/private/comment /shared/x/y)\r\n"}, `* METADATA INBOX (/private/comment "hello" /shared/x/y "z")|OK GETMETADATA completed`},
		{"depth infinity", []string{"GETMETADATA (DEPTH infinity) INBOX /shared\r\n"}, `* METADATA INBOX (/shared/x/y "z")|OK GETMETADATA completed`},
		{"depth 1 skips deeper", []string{"GETMETADATA (DEPTH 1) INBOX /shared\r\n"}, `OK GETMETADATA completed`},
		{"maxsize", []string{"GETMETADATA (MAXSIZE 3 DEPTH infinity) INBOX (/private /shared)\r\n"}, `* METADATA INBOX (/shared/x/y "z")|OK [METADATA LONGENTRIES 5] GETMETADATA completed`},
		{"synchronising literal", []string{"SETMETADATA \"\" (/private/lit {5}\r\n", "a\r\nb\")\r\n"}, `+ Ready for literal data|OK SETMETADATA completed`},
		{"literal back", []string{"GETMETADATA \"\" /private/lit\r\n"}, "* METADATA \"\" (/private/lit {5}|a|b\")|OK GETMETADATA completed"},
		{"literal8", []string{"SETMETADATA \"\" (/private/bin ~{3+}\r\nx\x00y)\r\n"}, `OK SETMETADATA completed`},
		{"literal8 back", []string{"GETMETADATA \"\" /private/bin\r\n"}, "* METADATA \"\" (/private/bin ~{3}|x\x00y)|OK GETMETADATA completed"},
		{"NUL in a literal", []string{"SETMETADATA \"\" (/private/bin {3+}\r\nx\x00y)\r\n"}, `BAD NUL in a literal; send it as a literal8 (~{n})`},
		{"too long, synchronising", []string{fmt.Sprintf("SETMETADATA \"\" (/private/big {%d}\r\n", big)}, `NO [METADATA MAXSIZE 65536] Value too long (at most 65536 octets)`},
		{"too long, non-synchronising", []string{fmt.Sprintf("SETMETADATA \"\" (/private/big {%d+}\r\n%s)\r\n", big, strings.Repeat("b", big))}, `NO [METADATA MAXSIZE 65536] Value too long (at most 65536 octets)`},
		{"still in step", []string{"GETMETADATA \"\" (/private/big /Private/LIT)\r\n"}, "* METADATA \"\" (/private/big NIL /private/lit {5}|a|b\")|OK GETMETADATA completed"},
		{"read-only admin", []string{"SETMETADATA \"\" (/shared/admin \"mailto:me@example.test\")\r\n"}, `NO [CANNOT] The /shared/admin entry cannot be changed`},
		{"read-only specialuse", []string{"SETMETADATA Sent (/private/specialuse NIL)\r\n"}, `NO [CANNOT] The /private/specialuse entry cannot be changed`},
		{"no such mailbox", []string{"SETMETADATA Nowhere (/private/comment \"x\")\r\n"}, `NO [NONEXISTENT] SETMETADATA: no such mailbox`},
		{"no such mailbox, get", []string{"GETMETADATA Nowhere /private/comment\r\n"}, `NO [NONEXISTENT] GETMETADATA: no such mailbox`},
		{"not /private or /shared", []string{"GETMETADATA \"\" /other/x\r\n"}, `BAD Entry name must begin with /private or /shared`},
		{"no leading slash", []string{"GETMETADATA \"\" private/x\r\n"}, `BAD Entry name must begin with /`},
		{"double slash", []string{"SETMETADATA \"\" (/private//x \"v\")\r\n"}, `BAD Entry name with an empty component`},
		{"trailing slash", []string{"GETMETADATA \"\" /private/x/\r\n"}, `BAD Entry name with an empty component`},
		{"wildcard", []string{"GETMETADATA \"\" \"/private/*\"\r\n"}, `BAD Entry name can't contain * or %`},
		{"bare /private", []string{"SETMETADATA \"\" (/private \"v\")\r\n"}, `BAD Entries are below /private or /shared`},
		{"bad depth", []string{"GETMETADATA (DEPTH 2) \"\" /private\r\n"}, `BAD DEPTH is 0, 1 or infinity`},
		{"option twice", []string{"GETMETADATA (MAXSIZE 1 MAXSIZE 2) \"\" /private\r\n"}, `BAD MAXSIZE given twice`},
		{"unknown option", []string{"GETMETADATA (FOO 1) \"\" /private\r\n"}, `BAD Unknown GETMETADATA option FOO`},
		{"value is a list", []string{"SETMETADATA \"\" (/private/x (a))\r\n"}, `BAD`},
		{"bad entry skips the rest", []string{"SETMETADATA \"\" (/bad \"v\" /private/ok {2+}\r\nok)\r\n"}, `BAD Entry name must begin with /private or /shared`},
		{"nothing set by it", []string{"GETMETADATA \"\" /private/ok\r\n"}, `* METADATA "" (/private/ok NIL)|OK GETMETADATA completed`},
	} {
		got := strings.Join(r.exchange(tc.parts...), "|")
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}

	// The account's limits: entries, then size; refused commands change
	// nothing.
	var cmd strings.Builder
	cmd.WriteString(`SETMETADATA "" (`)
	n := store.MaxMetadataEntries - 3 // /private/comment, /shared/x/y (INBOX), /private/lit, /private/bin are there: 4
	for i := range n {
		fmt.Fprintf(&cmd, "/private/n/%d \"v\" ", i)
	}
	cmd.WriteString("/private/last \"v\")")
	if _, status := r.try(cmd.String()); !strings.HasPrefix(status, "NO [METADATA TOOMANY]") {
		t.Errorf("entry %d: %s", store.MaxMetadataEntries+1, status)
	}
	if untagged, _ := r.try(`GETMETADATA (DEPTH 1) "" /private/n`); len(untagged) != 0 {
		t.Errorf("after a refused SETMETADATA: %q", untagged)
	}
	value := strings.Repeat("v", store.MaxMetadataValue)
	var lines []string
	for i := range store.MaxMetadataTotal/store.MaxMetadataValue + 1 {
		lines = append(lines, fmt.Sprintf("/private/big/%d {%d+}\r\n%s", i, len(value), value))
	}
	got := r.exchange(`SETMETADATA "" (` + strings.Join(lines, " ") + ")\r\n")
	if status := got[len(got)-1]; !strings.HasPrefix(status, "NO [METADATA TOOMANY]") {
		t.Errorf("past the total size: %s", status)
	}
	if untagged, status := r.try(`GETMETADATA "" /private/lit`); len(untagged) != 3 || !strings.HasPrefix(status, "OK") {
		t.Errorf("still in step: %q %s", untagged, status)
	}
}
