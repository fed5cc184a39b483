package mimeindex

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// TestParseAddressList checks the stored form; TestAddressListLikeDovecot
// checks what ENVELOPE makes of it.
func TestParseAddressList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Address
	}{
		{"Alice <alice@example.com>", []Address{{"Alice", "", "alice", "example.com"}}},
		{`"Doe, John" <john@example.com>, bob@example.org`, []Address{{"Doe, John", "", "john", "example.com"}, {"", "", "bob", "example.org"}}},
		// Encoded-words and white space are kept as written.
		{"=?utf-8?q?J=C3=B6rg?=  <j@example.com>", []Address{{"=?utf-8?q?J=C3=B6rg?=", "", "j", "example.com"}}},
		{`"A  B" <j@example.com>`, []Address{{"A  B", "", "j", "example.com"}}},
		{"john@example.com (John Doe)", []Address{{"John Doe", "", "john", "example.com"}}},
		{"A Group: a@b.c, \"Q\" <d@e.f>;, g@h.i", []Address{
			{"", "", "A Group", ""}, {"", "", "a", "b.c"}, {"Q", "", "d", "e.f"}, {}, {"", "", "g", "h.i"}}},
		{"undisclosed-recipients:;", []Address{{"", "", "undisclosed-recipients", ""}, {}}},
		{`"":;`, []Address{{}, {}}},
		{"Unterminated: a@b", []Address{{"", "", "Unterminated", ""}, {"", "", "a", "b"}, {}}},
		{"localonly", []Address{{"", "", "localonly", missingDomain}}},
		{"Just A Name", []Address{{"Just A Name", "", missingMailbox, missingDomain}}},
		{"<>", []Address{{"", "", missingMailbox, missingDomain}}},
		{"<@route.example,@r2:user@example.com>", []Address{{"", "@route.example,@r2", "user", "example.com"}}},
		{`"quoted local"@example.com`, []Address{{"", "", "quoted local", "example.com"}}},
		{"Broken <no-closing@example.com", []Address{{"Broken", "", "no-closing", syntaxError}}},
		{"a@[127.0.0.1]", []Address{{"", "", "a", "[127.0.0.1]"}}},
		{"a) b@c", []Address{{"", "", "a", missingDomain}}},
		{"(comment only)", nil},
		{"", nil},
	} {
		got := ParseAddressList(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseAddressList(%q) =\n  %+v\nwant\n  %+v", tc.in, got, tc.want)
		}
		checkAddresses(t, got)
	}
}

func TestEnvelopeIMAP(t *testing.T) {
	msg := toCRLF(`Date: Tue, 3 Jan 2006 10:00:00 +0100 (CET)
Subject: =?UTF-8?B?R3LDvMOfZQ==?= and
 =?ISO-8859-1?Q?caf=E9?=
From: =?iso-8859-1?q?J=F6rg?= <jorg@example.com>
To: Friends: a@example.com, "B" <b@example.com>;
Cc: c@example.com
In-Reply-To: <one@x> <two@y>
Message-ID:
 <id@example.com>

body
`)
	m := mustIndex(t, msg)
	e := m.Envelope
	if e.Subject != "=?UTF-8?B?R3LDvMOfZQ==?= and =?ISO-8859-1?Q?caf=E9?=" {
		t.Errorf("raw subject %q", e.Subject)
	}
	if len(e.Sender) != 0 || len(e.ReplyTo) != 0 {
		t.Errorf("raw envelope must keep Sender/Reply-To empty")
	}
	got := e.IMAP()
	want := &imap.Envelope{
		Date:    time.Date(2006, 1, 3, 10, 0, 0, 0, time.FixedZone("", 3600)),
		Subject: "Grüße and café",
		From:    []imap.Address{{Name: "Jörg", Mailbox: "jorg", Host: "example.com"}},
		To: []imap.Address{{Mailbox: "Friends"}, {Mailbox: "a", Host: "example.com"},
			{Name: "B", Mailbox: "b", Host: "example.com"}, {}},
		Cc:        []imap.Address{{Mailbox: "c", Host: "example.com"}},
		InReplyTo: []string{"one@x", "two@y"},
		MessageID: "id@example.com",
	}
	want.Sender, want.ReplyTo = want.From, want.From
	if !got.Date.Equal(want.Date) {
		t.Errorf("Date %v, want %v", got.Date, want.Date)
	}
	got.Date = want.Date
	if !reflect.DeepEqual(got, want) {
		t.Errorf("IMAP() =\n  %+v\nwant\n  %+v", got, want)
	}

	// Explicit Sender/Reply-To are kept.
	e2 := &Envelope{From: []Address{{Mailbox: "a", Host: "b"}}, ReplyTo: []Address{{Mailbox: "r", Host: "b"}}}
	if g := e2.IMAP(); g.ReplyTo[0].Mailbox != "r" || g.Sender[0].Mailbox != "a" {
		t.Errorf("got %+v", g)
	}
	// An encoded-word with an unknown charset stays raw.
	e3 := &Envelope{Subject: "=?x-unknown?q?abc?="}
	if g := e3.IMAP(); g.Subject != "=?x-unknown?q?abc?=" {
		t.Errorf("subject %q", g.Subject)
	}
	if g := (*Envelope)(nil).IMAP(); g == nil {
		t.Errorf("nil envelope")
	}
}

func TestParseDate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // RFC 3339, "" for zero
	}{
		{"Mon, 2 Jan 2006 15:04:05 -0700", "2006-01-02T15:04:05-07:00"},
		{"2 Jan 2006 15:04:05 +0000 (UTC)", "2006-01-02T15:04:05Z"},
		{"Mon,  2 Jan 2006 15:04:05 -0700 (MST)", "2006-01-02T15:04:05-07:00"},
		{"Mon, 2 Jan 2006 15:04 -0700", "2006-01-02T15:04:00-07:00"},
		{"Mon Jan  2 15:04:05 2006", "2006-01-02T15:04:05Z"},
		{"Mon,2 Jan 2006 15:04:05 -0700", "2006-01-02T15:04:05-07:00"},
		{"yesterday", ""},
		{"", ""},
	} {
		got := ParseDate(tc.in)
		if tc.want == "" {
			if !got.IsZero() {
				t.Errorf("ParseDate(%q) = %v, want zero", tc.in, got)
			}
			continue
		}
		want, _ := time.Parse(time.RFC3339, tc.want)
		if !got.Equal(want) {
			t.Errorf("ParseDate(%q) = %v, want %v", tc.in, got, want)
		}
	}
}

func TestParams(t *testing.T) {
	for _, tc := range []struct {
		in, value string
		want      map[string]string
	}{
		{`text/plain; charset="utf-8"`, "text/plain", map[string]string{"charset": "utf-8"}},
		{`attachment; filename*=iso-8859-1'fr'r%E9sum%E9.txt; filename="resume.txt"`, "attachment", map[string]string{"filename": "résumé.txt"}},
		{`attachment; filename*0*=utf-8''%C3%A9t; filename*1="e long"; filename*2*=%21`, "attachment", map[string]string{"filename": "éte long!"}},
		{`multipart/mixed; boundary=----=_Part_1_2.3; junk; charset=us-ascii`, "multipart/mixed", map[string]string{"boundary": "----=_Part_1_2.3", "charset": "us-ascii"}},
		{`multipart/mixed; boundary="a"; boundary="b"`, "multipart/mixed", map[string]string{"boundary": "a"}},
		{`application/pdf; name="=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?="`, "application/pdf", map[string]string{"name": "résumé.pdf"}},
		{`text/plain; name="a \"q\" b"; X=Y`, "text/plain", map[string]string{"name": `a "q" b`, "x": "Y"}},
		{`text/plain;`, "text/plain", nil},
		{`text/plain; name*=unknown-cs''ab%FF`, "text/plain", map[string]string{"name": "abÿ"}},
	} {
		v, p := parseParams(tc.in)
		if v != tc.value || !reflect.DeepEqual(p, tc.want) {
			t.Errorf("parseParams(%q) = %q, %v; want %q, %v", tc.in, v, p, tc.value, tc.want)
		}
	}
}

func TestFind(t *testing.T) {
	m := mustIndex(t, rfc822Msg)
	for _, tc := range []struct {
		path []int
		body string // "" means nil
	}{
		{[]int{0}, ""},
		{[]int{5}, ""},
		{[]int{1, 2}, ""},
		{[]int{3, 3}, ""},
		{[]int{1, 1}, "part 1"}, // part 1 of a non-multipart is itself
		{[]int{3, 1}, "part 3.1"},
		{[]int{4, 2, 2, 2}, "part 4.2.2.2"},
	} {
		p := m.Root.Find(tc.path)
		switch {
		case tc.body == "" && p != nil:
			t.Errorf("Find(%v) = %+v, want nil", tc.path, p)
		case tc.body != "" && (p == nil || rfc822Msg[p.BodyStart:p.End] != tc.body):
			t.Errorf("Find(%v) wrong", tc.path)
		}
	}
	if m.Root.Find(nil) != m.Root {
		t.Errorf("empty path")
	}

	// A top-level message/rfc822: part 1 is the body, 1.1 the inner text.
	m = mustIndex(t, "Content-Type: message/rfc822\n\nSubject: inner\n\ninner text\n")
	if p := m.Root.Find([]int{1}); p != m.Root {
		t.Errorf("1 should be the root")
	}
	if p := m.Root.Find([]int{1, 1}); p == nil || p != m.Root.Children[0] {
		t.Errorf("1.1 should be the inner message body")
	}

	// An empty multipart has a zero-length part 1, as in BODYSTRUCTURE.
	m = mustIndex(t, "Content-Type: multipart/mixed; boundary=ab\n\nbody\n")
	if p := m.Root.Find([]int{1}); p == nil || p.BodyStart != p.End || p.Type != "text" {
		t.Errorf("empty multipart part 1: %+v", p)
	}
}

func TestBodyStructure(t *testing.T) {
	m := mustIndex(t, toCRLF(mixedMsg))
	bs := m.Root.BodyStructure(true).(*imap.BodyStructureMultiPart)
	if bs.Subtype != "mixed" || len(bs.Children) != 2 || bs.Extended.Params["boundary"] != "outer" {
		t.Fatalf("root: %+v", bs)
	}
	html := bs.Children[0].(*imap.BodyStructureMultiPart).Children[0].(*imap.BodyStructureSinglePart)
	if html.Text == nil || html.Text.NumLines != 2 || html.Encoding != "QUOTED-PRINTABLE" {
		t.Errorf("html: %+v", html)
	}
	att := bs.Children[1].(*imap.BodyStructureSinglePart)
	if att.Extended == nil || att.Extended.Disposition.Value != "attachment" || att.Filename() != "data.bin" {
		t.Errorf("attachment: %+v", att)
	}
	if b := m.Root.BodyStructure(false).(*imap.BodyStructureMultiPart); b.Extended != nil {
		t.Errorf("non-extended has Extended")
	}

	m = mustIndex(t, rfc822Msg)
	msg3 := m.Root.BodyStructure(false).(*imap.BodyStructureMultiPart).Children[2].(*imap.BodyStructureSinglePart)
	if msg3.MessageRFC822 == nil || msg3.MessageRFC822.Envelope.Subject != "three" || msg3.MessageRFC822.NumLines != 11 {
		t.Fatalf("3: %+v", msg3)
	}
	if inner := msg3.MessageRFC822.BodyStructure.(*imap.BodyStructureMultiPart); len(inner.Children) != 2 {
		t.Errorf("3 inner: %+v", inner)
	}
	text1 := m.Root.Find([]int{1}).BodyStructure(false).(*imap.BodyStructureSinglePart)
	if text1.Params["charset"] != "us-ascii" {
		t.Errorf("default charset: %v", text1.Params)
	}

	// Dovecot-compatible stand-ins.
	m = mustIndex(t, "Content-Type: multipart/mixed; boundary=ab\n\nbody\n")
	if mp := m.Root.BodyStructure(true).(*imap.BodyStructureMultiPart); len(mp.Children) != 1 || mp.Children[0].MediaType() != "text/plain" {
		t.Errorf("empty multipart: %+v", mp)
	}
	m = mustIndex(t, "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeAoKeQo=\n")
	if bs := m.Root.BodyStructure(true); bs.MediaType() != "application/octet-stream" {
		t.Errorf("opaque message: %s", bs.MediaType())
	}
}

// TestAgainstGoIMAP compares with go-imap's reference implementation, which
// re-parses the message with go-message, on well-formed messages.
func TestAgainstGoIMAP(t *testing.T) {
	for _, tt := range sectionTests {
		for _, msg := range []string{tt.msg, toCRLF(tt.msg)} {
			m := mustIndex(t, msg)
			// go-imap's ExtractBodyStructure ignores the multipart/digest
			// default type (RFC 2046 §5.1.5), its sections do not.
			if tt.name != "digest" {
				want := imapserver.ExtractBodyStructure(strings.NewReader(msg))
				compareBS(t, tt.name, m.Root.BodyStructure(true), want)
			}

			var walk func(p *Part, path []int)
			walk = func(p *Part, path []int) {
				if len(path) > 0 {
					q := m.Root.Find(path)
					if q != p && !(q != nil && q.isMessage() && q.Children[0] == p) {
						t.Errorf("%s: Find(%v) mismatch", tt.name, path)
					}
					item := &imap.FetchItemBodySection{Part: path}
					if got, want := msg[p.BodyStart:p.End], imapserver.ExtractBodySection(strings.NewReader(msg), item); got != string(want) {
						t.Errorf("%s: BODY[%v] = %q, go-imap %q", tt.name, path, got, want)
					}
					if len(p.Children) == 0 {
						size := imapserver.ExtractBinarySectionSize(strings.NewReader(msg), &imap.FetchItemBinarySectionSize{Part: path})
						if int64(size) != p.DecodedSize {
							t.Errorf("%s: BINARY.SIZE[%v] = %d, go-imap %d", tt.name, path, p.DecodedSize, size)
						}
					}
				}
				if p.Type == "multipart" {
					for i, c := range p.Children {
						walk(c, append(append([]int(nil), path...), i+1))
					}
				}
			}
			walk(m.Root, nil)
		}
	}
}

func compareBS(t *testing.T, name string, got, want imap.BodyStructure) {
	t.Helper()
	switch w := want.(type) {
	case *imap.BodyStructureMultiPart:
		g, ok := got.(*imap.BodyStructureMultiPart)
		if !ok || g.Subtype != w.Subtype || len(g.Children) != len(w.Children) {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
			return
		}
		for i := range w.Children {
			compareBS(t, name, g.Children[i], w.Children[i])
		}
	case *imap.BodyStructureSinglePart:
		g, ok := got.(*imap.BodyStructureSinglePart)
		if !ok || g.MediaType() != w.MediaType() || g.Size != w.Size || !strings.EqualFold(g.Encoding, orDefault(w.Encoding)) {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
			return
		}
		if (g.Text == nil) != (w.Text == nil) || g.Text != nil && g.Text.NumLines != w.Text.NumLines {
			t.Errorf("%s: text lines %+v vs %+v", name, g.Text, w.Text)
		}
		if w.MessageRFC822 != nil {
			if g.MessageRFC822 == nil || g.MessageRFC822.NumLines != w.MessageRFC822.NumLines ||
				g.MessageRFC822.Envelope.Subject != w.MessageRFC822.Envelope.Subject {
				t.Errorf("%s: message %+v vs %+v", name, g.MessageRFC822, w.MessageRFC822)
				return
			}
			compareBS(t, name, g.MessageRFC822.BodyStructure, w.MessageRFC822.BodyStructure)
		}
	}
}

func orDefault(enc string) string {
	if enc == "" {
		return "7bit"
	}
	return enc
}
