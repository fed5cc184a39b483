package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mailstack/mailstack/store/pglocal"
)

// exitCode is the status of a command that ran as another process (see
// asDataDirOwner), which has printed whatever it had to say.
type exitCode int

func (e exitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// dataDirOwner returns the owner of dir when dir exists and belongs to
// someone other than root.
func dataDirOwner(dir string) (uid, gid uint32, ok bool) {
	uid, gid, ok = pglocal.DirOwner(dir)
	return uid, gid, ok && uid != 0
}

// needsOwner reports whether this command, run by root on the managed
// PostgreSQL, must run as the data directory's owner instead: the service
// user's files (cluster, lock files) must stay the service user's, or the
// service hangs or cannot start.
func (d *dbFlags) needsOwner() (uid, gid uint32, ok bool) {
	if d.url != "" || os.Geteuid() != 0 {
		return 0, 0, false
	}
	return dataDirOwner(d.dataDir)
}

// asDataDirOwner runs this same command line again as the owner of the
// data directory (uid, gid), with the same data directory, standard input
// and output, and returns its exit status as an exitCode. Root's admin
// commands go this way, as `runuser -u mailstack -- mailstack ...` would.
func (c *cli) asDataDirOwner(d *dbFlags, uid, gid uint32) error {
	name := pglocal.UserName(uid)
	dir, err := filepath.Abs(d.dataDir)
	if err != nil {
		return err
	}
	refuse := func(why error) error {
		return fmt.Errorf("the data directory %s belongs to user %s and running this command as that user failed (%v); run it as %s: runuser -u %s -- mailstack %s",
			dir, name, why, name, name, strings.Join(c.args, " "))
	}
	exe, err := os.Executable()
	if err != nil {
		return refuse(err)
	}
	cred := &syscall.Credential{Uid: uid, Gid: gid}
	env := append(os.Environ(), "MAILSTACK_DATA_DIR="+dir)
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		env = append(env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			cred.Gid = uint32(g)
		}
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil {
					cred.Groups = append(cred.Groups, uint32(g))
				}
			}
		}
	}
	cmd := exec.Command(exe, c.args...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, c.stdout, c.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if c.log != nil {
		c.log.Debug("running as the data directory's owner", "user", name, "dir", dir)
	}
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exitCode(exit.ExitCode())
	}
	return refuse(err)
}

// ownerSentence explains a managed cluster that belongs to another user
// than the one running the command (not root, which runs it as its owner).
func ownerSentence(e *pglocal.OwnerError) string {
	me := strconv.Itoa(os.Geteuid())
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	return sentence(fmt.Sprintf("the managed PostgreSQL in %s belongs to user %s, but this runs as %s; run it as %s, or, if %s should own it, as root: chown -R %s: %s",
		e.Dir, e.Owner, me, e.Owner, me, me, e.Dir))
}
