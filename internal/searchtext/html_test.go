package searchtext

import (
	"bytes"
	"testing"
)

// TestHTMLTextSplitWrites: the reduction keeps its state between writes,
// so the text is the same however the HTML is cut.
func TestHTMLTextSplitWrites(t *testing.T) {
	const in = `<!DOCTYPE html><html><head><title>T&amp;C</title><style a=">">p{}</style></head>` +
		`<body><!-- c > d --><p class='x>y'>caf&eacute;&nbsp;&#233;&#x41;&bogus; a < b &lt;</p>in<i>voi</i>ce<br/>end&amp`
	const want = "\nT&C\n\ncafé éA&bogus; a < b <\ninvoice\nend&"
	whole := func(parts ...[]byte) string {
		var out bytes.Buffer
		h := newHTMLText(&out)
		for _, p := range parts {
			if _, err := h.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	if got := whole([]byte(in)); got != want {
		t.Fatalf("whole: %q, want %q", got, want)
	}
	var bytewise [][]byte
	for i := range len(in) {
		bytewise = append(bytewise, []byte(in[i:i+1]))
	}
	if got := whole(bytewise...); got != want {
		t.Fatalf("byte by byte: %q, want %q", got, want)
	}
}
