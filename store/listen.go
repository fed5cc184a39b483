package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ChangeEvent is what Listen hands on: a change to a mailbox (the
// MailboxChange fields), or a change of logins (Logins set), or a Resync:
// notifications may have been lost (the LISTEN connection dropped), so
// every watched mailbox must be re-read from the database.
type ChangeEvent struct {
	MailboxChange
	Resync bool
	// Logins, if set, says instead that logins of an account may have
	// become invalid (an app password revoked, the account disabled or
	// deleted): announced on LoginChannel.
	Logins *LoginChange
}

// Listen calls fn for every notification on MailboxChannel and
// LoginChannel, in order and never concurrently, until ctx is done. It
// subscribes to the process's one LISTEN connection (see subscribe), and
// calls fn with a Resync event whenever notifications may have been lost:
// once it is subscribed, and after each reconnection. It returns ctx's
// error, or at once an error in ListenOptions.
func (s *Store) Listen(ctx context.Context, fn func(ChangeEvent)) error {
	return s.subscribe(ctx, []string{MailboxChannel, LoginChannel}, func(channel, payload string) {
		if channel == LoginChannel {
			c, err := decodeLoginChange(payload)
			if err != nil {
				s.log.Warn("bad login notification", "payload", payload, "err", err)
				return
			}
			fn(ChangeEvent{Logins: c})
			return
		}
		c, err := decodeMailboxChange(payload)
		if err != nil {
			s.log.Warn("bad change notification", "payload", payload, "err", err)
			return
		}
		fn(ChangeEvent{MailboxChange: c})
	}, func() { fn(ChangeEvent{Resync: true}) })
}

// listenWake sends on wake (without blocking) for every notification on
// channel and whenever some may have been lost (once subscribed, and after
// each reconnection), until ctx is done: a worker's wake-up.
func (s *Store) listenWake(ctx context.Context, channel string, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if err := s.subscribe(ctx, []string{channel}, func(string, string) { signal() }, signal); err != nil && ctx.Err() == nil {
		// The worker still polls.
		s.log.Error("change feed: cannot listen", "channel", channel, "err", err)
	}
}

// ListenOptions configure the process's LISTEN connection (Listen,
// ListenQueue, ListenLearn). The zero value is usable.
type ListenOptions struct {
	// URL, if set, is the database to LISTEN on (and to migrate) instead
	// of the pool's: a direct connection when the pool goes through a
	// transaction-pooling proxy (PgBouncer), which cannot carry LISTEN.
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
	// OnCheck, if set, is called after every liveness check that passed
	// (tests wait for healthy checks with it instead of for time).
	OnCheck func()
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

// listener is the process's LISTEN connection, shared by every
// subscriber of the Store (the IMAP change feed, the queue worker, the
// junk learner): one dedicated connection (not a pooled one, which a
// transaction-pooling proxy could not carry) on every channel of
// listenChannels. It runs while there are subscribers.
type listener struct {
	mu   sync.Mutex
	subs map[*subscription]struct{}
	// done is closed when the running loop ends (nil: none runs); stop
	// ends it.
	done chan struct{}
	stop context.CancelFunc
	// up is the generation of the connection now listening, 0 while none
	// is; every successful LISTEN takes a new generation (gens).
	up, gens uint64
}

// subscription is one subscriber of the listener. Its functions run with
// mu held, so never concurrently, and never after it ended.
type subscription struct {
	channels  []string
	notify    func(channel, payload string)
	connected func()
	mu        sync.Mutex
	gen       uint64 // the connection it was last told of (connected)
	ended     bool
}

func (sub *subscription) wants(channel string) bool { return slices.Contains(sub.channels, channel) }

// subscribe calls notify for every notification on channels, in order,
// until ctx is done, and connected once notifications begin to reach it
// and after every reconnection: notifications sent before that are lost.
// The first subscriber starts the process's LISTEN connection, the last
// one to leave stops it. It returns ctx's error, or at once an error in
// ListenOptions.
func (s *Store) subscribe(ctx context.Context, channels []string, notify func(channel, payload string), connected func()) error {
	cfg, err := s.listenConfig()
	if err != nil {
		return err
	}
	l := &s.listener
	sub := &subscription{channels: channels, notify: notify, connected: connected}
	sub.mu.Lock()
	l.mu.Lock()
	if l.subs == nil {
		l.subs = map[*subscription]struct{}{}
	}
	l.subs[sub] = struct{}{}
	if l.done == nil {
		lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		l.done, l.stop = make(chan struct{}), stop
		go s.listenLoop(lctx, cfg, l.done)
	}
	up := l.up
	l.mu.Unlock()
	if up != 0 {
		// Already listening: notifications reach it from now on.
		sub.gen = up
		connected()
	}
	sub.mu.Unlock()

	<-ctx.Done()
	sub.mu.Lock() // waits for a call under way
	sub.ended = true
	sub.mu.Unlock()
	l.mu.Lock()
	delete(l.subs, sub)
	var done chan struct{}
	if len(l.subs) == 0 {
		l.stop()
		done = l.done
		l.done, l.stop, l.up = nil, nil, 0
	}
	l.mu.Unlock()
	if done != nil {
		<-done
	}
	return ctx.Err()
}

// each calls fn for every subscriber that is still subscribed, with its
// mu held.
func (l *listener) each(fn func(sub *subscription)) {
	l.mu.Lock()
	subs := make([]*subscription, 0, len(l.subs))
	for sub := range l.subs {
		subs = append(subs, sub)
	}
	l.mu.Unlock()
	for _, sub := range subs {
		sub.mu.Lock()
		if !sub.ended {
			fn(sub)
		}
		sub.mu.Unlock()
	}
}

// Listening reports whether the process's LISTEN connection listens now
// (false also while no subscriber runs it).
func (s *Store) Listening() bool {
	s.listener.mu.Lock()
	defer s.listener.mu.Unlock()
	return s.listener.up != 0
}

// setUp records the generation of the connection listening now (0: none),
// unless the loop that ends with done has been stopped.
func (l *listener) setUp(done chan struct{}, gen uint64) {
	l.mu.Lock()
	if l.done == done {
		l.up = gen
	}
	l.mu.Unlock()
}

// listenLoop holds the LISTEN connection until ctx is done, reconnecting
// with backoff, then closes done.
func (s *Store) listenLoop(ctx context.Context, cfg *pgx.ConnConfig, done chan struct{}) {
	defer close(done)
	l := &s.listener
	check := cmp.Or(s.opts.Listen.CheckInterval, defaultListenCheck)
	ping := cmp.Or(s.opts.Listen.PingTimeout, defaultListenPing)
	backoff := 50 * time.Millisecond
	first := true
	for {
		if hook := s.opts.Listen.BeforeConnect; hook != nil {
			hook(ctx)
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		for _, ch := range listenChannels() {
			if err == nil {
				_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize())
			}
		}
		if err == nil {
			backoff = 50 * time.Millisecond
			if !first {
				s.log.Info("change feed reconnected")
			}
			first = false
			l.mu.Lock()
			l.gens++
			gen := l.gens
			l.mu.Unlock()
			l.setUp(done, gen)
			// Changes made before this LISTEN took effect (while the
			// connection was down, or before the first one came up while
			// sessions already watched mailboxes) were never announced.
			l.each(func(sub *subscription) {
				if sub.gen != gen {
					sub.gen = gen
					sub.connected()
				}
			})
			err = waitLoop(ctx, conn, check, ping, s.opts.Listen.OnCheck, func(channel, payload string) {
				l.each(func(sub *subscription) {
					// A subscriber not told of this connection yet hears
					// of it first (connected), then of what follows.
					if sub.gen == gen && sub.wants(channel) {
						sub.notify(channel, payload)
					}
				})
			})
			l.setUp(done, 0)
		}
		if conn != nil {
			// Bounded: a half-open connection must not hold up the reconnect.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			conn.Close(cctx)
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("change feed connection lost; reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// waitLoop hands on notifications until the connection fails. After check
// without one it makes sure the connection still answers within ping.
func waitLoop(ctx context.Context, conn *pgx.Conn, check, ping time.Duration, onCheck func(), onNotify func(channel, payload string)) error {
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
		if onCheck != nil {
			onCheck()
		}
	}
}
