package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ChangeEvent is a wake-up from the change feed: something in a mailbox
// changed and committed, up to ModSeq (0 for deletes and renames). Resync
// means notifications may have been lost (the LISTEN connection dropped):
// every watched mailbox must be re-read from the database.
type ChangeEvent struct {
	MailboxID int64
	ModSeq    uint64
	Resync    bool
	// At is when the change was made, by the database's clock (for
	// measuring notification lag); zero if unknown.
	At time.Time
}

// notifyStamp appends the database's current time (µs since the epoch) to
// a change notification payload expression.
const notifyStamp = ` || ' ' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text`

// Listen holds one dedicated connection (not from the pool) listening on
// MailboxChannel and calls fn for every notification, in order, from a
// single goroutine. After every successful LISTEN (the first, and each
// reconnection with backoff after the connection dropped) it calls fn with a
// Resync event: notifications sent before it took effect are lost. It
// returns when ctx is done.
func (s *Store) Listen(ctx context.Context, fn func(ChangeEvent)) error {
	return s.listen(ctx, MailboxChannel, func(payload string) {
		ev, err := parseChange(payload)
		if err != nil {
			s.log.Warn("bad change notification", "payload", payload, "err", err)
			return
		}
		fn(ev)
	}, func() { fn(ChangeEvent{Resync: true}) })
}

// parseChange parses "<mailbox id> <modseq> [<µs since the epoch>]".
func parseChange(payload string) (ChangeEvent, error) {
	f := strings.Fields(payload)
	if len(f) < 2 || len(f) > 3 {
		return ChangeEvent{}, errors.New("want mailbox id, modseq and time")
	}
	var ev ChangeEvent
	var err error
	if ev.MailboxID, err = strconv.ParseInt(f[0], 10, 64); err != nil {
		return ChangeEvent{}, err
	}
	if ev.ModSeq, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return ChangeEvent{}, err
	}
	if len(f) == 3 {
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return ChangeEvent{}, err
		}
		ev.At = time.UnixMicro(us)
	}
	return ev, nil
}

// listen runs a LISTEN loop on channel with reconnection. onReconnect runs
// after every successful LISTEN, the first included.
func (s *Store) listen(ctx context.Context, channel string, onNotify func(string), onReconnect func()) error {
	backoff := 50 * time.Millisecond
	first := true
	for {
		conn, err := pgx.ConnectConfig(ctx, s.ConnConfig())
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize())
		}
		if err == nil {
			backoff = 50 * time.Millisecond
			if !first {
				s.log.Info("change feed reconnected", "channel", channel)
			}
			// Changes made before this LISTEN took effect (while the
			// connection was down, or before the first one came up while
			// sessions already watched mailboxes) were never announced.
			onReconnect()
			first = false
			err = waitLoop(ctx, conn, onNotify)
		}
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("change feed connection lost; reconnecting", "channel", channel, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func waitLoop(ctx context.Context, conn *pgx.Conn, onNotify func(string)) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		onNotify(n.Payload)
	}
}
