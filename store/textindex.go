package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/internal/searchtext"
)

// The text index (migration 14) holds, per message content, the text that
// SEARCH's string keys match, in the form the scan (searchscan.go) matches it:
// decoded and case-folded by the same code. A search whose strings the
// index can answer exactly (indexable) is one query over the indexed
// messages plus the scan of those not indexed yet or cut at the cap.

// Caps of the indexed text of one message, in bytes of folded UTF-8. A
// message whose text is longer is indexed up to the cap and marked
// truncated: search scans it in full (so nothing is missed, it is only
// slower). The body cap keeps each row well under pg_trgm's practical
// limits (and a tsvector's 1 MB) and the GIN index small.
const (
	textIndexMaxHeader = 64 << 10
	textIndexMaxBody   = 256 << 10
)

// textIndexBatch is how many contents one IndexText transaction indexes.
const textIndexBatch = 200

// IndexText indexes up to limit contents waiting in the queue, in one
// transaction, and returns how many it indexed. Rows another process is
// indexing are skipped, so every process may run it.
func (s *Store) IndexText(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		limit = textIndexBatch
	}
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT m.id, m.size, m.header, m.structure,
				CASE WHEN m.size <= $2 THEN (SELECT c.data FROM message_chunks c WHERE c.message_id = m.id AND c.seq = 0) END
			FROM messages m WHERE m.id IN (
				SELECT message_id FROM text_index_queue ORDER BY message_id LIMIT $1 FOR UPDATE SKIP LOCKED)`,
			limit, ChunkSize)
		if err != nil {
			return err
		}
		var batch []*searchRow
		for rows.Next() {
			r := &searchRow{}
			if err := rows.Scan(&r.messageID, &r.size, &r.header, &r.structure, &r.small); err != nil {
				rows.Close()
				return err
			}
			batch = append(batch, r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		ids := make([]int64, len(batch))
		headers, addrs, bodies := make([]string, len(batch)), make([]string, len(batch)), make([]string, len(batch))
		truncated := make([]bool, len(batch))
		for i, r := range batch {
			ids[i] = r.messageID
			t, err := s.messageText(ctx, r)
			if err != nil {
				return err
			}
			headers[i], addrs[i], bodies[i], truncated[i] = t.header, t.addresses, t.body, t.truncated
		}
		if _, err := tx.Exec(ctx, `INSERT INTO message_text (message_id, header, addresses, body, truncated)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::boolean[])
			ON CONFLICT (message_id) DO NOTHING`, ids, headers, addrs, bodies, truncated); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM text_index_queue WHERE message_id = ANY($1)`, ids); err != nil {
			return err
		}
		n = len(batch)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("index text: %w", err)
	}
	return n, nil
}

// RunTextIndexer indexes queued contents until ctx ends: batch after batch
// while there is work, then every interval. Errors are logged and retried
// at the next interval.
func (s *Store) RunTextIndexer(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			n, err := s.IndexText(ctx, textIndexBatch)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("text indexer", "err", err)
				}
				break
			}
			if n < textIndexBatch {
				break
			}
		}
		t.Reset(interval)
	}
}

// TextIndexPending returns how many message contents wait for the indexer.
func (s *Store) TextIndexPending(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM text_index_queue`).Scan(&n); err != nil {
		return 0, fmt.Errorf("text index pending: %w", err)
	}
	return n, nil
}

// indexedText is one message_text row.
type indexedText struct {
	header, addresses, body string
	truncated               bool
}

// messageText extracts the indexed text of a message: its header fields
// as the scan's TEXT and HEADER keys see them, its address fields as FROM,
// TO, CC and BCC see them, and its parts as BODY sees them.
func (s *Store) messageText(ctx context.Context, r *searchRow) (*indexedText, error) {
	t := &indexedText{}
	var hb, ab []byte
	fields := searchtext.ParseHeader(r.header)
	for i := range fields {
		f := &fields[i]
		line := appendIndexLine(appendIndexLine(append(hb, '\n'), f.Name), ": ")
		hb = appendIndexLine(line, f.Value())
		if isAddressField(f.Name) {
			line := appendIndexLine(appendIndexLine(append(ab, '\n'), f.Name), ": ")
			ab = appendIndexLine(line, f.Addresses())
		}
	}
	if len(hb) > textIndexMaxHeader || len(ab) > textIndexMaxHeader {
		hb, ab, t.truncated = cutRunes(hb, textIndexMaxHeader), cutRunes(ab, textIndexMaxHeader), true
	}
	t.header, t.addresses = string(hb), string(ab)
	var msg mimeindex.Message
	if err := json.Unmarshal(r.structure, &msg); err != nil {
		// Indexed as cut: search scans it (and reports the error), and
		// the indexer does not stop at it.
		s.log.Warn("text indexer: unreadable structure", "message_id", r.messageID, "err", err)
		t.body, t.truncated = "", true
		return t, nil
	}
	c := &textCollector{max: textIndexMaxBody}
	if msg.Root != nil {
		if err := s.walkText(ctx, r, msg.Root, c); err != nil {
			return nil, err
		}
	}
	t.body = string(c.buf)
	t.truncated = t.truncated || c.cut
	return t, nil
}

// textCollector gathers the folded text of every part for the index,
// parts separated by a line feed, up to max bytes. It is a
// searchtext.Sink.
type textCollector struct {
	buf     []byte
	max     int
	cut     bool
	parts   int
	pending []byte // an incomplete UTF-8 sequence at the end of the last write
}

func (c *textCollector) Done() bool { return c.cut }

func (c *textCollector) StartPart() {
	if c.parts > 0 {
		c.add([]byte{'\n'})
	}
	c.parts++
	c.pending = c.pending[:0]
}

func (c *textCollector) EndPart() {
	if len(c.pending) > 0 {
		c.add(c.pending)
		c.pending = c.pending[:0]
	}
}

func (c *textCollector) Write(p []byte) (int, error) {
	if c.cut {
		return len(p), searchtext.ErrDone
	}
	data := append(c.pending, p...)
	cut := searchtext.IncompleteTail(data)
	c.pending = append(c.pending[:0:0], data[cut:]...)
	c.add(data[:cut])
	if c.cut {
		return len(p), searchtext.ErrDone
	}
	return len(p), nil
}

// add appends src folded, up to the cap.
func (c *textCollector) add(src []byte) {
	if c.cut {
		return
	}
	c.buf = appendIndexText(c.buf, src, true)
	if len(c.buf) > c.max {
		c.buf = cutRunes(c.buf, c.max)
		c.cut = true
	}
}

// appendIndexText appends src case-folded as the scan folds it, with what
// PostgreSQL text cannot hold (NUL, bytes that are not UTF-8) replaced by
// U+FFFD, and unless keepLines also CR and LF (so that every header field
// is one line). A search string holding any of these is never looked up in
// the index (textIndexable), so the replacement changes no result.
func appendIndexText(dst, src []byte, keepLines bool) []byte {
	start := len(dst)
	dst = searchtext.AppendFold(dst, src)
	clean := true
	for _, c := range dst[start:] {
		if c == 0 || (!keepLines && (c == '\r' || c == '\n')) {
			clean = false
			break
		}
	}
	if clean && utf8.Valid(dst[start:]) {
		return dst
	}
	folded := append([]byte(nil), dst[start:]...)
	dst = dst[:start]
	for i := 0; i < len(folded); {
		r, size := utf8.DecodeRune(folded[i:])
		if r == 0 || r == utf8.RuneError && size <= 1 || !keepLines && (r == '\r' || r == '\n') {
			r = utf8.RuneError
		}
		dst = utf8.AppendRune(dst, r)
		i += size
	}
	return dst
}

// appendIndexLine appends s as part of one header line of the index.
func appendIndexLine(dst []byte, s string) []byte {
	return appendIndexText(dst, []byte(s), false)
}

// cutRunes shortens b to at most n bytes without splitting a character.
func cutRunes(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// textIndexable reports whether the index answers every string key of c
// (and of its NOT and OR operands) exactly: no string holding what the
// index replaces, and no header name holding a colon.
func textIndexable(c *SearchCriteria) bool {
	for _, l := range [][]HeaderMatch{c.Header, c.RawHeader} {
		for _, h := range l {
			if !indexableString(h.Value) || !indexableString(h.Key) || strings.Contains(h.Key, ":") {
				return false
			}
		}
	}
	for _, l := range [][]string{c.Body, c.Text} {
		for _, s := range l {
			if !indexableString(s) {
				return false
			}
		}
	}
	for i := range c.Not {
		if !textIndexable(&c.Not[i]) {
			return false
		}
	}
	for i := range c.Or {
		if !textIndexable(&c.Or[i][0]) || !textIndexable(&c.Or[i][1]) {
			return false
		}
	}
	return true
}

func indexableString(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsAny(s, "\x00\r\n\uFFFD")
}

// textConds returns the conditions of c's own string keys over
// message_text mt, exact for a message indexed in full.
func (b *sqlBuilder) textConds(c *SearchCriteria) []string {
	var parts []string
	// The narrowing already decided the BODY and TEXT keys with trigrams
	// of the criteria it was made for: their rows are the hits.
	decided := c == b.narrowed
	for i, l := range [][]HeaderMatch{c.Header, c.RawHeader} {
		for _, h := range l {
			key := strings.ToLower(h.Key)
			col := "mt.header"
			if i == 0 && isAddressField(key) {
				col = "mt.addresses"
			}
			// The field's line: "\nname: value" with the value holding the
			// string; a value never holds a line feed.
			v := foldString(h.Value)
			re := `\n` + regexpQuote(string(appendIndexLine(nil, key))) + `: [^\n]*` + regexpQuote(v)
			// The index narrows by the value alone: the field name's
			// trigrams are in nearly every row and would only slow the
			// index scan down. The expression decides on those rows.
			cond := "(" + col + " || '') ~ " + b.arg(re)
			if hasTrigram(v, b.asciiWords) {
				cond = "(" + col + " LIKE " + b.arg(likeContains(v)) + " AND " + cond + ")"
			}
			parts = append(parts, cond)
		}
	}
	for _, s := range c.Body {
		if s = foldString(s); !decided || !hasTrigram(s, b.asciiWords) {
			parts = append(parts, b.trgm("mt.body", s)+" LIKE "+b.arg(likeContains(s)))
		}
	}
	for _, s := range c.Text {
		if s = foldString(s); !decided || !hasTrigram(s, b.asciiWords) {
			p := b.arg(likeContains(s))
			parts = append(parts, "("+b.trgm("mt.header", s)+" LIKE "+p+" OR "+b.trgm("mt.body", s)+" LIKE "+p+")")
		}
	}
	b.readsText = b.readsText || len(parts) > 0
	return parts
}

// narrow returns a condition over message_text mt alone that every
// message matching c satisfies, made of the string keys whose trigrams
// the indexes serve (BODY and TEXT exactly, header keys by their value
// anywhere in the header), or "" when c has none.
func (b *sqlBuilder) narrow(c *SearchCriteria) string {
	var parts []string
	for i, l := range [][]HeaderMatch{c.Header, c.RawHeader} {
		for _, h := range l {
			col := "mt.header"
			if i == 0 && isAddressField(strings.ToLower(h.Key)) {
				col = "mt.addresses"
			}
			if v := foldString(h.Value); hasTrigram(v, b.asciiWords) {
				parts = append(parts, col+" LIKE "+b.arg(likeContains(v)))
			}
		}
	}
	for _, s := range c.Body {
		if s = foldString(s); hasTrigram(s, b.asciiWords) {
			parts = append(parts, "mt.body LIKE "+b.arg(likeContains(s)))
		}
	}
	for _, s := range c.Text {
		if s = foldString(s); hasTrigram(s, b.asciiWords) {
			p := b.arg(likeContains(s))
			parts = append(parts, "(mt.header LIKE "+p+" OR mt.body LIKE "+p+")")
		}
	}
	for i := range c.Or {
		n := len(b.args)
		l, r := b.narrow(&c.Or[i][0]), b.narrow(&c.Or[i][1])
		if l == "" || r == "" {
			b.args = b.args[:n] // a parameter unused in the query is an error
			continue
		}
		parts = append(parts, "(("+l+") OR ("+r+"))")
	}
	return strings.Join(parts, " AND ")
}

// trgm returns the column to match needle against: the column itself,
// whose trigram index the planner may use, or, when the needle holds no
// trigram pg_trgm can extract, an expression no index serves. Without a
// trigram the index would be read whole and every row of every account
// checked; the expression makes the match read this mailbox's rows only.
func (b *sqlBuilder) trgm(col, needle string) string {
	if hasTrigram(needle, b.asciiWords) {
		return col
	}
	return "(" + col + " || '')"
}

// hasTrigram reports whether s has three word characters in a row, as
// pg_trgm counts them: letters and digits, only ASCII ones when the
// database's LC_CTYPE is C (pg_trgm then treats other characters as
// separators).
func hasTrigram(s string, asciiOnly bool) bool {
	run := 0
	for _, r := range s {
		word := r < utf8.RuneSelf && (isASCIILetter(byte(r)) || '0' <= r && r <= '9') ||
			!asciiOnly && r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r))
		if !word {
			run = 0
			continue
		}
		if run++; run == 3 {
			return true
		}
	}
	return false
}

const (
	ctypeC = iota + 1
	ctypeOther
)

// textCtype returns the class of the database's LC_CTYPE, read once.
func (s *Store) textCtype(ctx context.Context) (int32, error) {
	if c := s.ctype.Load(); c != 0 {
		return c, nil
	}
	var ctype string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('lc_ctype')`).Scan(&ctype); err != nil {
		return 0, err
	}
	c := int32(ctypeOther)
	if ctype == "C" || ctype == "POSIX" {
		c = ctypeC
	}
	if s.ctype.Swap(c) == 0 && c == ctypeC {
		s.log.Warn("the database's LC_CTYPE is C: searches for words without three ASCII letters or digits in a row read every message of the mailbox (README, \"What each part does\")", "lc_ctype", ctype)
	}
	return c, nil
}

// likeContains returns the LIKE pattern matching strings containing s.
func likeContains(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(s) + "%"
}

// regexpQuote quotes s for a PostgreSQL regular expression: every ASCII
// character that is not a letter or digit is escaped (a backslash before
// such a character always stands for the character itself).
func regexpQuote(s string) string {
	var sb strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf && !(isASCIILetter(byte(r)) || '0' <= r && r <= '9') {
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// searchIndexed answers a content search the index can answer exactly:
// one statement (one snapshot) returns the matching UIDs among the
// messages indexed in full and the candidate UIDs among the others (not
// indexed yet, or cut at the cap), which the scan then decides.
func (s *Store) searchIndexed(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria) ([]uint32, error) {
	found, err := s.searchIndexedIn(ctx, accountID, oneMailbox(mailboxID), c)
	return found[mailboxID], err
}

// searchIndexedIn is searchIndexed over the mailboxes of in: one statement
// for all, then the scan of each mailbox's candidates.
func (s *Store) searchIndexedIn(ctx context.Context, accountID int64, in mailboxesCond, c *SearchCriteria) (map[int64][]uint32, error) {
	ctype, err := s.textCtype(ctx)
	if err != nil {
		return nil, err
	}
	b := &sqlBuilder{args: []any{in.arg, accountID}, asciiWords: ctype == ctypeC}
	// The messages that may match among those indexed in full come first,
	// from the trigram indexes alone (all accounts' rows, before any join):
	// the planner is not left to prefer reading the mailbox's rows and
	// matching each, which it may with generic plans or stale statistics.
	cte, hits := "", "TRUE"
	if n := b.narrow(c); n != "" {
		cte = "WITH hits AS MATERIALIZED (SELECT mt.message_id FROM message_text mt WHERE NOT mt.truncated AND " + n + ") "
		hits = "mm.message_id IN (SELECT message_id FROM hits)"
		b.narrowed = c
	}
	exact := b.conds(c, modeIndexed)
	b.narrowed = nil
	// The hits are indexed in full already: the messages' text rows are
	// read again only when a condition left undecided needs them (each
	// such read is one more index probe per hit).
	indexed := `FROM mailbox_messages mm JOIN message_text mt ON mt.message_id = mm.message_id
		WHERE ` + in.cond + ` AND mm.account_id = $2 AND NOT mt.truncated AND `
	if cte != "" && !b.readsText {
		indexed = `FROM mailbox_messages mm WHERE ` + in.cond + ` AND mm.account_id = $2 AND `
	}
	over := b.conds(c, modeOver)
	rows, err := s.pool.Query(ctx, cte+`SELECT mm.mailbox_id, mm.uid, true `+indexed+hits+` AND `+exact+`
		UNION ALL
		SELECT mm.mailbox_id, mm.uid, false FROM mailbox_messages mm
		WHERE `+in.cond+` AND mm.account_id = $2 AND `+over+` AND mm.message_id IN (
			SELECT message_id FROM text_index_queue UNION ALL SELECT message_id FROM message_text WHERE truncated)`,
		b.args...)
	if err != nil {
		return nil, err
	}
	found := map[int64][]uint32{}
	scan := map[int64][]int64{}
	var mailboxID, uid int64
	var decided bool
	if _, err := pgx.ForEachRow(rows, []any{&mailboxID, &uid, &decided}, func() error {
		if decided {
			found[mailboxID] = append(found[mailboxID], uint32(uid))
		} else {
			scan[mailboxID] = append(scan[mailboxID], uid)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for id, uids := range scan {
		slices.Sort(uids)
		more, err := s.searchContent(ctx, accountID, id, c, uids)
		if err != nil {
			return nil, err
		}
		found[id] = append(found[id], more...)
	}
	for id, uids := range found {
		if len(uids) == 0 {
			delete(found, id)
			continue
		}
		slices.Sort(uids)
	}
	return found, nil
}
