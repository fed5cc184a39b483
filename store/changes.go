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
}

// ChangeQuery asks for the changes to one mailbox after ModSeq.
type ChangeQuery struct {
	AccountID, MailboxID int64
	ModSeq               uint64
}

// ChangesSince reads the changes to a mailbox after modseq, from one
// consistent snapshot: the change feed's catch-up read.
func (s *Store) ChangesSince(ctx context.Context, accountID, mailboxID int64, modseq uint64) (*Changes, error) {
	chs, err := s.ChangesSinceMany(ctx, []ChangeQuery{{AccountID: accountID, MailboxID: mailboxID, ModSeq: modseq}})
	if err != nil {
		return nil, err
	}
	return chs[0], nil
}

// ChangesSinceMany is ChangesSince for many mailboxes at once (the change
// feed's resync after its LISTEN connection came back): three queries and
// one snapshot for all of them, whatever their number. The result is in
// the order of qs. Each query is scoped by its own account id.
func (s *Store) ChangesSinceMany(ctx context.Context, qs []ChangeQuery) ([]*Changes, error) {
	out := make([]*Changes, len(qs))
	if len(qs) == 0 {
		return out, nil
	}
	ids := make([]int64, len(qs))
	accs := make([]int64, len(qs))
	since := make([]int64, len(qs))
	at := make(map[int64]int, len(qs)) // mailbox id → index in qs
	for i, q := range qs {
		if _, dup := at[q.MailboxID]; dup {
			return nil, fmt.Errorf("%w: mailbox %d asked for twice", ErrInvalid, q.MailboxID)
		}
		ids[i], accs[i], since[i] = q.MailboxID, q.AccountID, int64(q.ModSeq)
		at[q.MailboxID] = i
		out[i] = &Changes{}
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
		// The query's own account id scopes every row (invariant 4).
		rows, err = tx.Query(ctx, `SELECT mm.mailbox_id, mm.uid, mm.flags, mm.keywords, mm.modseq
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) q(id, acc, since)
			JOIN mailbox_messages mm ON mm.mailbox_id = q.id AND mm.account_id = q.acc AND mm.modseq > q.since
			ORDER BY mm.mailbox_id, mm.uid`, ids, accs, since)
		if err != nil {
			return err
		}
		var mbID, uid, ms int64
		var bits int
		var kw []string
		if _, err := pgx.ForEachRow(rows, []any{&mbID, &uid, &bits, &kw, &ms}, func() error {
			ch := out[at[mbID]]
			ch.Updated = append(ch.Updated, MessageFlags{UID: uint32(uid), Flags: flagStrings(bits, kw), ModSeq: uint64(ms)})
			return nil
		}); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT e.mailbox_id, e.uid
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) q(id, acc, since)
			JOIN mailboxes m ON m.id = q.id AND m.account_id = q.acc
			JOIN expunged e ON e.mailbox_id = q.id AND e.modseq > q.since
			ORDER BY e.mailbox_id, e.uid`, ids, accs, since)
		if err != nil {
			return err
		}
		_, err = pgx.ForEachRow(rows, []any{&mbID, &uid}, func() error {
			ch := out[at[mbID]]
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
