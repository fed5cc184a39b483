// Package imapd is mailstack's IMAP server: a go-imap/v2 imapserver backend
// over the PostgreSQL store. Sessions keep their own sequence-number view of
// the selected mailbox; a process-local change feed (fed by the store's
// LISTEN connection and by local writes) brings every view up to date.
package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

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
	// Logger receives the server's logs (default slog.Default()).
	Logger *slog.Logger
	// Metrics, if set, counts IDLE sessions and change-notification lag.
	Metrics *metrics.Mailstack
	// DebugWriter, if set, receives the raw protocol traffic (including
	// credentials): for tests and debugging only.
	DebugWriter io.Writer
}

// Server serves IMAP over one store. Create it with New; it is safe for
// concurrent use.
type Server struct {
	st   *store.Store
	opts Options
	log  *slog.Logger
	imap *imapserver.Server // STARTTLS connections (ServeStartTLS)
	// imapTLS serves implicit-TLS connections (Serve). imapserver sees
	// them through a coalescing layer above TLS, so not as *tls.Conn:
	// InsecureAuth only tells it that they are secure (Serve makes every
	// one of them TLS) and TLSConfig is unset, so it offers no STARTTLS.
	imapTLS *imapserver.Server
	feed    *feed

	cancel    context.CancelFunc
	ctx       context.Context
	listening sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu    sync.Mutex
	conns map[int64]int // authenticated connections per account

	idleRecheck time.Duration // how often IDLE re-checks credentials
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
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", "imap")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		st:     st,
		opts:   opts,
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		conns:  map[int64]int{},

		idleRecheck: idleRecheck,
	}
	s.feed = newFeed(ctx, st, log)
	s.imap = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         capabilities(),
		Logger:       printfLogger{log},
		TLSConfig:    opts.TLSConfig,
		InsecureAuth: false, // LOGINDISABLED until STARTTLS
		DebugWriter:  opts.DebugWriter,
	})
	s.imapTLS = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         capabilities(),
		Logger:       printfLogger{log},
		InsecureAuth: true, // every connection is TLS: see Server.imapTLS
		DebugWriter:  opts.DebugWriter,
	})
	s.listening.Add(1)
	go func() {
		defer s.listening.Done()
		if err := st.Listen(ctx, func(ev store.ChangeEvent) {
			s.feed.notifySafely(ev)
			if !ev.At.IsZero() {
				s.opts.Metrics.ObserveNotifyLag(time.Since(ev.At).Seconds())
			}
		}); err != nil && ctx.Err() == nil {
			log.Error("change feed stopped", "err", err)
		}
	}()
	return s
}

// capabilities lists what the sessions implement; imapserver adds IDLE,
// UNSELECT, ENABLE, SASL-IR, LITERAL-, STARTTLS/LOGINDISABLED and
// APPENDLIMIT itself. LITERAL+ is left out on purpose: imapserver cannot
// swallow a refused non-synchronising APPEND literal (e.g. over the size
// limit), which would then be parsed as commands.
func capabilities() imap.CapSet {
	caps := imap.CapSet{}
	for _, c := range []imap.Cap{
		imap.CapIMAP4rev1, imap.CapIMAP4rev2,
		imap.CapNamespace, imap.CapUIDPlus, imap.CapESearch, imap.CapSearchRes,
		imap.CapListExtended, imap.CapListStatus, imap.CapMove, imap.CapStatusSize,
		imap.CapBinary, imap.CapChildren, imap.CapSpecialUse, imap.CapCreateSpecialUse,
	} {
		caps[c] = struct{}{}
	}
	return caps
}

// Serve accepts implicit-TLS connections (port 993) on ln until Close.
// Small writes are gathered above TLS, into full TLS records: a FETCH of
// 100,000 messages is then about 300 records rather than 100,000.
func (s *Server) Serve(ln net.Listener) error {
	if s.opts.TLSConfig == nil {
		return errors.New("imapd: Serve needs Options.TLSConfig")
	}
	return s.imapTLS.Serve(coalescingListener{tls.NewListener(ln, s.opts.TLSConfig)})
}

// ServeStartTLS accepts cleartext connections (port 143) on ln until Close.
// Clients must issue STARTTLS before they may log in (LOGINDISABLED).
func (s *Server) ServeStartTLS(ln net.Listener) error {
	return s.imap.Serve(coalescingListener{ln})
}

// Close stops the listeners, ends every connection at once and stops the
// change feed. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		for _, srv := range []*imapserver.Server{s.imap, s.imapTLS} {
			if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) && s.closeErr == nil {
				s.closeErr = err
			}
		}
		s.cancel()
		s.listening.Wait()
	})
	return s.closeErr
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

// printfLogger adapts slog to imapserver's Printf logger.
type printfLogger struct{ log *slog.Logger }

func (l printfLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...))
}
