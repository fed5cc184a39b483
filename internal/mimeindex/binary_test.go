package mimeindex

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// TestEncodeParts: parts holding NUL are found and re-encoded in base64,
// decoding back to the original bytes; everything else is kept byte for
// byte.
func TestEncodeParts(t *testing.T) {
	bin := "\x00-\xe4\n\r\n\n"
	tests := []struct {
		name      string
		msg       string
		wantParts int
	}{
		{"single part, binary", "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + bin, 1},
		{"single part, no CTE", "Subject: x\r\n\r\n" + bin, 1},
		{"multipart, one binary part", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
			"--b\r\nContent-Type: application/x\r\nContent-Transfer-Encoding:\r\n binary\r\n\r\n" + bin + "\r\n--b--\r\n", 1},
		{"no NUL", "Subject: x\r\n\r\nplain text\r\n", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idx, err := Index(strings.NewReader(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			r := strings.NewReader(tc.msg)
			parts, err := NULParts(r, idx)
			if err != nil || len(parts) != tc.wantParts {
				t.Fatalf("NULParts = %d parts, %v; want %d", len(parts), err, tc.wantParts)
			}
			var out bytes.Buffer
			if err := EncodeParts(r, int64(len(tc.msg)), parts, &out); err != nil {
				t.Fatal(err)
			}
			if tc.wantParts == 0 {
				if out.String() != tc.msg {
					t.Fatalf("changed without NUL: %q", out.String())
				}
				return
			}
			enc := out.String()
			if strings.IndexByte(enc, 0) >= 0 {
				t.Fatalf("NUL left: %q", enc)
			}
			idx2, err := Index(strings.NewReader(enc))
			if err != nil {
				t.Fatal(err)
			}
			p := idx2.Root.Find([]int{max(len(idx2.Root.Children), 1)})
			if p.Encoding != "BASE64" {
				t.Fatalf("encoding %q in %q", p.Encoding, enc)
			}
			body := strings.Join(strings.Fields(enc[p.BodyStart:p.End]), "")
			got, err := base64.StdEncoding.DecodeString(body)
			if err != nil || string(got) != bin {
				t.Fatalf("decoded %q %v, want %q (message %q)", got, err, bin, enc)
			}
			if strings.Count(strings.ToLower(enc), "content-transfer-encoding") != strings.Count(strings.ToLower(tc.msg), "content-transfer-encoding")+
				boolInt(!strings.Contains(strings.ToLower(tc.msg[:strings.Index(tc.msg, bin)]), "content-transfer-encoding")) {
				t.Fatalf("CTE fields in %q", enc)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
