package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/searchtext"
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

// Search returns the UIDs of the messages of a mailbox matching c, in
// ascending order. Everything SQL can decide (UIDs, flags, keywords,
// internal dates, sizes, modseq, and NOT/OR of those) runs in one query;
// so do string keys, over the text index (textindex.go), for the messages
// indexed in full. Header and body predicates are evaluated in
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
	return len(c.Header) > 0 || len(c.RawHeader) > 0 || len(c.Body) > 0 || len(c.Text) > 0
}

// sqlMode says how conds treats content predicates, which SQL alone
// cannot decide: modeOver replaces them by TRUE (the result is a superset
// of the matches, used to narrow candidates), modeUnder by FALSE (a subset;
// needed under NOT), modeIndexed by conditions over the text index
// message_text mt (exact for a message indexed in full), modeExact asserts
// there are none.
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

// sentDaySQL is the calendar date SENTSINCE, SENTBEFORE and SENTON
// compare for mm: its Date: field's, in the field's own zone
// (message_keys.sent_day, migration 19), else its INTERNALDATE's in UTC.
const sentDaySQL = `coalesce((SELECT k.sent_day FROM message_keys k WHERE k.message_id = mm.message_id),
	(mm.internal_date AT TIME ZONE 'UTC')::date)`

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
	if !c.SentSince.IsZero() {
		parts = append(parts, sentDaySQL+" >= "+b.arg(utcDay(c.SentSince))+"::date")
	}
	if !c.SentBefore.IsZero() {
		parts = append(parts, sentDaySQL+" < "+b.arg(utcDay(c.SentBefore))+"::date")
	}
	if !c.SentOn.IsZero() {
		parts = append(parts, sentDaySQL+" = "+b.arg(utcDay(c.SentOn))+"::date")
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

// foldString case-folds s as the scan and the index fold text.
func foldString(s string) string { return searchtext.Fold(s) }

// isAddressField reports whether the FROM, TO, CC or BCC search key names
// the (lower-case) field.
func isAddressField(name string) bool { return searchtext.IsAddressField(name) }

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
