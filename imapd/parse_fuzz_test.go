package imapd

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/store"
)

// FuzzCommandArgs runs the argument parsers of FETCH, SEARCH, STORE's
// flag list, APPEND's date and METADATA's entry names and options on
// arbitrary input: they must return a result or an error (a BAD), never
// panic, whatever the nesting.
func FuzzCommandArgs(f *testing.F) {
	for _, s := range []string{
		"(FLAGS UID BODY.PEEK[1.2.HEADER.FIELDS.NOT (Received \"X y\")]<10.20> BINARY[3]<0.5> BINARY.SIZE[1])",
		"ALL", "FAST", "FULL", "BODY[]", "BODY[1.MIME]", "RFC822.HEADER", "(ENVELOPE BODYSTRUCTURE BODY)",
		"OR (FROM bob SINCE 1-Jan-2024) NOT (LARGER 100 SMALLER 5) UID 1:*,7 $ KEYWORD $x HEADER X-A {3+}\r\nabc",
		"RETURN (MIN MAX SAVE) CHARSET UTF-8 TEXT \"x\"",
		"(\\Seen $Work)", "\\Answered \\Flagged", "\" 6-May-2024 07:08:09 +0000\"",
		"NOT NOT NOT NOT NOT NOT ALL", "((((((((((((((((((((ALL))))))))))))))))))))",
		"/private/vendor/x/Y", "\"/shared/a b\"", "MAXSIZE 1024 DEPTH infinity)",
	} {
		f.Add([]byte(s + "\r\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := imapwire.Limits{MaxLine: 1024, MaxLiteral: 64, MaxCommand: 4096, MaxDepth: 20}
		dec := func() *imapwire.Decoder {
			d := imapwire.NewDecoder(bufio.NewReader(bytes.NewReader(data)), lim)
			d.Continue = func() error { return nil }
			return d
		}
		parseFetch(dec(), true) //nolint:errcheck // only panics matter
		var c imap.SearchCriteria
		(&searchParser{d: dec()}).criteria(&c, false)           //nolint:errcheck
		flagListArg(dec(), true)                                //nolint:errcheck
		dateTimeArg(dec())                                      //nolint:errcheck
		dec().NumSet(false)                                     //nolint:errcheck
		entryNameArg(&cmd{d: dec()})                            //nolint:errcheck
		metadataOptions(&cmd{d: dec()}, &store.MetadataQuery{}) //nolint:errcheck
	})
}
