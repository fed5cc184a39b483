package store_test

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// crlf turns "\n" into "\r\n".
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// searchMessages are the crafted messages of the search tests; their UIDs
// are 1..n in order.
func searchMessages() []struct {
	body  string
	flags []string
	date  time.Time
} {
	b64 := base64.StdEncoding.EncodeToString([]byte("Grüße aus Köln.\r\nMEETING at noon.\r\n"))
	// A plain body larger than one chunk with matches across the chunk
	// boundary: "NEEDLE-ACROSS" straddles it in one, and the two bytes of
	// "é" in another (both at byte offset ChunkSize of the message).
	largeHeader := crlf("From: big@example.com\nTo: alice@example.org\nSubject: large\nDate: Fri, 1 Mar 2024 09:00:00 +0000\n\n")
	filler := strings.Repeat("lorem ipsum dolor sit amet\r\n", store.ChunkSize/28+10)
	pad := store.ChunkSize - len(largeHeader) - 6 // "NEEDLE" before the boundary, "-ACROSS" after
	large := largeHeader + strings.Repeat("x", pad) + "NEEDLE-ACROSS" + "\r\n" + filler
	if large[store.ChunkSize-6:store.ChunkSize+7] != "NEEDLE-ACROSS" {
		panic("bad large message layout")
	}
	// Second message: "café" with é split over the boundary.
	largeHeader2 := crlf("From: big@example.com\nTo: alice@example.org\nSubject: large2\n\n")
	pad2 := store.ChunkSize - len(largeHeader2) - 4 // "caf" + first byte of é before the boundary
	large2 := largeHeader2 + strings.Repeat("y", pad2) + "CAFÉ au lait" + "\r\n" + filler
	if large2[store.ChunkSize-4:store.ChunkSize+1] != "CAFÉ" {
		panic("bad large2 message layout")
	}
	return []struct {
		body  string
		flags []string
		date  time.Time
	}{
		{ // 1
			crlf("From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: Hello world\n" +
				"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <1@example.com>\n\nThe quick brown fox\n"),
			[]string{`\Seen`}, time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC),
		},
		{ // 2: encoded-word subject, base64 UTF-8 body, sent on Jan 2 in its own zone (Jan 3 UTC)
			crlf("From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\nTo: alice@example.org\nSubject: =?utf-8?q?caf=C3=A9?=\n" +
				"Date: Tue, 2 Jan 2024 23:30:00 -0800\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n" +
				"Content-Transfer-Encoding: base64\n\n" + b64 + "\n"),
			[]string{`\Flagged`, "$Important"}, time.Date(2024, 1, 2, 0, 0, 1, 0, time.UTC),
		},
		{ // 3: multipart, QP with soft break, folded custom header, binary attachment, no Date
			crlf("From: carol@example.net\nTo: alice@example.org\nSubject: parts\nX-Custom: foo\n  bar\n" +
				"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\n" +
				"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
				"soft=\nbreak word caf=C3=A9\n--XX\nContent-Type: text/html\n\n<p>Some <b>HTML</b></p>\n--XX\n" +
				"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n" +
				base64.StdEncoding.EncodeToString([]byte("secretword inside an attachment")) + "\n--XX--\n"),
			[]string{`\Answered`, `\Seen`, `\Deleted`}, time.Date(2024, 1, 5, 8, 0, 0, 0, time.UTC),
		},
		{ // 4: Latin-1 QP body, Cc and no To
			crlf("From: dave@example.com\nCc: alice@example.org\nSubject: Report\nDate: Sat, 10 Feb 2024 08:00:00 +0100\n" +
				"MIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n" +
				"L'=E9t=E9 dernier.\n"),
			[]string{`\Draft`}, time.Date(2024, 2, 10, 7, 0, 0, 0, time.UTC),
		},
		{large, nil, time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)},  // 5
		{large2, nil, time.Date(2024, 3, 2, 9, 0, 0, 0, time.UTC)}, // 6
	}
}

func TestSearch(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	for i, m := range searchMessages() {
		res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(m.body), 0, m.flags, m.date)
		if err != nil {
			t.Fatal(err)
		}
		if res.UID != uint32(i+1) {
			t.Fatalf("message %d got UID %d", i, res.UID)
		}
	}
	// Bob's copy of message 1 must never show up in Alice's results.
	bInbox := f.mailbox(t, f.b, "INBOX")
	if _, err := f.st.Append(ctx, f.b.ID, bInbox.ID, strings.NewReader(searchMessages()[0].body), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Message 4 gets a newer modseq.
	changed, err := f.st.StoreFlags(ctx, f.a.ID, inbox.ID, []store.UIDRange{{4, 4}}, store.FlagsAdd, []string{"later"})
	if err != nil || len(changed) != 1 {
		t.Fatal(changed, err)
	}

	type C = store.SearchCriteria
	type H = store.HeaderMatch
	all := []uint32{1, 2, 3, 4, 5, 6}
	tests := []searchCase{
		{"all", C{}, all},
		{"seen", C{Flag: []string{`\Seen`}}, []uint32{1, 3}},
		{"unseen", C{NotFlag: []string{`\seen`}}, []uint32{2, 4, 5, 6}},
		{"flagged", C{Flag: []string{`\Flagged`}}, []uint32{2}},
		{"answered", C{Flag: []string{`\Answered`}}, []uint32{3}},
		{"deleted", C{Flag: []string{`\Deleted`}}, []uint32{3}},
		{"undeleted", C{NotFlag: []string{`\Deleted`}}, []uint32{1, 2, 4, 5, 6}},
		{"draft", C{Flag: []string{`\Draft`}}, []uint32{4}},
		{"recent", C{Flag: []string{`\Recent`}}, nil},
		{"old", C{NotFlag: []string{`\Recent`}}, all},
		{"keyword any case", C{Flag: []string{"$important"}}, []uint32{2}},
		{"unkeyword", C{NotFlag: []string{"$Important"}}, []uint32{1, 3, 4, 5, 6}},
		{"missing keyword", C{Flag: []string{"nope"}}, nil},
		{"since", C{Since: day(2024, 1, 2)}, []uint32{2, 3, 4, 5, 6}},
		{"since ignores time", C{Since: time.Date(2024, 1, 2, 23, 0, 0, 0, time.UTC)}, []uint32{2, 3, 4, 5, 6}},
		{"before", C{Before: day(2024, 1, 2)}, []uint32{1}},
		{"on", C{On: day(2024, 1, 2)}, []uint32{2}},
		{"since+before", C{Since: day(2024, 1, 2), Before: day(2024, 3, 1)}, []uint32{2, 3, 4}},
		{"senton own zone", C{SentOn: day(2024, 1, 2)}, []uint32{2}},
		{"sentsince", C{SentSince: day(2024, 1, 3)}, []uint32{3, 4, 5, 6}}, // 3 and 6: no Date, internal date
		{"sentbefore", C{SentBefore: day(2024, 1, 2)}, []uint32{1}},
		{"sent on missing date uses internal", C{SentOn: day(2024, 1, 5)}, []uint32{3}},
		{"larger", C{Larger: 100000}, []uint32{5, 6}},
		{"smaller", C{Smaller: 100000}, []uint32{1, 2, 3, 4}},
		{"modseq", C{ModSeq: changed[0].ModSeq}, []uint32{4}},
		{"subject encoded word", C{Header: []H{{"Subject", "café"}}}, []uint32{2}},
		{"subject case", C{Header: []H{{"SUBJECT", "CAFÉ"}}}, []uint32{2}},
		{"subject substring", C{Header: []H{{"subject", "lo wor"}}}, []uint32{1}},
		{"from display name decoded", C{Header: []H{{"From", "jürgen"}}}, []uint32{2}},
		{"from address", C{Header: []H{{"From", "ALICE@example.com"}}}, []uint32{1}},
		{"folded header", C{Header: []H{{"X-Custom", "foo  bar"}}}, []uint32{3}},
		{"header present", C{Header: []H{{"Cc", ""}}}, []uint32{4}},
		{"header absent", C{Header: []H{{"X-Missing", ""}}}, nil},
		{"not header present", C{Not: []C{{Header: []H{{"To", ""}}}}}, []uint32{4}},
		{"body plain", C{Body: []string{"quick BROWN"}}, []uint32{1}},
		{"body base64 utf-8", C{Body: []string{"GRÜSSE"}}, nil}, // no ß folding, by design
		{"body base64 utf-8 lower", C{Body: []string{"grüße aus"}}, []uint32{2}},
		{"body base64", C{Body: []string{"meeting"}}, []uint32{2}},
		{"body qp soft break", C{Body: []string{"softbreak word"}}, []uint32{3}},
		{"body qp utf-8", C{Body: []string{"word café"}}, []uint32{3}},
		{"body latin-1", C{Body: []string{"L'été"}}, []uint32{4}},
		{"body html part", C{Body: []string{"some html"}}, []uint32{3}},
		{"body html markup is not text", C{Body: []string{"<b>"}}, nil},
		{"body skips attachments", C{Body: []string{"secretword"}}, nil},
		{"body not header", C{Body: []string{"hello world"}}, nil},
		{"body across chunk boundary", C{Body: []string{"needle-across"}}, []uint32{5}},
		{"body utf-8 split at chunk boundary", C{Body: []string{"café au"}}, []uint32{6}},
		{"body two keys", C{Body: []string{"lorem", "needle"}}, []uint32{5}},
		{"body empty", C{Body: []string{""}}, all},
		{"text header", C{Text: []string{"hello world"}}, []uint32{1}},
		{"text header field", C{Text: []string{"x-custom: foo"}}, []uint32{3}},
		{"text body", C{Text: []string{"MEETING"}}, []uint32{2}},
		{"text decoded subject", C{Text: []string{"café"}}, []uint32{2, 3, 6}},
		{"unseen and body", C{NotFlag: []string{`\Seen`}, Body: []string{"meeting"}}, []uint32{2}},
		{"not flag", C{Not: []C{{Flag: []string{`\Seen`}}}}, []uint32{2, 4, 5, 6}},
		{"not body", C{Not: []C{{Body: []string{"quick"}}}}, []uint32{2, 3, 4, 5, 6}},
		{"or body flag", C{Or: [][2]C{{{Body: []string{"quick"}}, {Flag: []string{`\Draft`}}}}}, []uint32{1, 4}},
		{"or sql only", C{Or: [][2]C{{{Flag: []string{`\Flagged`}}, {Larger: 100000}}}}, []uint32{2, 5, 6}},
		{"not or", C{Not: []C{{Or: [][2]C{{{Body: []string{"meeting"}}, {Flag: []string{`\Seen`}}}}}}}, []uint32{4, 5, 6}},
		{"not not", C{Not: []C{{Not: []C{{Header: []H{{"Subject", "report"}}}}}}}, []uint32{4}},
		{"or of ands mixed", C{Or: [][2]C{{
			{Flag: []string{`\Seen`}, Body: []string{"fox"}},
			{NotFlag: []string{`\Seen`}, Header: []H{{"Subject", "large"}}},
		}}}, []uint32{1, 5, 6}},
		{"not with sql and content", C{Not: []C{{Smaller: 100000, Body: []string{"caf"}}}}, []uint32{1, 2, 4, 5, 6}},
		{"uid range", C{UIDs: [][]store.UIDRange{{{2, 4}}}}, []uint32{2, 3, 4}},
		{"uid star", C{UIDs: [][]store.UIDRange{{{5, 0}}}}, []uint32{5, 6}},
		{"uid sets intersect", C{UIDs: [][]store.UIDRange{{{1, 2}, {4, 5}}, {{2, 6}}}}, []uint32{2, 4, 5}},
		{"uid empty set", C{UIDs: [][]store.UIDRange{{}}}, nil},
		{"not uid", C{Not: []C{{UIDs: [][]store.UIDRange{{{1, 3}}}}}}, []uint32{4, 5, 6}},
		{"uid and body", C{UIDs: [][]store.UIDRange{{{1, 5}}}, Body: []string{"caf"}}, []uint32{3}},
	}
	// First nothing is indexed (every string key scans), then everything
	// is (5 and 6 are cut at the cap and still scanned): same answers.
	searchScanThenIndex(t, f.st, f.a.ID, inbox.ID, tests)

	t.Run("isolation", func(t *testing.T) {
		for _, c := range []C{{}, {Body: []string{"quick"}}, {NotFlag: []string{`\Seen`}}} {
			got, err := f.st.Search(ctx, f.a.ID, bInbox.ID, &c)
			if !errors.Is(err, store.ErrNotFound) || len(got) != 0 {
				t.Fatalf("searching Bob's mailbox as Alice: %v, %v", got, err)
			}
		}
		got, err := f.st.Search(ctx, f.b.ID, bInbox.ID, &C{Body: []string{"quick"}})
		if err != nil || !slices.Equal(got, []uint32{1}) {
			t.Fatalf("Bob's own search: %v, %v", got, err)
		}
	})
}

// TestSearchPages checks Go-side evaluation over more candidates than one
// page, and that only matching rows come back in order.
func TestSearchPages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	const n = 700
	var msgs []*store.Spooled
	var flags [][]string
	for i := range n {
		subj := "plain"
		if i%7 == 0 {
			subj = "=?utf-8?b?" + base64.StdEncoding.EncodeToString([]byte("spécial")) + "?="
		}
		raw := crlf("From: x@example.com\nSubject: " + subj + "\nMessage-ID: <" + strings.Repeat("i", i%50) + "@x>\n\nbody " +
			strings.Repeat("z", i) + "\n")
		sp, err := store.Spool(strings.NewReader(raw), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		msgs = append(msgs, sp)
		if i%2 == 0 {
			flags = append(flags, []string{`\Seen`})
		} else {
			flags = append(flags, nil)
		}
	}
	if _, err := f.st.BulkAppend(ctx, f.a.ID, inbox.ID, msgs, flags, nil); err != nil {
		t.Fatal(err)
	}
	var want []uint32
	for i := range n {
		if i%7 == 0 && i%2 == 1 {
			want = append(want, uint32(i+1))
		}
	}
	got, err := f.st.Search(ctx, f.a.ID, inbox.ID, &store.SearchCriteria{
		NotFlag: []string{`\Seen`}, Header: []store.HeaderMatch{{Key: "subject", Value: "SPÉCIAL"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d uids %v, want %d %v", len(got), got, len(want), want)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.st.Search(ctx2, f.a.ID, inbox.ID, &store.SearchCriteria{Body: []string{"zz"}}); err == nil {
		t.Fatal("search with cancelled context succeeded")
	}
}

// TestSearchAddresses runs imaptest's search-addresses script (Dovecot's
// answers) on its messages, plus HEADER on address fields, which Dovecot
// matches against the raw value (checked against Dovecot 2.3.19).
func TestSearchAddresses(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	for i, m := range []string{
		"From: user-from@domain.org\nTo: user-to@domain.org\nCc: user-cc@domain.org\nBcc: user-bcc@domain.org\n\nbody\n",
		"From: RealFrom <user-from@domain.org>\nTo: RealTo <user-to@domain.org>\nCc: RealCc <user-cc@domain.org>\n" +
			"Bcc: RealBcc <user-bcc@domain.org>\n\nbody2\n",
		"From: <user-from (comment)@ (comment) domain.org>\nTo: <user-to@domain.org>\nCc: <user-cc@domain.org>\n" +
			"Bcc: <user-bcc@domain.org>\n\nbody3\n",
		"From: user-from@domain.org (RealFrom)\nTo: user-to@domain.org (RealTo)\nCc: user-cc@domain.org (RealCc)\n" +
			"Bcc: user-bcc@domain.org (RealBcc)\n\nbody4\n",
		"From: user-from1@domain.org, user-from2@domain.org\nCc: user-cc@domain.org\n\nbody5\n",
		"From: RealFrom <user-from@domain.org>\nTo: groupname: groupuser1@domain.org, groupuser2@domain.org;,\n" +
			"  groupname2: groupuser3@domain.org;\n\nbody6\n",
		"From: RealFrom <user-from@domain.org>\nTo: groupname:;\n\nbody7\n",
	} {
		res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(crlf(m)), 0, nil, time.Time{})
		if err != nil || res.UID != uint32(i+1) {
			t.Fatalf("append %d: %+v, %v", i+1, res, err)
		}
	}
	type H = store.HeaderMatch
	cases := []addrCase{
		// full address searching
		{"from", "user-from@domain.org", false, []uint32{1, 2, 3, 4, 6, 7}},
		{"to", "user-to@domain.org", false, []uint32{1, 2, 3, 4}},
		{"cc", "user-cc@domain.org", false, []uint32{1, 2, 3, 4, 5}},
		{"bcc", "user-bcc@domain.org", false, []uint32{1, 2, 3, 4}},
		// realname searching
		{"from", "realfrom", false, []uint32{2, 4, 6, 7}},
		{"to", "realto", false, []uint32{2, 4}},
		{"cc", "realcc", false, []uint32{2, 4}},
		{"bcc", "realbcc", false, []uint32{2, 4}},
		// existence searches
		{"from", "", true, []uint32{1, 2, 3, 4, 5, 6, 7}},
		{"to", "", true, []uint32{1, 2, 3, 4, 6, 7}},
		{"cc", "", true, []uint32{1, 2, 3, 4, 5}},
		{"bcc", "", true, []uint32{1, 2, 3, 4}},
		// substring address searches
		{"from", "ser-fro", false, []uint32{1, 2, 3, 4, 5, 6, 7}},
		{"to", "ser-t", false, []uint32{1, 2, 3, 4}},
		{"cc", "ser-c", false, []uint32{1, 2, 3, 4, 5}},
		{"bcc", "ser-bc", false, []uint32{1, 2, 3, 4}},
		// substring realname searches
		{"from", "ealfro", false, []uint32{2, 4, 6, 7}},
		{"to", "ealt", false, []uint32{2, 4}},
		{"cc", "ealc", false, []uint32{2, 4}},
		{"bcc", "ealbc", false, []uint32{2, 4}},
		// multiple addresses
		{"from", "user-from1", false, []uint32{5}},
		{"from", "user-from2", false, []uint32{5}},
		// groups
		{"to", "groupname", false, []uint32{6, 7}},
		{"to", "groupname2", false, []uint32{6}},
		{"to", "groupuser1", false, []uint32{6}},
		{"to", "groupuser2", false, []uint32{6}},
		{"to", "groupuser3", false, []uint32{6}},
		{"to", "groupuser4", false, nil},
		// the normalized form, and HEADER's raw value (Dovecot 2.3.19)
		{"from", "<user-from", false, []uint32{1, 2, 3, 4, 5, 6, 7}},
		{"from", "realfrom <user-from@", false, []uint32{2, 4, 6, 7}},
		{"to", "groupname: groupuser1", false, nil},
		{"to", "groupname: <groupuser1@domain.org>, <groupuser2", false, []uint32{6}},
		{"to", "groupname:;", false, []uint32{7}},
		{"from", "comment", false, nil},
		{"From", "user-from@domain.org", true, []uint32{1, 2, 4, 6, 7}},
		{"from", "comment", true, []uint32{3}},
		{"to", "groupname: groupuser1", true, []uint32{6}},
	}
	for _, mode := range []string{"scan", "index"} {
		if mode == "index" {
			indexAll(t, f.st)
		}
		searchAddresses(t, f.st, f.a.ID, inbox.ID, mode, cases)
	}
}

type addrCase struct {
	key, value string
	raw        bool // HEADER rather than FROM/TO/CC/BCC
	want       []uint32
}

func searchAddresses(t *testing.T, st *store.Store, accountID, mailboxID int64, mode string, cases []addrCase) {
	t.Helper()
	ctx := context.Background()
	type H = store.HeaderMatch
	for _, tc := range cases {
		c := &store.SearchCriteria{Header: []H{{Key: tc.key, Value: tc.value}}}
		kind := "SEARCH"
		if tc.raw {
			c = &store.SearchCriteria{RawHeader: []H{{Key: tc.key, Value: tc.value}}}
			kind = "SEARCH HEADER"
		}
		got, err := st.Search(ctx, accountID, mailboxID, c)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %s %s %q: got %v, want %v", mode, kind, tc.key, tc.value, got, tc.want)
		}
	}
	// NOT and OR reach address matching too.
	got, err := st.Search(ctx, accountID, mailboxID, &store.SearchCriteria{
		Not: []store.SearchCriteria{{Header: []H{{Key: "from", Value: "user-from@domain.org"}}}},
		Or: [][2]store.SearchCriteria{{{Header: []H{{Key: "to", Value: "groupname2"}}},
			{RawHeader: []H{{Key: "cc", Value: "user-cc"}}}}},
	})
	if err != nil || !slices.Equal(got, []uint32{5}) {
		t.Errorf("%s: NOT FROM, OR TO HEADER CC: got %v, %v; want [5]", mode, got, err)
	}
}

// TestSearchSentDateCutHeader: the sent date is the envelope's, read from
// the stored header, and from the envelope itself when the header was cut
// at MaxStoredHeader (the cut may fall inside the Date: field, which the
// envelope then does not have); FetchMeta's HeaderSize is the real size
// either way.
func TestSearchSentDateCutHeader(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	const prefix = "From: a@example.com\r\nSubject: s\r\n"
	// The cut leaves "Date: 2 Jan 2024 23:30:00 -0800 (PS", which would
	// parse as January 2.
	const date, cutAt = "Date: 2 Jan 2024 23:30:00 -0800 (PST)\r\n", len("Date: 2 Jan 2024 23:30:00 -0800 (PS")
	var filler strings.Builder
	line := func(n int) { filler.WriteString("X-Filler: " + strings.Repeat("f", n-12) + "\r\n") }
	rem := store.MaxStoredHeader - cutAt - len(prefix)
	count, last := rem/1000, rem%1000
	if last < 12 {
		count, last = count-1, last+1000
	}
	for range count {
		line(1000)
	}
	line(last)
	msgs := []string{
		prefix + "Date: Tue, 2 Jan 2024 23:30:00 -0800\r\nDate: Wed, 3 Jan 2024 10:00:00 +0000\r\n",
		prefix + filler.String() + date,
	}
	var sizes []int64
	for _, h := range msgs {
		raw := h + "\r\nbody\r\n"
		sizes = append(sizes, int64(len(h)+2))
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(raw), 0, nil, day(2024, 2, 1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		c    store.SearchCriteria
		want []uint32
	}{
		{"last Date field counts", store.SearchCriteria{SentOn: day(2024, 1, 3)}, []uint32{1}},
		{"no half Date field", store.SearchCriteria{SentOn: day(2024, 1, 2)}, nil},
		{"cut Date field: internal date", store.SearchCriteria{SentOn: day(2024, 2, 1)}, []uint32{2}},
	} {
		got, err := f.st.Search(ctx, f.a.ID, inbox.ID, &tc.c)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, opts := range []store.FetchOptions{{Header: true}, {Header: true, Structure: true}} {
		var got []int64
		err := f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: 1, Stop: 0}}, opts, func(m *store.MessageMeta) error {
			got = append(got, m.HeaderSize)
			if (m.Structure != nil) != opts.Structure {
				t.Errorf("%+v: structure %v", opts, m.Structure != nil)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, sizes) {
			t.Errorf("%+v: header sizes %v, want %v", opts, got, sizes)
		}
	}
}
