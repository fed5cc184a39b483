package main

import (
	"context"
	"net"

	"github.com/mailstack/mailstack/internal/dnscheck"
	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/smtpd/outbound"
)

// smtpListeners returns the SMTP submission listeners (587 STARTTLS, 465
// implicit TLS), the inbound MX (cfg.mxAddr: port 25, 1025 with --dev; off
// when empty) and the outbound queue worker, which runs like a listener so
// that it starts and stops with the others.
func (s *server) smtpListeners() []listener {
	sub := smtpd.NewSubmission(smtpd.Config{
		Store:          s.st,
		Hostname:       s.cfg.hostname,
		TLS:            s.tls,
		MaxMessageSize: s.cfg.maxMessageSize,
		Log:            s.log.With("service", "submission"),
		Metrics:        s.metrics,
	})
	start := func(implicitTLS bool) func(context.Context, string) (func() error, func(context.Context) error, string, error) {
		return func(ctx context.Context, addr string) (func() error, func(context.Context) error, string, error) {
			var lc net.ListenConfig
			ln, err := lc.Listen(ctx, "tcp", addr)
			if err != nil {
				return nil, nil, "", err
			}
			srv := sub.Server(implicitTLS)
			ln = s.counted(ln, map[bool]string{false: "submission", true: "submissions"}[implicitTLS])
			return func() error { return srv.Serve(ln) }, srv.Shutdown, ln.Addr().String(), nil
		}
	}
	return []listener{
		{name: "submission", addr: s.cfg.submissionAddr, start: start(false)},
		{name: "submissions", addr: s.cfg.submissionsAddr, start: start(true)},
		{name: "mx", addr: s.cfg.mxAddr, start: s.startMX},
		{name: "outbound", addr: "queue", start: s.startOutbound},
		{name: "junk-learner", addr: s.cfg.rspamd.url, start: s.startLearner},
	}
}

// resolver is the DNS resolver of MX lookups and SPF/DKIM/DMARC checks:
// -dns-server's, or the system's.
func (s *server) resolver() *net.Resolver {
	if s.cfg.dnsServer != "" {
		return dnscheck.ResolverFor(s.cfg.dnsServer)
	}
	return net.DefaultResolver
}

// startMX starts the inbound MX: STARTTLS offered with the same
// certificate, no AUTH, SPF/DKIM/DMARC through resolver.
func (s *server) startMX(ctx context.Context, addr string) (func() error, func(context.Context) error, string, error) {
	spam, err := s.rspamdClient()
	if err != nil {
		return nil, nil, "", err
	}
	mx := smtpd.NewMX(smtpd.Config{
		Store:          s.st,
		Hostname:       s.cfg.hostname,
		TLS:            s.tls,
		MaxMessageSize: s.cfg.maxMessageSize,
		Log:            s.log.With("service", "mx"),
		Metrics:        s.metrics,
	}, smtpd.MXOptions{Resolver: s.resolver(), Rspamd: spam, RspamdTempFail: s.cfg.rspamd.tempFail})
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, "", err
	}
	srv := mx.Server()
	ln = s.counted(ln, "mx")
	return func() error { return srv.Serve(ln) }, srv.Shutdown, ln.Addr().String(), nil
}

// startOutbound starts this process's outbound queue worker. Its "address"
// in the banner says where mail goes: MX hosts or the relay.
func (s *server) startOutbound(ctx context.Context, _ string) (func() error, func(context.Context) error, string, error) {
	cfg := outbound.Config{Store: s.st, Hostname: s.cfg.hostname, Resolver: s.resolver(),
		Log: s.log.With("service", "outbound"), Metrics: s.metrics}
	where := "direct to MX hosts, port 25"
	if s.cfg.relay != "" {
		r, err := outbound.ParseRelay(s.cfg.relay)
		if err != nil {
			return nil, nil, "", err
		}
		cfg.Relay, where = r, "via relay "+r.String()
	}
	run, shutdown := background(ctx, outbound.New(cfg).Run)
	return run, shutdown, where, nil
}
