package main

import (
	"context"
	"net"
	"sync"

	"github.com/mailstack/mailstack/imapd"
)

// imapListeners returns the IMAP listeners (993 implicit TLS, 143 STARTTLS).
// Both share one imapd.Server, so one change feed (one LISTEN connection)
// serves every IMAP session of the process; it starts with the first
// listener and stops with the last.
func (s *server) imapListeners() []listener {
	var (
		mu      sync.Mutex
		srv     *imapd.Server
		running int
	)
	get := func() *imapd.Server {
		mu.Lock()
		defer mu.Unlock()
		if srv == nil {
			srv = imapd.New(s.st, imapd.Options{
				TLSConfig:          s.tls,
				MaxMessageSize:     s.cfg.maxMessageSize,
				MaxConnsPerAccount: int(s.cfg.maxConnsPerAccount),
				Logger:             s.log,
				Metrics:            s.metrics,
				Version:            shortVersion(),
			})
		}
		running++
		return srv
	}
	stop := func() error {
		mu.Lock()
		defer mu.Unlock()
		if running--; running == 0 && srv != nil {
			return srv.Close()
		}
		return nil
	}
	start := func(service string, serve func(*imapd.Server, net.Listener) error) func(context.Context, string) (func() error, func(context.Context) error, string, error) {
		return func(ctx context.Context, addr string) (func() error, func(context.Context) error, string, error) {
			var lc net.ListenConfig
			ln, err := lc.Listen(ctx, "tcp", addr)
			if err != nil {
				return nil, nil, "", err
			}
			ln = s.counted(ln, service)
			srv := get()
			var once sync.Once
			var closeErr error
			shutdown := func(context.Context) error {
				// Close says BYE to every session within a few seconds
				// (clients reconnect, nothing acknowledged is lost).
				once.Do(func() {
					ln.Close()
					closeErr = stop()
				})
				return closeErr
			}
			return func() error { return serve(srv, ln) }, shutdown, ln.Addr().String(), nil
		}
	}
	return []listener{
		{name: "imaps", addr: s.cfg.imapAddr, start: start("imap", (*imapd.Server).Serve)},
		{name: "imap", addr: s.cfg.imapStartTLSAddr, start: start("imap-starttls", (*imapd.Server).ServeStartTLS)},
	}
}
