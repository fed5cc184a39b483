package store

import (
	"context"
	"errors"
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
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+mailboxColumns+` FROM mailboxes
			WHERE (id, account_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))`, ids, accs)
		if err != nil {
			return err
		}
		mbs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Mailbox, error) { return scanMailbox(r) })
		if err != nil {
			return err
		}
		for _, mb := range mbs {
			out[at[mb.ID]].Mailbox = mb
		}
		// The query's own account id scopes every row (invariant 4). The
		// inner LIMIT needs no order: a read within it has all the rows.
		rows, err = tx.Query(ctx, `SELECT q.id, mm.uid, mm.flags, mm.keywords, mm.modseq
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) q(id, acc, since, lim)
			CROSS JOIN LATERAL (SELECT uid, flags, keywords, modseq FROM mailbox_messages
				WHERE mailbox_id = q.id AND account_id = q.acc AND modseq > q.since
				LIMIT NULLIF(q.lim, 0)) mm
			ORDER BY q.id, mm.uid`, ids, accs, since, lims)
		if err != nil {
			return err
		}
		n := make([]int, len(qs))
		var mbID, uid, ms int64
		var bits int
		var kw []string
		if _, err := pgx.ForEachRow(rows, []any{&mbID, &uid, &bits, &kw, &ms}, func() error {
			i := at[mbID]
			if n[i]++; out[i].Truncated || over(i, n[i]) {
				return nil
			}
			ch := out[i]
			ch.Updated = append(ch.Updated, MessageFlags{UID: uint32(uid), Flags: flagStrings(bits, kw), ModSeq: uint64(ms)})
			return nil
		}); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT q.id, e.uid
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) q(id, acc, since, lim)
			JOIN mailboxes m ON m.id = q.id AND m.account_id = q.acc
			CROSS JOIN LATERAL (SELECT uid FROM expunged
				WHERE mailbox_id = q.id AND modseq > q.since
				LIMIT NULLIF(q.lim, 0)) e
			ORDER BY q.id, e.uid`, ids, accs, since, lims)
		if err != nil {
			return err
		}
		clear(n)
		_, err = pgx.ForEachRow(rows, []any{&mbID, &uid}, func() error {
			i := at[mbID]
			if n[i]++; out[i].Truncated || over(i, n[i]) {
				return nil
			}
			ch := out[i]
			ch.Expunged = append(ch.Expunged, uint32(uid))
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	return out, nil
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
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		mb, err := scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM mailboxes
			WHERE id = $1 AND account_id = $2`, mailboxID, accountID))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		ch.Mailbox = mb
		// The mailbox row was found with the account id: the tombstones
		// are that account's.
		rows, err := tx.Query(ctx, `SELECT uid, flags, keywords, modseq, false FROM mailbox_messages
				WHERE mailbox_id = $1 AND account_id = $2 AND modseq > $3 AND uid > $4
			UNION ALL
			SELECT uid, 0, NULL, modseq, true FROM expunged
				WHERE mailbox_id = $1 AND modseq > $3 AND uid > $4
			ORDER BY 1 LIMIT $5`, mailboxID, accountID, int64(modseq), int64(afterUID), limit+1)
		if err != nil {
			return err
		}
		n := 0
		var uid, ms int64
		var bits int
		var kw []string
		var gone bool
		_, err = pgx.ForEachRow(rows, []any{&uid, &bits, &kw, &ms, &gone}, func() error {
			if n++; n > limit {
				ch.Truncated = true
				return nil
			}
			if gone {
				ch.Expunged = append(ch.Expunged, uint32(uid))
			} else {
				ch.Updated = append(ch.Updated, MessageFlags{UID: uint32(uid), Flags: flagStrings(bits, kw), ModSeq: uint64(ms)})
			}
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read changes page: %w", err)
	}
	return ch, nil
}
