package imapd

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
)

// TestUIDBatches follows the draft's rules (and Cyrus's test of them):
// batches newest first, the last one ending at UID 1, a range of batches,
// limits and syntax errors.
func TestUIDBatches(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	r.cmd("SELECT INBOX")
	tag := func() string { return fmt.Sprintf(`* UIDBATCHES (TAG "r%d")`, r.tag) }
	if got := r.cmd("UIDBATCHES 10"); len(got) != 1 || got[0] != tag() {
		t.Fatalf("empty mailbox: %q", got)
	}
	for range 50 {
		e.deliver("INBOX", crlf(simpleMsg))
	}
	noopUntil(t, r, `50 EXISTS`)
	r.cmd(`UID STORE 1,14:17,41,43,45 +FLAGS.SILENT (\Deleted)`)
	r.cmd("EXPUNGE") // 42 messages left
	tests := []struct {
		args, want string
	}{
		{"50", " 50:1"},
		{"25", " 50:23,22:1"},
		{"10", " 50:38,37:28,27:18,13:4,3:1"},
		{"10 1:1", " 50:38"},
		{"10 2:3", " 37:28,27:18"},
		{"10 5:6", " 3:1"},
		{"10 7:7", ""},
		{"10 4:10", " 13:4,3:1"},
		{"42", " 50:1"},
		{"41", " 50:3,2:1"},
	}
	for _, tc := range tests {
		got := r.cmd("UIDBATCHES " + tc.args)
		if want := tag() + tc.want; len(got) != 1 || got[0] != want {
			t.Errorf("UIDBATCHES %s: %q, want %q", tc.args, got, want)
		}
	}
	refused(t, r, "BAD", "UIDBATCHES", "UIDBATCHES X", "UIDBATCHES 10 6:", "UIDBATCHES 10 5:6 X")
	refused(t, r, "BAD [CLIENTBUG]", "UIDBATCHES 0", "UIDBATCHES 10 0:5", "UIDBATCHES 10 5:0", "UIDBATCHES 10 6:5")
	refused(t, r, "NO [TOOFEW]", "UIDBATCHES 9")
	refused(t, r, "NO [TOOMANY]", "UIDBATCHES 10000 1:101")
	// Not without a mailbox; under UIDONLY as well.
	r.cmd("UNSELECT")
	if _, status := r.try("UIDBATCHES 10"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("UIDBATCHES unselected: %s", status)
	}
	r.cmd("ENABLE UIDONLY")
	r.cmd("EXAMINE INBOX")
	if got := r.cmd("UIDBATCHES 20"); len(got) != 1 || got[0] != tag()+" 50:28,27:4,3:1" {
		t.Fatalf("UIDBATCHES under UIDONLY: %q", got)
	}
}

// benchUIDBatches: UIDBATCHES over the 100,000-message INBOX, as a phone
// asks before fetching batch after batch (every batch of 500, and the
// first three of 2,000).
func (e *benchEnv) benchUIDBatches(b *testing.B) {
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	r := &raw{t: b, c: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	r.line()
	r.cmd("LOGIN " + e.user + " " + e.pass)
	r.cmd("ENABLE UIDONLY")
	r.cmd("SELECT INBOX")
	b.ResetTimer()
	for range b.N {
		if got := r.cmd("UIDBATCHES 500"); len(got) != 1 || strings.Count(got[0], ",") != benchMessages/500-1 {
			b.Fatalf("UIDBATCHES 500: %d bytes", len(got[0]))
		}
		if got := r.cmd("UIDBATCHES 2000 1:3"); len(got) != 1 || strings.Count(got[0], ",") != 2 {
			b.Fatalf("UIDBATCHES 2000 1:3: %q", got)
		}
	}
}
