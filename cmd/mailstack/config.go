package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/term"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/pglocal"
)

// envOr returns the environment variable's value, or def when unset.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// parseBool accepts the usual spellings of a yes/no setting.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "y", "yes", "on":
		return true, nil
	case "0", "f", "false", "n", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not true or false (nor 1/0, yes/no, on/off)", s)
}

// boolFlag is a boolean flag that takes parseBool's spellings.
type boolFlag bool

func (b *boolFlag) String() string {
	if b == nil {
		return "false"
	}
	return strconv.FormatBool(bool(*b))
}

func (b *boolFlag) Set(s string) error {
	v, err := parseBool(s)
	if err != nil {
		return errors.New("want true or false (or 1/0, yes/no, on/off)")
	}
	*b = boolFlag(v)
	return nil
}

func (b *boolFlag) IsBoolFlag() bool { return true }

// envDefaults reads MAILSTACK_* variables as flag defaults. A value that
// does not parse is an error (reported once the flags are parsed), never a
// silent fall back to the built-in default.
type envDefaults struct{ err error }

func (e *envDefaults) fail(name, v, want string) {
	if e.err == nil {
		e.err = fmt.Errorf("%s=%q is not valid: %s", name, v, want)
	}
}

func (e *envDefaults) boolean(name string, def bool) bool {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	b, err := parseBool(v)
	if err != nil {
		e.fail(name, v, "want true or false (or 1/0, yes/no, on/off)")
		return def
	}
	return b
}

func (e *envDefaults) int64(name string, def int64) int64 {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		e.fail(name, v, "want a whole number")
		return def
	}
	return n
}

// duration reads a positive duration such as 10s.
func (e *envDefaults) duration(name string, def time.Duration) time.Duration {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d <= 0 {
		e.fail(name, v, "want a duration such as 10s")
		return def
	}
	return d
}

// parseSize reads a size in bytes: a whole number, optionally followed by
// a unit K, M, G or T (powers of 1024; KB, KiB, MB, MiB... mean the same),
// as in -quota 1G.
func parseSize(s string) (int64, error) {
	v := strings.ToUpper(strings.TrimSpace(s))
	v = strings.TrimSuffix(strings.TrimSuffix(v, "B"), "I")
	mult := int64(1)
	if i := strings.IndexAny(v, "KMGT"); i >= 0 && i == len(v)-1 {
		mult = 1 << (10 * (strings.IndexByte("KMGT", v[i]) + 1))
		v = strings.TrimSpace(v[:i])
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size: want bytes, or a number with K, M, G or T (e.g. 500M, 1G)", s)
	}
	return n * mult, nil
}

// sizeFlag is a byte-count flag that takes parseSize's units.
type sizeFlag int64

func (f *sizeFlag) String() string {
	if f == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*f), 10)
}

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return errors.New("want bytes, or a number with K, M, G or T (e.g. 500M, 1G)")
	}
	*f = sizeFlag(n)
	return nil
}

func (e *envDefaults) size(name string, def int64) int64 {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := parseSize(v)
	if err != nil {
		e.fail(name, v, "want bytes, or a number with K, M, G or T (e.g. 50M)")
		return def
	}
	return n
}

// defaultDataDir is where the managed PostgreSQL and generated certificates
// live unless -data-dir says otherwise (see the -data-dir help text).
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/mailstack"
	}
	return filepath.Join(userDataHome(), "mailstack")
}

// devDataDir is serve --dev's data directory: never the production one,
// so a later real serve does not inherit dev@localhost and its passwords.
// Root's is under /var/lib, as its production one, unless XDG_DATA_HOME
// says otherwise: under /root the postgres user could not reach it.
func devDataDir() string {
	if os.Geteuid() == 0 && os.Getenv("XDG_DATA_HOME") == "" {
		return "/var/lib/mailstack-dev"
	}
	return filepath.Join(userDataHome(), "mailstack-dev")
}

// userDataHome is $XDG_DATA_HOME, else ~/.local/share.
func userDataHome() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "."
	}
	return filepath.Join(home, ".local", "share")
}

// dbFlags are the database settings every command takes.
type dbFlags struct {
	url      string
	dataDir  string
	logLevel string

	// listenURL is a direct connection to the database of url, for what a
	// transaction-pooling proxy cannot carry (store.ListenOptions.URL).
	listenURL string
	// dev selects serve --dev's database: the managed cluster in
	// devDataDir, whatever MAILSTACK_DATABASE_URL and MAILSTACK_DATA_DIR
	// (production settings) say; -database-url and -data-dir still win.
	dev bool
}

// applyDev switches to serve --dev's database unless the command line set
// -database-url or -data-dir (set says which flags it set).
func (d *dbFlags) applyDev(set devSetter) {
	set.str("database-url", &d.url, "")
	set.str("data-dir", &d.dataDir, devDataDir())
}

// register adds the flags; defaultLevel is the command's log level unless
// -log-level or MAILSTACK_LOG_LEVEL says otherwise.
func (d *dbFlags) register(fs *flag.FlagSet, defaultLevel string) {
	fs.StringVar(&d.url, "database-url", envOr("MAILSTACK_DATABASE_URL", ""),
		"PostgreSQL URL (env MAILSTACK_DATABASE_URL); empty: run a managed local PostgreSQL in <data-dir>/postgres")
	fs.StringVar(&d.listenURL, "database-listen-url", envOr("MAILSTACK_DATABASE_LISTEN_URL", ""),
		"direct PostgreSQL URL of the same database, for the LISTEN connection and migrations, when -database-url goes through a transaction-pooling PgBouncer (env MAILSTACK_DATABASE_LISTEN_URL); empty: -database-url")
	fs.StringVar(&d.dataDir, "data-dir", envOr("MAILSTACK_DATA_DIR", defaultDataDir()),
		"directory for the managed PostgreSQL cluster and generated certificates; default /var/lib/mailstack as root, else $XDG_DATA_HOME/mailstack or ~/.local/share/mailstack; with -dev, $XDG_DATA_HOME/mailstack-dev, else /var/lib/mailstack-dev as root or ~/.local/share/mailstack-dev, and the variable is not read (env MAILSTACK_DATA_DIR)")
	fs.StringVar(&d.logLevel, "log-level", envOr("MAILSTACK_LOG_LEVEL", defaultLevel), "debug, info, warn or error (env MAILSTACK_LOG_LEVEL)")
}

func (d *dbFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(d.logLevel)); err != nil {
		return nil, fmt.Errorf("log level %q (-log-level or MAILSTACK_LOG_LEVEL) is not one of debug, info, warn or error", d.logLevel)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// openStore connects to the configured database, migrating it. With no URL
// it uses the managed cluster in the data directory as role says (see
// pglocal.Role): serve owns it, so it runs as long as serve does; an admin
// command is a guest, using serve's server if one runs, else a private one
// that stops with the command and is never lent to anyone, so no process
// ever loses its database because another one exited.
func (d *dbFlags) openStore(ctx context.Context, log *slog.Logger, opts store.Options, role pglocal.Role) (*store.Store, func(), error) {
	opts.Logger = log
	if d.url != "" {
		opts.Listen.URL = d.listenURL
	}
	url := d.url
	release := func() {}
	if url == "" {
		pgDir := filepath.Join(d.dataDir, "postgres")
		cluster, err := pglocal.Use(ctx, pgDir, role, pglocal.Options{Logger: log})
		if err != nil {
			return nil, nil, err
		}
		if cluster.Started() {
			log.Info("managed PostgreSQL started", "dir", pgDir)
		} else {
			log.Debug("using the managed PostgreSQL of the running mailstack serve", "dir", pgDir)
		}
		release = func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cluster.Close(sctx); err != nil {
				log.Error("stop managed PostgreSQL", "err", err)
			}
		}
		if err := cluster.CreateDatabase(ctx, "mailstack"); err != nil {
			release()
			return nil, nil, err
		}
		url = cluster.URL("mailstack")
	}
	openDB := store.Open
	if d.url != "" && role == pglocal.Owner {
		openDB = func(ctx context.Context, url string, opts store.Options) (*store.Store, error) {
			return openWaiting(ctx, log, url, opts, dbWait)
		}
	}
	st, err := openDB(ctx, url, opts)
	if err != nil {
		release()
		return nil, nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		release()
		return nil, nil, err
	}
	return st, func() { st.Close(); release() }, nil
}

// minMainPassword is the shortest main password accepted, in characters
// (NIST SP 800-63B's minimum). Devices use generated app passwords; the
// main one is typed by a person and guarded by throttling.
const minMainPassword = 8

// dbWait is how long serve waits for a database server that is not up
// yet: compose starts both at once, and podman-compose does not wait for
// PostgreSQL's health check.
const dbWait = 2 * time.Minute

// openWaiting opens the store at url, retrying for up to wait while the
// server cannot be reached or is still starting; any other failure (a
// wrong password, a missing database) is returned at once.
func openWaiting(ctx context.Context, log *slog.Logger, url string, opts store.Options, wait time.Duration) (*store.Store, error) {
	deadline := time.Now().Add(wait)
	for delay, logged := 250*time.Millisecond, false; ; delay = min(2*delay, 5*time.Second) {
		st, err := store.Open(ctx, url, opts)
		if err == nil || !notUpYet(err) || time.Now().Add(delay).After(deadline) {
			return st, err
		}
		if !logged {
			log.Warn("PostgreSQL is not reachable yet; waiting for it", "for_at_most", wait, "err", innermost(err))
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// notUpYet reports whether err means the database server is not (yet)
// accepting connections, rather than refusing this client.
func notUpYet(err error) bool {
	var conn *pgconn.ConnectError
	if !errors.As(err, &conn) {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "57P03" // cannot_connect_now: starting up
	}
	return true // refused, unreachable, or its name not resolvable yet
}

// readPassword asks for a main password on a terminal (twice, without
// echo) or reads the first line of stdin when it is not a terminal, and
// checks its length.
func (c *cli) readPassword(prompt string) (string, error) {
	pw, err := c.readPasswordText(prompt, true)
	if err == nil && utf8.RuneCountInString(pw) < minMainPassword {
		err = fmt.Errorf("the main password is too short: use at least %d characters", minMainPassword)
	}
	return pw, err
}

// readPasswordText asks on a terminal, without echo (twice with confirm,
// for a new password), or reads the first line of standard input: never
// from the command line, where other users of the machine could read it.
func (c *cli) readPasswordText(prompt string, confirm bool) (string, error) {
	if f, ok := c.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(c.stderr, prompt)
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if !confirm {
			return string(p1), nil
		}
		fmt.Fprint(c.stderr, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(p1) != string(p2) {
			return "", errors.New("the two passwords do not match")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no password given on standard input")
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}

// confirm asks on a terminal, or reads the first line of stdin, and
// reports whether the answer is yes or the word given (e.g. the address
// about to be deleted).
func (c *cli) confirm(prompt, word string) bool {
	if f, ok := c.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(c.stderr, prompt)
	}
	line, _ := bufio.NewReader(c.stdin).ReadString('\n')
	answer := strings.TrimSpace(line)
	return strings.EqualFold(answer, "yes") || strings.EqualFold(answer, word)
}
