package imapd

import (
	"errors"
	"strings"
	"time"
)

// cmdIdle is IDLE (RFC 2177): updates go out as they come until DONE.
// DONE is read on a goroutine of its own while this one writes; nothing
// else reads or writes meanwhile.
func (s *session) cmdIdle(c *cmd) error {
	if err := c.end(); err != nil {
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
	// Leaving other than by DONE, the reader still owns the input: stop
	// it, and end the session, since where the next command starts is
	// unknown.
	stop := func(err error) error {
		s.conn.SetReadDeadline(time.Now()) //nolint:errcheck // the read fails either way
		<-done
		if errors.Is(err, errSessionEnded) {
			return err
		}
		if !isDisconnect(err) {
			s.log.Error("idle failed", "err", err)
			s.bye("Temporary server failure; please reconnect")
		}
		return errSessionEnded
	}
	sel := s.sel
	var wake <-chan struct{}
	if sel != nil {
		wake = sel.wake
		defer s.srv.opts.Metrics.IdleStarted()()
	}
	for {
		if err := s.poll(sel, true); err != nil {
			return stop(err)
		}
		if err := s.enc.Release(); err != nil {
			return stop(err)
		}
		select {
		case <-wake:
		case <-s.wake:
			// A login change (store.LoginChannel) or a reconnected
			// LISTEN: IDLE is one long command, so check here.
			if err := s.begin(); err != nil {
				return stop(err)
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
			return stop(errSessionEnded)
		}
	}
}
