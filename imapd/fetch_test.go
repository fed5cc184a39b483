package imapd

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
)

// The parts of a multipart message with a nested message/rfc822, kept
// separately so expected sections are cut from these strings, not from the
// server's index.
var (
	binPayload = func() []byte {
		b := make([]byte, 300)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}()
	nHeader = crlf(`From: Bob <bob@example.test>
To: alice@example.test
Subject: Nested
Date: Tue, 7 May 2024 10:00:00 +0200
Message-ID: <nested@example.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

`)
	nPart1MIME  = crlf("Content-Type: text/plain; charset=utf-8\n\n")
	nPart1Body  = "Part one text.\r\nSecond line."
	nPart2MIME  = crlf("Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"bin.dat\"\n\n")
	nPart2Body  = wrapBase64(binPayload)
	nPart3MIME  = crlf("Content-Type: message/rfc822\n\n")
	nInnerHdr   = crlf("From: Carol <carol@example.test>\nSubject: Inner\nContent-Type: multipart/alternative; boundary=\"inner\"\n\n")
	nInner1MIME = crlf("Content-Type: text/plain\n\n")
	nInner1Body = "Inner plain."
	nInner2MIME = crlf("Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n")
	nInner2Body = "<p>Inner =3D html</p>"
	nInnerText  = "--inner\r\n" + nInner1MIME + nInner1Body + "\r\n--inner\r\n" + nInner2MIME + nInner2Body + "\r\n--inner--"
	nInnerMsg   = nInnerHdr + nInnerText
	nText       = "preamble\r\n--outer\r\n" + nPart1MIME + nPart1Body + "\r\n--outer\r\n" + nPart2MIME + nPart2Body +
		"\r\n--outer\r\n" + nPart3MIME + nInnerMsg + "\r\n--outer--\r\nepilogue\r\n"
	nestedMsg = nHeader + nText
)

func wrapBase64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out []string
	for len(s) > 76 {
		out = append(out, s[:76])
		s = s[76:]
	}
	return strings.Join(append(out, s), "\r\n")
}

func fetchOne(t *testing.T, c *imapclient.Client, uid imap.UID, opts *imap.FetchOptions) *imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(imap.UIDSetNum(uid), opts).Collect()
	if err != nil {
		t.Fatalf("FETCH: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("FETCH returned %d messages", len(msgs))
	}
	msgs[0].Flags = messageFlags(msgs[0].Flags)
	return msgs[0]
}

func TestFetchBodySections(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	uid := appendMsg(t, c, "INBOX", nestedMsg)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	fieldsHdr := "From: Bob <bob@example.test>\r\nSubject: Nested\r\n\r\n"
	notHdr := crlf("To: alice@example.test\nDate: Tue, 7 May 2024 10:00:00 +0200\nMessage-ID: <nested@example.test>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\n")
	tests := []struct {
		name string
		sec  imap.FetchItemBodySection
		want string
	}{
		{"whole", imap.FetchItemBodySection{}, nestedMsg},
		{"HEADER", imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader}, nHeader},
		{"TEXT", imap.FetchItemBodySection{Specifier: imap.PartSpecifierText}, nText},
		{"HEADER.FIELDS", imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"subject", "FROM", "X-Missing"}}, fieldsHdr},
		{"HEADER.FIELDS.NOT", imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject", "From"}}, notHdr},
		{"1", imap.FetchItemBodySection{Part: []int{1}}, nPart1Body},
		{"1.MIME", imap.FetchItemBodySection{Part: []int{1}, Specifier: imap.PartSpecifierMIME}, nPart1MIME},
		{"2", imap.FetchItemBodySection{Part: []int{2}}, nPart2Body},
		{"2.MIME", imap.FetchItemBodySection{Part: []int{2}, Specifier: imap.PartSpecifierMIME}, nPart2MIME},
		{"3", imap.FetchItemBodySection{Part: []int{3}}, nInnerMsg},
		{"3.MIME", imap.FetchItemBodySection{Part: []int{3}, Specifier: imap.PartSpecifierMIME}, nPart3MIME},
		{"3.HEADER", imap.FetchItemBodySection{Part: []int{3}, Specifier: imap.PartSpecifierHeader}, nInnerHdr},
		{"3.TEXT", imap.FetchItemBodySection{Part: []int{3}, Specifier: imap.PartSpecifierText}, nInnerText},
		{"3.HEADER.FIELDS", imap.FetchItemBodySection{Part: []int{3}, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}}, "Subject: Inner\r\n\r\n"},
		{"3.1", imap.FetchItemBodySection{Part: []int{3, 1}}, nInner1Body},
		{"3.1.MIME", imap.FetchItemBodySection{Part: []int{3, 1}, Specifier: imap.PartSpecifierMIME}, nInner1MIME},
		{"3.2", imap.FetchItemBodySection{Part: []int{3, 2}}, nInner2Body},
		{"missing part", imap.FetchItemBodySection{Part: []int{9}}, ""},
		{"partial", imap.FetchItemBodySection{Partial: &imap.SectionPartial{Offset: 5, Size: 10}}, nestedMsg[5:15]},
		{"partial TEXT", imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Partial: &imap.SectionPartial{Offset: 0, Size: 8}}, nText[:8]},
		{"partial past end", imap.FetchItemBodySection{Partial: &imap.SectionPartial{Offset: 1 << 20, Size: 10}}, ""},
		{"partial over end", imap.FetchItemBodySection{Part: []int{3, 1}, Partial: &imap.SectionPartial{Offset: 6, Size: 100}}, nInner1Body[6:]},
		{"partial HEADER", imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Partial: &imap.SectionPartial{Offset: 6, Size: 3}}, nHeader[6:9]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sec := tc.sec
			sec.Peek = true
			m := fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{&sec}})
			if len(m.BodySection) != 1 {
				t.Fatalf("got %d sections", len(m.BodySection))
			}
			if got := string(m.BodySection[0].Bytes); got != tc.want {
				t.Errorf("BODY[%s]:\n got %q\nwant %q", tc.name, got, tc.want)
			}
		})
	}

	// All of them in one FETCH too (one metadata query, streamed).
	var secs []*imap.FetchItemBodySection
	for _, tc := range tests[:17] {
		sec := tc.sec
		sec.Peek = true
		secs = append(secs, &sec)
	}
	m := fetchOne(t, c, uid, &imap.FetchOptions{BodySection: secs})
	for i, tc := range tests[:17] {
		if got := string(m.FindBodySection(secs[i])); got != tc.want {
			t.Errorf("combined BODY[%s] = %q", tc.name, got)
		}
	}
	// Nothing above set \Seen.
	if m := fetchOne(t, c, uid, &imap.FetchOptions{Flags: true}); len(m.Flags) != 0 {
		t.Fatalf("flags after PEEK = %v", m.Flags)
	}
}

func TestFetchBinary(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	uid := appendMsg(t, c, "INBOX", nestedMsg)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		part    []int
		partial *imap.SectionPartial
		want    []byte
	}{
		{[]int{2}, nil, binPayload},
		{[]int{2}, &imap.SectionPartial{Offset: 10, Size: 20}, binPayload[10:30]},
		{[]int{2}, &imap.SectionPartial{Offset: 290, Size: 100}, binPayload[290:]},
		{[]int{3, 2}, nil, []byte("<p>Inner = html</p>")},
		{[]int{1}, nil, []byte(nPart1Body)},
		{nil, nil, []byte(nestedMsg)},
	}
	r := e.raw()
	r.cmd("SELECT INBOX")
	for _, tc := range tests {
		sec := &imap.FetchItemBinarySection{Part: tc.part, Partial: tc.partial, Peek: true}
		if tc.partial != nil {
			// The response names the origin, BINARY[2]<10> (RFC 3516
			// §4.3, as Dovecot and imaptest's fetch-binary-mime script
			// have it), which imapclient cannot parse: read it raw.
			name, data := r.fetchLiteral(fmt.Sprintf("FETCH 1 BINARY.PEEK[%s]<%d.%d>", partString(tc.part),
				tc.partial.Offset, tc.partial.Size))
			if want := fmt.Sprintf("BINARY[%s]<%d>", partString(tc.part), tc.partial.Offset); name != want || !bytes.Equal(data, tc.want) {
				t.Errorf("BINARY[%v]<%v> = %s %q, want %s %q", tc.part, tc.partial, name, data, want, tc.want)
			}
			continue
		}
		m := fetchOne(t, c, uid, &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{sec}})
		if len(m.BinarySection) != 1 || !bytes.Equal(m.BinarySection[0].Bytes, tc.want) {
			t.Errorf("BINARY[%v]<%v> = %+v, want %q", tc.part, tc.partial, m.BinarySection, tc.want)
		}
	}
	m := fetchOne(t, c, uid, &imap.FetchOptions{BinarySectionSize: []*imap.FetchItemBinarySectionSize{
		{Part: []int{2}}, {Part: []int{3, 2}}, {Part: []int{1}}}})
	for part, want := range map[int]uint32{2: uint32(len(binPayload)), 1: uint32(len(nPart1Body))} {
		if got, ok := m.FindBinarySectionSize([]int{part}); !ok || got != want {
			t.Errorf("BINARY.SIZE[%d] = %d %v, want %d", part, got, ok, want)
		}
	}
	if got, ok := m.FindBinarySectionSize([]int{3, 2}); !ok || got != uint32(len("<p>Inner = html</p>")) {
		t.Errorf("BINARY.SIZE[3.2] = %d %v", got, ok)
	}
}

func TestFetchMetadata(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	uid := appendMsg(t, c, "INBOX", nestedMsg, imap.FlagFlagged, "$Label1")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	m := fetchOne(t, c, uid, &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, RFC822Size: true,
		Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})
	if m.UID != uid || !slices.Equal(m.Flags, []imap.Flag{imap.FlagFlagged, "$Label1"}) || m.RFC822Size != int64(len(nestedMsg)) ||
		m.InternalDate.Unix() != 1714979289 {
		t.Fatalf("metadata = %+v", m)
	}
	env := m.Envelope
	if env.Subject != "Nested" || env.MessageID != "nested@example.test" || len(env.From) != 1 ||
		env.From[0].Addr() != "bob@example.test" || env.From[0].Name != "Bob" || env.Date.IsZero() {
		t.Fatalf("envelope = %+v", env)
	}
	mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || mp.Subtype != "mixed" || len(mp.Children) != 3 {
		t.Fatalf("bodystructure = %#v", m.BodyStructure)
	}
	att := mp.Children[1].(*imap.BodyStructureSinglePart)
	if att.Type != "application" || att.Extended == nil || att.Extended.Disposition == nil || att.Extended.Disposition.Params["filename"] != "bin.dat" {
		t.Fatalf("attachment = %#v", att)
	}
	inner := mp.Children[2].(*imap.BodyStructureSinglePart)
	if inner.MessageRFC822 == nil || inner.MessageRFC822.Envelope.Subject != "Inner" {
		t.Fatalf("message/rfc822 part = %#v", inner)
	}
	// BODY (non-extended) and FAST-like items for a range.
	appendMsg(t, c, "INBOX", crlf(simpleMsg))
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{}, RFC822Size: true}).Collect()
	if err != nil || len(msgs) != 2 || msgs[1].SeqNum != 2 || msgs[1].RFC822Size != int64(len(crlf(simpleMsg))) {
		t.Fatalf("FETCH 1:* = %+v %v", msgs, err)
	}
}

func TestImplicitSeen(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	for i := 0; i < 4; i++ {
		appendMsg(t, c, "INBOX", crlf(simpleMsg))
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// BODY[TEXT] without PEEK sets \Seen and reports FLAGS unasked.
	m := fetchOne(t, c, 1, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierText}}})
	if !slices.Contains(m.Flags, imap.FlagSeen) {
		t.Fatalf("BODY[TEXT]: flags = %v", m.Flags)
	}
	// BINARY without PEEK too; PEEK does not.
	fetchOne(t, c, 2, &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{{}}})
	fetchOne(t, c, 3, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var seen []uint32
	for _, m := range msgs {
		if slices.Contains(m.Flags, imap.FlagSeen) {
			seen = append(seen, m.SeqNum)
		}
	}
	if !slices.Equal(seen, []uint32{1, 2}) {
		t.Fatalf("seen = %v", seen)
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{NumUnseen: true}).Wait()
	if err != nil || *st.NumUnseen != 2 {
		t.Fatalf("STATUS UNSEEN = %+v %v", st, err)
	}
}

func TestFetchManyBodies(t *testing.T) {
	// More messages than one batch, bodies streamed in UID order.
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	n := bodyBatch + 7
	for i := 0; i < n; i++ {
		e.deliver("INBOX", crlf(strings.Replace(simpleMsg, "Hi Alice.", "Message "+strings.Repeat("x", i), 1)))
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierText, Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != n {
		t.Fatalf("got %d messages", len(msgs))
	}
	for i, m := range msgs {
		want := "Message " + strings.Repeat("x", i) + "\r\n"
		if m.SeqNum != uint32(i+1) || m.UID != imap.UID(i+1) || string(m.BodySection[0].Bytes) != want {
			t.Fatalf("message %d: seq %d uid %d body %q", i, m.SeqNum, m.UID, m.BodySection[0].Bytes)
		}
	}
}

// TestFetchHugeHeader: a header larger than the stored copy still fetches
// whole and byte-exact, and TEXT starts where the real header ends.
func TestFetchHugeHeader(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	var b strings.Builder
	b.WriteString("From: a@example.com\r\nSubject: big header\r\n")
	for b.Len() <= store.MaxStoredHeader+1000 {
		b.WriteString("X-Filler: " + strings.Repeat("y", 100) + "\r\n")
	}
	b.WriteString("\r\n")
	header := b.String()
	msg := header + "the body\r\n"
	e.deliver("INBOX", msg)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 1}}, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{
		{Specifier: imap.PartSpecifierHeader, Peek: true},
		{Specifier: imap.PartSpecifierText, Peek: true},
		{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Peek: true},
	}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	got := msgs[0].BodySection
	if string(got[0].Bytes) != header {
		t.Fatalf("HEADER: %d bytes, want %d", len(got[0].Bytes), len(header))
	}
	if string(got[1].Bytes) != "the body\r\n" {
		t.Fatalf("TEXT: %q", got[1].Bytes)
	}
	if string(got[2].Bytes) != "Subject: big header\r\n\r\n" {
		t.Fatalf("HEADER.FIELDS: %q", got[2].Bytes)
	}
}

// TestFetchUnknownCTE: BINARY of a part in a transfer encoding the server
// cannot decode is NO [UNKNOWN-CTE] (RFC 3516 §4.2), not its raw bytes;
// BODY of the same part and BINARY of the other parts still work.
func TestFetchUnknownCTE(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	uu := "begin 644 hello.txt\r\n%:&5L;&\\`\r\n`\r\nend"
	msg := crlf("From: bob@example.test\nSubject: uu\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nplain part\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n\n") +
		uu + "\r\n--b--\r\n"
	uid := appendMsg(t, c, "INBOX", msg)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]*imap.FetchOptions{
		"BINARY[2]":      {BinarySection: []*imap.FetchItemBinarySection{{Part: []int{2}, Peek: true}}},
		"BINARY.SIZE[2]": {BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{2}}}},
	} {
		msgs, err := c.Fetch(imap.UIDSetNum(uid), opts).Collect()
		if imapType(err) != imap.StatusResponseTypeNo || imapCode(err) != imap.ResponseCodeUnknownCTE {
			t.Errorf("FETCH %s: %v (%d messages), want NO [UNKNOWN-CTE]", name, err, len(msgs))
		}
		if len(msgs) != 0 {
			t.Errorf("FETCH %s wrote a response: %+v", name, msgs[0])
		}
	}
	m := fetchOne(t, c, uid, &imap.FetchOptions{
		BodySection:   []*imap.FetchItemBodySection{{Part: []int{2}, Peek: true}},
		BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1}, Peek: true}},
	})
	if got := string(m.FindBodySection(&imap.FetchItemBodySection{Part: []int{2}})); got != uu {
		t.Errorf("BODY[2] = %q, want %q", got, uu)
	}
	if len(m.BinarySection) != 1 || string(m.BinarySection[0].Bytes) != "plain part" {
		t.Errorf("BINARY[1] = %+v", m.BinarySection)
	}
	// The refused FETCHes set no \Seen.
	if m := fetchOne(t, c, uid, &imap.FetchOptions{Flags: true}); len(m.Flags) != 0 {
		t.Errorf("flags = %v", m.Flags)
	}
}

// TestFetchSinglePartSections: in a message that is not multipart, part 1
// is the body (RFC 9051 §6.4.5) and 1.MIME its header, which is the
// message's header, as Dovecot answers.
func TestFetchSinglePartSections(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	msg := crlf(simpleMsg)
	header, body, _ := strings.Cut(msg, "\r\n\r\n")
	header += "\r\n\r\n"
	uid := appendMsg(t, c, "INBOX", msg)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sec  *imap.FetchItemBodySection
		want string
	}{
		{&imap.FetchItemBodySection{Part: []int{1}}, body},
		{&imap.FetchItemBodySection{Part: []int{1}, Specifier: imap.PartSpecifierMIME}, header},
		{&imap.FetchItemBodySection{Part: []int{1}, Partial: &imap.SectionPartial{Offset: 3, Size: 5}}, body[3:8]},
		{&imap.FetchItemBodySection{Specifier: imap.PartSpecifierText}, body},
		{&imap.FetchItemBodySection{Part: []int{2}}, ""},
	}
	for _, tc := range tests {
		tc.sec.Peek = true
		m := fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{tc.sec}})
		if got := string(m.FindBodySection(tc.sec)); got != tc.want {
			t.Errorf("BODY[%v.%s]<%v> = %q, want %q", tc.sec.Part, tc.sec.Specifier, tc.sec.Partial, got, tc.want)
		}
	}
	bm := fetchOne(t, c, uid, &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1}, Peek: true}}})
	if len(bm.BinarySection) != 1 || string(bm.BinarySection[0].Bytes) != body {
		t.Errorf("BINARY[1] = %+v, want %q", bm.BinarySection, body)
	}
}

// TestRowCacheProcessBound: the mailboxes' row caches share one budget,
// and a cache emptied gives its rows back.
func TestRowCacheProcessBound(t *testing.T) {
	var total atomic.Int64
	a := &rowCache{total: &total, limit: 5}
	b := &rowCache{total: &total, limit: 5}
	rows := func(uids ...uint32) []store.MessageMeta {
		var out []store.MessageMeta
		for _, u := range uids {
			out = append(out, store.MessageMeta{UID: u})
		}
		return out
	}
	a.put(a.generation(), rows(1, 2, 3, 4))
	b.put(b.generation(), rows(1, 2, 3, 4))
	if len(a.rows) != 4 || len(b.rows) != 1 || total.Load() != 5 {
		t.Fatalf("cached %d + %d, total %d; want 4 + 1, 5", len(a.rows), len(b.rows), total.Load())
	}
	a.put(a.generation(), rows(1, 2)) // already cached: no more budget used
	a.apply(&store.Changes{Expunged: []uint32{1, 9}})
	if total.Load() != 4 {
		t.Fatalf("after an expunge: total %d, want 4", total.Load())
	}
	a.clear()
	b.put(b.generation(), rows(5, 6, 7, 8, 9))
	if len(b.rows) != 5 || total.Load() != 5 {
		t.Fatalf("after clear: b has %d, total %d; want 5, 5", len(b.rows), total.Load())
	}
}

// TestFetchNULInLiteral: a stored message holding NUL (delivered so, or
// APPENDed in a plain literal) goes out in BODY[] and RFC822 literals with
// each NUL as 0x80, as Dovecot does: a literal cannot carry NUL (RFC 9051
// CHAR8), only BINARY's literal8 can, which keeps the bytes. Sizes stay.
func TestFetchNULInLiteral(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("INBOX", "Subject: n\x00l\r\n\r\nb\x00dy\x00\r\n")
	r := e.raw()
	r.cmd("SELECT INBOX")
	tests := []struct{ cmd, name, want string }{
		{"FETCH 1 BODY.PEEK[]", "BODY[]", "Subject: n\x80l\r\n\r\nb\x80dy\x80\r\n"},
		{"FETCH 1 BODY.PEEK[]<10.6>", "BODY[]<10>", "\x80l\r\n\r\n"},
		{"FETCH 1 BODY.PEEK[TEXT]", "BODY[TEXT]", "b\x80dy\x80\r\n"},
		{"FETCH 1 BODY.PEEK[1]", "BODY[1]", "b\x80dy\x80\r\n"},
		{"FETCH 1 BODY.PEEK[HEADER]", "BODY[HEADER]", "Subject: n\x80l\r\n\r\n"},
		{"FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]", "BODY[HEADER.FIELDS (Subject)]", "Subject: n\x80l\r\n\r\n"},
		{"FETCH 1 RFC822.HEADER", "RFC822.HEADER", "Subject: n\x80l\r\n\r\n"},
		{"FETCH 1 BINARY.PEEK[1]", "BINARY[1]", "b\x00dy\x00\r\n"},
		// After the BODY[] fetches (the message is cached): the cache
		// kept its NUL bytes.
		{"FETCH 1 BINARY.PEEK[]", "BINARY[]", "Subject: n\x00l\r\n\r\nb\x00dy\x00\r\n"},
	}
	for _, tc := range tests {
		if name, data := r.fetchLiteral(tc.cmd); name != tc.name || string(data) != tc.want {
			t.Errorf("%s: %s %q, want %s %q", tc.cmd, name, data, tc.name, tc.want)
		}
	}
}
