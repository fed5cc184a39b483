package pglocal

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func start(t *testing.T, ctx context.Context, dir string) *Cluster {
	t.Helper()
	c, err := Start(ctx, dir, Options{NoFsync: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// query opens a connection on database and returns the result of one
// single-value query.
func query(t *testing.T, ctx context.Context, c *Cluster, database, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, c.URL(database))
	if err != nil {
		t.Fatalf("connect to %s: %v", database, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartStopRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")

	c := start(t, ctx, dir)
	if err := c.CreateDatabase(ctx, "mailstack"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateDatabase(ctx, "mailstack"); err != nil {
		t.Fatalf("second CreateDatabase: %v", err)
	}
	conn, err := pgx.Connect(ctx, c.URL("mailstack"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if got := query(t, ctx, c, "mailstack", "SHOW server_encoding"); got != "UTF8" {
		t.Errorf("server_encoding = %q, want UTF8", got)
	}
	if got := query(t, ctx, c, "mailstack", "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want empty", got)
	}
	if got := query(t, ctx, c, "mailstack", "SHOW max_connections"); got != "200" {
		t.Errorf("max_connections = %q, want 200", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid after Stop: %v", err)
	}

	// Restart on the existing cluster: no initdb, data kept.
	c = start(t, ctx, dir)
	if got := query(t, ctx, c, "mailstack", "SELECT v FROM t"); got != "kept" {
		t.Errorf("after restart got %q, want kept", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStartAfterKill checks that a cluster whose postmaster was SIGKILLed
// (stale postmaster.pid, crash recovery) starts again.
func TestStartAfterKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")

	c := start(t, ctx, dir)
	pidFile, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil || pid != c.proc.Pid {
		t.Fatalf("postmaster.pid holds %q, want %d", pidFile, c.proc.Pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	c.Stop(ctx) //nolint:errcheck // already dead; releases the socket dir

	c = start(t, ctx, dir)
	if got := query(t, ctx, c, "postgres", "SELECT 'up'"); got != "up" {
		t.Errorf("got %q", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLongDataDir checks the socket moves out of a data dir whose path is
// too long for a unix socket, and is removed by Stop.
func TestLongDataDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100), "data")

	c := start(t, ctx, dir)
	if c.sockDir == dir || !c.ownSockDir {
		t.Fatalf("socket dir %s for long data dir", c.sockDir)
	}
	if got := query(t, ctx, c, "postgres", "SELECT 'up'"); got != "up" {
		t.Errorf("got %q", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.sockDir); !os.IsNotExist(err) {
		t.Errorf("socket dir left behind: %v", err)
	}
}

func TestStartFailureReportsLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")
	c := start(t, ctx, dir)
	defer c.Stop(ctx) //nolint:errcheck

	// A second server on the same data dir must fail, quoting postgres.
	_, err := Start(ctx, dir, Options{NoFsync: true, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("second Start on a running cluster succeeded")
	}
	if !strings.Contains(err.Error(), "postmaster.pid") {
		t.Errorf("error lacks postgres' log: %v", err)
	}
}

// TestPostgresDiesWithParent runs Start in a child test process, SIGKILLs
// that process and checks that postgres exits too (Pdeathsig).
func TestPostgresDiesWithParent(t *testing.T) {
	if dir := os.Getenv("PGLOCAL_TEST_HELPER_DIR"); dir != "" {
		c := start(t, context.Background(), dir)
		fmt.Printf("pid=%d\n", c.proc.Pid)
		time.Sleep(time.Minute) // killed by the parent test
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPostgresDiesWithParent$")
	cmd.Env = append(os.Environ(), "PGLOCAL_TEST_HELPER_DIR="+filepath.Join(t.TempDir(), "data"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	sc := bufio.NewScanner(out)
	for pid == 0 && sc.Scan() {
		fmt.Sscanf(sc.Text(), "pid=%d", &pid) //nolint:errcheck
	}
	if pid == 0 {
		cmd.Process.Kill() //nolint:errcheck
		cmd.Wait()         //nolint:errcheck
		t.Fatal("helper did not start postgres")
	}
	cmd.Process.Kill() //nolint:errcheck
	cmd.Wait()         //nolint:errcheck
	for syscall.Kill(pid, 0) == nil {
		// Zombie until reaped by init; a zombie has exited, which is enough.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			break
		}
		if ctx.Err() != nil {
			syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck
			t.Fatalf("postgres (pid %d) survived its parent", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
