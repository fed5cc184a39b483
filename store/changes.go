package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Changes are what happened to a mailbox after some modseq.
type Changes struct {
	Mailbox  *Mailbox       // nil if the mailbox was deleted
	Updated  []MessageFlags // new or changed live messages, by UID
	Expunged []uint32       // UIDs expunged after the modseq, ascending
	// Truncated says that there were more changes than the read's limit.
	// ChangesSinceMany then returns none of them (Updated and Expunged
	// are nil): the reader must re-read them in pages (ChangesPage).
	// ChangesPage returns the first page and sets it when more follow.
	Truncated bool
}

// ChangeQuery asks for the changes to one mailbox after ModSeq.
type ChangeQuery struct {
	AccountID, MailboxID int64
	ModSeq               uint64
	// Limit, if positive, caps the rows read: at most Limit+1 updated
	// messages and Limit+1 expunged UIDs, so that a bulk change (a STORE
	// on 100,000 messages) costs each reader at most that; past Limit the
	// result is Truncated.
	Limit int
}

// ChangesSince reads every change to a mailbox after modseq, from one
// consistent snapshot, however many there are.
func (s *Store) ChangesSince(ctx context.Context, accountID, mailboxID int64, modseq uint64) (*Changes, error) {
	chs, err := s.ChangesSinceMany(ctx, []ChangeQuery{{AccountID: accountID, MailboxID: mailboxID, ModSeq: modseq}})
	if err != nil {
		return nil, err
	}
	return chs[0], nil
}

// ChangesSinceMany is ChangesSince for many mailboxes at once, each within
// its query's Limit (the change feed's catch-up and its resync after its
// LISTEN connection came back): three queries and one snapshot for all of
// them, whatever their number. The result is in the order of qs. Each
// query is scoped by its own account id.
func (s *Store) ChangesSinceMany(ctx context.Context, qs []ChangeQuery) ([]*Changes, error) {
	out := make([]*Changes, len(qs))
	if len(qs) == 0 {
		return out, nil
	}
	ids := make([]int64, len(qs))
	accs := make([]int64, len(qs))
	since := make([]int64, len(qs))
	// Rows to read per mailbox: Limit+1 tells a truncated read apart; 0
	// (SQL NULL below) reads all.
	lims := make([]int64, len(qs))
	at := make(map[int64]int, len(qs)) // mailbox id → index in qs
	for i, q := range qs {
		if _, dup := at[q.MailboxID]; dup {
			return nil, fmt.Errorf("%w: mailbox %d asked for twice", ErrInvalid, q.MailboxID)
		}
		ids[i], accs[i], since[i] = q.MailboxID, q.AccountID, int64(q.ModSeq)
		if q.Limit > 0 {
			lims[i] = int64(q.Limit) + 1
		}
		at[q.MailboxID] = i
		out[i] = &Changes{}
	}
	// over drops the rows of a read past its limit, as soon as it is.
	over := func(i, n int) bool {
		if lims[i] == 0 || int64(n) < lims[i] {
			return false
		}
		ch := out[i]
		ch.Updated, ch.Expunged, ch.Truncated = nil, nil, true
		return true
	}
	// One statement, so one snapshot and one round trip: the mailbox rows
	// (kind 0), then the updated messages (1) and expunged UIDs (2) of
	// each, by ascending UID. The query's own account id scopes every row
	// (invariant 4); the tombstones through their mailbox row. The inner
	// LIMITs need no order: a read within them has all the rows.
	rows, err := s.pool.Query(ctx, `WITH q AS MATERIALIZED (
			SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) q(id, acc, since, lim))
		SELECT 0 AS kind, `+changeMailboxColumns+` FROM q JOIN mailboxes m ON m.id = q.id AND m.account_id = q.acc
		UNION ALL
		SELECT 1, q.id, mm.uid, mm.flags, mm.keywords, mm.modseq, `+changeNoMailbox+`
		FROM q CROSS JOIN LATERAL (SELECT uid, flags, keywords, modseq FROM mailbox_messages
			WHERE mailbox_id = q.id AND account_id = q.acc AND modseq > q.since
			LIMIT NULLIF(q.lim, 0)) mm
		UNION ALL
		SELECT 2, q.id, e.uid, 0, NULL, e.modseq, `+changeNoMailbox+`
		FROM q JOIN mailboxes m ON m.id = q.id AND m.account_id = q.acc
		CROSS JOIN LATERAL (SELECT uid, modseq FROM expunged
			WHERE mailbox_id = q.id AND modseq > q.since
			LIMIT NULLIF(q.lim, 0)) e
		ORDER BY 2, 1, 3`, ids, accs, since, lims)
	if err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	var n [3][]int // rows read per kind and query
	n[1], n[2] = make([]int, len(qs)), make([]int, len(qs))
	err = scanChanges(rows, func(mbID int64, kind int, mb *Mailbox, m MessageFlags) {
		i := at[mbID]
		ch := out[i]
		if kind == 0 {
			ch.Mailbox = mb
			return
		}
		if n[kind][i]++; ch.Truncated || over(i, n[kind][i]) {
			return
		}
		if kind == 1 {
			ch.Updated = append(ch.Updated, m)
		} else {
			ch.Expunged = append(ch.Expunged, m.UID)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	return out, nil
}

// The columns of the rows scanChanges reads after the kind: mailbox id,
// UID, flags, keywords, modseq, then the other mailbox columns (m is the
// mailboxes row), or placeholders for a message's row.
const (
	changeMailboxColumns = `m.id, 0::bigint, 0, NULL::text[], m.highestmodseq, m.account_id, m.name, m.special_use,
		m.uidvalidity, m.uidnext, m.noselect, m.messages, m.unseen, m.deleted, m.size, m.first_recent_uid`
	changeNoMailbox = `0::bigint, '', '', 0::bigint, 0::bigint, false, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint`
)

// scanChanges reads the rows of a changes query, calling fn with the
// mailbox (kind 0) or the message (1: live, 2: expunged) of each.
func scanChanges(rows pgx.Rows, fn func(mbID int64, kind int, mb *Mailbox, m MessageFlags)) error {
	var (
		kind, bits                                       int
		mbID, uid, ms, uidvalidity, uidnext, firstRecent int64
		kw                                               []string
		mb                                               Mailbox
	)
	_, err := pgx.ForEachRow(rows, []any{&kind, &mbID, &uid, &bits, &kw, &ms, &mb.AccountID, &mb.Name, &mb.SpecialUse,
		&uidvalidity, &uidnext, &mb.NoSelect, &mb.Messages, &mb.Unseen, &mb.Deleted, &mb.Size, &firstRecent}, func() error {
		switch kind {
		case 0:
			m := mb
			m.ID, m.UIDValidity, m.UIDNext, m.HighestModSeq = mbID, uint32(uidvalidity), uint32(uidnext), uint64(ms)
			m.FirstRecentUID = uint32(firstRecent)
			fn(mbID, 0, &m, MessageFlags{})
		case 1:
			fn(mbID, 1, nil, MessageFlags{UID: uint32(uid), Flags: flagStrings(bits, kw), ModSeq: uint64(ms)})
		default:
			fn(mbID, 2, nil, MessageFlags{UID: uint32(uid), ModSeq: uint64(ms)})
		}
		return nil
	})
	return err
}

// ChangesPage reads one page of the changes to a mailbox after modseq:
// those to UIDs above afterUID, at most limit of them (live and expunged
// together, by ascending UID), from one snapshot. Truncated says that more
// follow: the next page starts after the highest UID of this one. So a
// reader re-reads any number of changes in memory bounded by limit.
func (s *Store) ChangesPage(ctx context.Context, accountID, mailboxID int64, modseq uint64, afterUID uint32, limit int) (*Changes, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: page limit %d", ErrInvalid, limit)
	}
	ch := &Changes{}
	// One statement: the mailbox row (kind 0) and the page, live messages
	// (1) and tombstones (2) together by UID. The tombstones are the
	// account's through the mailbox row found with its id.
	rows, err := s.pool.Query(ctx, `WITH m AS MATERIALIZED (SELECT * FROM mailboxes WHERE id = $1 AND account_id = $2),
		page AS (
			SELECT 1 AS kind, uid, flags, keywords, modseq FROM mailbox_messages
				WHERE mailbox_id = $1 AND account_id = $2 AND modseq > $3 AND uid > $4
			UNION ALL
			SELECT 2, uid, 0, NULL, modseq FROM expunged
				WHERE mailbox_id = $1 AND modseq > $3 AND uid > $4 AND EXISTS (SELECT 1 FROM m)
			ORDER BY 2 LIMIT $5)
		SELECT 0 AS kind, `+changeMailboxColumns+` FROM m
		UNION ALL
		SELECT kind, $1, uid, flags, keywords, modseq, `+changeNoMailbox+` FROM page
		ORDER BY 3, 1`, mailboxID, accountID, int64(modseq), int64(afterUID), limit+1)
	if err == nil {
		n := 0
		err = scanChanges(rows, func(_ int64, kind int, mb *Mailbox, m MessageFlags) {
			switch {
			case kind == 0:
				ch.Mailbox = mb
			case ch.Mailbox == nil:
				// No mailbox row: its tombstones are not read either.
			case n >= limit:
				ch.Truncated = true
			case kind == 1:
				n++
				ch.Updated = append(ch.Updated, m)
			default:
				n++
				ch.Expunged = append(ch.Expunged, m.UID)
			}
		})
	}
	if err != nil {
		return nil, fmt.Errorf("read changes page: %w", err)
	}
	return ch, nil
}

// ChangedSince returns the UIDs, among uids, of the mailbox's messages
// changed (stored, or their flags set) after modseq, ascending: what a
// FETCH with CHANGEDSINCE (RFC 7162 §3.1.4) answers for. The index on
// (mailbox_id, modseq) finds them without reading the others.
func (s *Store) ChangedSince(ctx context.Context, accountID, mailboxID int64, uids []UIDRange, modseq uint64) ([]uint32, error) {
	return s.uidsSince(ctx, "changed since", `SELECT mm.uid FROM mailbox_messages mm
		WHERE mm.mailbox_id = $1 AND mm.account_id = $2 AND mm.modseq > $3
		  AND EXISTS (SELECT 1 FROM unnest($4::bigint[], $5::bigint[]) r(lo, hi) WHERE mm.uid BETWEEN r.lo AND r.hi)
		ORDER BY mm.uid`, accountID, mailboxID, uids, modseq)
}

// ExpungedSince returns the UIDs, among uids, of the mailbox's messages
// expunged after modseq, ascending (QRESYNC's VANISHED (EARLIER)). Every
// tombstone is kept as long as its mailbox (ARCHITECTURE.md, "CONDSTORE
// and QRESYNC"), so the answer is exact for any modseq.
func (s *Store) ExpungedSince(ctx context.Context, accountID, mailboxID int64, uids []UIDRange, modseq uint64) ([]uint32, error) {
	return s.uidsSince(ctx, "expunged since", `SELECT e.uid FROM expunged e
		JOIN mailboxes m ON m.id = e.mailbox_id AND m.account_id = $2
		WHERE e.mailbox_id = $1 AND e.modseq > $3
		  AND EXISTS (SELECT 1 FROM unnest($4::bigint[], $5::bigint[]) r(lo, hi) WHERE e.uid BETWEEN r.lo AND r.hi)
		ORDER BY e.uid`, accountID, mailboxID, uids, modseq)
}

// uidsSince runs query, which reads UIDs with the parameters mailbox,
// account, modseq and the UID ranges' bounds.
func (s *Store) uidsSince(ctx context.Context, what, query string, accountID, mailboxID int64, uids []UIDRange, modseq uint64) ([]uint32, error) {
	lo, hi := normalizeRanges(uids)
	rows, err := s.pool.Query(ctx, query, mailboxID, accountID, int64(min(modseq, 1<<63-1)), lo, hi)
	if err == nil {
		var out []uint32
		if out, err = scanUIDs(rows); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

// MaxModSeq returns the highest modseq of the mailbox's messages with the
// given UIDs (0 if none is left): what SEARCH answers with MODSEQ.
func (s *Store) MaxModSeq(ctx context.Context, accountID, mailboxID int64, uids []uint32) (uint64, error) {
	u := uidArray(uids)
	var ms int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(modseq), 0) FROM mailbox_messages
		WHERE mailbox_id = $1 AND account_id = $2 AND uid = ANY($3::bigint[])`, mailboxID, accountID, u).Scan(&ms)
	if err != nil {
		return 0, fmt.Errorf("max modseq: %w", err)
	}
	return uint64(ms), nil
}

// uidArray converts UIDs for a bigint[] parameter.
func uidArray(uids []uint32) []int64 {
	out := make([]int64, len(uids))
	for i, u := range uids {
		out[i] = int64(u)
	}
	return out
}

// scanUIDs reads rows of one UID column.
func scanUIDs(rows pgx.Rows) ([]uint32, error) {
	var out []uint32
	var uid int64
	_, err := pgx.ForEachRow(rows, []any{&uid}, func() error {
		out = append(out, uint32(uid))
		return nil
	})
	return out, err
}
