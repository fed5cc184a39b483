package store

import (
	"bytes"
	"testing"
)

func TestHasTrigram(t *testing.T) {
	for _, tc := range []struct {
		s               string
		ascii, wideWord bool
	}{
		{"budget", true, true},
		{"ab", false, false},
		{"a b c", false, false},
		{"x-1y", false, false},
		{"1y2", true, true},
		{"встреча", false, true},
		{"caf\u00e9", true, true},
		{"ca\u00e9f", false, true},
		{"会議報告", false, true},
		{"", false, false},
	} {
		if got := hasTrigram(tc.s, true); got != tc.ascii {
			t.Errorf("hasTrigram(%q, ascii only) = %v", tc.s, got)
		}
		if got := hasTrigram(tc.s, false); got != tc.wideWord {
			t.Errorf("hasTrigram(%q) = %v", tc.s, got)
		}
	}
}

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
