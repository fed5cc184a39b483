package store

import (
	"context"
	"fmt"
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
// messages m; join says it needs m.
var sortExpr = map[SortKey]struct {
	sql  string
	join bool
}{
	SortArrival:     {"mm.internal_date", false},
	SortCc:          {`m.sort_cc COLLATE "C"`, true},
	SortDate:        {"coalesce(m.sent_date, mm.internal_date)", true},
	SortFrom:        {`m.sort_from COLLATE "C"`, true},
	SortSize:        {"mm.size", false},
	SortSubject:     {`m.sort_subject COLLATE "C"`, true},
	SortTo:          {`m.sort_to COLLATE "C"`, true},
	SortDisplayFrom: {`m.display_from COLLATE "C"`, true},
	SortDisplayTo:   {`m.display_to COLLATE "C"`, true},
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
		from += " JOIN messages m ON m.id = mm.message_id"
	}
	uids, err := s.selectMatching(ctx, accountID, mailboxID, c, func(where string, args []any) (pgx.Rows, error) {
		return s.pool.Query(ctx, `SELECT mm.uid FROM `+from+`
			WHERE mm.mailbox_id = $1 AND mm.account_id = $2 AND `+where+` ORDER BY `+strings.Join(by, ", "), args...)
	})
	if err != nil {
		return nil, fmt.Errorf("sort: %w", err)
	}
	return scanUIDs(uids)
}

// selectMatching runs query with a condition over mailbox_messages mm
// selecting the messages of the mailbox that match c ($1 is the mailbox,
// $2 the account): c itself if SQL decides it, else the UIDs Search
// found.
func (s *Store) selectMatching(ctx context.Context, accountID, mailboxID int64, c *SearchCriteria,
	query func(where string, args []any) (pgx.Rows, error)) (pgx.Rows, error) {
	if c == nil {
		c = &SearchCriteria{}
	}
	if err := s.checkSearchMailbox(ctx, accountID, mailboxID); err != nil {
		return nil, err
	}
	b := &sqlBuilder{args: []any{mailboxID, accountID}}
	if !hasContent(c) {
		return query(b.conds(c, modeExact), b.args)
	}
	uids, err := s.searchContent(ctx, accountID, mailboxID, c)
	if err != nil {
		return nil, err
	}
	list := make([]int64, len(uids))
	for i, u := range uids {
		list[i] = int64(u)
	}
	return query("mm.uid = ANY("+b.arg(list)+"::bigint[])", b.args)
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
		refs = "m.thread_msgid, m.thread_refs"
	}
	rows, err := s.selectMatching(ctx, accountID, mailboxID, c, func(where string, args []any) (pgx.Rows, error) {
		return s.pool.Query(ctx, `SELECT mm.uid, coalesce(m.sent_date, mm.internal_date), m.sort_subject, m.subject_reply, `+refs+`
			FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id
			WHERE mm.mailbox_id = $1 AND mm.account_id = $2 AND `+where+` ORDER BY mm.uid`, args...)
	})
	if err != nil {
		return nil, fmt.Errorf("thread: %w", err)
	}
	var out []ThreadMessage
	var t ThreadMessage
	var uid int64
	_, err = pgx.ForEachRow(rows, []any{&uid, &t.Date, &t.Subject, &t.Reply, &t.MessageID, &t.References}, func() error {
		t.UID = uint32(uid)
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("thread: %w", err)
	}
	return out, nil
}
