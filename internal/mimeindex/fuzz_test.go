package mimeindex

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
)

func FuzzIndex(f *testing.F) {
	for _, tt := range sectionTests {
		f.Add([]byte(tt.msg))
		f.Add([]byte(toCRLF(tt.msg)))
	}
	for _, tt := range malformedTests {
		f.Add([]byte(tt.msg))
	}
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: message/rfc822\n\nContent-Type: multipart/digest; boundary=b\n\n--b\n\n--a\n--b--\n"))
	f.Add([]byte("Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=\r\n= \r=4\r\n=4Z \t\r"))
	// Former failures: a hang in the address tokenizer, broken nesting.
	f.Add([]byte("From:)\nContent-Type:\r\n"))
	// Address syntax: routes, groups, comments, quoting, unterminated forms.
	f.Add([]byte("From: <@a,@b:u@d>, g: (c) ;, \"q\\\"x\" <@>, (x\nTo: a(b)c@[d\\]e], ,,\"\n\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b0\n\n--b0\nContent-Type: message/rfc822\n\nSubject: x\nContent-Type: multipart/mixed; boundary=b3\n\n--b0 \n0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Index(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if m.Size != int64(len(data)) {
			t.Fatalf("Size %d, want %d", m.Size, len(data))
		}
		checkInvariants(t, m)

		var walk func(p *Part)
		walk = func(p *Part) {
			if p.Type != "multipart" && !p.isMessage() { // containers report their raw size
				n, _ := io.Copy(io.Discard, NewDecoder(p.Encoding, bytes.NewReader(data[p.BodyStart:p.End])))
				if n != p.DecodedSize {
					t.Fatalf("DecodedSize %d, NewDecoder %d", p.DecodedSize, n)
				}
			}
			if bytes.Count(data[p.BodyStart:p.End], []byte("\n")) != int(p.BodyLines) {
				t.Fatalf("BodyLines %d for %q", p.BodyLines, data[p.BodyStart:p.End])
			}
			for _, c := range p.Children {
				walk(c)
			}
		}
		walk(m.Root)

		m.Root.BodyStructure(true)
		m.Envelope.IMAP()
		e := m.Envelope
		for _, l := range [][]Address{e.From, e.Sender, e.ReplyTo, e.To, e.Cc, e.Bcc} {
			checkAddresses(t, l)
			FormatAddressList(l)
		}
		m.Envelope.Decoded()
		if _, err := json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	})
}
