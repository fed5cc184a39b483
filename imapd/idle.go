package imapd

import (
	"strings"
	"time"
)

// cmdIdle is IDLE (RFC 2177): updates go out as they come until DONE.
// DONE is read on a goroutine of its own while this one writes; nothing
// else reads or writes meanwhile.
func (s *session) cmdIdle(c *cmd) error {
	if err := s.ready(c); err != nil {
		return err
	}
	s.enc.Raw("+ idling").CRLF()
	if err := s.enc.Flush(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		s.conn.SetReadDeadline(time.Now().Add(authTimeout)) //nolint:errcheck // the read fails
		line, err := s.dec.Line()
		if err == nil && !strings.EqualFold(strings.TrimSpace(line), "DONE") {
			err = bad("Expected DONE")
		}
		done <- err
	}()
	sel := s.sel
	var wake <-chan struct{}
	if sel != nil {
		wake = sel.wake
		defer s.srv.opts.Metrics.IdleStarted()()
	}
	// IDLE is one long command: re-check the credentials now and then, so
	// that a revoked app password also ends sessions that only listen.
	recheck := time.NewTicker(s.srv.idleRecheck)
	defer recheck.Stop()
	for {
		if err := s.poll(sel, true); err != nil {
			return err
		}
		if err := s.enc.Release(); err != nil {
			return err
		}
		select {
		case <-wake:
		case <-s.wake:
			if err := s.begin(); err != nil {
				return err
			}
		case <-recheck.C:
			s.recheck.Store(true)
			if err := s.begin(); err != nil {
				return err
			}
		case err := <-done:
			if err == nil {
				// The tagged OK follows the last poll: nothing is pending
				// that it would not report.
				s.checked = true
			}
			return err
		case <-s.ctx.Done():
			if s.srv.ctx.Err() != nil {
				s.bye("Server shutting down; please reconnect")
			}
			return errSessionEnded
		}
	}
}
