package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
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
	// Changes, if not nil, is everything the change did to the mailbox, of
	// UIDVALIDITY UIDValidity: what a read of the changes after ModSeq-1
	// up to ModSeq returns (Updated by ascending UID, Expunged ascending;
	// Mailbox nil). The writers put it in the notification when it is
	// small (a flag change or a delivery), so that a reader who has
	// applied ModSeq-1 of that UIDVALIDITY needs no read of its own.
	// Without it, the event is a wake-up only.
	Changes     *Changes
	UIDValidity uint32
	// Logins, if set, says instead that logins of an account may have
	// become invalid (an app password revoked, the account disabled or
	// deleted): announced on LoginChannel.
	Logins *LoginChange
}

// LoginChannel is the NOTIFY channel on which writers announce that logins
// of an account may no longer be valid, as "<account id> <app password id>"
// (0: every login of the account), in the transaction that made it so:
// protocol servers end such sessions without checking each command.
const LoginChannel = "mailstack_login"

// LoginChange is a notification on LoginChannel.
type LoginChange struct {
	AccountID     int64
	AppPasswordID int64 // 0: every login of the account
}

// Affects reports whether the change may invalidate login l.
func (c *LoginChange) Affects(l *Login) bool {
	return c.AccountID == l.AccountID && (c.AppPasswordID == 0 || c.AppPasswordID == l.AppPasswordID)
}

func parseLoginChange(payload string) (*LoginChange, error) {
	a, b, ok := strings.Cut(payload, " ")
	if !ok {
		return nil, errors.New("want account id and app password id")
	}
	var c LoginChange
	var err error
	if c.AccountID, err = strconv.ParseInt(a, 10, 64); err != nil {
		return nil, err
	}
	if c.AppPasswordID, err = strconv.ParseInt(b, 10, 64); err != nil {
		return nil, err
	}
	return &c, nil
}

// notifyStamp appends the database's current time (µs since the epoch) to
// a change notification payload expression.
const notifyStamp = ` || ' ' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text`

// Listen holds one dedicated connection (not from the pool) listening on
// MailboxChannel and LoginChannel and calls fn for every notification, in
// order, from a single goroutine. After every successful LISTEN (the first,
// and each reconnection with backoff after the connection dropped) it
// calls fn with a Resync event: notifications sent before it took effect
// are lost. It returns when ctx is done.
func (s *Store) Listen(ctx context.Context, fn func(ChangeEvent)) error {
	return s.listen(ctx, []string{MailboxChannel, LoginChannel}, func(channel, payload string) {
		if channel == LoginChannel {
			c, err := parseLoginChange(payload)
			if err != nil {
				s.log.Warn("bad login notification", "payload", payload, "err", err)
				return
			}
			fn(ChangeEvent{Logins: c})
			return
		}
		ev, err := parseChange(payload)
		if err != nil {
			s.log.Warn("bad change notification", "payload", payload, "err", err)
			return
		}
		fn(ev)
	}, func() { fn(ChangeEvent{Resync: true}) })
}

// inlineMarker begins the inline changes of a notification payload, after
// the time stamp: the mailbox's UIDVALIDITY, then each change, "u <uid>
// <flag bits> <n> <n keywords>" (a new or changed message; keywords never
// contain spaces) or "x <uid>" (an expunged one).
const inlineMarker = "+"

// maxInline bounds the inline part of a payload: PostgreSQL refuses
// payloads of 8,000 bytes or more, which would fail the writer's
// transaction, so a larger change goes as a wake-up only.
const maxInline = 7000

// maxInlineMessages is how many messages a change may touch and still be
// sent inline (the SQL counts them before building the text).
const maxInlineMessages = 200

// parseChange parses "<mailbox id> <modseq> [<µs since the epoch> [+ <uidvalidity> <changes>]]".
// Inline changes that do not parse are dropped: the event is then a
// wake-up, which costs the reader a read but loses nothing.
func parseChange(payload string) (ChangeEvent, error) {
	// Split on ASCII spaces only: the writers separate with them, and
	// strings.Fields would also split on other (Unicode) spaces.
	f := strings.FieldsFunc(payload, func(r rune) bool { return r == ' ' })
	if len(f) < 2 {
		return ChangeEvent{}, errors.New("want mailbox id, modseq and time")
	}
	// Fields after the time stamp other than inline changes are left for
	// later versions: the event is then a wake-up.
	var inline []string
	if len(f) > 3 {
		if f[3] == inlineMarker {
			inline = f[4:]
		}
		f = f[:3]
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
	if inline != nil && ev.ModSeq > 0 {
		if ch, uidvalidity, err := parseInline(inline); err == nil {
			for i := range ch.Updated {
				ch.Updated[i].ModSeq = ev.ModSeq
			}
			ev.Changes, ev.UIDValidity = ch, uidvalidity
		}
	}
	return ev, nil
}

// parseInline parses the inline changes of a payload (inlineMarker).
func parseInline(f []string) (*Changes, uint32, error) {
	if len(f) == 0 {
		return nil, 0, errors.New("inline change: no uidvalidity")
	}
	uidvalidity, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil || uidvalidity == 0 {
		return nil, 0, fmt.Errorf("inline change: bad uidvalidity: %v", err)
	}
	f = f[1:]
	ch := &Changes{}
	num := func(i int) (int64, error) {
		if i >= len(f) {
			return 0, errors.New("inline change cut short")
		}
		return strconv.ParseInt(f[i], 10, 64)
	}
	for i := 0; i < len(f); {
		uid, err := num(i + 1)
		if err != nil || uid <= 0 || uid > 1<<32-1 {
			return nil, 0, fmt.Errorf("inline change: bad uid: %v", err)
		}
		switch f[i] {
		case "x":
			ch.Expunged = append(ch.Expunged, uint32(uid))
			i += 2
		case "u":
			bits, err := num(i + 2)
			if err != nil {
				return nil, 0, err
			}
			n, err := num(i + 3)
			if err != nil || n < 0 || int(n) > len(f)-(i+4) {
				return nil, 0, fmt.Errorf("inline change: bad keyword count: %v", err)
			}
			kw := f[i+4 : i+4+int(n)]
			ch.Updated = append(ch.Updated, MessageFlags{UID: uint32(uid), Flags: flagStrings(int(bits), kw)})
			i += 4 + int(n)
		default:
			return nil, 0, fmt.Errorf("inline change: unknown kind %q", f[i])
		}
	}
	slices.SortFunc(ch.Updated, func(a, b MessageFlags) int { return cmp.Compare(a.UID, b.UID) })
	slices.Sort(ch.Expunged)
	return ch, uint32(uidvalidity), nil
}

// ListenOptions configure the change feed's dedicated LISTEN connection.
// The zero value is usable.
type ListenOptions struct {
	// URL, if set, is the database to LISTEN on instead of the pool's: a
	// direct connection when the pool goes through a transaction-pooling
	// proxy (PgBouncer), which cannot carry LISTEN.
	URL string
	// CheckInterval is how long the connection may stay quiet before a
	// liveness check (SELECT 1): a half-open connection (a peer gone
	// without a FIN or RST) would otherwise wait for notifications for
	// ever. Default 30 s.
	CheckInterval time.Duration
	// PingTimeout is how long the liveness check may take before the
	// connection counts as dead and is replaced (which costs a resync of
	// every watched mailbox). Default 5 s; kept apart from CheckInterval
	// so that frequent checks do not make one slow answer fatal.
	PingTimeout time.Duration
	// BeforeConnect, if set, is called before every attempt to open the
	// connection, the first included (tests hold the feed down with it).
	BeforeConnect func(ctx context.Context)
}

// ListenApplicationName is the application_name of the LISTEN connection,
// unless its URL sets one.
const ListenApplicationName = "mailstack listen"

const (
	defaultListenCheck = 30 * time.Second
	defaultListenPing  = 5 * time.Second
	listenConnTimeout  = 10 * time.Second
)

// listenConfig is the configuration of the LISTEN connection: TCP
// keepalive probes after 30 s of silence (a dead peer is noticed by the
// kernel within about a minute, even between liveness checks) and a
// connect timeout.
func (s *Store) listenConfig() (*pgx.ConnConfig, error) {
	cfg := s.ConnConfig()
	if u := s.opts.Listen.URL; u != "" {
		var err error
		if cfg, err = pgx.ParseConfig(u); err != nil {
			return nil, fmt.Errorf("change feed: parse listen URL: %w", err)
		}
	}
	if cfg.RuntimeParams["application_name"] == "" {
		// Tells the feed's connection apart in pg_stat_activity.
		cfg.RuntimeParams["application_name"] = ListenApplicationName
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = listenConnTimeout
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}}
	cfg.DialFunc = d.DialContext
	return cfg, nil
}

// listen runs a LISTEN loop on channels with reconnection. onReconnect runs
// after every successful LISTEN, the first included.
func (s *Store) listen(ctx context.Context, channels []string, onNotify func(channel, payload string), onReconnect func()) error {
	channel := strings.Join(channels, ",")
	cfg, err := s.listenConfig()
	if err != nil {
		return err
	}
	check := s.opts.Listen.CheckInterval
	if check <= 0 {
		check = defaultListenCheck
	}
	ping := s.opts.Listen.PingTimeout
	if ping <= 0 {
		ping = defaultListenPing
	}
	backoff := 50 * time.Millisecond
	first := true
	for {
		if hook := s.opts.Listen.BeforeConnect; hook != nil {
			hook(ctx)
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		for _, ch := range channels {
			if err == nil {
				_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize())
			}
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
			err = waitLoop(ctx, conn, check, ping, onNotify)
		}
		if conn != nil {
			// Bounded: a half-open connection must not hold up the reconnect.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			conn.Close(cctx)
			cancel()
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

// waitLoop hands on notifications until the connection fails. After check
// without one it makes sure the connection still answers within ping.
func waitLoop(ctx context.Context, conn *pgx.Conn, check, ping time.Duration, onNotify func(channel, payload string)) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, check)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if n != nil {
			onNotify(n.Channel, n.Payload)
		}
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("wait for notification: %w", err)
		}
		// A read timeout leaves the connection usable (pgconn only closes
		// on other errors). Notifications that arrive during the check
		// are kept by pgx for the next wait.
		pctx, cancel := context.WithTimeout(ctx, ping)
		_, err = conn.Exec(pctx, "SELECT 1")
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("liveness check: %w", err)
		}
	}
}
