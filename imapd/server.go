// Package imapd is mailstack's IMAP server over the PostgreSQL store. It
// owns its protocol layer (imapd/imapwire parses commands and encodes
// responses; one file per command family here), keeping go-imap/v2's
// public types where they help. Sessions keep their own sequence-number
// view of the selected mailbox; a process-local change feed (fed by the
// store's LISTEN connection and by local writes) brings every view up to
// date. ARCHITECTURE.md describes the design.
package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/store"
)

// DefaultMaxMessageSize is the APPEND limit when Options.MaxMessageSize is 0.
const DefaultMaxMessageSize = 50 << 20

// Options configure a Server.
type Options struct {
	// TLSConfig is used for implicit TLS (Serve) and STARTTLS
	// (ServeStartTLS). It is required: logins are refused without TLS.
	TLSConfig *tls.Config
	// MaxMessageSize is the largest APPEND accepted, in bytes (advertised
	// as APPENDLIMIT). 0 means DefaultMaxMessageSize.
	MaxMessageSize int64
	// MaxConnsPerAccount caps the concurrent authenticated connections of
	// one account in this process; 0 means no limit.
	MaxConnsPerAccount int
	// MessageLimit is the most messages one FETCH, STORE, COPY, MOVE or
	// UID EXPUNGE processes (advertised as MESSAGELIMIT, RFC 9738). 0
	// means DefaultMessageLimit.
	MessageLimit int
	// Logger receives the server's logs (default slog.Default()).
	Logger *slog.Logger
	// Metrics, if set, counts IDLE sessions and change-notification lag.
	Metrics *metrics.Mailstack
	// DebugWriter, if set, receives the raw protocol traffic (including
	// credentials): for tests and debugging only.
	DebugWriter io.Writer
	// Version is the server version ID reports (default "dev").
	Version string
}

// Server serves IMAP over one store. Create it with New; it is safe for
// concurrent use.
type Server struct {
	st   *store.Store
	opts Options
	log  *slog.Logger
	feed *feed
	caps capabilities
	// contents caches what never changes of messages read recently
	// (cache.go), for every session.
	contents *contentCache
	// buffers lends the sessions' response encoders their buffers.
	buffers sync.Pool
	// deflate lends compressing sessions their compressors (compress.go).
	deflate deflaters

	cancel    context.CancelFunc
	ctx       context.Context
	listening sync.WaitGroup // the feed's Listen goroutine
	closeOnce sync.Once

	mu        sync.Mutex
	conns     map[int64]int // authenticated connections per account
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	serving   sync.WaitGroup // connection goroutines
	closed    bool
}

// New returns a server for st and starts its change feed (the store's
// dedicated LISTEN connection). Call Close to stop it.
func New(st *store.Store, opts Options) *Server {
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.MaxMessageSize > 1<<32-1 {
		opts.MaxMessageSize = 1<<32 - 1 // APPENDLIMIT is a uint32
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", "imap")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		st:        st,
		opts:      opts,
		log:       log,
		ctx:       ctx,
		cancel:    cancel,
		conns:     map[int64]int{},
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
		caps:      newCapabilities(opts.MaxMessageSize, opts.messageLimit()),
		contents:  newContentCache(contentCacheMax),
	}
	s.feed = newFeed(ctx, st, log)
	s.listening.Add(1)
	go func() {
		defer s.listening.Done()
		if err := st.Listen(ctx, func(ev store.ChangeEvent) {
			if ev.Logins != nil || ev.Resync {
				s.loginsChanged(ev.Logins)
			}
			switch {
			case ev.Logins != nil:
				return
			case ev.Resync:
				// Notifications may have been lost: re-read every
				// watched mailbox.
				s.feed.resync()
				return
			}
			s.feed.notifySafely(ev.MailboxChange)
			if !ev.At.IsZero() {
				s.opts.Metrics.ObserveNotifyLag(time.Since(ev.At).Seconds())
			}
		}); err != nil && ctx.Err() == nil {
			log.Error("change feed stopped", "err", err)
		}
	}()
	return s
}

// Serve accepts implicit-TLS connections (port 993) on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	if s.opts.TLSConfig == nil {
		return errors.New("imapd: Serve needs Options.TLSConfig")
	}
	return s.serve(ln, true)
}

// ServeStartTLS accepts cleartext connections (port 143) on ln until Close.
// Clients must issue STARTTLS before they may log in (LOGINDISABLED).
func (s *Server) ServeStartTLS(ln net.Listener) error {
	return s.serve(ln, false)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return net.ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: back off, as
				// net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		sess := s.newSession(c, implicitTLS)
		if sess == nil {
			c.Close()
			continue
		}
		go sess.serve()
	}
}

// closeGrace is how long Close lets sessions finish their command and say
// BYE before it cuts their connections.
const closeGrace = 5 * time.Second

// Close stops the listeners, ends every session (with BYE where it is
// waiting for the client; a command under way is cut after closeGrace)
// and stops the change feed. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for ln := range s.listeners {
			ln.Close()
		}
		s.mu.Unlock()
		s.cancel()
		s.mu.Lock()
		for sess := range s.sessions {
			// Wakes a session waiting for a command or for DONE: it says
			// BYE and ends.
			sess.nc.SetReadDeadline(time.Now()) //nolint:errcheck // closed below if need be
		}
		s.mu.Unlock()
		done := make(chan struct{})
		go func() { s.serving.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(closeGrace):
			s.mu.Lock()
			for sess := range s.sessions {
				sess.nc.Close()
			}
			s.mu.Unlock()
			<-done
		}
		s.listening.Wait()
	})
	return nil
}

// loginsChanged makes the sessions whose login c may have invalidated (all
// of them when c is nil: notifications may have been lost) check their
// login before their next command, and wakes those in IDLE to check now.
// Between such notifications a session runs its commands without
// checking: the notification comes in the transaction that revokes.
func (s *Server) loginsChanged(c *store.LoginChange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sess := range s.sessions {
		if l := sess.loginNow(); l != nil && (c == nil || c.Affects(l)) {
			sess.recheck.Store(true)
			select {
			case sess.wake <- struct{}{}:
			default:
			}
		}
	}
}

// acquireConn counts an authenticated connection of the account, refusing
// it past MaxConnsPerAccount.
func (s *Server) acquireConn(accountID int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if max := s.opts.MaxConnsPerAccount; max > 0 && s.conns[accountID] >= max {
		return false
	}
	s.conns[accountID]++
	return true
}

func (s *Server) releaseConn(accountID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[accountID]--; s.conns[accountID] <= 0 {
		delete(s.conns, accountID)
	}
}
