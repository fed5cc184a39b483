package imapd

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/store"
)

func TestSeqSetToUIDs(t *testing.T) {
	view := []uint32{3, 5, 9, 10, 20}
	seq := func(rs ...imap.SeqRange) imap.SeqSet { return imap.SeqSet(rs) }
	tests := []struct {
		name string
		set  imap.SeqSet
		want []store.UIDRange
	}{
		{"one", seq(imap.SeqRange{Start: 2, Stop: 2}), []store.UIDRange{rr(5, 5)}},
		{"range", seq(imap.SeqRange{Start: 2, Stop: 4}), []store.UIDRange{rr(5, 10)}},
		{"star", seq(imap.SeqRange{Start: 0, Stop: 0}), []store.UIDRange{rr(20, 20)}},
		{"n:*", seq(imap.SeqRange{Start: 4, Stop: 0}), []store.UIDRange{rr(10, 20)}},
		{"1:*", seq(imap.SeqRange{Start: 1, Stop: 0}), []store.UIDRange{rr(3, 20)}},
		{"beyond view", seq(imap.SeqRange{Start: 6, Stop: 6}), []store.UIDRange{}},
		{"range past end clamps", seq(imap.SeqRange{Start: 4, Stop: 100}), []store.UIDRange{rr(10, 20)}},
		{"n:* past end is last", seq(imap.SeqRange{Start: 9, Stop: 0}), []store.UIDRange{rr(20, 20)}},
		{"reversed", seq(imap.SeqRange{Start: 3, Stop: 1}), []store.UIDRange{rr(3, 9)}},
		{"several", seq(imap.SeqRange{Start: 1, Stop: 1}, imap.SeqRange{Start: 3, Stop: 3}, imap.SeqRange{Start: 7, Stop: 8}), []store.UIDRange{rr(3, 3), rr(9, 9)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := seqSetToUIDs(tc.set, view); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUIDSetToRanges(t *testing.T) {
	uid := func(rs ...imap.UIDRange) imap.UIDSet { return imap.UIDSet(rs) }
	tests := []struct {
		name string
		set  imap.UIDSet
		want []store.UIDRange
	}{
		{"plain", uid(imap.UIDRange{Start: 4, Stop: 9}), []store.UIDRange{rr(4, 9)}},
		{"star is last in view", uid(imap.UIDRange{Start: 0, Stop: 0}), []store.UIDRange{rr(20, 20)}},
		{"n:*", uid(imap.UIDRange{Start: 7, Stop: 0}), []store.UIDRange{rr(7, 20)}},
		{"n:* beyond last includes last", uid(imap.UIDRange{Start: 50, Stop: 0}), []store.UIDRange{rr(20, 50)}},
		{"beyond view kept (no match)", uid(imap.UIDRange{Start: 30, Stop: 40}), []store.UIDRange{rr(30, 40)}},
		{"empty", uid(), []store.UIDRange{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := uidSetToRanges(tc.set, 20); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIntersectSorted(t *testing.T) {
	tests := []struct{ a, b, want []uint32 }{
		{nil, []uint32{1, 2}, nil},
		{[]uint32{1, 2, 3}, nil, nil},
		{[]uint32{1, 3, 5, 7, 30}, []uint32{3, 4, 5, 6, 7, 8}, []uint32{3, 5, 7}},
		{[]uint32{10, 11}, []uint32{1, 2}, nil},
		{[]uint32{2, 4, 21}, []uint32{2, 4, 20}, []uint32{2, 4}}, // 21 appended after the view
	}
	for _, tc := range tests {
		if got := intersectSorted(tc.a, tc.b); !slices.Equal(got, tc.want) {
			t.Errorf("intersect(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestUIDsToRanges(t *testing.T) {
	got := uidsToRanges([]uint32{9, 1, 2, 3, 7, 8, 12})
	want := []store.UIDRange{rr(1, 3), rr(7, 9), rr(12, 12)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := uidsToRanges(nil); got == nil || len(got) != 0 {
		t.Fatalf("no saved result must be an empty (matching nothing) set, got %#v", got)
	}
}

func TestToStoreCriteria(t *testing.T) {
	view := []uint32{3, 5, 9, 10, 20}
	d := time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC)
	in := &imap.SearchCriteria{
		SeqNum:     []imap.SeqSet{{{Start: 2, Stop: 3}}},
		UID:        []imap.UIDSet{{{Start: 9, Stop: 0}}, imap.SearchRes()},
		Since:      d,
		Before:     d.AddDate(0, 0, 1),
		SentSince:  d,
		SentBefore: d.AddDate(0, 1, 0),
		Header:     []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "hi"}},
		Body:       []string{"b"},
		Text:       []string{"t"},
		Flag:       []imap.Flag{imap.FlagSeen, "$Work"},
		NotFlag:    []imap.Flag{imap.FlagDeleted},
		Larger:     10,
		Smaller:    1000,
		Not:        []imap.SearchCriteria{{SeqNum: []imap.SeqSet{{{Start: 0, Stop: 0}}}}},
		Or: [][2]imap.SearchCriteria{{
			{UID: []imap.UIDSet{{{Start: 0, Stop: 0}}}},
			{Not: []imap.SearchCriteria{{Body: []string{"x"}}}},
		}},
		ModSeq: &imap.SearchCriteriaModSeq{ModSeq: 77},
	}
	want := &store.SearchCriteria{
		UIDs:       [][]store.UIDRange{{rr(5, 9)}, {rr(9, 20)}, {rr(5, 5), rr(9, 10)}},
		Since:      d,
		Before:     d.AddDate(0, 0, 1),
		SentSince:  d,
		SentBefore: d.AddDate(0, 1, 0),
		Header:     []store.HeaderMatch{{Key: "Subject", Value: "hi"}},
		Body:       []string{"b"},
		Text:       []string{"t"},
		Flag:       []string{`\Seen`, "$Work"},
		NotFlag:    []string{`\Deleted`},
		Larger:     10,
		Smaller:    1000,
		Not:        []store.SearchCriteria{{UIDs: [][]store.UIDRange{{rr(20, 20)}}}},
		Or: [][2]store.SearchCriteria{{
			{UIDs: [][]store.UIDRange{{rr(20, 20)}}},
			{Not: []store.SearchCriteria{{Body: []string{"x"}}}},
		}},
		ModSeq: 77,
	}
	got := toStoreCriteria(in, view, []uint32{10, 5, 9})
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	// Without a saved result "$" matches nothing.
	got = toStoreCriteria(&imap.SearchCriteria{UID: []imap.UIDSet{imap.SearchRes()}}, view, nil)
	if len(got.UIDs) != 1 || len(got.UIDs[0]) != 0 {
		t.Fatalf("$ without saved result: %+v", got.UIDs)
	}
}

func rr(start, stop uint32) store.UIDRange { return store.UIDRange{Start: start, Stop: stop} }

// TestSearchESearch runs UID SEARCH with ESEARCH return options and
// SEARCHRES through imapclient against the real server over TLS.
func TestSearchESearch(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	msg := func(subject, body string) string {
		return crlf("From: Bob <bob@example.test>\nTo: alice@example.test\nSubject: " + subject +
			"\nDate: Mon, 6 May 2024 07:08:09 +0000\n\n" + body + "\n")
	}
	uids := []imap.UID{
		appendMsg(t, c, "INBOX", msg("plain one", "nothing here"), imap.FlagSeen),
		appendMsg(t, c, "INBOX", msg("=?utf-8?q?caf=C3=A9?=", "coffee"), imap.FlagFlagged),
		appendMsg(t, c, "INBOX", msg("third", "the secret word"), imap.FlagSeen, imap.FlagFlagged),
		appendMsg(t, c, "INBOX", msg("fourth", "more coffee please")),
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	search := func(criteria *imap.SearchCriteria, opts *imap.SearchOptions) *imap.SearchData {
		t.Helper()
		data, err := c.UIDSearch(criteria, opts).Wait()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	all := &imap.SearchOptions{ReturnMin: true, ReturnMax: true, ReturnCount: true, ReturnAll: true}

	data := search(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, all)
	if data.Count != 2 || data.Min != uint32(uids[1]) || data.Max != uint32(uids[3]) ||
		!slices.Equal(data.AllUIDs(), []imap.UID{uids[1], uids[3]}) {
		t.Fatalf("UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN: %+v all=%v", data, data.AllUIDs())
	}
	data = search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "CAFÉ"}}},
		&imap.SearchOptions{ReturnCount: true})
	if data.Count != 1 {
		t.Fatalf("SUBJECT café: count %d", data.Count)
	}
	// Sequence numbers 2:* and (BODY coffee OR FLAGGED) and NOT SEEN.
	data = search(&imap.SearchCriteria{
		SeqNum: []imap.SeqSet{{{Start: 2, Stop: 0}}},
		Or:     [][2]imap.SearchCriteria{{{Body: []string{"COFFEE"}}, {Flag: []imap.Flag{imap.FlagFlagged}}}},
		Not:    []imap.SearchCriteria{{Flag: []imap.Flag{imap.FlagSeen}}},
	}, nil)
	if got := data.AllUIDs(); !slices.Equal(got, []imap.UID{uids[1], uids[3]}) {
		t.Fatalf("2:* OR BODY coffee FLAGGED NOT SEEN: %v", got)
	}
	// Nothing matches: ESEARCH with only COUNT 0.
	data = search(&imap.SearchCriteria{Body: []string{"absent"}}, all)
	if data.Count != 0 || len(data.AllUIDs()) != 0 {
		t.Fatalf("no match: %+v", data)
	}

	// imapclient (beta.8) cannot send RETURN (SAVE), so "$" and the view
	// rule are checked on searchUIDsSaved directly, against the same store.
	ctx := context.Background()
	inbox, err := e.st.MailboxByName(ctx, e.acc.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	view := []uint32{uint32(uids[0]), uint32(uids[1]), uint32(uids[2]), uint32(uids[3])}
	late := e.deliver("INBOX", msg("late", "secret coffee")) // not in the view
	saved := []uint32{uint32(uids[1]), uint32(uids[2]), late.UID}
	got, err := searchUIDsSaved(ctx, e.st, e.acc.ID, inbox.ID, view,
		&imap.SearchCriteria{UID: []imap.UIDSet{imap.SearchRes()}, Text: []string{"secret"}}, saved)
	if err != nil || !slices.Equal(got, []uint32{uint32(uids[2])}) {
		t.Fatalf("UID $ TEXT secret: %v %v", got, err)
	}
	got, err = searchUIDs(ctx, e.st, e.acc.ID, inbox.ID, view, &imap.SearchCriteria{Body: []string{"coffee"}})
	if err != nil || !slices.Equal(got, []uint32{uint32(uids[1]), uint32(uids[3])}) {
		t.Fatalf("BODY coffee must not see the message after the view: %v %v", got, err)
	}
	got, err = searchUIDs(ctx, e.st, e.acc.ID, inbox.ID, append(view, late.UID),
		&imap.SearchCriteria{UID: []imap.UIDSet{{{Start: 0, Stop: 0}}}})
	if err != nil || !slices.Equal(got, []uint32{late.UID}) {
		t.Fatalf("UID * with the grown view: %v %v", got, err)
	}
	got, err = searchUIDs(ctx, e.st, e.acc.ID, inbox.ID, nil, &imap.SearchCriteria{})
	if err != nil || len(got) != 0 {
		t.Fatalf("empty view: %v %v", got, err)
	}
}

// cmdLiteral sends a command whose last argument is a synchronising
// literal, waiting for the continuation, and returns the untagged
// responses and the tagged status.
func (r *raw) cmdLiteral(prefix, literal string) (untagged []string, status string) {
	r.t.Helper()
	r.tag++
	tag := fmt.Sprintf("r%d", r.tag)
	fmt.Fprintf(r.c, "%s %s{%d}\r\n", tag, prefix, len(literal))
	if l := r.line(); !strings.HasPrefix(l, "+") {
		r.t.Fatalf("%s: no continuation: %q", prefix, l)
	}
	fmt.Fprintf(r.c, "%s\r\n", literal)
	for {
		l := r.line()
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return untagged, rest
		}
		untagged = append(untagged, l)
	}
}

// searchUIDList parses "* SEARCH n..." out of untagged responses.
func searchUIDList(t *testing.T, untagged []string) []uint32 {
	t.Helper()
	var out []uint32
	found := false
	for _, l := range untagged {
		rest, ok := strings.CutPrefix(l, "* SEARCH")
		if !ok {
			continue
		}
		found = true
		for _, f := range strings.Fields(rest) {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				t.Fatalf("bad SEARCH response %q", l)
			}
			out = append(out, uint32(n))
		}
	}
	if !found {
		t.Fatalf("no SEARCH response in %q", untagged)
	}
	return out
}

// TestSearchKeysWire runs every SEARCH key over the wire (raw commands, as
// clients write them) against messages built for it, and checks the UIDs.
func TestSearchKeysWire(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	pad := func(n int) string { return strings.Repeat("padding line of text\r\n", n/22+1)[:n] }
	type msg struct {
		date  time.Time // INTERNALDATE
		hdr   string    // header fields without the blank line
		body  string
		flags []imap.Flag
	}
	day := func(m time.Month, d, h, min int) time.Time { return time.Date(2024, m, d, h, min, 0, 0, time.UTC) }
	msgs := []msg{
		// UID 1, expunged below so that sequence numbers and UIDs differ.
		{day(1, 1, 0, 0), "Subject: filler\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000", "x", nil},
		// UID 2: sent on 31 Dec 2023 in its own zone (1 Jan in UTC).
		{day(1, 5, 10, 0), "Subject: alpha\r\nDate: Sun, 31 Dec 2023 23:30:00 -0500", "apple pie",
			[]imap.Flag{imap.FlagSeen, imap.FlagAnswered, "$Work"}},
		// UID 3: sent on 10 Jan in +0900 (9 Jan in UTC).
		{day(1, 10, 0, 30), "Subject: beta\r\nDate: Wed, 10 Jan 2024 08:00:00 +0900", "banana bread\r\n" + pad(1000),
			[]imap.Flag{imap.FlagDraft}},
		// UID 4: an RFC 2047 subject, large.
		{day(1, 10, 23, 59), "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= gamma\r\nDate: Tue, 9 Jan 2024 22:00:00 +0000", pad(5000),
			[]imap.Flag{imap.FlagSeen, "$Work", "$Later"}},
		// UID 5: no Date: header (SENT* use the INTERNALDATE), a custom field.
		{day(2, 1, 12, 0), "Subject: delta\r\nX-Custom: yes", "short", []imap.Flag{"$Later"}},
		// UID 6.
		{day(3, 1, 8, 0), "Subject: epsilon\r\nDate: Fri, 1 Mar 2024 08:00:00 +0000", pad(1000),
			[]imap.Flag{imap.FlagSeen, imap.FlagFlagged}},
	}
	for i, m := range msgs {
		raw := "From: bob@example.test\r\nTo: alice@example.test\r\n" + m.hdr + "\r\n\r\n" + m.body + "\r\n"
		cmd := c.Append("INBOX", int64(len(raw)), &imap.AppendOptions{Flags: m.flags, Time: m.date})
		io.WriteString(cmd, raw)
		cmd.Close()
		if res, err := cmd.Wait(); err != nil || res.UID != imap.UID(i+1) {
			t.Fatalf("append %d: %+v %v", i, res, err)
		}
		switch n := len(raw); {
		case i == 2 || i == 5:
			if n < 500 || n > 2000 {
				t.Fatalf("message %d is %d bytes, want 500..2000", i, n)
			}
		case i == 3:
			if n < 2000 {
				t.Fatalf("message %d is %d bytes, want > 2000", i, n)
			}
		case n >= 500:
			t.Fatalf("message %d is %d bytes, want < 500", i, n)
		}
	}
	r := e.raw()
	r.cmd("SELECT INBOX")
	r.cmd("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
	r.cmd("EXPUNGE")

	tests := []struct {
		key  string
		want []uint32
	}{
		{"ALL", []uint32{2, 3, 4, 5, 6}},
		{"SINCE 10-Jan-2024", []uint32{3, 4, 5, 6}},
		{"BEFORE 10-Jan-2024", []uint32{2}},
		{"ON 10-Jan-2024", []uint32{3, 4}},
		{"ON 11-Jan-2024", nil},
		{"SENTON 31-Dec-2023", []uint32{2}},
		{"SENTON 10-Jan-2024", []uint32{3}},
		{"SENTSINCE 10-Jan-2024", []uint32{3, 5, 6}},
		{"SENTBEFORE 10-Jan-2024", []uint32{2, 4}},
		{"LARGER 2000", []uint32{4}},
		{"SMALLER 500", []uint32{2, 5}},
		{"LARGER 500 SMALLER 2000", []uint32{3, 6}},
		{"TEXT banana", []uint32{3}},
		{"TEXT BREAD", []uint32{3}},
		{"TEXT gamma", []uint32{4}}, // in the header only
		{"BODY gamma", nil},
		{`TEXT "x-custom: yes"`, []uint32{5}},
		{"KEYWORD $Work", []uint32{2, 4}},
		{"KEYWORD $work", []uint32{2, 4}},
		{"UNKEYWORD $Work", []uint32{3, 5, 6}},
		{"KEYWORD $Nothing", nil},
		// r selected INBOX first after every message arrived: all are
		// \Recent to it (TestRecent covers the other sessions).
		{"NEW", []uint32{3, 5}},
		{"OLD", nil},
		{"RECENT", []uint32{2, 3, 4, 5, 6}},
		{"ANSWERED", []uint32{2}},
		{"UNANSWERED", []uint32{3, 4, 5, 6}},
		{"DRAFT", []uint32{3}},
		{"UNDRAFT", []uint32{2, 4, 5, 6}},
		{"FLAGGED", []uint32{6}},
		{"SEEN", []uint32{2, 4, 6}},
		{"UNSEEN", []uint32{3, 5}},
		{"2:4", []uint32{3, 4, 5}},
		{"NOT 2:4", []uint32{2, 6}},
		{"*", []uint32{6}},
		{"UID 3:4", []uint32{3, 4}},
		{"UID 4:*", []uint32{4, 5, 6}},
		{"NOT UID 1:3", []uint32{4, 5, 6}},
		{"OR OR ANSWERED DRAFT KEYWORD $Later", []uint32{2, 3, 4, 5}},
		{"OR (SEEN LARGER 2000) (UNSEEN SMALLER 500)", []uint32{4, 5}},
		{"NOT OR SEEN DRAFT", []uint32{5}},
		{"OR NOT SEEN NOT KEYWORD $Work", []uint32{3, 5, 6}},
		{`HEADER X-Custom ""`, []uint32{5}},
		{`HEADER X-Missing ""`, nil},
		{`HEADER Subject ""`, []uint32{2, 3, 4, 5, 6}},
		{`HEADER Date ""`, []uint32{2, 3, 4, 6}},
		{"SUBJECT gamma SEEN", []uint32{4}},
		{"CHARSET US-ASCII SUBJECT beta", []uint32{3}},
	}
	for _, tc := range tests {
		untagged, status := r.try("UID SEARCH " + tc.key)
		if !strings.HasPrefix(status, "OK") {
			t.Errorf("UID SEARCH %s: %s", tc.key, status)
			continue
		}
		if got := searchUIDList(t, untagged); !slices.Equal(got, tc.want) {
			t.Errorf("UID SEARCH %s = %v, want %v", tc.key, got, tc.want)
		}
	}
	// Sequence numbers in the answer of a plain SEARCH.
	if got := searchUIDList(t, r.cmd("SEARCH KEYWORD $Later")); !slices.Equal(got, []uint32{3, 4}) {
		t.Errorf("SEARCH KEYWORD $Later = %v, want sequence numbers 3 4", got)
	}
	// UTF-8 in a literal, matched against the decoded RFC 2047 subject.
	untagged, status := r.cmdLiteral("UID SEARCH CHARSET UTF-8 SUBJECT ", "grüße")
	if !strings.HasPrefix(status, "OK") || !slices.Equal(searchUIDList(t, untagged), []uint32{4}) {
		t.Errorf("SEARCH CHARSET UTF-8 SUBJECT grüße: %q %s", untagged, status)
	}
	if _, status := r.try("UID SEARCH CHARSET ISO-8859-2 ALL"); !strings.HasPrefix(status, "NO [BADCHARSET]") {
		t.Errorf("SEARCH CHARSET ISO-8859-2: %s", status)
	}
	// "$": the saved result, in criteria.
	r.cmd("UID SEARCH RETURN (SAVE) KEYWORD $Later")
	for key, want := range map[string][]uint32{"$ SEEN": {4}, "NOT $": {2, 3, 6}, "OR $ FLAGGED": {4, 5, 6}, "UID $": {4, 5}} {
		if got := searchUIDList(t, r.cmd("UID SEARCH "+key)); !slices.Equal(got, want) {
			t.Errorf("UID SEARCH %s = %v, want %v", key, got, want)
		}
	}
}

// TestSearchResMinMax: SEARCH RETURN (SAVE MIN/MAX) saves only the
// messages MIN and MAX report (RFC 5182 §2.4), checked with UID FETCH $.
func TestSearchResMinMax(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login(nil)
	for i := range 6 {
		var flags []imap.Flag
		if i%2 == 0 {
			flags = append(flags, imap.FlagSeen)
		}
		appendMsg(t, c, "INBOX", crlf(simpleMsg), flags...)
	}
	// UNSEEN: UIDs 2, 4, 6 = sequence numbers 1, 3, 5 after UID 1 goes.
	r := e.raw()
	r.cmd("SELECT INBOX")
	r.cmd("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
	r.cmd("EXPUNGE")
	fetched := func() []string {
		t.Helper()
		var uids []string
		for _, l := range r.cmd("UID FETCH $ (UID)") {
			_, rest, _ := strings.Cut(l, "(UID ")
			uids = append(uids, strings.TrimSuffix(rest, ")"))
		}
		return uids
	}
	tests := []struct {
		search string
		answer string // the ESEARCH response without "* ESEARCH (TAG ...) "
		saved  []string
	}{
		{"UID SEARCH RETURN (SAVE MIN) UNSEEN", "UID MIN 2", []string{"2"}},
		{"UID SEARCH RETURN (SAVE MAX) UNSEEN", "UID MAX 6", []string{"6"}},
		{"UID SEARCH RETURN (SAVE MIN MAX) UNSEEN", "UID MIN 2 MAX 6", []string{"2", "6"}},
		{"SEARCH RETURN (SAVE MIN MAX) UNSEEN", "MIN 1 MAX 5", []string{"2", "6"}},
		{"UID SEARCH RETURN (MIN SAVE) UID 4", "UID MIN 4", []string{"4"}},
		{"UID SEARCH RETURN (SAVE MIN COUNT) UNSEEN", "UID MIN 2 COUNT 3", []string{"2", "4", "6"}},
		{"UID SEARCH RETURN (SAVE MAX ALL) UNSEEN", "UID ALL 2,4,6 MAX 6", []string{"2", "4", "6"}},
		// SAVE alone: no ESEARCH (RFC 5182 §2.4).
		{"UID SEARCH RETURN (SAVE) UNSEEN", "", []string{"2", "4", "6"}},
		{"UID SEARCH RETURN (SAVE MIN) KEYWORD $None", "UID", nil},
	}
	for _, tc := range tests {
		untagged := r.cmd(tc.search)
		if tc.answer == "" {
			if len(untagged) != 0 {
				t.Errorf("%s: %q, want no ESEARCH", tc.search, untagged)
			}
			if got := fetched(); !slices.Equal(got, tc.saved) {
				t.Errorf("%s: UID FETCH $ = %v, want %v", tc.search, got, tc.saved)
			}
			continue
		}
		if len(untagged) != 1 || !strings.HasPrefix(untagged[0], "* ESEARCH (TAG ") {
			t.Errorf("%s: %q", tc.search, untagged)
			continue
		}
		_, answer, _ := strings.Cut(untagged[0], ") ")
		if !strings.Contains(untagged[0], ") ") {
			answer = ""
		}
		if strings.HasSuffix(untagged[0], ") UID") {
			answer = "UID"
		}
		if answer != tc.answer {
			t.Errorf("%s: answer %q, want %q", tc.search, answer, tc.answer)
		}
		if got := fetched(); !slices.Equal(got, tc.saved) {
			t.Errorf("%s: UID FETCH $ = %v, want %v", tc.search, got, tc.saved)
		}
	}
}
