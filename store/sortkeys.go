package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailstack/mailstack/internal/mimeindex"
)

// The sort keys of a content (migration 13): columns of messages filled at
// delivery from mimeindex.Keys, in this order.
var sortKeyColumnList = []string{"sort_version", "sent_date", "sort_subject", "subject_reply", "sort_from", "sort_to",
	"sort_cc", "display_from", "display_to", "thread_msgid", "thread_refs"}

var sortKeyColumns = strings.Join(sortKeyColumnList, ", ")

// sortKeyValues is the SQL of the values of sortKeyColumns from the three
// parameters sortKeyArgs gives: the strings as one text[], the sent date
// and the reply flag (one array rather than nine parameters keeps the
// statement's parameter list short).
func sortKeyValues(strs, sent, reply string) string {
	a := func(i int) string { return "(" + strs + "::text[])[" + fmt.Sprint(i) + "]" }
	return fmt.Sprint(mimeindex.SortKeysVersion) + ", " + sent + "::timestamptz, " + a(1) + ", " + reply + "::boolean, " +
		a(2) + ", " + a(3) + ", " + a(4) + ", " + a(5) + ", " + a(6) + ", " + a(7) + ", " + a(8)
}

// sortKeyArgs returns the arguments of sortKeyValues for a spooled message
// whose header block is header.
func sortKeyArgs(msg *Spooled, header []byte) [3]any {
	k := mimeindex.Keys(msg.Structure.Envelope, header)
	return [3]any{[]string{k.Subject, k.From, k.To, k.Cc, k.DisplayFrom, k.DisplayTo, k.MessageID, k.References},
		sentDate(k), k.Reply}
}

func sentDate(k mimeindex.SortKeys) *time.Time {
	if k.SentDate.IsZero() {
		return nil
	}
	t := k.SentDate.UTC()
	return &t
}

// sortKeyRow returns the values of sortKeyColumnList for a COPY row.
func sortKeyRow(structure *mimeindex.Message, header []byte) []any {
	var env *mimeindex.Envelope
	if structure != nil {
		env = structure.Envelope
	}
	k := mimeindex.Keys(env, header)
	return []any{int16(mimeindex.SortKeysVersion), sentDate(k), k.Subject, k.Reply, k.From, k.To, k.Cc,
		k.DisplayFrom, k.DisplayTo, k.MessageID, k.References}
}

// backfillBatch is how many contents backfillSortKeys computes per
// statement.
const backfillBatch = 1000

// backfillSortKeys computes the sort keys of contents stored before
// migration 13 (sort_version 0) from their stored header and structure, a
// batch per statement, so that an interrupted run resumes where it
// stopped. Migrate runs it under its lock (at start and by 'mailstack
// migrate'); a database without such rows costs one index probe.
func backfillSortKeys(ctx context.Context, conn *pgxpool.Conn) error {
	for {
		rows, err := conn.Query(ctx, `SELECT id, header, structure FROM messages WHERE sort_version = 0 ORDER BY id LIMIT $1`, backfillBatch)
		if err != nil {
			return fmt.Errorf("backfill sort keys: %w", err)
		}
		var ids []int64
		var sent []*time.Time
		var reply []bool
		cols := make([][]string, 8)
		var id int64
		var header, structure []byte
		_, err = pgx.ForEachRow(rows, []any{&id, &header, &structure}, func() error {
			var m mimeindex.Message
			if err := json.Unmarshal(structure, &m); err != nil {
				return fmt.Errorf("message %d: decode structure: %w", id, err)
			}
			k := mimeindex.Keys(m.Envelope, header)
			ids, sent, reply = append(ids, id), append(sent, sentDate(k)), append(reply, k.Reply)
			for i, v := range []string{k.Subject, k.From, k.To, k.Cc, k.DisplayFrom, k.DisplayTo, k.MessageID, k.References} {
				cols[i] = append(cols[i], v)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("backfill sort keys: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := conn.Exec(ctx, `UPDATE messages m SET sort_version = $12, sent_date = u.sent, sort_subject = u.subj,
				subject_reply = u.reply, sort_from = u.f, sort_to = u.t, sort_cc = u.c, display_from = u.df,
				display_to = u.dt, thread_msgid = u.mid, thread_refs = u.refs
			FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::boolean[], $5::text[], $6::text[], $7::text[],
				$8::text[], $9::text[], $10::text[], $11::text[]) u(id, sent, subj, reply, f, t, c, df, dt, mid, refs)
			WHERE m.id = u.id`, ids, sent, cols[0], reply, cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7],
			int16(mimeindex.SortKeysVersion)); err != nil {
			return fmt.Errorf("backfill sort keys: %w", err)
		}
		if len(ids) < backfillBatch {
			return nil
		}
	}
}
