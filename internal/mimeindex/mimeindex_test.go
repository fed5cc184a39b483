package mimeindex

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// toCRLF converts a test fixture written with LF line ends to CRLF.
func toCRLF(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func mustIndex(t testing.TB, msg string) *Message {
	t.Helper()
	m, err := Index(strings.NewReader(msg))
	if err != nil {
		t.Fatalf("Index: %v", err)
	}
	checkInvariants(t, m)
	return m
}

// checkInvariants verifies what must hold for any input: offsets ordered
// and in bounds, children nested in their parent's body and in order.
func checkInvariants(t testing.TB, m *Message) {
	t.Helper()
	if m.Version != Version {
		t.Errorf("Version = %d", m.Version)
	}
	if m.Root == nil || m.Envelope == nil {
		t.Fatalf("nil Root or Envelope")
	}
	if m.Root.HeaderStart != 0 || m.Root.End != m.Size {
		t.Errorf("root spans [%d,%d), want [0,%d)", m.Root.HeaderStart, m.Root.End, m.Size)
	}
	var walk func(p *Part, lo, hi int64, depth int)
	walk = func(p *Part, lo, hi int64, depth int) {
		if depth > maxDepth+2 {
			t.Fatalf("nesting deeper than maxDepth")
		}
		if !(lo <= p.HeaderStart && p.HeaderStart <= p.BodyStart && p.BodyStart <= p.End && p.End <= hi) {
			t.Fatalf("part [%d,%d,%d) not within [%d,%d]", p.HeaderStart, p.BodyStart, p.End, lo, hi)
		}
		if p.BodyLines < 0 || p.BodyLines > p.End-p.BodyStart || p.DecodedSize < 0 {
			t.Fatalf("bad BodyLines %d / DecodedSize %d for body size %d", p.BodyLines, p.DecodedSize, p.End-p.BodyStart)
		}
		if p.Type == "" || p.Subtype == "" || p.Encoding == "" {
			t.Fatalf("empty type/encoding: %+v", p)
		}
		if isMessageType(p.Type, p.Subtype) && len(p.Children) == 1 {
			c := p.Children[0]
			if c.HeaderStart != p.BodyStart || c.End != p.End {
				t.Fatalf("encapsulated message [%d,%d) != body [%d,%d)", c.HeaderStart, c.End, p.BodyStart, p.End)
			}
			if p.Envelope == nil {
				t.Fatalf("message part without envelope")
			}
		}
		prev := p.BodyStart
		for _, c := range p.Children {
			walk(c, prev, p.End, depth+1)
			prev = c.End
		}
	}
	walk(m.Root, 0, m.Size, 0)
}

// wantPart describes an expected part, in the LF form of the fixture.
type wantPart struct {
	path   []int
	typ    string // "type/subtype"
	header string // BODY[path.MIME] (or HEADER of a message), "" = unchecked
	body   string // BODY[path]
	lines  int64
	// decoded is the expected decoding of the body; binary means it does
	// not change with the fixture's line ends.
	decoded string
	binary  bool
}

const simpleMsg = `From: Alice <alice@example.com>
To: bob@example.com
Subject: Hello
Date: Mon, 2 Jan 2006 15:04:05 -0700
Message-ID: <abc@example.com>

Hello Bob,
How are you?
`

const alternativeMsg = `From: a@example.com
Content-Type: multipart/alternative; boundary="b1"

preamble
--b1
Content-Type: text/plain; charset=utf-8

plain
--b1
Content-Type: text/html

<p>html</p>

--b1--
epilogue
`

var attachmentData = bytes.Repeat([]byte("binary\x00\xff attachment data "), 20)

var mixedMsg = `From: a@example.com
Subject: mixed
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/related; boundary="inner"; type="text/html"

--inner
Content-Type: text/html; charset=us-ascii
Content-Transfer-Encoding: quoted-printable

<p>caf=C3=A9 is a long line that is soft=
 broken</p>=20
<img src=3D"cid:img1">
--inner
Content-Type: image/png
Content-ID: <img1>
Content-Transfer-Encoding: base64

` + wrap76(base64.StdEncoding.EncodeToString([]byte("PNGDATA"))) + `
--inner--
--outer
Content-Type: application/octet-stream; name="data.bin"
Content-Disposition: attachment; filename="data.bin"
Content-Transfer-Encoding: base64

` + wrap76(base64.StdEncoding.EncodeToString(attachmentData)) + `
--outer--
`

// rfc822Msg is the message of the RFC 3501 §6.4.5 section example
// (parts 1, 2, 3, 3.1, 3.2, 4, 4.1, 4.2, 4.2.1, 4.2.2, 4.2.2.1, 4.2.2.2).
const rfc822Msg = `From: top@example.com
Subject: top
Content-Type: MULTIPART/MIXED; boundary=b0

--b0
Content-Type: TEXT/PLAIN

part 1
--b0
Content-Type: APPLICATION/OCTET-STREAM

part 2
--b0
Content-Type: MESSAGE/RFC822

From: inner3@example.com
Subject: three
Content-Type: multipart/mixed; boundary=b3

--b3

part 3.1
--b3
Content-Type: application/octet-stream

part 3.2
--b3--
--b0
Content-Type: multipart/mixed; boundary=b4

--b4
Content-Type: image/gif

part 4.1
--b4
Content-Type: message/rfc822

From: inner42@example.com
Subject: four two
Content-Type: multipart/mixed; boundary=b42

--b42
Content-Type: text/plain

part 4.2.1
--b42
Content-Type: multipart/alternative; boundary=b422

--b422
Content-Type: text/plain

part 4.2.2.1
--b422
Content-Type: text/richtext

part 4.2.2.2
--b422--
--b42--
--b4--
--b0--
`

const digestMsg = `From: digest@example.com
Content-Type: multipart/digest; boundary=d

--d

From: one@example.com
Subject: one

message one
--d
Content-Type: text/plain

not a message
--d--
`

func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76])
		b.WriteByte('\n')
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

var sectionTests = []struct {
	name  string
	msg   string
	parts []wantPart
}{
	{"simple", simpleMsg, []wantPart{
		{path: nil, typ: "text/plain", body: "Hello Bob,\nHow are you?\n", lines: 2,
			header: "From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: Hello\nDate: Mon, 2 Jan 2006 15:04:05 -0700\nMessage-ID: <abc@example.com>\n\n"},
		{path: []int{1}, typ: "text/plain", body: "Hello Bob,\nHow are you?\n", lines: 2},
	}},
	{"alternative", alternativeMsg, []wantPart{
		{path: nil, typ: "multipart/alternative", lines: 12},
		{path: []int{1}, typ: "text/plain", header: "Content-Type: text/plain; charset=utf-8\n\n", body: "plain", lines: 0},
		{path: []int{2}, typ: "text/html", header: "Content-Type: text/html\n\n", body: "<p>html</p>\n", lines: 1},
	}},
	{"mixed", mixedMsg, []wantPart{
		{path: []int{1}, typ: "multipart/related"},
		{path: []int{1, 1}, typ: "text/html",
			header:  "Content-Type: text/html; charset=us-ascii\nContent-Transfer-Encoding: quoted-printable\n\n",
			body:    "<p>caf=C3=A9 is a long line that is soft=\n broken</p>=20\n<img src=3D\"cid:img1\">",
			lines:   2,
			decoded: "<p>café is a long line that is soft broken</p> \n<img src=\"cid:img1\">"},
		{path: []int{1, 2}, typ: "image/png", decoded: "PNGDATA", binary: true},
		{path: []int{2}, typ: "application/octet-stream", decoded: string(attachmentData), binary: true},
	}},
	{"rfc822", rfc822Msg, []wantPart{
		{path: []int{1}, typ: "text/plain", body: "part 1", header: "Content-Type: TEXT/PLAIN\n\n"},
		{path: []int{2}, typ: "application/octet-stream", body: "part 2"},
		{path: []int{3}, typ: "message/rfc822", header: "Content-Type: MESSAGE/RFC822\n\n", lines: 11,
			body: "From: inner3@example.com\nSubject: three\nContent-Type: multipart/mixed; boundary=b3\n\n--b3\n\npart 3.1\n--b3\nContent-Type: application/octet-stream\n\npart 3.2\n--b3--"},
		{path: []int{3, 1}, typ: "text/plain", header: "\n", body: "part 3.1"},
		{path: []int{3, 2}, typ: "application/octet-stream", body: "part 3.2"},
		{path: []int{4}, typ: "multipart/mixed"},
		{path: []int{4, 1}, typ: "image/gif", body: "part 4.1", header: "Content-Type: image/gif\n\n"},
		{path: []int{4, 2}, typ: "message/rfc822"},
		{path: []int{4, 2, 1}, typ: "text/plain", body: "part 4.2.1"},
		{path: []int{4, 2, 2}, typ: "multipart/alternative"},
		{path: []int{4, 2, 2, 1}, typ: "text/plain", body: "part 4.2.2.1"},
		{path: []int{4, 2, 2, 2}, typ: "text/richtext", body: "part 4.2.2.2"},
	}},
	{"digest", digestMsg, []wantPart{
		{path: []int{1}, typ: "message/rfc822", header: "\n", body: "From: one@example.com\nSubject: one\n\nmessage one", lines: 3},
		{path: []int{1, 1}, typ: "text/plain", body: "message one"},
		{path: []int{2}, typ: "text/plain", body: "not a message"},
	}},
}

func TestSections(t *testing.T) {
	for _, tt := range sectionTests {
		for _, form := range []string{"LF", "CRLF"} {
			t.Run(tt.name+"/"+form, func(t *testing.T) {
				conv := func(s string) string { return s }
				if form == "CRLF" {
					conv = toCRLF
				}
				msg := conv(tt.msg)
				m := mustIndex(t, msg)
				if m.Size != int64(len(msg)) {
					t.Errorf("Size = %d, want %d", m.Size, len(msg))
				}
				for _, w := range tt.parts {
					p := m.Root.Find(w.path)
					if p == nil {
						t.Fatalf("%v: not found", w.path)
					}
					if got := p.Type + "/" + p.Subtype; got != w.typ {
						t.Errorf("%v: type %q, want %q", w.path, got, w.typ)
					}
					if w.header != "" {
						if got := msg[p.HeaderStart:p.BodyStart]; got != conv(w.header) {
							t.Errorf("%v: header %q, want %q", w.path, got, conv(w.header))
						}
					}
					if w.body != "" {
						if got := msg[p.BodyStart:p.End]; got != conv(w.body) {
							t.Errorf("%v: body %q, want %q", w.path, got, conv(w.body))
						}
					}
					if w.lines != 0 && p.BodyLines != w.lines {
						t.Errorf("%v: BodyLines %d, want %d", w.path, p.BodyLines, w.lines)
					}
					if w.decoded != "" {
						want := w.decoded
						if !w.binary {
							want = conv(want)
						}
						if p.DecodedSize != int64(len(want)) {
							t.Errorf("%v: DecodedSize %d, want %d", w.path, p.DecodedSize, len(want))
						}
						got, _ := io.ReadAll(NewDecoder(p.Encoding, strings.NewReader(msg[p.BodyStart:p.End])))
						if string(got) != want {
							t.Errorf("%v: decoded %q, want %q", w.path, got, want)
						}
					}
				}
			})
		}
	}
}

// TestCRLFvsLF checks that the CRLF form has the same structure and line
// counts as the LF form.
func TestCRLFvsLF(t *testing.T) {
	for _, tt := range sectionTests {
		a, b := mustIndex(t, tt.msg), mustIndex(t, toCRLF(tt.msg))
		var walk func(p, q *Part)
		walk = func(p, q *Part) {
			if p.Type != q.Type || p.Subtype != q.Subtype || p.BodyLines != q.BodyLines || len(p.Children) != len(q.Children) {
				t.Errorf("%s: LF %s/%s lines %d children %d; CRLF %s/%s lines %d children %d", tt.name,
					p.Type, p.Subtype, p.BodyLines, len(p.Children), q.Type, q.Subtype, q.BodyLines, len(q.Children))
				return
			}
			for i := range p.Children {
				walk(p.Children[i], q.Children[i])
			}
		}
		walk(a.Root, b.Root)
	}
}

func TestMetadata(t *testing.T) {
	m := mustIndex(t, toCRLF(mixedMsg))
	att := m.Root.Find([]int{2})
	if att.Encoding != "BASE64" || att.Disposition != "attachment" ||
		att.DispositionParams["filename"] != "data.bin" || att.Params["name"] != "data.bin" {
		t.Errorf("attachment metadata: %+v", att)
	}
	img := m.Root.Find([]int{1, 2})
	if img.ID != "<img1>" {
		t.Errorf("Content-ID = %q", img.ID)
	}
	rel := m.Root.Find([]int{1})
	if rel.Params["boundary"] != "inner" || rel.Params["type"] != "text/html" {
		t.Errorf("related params: %v", rel.Params)
	}
	if m.Root.Encoding != "7BIT" {
		t.Errorf("default encoding %q", m.Root.Encoding)
	}
	if m.Envelope.Subject != "mixed" || len(m.Envelope.From) != 1 || m.Envelope.From[0].Host != "example.com" {
		t.Errorf("envelope: %+v", m.Envelope)
	}

	m = mustIndex(t, rfc822Msg)
	three := m.Root.Find([]int{3})
	if three.Envelope == nil || three.Envelope.Subject != "three" {
		t.Errorf("3: envelope %+v", three.Envelope)
	}
	if m.Root.Find([]int{4, 2}).Envelope.Subject != "four two" {
		t.Errorf("4.2: wrong envelope")
	}
	// The encapsulated message's header is 3.HEADER, its body 3.TEXT.
	enc := three.Children[0]
	if got := rfc822Msg[enc.HeaderStart:enc.BodyStart]; got != "From: inner3@example.com\nSubject: three\nContent-Type: multipart/mixed; boundary=b3\n\n" {
		t.Errorf("3.HEADER = %q", got)
	}
}

func TestDecodedSize(t *testing.T) {
	payload := []byte(strings.Repeat("Grüße, line with = sign and trailing space \nand more\t\n", 50))
	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	w.Write(payload)
	w.Close()
	b64 := wrap76(base64.StdEncoding.EncodeToString(payload))

	for _, tc := range []struct {
		enc, body string
		want      int
	}{
		{"base64", b64, len(payload)},
		{"BASE64", strings.ReplaceAll(b64, "\n", "\r\n"), len(payload)},
		{"quoted-printable", qp.String(), len(toCRLF(string(payload)))}, // the QP writer emits CRLF
		{"7bit", "abc\ndef\n", 8},
		{"x-uuencode", "begin 644 x\n", 12},
		{"base64", "QUJD\n!!!!\nREVG\n", 6},     // junk skipped
		{"base64", "QQ==QkM=\n", 3},             // concatenated encodings
		{"base64", "QUJDRA\n", 4},               // missing padding
		{"quoted-printable", "a=ZZb=4\n", 8},    // invalid escapes kept
		{"quoted-printable", "a  \nb=\nc\n", 5}, // trailing space dropped, soft break
	} {
		for _, form := range []string{"LF", "CRLF"} {
			body := tc.body
			if form == "CRLF" && !strings.Contains(body, "\r") {
				body = toCRLF(body)
			}
			msg := "Content-Type: application/octet-stream\nContent-Transfer-Encoding: " + tc.enc + "\n\n" + body
			m := mustIndex(t, msg)
			got, err := io.ReadAll(NewDecoder(tc.enc, strings.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			if m.Root.DecodedSize != int64(len(got)) {
				t.Errorf("%s %q: DecodedSize %d != NewDecoder %d", tc.enc, body, m.Root.DecodedSize, len(got))
			}
			if form == "LF" {
				if len(got) != tc.want {
					t.Errorf("%s %q: decoded %d bytes, want %d", tc.enc, body, len(got), tc.want)
				}
			}
		}
	}

	// Valid input decodes like the standard library.
	m := mustIndex(t, "Content-Transfer-Encoding: quoted-printable\n\n"+qp.String())
	std, _ := io.ReadAll(quotedprintable.NewReader(strings.NewReader(qp.String())))
	if m.Root.DecodedSize != int64(len(std)) {
		t.Errorf("QP DecodedSize %d, stdlib %d", m.Root.DecodedSize, len(std))
	}
}

// TestDecoderSplits feeds the decoders one byte at a time.
func TestDecoderSplits(t *testing.T) {
	for _, tc := range []struct{ enc, in string }{
		{"quoted-printable", "a=3D=\r\nb  \r\nc=\n=4x= \t\r\nend \r"},
		{"base64", "QUJD\r\nREVG=\r\nR0g"},
	} {
		whole, _ := io.ReadAll(NewDecoder(tc.enc, strings.NewReader(tc.in)))
		split, _ := io.ReadAll(NewDecoder(tc.enc, iotest.OneByteReader(strings.NewReader(tc.in))))
		if !bytes.Equal(whole, split) {
			t.Errorf("%s: %q vs %q", tc.enc, whole, split)
		}
	}
}

var malformedTests = []struct {
	name  string
	msg   string
	check func(t *testing.T, m *Message, msg string)
}{
	{"truncated multipart", "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\nunfinished\nbody\n", func(t *testing.T, m *Message, msg string) {
		p := m.Root.Find([]int{1})
		if got := msg[p.BodyStart:p.End]; got != "unfinished\nbody\n" || p.BodyLines != 2 {
			t.Errorf("body %q lines %d", got, p.BodyLines)
		}
	}},
	{"truncated nested", "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: multipart/alternative; boundary=y\n\n--y\n\ninner\n--x\n\nsecond\n", func(t *testing.T, m *Message, msg string) {
		if n := len(m.Root.Children); n != 2 {
			t.Fatalf("%d children", n)
		}
		if p := m.Root.Find([]int{1, 1}); msg[p.BodyStart:p.End] != "inner" {
			t.Errorf("1.1 body %q", msg[p.BodyStart:p.End])
		}
		if p := m.Root.Find([]int{2}); msg[p.BodyStart:p.End] != "second\n" {
			t.Errorf("2 body %q", msg[p.BodyStart:p.End])
		}
	}},
	{"no boundary param", "Content-Type: multipart/mixed\n\n--x\n\ntext\n--x--\n", func(t *testing.T, m *Message, msg string) {
		if m.Root.Type != "text" || len(m.Root.Children) != 0 || m.Root.End != m.Size {
			t.Errorf("got %s/%s with %d children", m.Root.Type, m.Root.Subtype, len(m.Root.Children))
		}
	}},
	{"empty multipart", "Content-Type: multipart/mixed; boundary=ab\n\nbody\n", func(t *testing.T, m *Message, msg string) {
		if m.Root.Type != "multipart" || len(m.Root.Children) != 0 || m.Root.BodyLines != 1 {
			t.Errorf("got %+v", m.Root)
		}
	}},
	{"header only", "Subject: x\nFrom: a@b\n", func(t *testing.T, m *Message, msg string) {
		if m.Root.BodyStart != m.Size || m.Envelope.Subject != "x" {
			t.Errorf("BodyStart %d Subject %q", m.Root.BodyStart, m.Envelope.Subject)
		}
	}},
	{"no separator", "Subject: x\nthis is not a header\nFrom: a@b\n", func(t *testing.T, m *Message, msg string) {
		if m.Root.BodyStart != m.Size || len(m.Envelope.From) != 1 {
			t.Errorf("BodyStart %d From %v", m.Root.BodyStart, m.Envelope.From)
		}
	}},
	{"empty", "", func(t *testing.T, m *Message, msg string) {
		if m.Size != 0 || m.Root.Type != "text" {
			t.Errorf("%+v", m.Root)
		}
	}},
	{"body only", "\nbody\n", func(t *testing.T, m *Message, msg string) {
		if m.Root.BodyStart != 1 || m.Root.BodyLines != 1 {
			t.Errorf("%+v", m.Root)
		}
	}},
	{"8-bit headers", "Subject: Grüße\nFrom: J\xf6rg <j@example.com>\nContent-Type: text/plain; name=\"r\xe9sum\xe9.txt\"\n\nx", func(t *testing.T, m *Message, msg string) {
		if m.Envelope.Subject != "Grüße" || m.Envelope.From[0].Name != "Jörg" || m.Root.Params["name"] != "résumé.txt" {
			t.Errorf("subject %q from %q name %q", m.Envelope.Subject, m.Envelope.From[0].Name, m.Root.Params["name"])
		}
	}},
	{"NUL bytes", "Subject: a\x00b\n\nbody\x00\n", func(t *testing.T, m *Message, msg string) {
		if m.Envelope.Subject != "ab" || m.Root.BodyLines != 1 {
			t.Errorf("subject %q", m.Envelope.Subject)
		}
	}},
	{"bad base64", "Content-Transfer-Encoding: base64\n\n!!!not base64 at all\x00\n===\n", func(t *testing.T, m *Message, msg string) {
		if m.Root.DecodedSize != 10 { // "notbase64atall": 3 quanta + 2 chars before "="
			t.Errorf("DecodedSize %d", m.Root.DecodedSize)
		}
	}},
	{"garbage after final boundary", "Content-Type: multipart/mixed; boundary=x\n\n--x\n\na\n--x--\n--x\nContent-Type: text/html\n\ngarbage\n", func(t *testing.T, m *Message, msg string) {
		if len(m.Root.Children) != 1 || m.Root.End != m.Size {
			t.Errorf("%d children", len(m.Root.Children))
		}
	}},
	{"boundary with padding and CRLF mix", "Content-Type: multipart/mixed; boundary=\"x y\"\r\n\r\n--x y \t\r\n\nA\n--x y--  \n", func(t *testing.T, m *Message, msg string) {
		if p := m.Root.Find([]int{1}); p == nil || msg[p.BodyStart:p.End] != "A" {
			t.Errorf("part 1 wrong")
		}
	}},
	{"header ended by boundary", "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n--x\n\nb\n--x--", func(t *testing.T, m *Message, msg string) {
		p := m.Root.Find([]int{1})
		if p.Type != "text" || p.Subtype != "html" || p.BodyStart != p.End || msg[p.HeaderStart:p.BodyStart] != "Content-Type: text/html\n" {
			t.Errorf("part 1 %+v", p)
		}
		if p := m.Root.Find([]int{2}); msg[p.BodyStart:p.End] != "b" {
			t.Errorf("part 2 body %q", msg[p.BodyStart:p.End])
		}
	}},
	{"base64 message/rfc822", "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeAoKeQo=\n", func(t *testing.T, m *Message, msg string) {
		if len(m.Root.Children) != 0 || m.Root.DecodedSize != int64(len("Subject: x\n\ny\n")) {
			t.Errorf("%+v", m.Root)
		}
	}},
	{"empty message/rfc822", "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: message/rfc822\n\n--x--\n", func(t *testing.T, m *Message, msg string) {
		p := m.Root.Find([]int{1})
		if len(p.Children) != 1 || p.Envelope == nil {
			t.Errorf("%+v", p)
		}
	}},
	{"delimiter right after encapsulated header", "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: message/rfc822\n\nSubject: s\n\n--x--\n", func(t *testing.T, m *Message, msg string) {
		p := m.Root.Find([]int{1})
		if msg[p.BodyStart:p.End] != "Subject: s\n\n" || p.BodyLines != 2 || p.Envelope.Subject != "s" {
			t.Errorf("body %q lines %d", msg[p.BodyStart:p.End], p.BodyLines)
		}
		if q := p.Children[0]; q.BodyStart != q.End || q.End != p.End {
			t.Errorf("inner %+v", q)
		}
	}},
	{"invalid content-type", "Content-Type: garbage\n\nx", func(t *testing.T, m *Message, msg string) {
		if m.Root.Type != "text" || m.Root.Subtype != "plain" {
			t.Errorf("%s/%s", m.Root.Type, m.Root.Subtype)
		}
	}},
	{"only boundaries", "Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n--x--", func(t *testing.T, m *Message, msg string) {
		if len(m.Root.Children) != 2 {
			t.Errorf("%d children", len(m.Root.Children))
		}
	}},
}

func TestMalformed(t *testing.T) {
	for _, tt := range malformedTests {
		t.Run(tt.name, func(t *testing.T) {
			for _, msg := range []string{tt.msg, toCRLF(tt.msg)} {
				m := mustIndex(t, msg)
				if m.Size != int64(len(msg)) {
					t.Errorf("Size %d, want %d", m.Size, len(msg))
				}
				if msg == tt.msg {
					tt.check(t, m, msg)
				}
				m.Root.BodyStructure(true) // must not panic
				m.Envelope.IMAP()
			}
		})
	}
}

func TestLongLines(t *testing.T) {
	long := strings.Repeat("x", 3<<20)
	for _, tc := range []struct{ name, msg string }{
		{"body without newline", "Subject: s\n\n" + long},
		{"header", "Subject: " + long + "\nFrom: a@b\n\nbody\n"},
		{"part body", "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\n" + long + "\r\n--b\n\n" + long + "\r\n--b--\n"},
		{"base64 part", "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\n" + long + "\r\n--b--\n"},
		{"CR at chunk edge", "Content-Transfer-Encoding: quoted-printable\n\n" + strings.Repeat("y", bufSize-1) + "\r\n" + "z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustIndex(t, tc.msg)
			if m.Size != int64(len(tc.msg)) {
				t.Fatalf("Size %d", m.Size)
			}
			for _, p := range append([]*Part{m.Root}, m.Root.Children...) {
				if len(p.Children) > 0 {
					continue
				}
				body := tc.msg[p.BodyStart:p.End]
				got, _ := io.Copy(io.Discard, NewDecoder(p.Encoding, strings.NewReader(body)))
				if got != p.DecodedSize {
					t.Errorf("DecodedSize %d, NewDecoder %d", p.DecodedSize, got)
				}
			}
		})
	}
	// The header cap keeps parsing bounded but the offsets exact.
	m := mustIndex(t, "Subject: "+long+"\nFrom: a@b\n\nbody\n")
	if m.Envelope.Subject != "" || len(m.Envelope.From) != 0 || m.Root.BodyLines != 1 {
		t.Errorf("expected the oversized header to be skipped: %+v", m.Envelope)
	}
}

func TestLimits(t *testing.T) {
	var b strings.Builder
	for i := 0; i < maxDepth+20; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i)
	}
	b.WriteString("\ndeep\n")
	m := mustIndex(t, b.String())
	depth := 0
	for p := m.Root; len(p.Children) > 0; p = p.Children[0] {
		depth++
	}
	if depth != maxDepth {
		t.Errorf("depth %d", depth)
	}

	b.Reset()
	b.WriteString("Content-Type: multipart/mixed; boundary=b\n\n")
	for i := 0; i < maxParts+100; i++ {
		b.WriteString("--b\n\nx\n")
	}
	b.WriteString("--b--\n")
	m = mustIndex(t, b.String())
	if n := len(m.Root.Children); n != maxParts-1 {
		t.Errorf("%d parts", n)
	}
}

type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, strings.Repeat("a", min(len(p), r.n)))
	r.n -= n
	return n, nil
}

func TestReadError(t *testing.T) {
	_, err := Index(&errReader{n: 100})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("err = %v", err)
	}
	// Tiny reads must not change the result.
	a := mustIndex(t, mixedMsg)
	b, err := Index(iotest.OneByteReader(strings.NewReader(mixedMsg)))
	if err != nil || !reflect.DeepEqual(a, b) {
		t.Errorf("one-byte reads differ: %v", err)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, msg := range []string{simpleMsg, mixedMsg, rfc822Msg, digestMsg, malformedTests[8].msg,
		"To: undisclosed-recipients:;\nCc: A Group: a@b, \"q\" <c@d>;, e@f\n\n"} {
		m := mustIndex(t, msg)
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var back Message
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m, &back) {
			t.Errorf("round trip differs:\n%s", data)
		}
		if !bytes.HasPrefix(data, []byte(`{"v":1,`)) {
			t.Errorf("unexpected encoding %s", data[:20])
		}
	}
}

// bigMessage streams a message with a base64 attachment of n bytes without
// ever holding it in memory.
type bigMessage struct {
	head, tail string
	lines      int // base64 lines left
	buf        []byte
}

func newBigMessage(n int) *bigMessage {
	return &bigMessage{
		head: toCRLF("From: big@example.com\nSubject: big\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nsee attachment\n--zz\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"),
		tail: toCRLF("\n--zz--\n"),
		// 76 base64 characters per line encode 57 bytes.
		lines: (n + 56) / 57,
	}
}

var b64Line = []byte("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n")

func (g *bigMessage) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(g.buf) == 0 {
			switch {
			case g.head != "":
				g.buf, g.head = []byte(g.head), ""
			case g.lines > 0:
				g.buf = b64Line
				g.lines--
			case g.tail != "":
				g.buf, g.tail = []byte(g.tail), ""
			default:
				if n == 0 {
					return 0, io.EOF
				}
				return n, nil
			}
		}
		c := copy(p[n:], g.buf)
		g.buf = g.buf[c:]
		n += c
	}
	return n, nil
}

func TestBoundedMemory30MB(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	const size = 30 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, err := Index(newBigMessage(size))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("indexed %d bytes, allocated %d bytes in %d mallocs", m.Size, alloc, after.Mallocs-before.Mallocs)
	if alloc > 1<<20 {
		t.Errorf("allocated %d bytes for a %d byte message", alloc, m.Size)
	}
	att := m.Root.Find([]int{2})
	if att.DecodedSize != int64((size+56)/57*57) {
		t.Errorf("DecodedSize %d", att.DecodedSize)
	}
	if att.BodyLines != int64((size+56)/57) { // the CRLF of the blank line before the delimiter is the delimiter's
		t.Errorf("BodyLines %d", att.BodyLines)
	}
}

func benchmarkIndex(b *testing.B, open func() io.Reader, size int64) {
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Index(open()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIndex10KB(b *testing.B) {
	msg := toCRLF(mixedMsg)
	for len(msg) < 10<<10 {
		msg = strings.Replace(msg, "--outer--", "--outer\nContent-Type: text/plain\n\n"+strings.Repeat("Some text line of a reasonable length for mail.\n", 20)+"--outer--", 1)
	}
	benchmarkIndex(b, func() io.Reader { return strings.NewReader(msg) }, int64(len(msg)))
}

func BenchmarkIndex30MB(b *testing.B) {
	m, _ := Index(newBigMessage(30 << 20))
	benchmarkIndex(b, func() io.Reader { return newBigMessage(30 << 20) }, m.Size)
}
