package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// SortKey is a sort criterion of IMAP SORT (RFC 5256, RFC 5957).
type SortKey int

// Sort keys. String keys compare with i;unicode-casemap (the stored keys
// are canonicalised, mimeindex.Casemap); a message without the field sorts
// as the empty string, first.
const (
	SortArrival     SortKey = iota // internal date
	SortCc                         // addr-mailbox of the first Cc address
	SortDate                       // Date: field in UTC, else the internal date
	SortFrom                       // addr-mailbox of the first From address
	SortSize                       // RFC822.SIZE
	SortSubject                    // base subject (RFC 5256 §2.1)
	SortTo                         // addr-mailbox of the first To address
	SortDisplayFrom                // display name of the first From address, else its address
	SortDisplayTo                  // display name of the first To address, else its address
)

// SortCriterion is one key of a SORT, in the order given; Reverse
// reverses that key alone.
type SortCriterion struct {
	Key     SortKey
	Reverse bool
}

// sortExpr is the SQL each key orders by, over mailbox_messages mm and
// message_keys k; join says it needs k. (A content whose keys are missing,
// which no writer leaves, sorts as if its fields were empty.)
var sortExpr = map[SortKey]struct {
	sql  string
	join bool
}{
	SortArrival:     {"mm.internal_date", false},
	SortCc:          {`coalesce(k.cc_mailbox, '') COLLATE "C"`, true},
	SortDate:        {"coalesce(k.sent_date, mm.internal_date)", true},
	SortFrom:        {`coalesce(k.from_mailbox, '') COLLATE "C"`, true},
	SortSize:        {"mm.size", false},
	SortSubject:     {`coalesce(k.subject, '') COLLATE "C"`, true},
	SortTo:          {`coalesce(k.to_mailbox, '') COLLATE "C"`, true},
	SortDisplayFrom: {`coalesce(k.display_from, '') COLLATE "C"`, true},
	SortDisplayTo:   {`coalesce(k.display_to, '') COLLATE "C"`, true},
}

// Sort returns the UIDs of the messages of a mailbox matching c in the
// order of the criteria, ties broken by ascending UID (which is sequence
// number order, as RFC 5256 wants). The search is Search's; the ordering
// is one query on the keys stored at delivery.
func (s *Store) Sort(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria, order []SortCriterion) ([]uint32, error) {
	var by []string
	join := false
	for _, o := range order {
		e, ok := sortExpr[o.Key]
		if !ok {
			return nil, fmt.Errorf("sort: %w: sort key %d", ErrInvalid, o.Key)
		}
		join = join || e.join
		if o.Reverse {
			by = append(by, e.sql+" DESC")
		} else {
			by = append(by, e.sql)
		}
	}
	by = append(by, "mm.uid")
	from := "mailbox_messages mm"
	if join {
		from += " LEFT JOIN message_keys k ON k.message_id = mm.message_id"
	}
	var out []uint32
	err := s.selectMatching(ctx, accountID, mailboxID, c, `SELECT mm.uid FROM `+from+`
		WHERE mm.mailbox_id = $1 AND mm.account_id = $2 AND %s ORDER BY `+strings.Join(by, ", "),
		func(rows pgx.Rows) (err error) {
			out, err = scanUIDs(rows)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("sort: %w", err)
	}
	return out, nil
}

// sortWorkMem is the memory PostgreSQL may use for the sort of one SORT
// (and THREAD's hash join): a mailbox of 100,000 messages sorts in memory
// rather than in temporary files, which the default 4 MB would need.
const sortWorkMem = "64MB"

// selectMatching runs query, whose %s is replaced by a condition over
// mailbox_messages mm selecting the messages of the mailbox that match c
// ($1 is the mailbox, $2 the account): c itself if SQL decides it, else
// the UIDs Search found. scan reads the rows. The query runs with
// sortWorkMem, in the same round trip.
func (s *Store) selectMatching(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria, query string,
	scan func(pgx.Rows) error) error {
	if c == nil {
		c = &SearchCriteria{}
	}
	if err := s.checkSearchMailbox(ctx, accountID, mailboxID); err != nil {
		return err
	}
	b := &sqlBuilder{args: []any{mailboxID, accountID}}
	var where string
	if !hasContent(c) {
		where = b.conds(c, modeExact)
	} else {
		uids, err := s.searchByContent(ctx, accountID, mailboxID, c)
		if err != nil {
			return err
		}
		where = "mm.uid = ANY(" + b.arg(uidArray(uids)) + "::bigint[])"
	}
	// A pipelined batch is one implicit transaction: set_config's local
	// setting holds for the query after it.
	batch := &pgx.Batch{}
	batch.Queue(`SELECT set_config('work_mem', '` + sortWorkMem + `', true)`)
	batch.Queue(strings.Replace(query, "%s", where, 1), b.args...)
	br := s.pool.SendBatch(ctx, batch)
	err := func() error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		return scan(rows)
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// ThreadMessage is what THREAD (RFC 5256 §2.2, §2.3) needs of a message.
type ThreadMessage struct {
	UID uint32
	// Date is the sent date (the internal date if the Date: field is
	// missing or unparsable).
	Date time.Time
	// Subject is the base subject, casemapped; Reply says the subject
	// was a reply or forward.
	Subject string
	Reply   bool
	// MessageID and References are message identifiers without angle
	// brackets; References separated by spaces (mimeindex.SortKeys).
	MessageID, References string
}

// ThreadMessages returns what threading needs of the messages of a mailbox
// matching c, by ascending UID: one query reading only those columns.
// withRefs false leaves MessageID and References empty (ORDEREDSUBJECT).
func (s *Store) ThreadMessages(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria, withRefs bool) ([]ThreadMessage, error) {
	refs := "'', ''"
	if withRefs {
		refs = "coalesce(k.msgid, ''), coalesce(k.refs, '')"
	}
	var out []ThreadMessage
	err := s.selectMatching(ctx, accountID, mailboxID, c, `SELECT mm.uid, coalesce(k.sent_date, mm.internal_date),
			coalesce(k.subject, ''), coalesce(k.reply, false), `+refs+`
		FROM mailbox_messages mm LEFT JOIN message_keys k ON k.message_id = mm.message_id
		WHERE mm.mailbox_id = $1 AND mm.account_id = $2 AND %s`,
		func(rows pgx.Rows) (err error) {
			out, err = scanThreadMessages(rows)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("thread: %w", err)
	}
	// Ordered here: in SQL the rows (identifiers and all) would be sorted
	// again after the join, in temporary files for a large mailbox.
	slices.SortFunc(out, func(a, b ThreadMessage) int { return cmp.Compare(a.UID, b.UID) })
	return out, nil
}

// scanThreadMessages reads ThreadMessages' rows. A mailbox's worth of rows
// is decoded from the binary wire format by hand, its strings sliced from
// one arena: three allocations per row would take as long as the query.
func scanThreadMessages(rows pgx.Rows) ([]ThreadMessage, error) {
	defer rows.Close()
	// Text is the same in both formats; the others must be binary.
	for i, f := range rows.FieldDescriptions() {
		if f.Format != pgx.BinaryFormatCode && (i < 2 || i == 3) {
			return nil, fmt.Errorf("column %d in text format", i)
		}
	}
	type span struct{ off, n int32 }
	var out []ThreadMessage
	var spans [][3]span
	var arena []byte
	add := func(b []byte) span {
		sp := span{int32(len(arena)), int32(len(b))}
		arena = append(arena, b...)
		return sp
	}
	for rows.Next() {
		v := rows.RawValues()
		if len(v) != 6 || len(v[0]) != 8 || len(v[1]) != 8 || len(v[3]) != 1 {
			return nil, fmt.Errorf("unexpected row shape")
		}
		out = append(out, ThreadMessage{
			UID:   uint32(binary.BigEndian.Uint64(v[0])),
			Date:  pgTimestamp(int64(binary.BigEndian.Uint64(v[1]))),
			Reply: v[3][0] != 0,
		})
		spans = append(spans, [3]span{add(v[2]), add(v[4]), add(v[5])})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	all := string(arena)
	str := func(sp span) string { return all[sp.off : sp.off+sp.n] }
	for i := range out {
		out[i].Subject, out[i].MessageID, out[i].References = str(spans[i][0]), str(spans[i][1]), str(spans[i][2])
	}
	return out, nil
}

// pgEpoch is where PostgreSQL's binary timestamps count from, in
// microseconds since the Unix epoch.
const pgEpoch = 946_684_800_000_000

// pgTimestamp is the time of a binary timestamptz, us microseconds from
// pgEpoch. Not through time.Duration, which overflows 292 years away: a
// Date: of year 9999 or 1 is a valid sent date.
func pgTimestamp(us int64) time.Time { return time.UnixMicro(pgEpoch + us).UTC() }
