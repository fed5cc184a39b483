package imapd

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestCoalescingDelivers: small writes arrive, in order, without a Read or
// another Write to push them (the timer flushes).
func TestCoalescingDelivers(t *testing.T) {
	srv, cli := tcpPair(t)
	c := &coalescingConn{Conn: srv, timeout: time.Second}
	var want bytes.Buffer
	for i := 0; i < 100; i++ {
		line := []byte("* 1 FETCH (FLAGS (\\Seen))\r\n")
		want.Write(line)
		if _, err := c.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(cli, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("bytes differ")
	}
}

// TestCoalescingStalledPeer: a peer that stops reading makes writes fail
// after the flush timeout instead of blocking the session forever.
func TestCoalescingStalledPeer(t *testing.T) {
	srv, _ := tcpPair(t)
	c := &coalescingConn{Conn: srv, timeout: 200 * time.Millisecond}
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 4096; i++ { // 128 MiB at most: far beyond socket buffers
			if _, err := c.Write(chunk); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("128 MiB written to a peer that reads nothing")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("write to a stalled peer blocked past the flush timeout")
	}
	// A Read (which flushes first) must not hang either.
	srv.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded")
	}
}

// TestCoalescingFlushIdle: after IDLE's updates the layer sends what it
// holds at once and keeps no buffer (thousands of IDLE sessions would
// otherwise hold 64 KiB each).
func TestCoalescingFlushIdle(t *testing.T) {
	srv, cli := tcpPair(t)
	c := &coalescingConn{Conn: srv, timeout: time.Second}
	line := []byte("* 3 EXISTS\r\n")
	if _, err := c.Write(line); err != nil {
		t.Fatal(err)
	}
	c.flushIdle()
	c.mu.Lock()
	held, pending := c.buf != nil, c.pending
	c.mu.Unlock()
	if held || pending {
		t.Fatalf("after flushIdle: buffer held %v, flush pending %v", held, pending)
	}
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(line))
	if _, err := io.ReadFull(cli, got); err != nil || !bytes.Equal(got, line) {
		t.Fatalf("read %q, %v", got, err)
	}
}
