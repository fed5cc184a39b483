package imapd

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
)

// sortMsg is a test message and the internal date it is stored with.
type sortMsg struct {
	date time.Time
	text string
}

// fillMailbox creates a mailbox holding msgs in order, behind one expunged
// message, so that UID n+1 is sequence number n (UID and sequence answers
// differ).
func (e *env) fillMailbox(t *testing.T, name string, msgs []sortMsg) {
	t.Helper()
	ctx := context.Background()
	mb, err := e.st.CreateMailbox(ctx, e.acc.ID, name, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Append(ctx, e.acc.ID, mb.ID, strings.NewReader(crlf("Subject: gone\n\nx\n")), 0, []string{`\Deleted`}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Expunge(ctx, e.acc.ID, mb.ID, nil); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := e.st.Append(ctx, e.acc.ID, mb.ID, strings.NewReader(crlf(m.text)), 0, nil, m.date); err != nil {
			t.Fatal(err)
		}
	}
}

func at(s string) time.Time {
	t, err := time.Parse(time.DateTime, s)
	if err != nil {
		panic(err)
	}
	return t
}

// sortMessages: every key, encoded words, missing headers (message 3 has
// none), ties (messages 1 and 4 share From mailbox and Date).
var sortMessages = []sortMsg{
	{at("2024-05-10 00:00:03"), "From: Zed <b@x.test>\nTo: c@x.test\nSubject: Re: apple\nDate: Mon, 6 May 2024 10:00:00 +0000\n\none\n"},
	{at("2024-05-10 00:00:01"), "From: alice <A@x.test>\nTo: =?utf-8?q?=C3=89mile?= <a@x.test>\nCc: z@x.test\nSubject: =?utf-8?q?Banana?=\n" +
		"Date: Mon, 6 May 2024 09:00:00 +0200\n\n" + strings.Repeat("two ", 100) + "\n"},
	{at("2024-05-01 00:00:00"), "X-Empty: 1\n\nx\n"},
	{at("2024-05-10 00:00:02"), "From: b@x.test\nTo: \"Bob\" <d@x.test>\nSubject: [list] Fwd: apple (fwd)\nDate: Mon, 6 May 2024 10:00:00 +0000\n\nfour\n"},
	{at("2024-05-10 00:00:00"), "From: =?utf-8?q?=C3=A9mile?= <c@x.test>\nTo: b@x.test\nCc: A@x.test\nSubject: apple pie\nDate: Tue, 7 May 2024 00:00:00 +0000\n\nfive\n"},
}

// TestSort: SORT and UID SORT over TLS with imapclient, each key, REVERSE,
// several keys, ties, search criteria.
func TestSort(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.fillMailbox(t, "Sort", sortMessages)
	c := e.login(nil)
	defer c.Close()
	if _, err := c.Select("Sort", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// SIZE's expectation from the sizes.
	bySize := []uint32{1, 2, 3, 4, 5}
	slices.SortStableFunc(bySize, func(a, b uint32) int {
		return cmp.Compare(len(crlf(sortMessages[a-1].text)), len(crlf(sortMessages[b-1].text)))
	})
	key := func(k string, reverse bool) imapclient.SortCriterion {
		return imapclient.SortCriterion{Key: imapclient.SortKey(k), Reverse: reverse}
	}
	tests := []struct {
		name     string
		keys     []imapclient.SortCriterion
		criteria *imap.SearchCriteria
		want     []uint32
	}{
		{"arrival", []imapclient.SortCriterion{key("ARRIVAL", false)}, nil, []uint32{3, 5, 2, 4, 1}},
		{"reverse arrival", []imapclient.SortCriterion{key("ARRIVAL", true)}, nil, []uint32{1, 4, 2, 5, 3}},
		// 3 has no Date: its internal date; 2 is 07:00 UTC; 1 and 4 tie.
		{"date", []imapclient.SortCriterion{key("DATE", false)}, nil, []uint32{3, 2, 1, 4, 5}},
		{"reverse date keeps ties ascending", []imapclient.SortCriterion{key("DATE", true)}, nil, []uint32{5, 1, 4, 2, 3}},
		{"from", []imapclient.SortCriterion{key("FROM", false)}, nil, []uint32{3, 2, 1, 4, 5}},
		{"reverse from", []imapclient.SortCriterion{key("FROM", true)}, nil, []uint32{5, 1, 4, 2, 3}},
		{"to", []imapclient.SortCriterion{key("TO", false)}, nil, []uint32{3, 2, 5, 1, 4}},
		{"cc", []imapclient.SortCriterion{key("CC", false)}, nil, []uint32{1, 3, 4, 5, 2}},
		{"subject", []imapclient.SortCriterion{key("SUBJECT", false)}, nil, []uint32{3, 1, 4, 5, 2}},
		{"size", []imapclient.SortCriterion{key("SIZE", false)}, nil, bySize},
		{"displayfrom", []imapclient.SortCriterion{key("DISPLAYFROM", false)}, nil, []uint32{3, 2, 4, 5, 1}},
		{"displayto", []imapclient.SortCriterion{key("DISPLAYTO", false)}, nil, []uint32{3, 5, 4, 1, 2}},
		{"reverse subject, arrival", []imapclient.SortCriterion{key("SUBJECT", true), key("ARRIVAL", false)}, nil, []uint32{2, 5, 4, 1, 3}},
		{"from, reverse arrival", []imapclient.SortCriterion{key("FROM", false), key("ARRIVAL", true)}, nil, []uint32{3, 2, 1, 4, 5}},
		{"with a content search", []imapclient.SortCriterion{key("DATE", true)},
			&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "b"}}}, []uint32{1, 4}},
		{"with a flag search", []imapclient.SortCriterion{key("SUBJECT", false)},
			&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}, SeqNum: []imap.SeqSet{imap.SeqSetNum(2, 3, 4)}}, []uint32{3, 4, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			crit := tc.criteria
			if crit == nil {
				crit = &imap.SearchCriteria{}
			}
			got, err := c.Sort(&imapclient.SortOptions{SearchCriteria: crit, SortCriteria: tc.keys}).Wait()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("SORT = %v, want %v", got, tc.want)
			}
			uids, err := c.UIDSort(&imapclient.SortOptions{SearchCriteria: crit, SortCriteria: tc.keys}).Wait()
			if err != nil {
				t.Fatal(err)
			}
			for i := range uids {
				uids[i]--
			}
			if !slices.Equal(uids, tc.want) {
				t.Errorf("UID SORT = %v (less 1), want %v", uids, tc.want)
			}
		})
	}
}

// TestSortErrors: bad sort criteria, charsets and algorithms are refused.
func TestSortErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.fillMailbox(t, "Sort", sortMessages[:2])
	r := e.raw()
	r.cmd("SELECT Sort")
	for _, tc := range []struct{ cmd, status string }{
		{"SORT (REVERSE) UTF-8 ALL", "BAD"},
		{"SORT () UTF-8 ALL", "BAD"},
		{"SORT (SENDER) UTF-8 ALL", "BAD"},
		{"SORT (DATE) ALL", "NO [BADCHARSET]"},
		{"SORT (DATE) KOI8-R ALL", "NO [BADCHARSET]"},
		{"SORT RETURN (PARTIAL 1:2 ALL) (DATE) UTF-8 ALL", "BAD"},
		{"THREAD FOO UTF-8 ALL", "BAD"},
		{"THREAD REFERENCES UTF-8", "BAD"},
		{"SORT (DATE) US-ASCII ALL", "OK"},
	} {
		if _, status := r.try(tc.cmd); !strings.HasPrefix(status, tc.status) {
			t.Errorf("%s: %s, want %s", tc.cmd, status, tc.status)
		}
	}
}

// TestESort: SORT RETURN (RFC 5267) answers with ESEARCH in sort order.
func TestESort(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.fillMailbox(t, "Sort", sortMessages)
	r := e.raw()
	r.cmd("SELECT Sort")
	tests := []struct{ cmd, want string }{
		{"SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL", `ALL 3,2,1,4:5 MIN 3 MAX 5 COUNT 5`},
		{"SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL", `ALL 1,4,2,5,3`},
		{"SORT RETURN (MIN) (SUBJECT) UTF-8 ALL", `MIN 3`},
		{"SORT RETURN (MAX) (SUBJECT) UTF-8 ALL", `MAX 2`},
		{"SORT RETURN (COUNT) (SUBJECT) UTF-8 FROM nobody", `COUNT 0`},
		{"SORT RETURN (MIN MAX) (SUBJECT) UTF-8 FROM nobody", ``},
		{"UID SORT RETURN (ALL) (DATE) UTF-8 ALL", `UID ALL 4,3,2,5:6`},
		// PARTIAL (RFC 9394) windows the sorted result.
		{"SORT RETURN (PARTIAL 1:2) (DATE) UTF-8 ALL", `PARTIAL (1:2 3,2)`},
		{"SORT RETURN (PARTIAL -1:-2) (DATE) UTF-8 ALL", `PARTIAL (-1:-2 4:5)`},
		{"SORT RETURN (SAVE PARTIAL 1:2) (DATE) UTF-8 ALL", `PARTIAL (1:2 3,2)`},
	}
	for i, tc := range tests {
		got := r.cmd(tc.cmd)
		want := fmt.Sprintf(`* ESEARCH (TAG "r%d")`, i+3)
		if tc.want != "" {
			want += " " + tc.want
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: %q, want %q", tc.cmd, got, want)
		}
	}
	// A MODSEQ key adds the highest modseq (RFC 7162 §3.1.5).
	// (The first CONDSTORE command also reports HIGHESTMODSEQ.)
	if got := r.cmd("SORT (DATE) UTF-8 MODSEQ 1"); len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "* SORT 3 2 1 4 5 (MODSEQ ") {
		t.Errorf("SORT with MODSEQ: %q", got)
	}
	// SAVE keeps the result for "$", as SEARCH's does.
	r.cmd("SORT RETURN (SAVE) (REVERSE DATE) UTF-8 FROM b")
	if got := r.cmd("UID SEARCH UID $"); len(got) != 1 || got[0] != "* SEARCH 2 5" {
		t.Errorf("after SAVE: %q", got)
	}
}

// threadMessages: a References chain (1-2-3), an In-Reply-To (4), two
// replies to a message that is not there (5, 6: under a dummy), a reply
// by subject alone without Message-ID (7), and the oldest message (8).
var threadMessages = []sortMsg{
	{at("2024-05-10 00:00:00"), "Message-ID: <a@t>\nSubject: x\nDate: Mon, 6 May 2024 01:00:00 +0000\n\n1\n"},
	{at("2024-05-10 00:00:00"), "Message-ID: <b@t>\nReferences: <a@t>\nSubject: Re: x\nDate: Mon, 6 May 2024 02:00:00 +0000\n\n2\n"},
	{at("2024-05-10 00:00:00"), "Message-ID: <c@t>\nReferences: <a@t>\n <b@t>\nSubject: Re: x\nDate: Mon, 6 May 2024 03:00:00 +0000\n\n3\n"},
	{at("2024-05-10 00:00:00"), "Message-ID: <d@t>\nIn-Reply-To: <a@t> (sent by a)\nSubject: RE: X\nDate: Mon, 6 May 2024 04:00:00 +0000\n\n4\n"},
	{at("2024-05-10 00:00:00"), "Message-ID: <e@t>\nReferences: <missing@t>\nSubject: other\nDate: Mon, 6 May 2024 05:00:00 +0000\n\n5\n"},
	{at("2024-05-10 00:00:00"), "Message-ID: <f@t>\nReferences: <missing@t>\nSubject: other2\nDate: Mon, 6 May 2024 06:00:00 +0000\n\n6\n"},
	{at("2024-05-10 00:00:00"), "Subject: Re: x\nDate: Mon, 6 May 2024 07:00:00 +0000\n\n7\n"},
	{at("2024-05-10 00:00:00"), "Message-ID: <h@t>\nSubject: lonely\nDate: Sun, 5 May 2024 00:00:00 +0000\n\n8\n"},
}

// TestThread: THREAD REFERENCES and ORDEREDSUBJECT (RFC 5256 §2.2,
// §2.3) in the response's exact form, by sequence number and UID, with
// search criteria and a References loop.
func TestThread(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.fillMailbox(t, "Thread", threadMessages)
	e.fillMailbox(t, "Loop", []sortMsg{
		{at("2024-05-10 00:00:00"), "Message-ID: <x@t>\nReferences: <y@t>\nSubject: loop\nDate: Mon, 6 May 2024 02:00:00 +0000\n\n1\n"},
		{at("2024-05-10 00:00:00"), "Message-ID: <y@t>\nReferences: <x@t>\nSubject: loop\nDate: Mon, 6 May 2024 01:00:00 +0000\n\n2\n"},
		{at("2024-05-10 00:00:00"), "Message-ID: <x@t>\nSubject: duplicate id\nDate: Mon, 6 May 2024 03:00:00 +0000\n\n3\n"},
	})
	// Sent dates centuries from 2000 (the binary timestamps' epoch),
	// delivered out of order.
	e.fillMailbox(t, "FarDates", []sortMsg{
		{at("2024-05-10 00:00:00"), "Subject: a\nDate: Thu, 31 Dec 9999 23:59:59 -1200\n\n1\n"},
		{at("2024-05-10 00:00:00"), "Subject: b\nDate: Mon, 1 Jan 0001 12:00:00 +0000\n\n2\n"},
		{at("2024-05-10 00:00:00"), "Subject: c\nDate: Mon, 6 May 2024 01:00:00 +0000\n\n3\n"},
		{at("2024-05-10 00:00:00"), "Subject: d\nDate: Sat, 1 Jan 2500 00:00:00 +0000\n\n4\n"},
		{at("2024-05-10 00:00:00"), "Subject: e\nDate: Fri, 1 Jan 1500 00:00:00 +0000\n\n5\n"},
	})
	e.fillMailbox(t, "Empty", nil)
	r := e.raw()
	tests := []struct{ mailbox, cmd, want string }{
		{"Thread", "THREAD REFERENCES UTF-8 ALL", "* THREAD (8)(1 (2 3)(4)(7))((5)(6))"},
		{"Thread", "UID THREAD REFERENCES UTF-8 ALL", "* THREAD (9)(2 (3 4)(5)(8))((6)(7))"},
		{"Thread", "THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (8)(1 (2)(3)(4)(7))(5)(6)"},
		{"Thread", "THREAD REFERENCES US-ASCII SUBJECT other", "* THREAD ((5)(6))"},
		{"Thread", "THREAD REFERENCES UTF-8 5", "* THREAD (5)"},
		{"Thread", "THREAD REFERENCES UTF-8 2:3", "* THREAD (2 3)"},
		{"Thread", "THREAD REFERENCES UTF-8 1,3", "* THREAD (1 3)"},
		{"Thread", "THREAD ORDEREDSUBJECT UTF-8 SUBJECT nothing", "* THREAD"},
		{"Loop", "THREAD REFERENCES UTF-8 ALL", "* THREAD (2 1)(3)"},
		{"FarDates", "THREAD REFERENCES UTF-8 ALL", "* THREAD (2)(5)(3)(4)(1)"},
		{"FarDates", "THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (2)(5)(3)(4)(1)"},
		{"FarDates", "SORT (DATE) UTF-8 ALL", "* SORT 2 5 3 4 1"},
		{"Empty", "THREAD REFERENCES UTF-8 ALL", "* THREAD"},
	}
	for _, tc := range tests {
		r.cmd("SELECT " + tc.mailbox)
		got := r.cmd(tc.cmd)
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.mailbox, tc.cmd, got, tc.want)
		}
	}
	// imapclient reads the response.
	c := e.login(nil)
	defer c.Close()
	if _, err := c.Select("Thread", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	data, err := c.Thread(&imapclient.ThreadOptions{Algorithm: imap.ThreadReferences, SearchCriteria: &imap.SearchCriteria{}}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 3 || data[0].Chain[0] != 8 || data[1].Chain[0] != 1 || len(data[1].SubThreads) != 3 {
		t.Errorf("imapclient read %+v", data)
	}
}

// TestThreadAlgorithms runs the algorithms on their own: RFC 5256's
// rules on dummies, subject gathering and ordering.
func TestThreadAlgorithms(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2024, 5, d, 0, 0, 0, 0, time.UTC) }
	m := func(d int, id, refs, subj string, reply bool) store.ThreadMessage {
		return store.ThreadMessage{Date: day(d), MessageID: id, References: refs, Subject: subj, Reply: reply}
	}
	tests := []struct {
		name string
		msgs []store.ThreadMessage
		want string
	}{
		{"a dummy of one child is promoted", []store.ThreadMessage{m(1, "a@t", "gone@t", "A", true)}, " (1)"},
		{"a dummy inside a thread is spliced",
			[]store.ThreadMessage{m(1, "a@t", "", "A", false), m(2, "c@t", "a@t gone@t", "A", true), m(3, "d@t", "a@t gone@t", "A", true)},
			" (1 (2)(3))"},
		{"same subject, neither a reply: a new dummy",
			[]store.ThreadMessage{m(1, "a@t", "", "S", false), m(2, "b@t", "", "S", false)}, " ((1)(2))"},
		{"a reply joins the original by subject",
			[]store.ThreadMessage{m(2, "a@t", "", "S", true), m(1, "b@t", "", "S", false)}, " (2 1)"},
		{"empty subjects are not gathered",
			[]store.ThreadMessage{m(1, "a@t", "", "", false), m(2, "b@t", "", "", false)}, " (1)(2)"},
		{"equal dates: sequence order",
			[]store.ThreadMessage{m(1, "a@t", "", "A", false), m(1, "b@t", "", "B", false), m(1, "c@t", "a@t", "A", true)},
			" (1 3)(2)"},
		{"a late References does not move an earlier parent",
			[]store.ThreadMessage{m(1, "a@t", "", "A", false), m(2, "b@t", "a@t", "A", true), m(3, "c@t", "x@t b@t", "A", true)},
			" (1 2 3)"},
		{"a later References gives an earlier message a parent",
			[]store.ThreadMessage{m(1, "a@t", "", "A", false), m(2, "b@t", "", "B", false), m(3, "c@t", "b@t a@t", "C", false)},
			" (2 1 3)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.msgs {
				tc.msgs[i].UID = uint32(i + 1)
			}
			got := string(appendThreads(nil, threadReferences(tc.msgs), func(m *store.ThreadMessage) uint32 { return m.UID }))
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
