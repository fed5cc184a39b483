package main

import (
	"context"
	"flag"
	"time"

	"github.com/mailstack/mailstack/internal/rspamd"
)

// rspamdConfig is serve's junk filtering: rspamd at the MX and learning
// from the Junk folder. Off while url is empty.
type rspamdConfig struct {
	url, controllerURL, password string
	timeout                      time.Duration
	tempFail                     bool
}

func (c *rspamdConfig) register(fs *flag.FlagSet, env *envDefaults) {
	fs.StringVar(&c.url, "rspamd-url", envOr("MAILSTACK_RSPAMD_URL", ""), "rspamd's scanner (normal worker), http://host:11333: the MX asks it about every message (reject, greylist, Junk) and learns from moves into and out of Junk; empty: no content filtering (env MAILSTACK_RSPAMD_URL)")
	fs.StringVar(&c.controllerURL, "rspamd-controller-url", envOr("MAILSTACK_RSPAMD_CONTROLLER_URL", ""), "rspamd's controller, which learns; empty: the scanner's host on port 11334 (env MAILSTACK_RSPAMD_CONTROLLER_URL)")
	fs.StringVar(&c.password, "rspamd-password", envOr("MAILSTACK_RSPAMD_PASSWORD", ""), "the controller's password; empty when it trusts mailstack's address (secure_ip) (env MAILSTACK_RSPAMD_PASSWORD)")
	c.timeout = env.duration("MAILSTACK_RSPAMD_TIMEOUT", rspamd.DefaultTimeout)
	fs.DurationVar(&c.timeout, "rspamd-timeout", c.timeout, "longest wait for rspamd's verdict on one message; past it the message is not scanned (env MAILSTACK_RSPAMD_TIMEOUT)")
	c.tempFail = env.boolean("MAILSTACK_RSPAMD_TEMPFAIL", false)
	fs.Var((*boolFlag)(&c.tempFail), "rspamd-tempfail", "when rspamd gives no verdict, answer 451 so the sender retries, instead of delivering the message marked as not scanned (env MAILSTACK_RSPAMD_TEMPFAIL)")
}

// rspamdClient returns the client of -rspamd-url, or nil when it is empty.
func (s *server) rspamdClient() (*rspamd.Client, error) {
	c := s.cfg.rspamd
	if c.url == "" {
		return nil, nil
	}
	if s.rspamd == nil {
		cl, err := rspamd.New(rspamd.Config{URL: c.url, ControllerURL: c.controllerURL, Password: c.password, Timeout: c.timeout})
		if err != nil {
			return nil, err
		}
		s.rspamd = cl
	}
	return s.rspamd, nil
}

// startLearner starts this process's junk learner, which runs like a
// listener so that it starts and stops with the others. Its "address" in
// the banner is rspamd's controller.
func (s *server) startLearner(ctx context.Context, _ string) (func() error, func(context.Context) error, string, error) {
	cl, err := s.rspamdClient()
	if err != nil {
		return nil, nil, "", err
	}
	s.metrics.Registry.NewGaugeFunc("mailstack_junk_learn_backlog", "Messages waiting to be taught to rspamd (all processes).",
		func(ctx context.Context) (float64, error) {
			n, err := s.st.LearnBacklog(ctx)
			return float64(n), err
		})
	go func() {
		// Only a warning: rspamd (in compose) may start after mailstack.
		if err := cl.Ping(ctx); err != nil {
			s.log.Warn("rspamd does not answer yet: inbound mail is delivered unscanned until it does", "url", cl.URL(), "err", err)
		}
	}()
	l := rspamd.NewLearner(rspamd.LearnerConfig{Store: s.st, Client: cl, Log: s.log.With("service", "junk-learner"), Metrics: s.metrics})
	run, shutdown := background(ctx, l.Run)
	return run, shutdown, "rspamd " + cl.URL(), nil
}

// background runs work like a listener: run blocks until shutdown (or
// ctx) ends it; shutdown waits for it to return, or for its own context.
func background(ctx context.Context, work func(context.Context)) (run func() error, shutdown func(context.Context) error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	run = func() error {
		defer close(done)
		work(ctx)
		return nil
	}
	shutdown = func(sctx context.Context) error {
		cancel()
		select {
		case <-done:
			return nil
		case <-sctx.Done():
			return sctx.Err()
		}
	}
	return run, shutdown
}
