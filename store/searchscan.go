package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/internal/searchtext"
)

// The scan: criteria the SQL planner (search.go) cannot decide alone are
// evaluated in Go on the candidate rows, page by page, bodies streamed
// through searchtext with bounded memory.

// searchPageSize is how many candidate rows are read per query when
// predicates have to be evaluated in Go: memory stays bounded by one page
// no matter how large the mailbox.
const searchPageSize = 256

// searchInlineBody is the message size up to which the body is read along
// with the candidate row (one round trip per page instead of one per
// message); larger bodies are streamed chunk by chunk.
const searchInlineBody = 16 << 10

// searchPlan is the Go-side evaluation of a criterion that has content
// predicates: col is the index of a selected boolean column holding the
// SQL-decidable part (-1: none).
type searchPlan struct {
	col        int
	header     []headerNeedle
	body, text []string // lowered
	not        []*searchPlan
	or         [][2]*searchPlan
}

// planner builds plans and the boolean columns they refer to.
type planner struct {
	b    *sqlBuilder
	cols []string
	// every needle anywhere in the tree, for one pass over each body
	bodyNeedles, textNeedles []string
	needHeader, needBody     bool
}

func (p *planner) plan(c *SearchCriteria) *searchPlan {
	sp := &searchPlan{col: -1}
	if !hasContent(c) {
		sp.col = p.col(p.b.conds(c, modeExact))
		return sp
	}
	var sqlParts []string
	sqlParts = append(sqlParts, p.b.sqlOnlyConds(c)...)
	for i := range c.Not {
		if !hasContent(&c.Not[i]) {
			sqlParts = append(sqlParts, "NOT ("+p.b.conds(&c.Not[i], modeExact)+")")
		} else {
			sp.not = append(sp.not, p.plan(&c.Not[i]))
		}
	}
	for i := range c.Or {
		l, r := &c.Or[i][0], &c.Or[i][1]
		if !hasContent(l) && !hasContent(r) {
			sqlParts = append(sqlParts, "(("+p.b.conds(l, modeExact)+") OR ("+p.b.conds(r, modeExact)+"))")
		} else {
			sp.or = append(sp.or, [2]*searchPlan{p.plan(l), p.plan(r)})
		}
	}
	if len(sqlParts) > 0 {
		sp.col = p.col(strings.Join(sqlParts, " AND "))
	}
	for i, l := range [][]HeaderMatch{c.Header, c.RawHeader} {
		for _, h := range l {
			key := strings.ToLower(h.Key)
			sp.header = append(sp.header, headerNeedle{
				key: key, value: foldString(h.Value), addresses: i == 0 && isAddressField(key)})
			p.needHeader = true
		}
	}
	for _, s := range c.Body {
		s = foldString(s)
		sp.body = append(sp.body, s)
		p.bodyNeedles = appendUnique(p.bodyNeedles, s)
		p.needBody = true
	}
	for _, s := range c.Text {
		s = foldString(s)
		sp.text = append(sp.text, s)
		p.textNeedles = appendUnique(p.textNeedles, s)
		p.needBody, p.needHeader = true, true
	}
	return sp
}

// headerNeedle is a header search key with its field name lower-cased and
// value case-folded.
type headerNeedle struct {
	key, value string
	addresses  bool // match the normalized address list, not the raw value
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func (p *planner) col(expr string) int {
	p.cols = append(p.cols, expr)
	return len(p.cols) - 1
}

// searchRow is one candidate message.
type searchRow struct {
	uid       int64
	messageID int64
	size      int64
	header    []byte
	structure []byte
	small     []byte // the whole message if small, else nil
	cols      []bool

	// lazily computed
	fields     []searchtext.Field
	fieldsDone bool
	foundBody  map[string]bool
	foundText  map[string]bool
	scanned    bool
}

// searchContent evaluates c on the messages of the mailbox (only those
// with the UIDs in only, ascending, if it is not nil), page by page.
func (s *Store) searchContent(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria, only []int64) ([]uint32, error) {
	// $1 mailbox, $2 account, $3 last UID of the previous page.
	b := &sqlBuilder{args: []any{mailboxID, accountID, int64(0)}}
	where := b.conds(c, modeOver)
	onlyArg := -1
	if only != nil {
		// A page's UIDs at a time: the array stays one page long.
		where += " AND mm.uid = ANY(" + b.arg([]int64(nil)) + "::bigint[])"
		onlyArg = len(b.args) - 1
	}
	pl := &planner{b: b}
	root := pl.plan(c)

	cols := []string{"mm.uid", "mm.message_id", "mm.size", "NULL::bytea", "NULL::jsonb", "NULL::bytea"}
	if pl.needHeader {
		cols[3] = "m.header"
	}
	if pl.needBody {
		cols[4] = "m.structure"
		cols[5] = "CASE WHEN m.size <= " + strconv.Itoa(searchInlineBody) +
			" THEN (SELECT c.data FROM message_chunks c WHERE c.message_id = m.id AND c.seq = 0) END"
	}
	for _, e := range pl.cols {
		cols = append(cols, "("+e+")")
	}
	query := `SELECT ` + strings.Join(cols, ", ") + ` FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id
		WHERE mm.mailbox_id = $1 AND mm.account_id = $2 AND mm.uid > $3 AND ` + where +
		` ORDER BY mm.uid LIMIT ` + strconv.Itoa(searchPageSize)

	ev := &contentEval{s: s, ctx: ctx, pl: pl}
	var out []uint32
	page := make([]*searchRow, 0, searchPageSize)
	for {
		page = page[:0]
		if onlyArg >= 0 {
			n := min(len(only), searchPageSize)
			b.args[onlyArg], only = only[:n], only[n:]
		}
		rows, err := s.pool.Query(ctx, query, b.args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			r := &searchRow{cols: make([]bool, len(pl.cols))}
			dest := []any{&r.uid, &r.messageID, &r.size, &r.header, &r.structure, &r.small}
			for i := range r.cols {
				dest = append(dest, &r.cols[i])
			}
			if err := rows.Scan(dest...); err != nil {
				rows.Close()
				return nil, err
			}
			page = append(page, r)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		// The connection is back in the pool: body reads below use their
		// own short queries.
		for _, r := range page {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			ok, err := ev.eval(root, r)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, uint32(r.uid))
			}
		}
		if onlyArg >= 0 && len(only) == 0 || onlyArg < 0 && len(page) < searchPageSize {
			return out, nil
		}
		if len(page) > 0 {
			b.args[2] = page[len(page)-1].uid
		}
	}
}

type contentEval struct {
	s   *Store
	ctx context.Context
	pl  *planner
}

func (e *contentEval) eval(p *searchPlan, r *searchRow) (bool, error) {
	if p.col >= 0 && !r.cols[p.col] {
		return false, nil
	}
	for _, h := range p.header {
		if !r.headerMatches(h) {
			return false, nil
		}
	}
	for _, n := range p.not {
		ok, err := e.eval(n, r)
		if err != nil || ok {
			return false, err
		}
	}
	for _, pair := range p.or {
		ok, err := e.eval(pair[0], r)
		if err != nil {
			return false, err
		}
		if !ok {
			if ok, err = e.eval(pair[1], r); err != nil || !ok {
				return false, err
			}
		}
	}
	if len(p.body) > 0 || len(p.text) > 0 {
		if err := e.scan(r); err != nil {
			return false, err
		}
		for _, s := range p.body {
			if !r.foundBody[s] {
				return false, nil
			}
		}
		for _, s := range p.text {
			if !r.foundText[s] {
				return false, nil
			}
		}
	}
	return true, nil
}

// message decodes the stored structure.
func (r *searchRow) message() (*mimeindex.Message, error) {
	var msg mimeindex.Message
	if err := json.Unmarshal(r.structure, &msg); err != nil {
		return nil, fmt.Errorf("decode structure of message %d: %w", r.messageID, err)
	}
	return &msg, nil
}

func (r *searchRow) headerFields() []searchtext.Field {
	if !r.fieldsDone {
		r.fields = searchtext.ParseHeader(r.header)
		r.fieldsDone = true
	}
	return r.fields
}

// headerMatches reports whether one of the fields named h.key matches.
// Like Dovecot, each occurrence of a repeated field is tried on its own.
func (r *searchRow) headerMatches(h headerNeedle) bool {
	fields := r.headerFields()
	for i := range fields {
		f := &fields[i]
		if f.Name != h.key {
			continue
		}
		if h.value == "" {
			return true
		}
		v := f.Value()
		if h.addresses {
			v = f.Addresses()
		}
		if strings.Contains(v, h.value) {
			return true
		}
	}
	return false
}

// scan looks for every body and text needle of the search in the
// message once, recording which were found.
func (e *contentEval) scan(r *searchRow) error {
	if r.scanned {
		return nil
	}
	r.scanned = true
	r.foundBody = map[string]bool{}
	r.foundText = map[string]bool{}
	var needles []string
	needles = append(needles, e.pl.bodyNeedles...)
	for _, s := range e.pl.textNeedles {
		// TEXT covers the header: "Name: value" lines, unfolded and decoded.
		fields := r.headerFields()
		for i := range fields {
			if f := &fields[i]; strings.Contains(f.Name+": "+f.Value(), s) {
				r.foundText[s] = true
				break
			}
		}
		if !r.foundText[s] {
			needles = appendUnique(needles, s)
		}
	}
	if len(needles) == 0 {
		return nil
	}
	m := searchtext.NewMatcher(needles)
	if !m.Done() {
		msg, err := r.message()
		if err != nil {
			return err
		}
		if msg.Root != nil {
			if err := e.s.walkText(e.ctx, r, msg.Root, m); err != nil {
				return err
			}
		}
	}
	for i, s := range needles {
		if m.Found(i) {
			if slices.Contains(e.pl.bodyNeedles, s) {
				r.foundBody[s] = true
			}
			r.foundText[s] = true
		}
	}
	return nil
}

// walkText writes the searchable text of the message under p to sink
// (searchtext.Walk), reading the message's bytes from r.small when they
// are there, else from the store a chunk at a time. The scan and the text
// index both read messages through it, so they agree on what a message
// says.
func (s *Store) walkText(ctx context.Context, r *searchRow, p *mimeindex.Part, sink searchtext.Sink) error {
	return searchtext.Walk(p, r.size, func(start, end int64) io.Reader {
		if r.small != nil && end <= int64(len(r.small)) {
			return bytes.NewReader(r.small[start:end])
		}
		return &bodyReader{ctx: ctx, s: s, id: r.messageID, off: start, end: end}
	}, sink)
}
