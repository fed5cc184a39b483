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

func envBool(name string, def bool) bool {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def
	}
	return b
}

func envInt(name string, def int64) int64 {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return def
	}
	return n
}

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/mailstack"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "mailstack")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "mailstack-data"
	}
	return filepath.Join(home, ".local", "share", "mailstack")
}

// dbFlags are the database settings every command takes.
type dbFlags struct {
	url      string
	dataDir  string
	logLevel string
}

func (d *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.url, "database-url", envOr("MAILSTACK_DATABASE_URL", ""),
		"PostgreSQL URL (env MAILSTACK_DATABASE_URL); empty: run a managed local PostgreSQL in the data directory")
	fs.StringVar(&d.dataDir, "data-dir", envOr("MAILSTACK_DATA_DIR", defaultDataDir()),
		"directory for the managed PostgreSQL cluster and generated certificates (env MAILSTACK_DATA_DIR)")
	fs.StringVar(&d.logLevel, "log-level", envOr("MAILSTACK_LOG_LEVEL", "info"), "debug, info, warn or error (env MAILSTACK_LOG_LEVEL)")
}

func (d *dbFlags) logger(w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(d.logLevel)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// openStore connects to the configured database, migrating it. With no URL
// it uses the managed cluster in the data directory: attaching to it if a
// running `mailstack serve` already started it, starting it otherwise (and
// then the returned close function stops it).
func (d *dbFlags) openStore(ctx context.Context, log *slog.Logger, opts store.Options) (*store.Store, func(), error) {
	opts.Logger = log
	url := d.url
	stopCluster := func() {}
	if url == "" {
		pgDir := filepath.Join(d.dataDir, "postgres")
		attach := "postgres://postgres@/mailstack?host=" + pgDir + "&sslmode=disable"
		if _, err := os.Stat(filepath.Join(pgDir, ".s.PGSQL.5432")); err == nil {
			if st, err := store.Open(ctx, attach, opts); err == nil {
				if err := st.Migrate(ctx); err != nil {
					st.Close()
					return nil, nil, err
				}
				return st, st.Close, nil
			}
		}
		log.Info("starting managed PostgreSQL", "dir", pgDir)
		cluster, err := pglocal.Start(ctx, pgDir, pglocal.Options{Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("start managed PostgreSQL (set MAILSTACK_DATABASE_URL to use your own): %w", err)
		}
		stopCluster = func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cluster.Stop(sctx); err != nil {
				log.Error("stop managed PostgreSQL", "err", err)
			}
		}
		if err := cluster.CreateDatabase(ctx, "mailstack"); err != nil {
			stopCluster()
			return nil, nil, err
		}
		url = cluster.URL("mailstack")
	}
	st, err := store.Open(ctx, url, opts)
	if err != nil {
		stopCluster()
		return nil, nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		stopCluster()
		return nil, nil, err
	}
	return st, func() { st.Close(); stopCluster() }, nil
}

// readPassword asks for a password on a terminal (twice, without echo) or
// reads the first line of stdin when it is not a terminal.
func (c *cli) readPassword(prompt string) (string, error) {
	if f, ok := c.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(c.stderr, prompt)
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(c.stderr, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(p1) != string(p2) {
			return "", errors.New("the passwords do not match")
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
