package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/mimeindex"
)

// SearchCriteria is a store-level search (IMAP SEARCH without the protocol
// types). All fields set are AND-ed; zero values mean "no restriction".
//
// Dates are date-only, as RFC 9051 says: Since, Before and On compare the
// INTERNALDATE's calendar date in UTC (the server's time zone); SentSince,
// SentBefore and SentOn compare the calendar date written in the Date:
// header, in the header's own zone (time and zone disregarded). A message
// whose Date: header is missing or unparsable is compared by its
// INTERNALDATE instead (as Dovecot does). Only the year, month and day of
// the given times are used.
//
// String matches (Header, RawHeader, Body, Text) are case-insensitive
// substring matches of UTF-8 strings.
type SearchCriteria struct {
	// UIDs restricts the result to UIDs in every one of these sets (each
	// set is a union of ranges; an empty set matches nothing). A Stop of 0
	// means the largest possible UID, as in UIDRange.
	UIDs [][]UIDRange

	Since, Before, On             time.Time // INTERNALDATE
	SentSince, SentBefore, SentOn time.Time // Date: header

	Larger, Smaller int64 // RFC822.SIZE > Larger, < Smaller (0: unset)

	// Flag and NotFlag hold system flags (\Seen, …, case-insensitive) and
	// keywords (case-insensitive). \Recent is never set (IMAP4rev2), so
	// Flag \Recent matches nothing and NotFlag \Recent everything.
	Flag, NotFlag []string

	// Header matches unfolded, RFC 2047-decoded values of top-level
	// header fields; an empty Value matches any message having the field.
	// The From, To, Cc and Bcc fields are matched as IMAP's FROM, TO, CC
	// and BCC keys are in Dovecot: against their address list parsed and
	// written in a normalized form (mimeindex.FormatAddressList), so that
	// "user@host" finds "<user (comment) @ host>" and "Name" finds
	// "user@host (Name)".
	Header []HeaderMatch
	// RawHeader is Header without the address normalization, for IMAP's
	// HEADER key, which Dovecot matches against the value as written
	// whatever the field.
	RawHeader []HeaderMatch
	// Body matches the decoded text of text/* parts (transfer encoding
	// and charset decoded); Text matches the header as well.
	Body, Text []string

	Not []SearchCriteria    // each must not match
	Or  [][2]SearchCriteria // one of each pair must match

	ModSeq uint64 // MODSEQ >= ModSeq (0: unset)
}

// HeaderMatch is a search key naming a header field: HEADER, or FROM, TO,
// CC, BCC, SUBJECT with their field name as Key.
type HeaderMatch struct {
	Key, Value string
}

// searchPageSize is how many candidate rows are read per query when
// predicates have to be evaluated in Go: memory stays bounded by one page
// no matter how large the mailbox.
const searchPageSize = 256

// searchInlineBody is the message size up to which the body is read along
// with the candidate row (one round trip per page instead of one per
// message); larger bodies are streamed chunk by chunk.
const searchInlineBody = 16 << 10

// Search returns the UIDs of the messages of a mailbox matching c, in
// ascending order. Everything SQL can decide (UIDs, flags, keywords,
// internal dates, sizes, modseq, and NOT/OR of those) runs in one query;
// so do string keys, over the text index (textindex.go), for the messages
// indexed in full. Header, sent-date and body predicates are evaluated in
// Go (the scan) on the other messages that pass the SQL part, or on every
// such message when a key is one the index cannot answer, page by page,
// streaming bodies with bounded memory.
func (s *Store) Search(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria) ([]uint32, error) {
	if c == nil {
		c = &SearchCriteria{}
	}
	if err := s.checkSearchMailbox(ctx, accountID, mailboxID); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var out []uint32
	var err error
	if !hasContent(c) {
		out, err = s.searchSQL(ctx, accountID, mailboxID, c)
	} else {
		out, err = s.searchByContent(ctx, accountID, mailboxID, c)
	}
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	return out, nil
}

// searchByContent answers criteria with content keys: from the text index
// where it can, else by the scan.
func (s *Store) searchByContent(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria) ([]uint32, error) {
	if textIndexable(c) {
		return s.searchIndexed(ctx, accountID, mailboxID, c)
	}
	return s.searchContent(ctx, accountID, mailboxID, c, nil)
}

func (s *Store) checkSearchMailbox(ctx context.Context, accountID, mailboxID int64) error {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT true FROM mailboxes WHERE id = $1 AND account_id = $2`,
		mailboxID, accountID).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	}
	return err
}

// searchSQL answers criteria without content predicates with one query.
func (s *Store) searchSQL(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria) ([]uint32, error) {
	found, err := s.searchSQLIn(ctx, accountID, oneMailbox(mailboxID), c)
	return found[mailboxID], err
}

// mailboxesCond names the mailboxes a search reads: the SQL condition on
// mm.mailbox_id, with $1 the parameter it takes.
type mailboxesCond struct {
	cond string
	arg  any
}

func oneMailbox(id int64) mailboxesCond { return mailboxesCond{"mm.mailbox_id = $1", id} }

func manyMailboxes(ids []int64) mailboxesCond {
	return mailboxesCond{"mm.mailbox_id = ANY($1::bigint[])", ids}
}

// searchSQLIn is searchSQL over the mailboxes of in: one query for all,
// the UIDs ascending per mailbox.
func (s *Store) searchSQLIn(ctx context.Context, accountID int64, in mailboxesCond, c *SearchCriteria) (map[int64][]uint32, error) {
	b := &sqlBuilder{args: []any{in.arg, accountID}}
	where := b.conds(c, modeExact)
	rows, err := s.pool.Query(ctx, `SELECT mm.mailbox_id, mm.uid FROM mailbox_messages mm
		WHERE `+in.cond+` AND mm.account_id = $2 AND `+where+` ORDER BY mm.mailbox_id, mm.uid`, b.args...)
	if err != nil {
		return nil, err
	}
	found := map[int64][]uint32{}
	var mailboxID, uid int64
	_, err = pgx.ForEachRow(rows, []any{&mailboxID, &uid}, func() error {
		found[mailboxID] = append(found[mailboxID], uint32(uid))
		return nil
	})
	return found, err
}

// SearchMailboxes is Search over several mailboxes of the account with the
// same criteria (IMAP's MULTISEARCH): the UIDs matching in each, ascending,
// keyed by mailbox id; a mailbox without a match, or not the account's, has
// no entry. What SQL and the text index decide is one statement for all the
// mailboxes, so the trigram hits are read once, not once per mailbox;
// messages left to the scan are scanned mailbox by mailbox.
func (s *Store) SearchMailboxes(ctx context.Context, accountID int64, mailboxIDs []int64, c *SearchCriteria) (map[int64][]uint32, error) {
	if c == nil {
		c = &SearchCriteria{}
	}
	var found map[int64][]uint32
	var err error
	switch {
	case len(mailboxIDs) == 0:
		return map[int64][]uint32{}, nil
	case !hasContent(c):
		found, err = s.searchSQLIn(ctx, accountID, manyMailboxes(mailboxIDs), c)
	case textIndexable(c):
		found, err = s.searchIndexedIn(ctx, accountID, manyMailboxes(mailboxIDs), c)
	default:
		found = map[int64][]uint32{}
		for _, id := range mailboxIDs {
			var uids []uint32
			if uids, err = s.searchContent(ctx, accountID, id, c, nil); err != nil {
				break
			}
			if len(uids) > 0 {
				found[id] = uids
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("search mailboxes: %w", err)
	}
	return found, nil
}

// hasContent reports whether c (or a nested criterion) needs Go-side
// evaluation.
func hasContent(c *SearchCriteria) bool {
	if ownContent(c) {
		return true
	}
	for i := range c.Not {
		if hasContent(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if hasContent(&c.Or[i][0]) || hasContent(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

func ownContent(c *SearchCriteria) bool {
	return !c.SentSince.IsZero() || !c.SentBefore.IsZero() || !c.SentOn.IsZero() ||
		len(c.Header) > 0 || len(c.RawHeader) > 0 || len(c.Body) > 0 || len(c.Text) > 0
}

// sqlMode says how conds treats content predicates, which SQL alone
// cannot decide: modeOver replaces them by TRUE (the result is a superset
// of the matches, used to narrow candidates), modeUnder by FALSE (a subset;
// needed under NOT), modeIndexed by conditions over the text index
// message_text mt (exact for a message indexed in full; sent dates are not
// allowed), modeExact asserts there are none.
type sqlMode int

const (
	modeExact sqlMode = iota
	modeOver
	modeUnder
	modeIndexed
)

type sqlBuilder struct {
	args []any
	// asciiWords: pg_trgm sees only ASCII letters and digits as word
	// characters (the database's LC_CTYPE is C); see trgm.
	asciiWords bool
	// narrowed is the criteria whose indexed BODY and TEXT keys the hits
	// of searchIndexed have decided already.
	narrowed *SearchCriteria
	// readsText: a condition over message_text mt was written.
	readsText bool
}

func (b *sqlBuilder) arg(v any) string {
	b.args = append(b.args, v)
	return "$" + strconv.Itoa(len(b.args))
}

// utcDay returns midnight UTC of t's calendar date.
func utcDay(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// conds returns a SQL boolean expression over mailbox_messages mm for c.
// Only constants of this package are written into the SQL text; every
// value from the caller is a parameter. Flag bits are literals so that the
// planner can use the partial index on unseen messages.
func (b *sqlBuilder) conds(c *SearchCriteria, mode sqlMode) string {
	var parts []string
	if ownContent(c) && mode == modeUnder {
		return "FALSE"
	}
	parts = append(parts, b.sqlOnlyConds(c)...)
	if mode == modeIndexed {
		parts = append(parts, b.textConds(c)...)
	}
	for i := range c.Not {
		n := &c.Not[i]
		switch {
		case !hasContent(n):
			parts = append(parts, "NOT ("+b.conds(n, modeExact)+")")
		case mode == modeIndexed:
			parts = append(parts, "NOT ("+b.conds(n, modeIndexed)+")")
		case mode == modeOver:
			parts = append(parts, "NOT ("+b.conds(n, modeUnder)+")")
		case mode == modeUnder:
			parts = append(parts, "NOT ("+b.conds(n, modeOver)+")")
		default:
			panic("store: content criteria in exact SQL search")
		}
	}
	for i := range c.Or {
		l, r := &c.Or[i][0], &c.Or[i][1]
		lm, rm := mode, mode
		if !hasContent(l) {
			lm = modeExact
		}
		if !hasContent(r) {
			rm = modeExact
		}
		parts = append(parts, "(("+b.conds(l, lm)+") OR ("+b.conds(r, rm)+"))")
	}
	if len(parts) == 0 {
		return "TRUE"
	}
	return strings.Join(parts, " AND ")
}

// sqlOnlyConds returns the conditions of c's own fields that SQL decides.
func (b *sqlBuilder) sqlOnlyConds(c *SearchCriteria) []string {
	var parts []string
	for _, set := range c.UIDs {
		parts = append(parts, b.uidSet(set))
	}
	if !c.Since.IsZero() {
		parts = append(parts, "mm.internal_date >= "+b.arg(utcDay(c.Since)))
	}
	if !c.Before.IsZero() {
		parts = append(parts, "mm.internal_date < "+b.arg(utcDay(c.Before)))
	}
	if !c.On.IsZero() {
		d := utcDay(c.On)
		parts = append(parts, "mm.internal_date >= "+b.arg(d), "mm.internal_date < "+b.arg(d.AddDate(0, 0, 1)))
	}
	if c.Larger > 0 {
		parts = append(parts, "mm.size > "+b.arg(c.Larger))
	}
	if c.Smaller > 0 {
		parts = append(parts, "mm.size < "+b.arg(c.Smaller))
	}
	if c.ModSeq > 0 {
		parts = append(parts, "mm.modseq >= "+b.arg(int64(min(c.ModSeq, 1<<63-1))))
	}
	for _, f := range c.Flag {
		parts = append(parts, b.flag(f, true))
	}
	for _, f := range c.NotFlag {
		parts = append(parts, b.flag(f, false))
	}
	return parts
}

func (b *sqlBuilder) uidSet(set []UIDRange) string {
	if len(set) == 0 {
		return "FALSE"
	}
	lo, hi := normalizeRanges(set)
	bounds := "mm.uid BETWEEN " + b.arg(lo[0]) + " AND " + b.arg(hi[len(hi)-1])
	if len(lo) == 1 {
		return "(" + bounds + ")"
	}
	return "(" + bounds + " AND EXISTS (SELECT 1 FROM unnest(" + b.arg(lo) + "::bigint[], " + b.arg(hi) +
		"::bigint[]) r(lo, hi) WHERE mm.uid BETWEEN r.lo AND r.hi))"
}

func (b *sqlBuilder) flag(f string, set bool) string {
	if strings.HasPrefix(f, `\`) {
		for _, sf := range systemFlags {
			if strings.EqualFold(f, sf.name) {
				op := " <> 0"
				if !set {
					op = " = 0"
				}
				return "mm.flags & " + strconv.Itoa(sf.bit) + op
			}
		}
		// \Recent and unknown system flags are never set.
		if set {
			return "FALSE"
		}
		return "TRUE"
	}
	e := "EXISTS (SELECT 1 FROM unnest(mm.keywords) k WHERE lower(k) = lower(" + b.arg(f) + "::text))"
	if !set {
		e = "NOT " + e
	}
	return e
}

// searchPlan is the Go-side evaluation of a criterion that has content
// predicates: col is the index of a selected boolean column holding the
// SQL-decidable part (-1: none).
type searchPlan struct {
	col               int
	sentSince, sentOn int // civil dates as yyyymmdd; 0: unset
	sentBefore        int
	header            []headerNeedle
	body, text        []string // lowered
	not               []*searchPlan
	or                [][2]*searchPlan
}

// planner builds plans and the boolean columns they refer to.
type planner struct {
	b    *sqlBuilder
	cols []string
	// every needle anywhere in the tree, for one pass over each body
	bodyNeedles, textNeedles []string
	needHeader, needBody     bool
	needSentDate             bool
}

func civil(t time.Time) int {
	y, m, d := t.Date()
	return y*10000 + int(m)*100 + d
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
	if !c.SentSince.IsZero() {
		sp.sentSince = civil(c.SentSince)
	}
	if !c.SentBefore.IsZero() {
		sp.sentBefore = civil(c.SentBefore)
	}
	if !c.SentOn.IsZero() {
		sp.sentOn = civil(c.SentOn)
	}
	if sp.sentSince != 0 || sp.sentBefore != 0 || sp.sentOn != 0 {
		p.needSentDate = true
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

// isAddressField reports whether the FROM, TO, CC or BCC search key names
// the (lower-case) field.
func isAddressField(name string) bool {
	return name == "from" || name == "to" || name == "cc" || name == "bcc"
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
	uid          int64
	messageID    int64
	internalDate time.Time
	size         int64
	header       []byte
	structure    []byte
	dateHeader   *string
	small        []byte // the whole message if small, else nil
	cols         []bool

	// lazily computed
	fields     []headerField
	fieldsDone bool
	sentDate   int
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

	cols := []string{"mm.uid", "mm.message_id", "mm.internal_date", "mm.size", "NULL::bytea", "NULL::jsonb", "NULL::text", "NULL::bytea"}
	if pl.needHeader {
		cols[4] = "m.header"
	}
	if pl.needBody {
		cols[5] = "m.structure"
		cols[7] = "CASE WHEN m.size <= " + strconv.Itoa(searchInlineBody) +
			" THEN (SELECT c.data FROM message_chunks c WHERE c.message_id = m.id AND c.seq = 0) END"
	}
	if pl.needSentDate {
		cols[6] = "m.structure->'env'->>'date'"
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
			dest := []any{&r.uid, &r.messageID, &r.internalDate, &r.size, &r.header, &r.structure, &r.dateHeader, &r.small}
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
	if p.sentSince != 0 || p.sentBefore != 0 || p.sentOn != 0 {
		d := r.sentDay()
		if p.sentSince != 0 && d < p.sentSince || p.sentBefore != 0 && d >= p.sentBefore || p.sentOn != 0 && d != p.sentOn {
			return false, nil
		}
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

// sentDay returns the civil date of the Date: header (INTERNALDATE in UTC
// if it is missing or unparsable).
func (r *searchRow) sentDay() int {
	if r.sentDate != 0 {
		return r.sentDate
	}
	var t time.Time
	if r.dateHeader != nil {
		t = mimeindex.ParseDate(*r.dateHeader)
	}
	if t.IsZero() {
		t = r.internalDate.UTC()
	}
	r.sentDate = civil(t)
	return r.sentDate
}

func (r *searchRow) headerFields() []headerField {
	if !r.fieldsDone {
		r.fields = parseHeaderFields(r.header)
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
		if f.name != h.key {
			continue
		}
		if h.value == "" {
			return true
		}
		v := f.value()
		if h.addresses {
			v = f.addresses()
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
			if f := &fields[i]; strings.Contains(f.name+": "+f.value(), s) {
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
	m := newTextMatcher(needles)
	if !m.done() {
		var msg mimeindex.Message
		if err := json.Unmarshal(r.structure, &msg); err != nil {
			return fmt.Errorf("decode structure of message %d: %w", r.messageID, err)
		}
		if msg.Root != nil {
			if err := e.s.walkText(e.ctx, r, msg.Root, m); err != nil {
				return err
			}
		}
	}
	for i, s := range m.needles {
		if m.found[i] {
			if slices.Contains(e.pl.bodyNeedles, string(s)) {
				r.foundBody[string(s)] = true
			}
			r.foundText[string(s)] = true
		}
	}
	return nil
}

var errMatchDone = errors.New("all needles found")

// trackReader remembers a read error of the underlying store reader, to
// tell it apart from decoding errors.
type trackReader struct {
	r   io.Reader
	err error
}

func (t *trackReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// walkText writes the searchable text of every leaf part under p to
// sink, one part after another: an attachment's name (filename or name
// parameter, for any part that has one), and the body of text/* parts,
// transfer encoding and charset decoded, HTML reduced to text (htmlText).
// The scan and the text index both read messages through it, so they
// agree on what a message says.
func (s *Store) walkText(ctx context.Context, r *searchRow, p *mimeindex.Part, sink textSink) error {
	if sink.done() {
		return nil
	}
	if len(p.Children) > 0 {
		for _, c := range p.Children {
			if err := s.walkText(ctx, r, c, sink); err != nil {
				return err
			}
		}
		return nil
	}
	if name := partName(p); name != "" {
		sink.startPart()
		_, _ = io.WriteString(sink, name)
		sink.endPart()
	}
	if p.Type != "text" {
		return nil
	}
	start, end := min(max(p.BodyStart, 0), r.size), min(max(p.End, 0), r.size)
	if start >= end {
		return nil
	}
	src := &trackReader{}
	if r.small != nil && end <= int64(len(r.small)) {
		src.r = bytes.NewReader(r.small[start:end])
	} else {
		src.r = &bodyReader{ctx: ctx, s: s, id: r.messageID, off: start, end: end}
	}
	var text io.Reader = mimeindex.NewDecoder(p.Encoding, src)
	switch cs := strings.ToLower(p.Params["charset"]); cs {
	case "", "utf-8", "utf8", "us-ascii":
	default:
		if cr, err := charset.Reader(cs, text); err == nil {
			text = cr
		}
	}
	sink.startPart()
	var w io.Writer = sink
	var h *htmlText
	if p.Subtype == "html" {
		h = newHTMLText(sink)
		w = h
	}
	_, err := io.CopyBuffer(w, text, make([]byte, 32<<10))
	if src.err != nil {
		return src.err // the store could not be read
	}
	// Any other error is errMatchDone or a charset decoder failing on
	// malformed input: what was decoded so far has been searched, the
	// rest is skipped.
	if h != nil && err == nil {
		_ = h.Close()
	}
	sink.endPart()
	return nil
}

// partName returns the file name a part gives itself, decoded.
func partName(p *mimeindex.Part) string {
	name := p.DispositionParams["filename"]
	if name == "" {
		name = p.Params["name"]
	}
	if strings.Contains(name, "=?") {
		name = mimeindex.DecodeWords(name) // RFC 2047 in a parameter, as some clients write it
	}
	return name
}

// textMatcher finds case-folded needles in a stream of UTF-8 text written
// in arbitrary pieces (matches spanning pieces and chunk boundaries are
// found). It keeps only the last (longest needle - 1) bytes between
// writes.
type textMatcher struct {
	needles [][]byte
	found   []bool
	left    int
	keep    int
	window  []byte
	pending []byte // an incomplete UTF-8 sequence at the end of the last write
}

func newTextMatcher(needles []string) *textMatcher {
	m := &textMatcher{found: make([]bool, len(needles)), left: len(needles)}
	for i, s := range needles {
		m.needles = append(m.needles, []byte(s))
		if s == "" {
			m.found[i] = true
			m.left--
		}
		m.keep = max(m.keep, len(s)-1)
	}
	return m
}

func (m *textMatcher) done() bool { return m.left == 0 }

// startPart starts a new part: no match spans parts.
func (m *textMatcher) startPart() {
	m.window = m.window[:0]
	m.pending = m.pending[:0]
}

func (m *textMatcher) Write(p []byte) (int, error) {
	n := len(p)
	if m.done() {
		return n, errMatchDone
	}
	data := p
	if len(m.pending) > 0 {
		data = append(m.pending, p...)
	}
	cut := incompleteTail(data)
	tail := data[cut:]
	m.window = appendFolded(m.window, data[:cut])
	m.pending = append(m.pending[:0], tail...)
	m.search()
	if m.done() {
		return n, errMatchDone
	}
	return n, nil
}

// endPart ends a part.
func (m *textMatcher) endPart() {
	if len(m.pending) > 0 && !m.done() {
		m.window = append(m.window, m.pending...)
		m.pending = m.pending[:0]
		m.search()
	}
}

func (m *textMatcher) search() {
	for i, nd := range m.needles {
		if !m.found[i] && bytes.Contains(m.window, nd) {
			m.found[i] = true
			m.left--
		}
	}
	if len(m.window) > m.keep {
		m.window = append(m.window[:0], m.window[len(m.window)-m.keep:]...)
	}
}

// appendFolded appends src lower-cased to dst. Invalid UTF-8 bytes are
// kept as they are.
func appendFolded(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(src[i:])
		if r == utf8.RuneError && size <= 1 {
			dst = append(dst, c)
			i++
			continue
		}
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
		i += size
	}
	return dst
}

// foldString lower-cases s the way the matcher folds text.
func foldString(s string) string {
	return string(appendFolded(nil, []byte(s)))
}

// headerField is one top-level header field: name lower-cased, raw value
// unfolded; value() and addresses() decode and case-fold it on first use
// (most searches look at one or two fields of each message).
type headerField struct {
	name     string
	raw      []byte
	folded   string
	done     bool
	addrs    string
	addrDone bool
}

func (f *headerField) value() string {
	if !f.done {
		f.folded, f.done = foldString(mimeindex.DecodeWords(strings.TrimSpace(latin1Fallback(f.raw)))), true
	}
	return f.folded
}

// addresses returns the field as an address list in the normalized form
// that FROM, TO, CC and BCC match, decoded and case-folded. The parser is
// the one behind ENVELOPE, so a search finds what FETCH ENVELOPE shows.
func (f *headerField) addresses() string {
	if !f.addrDone {
		l := mimeindex.ParseAddressList(latin1Fallback(f.raw))
		f.addrs, f.addrDone = foldString(mimeindex.DecodeWords(mimeindex.FormatAddressList(l))), true
	}
	return f.addrs
}

// parseHeaderFields splits a raw header block into fields. It is lenient:
// lines without a colon are skipped, 8-bit bytes that are not UTF-8 are
// read as ISO-8859-1.
func parseHeaderFields(raw []byte) []headerField {
	var out []headerField
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // end of header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if n := len(out); n > 0 {
				out[n-1].raw = append(out[n-1].raw, line...) // unfold: drop only the line break
			}
			continue
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			continue
		}
		name := strings.ToLower(strings.TrimRight(string(line[:i]), " \t"))
		out = append(out, headerField{name: name, raw: slices.Clip(line[i+1:])})
	}
	return out
}

func latin1Fallback(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			sb.WriteRune(rune(b[i]))
			i++
			continue
		}
		sb.WriteRune(r)
		i += n
	}
	return sb.String()
}
