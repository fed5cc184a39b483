package smtpd

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// A header line longer than readIncoming's buffer, whatever its length,
// never ends the header early: the end of such a line, even when only its
// line break is left, is not the blank line. (Were it, the fields after it
// would pass as body, unchecked, and reach the recipient's reader as
// header: a From field after a long line would go unchecked.)
func TestReadIncomingLongLines(t *testing.T) {
	for _, n := range []int{100, 4094, 4095, 4096, 4097, 8191, 8192, 65535, 65536, 65537} {
		for _, eol := range []string{"\r\n", "\n"} {
			t.Run(fmt.Sprintf("%d%q", n, eol), func(t *testing.T) {
				long := "X-Long: " + strings.Repeat("a", n-len("X-Long: "))
				msg := long + eol + "From: mallory@example.net" + eol + "Subject: s" + eol + eol + "body" + eol
				in, err := readIncoming(strings.NewReader(msg))
				if err != nil {
					t.Fatal(err)
				}
				if got := in.header.Get("From"); got != "mallory@example.net" {
					t.Errorf("From field %q: the header ended early", got)
				}
				rest, err := io.ReadAll(in.rest)
				if err != nil {
					t.Fatal(err)
				}
				if string(in.raw)+string(rest) != msg {
					t.Errorf("header and rest do not add up to the message")
				}
				if string(rest) != "body"+eol {
					t.Errorf("rest %q, want the body", rest)
				}
			})
		}
	}
}
