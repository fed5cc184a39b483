package mimeindex

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkAddresses checks the contract of a parsed address list: valid UTF-8
// without NUL, group markers alternating start and end (the zero Address
// may start a group), and Host empty for markers only.
func checkAddresses(t testing.TB, l []Address) {
	t.Helper()
	inGroup := false
	for _, a := range l {
		for _, s := range []string{a.Name, a.Route, a.Mailbox, a.Host} {
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("bad string %q in %+v", s, l)
			}
		}
		if a.Host != "" {
			continue
		}
		if inGroup && a != (Address{}) || a.Name != "" || a.Route != "" {
			t.Fatalf("bad group marker %+v in %+v", a, l)
		}
		inGroup = !inGroup
	}
	if inGroup {
		t.Fatalf("unterminated group in %+v", l)
	}
}

// TestFormatAddressList checks the normalized form of address lists that
// FROM, TO, CC and BCC searches match. Each want was checked against
// Dovecot 2.3.19: SEARCH FROM with the whole string finds the message.
func TestFormatAddressList(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"user-from@domain.org", "<user-from@domain.org>"},
		{"<user-from (comment)@ (comment) domain.org>", "<user-from@domain.org>"},
		{"user-from@domain.org (RealFrom)", "RealFrom <user-from@domain.org>"},
		{"Mr. Smith <s@x>", `"Mr. Smith" <s@x>`},
		{`"quoted local"@example.com`, `<"quoted local"@example.com>`},
		{"groupname: groupuser1@domain.org, groupuser2@domain.org;, groupname2: groupuser3@domain.org;",
			"groupname: <groupuser1@domain.org>, <groupuser2@domain.org>;, groupname2: <groupuser3@domain.org>;"},
		{"groupname:;", "groupname:;"},
		{"x@y, g:;, z@w", "<x@y>, g:;, <z@w>"},
		{"<@r1,@r2:u@d>", "<@r1,@r2:u@d>"},
		{`"a\"b" <x@y>`, `"a\"b" <x@y>`},
		{`"it's me" <a@b>`, `"it\'s me" <a@b>`},
		{"it's <a@b>", "it's <a@b>"},
		{"a.b@c", "<a.b@c>"},
		{":;", `"":;`},
		{"Just A Name", `"Just A Name" <MISSING_MAILBOX@MISSING_DOMAIN>`},
		{`Name <"">`, `Name <""@MISSING_DOMAIN>`},
		{"Broken <no-closing@example.com", "Broken <no-closing@SYNTAX_ERROR>"},
		{"<@route user@domain>", "<INVALID_ROUTE:user@domain>"},
		{`"The Group": a@b;`, `"The Group": <a@b>;`},
		{"=?utf-8?q?J=C3=B6rg?= <j@x>", "=?utf-8?q?J=C3=B6rg?= <j@x>"},
		{"(only a comment)", ""},
	} {
		if got := FormatAddressList(ParseAddressList(tc.in)); got != tc.want {
			t.Errorf("FormatAddressList(ParseAddressList(%q)) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseAddressListClean(t *testing.T) {
	// Bytes that are not UTF-8 are read as ISO-8859-1, NULs dropped.
	got := ParseAddressList("J\xf6rg\x00 <j@x>")
	want := []Address{{Name: "Jörg", Mailbox: "j", Host: "x"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestAddressJSON(t *testing.T) {
	// Stored addresses from before Route existed decode with no route.
	var old Address
	if err := json.Unmarshal([]byte(`{"name":"A","mbox":"a","host":"b"}`), &old); err != nil {
		t.Fatal(err)
	}
	if old != (Address{Name: "A", Mailbox: "a", Host: "b"}) {
		t.Errorf("old address %+v", old)
	}
	for _, tc := range []struct {
		in   Address
		want string
	}{
		{Address{Mailbox: "a", Host: "b"}, `{"mbox":"a","host":"b"}`},
		{Address{Route: "@r", Mailbox: "a", Host: "b"}, `{"route":"@r","mbox":"a","host":"b"}`},
	} {
		data, err := json.Marshal(tc.in)
		if err != nil || string(data) != tc.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", tc.in, data, err, tc.want)
		}
	}
}

func FuzzParseAddressList(f *testing.F) {
	for _, s := range []string{"<@a,@b:u@d>", "g: (c) ;, x@y", `"q\"x" <@>`, "(x", "a(b)c@[d\\]e]", ",,", `"`, "<", "g: a@b, (c), <@r:@x>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l := ParseAddressList(s)
		checkAddresses(t, l)
		if out := FormatAddressList(l); !utf8.ValidString(out) {
			t.Fatalf("FormatAddressList gave invalid UTF-8 %q", out)
		}
	})
}
