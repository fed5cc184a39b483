package mimeindex

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// a, gs and ge build expected ENVELOPE address list elements.
func a(name, route, mailbox, host string) DecodedAddress {
	return DecodedAddress{Name: name, Route: route, Mailbox: mailbox, Host: host}
}

func gs(name string) DecodedAddress { return DecodedAddress{Mailbox: name} }

var ge = DecodedAddress{GroupEnd: true}

// TestAddressListLikeDovecot checks ENVELOPE address lists against Dovecot
// 2.3.19: want is what it sends for a From header with the given value
// (Sender and Reply-To default to it), except that display names are
// decoded from RFC 2047 here (Dovecot sends them as written) and that a
// display name that is an empty quoted string (`""`) is NIL here, "" there.
func TestAddressListLikeDovecot(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []DecodedAddress
	}{
		{"<@route1,@route2:user@domain>", []DecodedAddress{a("", "@route1,@route2", "user", "domain")}},
		{"Name <@r1, @r2 :user@domain>", []DecodedAddress{a("Name", "@r1,@r2", "user", "domain")}},
		{"<@route user@domain>", []DecodedAddress{a("", "INVALID_ROUTE", "user", "domain")}},
		{`"quoted local"@example.com`, []DecodedAddress{a("", "", "quoted local", "example.com")}},
		{"Broken <no-closing@example.com", []DecodedAddress{a("Broken", "", "no-closing", "SYNTAX_ERROR")}},
		{",,, ;", []DecodedAddress{a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"a@b,,c@d", []DecodedAddress{a("", "", "a", "b"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN"), a("", "", "c", "d")}},
		{"group: (comment);", []DecodedAddress{gs("group"), ge}},
		{"group: (foo) a@b;", []DecodedAddress{gs("group"), a("", "", "a", "b"), ge}},
		{"group: a@b, (comment);", []DecodedAddress{gs("group"), a("", "", "a", "b"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN"), ge}},
		{"group: a@b, (comment), c@d;", []DecodedAddress{gs("group"), a("", "", "a", "b"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN"), a("", "", "c", "d"), ge}},
		{`""`, []DecodedAddress{a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{`"" <a@b>`, []DecodedAddress{a("", "", "a", "b")}},
		{"Just A Name", []DecodedAddress{a("Just A Name", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"localonly", []DecodedAddress{a("", "", "localonly", "MISSING_DOMAIN")}},
		{"<>", []DecodedAddress{a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"a) b@c", []DecodedAddress{a("", "", "a", "MISSING_DOMAIN")}},
		{"user@domain (Real Name)", []DecodedAddress{a("Real Name", "", "user", "domain")}},
		{"user (comment) @ domain", []DecodedAddress{a("comment", "", "user", "domain")}},
		{"John (x) Doe <a@b>", []DecodedAddress{a("John Doe", "", "a", "b")}},
		{"=?utf-8?q?J=C3=B6rg?= <j@example.com>", []DecodedAddress{a("Jörg", "", "j", "example.com")}},
		{"a@[127.0.0.1]", []DecodedAddress{a("", "", "a", "[127.0.0.1]")}},
		{"Unterminated: a@b", []DecodedAddress{gs("Unterminated"), a("", "", "a", "b"), ge}},
		{`A Group: a@b.c, "Q" <d@e.f>;, g@h.i`, []DecodedAddress{gs("A Group"), a("", "", "a", "b.c"), a("Q", "", "d", "e.f"), ge, a("", "", "g", "h.i")}},
		{"a.@b", []DecodedAddress{a("", "", "a.", "b")}},
		{"a..b@c", []DecodedAddress{a("", "", "a..b", "c")}},
		{"user@domain (c1) (c2)", []DecodedAddress{a("c2", "", "user", "domain")}},
		{`"a\"b" <x@y>`, []DecodedAddress{a(`a"b`, "", "x", "y")}},
		{"a@b (unterminated comment", []DecodedAddress{a("", "", "a", "MISSING_DOMAIN")}},
		{`"unterminated quote <a@b>`, []DecodedAddress{a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"(only comment)", nil},
		{"@domain", []DecodedAddress{a("", "", "MISSING_MAILBOX", "domain")}},
		{"user@", []DecodedAddress{a("", "", "user", "MISSING_DOMAIN")}},
		{"Name <user>", []DecodedAddress{a("Name", "", "user", "MISSING_DOMAIN")}},
		{"<user@domain> trailing", []DecodedAddress{a("", "", "user", "domain")}},
		{"g: <@r:u@d>;", []DecodedAddress{gs("g"), a("", "@r", "u", "d"), ge}},
		{"Name <@r1,,@r2:u@d>", []DecodedAddress{a("Name", "@r1,@r2", "u", "d")}},
		{"x@y, <>", []DecodedAddress{a("", "", "x", "y"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{":;", []DecodedAddress{gs(""), ge}},
		{`"": a@b;`, []DecodedAddress{gs(""), a("", "", "a", "b"), ge}},
		{"a@b;", []DecodedAddress{a("", "", "a", "b")}},
		{`"x y"@z`, []DecodedAddress{a("", "", "x y", "z")}},
		{"u@[1.2 .3]", []DecodedAddress{a("", "", "u", "[1.2 .3]")}},
		{"Mr. Smith <s@x>", []DecodedAddress{a("Mr. Smith", "", "s", "x")}},
		{".Smith <s@x>", []DecodedAddress{a("", "", ".Smith", "MISSING_DOMAIN")}},
		{"a@b c@d", []DecodedAddress{a("", "", "a", "b")}},
		{"a b@c", []DecodedAddress{a("a b", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{`"a b" c@d`, []DecodedAddress{a("a b c", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"<a@b> <c@d>", []DecodedAddress{a("", "", "a", "b")}},
		{"Name <a@b>, (c) <d@e>", []DecodedAddress{a("Name", "", "a", "b"), a("", "", "d", "e")}},
		{"group: a@b", []DecodedAddress{gs("group"), a("", "", "a", "b"), ge}},
		{"g1: a@b;, g2: ;, (x) g3 : c@d ;", []DecodedAddress{gs("g1"), a("", "", "a", "b"), ge, gs("g2"), ge, gs("g3"), a("", "", "c", "d"), ge}},
		{"a@b, , c@d", []DecodedAddress{a("", "", "a", "b"), a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN"), a("", "", "c", "d")}},
		{"a@b ,", []DecodedAddress{a("", "", "a", "b")}},
		{"<@>", []DecodedAddress{a("", "INVALID_ROUTE", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"<@r:>", []DecodedAddress{a("", "@r", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"<@r:@x>", []DecodedAddress{a("", "@r", "MISSING_MAILBOX", "SYNTAX_ERROR")}},
		{`Name <"">`, []DecodedAddress{a("Name", "", "", "MISSING_DOMAIN")}},
		{`Name <""@x>`, []DecodedAddress{a("Name", "", "", "x")}},
		{"a(b)c@d", []DecodedAddress{a("b", "", "a", "MISSING_DOMAIN")}},
		{`"a"."b"@c`, []DecodedAddress{a("a", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"a . b @ c . d", []DecodedAddress{a("a. b", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"a@b.", []DecodedAddress{a("", "", "a", "MISSING_DOMAIN")}},
		{"user@domain (nested (inner) comment)", []DecodedAddress{a("nested (inner) comment", "", "user", "domain")}},
		{`user@domain (esc \) paren)`, []DecodedAddress{a("esc ) paren", "", "user", "domain")}},
		{`u@[a\]b]`, []DecodedAddress{a("", "", "u", `[a\]b]`)}},
		{`"a\\b" <x@y>`, []DecodedAddress{a(`a\b`, "", "x", "y")}},
		{"Name  With   Spaces <a@b>", []DecodedAddress{a("Name With Spaces", "", "a", "b")}},
		{"=?utf-8?q?J=C3=B6rg?= =?utf-8?q?_M=C3=BCller?= <jm@x>", []DecodedAddress{a("Jörg Müller", "", "jm", "x")}},
		{"Jörg <j@x>", []DecodedAddress{a("Jörg", "", "j", "x")}},
		{`"Jörg Müller" <j@x>`, []DecodedAddress{a("Jörg Müller", "", "j", "x")}},
		{"=?utf-8?q?Gr=C3=BCppe?=: a@b;", []DecodedAddress{gs("=?utf-8?q?Gr=C3=BCppe?="), a("", "", "a", "b"), ge}},
		{`"" <>`, []DecodedAddress{a("", "", "MISSING_MAILBOX", "MISSING_DOMAIN")}},
		{"<a@b>, Name <c@d> (comment)", []DecodedAddress{a("", "", "a", "b"), a("Name", "", "c", "d")}},
		{"a@b (Name), c@d (Other)", []DecodedAddress{a("Name", "", "a", "b"), a("Other", "", "c", "d")}},
		{"Unquoted, Name <a@b>", []DecodedAddress{a("", "", "Unquoted", "MISSING_DOMAIN"), a("Name", "", "a", "b")}},
		{`"quoted, name" <a@b>`, []DecodedAddress{a("quoted, name", "", "a", "b")}},
		{"<user@domain", []DecodedAddress{a("", "", "user", "SYNTAX_ERROR")}},
		{"<@r1@r2:u@d>", []DecodedAddress{a("", "@r1,@r2", "u", "d")}},
		{"<@r1 , @r2 : u@d>", []DecodedAddress{a("", "@r1,@r2", "u", "d")}},
	} {
		m := mustIndex(t, "From: "+tc.in+"\r\nSubject: s\r\n\r\nbody\r\n")
		checkAddresses(t, m.Envelope.From)
		d := m.Envelope.Decoded()
		if !reflect.DeepEqual(d.From, tc.want) {
			t.Errorf("From: %s\n got %+v\nwant %+v", tc.in, d.From, tc.want)
		}
		if !reflect.DeepEqual(d.Sender, d.From) || !reflect.DeepEqual(d.ReplyTo, d.From) {
			t.Errorf("From: %s: Sender %+v, Reply-To %+v, want From", tc.in, d.Sender, d.ReplyTo)
		}
	}
}

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

// TestFetchEnvelopeImaptest runs imaptest's fetch-envelope script: its
// messages and the ENVELOPEs it expects (Dovecot's).
func TestFetchEnvelopeImaptest(t *testing.T) {
	const date = "Thu, 15 Feb 2007 01:02:03 +0200"
	user := []DecodedAddress{a("", "", "user", "domain")}
	realName := []DecodedAddress{a("Real Name", "", "user", "domain")}
	route := []DecodedAddress{a("", "@route", "user", "domain")}
	for _, tc := range []struct {
		msg  string
		want DecodedEnvelope
	}{
		{`Message-ID: <msg@id>
In-Reply-To: <reply@to.id>
Date: Thu, 15 Feb 2007 01:02:03 +0200
Subject: subject header
From: From Real <fromuser@fromdomain.org>
To: To Real <touser@todomain.org>
Cc: Cc Real <ccuser@ccdomain.org>
Bcc: Bcc Real <bccuser@bccdomain.org>
Sender: Sender Real <senderuser@senderdomain.org>
Reply-To: ReplyTo Real <replytouser@replytodomain.org>
`, DecodedEnvelope{
			Date: date, Subject: "subject header",
			From:      []DecodedAddress{a("From Real", "", "fromuser", "fromdomain.org")},
			Sender:    []DecodedAddress{a("Sender Real", "", "senderuser", "senderdomain.org")},
			ReplyTo:   []DecodedAddress{a("ReplyTo Real", "", "replytouser", "replytodomain.org")},
			To:        []DecodedAddress{a("To Real", "", "touser", "todomain.org")},
			Cc:        []DecodedAddress{a("Cc Real", "", "ccuser", "ccdomain.org")},
			Bcc:       []DecodedAddress{a("Bcc Real", "", "bccuser", "bccdomain.org")},
			InReplyTo: "<reply@to.id>", MessageID: "<msg@id>",
		}},
		{"Date: " + date + "\nFrom: user@domain\n", DecodedEnvelope{Date: date, From: user, Sender: user, ReplyTo: user}},
		{"Date: " + date + "\nFrom: user@domain (Real Name)\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\n" +
			"Cc: group:;, group2: (foo) ;\n", DecodedEnvelope{
			Date: date, From: realName, Sender: realName, ReplyTo: realName,
			To: []DecodedAddress{gs("group"), a("", "", "g1", "d1.org"), a("", "", "g2", "d2.org"), ge,
				gs("group2"), a("", "", "g3", "d3.org"), ge},
			Cc: []DecodedAddress{gs("group"), ge, gs("group2"), ge},
		}},
		{"Date: " + date + "\nFrom: user@domain (Real Name)\nSender: \nReply-To: \n",
			DecodedEnvelope{Date: date, From: realName, Sender: realName, ReplyTo: realName}},
		{"Date: " + date + "\nFrom: <@route:user@domain>\n", DecodedEnvelope{Date: date, From: route, Sender: route, ReplyTo: route}},
	} {
		m := mustIndex(t, toCRLF(tc.msg+"\nbody\n"))
		if got := m.Envelope.Decoded(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s\n got %+v\nwant %+v", tc.msg, got, tc.want)
		}
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

func TestDecodedEnvelope(t *testing.T) {
	m := mustIndex(t, toCRLF(`Date: Tue, 3 Jan 2006 10:00:00 +0100 (CET)
Subject: =?UTF-8?B?R3LDvMOfZQ==?=  and
	=?ISO-8859-1?Q?caf=E9?=
From: =?iso-8859-1?q?J=F6rg?= <jorg@example.com>
Sender: <@a.example,@b.example:s@example.com>
To: =?utf-8?q?Gr=C3=BCppe?=: "A  B" <a@example.com>;
In-Reply-To: <one@x> (comment)
 <two@y>
Message-ID:
 <id@example.com>

body
`))
	got := m.Envelope.Decoded()
	want := DecodedEnvelope{
		Date:    "Tue, 3 Jan 2006 10:00:00 +0100 (CET)",
		Subject: "Grüße and café",
		From:    []DecodedAddress{a("Jörg", "", "jorg", "example.com")},
		Sender:  []DecodedAddress{a("", "@a.example,@b.example", "s", "example.com")},
		ReplyTo: []DecodedAddress{a("Jörg", "", "jorg", "example.com")},
		// Group names are sent as written, like Dovecot does.
		To:        []DecodedAddress{gs("=?utf-8?q?Gr=C3=BCppe?="), a("A B", "", "a", "example.com"), ge},
		InReplyTo: "<one@x> (comment) <two@y>",
		MessageID: "<id@example.com>",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Decoded() =\n  %+v\nwant\n  %+v", got, want)
	}
	if !got.To[0].IsGroupStart() || got.To[1].IsGroupStart() || got.To[2].IsGroupStart() {
		t.Errorf("IsGroupStart wrong for %+v", got.To)
	}
	if g := (*Envelope)(nil).Decoded(); !reflect.DeepEqual(g, DecodedEnvelope{}) {
		t.Errorf("nil envelope: %+v", g)
	}
}

// TestRepeatedEnvelopeFields checks against Dovecot 2.3.19 that repeated
// address fields add up and that of other fields the last one counts.
func TestRepeatedEnvelopeFields(t *testing.T) {
	m := mustIndex(t, toCRLF(`Message-ID: <m1@x>
In-Reply-To: <r1@x>
From: a@b
To: g: x@y;
Subject: one
Message-ID: <m2@x>
In-Reply-To: <r2@x>
From: "C" <c@d>
To: z@w
Sender: s@t
Sender: u@v
Subject: two

body
`))
	from := []DecodedAddress{a("", "", "a", "b"), a("C", "", "c", "d")}
	want := DecodedEnvelope{
		Subject:   "two",
		From:      from,
		Sender:    []DecodedAddress{a("", "", "s", "t"), a("", "", "u", "v")},
		ReplyTo:   from,
		To:        []DecodedAddress{gs("g"), a("", "", "x", "y"), ge, a("", "", "z", "w")},
		InReplyTo: "<r2@x>", MessageID: "<m2@x>",
	}
	if got := m.Envelope.Decoded(); !reflect.DeepEqual(got, want) {
		t.Errorf("Decoded() =\n  %+v\nwant\n  %+v", got, want)
	}
}

func TestForHumans(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain text", "plain text"},
		{"  lead and trail\t", "lead and trail"},
		{"a \t\r\n b", "a b"},
		{"a  b", "a b"},
		{" \t ", ""},
	} {
		if got := forHumans(tc.in); got != tc.want {
			t.Errorf("forHumans(%q) = %q, want %q", tc.in, got, tc.want)
		}
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
		(&Envelope{To: l}).Decoded()
	})
}
