package imapd

import (
	"context"
	"reflect"
	"slices"
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
