package main

import (
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestRootAdminOnServiceData is the systemd setup: serve runs as the
// service user on its data directory, and root types admin commands.
// Root's commands must run as the service user (the test uses "nobody"),
// so that nothing in the data directory becomes root's or postgres' (a
// root-owned lock file made the service user's next command hang; a
// cluster handed to postgres kept serve from starting); root's serve is
// refused; and serve replaces a lock file root left behind before.
func TestRootAdminOnServiceData(t *testing.T) {
	if os.Geteuid() != 0 {
		// Without root nobody else's directory can be made: check that a
		// user's own data directory needs no switch.
		if _, _, ok := (&dbFlags{dataDir: t.TempDir()}).needsOwner(); ok {
			t.Fatal("a non-root user's own data directory asks for another user")
		}
		return
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	base := t.TempDir()
	// nobody must reach the data directory and the binary.
	for d := base; d != "/"; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
	exe := filepath.Join(base, "mailstack")
	copyFile(t, exe, 0o755)
	data := filepath.Join(base, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, uid, gid); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MAILSTACK_DATABASE_URL", "")
	run := func(asNobody bool, stdin string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), asMainEnv+"=1")
		cmd.Stdin = strings.NewReader(stdin)
		if asNobody {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	serveAsNobody := func() (stop func() string) {
		t.Helper()
		cmd := exec.Command(exe, append([]string{"serve", "--dev", "--data-dir=" + data}, loopbackListeners...)...)
		cmd.Env = append(os.Environ(), asMainEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		stopped := false
		stop = func() string {
			if !stopped {
				stopped = true
				cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
				if err := <-done; err != nil {
					t.Errorf("serve as nobody: %v\n%s", err, out.String())
				}
			}
			return out.String()
		}
		t.Cleanup(func() { stop() })
		r := &running{out: out, done: done}
		r.waitOutput(t, "Stop with Ctrl-C")
		return stop
	}
	// ownedByNobody fails the test for anything in the data directory that
	// is not nobody's.
	ownedByNobody := func(step string) {
		t.Helper()
		err := filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
				t.Errorf("%s: %s belongs to uid %d, not nobody", step, path, st.Uid)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	stop := serveAsNobody()
	out, code := run(false, "alice-main-password\n", "user", "add", "--data-dir="+data, "alice@localhost")
	if code != 0 || !strings.Contains(out, "Account alice@localhost created") {
		t.Fatalf("root's user add: exit %d\n%s", code, out)
	}
	ownedByNobody("after root's user add, serve running")
	if out, code := run(true, "", "user", "list", "--data-dir="+data); code != 0 || !strings.Contains(out, "alice@localhost") {
		t.Fatalf("the service user's next command: exit %d\n%s", code, out)
	}
	if out := stop(); strings.Contains(out, "permission denied") {
		t.Fatalf("serve's shutdown:\n%s", out)
	}
	// serve stopped: root's command runs the cluster, as nobody.
	if out, code := run(false, "", "user", "list", "--data-dir="+data); code != 0 || !strings.Contains(out, "alice@localhost") {
		t.Fatalf("root's user list, serve stopped: exit %d\n%s", code, out)
	}
	ownedByNobody("after root's user list, serve stopped")
	// root's serve would run the service user's cluster as root: refused.
	if out, code := run(false, "", append([]string{"serve", "--data-dir=" + data}, loopbackListeners...)...); code != 1 ||
		!strings.Contains(out, "belongs to user nobody: run serve as that user") {
		t.Fatalf("root's serve on nobody's data: exit %d\n%s", code, out)
	}
	// A lock file root left (before this fix) is replaced by serve.
	lock := filepath.Join(data, "postgres.guests.lock")
	os.Remove(lock)
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stop = serveAsNobody()
	if out, code := run(true, "", "user", "list", "--data-dir="+data); code != 0 || !strings.Contains(out, "alice@localhost") {
		t.Fatalf("the service user's command after serve's repair: exit %d\n%s", code, out)
	}
	if out := stop(); !strings.Contains(out, "replaced a lock file") {
		t.Fatalf("serve did not say it replaced root's lock file:\n%s", out)
	}
	ownedByNobody("after serve's repair")

	// A cluster an older version handed to postgres: serve says how to
	// give it back instead of "PG_VERSION: permission denied".
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	pgUID, _ := strconv.Atoi(pg.Uid)
	if err := os.Chown(filepath.Join(data, "postgres"), pgUID, gid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"serve", "--dev", "--data-dir=" + data}, loopbackListeners...)...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	res, err := cmd.CombinedOutput()
	want := "belongs to user postgres, but this runs as nobody; run it as postgres, or, if nobody should own it, as root: chown -R nobody: " + filepath.Join(data, "postgres") + "."
	if err == nil || !strings.Contains(string(res), want) {
		t.Fatalf("serve on a cluster of another user: %v\n%s\nwant %q", err, res, want)
	}
}

// copyFile copies this test binary to dst with mode perm.
func copyFile(t *testing.T, dst string, perm os.FileMode) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
