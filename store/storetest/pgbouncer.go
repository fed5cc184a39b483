package storetest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store/pglocal"
)

// PgBouncer runs a PgBouncer in transaction pooling mode (pool_mode =
// transaction, as deployments put in front of PostgreSQL) on a random
// 127.0.0.1 port, in front of the server of dbURL, until the test ends,
// and returns dbURL's database through it. The URL asks for nothing about
// query modes: a caller adds what its client needs. The test fails if
// pgbouncer is not installed (deploy/install-deps installs it).
func PgBouncer(t testing.TB, dbURL string) string {
	t.Helper()
	bin := ""
	// Debian's package puts it in /usr/sbin, which may not be in PATH.
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if p, err := exec.LookPath("pgbouncer"); err == nil {
			bin = p
		} else {
			t.Fatal("storetest: pgbouncer is not installed (Debian package pgbouncer; deploy/install-deps installs it)")
		}
	}
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	dir, err := os.MkdirTemp("", "mailstack-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// PgBouncer refuses to run as root, as PostgreSQL does: then it runs
	// as the postgres user, who runs the test cluster too.
	cred, err := pglocal.RunAs()
	if err != nil {
		t.Fatalf("storetest: pgbouncer: %v", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	// The server: host is a socket directory or a host name, as in dbURL.
	server := fmt.Sprintf("host=%s port=%d", cfg.Host, cfg.Port)
	if cfg.Password != "" {
		server += " password=" + cfg.Password
	}
	userlist := fmt.Sprintf("%q \"\"\n", cfg.User)
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		ini := fmt.Sprintf(`[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = %s
`, server, port, filepath.Join(dir, "userlist.txt"), filepath.Join(dir, "pgbouncer.log"))
		conf := filepath.Join(dir, "pgbouncer.ini")
		if err := os.WriteFile(conf, []byte(ini), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, conf)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("storetest: start pgbouncer: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		u := &url.URL{Scheme: "postgres", User: url.User(cfg.User), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Path: "/" + cfg.Database, RawQuery: "sslmode=disable"}
		err = waitPgBouncer(u.String(), exited)
		if err == nil {
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill() //nolint:errcheck
					<-exited
				}
			})
			return u.String()
		}
		cmd.Process.Kill() //nolint:errcheck
		<-exited
		log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		if attempt == 2 {
			t.Fatalf("storetest: pgbouncer did not come up: %v\n%s", err, log)
		}
		// Most likely another process took the port meanwhile: again.
	}
}

// waitPgBouncer waits until a query goes through the PgBouncer at u.
func waitPgBouncer(u string, exited <-chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, u+"&default_query_exec_mode=simple_protocol")
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("pgbouncer exited (%v): %w", werr, err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
