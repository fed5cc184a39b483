package store_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// indexAll runs the text indexer until the queue is empty.
func indexAll(t testing.TB, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	for {
		n, err := st.IndexText(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if n, err := st.TextIndexPending(ctx); err != nil || n != 0 {
		t.Fatalf("after indexing: %d pending, %v", n, err)
	}
}

type searchCase struct {
	name string
	c    store.SearchCriteria
	want []uint32
}

// searchScanThenIndex runs the cases before the mailbox's messages are
// indexed (the scan answers) and after (the index does).
func searchScanThenIndex(t *testing.T, st *store.Store, accountID, mailboxID int64, tests []searchCase) {
	t.Helper()
	for _, mode := range []string{"scan", "index"} {
		if mode == "index" {
			indexAll(t, st)
		}
		for _, tc := range tests {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				got, err := st.Search(context.Background(), accountID, mailboxID, &tc.c)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			})
		}
	}
}

// TestTextIndexAgrees checks that the index and the scan give the same
// answers on tricky messages: every case is searched before the messages
// are indexed (scan) and after (index), and must match the expected UIDs
// both times. It runs on a database of the harness's LC_CTYPE (C.UTF-8:
// pg_trgm extracts trigrams of any script) and on one of LC_CTYPE C (only
// ASCII letters and digits make trigrams), whose queries differ.
func TestTextIndexAgrees(t *testing.T) {
	for _, ctype := range []string{"", "C"} {
		t.Run("ctype="+ctype, func(t *testing.T) {
			url := storetest.NewURL(t)
			if ctype != "" {
				url = storetest.NewURLCtype(t, ctype)
			}
			textIndexAgrees(t, newFixtureAt(t, url, store.Options{}))
		})
	}
}

func textIndexAgrees(t *testing.T, f *fixture) {
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	qp := func(s string) string { return s }
	msgs := []string{
		// 1: encoded words in Subject (Q and B, two charsets, adjacent words joined)
		"From: =?iso-8859-1?q?Andr=E9?= <andre@example.fr>\nTo: x@example.org\n" +
			"Subject: =?utf-8?b?0J/RgNC40LLQtdGC?= =?koi8-r?q?=CD=C9=D2?= and =?utf-8?q?Stra=C3=9Fe?=\n\nplain\n",
		// 2: Latin-1 quoted-printable body, a word split by a soft line break, Windows-1252 quote
		"From: a@example.org\nSubject: qp\nMIME-Version: 1.0\nContent-Type: text/plain; charset=windows-1252\n" +
			"Content-Transfer-Encoding: quoted-printable\n\n" + qp("na=EFve Gar=\nderobe =93quoted=94\nZ=C3=BCrich\n"),
		// 3: HTML only: entities, tags inside a word, script and style, comment, numeric references
		"From: a@example.org\nSubject: html\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n" +
			"<html><head><style>.secretstyle{color:red}</style><script>var secretscript=1;</script></head>" +
			"<body><p>Fish &amp; Chips&nbsp;tonight</p><p>in<b>voi</b>ce</p><!-- hiddencomment -->" +
			"<div>caf&eacute; &#8364;5 &#x41;BC</div><p>line<br>break</p></body></html>\n",
		// 4: multipart/alternative with base64 UTF-8 text, attachment names (RFC 2231 and RFC 2047)
		"From: a@example.org\nSubject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n" +
			"--B\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" +
			base64.StdEncoding.EncodeToString([]byte("ΑΘΗΝΑ Σοφία\r\nДОБРЫЙ день\r\n")) + "\n" +
			"--B\nContent-Type: application/pdf; name=\"x.pdf\"\nContent-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\n" +
			"Content-Transfer-Encoding: base64\n\nJVBERi0=\n" +
			"--B\nContent-Type: image/png; name=\"=?utf-8?q?f=C3=B6to.png?=\"\nContent-Transfer-Encoding: base64\n\niVBORw0=\n" +
			"--B--\n",
		// 5: words split across lines and parts, folded header, UTF-8 8-bit header, raw Latin-1 header
		"From: a@example.org\nSubject: a long subject that is\n folded here\nX-Note: Grüße\nX-Raw: caf\xe9\n" +
			"MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=C\n\n" +
			"--C\nContent-Type: text/plain\n\nend of part one split\n--C\nContent-Type: text/plain\n\nacross parts\nwrapped\nline\n--C--\n",
		// 6: unknown charset and an invalid UTF-8 body
		"From: a@example.org\nSubject: odd\nMIME-Version: 1.0\nContent-Type: text/plain; charset=x-unknown\n\nabc\xff\xfedef ok\n",
		// 7: LIKE and regular expression metacharacters in text
		"From: a@example.org\nSubject: 100% [sale] (a.b)* under_score \\back\n\nprice 50% off_now ^$ a+b?\n",
	}
	for i, m := range msgs {
		if res, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(crlf(m)), 0, nil, time.Time{}); err != nil || res.UID != uint32(i+1) {
			t.Fatalf("append %d: %v, %v", i+1, res, err)
		}
	}
	type C = store.SearchCriteria
	type H = store.HeaderMatch
	tests := []searchCase{
		{"encoded word utf-8 b", C{Header: []H{{"Subject", "привет"}}}, []uint32{1}},
		{"encoded words joined", C{Header: []H{{"Subject", "приветмир"}}}, []uint32{1}},
		{"encoded word koi8-r upper", C{Text: []string{"МИР"}}, []uint32{1}},
		{"encoded word ß kept", C{Header: []H{{"Subject", "STRASSE"}}}, nil},
		{"encoded word ß", C{Header: []H{{"Subject", "straße"}}}, []uint32{1}},
		{"encoded from latin-1", C{Header: []H{{"From", "andré"}}}, []uint32{1}},
		{"qp windows-1252", C{Body: []string{"naïve"}}, []uint32{2}},
		{"qp soft break joins word", C{Body: []string{"garderobe"}}, []uint32{2}},
		{"windows-1252 quotes", C{Body: []string{"“quoted”"}}, []uint32{2}},
		{"mojibake stays", C{Body: []string{"zã¼rich"}}, []uint32{2}},
		{"html entity amp", C{Body: []string{"fish & chips tonight"}}, []uint32{3}},
		{"html tags inside word", C{Body: []string{"invoice"}}, []uint32{3}},
		{"html named entity", C{Body: []string{"CAFÉ €5 abc"}}, []uint32{3}},
		{"html br breaks", C{Body: []string{"line\nbreak"}}, []uint32{3}},
		{"html br not joined", C{Body: []string{"linebreak"}}, nil},
		{"html style skipped", C{Body: []string{"secretstyle"}}, nil},
		{"html script skipped", C{Body: []string{"secretscript"}}, nil},
		{"html comment skipped", C{Body: []string{"hiddencomment"}}, nil},
		{"html markup skipped", C{Text: []string{"<p>"}}, nil},
		{"substring inside word", C{Body: []string{"nvoic"}}, []uint32{3}},
		{"greek case folding", C{Body: []string{"αθηνα"}}, []uint32{4}},
		{"greek final sigma", C{Body: []string{"ΣΟΦΊΑ"}}, []uint32{4}},
		{"cyrillic upper", C{Body: []string{"добрый ДЕНЬ"}}, []uint32{4}},
		{"attachment name rfc 2231", C{Body: []string{"rechnung märz"}}, []uint32{4}},
		{"attachment name rfc 2047", C{Text: []string{"FÖTO.PNG"}}, []uint32{4}},
		{"attachment content not text", C{Body: []string{"JVBER"}}, nil},
		{"folded header unfolded", C{Header: []H{{"Subject", "that is folded"}}}, []uint32{5}},
		{"text header line", C{Text: []string{"x-note: grüße"}}, []uint32{5}},
		{"raw latin-1 header", C{Header: []H{{"X-Raw", "CAFÉ"}}}, []uint32{5}},
		{"header field must be named", C{Header: []H{{"X-Note", "café"}}}, nil},
		{"header key prefix is not the field", C{Header: []H{{"Note", "grüße"}}}, nil},
		{"split across lines", C{Body: []string{"across parts\r\nwrapped"}}, []uint32{5}},
		{"no match across parts", C{Body: []string{"split\r\nacross"}}, nil},
		{"no match across header fields", C{Text: []string{"folded here x-note"}}, nil},
		{"unknown charset raw", C{Body: []string{"def ok"}}, []uint32{6}},
		{"invalid utf-8 needle replaced", C{Body: []string{"abc\uFFFD"}}, nil},
		{"percent", C{Header: []H{{"Subject", "100%"}}}, []uint32{7}},
		{"percent not wildcard", C{Body: []string{"50%off"}}, nil},
		{"underscore not wildcard", C{Body: []string{"off now"}}, nil},
		{"underscore", C{Body: []string{"off_now"}}, []uint32{7}},
		{"regexp chars", C{Header: []H{{"Subject", "[sale] (a.b)* under_score \\back"}}}, []uint32{7}},
		{"regexp dot literal", C{Header: []H{{"Subject", "(aXb)"}}}, nil},
		{"regexp anchors literal", C{Body: []string{"^$ a+b?"}}, []uint32{7}},
		{"not body", C{Not: []C{{Body: []string{"plain"}}}}, []uint32{2, 3, 4, 5, 6, 7}},
		{"or header body", C{Or: [][2]C{{{Header: []H{{"Subject", "odd"}}}, {Body: []string{"chips"}}}}}, []uint32{3, 6}},
		{"header empty value", C{Header: []H{{"x-note", ""}}}, []uint32{5}},
		{"sent date not indexed", C{SentSince: day(2000, 1, 1), Body: []string{"plain"}}, []uint32{1}},
	}
	searchScanThenIndex(t, f.st, f.a.ID, inbox.ID, tests)
}

// TestTextIndexFallback: a message delivered after the others were
// indexed is found before the indexer reaches it, alongside indexed ones,
// and after; a message cut at the cap is found by what lies past the cap.
func TestTextIndexFallback(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	appendMsg := func(body string) {
		t.Helper()
		if _, err := f.st.Append(ctx, f.a.ID, inbox.ID, strings.NewReader(crlf(body)), 0, nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	search := func(c *store.SearchCriteria, want ...uint32) {
		t.Helper()
		got, err := f.st.Search(ctx, f.a.ID, inbox.ID, c)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("search %+v: got %v, %v; want %v", c, got, err, want)
		}
	}
	for i := range 3 {
		appendMsg(fmt.Sprintf("Subject: indexed %d\n\nzebra number %d\n", i, i))
	}
	indexAll(t, f.st)
	appendMsg("Subject: fresh zebra\n\nnot indexed yet: zebra\n")
	// Past the body cap (256 KiB of text): only the scan sees the end.
	appendMsg("Subject: long\n\n" + strings.Repeat("filler text\n", 30000) + "needle at the end zebra\n")
	if n, err := f.st.TextIndexPending(ctx); err != nil || n != 2 {
		t.Fatalf("pending %d, %v; want 2", n, err)
	}
	zebra := &store.SearchCriteria{Body: []string{"zebra"}}
	search(zebra, 1, 2, 3, 4, 5)
	search(&store.SearchCriteria{Header: []store.HeaderMatch{{Key: "Subject", Value: "fresh"}}}, 4)
	search(&store.SearchCriteria{Body: []string{"needle at the end"}}, 5)
	indexAll(t, f.st)
	search(zebra, 1, 2, 3, 4, 5)
	search(&store.SearchCriteria{Body: []string{"needle at the end"}}, 5)
	search(&store.SearchCriteria{Not: []store.SearchCriteria{{Body: []string{"zebra number"}}}}, 4, 5)

	// A content shared by two accounts is indexed once and found by each
	// in its own mailbox only.
	bInbox := f.mailbox(t, f.b, "INBOX")
	if _, err := f.st.Append(ctx, f.b.ID, bInbox.ID, strings.NewReader(crlf("Subject: indexed 0\n\nzebra number 0\n")), 0, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got, err := f.st.Search(ctx, f.b.ID, bInbox.ID, zebra); err != nil || !slices.Equal(got, []uint32{1}) {
		t.Fatalf("Bob's search: %v, %v", got, err)
	}

	// A content whose stored structure cannot be read does not stop the
	// indexer: it is indexed as cut (the scan decides), and the next
	// content is indexed.
	conn, err := pgx.ConnectConfig(ctx, f.st.ConnConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	appendMsg("Subject: poison\n\nbody\n")
	appendMsg("Subject: after poison\n\nbody\n")
	if _, err := conn.Exec(ctx, `UPDATE messages SET structure = '{"root": 5}'
		WHERE id = (SELECT min(message_id) FROM text_index_queue)`); err != nil {
		t.Fatal(err)
	}
	indexAll(t, f.st)
	var truncated, total int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE truncated), count(*) FROM message_text`).Scan(&truncated, &total); err != nil {
		t.Fatal(err)
	}
	if truncated != 2 || total != 7 {
		t.Fatalf("message_text: %d rows, %d cut; want 7, 2", total, truncated)
	}
}

// BenchmarkAppend10KBIndexing is BenchmarkAppend10KB with the text indexer
// running beside it, as in `serve`: what indexing costs delivery when both
// share the machine.
func BenchmarkAppend10KBIndexing(b *testing.B) {
	f := newFixture(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.st.RunTextIndexer(ctx, 100*time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
	}()
	inbox := f.mailbox(b, f.a, "INBOX")
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 160)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg := fmt.Sprintf("From: a@example.com\r\nSubject: bench %d\r\n\r\n%s", i, body)
		if _, err := f.st.Append(context.Background(), f.a.ID, inbox.ID, strings.NewReader(msg), 0, nil, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(body) + 40))
}
