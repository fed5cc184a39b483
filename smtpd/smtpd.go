// Package smtpd holds mailstack's go-smtp server backends. Submission (587
// STARTTLS, 465 implicit TLS) is here; the inbound MX backend will sit
// beside it, sharing the server setup in this file and the delivery step in
// deliver.go. Outbound delivery is package smtpd/outbound.
package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"log/slog"
	"net"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/store"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxMessageSize = 50 << 20
	DefaultMaxRecipients  = 100
	DefaultReadTimeout    = 5 * time.Minute // RFC 5321 §4.5.3.2.7 server timeout
	DefaultWriteTimeout   = 2 * time.Minute
	// DefaultMaxConnections caps the open connections of one SMTP
	// listener; more are answered 421 4.7.0 and closed.
	DefaultMaxConnections = 2000
	// DefaultSubmissionMaxConnsPerIP caps the open connections from one
	// remote IP address to the submission listeners (587 and 465 together)
	// before login; more are answered 421 4.7.0 and closed. A household or
	// office behind one NAT address stays well below it.
	DefaultSubmissionMaxConnsPerIP = 50
	// maxLineLength is go-smtp's default (twice RFC 5321's 1000), stated
	// here so the limit is visible.
	maxLineLength = 2000
)

// Config configures an SMTP server.
type Config struct {
	Store *store.Store
	// Hostname is this server's name in the greeting and Received headers.
	Hostname string
	// TLS is the certificate configuration; required for submission.
	TLS *tls.Config
	// MaxMessageSize is the SIZE limit in bytes (default 50 MiB).
	MaxMessageSize int64
	// MaxRecipients is the per-message recipient limit (default 100).
	MaxRecipients int
	// MaxConnections limits the open connections of each listener
	// (default DefaultMaxConnections).
	MaxConnections int
	// MaxConnsPerIP limits the open connections from one remote IP address
	// to all submission listeners of a backend (default
	// DefaultSubmissionMaxConnsPerIP). The MX uses MXOptions.MaxConnsPerIP.
	MaxConnsPerIP int
	// ReadTimeout and WriteTimeout bound each network read and write.
	ReadTimeout, WriteTimeout time.Duration
	Log                       *slog.Logger
	// Metrics, if set, counts accepted messages.
	Metrics *metrics.Mailstack
}

func (c Config) withDefaults() Config {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnsPerIP <= 0 {
		c.MaxConnsPerIP = DefaultSubmissionMaxConnsPerIP
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Server is one SMTP listener.
type Server struct {
	srv         *smtp.Server
	implicitTLS bool
	tls         *tls.Config
	// wrap, if set, wraps the listener given to Serve (used to limit
	// connections, in total and per remote IP, before go-smtp sees them).
	wrap func(net.Listener) net.Listener
}

func newServer(cfg Config, be smtp.Backend, implicitTLS bool) *Server {
	s := smtp.NewServer(be)
	s.Domain = cfg.Hostname
	s.TLSConfig = cfg.TLS
	s.MaxMessageBytes = cfg.MaxMessageSize
	s.MaxRecipients = cfg.MaxRecipients
	s.MaxLineLength = maxLineLength
	s.ReadTimeout = cfg.ReadTimeout
	s.WriteTimeout = cfg.WriteTimeout
	// Passwords never travel in clear text: AUTH is neither advertised nor
	// accepted before TLS.
	s.AllowInsecureAuth = false
	s.ErrorLog = log.New(slogWriter{cfg.Log}, "", 0)
	return &Server{srv: s, implicitTLS: implicitTLS, tls: cfg.TLS}
}

// Serve accepts connections on l until Shutdown. For an implicit-TLS
// server, l is a plain TCP listener; TLS is added here.
func (s *Server) Serve(l net.Listener) error {
	if s.wrap != nil {
		l = s.wrap(l)
	}
	if s.implicitTLS {
		l = tls.NewListener(l, s.tls)
	}
	if err := s.srv.Serve(l); err != nil && err != smtp.ErrServerClosed {
		return fmt.Errorf("smtp serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for open sessions to end
// or ctx to be done. (go-smtp cannot force-close sessions after a graceful
// shutdown began; they end with the process.)
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil && err != smtp.ErrServerClosed {
		return fmt.Errorf("smtp shutdown: %w", err)
	}
	return nil
}

// slogWriter adapts go-smtp's log.Logger-style error log to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Error("smtp server", "msg", string(p))
	return len(p), nil
}
