package mimeindex

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// prependFields are header blocks a server puts in front of a message.
var prependFields = []string{
	"Received: from client.example ([192.0.2.1])\r\n\tby mx.example (mailstack) with ESMTPS id 1;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n",
	"Authentication-Results: mx.example; spf=pass smtp.mailfrom=a@b.example\r\nX-Spam-Status: No\r\n",
	// Submission adds these when the client left them out: the envelope
	// must see them.
	"Message-ID: <1.2@mx.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
	"From: Someone <s@example.org>\r\nTo: t@example.org\r\nSubject: prepended\r\n",
	"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s;\r\n\th=from; bh=x; b=y\r\n",
	"X-Bare: lf\n",
	// Refused: the index would change beyond an offset shift.
	"Content-Type: multipart/mixed; boundary=a\r\n",
	"X-Open: no line break",
	"X-Blank: line\r\n\r\n",
	" continuation first\r\n",
}

// prependMessages are messages the MX and submission store.
var prependMessages = []struct{ name, msg string }{
	{"plain", "From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\nDate: Tue, 2 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@b.example>\r\n\r\nHello\r\n"},
	{"multipart", "From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\ntext\r\n--b1\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--b1--\r\nepilogue\r\n"},
	{"nested message/rfc822", "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@c.example\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\ninner text\r\n--i--\r\n--o--\r\n"},
	{"no final newline", "From: a@b.example\r\nSubject: cut\r\n\r\nno line break at the end"},
	{"bare LF", "From: a@b.example\nSubject: lf\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\nbody\n--z--\n"},
	{"header only", "From: a@b.example\r\nSubject: nothing else\r\n"},
	{"header without newline", "Subject: x"},
	{"empty", ""},
	{"blank first line", "\r\nbody without header\r\n"},
	{"continuation first", " folded\r\nSubject: x\r\n\r\nbody\r\n"},
	{"envelope fields repeated", "Date: Wed, 3 Jan 2024 00:00:00 +0000\r\nMessage-ID: <orig@b.example>\r\nFrom: a@b.example\r\nTo: x@y.example\r\n\r\nbody\r\n"},
	{"message/rfc822 root", "Content-Type: message/rfc822\r\n\r\nFrom: in@x.example\r\nSubject: inside\r\n\r\nbody\r\n"},
	{"no colon line", "not a field\r\nSubject: x\r\n\r\nbody\r\n"},
}

// TestPrepend: prepending fields to an index gives what indexing the
// whole message gives, or is refused and leaves the index as it was.
func TestPrepend(t *testing.T) {
	for _, m := range prependMessages {
		for i, f := range prependFields {
			t.Run(m.name+"/"+strings.SplitN(f, ":", 2)[0], func(t *testing.T) {
				checkPrepend(t, []byte(f), []byte(m.msg), i < 6)
			})
		}
	}
}

// checkPrepend checks Prepend of fields to msg; wantOK says whether it
// must succeed (for a message whose first line is no continuation).
func checkPrepend(t testing.TB, fields, msg []byte, wantOK bool) {
	m, err := Index(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(m)
	header := msg[:m.Root.BodyStart]
	ok := m.Prepend(fields, header)
	got, _ := json.Marshal(m)
	if !ok {
		if wantOK && !(len(msg) > 0 && (msg[0] == ' ' || msg[0] == '\t')) {
			t.Fatalf("Prepend(%q) refused", fields)
		}
		if !bytes.Equal(got, before) {
			t.Fatalf("refused Prepend changed the index:\n%s\n%s", before, got)
		}
		return
	}
	full, err := Index(bytes.NewReader(append(bytes.Clone(fields), msg...)))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(full)
	if !bytes.Equal(got, want) {
		t.Fatalf("Prepend(%q):\n got %s\nwant %s", fields, got, want)
	}
}

func FuzzPrepend(f *testing.F) {
	for _, m := range prependMessages {
		for i := range prependFields {
			f.Add(uint8(i), []byte(m.msg))
		}
	}
	for _, tt := range sectionTests {
		f.Add(uint8(0), []byte(tt.msg))
	}
	for _, tt := range malformedTests {
		f.Add(uint8(2), []byte(tt.msg))
	}
	f.Fuzz(func(t *testing.T, which uint8, msg []byte) {
		checkPrepend(t, []byte(prependFields[int(which)%len(prependFields)]), msg, false)
	})
}

// BenchmarkPrepend compares prepending trace fields to an index with
// indexing the whole message again, what the MX did before.
func BenchmarkPrepend(b *testing.B) {
	msg := []byte(prependMessages[2].msg + strings.Repeat("x", 4000) + "\r\n")
	fields := []byte(prependFields[0] + prependFields[1])
	b.Run("prepend", func(b *testing.B) {
		for b.Loop() {
			m, _ := Index(bytes.NewReader(msg))
			m.Prepend(fields, msg[:m.Root.BodyStart])
		}
	})
	b.Run("reindex", func(b *testing.B) {
		for b.Loop() {
			Index(bytes.NewReader(msg))
			Index(bytes.NewReader(append(bytes.Clone(fields), msg...)))
		}
	})
}
