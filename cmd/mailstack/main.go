// Command mailstack is a complete self-hosted mail service: IMAP, SMTP
// submission and inbound MX on one PostgreSQL store. Run `mailstack help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/pglocal"
)

const usage = `mailstack — a self-hosted mail service (IMAP, SMTP submission, inbound MX) on PostgreSQL.

Usage: mailstack COMMAND [flags] [args]

Service:
  serve                         run the mail service (see 'mailstack serve -h')
  migrate                       apply database migrations and exit
  version                       print the version (module version, commit, build date)

Deployment:
  quickstart DOMAIN             first set-up: check this host, write the settings file, create the
                                domain and first account, print DNS records and client settings
  dns DOMAIN                    print every DNS record DOMAIN needs (zone-file syntax)
  doctor DOMAIN                 check DOMAIN's DNS records, certificates and ports from outside
  mobileconfig ADDRESS [-o FILE]
                                write an Apple profile (iPhone, iPad, Mac) with a new app password

Domains:
  domain add DOMAIN             serve DOMAIN (creates its DKIM key)
  domain list
  domain del DOMAIN

Accounts:
  user add ADDRESS [-quota 1G] [-admin]
                                create an account (asks for the main password, at least 8
                                characters; prints a first app password)
  user list [DOMAIN]
  user passwd ADDRESS           change the main password
  user disable|enable ADDRESS
  user admin ADDRESS [-off]     make ADDRESS an administrator on the account web (-off: no longer)
  user del ADDRESS [-yes]       delete the account and all its mail (asks first)

Aliases:
  alias add ALIAS ADDRESS       deliver ALIAS (user@domain, or @domain for a catch-all) to ADDRESS
  alias list [DOMAIN]
  alias del ALIAS

App passwords (what phones and mail programs log in with):
  app-password add ADDRESS LABEL
  app-password list ADDRESS
  app-password revoke ADDRESS ID

  activity ADDRESS              recent logins: when, protocol, app, IP, client, result

Outbound queue (mail to other servers not yet delivered):
  queue list
  queue retry ID                try again now
  queue delete ID               give up without sending a bounce

Moving mail in and out:
  import imap ADDRESS -from imaps://USER@HOST
                                copy every folder of another IMAP server (iCloud, Gmail, ...):
                                again later copies only what is new (password asked for, or on
                                standard input)
  import mbox|maildir ADDRESS PATH
                                copy an mbox file or tree of them, or a Maildir tree
  export ADDRESS DIR [-format maildir|mbox]
                                write every mailbox to files

Every command takes the database flags (-database-url, -data-dir) or their
MAILSTACK_* environment variables, and -dev for the database of 'serve
--dev'; with no database URL the managed local PostgreSQL in the data
directory is used: a running 'mailstack serve' runs it and other commands
use that, or start it just for themselves. Run by root on a data directory
that belongs to another user (the service's), a command runs as that user.
Run 'mailstack COMMAND -h' for a command's flags; flags may also follow the
arguments (user add bob@example.org -quota 1G). A failure prints one
sentence and exits with status 1.
`

func main() {
	// A closed stdout or stderr (serve --dev | tee log, and Ctrl-C, which
	// ends tee first) must not kill the process with SIGPIPE half-way
	// through stopping its PostgreSQL: with SIGPIPE caught, such writes
	// just fail. (Caught, not ignored, so child processes get the default.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// SIGHUP (the terminal closed) stops the service like SIGINT and
	// SIGTERM; signals after the first are absorbed while it shuts down,
	// so the managed PostgreSQL is always stopped cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := runMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

var (
	// errUsage means the usage text was already printed (exit status 2).
	errUsage = errors.New("usage")
	// errHelp means help was asked for and printed (exit status 0).
	errHelp = errors.New("help shown")
)

// runMain runs one command line and returns its exit status. A failure is
// reported on stderr as one sentence (see errorSentence); with
// -log-level=debug the full error chain is logged as well.
func runMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	err := c.run(ctx, args)
	var code exitCode
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.As(err, &code):
		return int(code)
	}
	if c.log != nil {
		c.log.Debug("command failed", "err", err.Error())
	}
	fmt.Fprintln(stderr, errorSentence(err))
	return 1
}

// run executes one command line and returns its error unformatted; it is
// main without the process globals, so tests can call it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	err := (&cli{stdin: stdin, stdout: stdout, stderr: stderr}).run(ctx, args)
	if errors.Is(err, errHelp) || errors.Is(err, exitCode(0)) {
		return nil
	}
	return err
}

// version describes this build from the information Go embeds: the
// module version (set by go install MODULE@VERSION) and, for a build from
// a git checkout, the commit, its time and whether the tree was modified.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "mailstack (no build information)"
	}
	v := "mailstack " + bi.Main.Version
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v += " commit " + rev
		if t := settings["vcs.time"]; t != "" {
			v += " (" + t + ")"
		}
		if settings["vcs.modified"] == "true" {
			v += " with local changes"
		}
	}
	return v + ", " + bi.GoVersion
}

// shortVersion is what the servers tell clients (IMAP ID): the module
// version, or for a build from a checkout its commit's first 12 digits.
func shortVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return "dev"
}

func (c *cli) run(ctx context.Context, args []string) error {
	c.args = args
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help", "-help":
		fmt.Fprint(c.stdout, usage)
		return nil
	case "version", "-version", "--version":
		fmt.Fprintln(c.stdout, version())
		return nil
	case "serve":
		return c.serve(ctx, rest)
	case "migrate":
		return c.migrate(ctx, rest)
	case "domain":
		return c.domain(ctx, rest)
	case "user":
		return c.user(ctx, rest)
	case "alias":
		return c.alias(ctx, rest)
	case "app-password":
		return c.appPassword(ctx, rest)
	case "activity":
		return c.activity(ctx, rest)
	case "dns":
		return c.dns(ctx, rest)
	case "doctor":
		return c.doctor(ctx, rest)
	case "mobileconfig":
		return c.mobileconfig(ctx, rest)
	case "quickstart":
		return c.quickstart(ctx, rest)
	case "queue":
		return c.queue(ctx, rest)
	case "import":
		return c.importMail(ctx, rest)
	case "export":
		return c.exportMail(ctx, rest)
	}
	return fmt.Errorf("unknown command %q; run 'mailstack help' for the list", cmd)
}

type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// args is the command line (without the program name).
	args []string
	// log is the command's logger once its flags are parsed (for the debug
	// record of a failure).
	log *slog.Logger
}

// errorSentence turns err into the one sentence the CLI prints: store
// errors name their object, and connection and managed-PostgreSQL failures
// say in a few words what failed and why, without pgx's or postgres' full
// text (which the debug log has).
func errorSentence(err error) string {
	var (
		obj   *store.ObjectError
		owner *pglocal.OwnerError
		pgl   *pglocal.Error
		parse *pgconn.ParseConfigError
		conn  *pgconn.ConnectError
		pg    *pgconn.PgError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "Interrupted."
	case errors.As(err, &obj):
		return objectSentence(obj)
	case errors.Is(err, store.ErrInvalid):
		// "...: invalid argument: WHAT IS WRONG"
		msg := err.Error()
		if i := strings.Index(msg, store.ErrInvalid.Error()+": "); i >= 0 {
			msg = msg[i+len(store.ErrInvalid.Error())+2:]
		}
		return sentence(msg)
	case errors.As(err, &owner):
		return ownerSentence(owner)
	case errors.As(err, &pgl):
		switch {
		case errors.Is(err, pglocal.ErrOwned):
			return sentence(fmt.Sprintf("another mailstack serve already runs the managed PostgreSQL in %s; stop it first, or give this one another -data-dir", pgl.Dir))
		case errors.Is(err, pglocal.ErrBusy):
			return sentence(fmt.Sprintf("another mailstack command kept the managed PostgreSQL in %s busy for too long; try again", pgl.Dir))
		}
		return sentence(fmt.Sprintf("the managed PostgreSQL in %s failed to %s: %s (details with -log-level=debug)", pgl.Dir, pgl.Op, pgl.Cause()))
	case errors.As(err, &parse):
		return "The database URL (-database-url or MAILSTACK_DATABASE_URL) is not a valid PostgreSQL URL."
	case errors.As(err, &conn):
		return sentence(fmt.Sprintf("cannot connect to PostgreSQL at %s: %s", where(conn.Config), innermost(conn)))
	case errors.As(err, &pg):
		return sentence("PostgreSQL refused the command: " + pg.Message)
	}
	return sentence(err.Error())
}

// objectSentence phrases an error about a named store object.
func objectSentence(e *store.ObjectError) string {
	switch {
	case errors.Is(e.Err, store.ErrNotFound) && e.Kind == "domain":
		return fmt.Sprintf("Domain %s is not served here (see 'mailstack domain list').", e.Name)
	case errors.Is(e.Err, store.ErrNotFound):
		return fmt.Sprintf("No %s %s exists.", e.Kind, e.Name)
	case errors.Is(e.Err, store.ErrExists):
		article := "The"
		if e.Kind == "account" || e.Kind == "alias" {
			article = "An"
		}
		return fmt.Sprintf("%s %s %s already exists.", article, e.Kind, e.Name)
	case errors.Is(e.Err, store.ErrHasChildren) && e.Kind == "domain":
		return fmt.Sprintf("Domain %s still has accounts; delete them first.", e.Name)
	}
	return sentence(e.Error())
}

// where describes a connection target: host (or socket directory), port,
// database.
func where(cfg *pgconn.Config) string {
	if cfg == nil {
		return "the configured address"
	}
	host := cfg.Host
	if !strings.HasPrefix(host, "/") {
		host = net.JoinHostPort(host, strconv.Itoa(int(cfg.Port)))
	}
	return fmt.Sprintf("%s (database %s)", host, cfg.Database)
}

// innermost returns the message of the deepest error in err's chain, e.g.
// "connection refused" rather than pgx's full dial description; a server's
// refusal gives its message.
func innermost(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Message
	}
	for {
		var next error
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			next = u.Unwrap()
		case interface{ Unwrap() []error }:
			if errs := u.Unwrap(); len(errs) > 0 {
				next = errs[0]
			}
		}
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// sentence makes msg one sentence: its first line, capitalised, ending in
// a full stop.
func sentence(msg string) string {
	msg, _, _ = strings.Cut(strings.TrimSpace(msg), "\n")
	msg = strings.TrimRight(strings.TrimSpace(msg), ":;,")
	if msg == "" {
		return "Failed."
	}
	r, n := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[n:]
	if !strings.HasSuffix(msg, ".") && !strings.HasSuffix(msg, "?") && !strings.HasSuffix(msg, "!") {
		msg += "."
	}
	return msg
}
