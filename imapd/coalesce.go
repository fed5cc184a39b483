package imapd

import (
	"net"
	"sync"
	"time"
)

// imapserver flushes its writer after every response line, so a FETCH of
// 100,000 messages would cost 100,000 TLS records and write syscalls.
// coalescingConn gathers small writes for a short while: it flushes when
// its buffer fills, before every Read (the server is then waiting for the
// client, so nothing may stay behind), and otherwise after coalesceDelay
// (unsolicited IDLE updates). On implicit-TLS connections it sits above
// TLS (whole records); on STARTTLS ones below it, because imapserver
// does the upgrade itself and recognises TLS by its *tls.Conn type.
type coalescingConn struct {
	net.Conn

	mu        sync.Mutex
	buf       []byte
	timer     *time.Timer
	pending   bool
	err       error
	wdeadline time.Time     // the write deadline the layer above set
	applied   time.Time     // the write deadline last set on Conn
	timeout   time.Duration // flushTimeout, or shorter in tests
}

const (
	coalesceDelay = 100 * time.Microsecond
	coalesceMax   = 64 << 10
	// flushTimeout bounds a write the layer above set no deadline for
	// (it clears its deadline after each response, but the bytes may go
	// out later): a client that stops reading cannot block us forever.
	flushTimeout = 30 * time.Second
)

type coalescingListener struct{ net.Listener }

func (l coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &coalescingConn{Conn: c, timeout: flushTimeout}, nil
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(c.buf)+len(p) > coalesceMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= coalesceMax {
			return c.writeLocked(p)
		}
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, coalesceMax)
	}
	c.buf = append(c.buf, p...)
	if !c.pending {
		c.pending = true
		if c.timer == nil {
			c.timer = time.AfterFunc(coalesceDelay, c.flushTimer)
		} else {
			c.timer.Reset(coalesceDelay)
		}
	}
	return len(p), nil
}

// writeLocked writes p under the deadline the layer above set last, or
// under flushTimeout if it set none. Deadlines reach Conn only here:
// imapserver sets one before every response line, and passing each on
// costs more than coalescing saves.
func (c *coalescingConn) writeLocked(p []byte) (int, error) {
	d := c.wdeadline
	if d.IsZero() {
		d = time.Now().Add(c.timeout)
	}
	if !d.Equal(c.applied) {
		c.Conn.SetWriteDeadline(d) //nolint:errcheck // a failed write reports it
		c.applied = d
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

func (c *coalescingConn) flushLocked() error {
	c.pending = false
	if len(c.buf) == 0 {
		return c.err
	}
	_, err := c.writeLocked(c.buf)
	c.buf = c.buf[:0]
	return err
}

// release flushes and lets the buffer go: the connection is idle (the
// server waits for the client, or nothing was written for a while), and
// thousands of idle IDLE sessions should not keep 64 KiB each.
func (c *coalescingConn) release() error {
	err := c.flushLocked()
	c.buf = nil
	return err
}

func (c *coalescingConn) flushTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending {
		c.release() //nolint:errcheck // the error is kept for the next Write
	}
}

// Read flushes pending output first: the peer may be waiting for it.
func (c *coalescingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	err := c.release()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *coalescingConn) Close() error {
	c.mu.Lock()
	c.flushLocked() //nolint:errcheck // closing anyway
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// SetDeadline and SetWriteDeadline flush first when the deadline is not in
// the future: crypto/tls sets a write deadline of "now" right after queueing
// its close_notify alert, which would otherwise fail the flush of everything
// still buffered (the BYE and OK of LOGOUT). imapserver sets a future write
// deadline before every response; flushing then would undo the coalescing.
// The write deadline itself is applied lazily, by writeLocked.
func (c *coalescingConn) SetDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *coalescingConn) SetWriteDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return nil
}

func (c *coalescingConn) setWriteDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.IsZero() && time.Until(t) < time.Second {
		c.flushLocked() //nolint:errcheck // the error is kept for the next Write
	}
	c.wdeadline = t
}

// flushIdle is flush for a connection that goes quiet: it also lets the
// buffer go (release).
func (c *coalescingConn) flushIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.release() //nolint:errcheck // the error is kept for the next Write
}

func (c *coalescingConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked() //nolint:errcheck // the error is kept for the next Write
}
