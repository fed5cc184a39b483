package imapd

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime"
	"mime/quotedprintable"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

// Issue 13's search benchmarks: a mailbox of 100,000 varied messages
// (seven languages, plain, quoted-printable, base64 and Latin-1 bodies,
// HTML alternatives, attachments with file names, replies, a few long
// newsletters), text-indexed before the benchmarks run. Run with
//
//	go test -run '^$' -bench SearchText -benchtime 20x ./imapd/
//
// MAILSTACK_BENCH_MESSAGES sets another mailbox size (for a quick look).
// The setup logs how long the indexer took and what the same searches cost
// before it ran (the scan), and compares pg_trgm with a tsvector index on
// the same text.

// Planted words of known frequency, so every run searches alike: "budget"
// in about 1 % of bodies, "meeting" in about 10 %, "invoice" in about 2 %
// of subjects.
const (
	rareWordPct     = 1
	commonWordPct   = 10
	subjectWordPct  = 2
	searchBenchSeed = 13
)

type benchLang struct {
	weight  int
	latin1  bool     // may be sent as ISO-8859-1
	common  []string // frequent words
	syll    []string // syllables of the long tail
	sep     string   // between words
	names   []string
	vocab   []string // the long tail, made from syll
	subject []string
}

func benchLangs() []*benchLang {
	langs := []*benchLang{
		{weight: 40, sep: " ", common: strings.Fields("the of and to in is that it for you was with on as have be at this from we will please thanks regards your our can"),
			syll: strings.Fields("an ber con de der en er for in ing ion ket lo man ment mer ne o per pro re son ter ti tion ver"), names: []string{"Alice Smith", "Bob Jones", "Carol White"},
			subject: strings.Fields("update question report notes plan review draft")},
		{weight: 15, latin1: true, sep: " ", common: strings.Fields("der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden aus er hat dass sie nach"),
			syll: strings.Fields("ab an be ber chen de ein en er ge grü hei keit lich mä ne ö schaft ße ste stra te ung ü ver zu"), names: []string{"Jürgen Müller", "Anna Weiß", "Björn Schäfer"},
			subject: strings.Fields("Frage Bericht Änderung Termin Übersicht Grüße")},
		{weight: 12, latin1: true, sep: " ", common: strings.Fields("le de la et les des en un une du est que pour dans qui pas sur au avec ce il sont par plus être à été"),
			syll: strings.Fields("a ai ance é è ment on ou ré tion que ri ça pré con dé eau in al té ère"), names: []string{"Hélène Dubois", "François Martin", "Zoé Lefèvre"},
			subject: strings.Fields("réunion question rapport été prévu problème")},
		{weight: 10, latin1: true, sep: " ", common: strings.Fields("de la que el en y a los del se las por un para con no una su al es lo como más pero"),
			syll: strings.Fields("a ción de do es ga la mo ña ña pa que ra ri sa ta te ti to ve ñ ó í á"), names: []string{"José García", "María Núñez", "Íñigo López"},
			subject: strings.Fields("reunión pregunta informe año mañana")},
		{weight: 10, sep: " ", common: strings.Fields("и в не на я быть он с что а по это она этот к но они мы как из у который то за свой"),
			syll: strings.Fields("ва да до ен ка ко ли на не но ра ре ро ст та то ть ни ов ий ая ое"), names: []string{"Иван Петров", "Ольга Смирнова", "Сергей Иванов"},
			subject: strings.Fields("встреча вопрос отчёт план письмо")},
		{weight: 5, sep: " ", common: strings.Fields("και το να του η της ο με για τα που σε στο την από θα τον δεν είναι"),
			syll: strings.Fields("α ας ει η θε κα κο λα μα να νι ο ου πα ρα σε τα τη το ων ία ές"), names: []string{"Γιώργος Παπαδόπουλος", "Ελένη Νικολάου"},
			subject: strings.Fields("συνάντηση ερώτηση αναφορά")},
		{weight: 8, sep: "", common: strings.Fields("の に は を た が で て と し れ さ ある いる も する から な こと として"),
			syll: strings.Fields("会 議 報 告 予 定 確 認 資 料 送 付 東 京 大 阪 今 日 明 月"), names: []string{"山田 太郎", "佐藤 花子"},
			subject: strings.Fields("会議 報告 確認 資料")},
	}
	for li, l := range langs {
		r := rand.New(rand.NewPCG(uint64(li), searchBenchSeed))
		seen := map[string]bool{}
		for len(l.vocab) < 5000 {
			var sb strings.Builder
			for range 2 + r.IntN(3) {
				sb.WriteString(l.syll[r.IntN(len(l.syll))])
			}
			if w := sb.String(); !seen[w] {
				seen[w] = true
				l.vocab = append(l.vocab, w)
			}
		}
	}
	return langs
}

// searchBenchGen returns the generator of the varied messages.
func searchBenchGen() func(r *rand.Rand, i int, date time.Time) string {
	langs := benchLangs()
	total := 0
	for _, l := range langs {
		total += l.weight
	}
	return func(r *rand.Rand, i int, date time.Time) string {
		n := r.IntN(total)
		l := langs[0]
		for _, c := range langs {
			if n < c.weight {
				l = c
				break
			}
			n -= c.weight
		}
		return variedMessage(r, l, i, date)
	}
}

// variedText returns about size bytes of l's text in lines, with the
// planted words where the draws put them.
func variedText(r *rand.Rand, l *benchLang, size int, plant []string) string {
	zipf := rand.NewZipf(r, 1.2, 2, uint64(len(l.vocab)-1))
	var words []string
	n := 0
	for n < size {
		var w string
		if r.IntN(2) == 0 {
			w = l.common[r.IntN(len(l.common))]
		} else {
			w = l.vocab[zipf.Uint64()]
		}
		if r.IntN(12) == 0 && l.sep != "" {
			w = strings.ToUpper(w[:1]) + w[1:]
		}
		words = append(words, w)
		n += len(w) + len(l.sep)
	}
	for _, p := range plant {
		words[r.IntN(len(words))] = p
	}
	var sb strings.Builder
	line := 0
	for _, w := range words {
		if line+len(w) > 72 {
			sb.WriteString("\r\n")
			line = 0
		} else if line > 0 {
			sb.WriteString(l.sep)
			line += len(l.sep)
		}
		sb.WriteString(w)
		line += len(w)
	}
	sb.WriteString("\r\n")
	return sb.String()
}

func variedMessage(r *rand.Rand, l *benchLang, i int, date time.Time) string {
	var plant []string
	if r.IntN(100) < rareWordPct {
		plant = append(plant, "budget")
	}
	if r.IntN(100) < commonWordPct {
		plant = append(plant, "meeting")
	}
	subject := l.subject[r.IntN(len(l.subject))] + l.sep + l.vocab[r.IntN(200)]
	if r.IntN(100) < subjectWordPct {
		subject = "Invoice " + strconv.Itoa(10000+i)
	}
	if r.IntN(3) == 0 {
		subject = "Re: " + subject
	}
	name := l.names[r.IntN(len(l.names))]
	from := fmt.Sprintf("user%d@example%d.com", r.IntN(500), r.IntN(20))
	var h strings.Builder
	fmt.Fprintf(&h, "Return-Path: <%s>\r\nReceived: from mx.example%d.com by mail.example.org with ESMTPS id %08x\r\n\tfor <bench@example.org>; %s\r\n",
		from, r.IntN(20), r.Uint32(), date.Format(time.RFC1123Z))
	fmt.Fprintf(&h, "From: %s <%s>\r\nTo: bench@example.org\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d.%08x@example.com>\r\nMIME-Version: 1.0\r\n",
		mime.QEncoding.Encode("utf-8", name), from, mime.BEncoding.Encode("utf-8", subject), date.Format(time.RFC1123Z), i, r.Uint32())
	size := 300 + r.IntN(2500)
	if r.IntN(20) == 0 {
		size = 10000 + r.IntN(10000) // a newsletter
	}
	text := variedText(r, l, size, plant)
	if strings.HasPrefix(subject, "Re: ") {
		text += "\r\n> " + strings.ReplaceAll(strings.TrimSuffix(variedText(r, l, 400, nil), "\r\n"), "\r\n", "\r\n> ") + "\r\n"
	}
	boundary := fmt.Sprintf("=_%08x", r.Uint32())
	switch k := r.IntN(100); {
	case k < 55:
		h.WriteString(encodedTextPart(r, l, text))
	case k < 85:
		fmt.Fprintf(&h, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n--%s\r\n%s--%s\r\n", boundary, boundary, encodedTextPart(r, l, text), boundary)
		fmt.Fprintf(&h, "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n--%s--\r\n",
			qpEncode(htmlOf(text)), boundary)
	default:
		names := []string{"report-q3.pdf", "Rechnung März.pdf", "photo.jpg", "résumé.docx", "data.xlsx"}
		name := names[r.IntN(len(names))]
		blob := make([]byte, 2000+r.IntN(6000))
		for j := range blob {
			blob[j] = byte(r.Uint32())
		}
		fmt.Fprintf(&h, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n--%s\r\n%s--%s\r\n", boundary, boundary, encodedTextPart(r, l, text), boundary)
		fmt.Fprintf(&h, "Content-Type: application/octet-stream\r\nContent-Disposition: %s\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--%s--\r\n",
			mime.FormatMediaType("attachment", map[string]string{"filename": name}), wrap76(base64.StdEncoding.EncodeToString(blob)), boundary)
	}
	return h.String()
}

// encodedTextPart returns a text/plain part's header and body: UTF-8 as it
// is, quoted-printable or base64, or ISO-8859-1 where the language allows.
func encodedTextPart(r *rand.Rand, l *benchLang, text string) string {
	switch k := r.IntN(10); {
	case l.latin1 && k < 3:
		latin := make([]byte, 0, len(text))
		for _, c := range text {
			latin = append(latin, byte(c))
		}
		return "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qpEncode(string(latin)) + "\r\n"
	case k < 5:
		return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qpEncode(text) + "\r\n"
	case k < 6:
		return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + wrap76(base64.StdEncoding.EncodeToString([]byte(text))) + "\r\n"
	default:
		return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
	}
}

func htmlOf(text string) string {
	var sb strings.Builder
	sb.WriteString("<html><head><style>p{margin:0}</style></head><body>")
	for _, para := range strings.Split(strings.TrimSpace(text), "\r\n") {
		para = strings.NewReplacer("&", "&amp;", "<", "&lt;", "é", "&eacute;").Replace(para)
		sb.WriteString("<p>" + para + "</p>\r\n")
	}
	sb.WriteString("</body></html>")
	return sb.String()
}

func qpEncode(s string) string {
	var sb strings.Builder
	w := quotedprintable.NewWriter(&sb)
	w.Write([]byte(s)) //nolint:errcheck // a strings.Builder does not fail
	w.Close()
	return sb.String()
}

func wrap76(s string) string {
	var sb strings.Builder
	for len(s) > 76 {
		sb.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	sb.WriteString(s)
	return sb.String()
}

// searchBenchCases are the searches measured, with the share of the
// mailbox each is expected to find.
var searchBenchCases = []struct {
	name     string
	criteria imap.SearchCriteria
}{
	{"TextRareWord", imap.SearchCriteria{Text: []string{"budget"}}},
	{"BodyRareWord", imap.SearchCriteria{Body: []string{"budget"}}},
	{"HeaderSubject", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "invoice"}}}},
	{"BodyCommonWord", imap.SearchCriteria{Body: []string{"meeting"}}},
	{"BodySubstring", imap.SearchCriteria{Body: []string{"udge"}}},
	{"FromOrSubjectOrBody", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{
		{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "budget"}}},
		{Or: [][2]imap.SearchCriteria{{
			{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "budget"}}},
			{Body: []string{"budget"}},
		}}},
	}}}},
	{"TextNonASCII", imap.SearchCriteria{Text: []string{"встреча"}}},
	// The sent day is a column (message_keys.sent_day), read per row.
	{"SentSince", imap.SearchCriteria{SentSince: time.Date(2022, 10, 1, 0, 0, 0, 0, time.UTC)}},
	{"SentSinceAndBody", imap.SearchCriteria{SentSince: time.Date(2022, 10, 1, 0, 0, 0, 0, time.UTC), Body: []string{"budget"}}},
}

func searchBenchN(b *testing.B) int {
	if s := os.Getenv("MAILSTACK_BENCH_MESSAGES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	return benchMessages
}

// BenchmarkSearchText seeds and indexes the varied mailbox once, then runs
// each search as a sub-benchmark over IMAP.
func BenchmarkSearchText(b *testing.B) {
	var inboxID, accountID int64
	env := newBenchEnvWith(b, searchBenchN(b), searchBenchGen(), false, func(ctx context.Context, st *store.Store, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, `SELECT id, account_id FROM mailboxes WHERE name = 'INBOX'`).Scan(&inboxID, &accountID); err != nil {
			b.Fatal(err)
		}
		// What the scan costs, before anything is indexed (with the
		// statistics a loaded database has).
		if _, err := conn.Exec(ctx, "ANALYZE mailbox_messages, messages, text_index_queue"); err != nil {
			b.Fatal(err)
		}
		for _, tc := range searchBenchCases[2:3] { // the scan of TEXT and BODY takes minutes
			c := toStoreCriteria(&tc.criteria, nil, nil)
			start := time.Now()
			uids, err := st.Search(ctx, accountID, inboxID, c)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("scan (not indexed) %s: %d found in %v", tc.name, len(uids), time.Since(start).Round(time.Millisecond))
		}
		indexInParallel(b, ctx, st)
		if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) mailbox_messages, messages, message_text"); err != nil {
			b.Fatal(err)
		}
		compareTsvector(b, ctx, conn, inboxID)
	})
	for _, tc := range searchBenchCases {
		b.Run(tc.name, func(b *testing.B) {
			c := env.dial(b, "INBOX")
			var n int
			for b.Loop() {
				data, err := c.UIDSearch(&tc.criteria, nil).Wait()
				if err != nil {
					b.Fatal(err)
				}
				n = len(data.AllUIDs())
			}
			b.ReportMetric(float64(n), "found")
		})
	}
}

// indexInParallel runs the indexer in two goroutines (as two processes
// would) until the queue is empty, and logs its rate.
func indexInParallel(b *testing.B, ctx context.Context, st *store.Store) {
	start := time.Now()
	errc := make(chan error, 2)
	var total [2]int
	for w := range 2 {
		go func() {
			for {
				n, err := st.IndexText(ctx, 0)
				if err != nil || n == 0 {
					errc <- err
					return
				}
				total[w] += n
			}
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	d := time.Since(start)
	b.Logf("indexed %d messages in %v (%.0f/s)", total[0]+total[1], d.Round(time.Millisecond), float64(total[0]+total[1])/d.Seconds())
}

// compareTsvector measures, on the same text, a tsvector index next to the
// trigram ones: build time, size and the rare and common word lookups.
func compareTsvector(b *testing.B, ctx context.Context, conn *pgx.Conn, inboxID int64) {
	start := time.Now()
	if _, err := conn.Exec(ctx, `CREATE INDEX bench_body_tsv ON message_text USING gin (to_tsvector('simple', body))`); err != nil {
		b.Fatal(err)
	}
	b.Logf("tsvector index built in %v", time.Since(start).Round(time.Millisecond))
	for _, ix := range []string{"message_text_body", "message_text_header", "message_text_addresses", "bench_body_tsv", "message_text"} {
		var size string
		if err := conn.QueryRow(ctx, `SELECT pg_size_pretty(pg_total_relation_size($1::regclass))`, ix).Scan(&size); err != nil {
			b.Fatal(err)
		}
		b.Logf("size of %s: %s", ix, size)
	}
	if _, err := conn.Exec(ctx, "ANALYZE message_text"); err != nil {
		b.Fatal(err)
	}
	for _, word := range []string{"budget", "meeting", "udge"} {
		for _, q := range []struct{ kind, cond, arg string }{
			{"pg_trgm LIKE", "mt.body LIKE $2", "%" + word + "%"},
			{"tsvector @@", "to_tsvector('simple', mt.body) @@ plainto_tsquery('simple', $2)", word},
		} {
			var n int
			var best time.Duration
			for range 5 {
				start := time.Now()
				if err := conn.QueryRow(ctx, `SELECT count(*) FROM mailbox_messages mm JOIN message_text mt ON mt.message_id = mm.message_id
					WHERE mm.mailbox_id = $1 AND `+q.cond, inboxID, q.arg).Scan(&n); err != nil {
					b.Fatal(err)
				}
				if d := time.Since(start); best == 0 || d < best {
					best = d
				}
			}
			b.Logf("%s %q: %d found, best of 5 %v", q.kind, word, n, best.Round(100*time.Microsecond))
		}
	}
	if _, err := conn.Exec(ctx, `DROP INDEX bench_body_tsv`); err != nil {
		b.Fatal(err)
	}
}
