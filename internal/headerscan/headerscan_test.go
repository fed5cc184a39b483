package headerscan

import (
	"bytes"
	"testing"
)

func TestScanner(t *testing.T) {
	type f struct{ raw, name, value string } // name "-": not a field
	tests := []struct {
		name   string
		block  string
		fields []f
		rest   string
	}{
		{"empty", "", nil, ""},
		{"crlf", "A: 1\r\nB:2\r\n\r\nbody", []f{{"A: 1\r\n", "A", " 1\r\n"}, {"B:2\r\n", "B", "2\r\n"}}, "\r\nbody"},
		{"lf", "A: 1\nB: 2\n\n", []f{{"A: 1\n", "A", " 1\n"}, {"B: 2\n", "B", " 2\n"}}, "\n"},
		{"folded", "Subject: a\r\n b\r\n\tc\r\nX: y\r\n", []f{{"Subject: a\r\n b\r\n\tc\r\n", "Subject", " a\r\n b\r\n\tc\r\n"}, {"X: y\r\n", "X", " y\r\n"}}, ""},
		{"no final line break", "A: 1", []f{{"A: 1", "A", " 1"}}, ""},
		{"space before colon", "Name \t: v\r\n", []f{{"Name \t: v\r\n", "Name", " v\r\n"}}, ""},
		{"no colon", "junk\r\n more\r\nA: 1\r\n", []f{{"junk\r\n more\r\n", "-", ""}, {"A: 1\r\n", "A", " 1\r\n"}}, ""},
		{"colon only on a continuation line", "junk\r\n x: y\r\n", []f{{"junk\r\n x: y\r\n", "-", ""}}, ""},
		{"empty name", ": v\r\n", []f{{": v\r\n", "-", ""}}, ""},
		{"leading continuation", " lead\r\nA: 1\r\n", []f{{" lead\r\n", "-", ""}, {"A: 1\r\n", "A", " 1\r\n"}}, ""},
		{"CR CR LF is not the blank line", "A: 1\r\n\r\r\nB: 2\r\n\r\n", []f{{"A: 1\r\n", "A", " 1\r\n"}, {"\r\r\n", "-", ""}, {"B: 2\r\n", "B", " 2\r\n"}}, "\r\n"},
		{"white space line continues", "A: 1\r\n \r\n\r\n", []f{{"A: 1\r\n \r\n", "A", " 1\r\n \r\n"}}, "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewScanner([]byte(tt.block))
			var got []f
			var all []byte
			for s.Next() {
				fl := s.Field()
				g := f{raw: string(fl.Raw), name: "-"}
				if fl.IsField() {
					g.name, g.value = string(fl.Name), string(fl.Value)
				}
				got = append(got, g)
				all = append(all, fl.Raw...)
			}
			if len(got) != len(tt.fields) {
				t.Fatalf("fields %q, want %q", got, tt.fields)
			}
			for i := range got {
				if got[i] != tt.fields[i] {
					t.Errorf("field %d = %q, want %q", i, got[i], tt.fields[i])
				}
			}
			if string(s.Rest()) != tt.rest {
				t.Errorf("rest %q, want %q", s.Rest(), tt.rest)
			}
			// Every byte is in a field or the rest.
			if all = append(all, s.Rest()...); !bytes.Equal(all, []byte(tt.block)) {
				t.Errorf("fields and rest %q, want the block %q", all, tt.block)
			}
		})
	}
}

func TestIs(t *testing.T) {
	s := NewScanner([]byte("content-TYPE : text/plain\r\njunk\r\n"))
	s.Next()
	if f := s.Field(); !f.Is("Content-Type") || f.Is("Content-Typ") || f.Is("content-type ") {
		t.Errorf("Is on %q", f.Name)
	}
	s.Next()
	if s.Field().Is("") || s.Field().Is("junk") {
		t.Error("a line without colon is a field")
	}
}

func TestUnfold(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{" plain", " plain"},
		{" a\r\n b\r\n", " a b"},
		{" a\n\tb\n", " a\tb"},
		{" a\r\r\n b", " a\r b"}, // a lone CR stays
		{" one line\r\n", " one line"},
		{" a\r\r\n", " a\r"},
	}
	for _, tt := range tests {
		if got := string(Unfold([]byte(tt.in))); got != tt.want {
			t.Errorf("Unfold(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// A value on one line is not copied.
	in := []byte(" v\r\n")
	if out := Unfold(in); &out[0] != &in[0] {
		t.Error("Unfold copied a value on one line")
	}
}
