package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailstack/mailstack/internal/mimeindex"
)

// The sort keys of a content (migration 13): a row of message_keys written
// with the content's row, from mimeindex.Keys, in this column order.
var sortKeyColumnList = []string{"message_id", "sent_date", "subject", "reply", "from_mailbox", "to_mailbox",
	"cc_mailbox", "display_from", "display_to", "msgid", "refs", "sent_day"}

// insertSortKeys is the SQL that stores the keys of the content inserted
// by the CTE named from (its column id), from the three parameters
// sortKeyArgs gives: the strings as one text[], the sent date and the
// reply flag (one array rather than nine parameters keeps the statement's
// list short; the sent day is its last string, empty for none).
func insertSortKeys(from, strs, sent, reply string) string {
	a := func(i int) string { return "(" + strs + "::text[])[" + fmt.Sprint(i) + "]" }
	return "INSERT INTO message_keys (" + strings.Join(sortKeyColumnList, ", ") + ") SELECT id, " +
		sent + "::timestamptz, " + a(1) + ", " + reply + "::boolean, " +
		a(2) + ", " + a(3) + ", " + a(4) + ", " + a(5) + ", " + a(6) + ", " + a(7) + ", " + a(8) +
		", nullif(" + a(9) + ", '')::date FROM " + from
}

// sortKeyArgs returns the arguments of insertSortKeys for a spooled
// message whose header block is header.
func sortKeyArgs(msg *Spooled, header []byte) [3]any {
	k := mimeindex.Keys(msg.Structure.Envelope, header)
	day := ""
	if d := sentDay(k); d != nil {
		day = d.Format(time.DateOnly)
	}
	return [3]any{[]string{k.Subject, k.From, k.To, k.Cc, k.DisplayFrom, k.DisplayTo, k.MessageID, k.References, day},
		sentDate(k), k.Reply}
}

func sentDate(k mimeindex.SortKeys) *time.Time {
	if k.SentDate.IsZero() {
		return nil
	}
	t := k.SentDate.UTC()
	return &t
}

// sentDay is the calendar date of the Date: field in its own zone (what
// SENTON compares), as midnight UTC of that date; nil without one, or for
// a year before 1, which PostgreSQL's date has not (it has no year 0) and
// which would fail the delivery.
func sentDay(k mimeindex.SortKeys) *time.Time {
	if k.SentDate.IsZero() || k.SentDate.Year() < 1 {
		return nil
	}
	t := utcDay(k.SentDate)
	return &t
}

// sortKeyRow returns a row of message_keys (sortKeyColumnList) for COPY,
// for a new content or a stored one (the backfill). The envelope of a
// content stored before mimeindex kept the last of several Date: fields
// has the first: the date is read from the header, as the sent-date search
// did then, unless the header was cut (and may have lost it).
func sortKeyRow(id int64, structure *mimeindex.Message, header []byte) []any {
	var env *mimeindex.Envelope
	if structure != nil && structure.Envelope != nil {
		e := *structure.Envelope
		if len(header) < MaxStoredHeader {
			e.Date = mimeindex.LastField(header, "date")
		}
		env = &e
	}
	k := mimeindex.Keys(env, header)
	return []any{id, sentDate(k), k.Subject, k.Reply, k.From, k.To, k.Cc, k.DisplayFrom, k.DisplayTo, k.MessageID, k.References,
		sentDay(k)}
}

// backfillSet replaces every key of a row that exists.
func backfillSet() string {
	var set []string
	for _, c := range sortKeyColumnList[1:] {
		set = append(set, c+" = EXCLUDED."+c)
	}
	return strings.Join(set, ", ")
}

// backfillBatch is how many contents backfillSortKeys computes per
// transaction.
const backfillBatch = 1000

// backfillSortKeys computes the keys of the contents stored before
// migration 13, and again before migration 19 added the sent day
// (message_keys_backfill says which ids), from their stored header and
// structure, a batch per transaction that also records how far it got, so
// an interrupted run resumes there. Migrate runs it under its lock (at
// start and by 'mailstack migrate'); once done it costs one read of an
// empty table. Then it repairs the keys an older mailstack process wrote
// (repairSentDays).
func backfillSortKeys(ctx context.Context, conn *pgxpool.Conn) error {
	for {
		done := false
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var next, last int64
			err := tx.QueryRow(ctx, `SELECT next_id, last_id FROM message_keys_backfill`).Scan(&next, &last)
			if errors.Is(err, pgx.ErrNoRows) {
				done = true
				return nil
			}
			if err != nil {
				return err
			}
			n, err := recomputeKeys(ctx, tx, &next, `SELECT id, header, structure FROM messages
				WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3 FOR KEY SHARE`, next, last, backfillBatch)
			if err != nil {
				return err
			}
			if n < backfillBatch {
				done = true
				_, err = tx.Exec(ctx, `DELETE FROM message_keys_backfill`)
			} else {
				_, err = tx.Exec(ctx, `UPDATE message_keys_backfill SET next_id = $1`, next)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("backfill sort keys: %w", err)
		}
		if done {
			return repairSentDays(ctx, conn)
		}
	}
}

// repairSentDays computes the keys again of contents whose keys have a
// sent date but no sent day: written, after migration 19, by a process of
// an older mailstack still running against the database (a rolling
// upgrade). A partial index finds them; the next start of any process
// repairs those written before it. Dates in the year 1 or before are left
// out: their day may have no date in PostgreSQL (sentDay), and they would
// come back at every start.
func repairSentDays(ctx context.Context, conn *pgxpool.Conn) error {
	var after int64
	for {
		var n int
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var err error
			n, err = recomputeKeys(ctx, tx, &after, `SELECT m.id, m.header, m.structure
				FROM message_keys k JOIN messages m ON m.id = k.message_id
				WHERE k.sent_day IS NULL AND k.sent_date IS NOT NULL AND k.sent_date >= '0001-01-02 00:00:00+00'
					AND k.message_id > $1
				ORDER BY k.message_id LIMIT $2 FOR KEY SHARE OF m`, after, backfillBatch)
			return err
		})
		if err != nil {
			return fmt.Errorf("repair sent days: %w", err)
		}
		if n < backfillBatch {
			return nil
		}
	}
}

// recomputeKeys computes the keys of the contents query returns (id,
// header, structure, ascending ids, locked KEY SHARE so that garbage
// collection cannot delete one under it, which would fail the insert of
// its keys and so the migration), stores them over any keys they have,
// sets *last to the last id and returns how many there were.
func recomputeKeys(ctx context.Context, tx pgx.Tx, last *int64, query string, args ...any) (int, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	var keys [][]any
	var id int64
	var header, structure []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &header, &structure}, func() error {
		var m mimeindex.Message
		if err := json.Unmarshal(structure, &m); err != nil {
			return fmt.Errorf("message %d: decode structure: %w", id, err)
		}
		keys = append(keys, sortKeyRow(id, &m, header))
		*last = id
		return nil
	})
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	// Through a temporary table: COPY cannot skip rows that exist.
	if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE backfill_keys (LIKE message_keys) ON COMMIT DROP`); err != nil {
		return 0, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"backfill_keys"}, sortKeyColumnList, pgx.CopyFromRows(keys)); err != nil {
		return 0, err
	}
	// A content that has keys gets them again (migration 19 added a key):
	// they are computed the same way.
	if _, err := tx.Exec(ctx, `INSERT INTO message_keys SELECT * FROM backfill_keys ON CONFLICT (message_id) DO UPDATE SET `+
		backfillSet()); err != nil {
		return 0, err
	}
	return len(keys), nil
}
