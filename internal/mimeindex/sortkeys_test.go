package mimeindex

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// TestBaseSubject: RFC 5256 §2.1's extraction on tricky subjects.
func TestBaseSubject(t *testing.T) {
	tests := []struct {
		in    string
		base  string
		reply bool
	}{
		{"", "", false},
		{"Hello", "Hello", false},
		{"Re: Hello", "Hello", true},
		{"RE: re: Re:Hello", "Hello", true},
		{"Fwd: Hello", "Hello", true},
		{"FW: Hello", "Hello", true},
		{"fw : Hello", "Hello", true},
		{"Re [2]: Hello", "Hello", true},
		{"Re[2]:Hello", "Hello", true},
		{"[list] Re: Hello", "Hello", true},
		{"[a] [b] Re: [c] Fwd: Hello", "Hello", true},
		{"[list] Hello", "Hello", false},
		{"[list]", "[list]", false},    // a blob alone is the base subject
		{"[a] [b]", "[b]", false},      // the last blob stays
		{"Re: [list]", "[list]", true}, // a blob alone is kept after a leader
		{"Hello (fwd)", "Hello", true}, // trailer
		{"Hello (FWD) (fwd)  ", "Hello", true},
		{"[Fwd: Hello]", "Hello", true}, // forward wrapper
		{"[fwd: Re: Hello (fwd)]", "Hello", true},
		{"Re: [fwd: [list] Hello]", "Hello", true},
		{"Reply: Hello", "Reply: Hello", false}, // not a leader
		{"Ref: Hello", "Ref: Hello", false},
		{"Fwdx: Hello", "Fwdx: Hello", false},
		{"Re:", "", true},
		{"  Re:\t Hello \r\n  world  ", "Hello world", true}, // white space collapsed
		{"=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=", "Grüße", true}, // encoded words decoded first
		{"=?iso-8859-1?q?Caf=E9?= =?iso-8859-1?q?_au_lait?=", "Café au lait", false},
		{"Re: =?utf-8?b?5pel5pys6Kqe?=", "日本語", true},
		{"[PATCH v2 1/3] Re: Hello", "Hello", true},
		{"Re: [list] Re: Hello", "Hello", true},
		{"[unclosed Re: Hello", "[unclosed Re: Hello", false},
	}
	for _, tc := range tests {
		base, reply := BaseSubject(tc.in)
		if base != tc.base || reply != tc.reply {
			t.Errorf("BaseSubject(%q) = %q, %v; want %q, %v", tc.in, base, reply, tc.base, tc.reply)
		}
	}
}

// TestCasemap: i;unicode-casemap canonical forms compare case-insensitively
// and byte-wise in RFC 5051's order.
func TestCasemap(t *testing.T) {
	equal := [][2]string{{"hello", "HELLO"}, {"Émile", "émile"}, {"straße", "STRAßE"}, {"ǆ", "ǅ"}, {"ﬁle", "FILE"}}
	for _, p := range equal {
		if Casemap(p[0]) != Casemap(p[1]) {
			t.Errorf("Casemap(%q) = %q != Casemap(%q) = %q", p[0], Casemap(p[0]), p[1], Casemap(p[1]))
		}
	}
	// Ordered by code point after decomposition: empty first; a
	// combining accent (U+0301) after any ASCII letter.
	ordered := []string{"", "a", "B", "b@x", "bob", "E", "ef", "é", "éa", "z"}
	keys := make([]string, len(ordered))
	for i, s := range ordered {
		keys[i] = Casemap(s)
	}
	if !slices.IsSorted(keys) {
		t.Errorf("not in order: %q", keys)
	}
}

// TestKeys: the keys of a header, addresses and message identifiers.
func TestKeys(t *testing.T) {
	header := []byte("From: =?utf-8?q?=C3=A9mile?= <Emile@Example.org>, bob@example.org\r\n" +
		"To: undisclosed: a@b.c;\r\n" +
		"Cc: carol@example.org (Carol C)\r\n" +
		"Subject: Re: [x] Test\r\n" +
		"Date: Tue, 7 May 2024 02:00:00 +0200\r\n" +
		"Message-ID: <one@example.org> <two@example.org>\r\n" +
		"In-Reply-To: <irt@example.org>\r\n" +
		"References: <r1@example.org> (comment) <bad>\r\n <r2@exa\r\n mple.org>\r\n" +
		"\r\n")
	ix, err := Index(bytes.NewReader(header))
	if err != nil {
		t.Fatal(err)
	}
	k := Keys(ix.Envelope, header)
	want := SortKeys{
		SentDate:    time.Date(2024, 5, 7, 0, 0, 0, 0, time.UTC),
		Subject:     "TEST",
		Reply:       true,
		From:        "EMILE",
		To:          "UNDISCLOSED",
		Cc:          "CAROL",
		DisplayFrom: Casemap("émile"),
		DisplayTo:   "UNDISCLOSED",
		MessageID:   "one@example.org",
		References:  "r1@example.org r2@example.org",
	}
	if !k.SentDate.Equal(want.SentDate) {
		t.Errorf("SentDate %v, want %v", k.SentDate, want.SentDate)
	}
	k.SentDate = want.SentDate
	if k != want {
		t.Errorf("Keys =\n%+v, want\n%+v", k, want)
	}
	// No References: the first of In-Reply-To. No Date: zero.
	header = []byte("From: a@b\r\nIn-Reply-To: <p1@x> <p2@x>\r\nDate: someday\r\n\r\n")
	ix, _ = Index(bytes.NewReader(header))
	k = Keys(ix.Envelope, header)
	if k.References != "p1@x" || !k.SentDate.IsZero() || k.DisplayFrom != "A@B" || k.MessageID != "" {
		t.Errorf("Keys = %+v", k)
	}
	if k := Keys(nil, nil); k != (SortKeys{}) {
		t.Errorf("Keys(nil) = %+v", k)
	}
}
