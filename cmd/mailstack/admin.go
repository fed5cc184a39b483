package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/internal/dnscheck"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/pglocal"
)

// adminCmd parses flags for an administrative command and opens the store.
type adminCmd struct {
	c         *cli
	name      string
	argsUsage string
	fs        *flag.FlagSet
	db        dbFlags
	args      []string
	// switchLater: the command itself switches to the data directory's
	// owner when it needs the database (see parse), after work of its own.
	switchLater bool
}

func (c *cli) newAdmin(name, argsUsage string) *adminCmd {
	a := &adminCmd{c: c, name: name, argsUsage: argsUsage, fs: flag.NewFlagSet("mailstack "+name, flag.ContinueOnError)}
	// The flag package prints its own errors and the usage on any mistake;
	// mailstack reports a mistake in one sentence instead (see parse).
	a.fs.SetOutput(io.Discard)
	a.fs.Usage = func() { a.printUsage(c.stderr) }
	// Admin commands are quiet unless something is wrong.
	a.db.register(a.fs, "warn")
	a.fs.BoolVar(&a.db.dev, "dev", false, "use the database of 'mailstack serve --dev' (its own data directory)")
	return a
}

func (a *adminCmd) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: mailstack %s [flags] %s\n\nFlags:\n", a.name, a.argsUsage)
	printFlags(a.fs, w)
}

// printFlags prints fs's flags to w (flag.PrintDefaults writes to the
// flag set's output, which is discarded otherwise).
func printFlags(fs *flag.FlagSet, w io.Writer) {
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parse parses args and checks the count of positional arguments is within
// [min, max]. -h prints the usage on stdout (errHelp); a mistake is one
// sentence pointing at -h. Run by root on a data directory that belongs to
// another user (the service's), it runs the whole command as that user
// and returns its exit status as an exitCode.
func (a *adminCmd) parse(args []string, min, max int) error {
	var err error
	if a.args, err = parseFlags(a.fs, args, a.c.stdout, a.printUsage); err != nil {
		return err
	}
	if a.db.dev {
		a.db.applyDev(a.explicit())
	}
	if uid, gid, ok := a.db.needsOwner(); ok && !a.switchLater {
		// Before the command reads its input (a password) or does
		// anything: the owner's process does all of it. Its exit status
		// is this command's (exitCode, 0 included).
		if err := a.c.asDataDirOwner(&a.db, uid, gid); err != nil {
			return err
		}
		return exitCode(0)
	}
	if len(a.args) < min || len(a.args) > max {
		return fmt.Errorf("usage: mailstack %s [flags] %s; see 'mailstack %s -h'", a.name, strings.TrimSpace(a.argsUsage), a.name)
	}
	return nil
}

// explicit returns the flags given on the command line.
func (a *adminCmd) explicit() devSetter {
	set := devSetter{}
	a.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// parseFlags parses args into fs without the flag package's own printing:
// -h prints usage on stdout, and an error comes back as one sentence. Flags
// may come before, between or after the positional arguments, as people
// type them (user add bob@example.org -quota 1G); after "--" everything is
// positional. It returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, usage func(io.Writer)) ([]string, error) {
	saved := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = saved }()
	var positional []string
	for {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			usage(stdout)
			return nil, errHelp
		case err != nil:
			return nil, fmt.Errorf("bad command line for %s: %v; see '%s -h'", fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), nil
		}
		positional, args = append(positional, rest[0]), rest[1:]
	}
}

func (a *adminCmd) with(ctx context.Context, fn func(st *store.Store) error) error {
	log, err := a.db.logger(a.c.stderr)
	if err != nil {
		return err
	}
	a.c.log = log
	st, closeFn, err := a.db.openStore(ctx, log, store.Options{}, pglocal.Guest)
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(st)
}

func (a *adminCmd) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.c.stdout, 0, 4, 2, ' ', 0)
}

// subcommand picks the subcommand of group from args; -h lists them.
func (c *cli) subcommand(args []string, group string, subs ...string) (string, []string, error) {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintf(c.stdout, "Usage: mailstack %s %s [flags] [args]\n\nRun 'mailstack %s SUBCOMMAND -h' for one's flags and arguments.\n",
			group, strings.Join(subs, "|"), group)
		return "", nil, errHelp
	}
	if len(args) == 0 {
		return "", nil, fmt.Errorf("the %s command needs a subcommand: %s", group, strings.Join(subs, ", "))
	}
	for _, s := range subs {
		if args[0] == s {
			return s, args[1:], nil
		}
	}
	return "", nil, fmt.Errorf("%q is not a subcommand of %s; use one of: %s", args[0], group, strings.Join(subs, ", "))
}

func (c *cli) migrate(ctx context.Context, args []string) error {
	a := c.newAdmin("migrate", "")
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	return a.with(ctx, func(*store.Store) error {
		fmt.Fprintln(c.stdout, "database schema is up to date")
		return nil
	})
}

func (c *cli) domain(ctx context.Context, args []string) error {
	sub, rest, err := c.subcommand(args, "domain", "add", "list", "del")
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		a := c.newAdmin("domain add", "DOMAIN")
		selector := a.fs.String("dkim-selector", "mailstack", "DKIM selector: the key is published at SELECTOR._domainkey.DOMAIN")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		key, err := dkimkey.Generate()
		if err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			d, err := st.CreateDomain(ctx, a.args[0], *selector, key)
			if err != nil {
				return err
			}
			rec, err := dkimkey.TXTRecord(d.DKIMKey)
			if err != nil {
				return err
			}
			// Split into 255-byte strings as 'mailstack dns' prints it: one
			// string that long is not valid in a zone file.
			txt := dnscheck.Record{Type: dnscheck.TXT, Value: rec}.RData()
			fmt.Fprintf(c.stdout, "Domain %s added. Publish its DKIM key as a TXT record:\n  %s._domainkey.%s.  TXT  %s\n",
				d.Name, d.DKIMSelector, d.Name, txt)
			fmt.Fprintf(c.stdout, "Mail to postmaster@%s (DMARC and TLS reports, RFC 5321) goes to the domain's first account, or the server's first\n"+
				"while it has none; to choose: mailstack alias add postmaster@%s ADDRESS\n", d.Name, d.Name)
			return nil
		})
	case "list":
		a := c.newAdmin("domain list", "")
		if err := a.parse(rest, 0, 0); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			ds, err := st.Domains(ctx)
			if err != nil {
				return err
			}
			tw := a.table()
			fmt.Fprintln(tw, "DOMAIN\tDKIM SELECTOR\tCREATED")
			for _, d := range ds {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, d.DKIMSelector, d.CreatedAt.Format(time.DateOnly))
			}
			return tw.Flush()
		})
	default:
		a := c.newAdmin("domain del", "DOMAIN")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			if err := st.DeleteDomain(ctx, a.args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Domain %s deleted.\n", a.args[0])
			return nil
		})
	}
}

func (c *cli) user(ctx context.Context, args []string) error {
	sub, rest, err := c.subcommand(args, "user", "add", "list", "passwd", "disable", "enable", "admin", "del")
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		a := c.newAdmin("user add", "ADDRESS")
		var quota sizeFlag
		a.fs.Var(&quota, "quota", "storage quota: bytes, or with K, M, G or T (500M, 1G); 0: unlimited")
		allowMain := a.fs.Bool("allow-main-password", false,
			"let IMAP/SMTP accept the main password too (only if the server runs with MAILSTACK_REQUIRE_APP_PASSWORDS=false)")
		admin := a.fs.Bool("admin", false, "make the account an administrator (domains, users, aliases and the queue on the account web)")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		if _, err := store.NormalizeAddress(a.args[0]); err != nil {
			return err
		}
		pw, err := c.readPassword("Main password for " + a.args[0] + ": ")
		if err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			acc, err := st.CreateAccount(ctx, a.args[0], pw, store.AccountOptions{QuotaBytes: int64(quota), AllowMainPassword: *allowMain})
			if err != nil {
				return err
			}
			if *admin {
				if err := st.SetAdmin(ctx, acc.Address, true); err != nil {
					return err
				}
			}
			secret, _, err := st.CreateAppPassword(ctx, acc.ID, "first device")
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Account %s created with INBOX, Drafts, Sent, Archive, Junk and Trash.\n", acc.Address)
			fmt.Fprintf(c.stdout, "App password for your first device (shown only now):\n\n    %s\n\n", secret)
			fmt.Fprintf(c.stdout, "Use it with the user name %s for IMAP and SMTP; create one per device with 'mailstack app-password add'.\n", acc.Address)
			return nil
		})
	case "list":
		a := c.newAdmin("user list", "[DOMAIN]")
		if err := a.parse(rest, 0, 1); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			accs, err := st.Accounts(ctx, strings.Join(a.args, ""))
			if err != nil {
				return err
			}
			tw := a.table()
			fmt.Fprintln(tw, "ADDRESS\tSTATE\tQUOTA\tCREATED")
			for _, acc := range accs {
				state := "active"
				if acc.Disabled {
					state = "disabled"
				}
				quota := "unlimited"
				if acc.QuotaBytes > 0 {
					quota = strconv.FormatInt(acc.QuotaBytes, 10)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", acc.Address, state, quota, acc.CreatedAt.Format(time.DateOnly))
			}
			return tw.Flush()
		})
	case "passwd":
		a := c.newAdmin("user passwd", "ADDRESS")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		pw, err := c.readPassword("New main password for " + a.args[0] + ": ")
		if err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			if err := st.SetPassword(ctx, a.args[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Main password of %s changed.\n", a.args[0])
			return nil
		})
	case "disable", "enable":
		a := c.newAdmin("user "+sub, "ADDRESS")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			if err := st.SetDisabled(ctx, a.args[0], sub == "disable"); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Account %s %sd.\n", a.args[0], sub)
			return nil
		})
	case "admin":
		a := c.newAdmin("user admin", "ADDRESS")
		off := a.fs.Bool("off", false, "take the administrator flag away instead")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			if err := st.SetAdmin(ctx, a.args[0], !*off); err != nil {
				return err
			}
			if *off {
				fmt.Fprintf(c.stdout, "%s is no longer an administrator.\n", a.args[0])
			} else {
				fmt.Fprintf(c.stdout, "%s is an administrator: the account web shows it the Admin pages.\n", a.args[0])
			}
			return nil
		})
	default:
		a := c.newAdmin("user del", "ADDRESS")
		yes := a.fs.Bool("yes", false, "delete without asking")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		if !*yes && !c.confirm(fmt.Sprintf("Delete %s and all its mail? This cannot be undone. Type the address to confirm: ", a.args[0]), a.args[0]) {
			return fmt.Errorf("%s not deleted: confirm by typing the address, or give -yes", a.args[0])
		}
		return a.with(ctx, func(st *store.Store) error {
			if err := st.DeleteAccount(ctx, a.args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Account %s and all its mail deleted.\n", a.args[0])
			return nil
		})
	}
}

func (c *cli) alias(ctx context.Context, args []string) error {
	sub, rest, err := c.subcommand(args, "alias", "add", "list", "del")
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		a := c.newAdmin("alias add", "ALIAS ADDRESS")
		if err := a.parse(rest, 2, 2); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			if err := st.CreateAlias(ctx, a.args[0], a.args[1]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Mail for %s now goes to %s.\n", a.args[0], a.args[1])
			return nil
		})
	case "list":
		a := c.newAdmin("alias list", "[DOMAIN]")
		if err := a.parse(rest, 0, 1); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			als, err := st.Aliases(ctx, strings.Join(a.args, ""))
			if err != nil {
				return err
			}
			tw := a.table()
			fmt.Fprintln(tw, "ALIAS\tDELIVERS TO")
			for _, al := range als {
				fmt.Fprintf(tw, "%s\t%s\n", al.Address, al.Target)
			}
			return tw.Flush()
		})
	default:
		a := c.newAdmin("alias del", "ALIAS")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			if err := st.DeleteAlias(ctx, a.args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Alias %s deleted.\n", a.args[0])
			return nil
		})
	}
}

func (c *cli) appPassword(ctx context.Context, args []string) error {
	sub, rest, err := c.subcommand(args, "app-password", "add", "list", "revoke")
	if err != nil {
		return err
	}
	usage := map[string]string{"add": "ADDRESS LABEL", "list": "ADDRESS", "revoke": "ADDRESS ID"}[sub]
	n := strings.Count(usage, " ") + 1
	a := c.newAdmin("app-password "+sub, usage)
	if err := a.parse(rest, n, n); err != nil {
		return err
	}
	return a.with(ctx, func(st *store.Store) error {
		acc, err := st.AccountByAddress(ctx, a.args[0])
		if err != nil {
			return err
		}
		switch sub {
		case "add":
			secret, ap, err := st.CreateAppPassword(ctx, acc.ID, a.args[1])
			if err != nil {
				return err
			}
			n, err := appPasswordNumber(ctx, st, acc.ID, ap.ID)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "App password %d (%s) for %s, shown only now:\n\n    %s\n\n", n, ap.Label, acc.Address, secret)
			return nil
		case "list":
			aps, err := st.AppPasswords(ctx, acc.ID)
			if err != nil {
				return err
			}
			tw := a.table()
			fmt.Fprintln(tw, "ID\tLABEL\tCREATED\tLAST USED\tFROM\tCLIENT\tSTATE")
			for i, ap := range aps {
				state, last := "active", "never"
				if ap.RevokedAt != nil {
					state = "revoked " + ap.RevokedAt.Format(time.DateOnly)
				}
				if ap.LastUsedAt != nil {
					last = ap.LastUsedAt.Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, ap.Label, ap.CreatedAt.Format(time.DateOnly), last,
					orDash(ap.LastUsedIP), orDash(ap.LastClient), state)
			}
			return tw.Flush()
		default:
			n, err := strconv.Atoi(a.args[1])
			if err != nil {
				return fmt.Errorf("app password ID %q is not a number; see 'mailstack app-password list %s'", a.args[1], acc.Address)
			}
			aps, err := st.AppPasswords(ctx, acc.ID)
			if err != nil {
				return err
			}
			if n < 1 || n > len(aps) {
				return &store.ObjectError{Kind: "app password", Name: a.args[1], Err: store.ErrNotFound}
			}
			if err := st.RevokeAppPassword(ctx, acc.ID, aps[n-1].ID); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "App password %d of %s revoked; devices using it are logged out at their next command.\n", n, acc.Address)
			return nil
		}
	})
}

// appPasswordNumber returns the number the CLI shows for app password id:
// its place among the account's app passwords, oldest first, so each
// account's count from 1 (the store's ids are shared by all accounts).
// Revoked ones keep their place, so numbers never change.
func appPasswordNumber(ctx context.Context, st *store.Store, accountID, id int64) (int, error) {
	aps, err := st.AppPasswords(ctx, accountID)
	if err != nil {
		return 0, err
	}
	for i, ap := range aps {
		if ap.ID == id {
			return i + 1, nil
		}
	}
	return 0, &store.ObjectError{Kind: "app password", Name: strconv.FormatInt(id, 10), Err: store.ErrNotFound}
}

func (c *cli) activity(ctx context.Context, args []string) error {
	a := c.newAdmin("activity", "ADDRESS")
	limit := a.fs.Int("n", 50, "how many recent login attempts to show")
	if err := a.parse(args, 1, 1); err != nil {
		return err
	}
	return a.with(ctx, func(st *store.Store) error {
		acc, err := st.AccountByAddress(ctx, a.args[0])
		if err != nil {
			return err
		}
		evs, err := st.AuthEvents(ctx, acc.ID, *limit)
		if err != nil {
			return err
		}
		return printActivity(a.table(), evs)
	})
}

func printActivity(tw *tabwriter.Writer, evs []store.AuthEvent) error {
	fmt.Fprintln(tw, "WHEN\tPROTOCOL\tAPP\tIP\tCLIENT\tRESULT")
	for _, e := range evs {
		result := "ok"
		if !e.Success {
			result = "failed: " + e.Reason
		} else if e.Reason != "" {
			result = "ok (" + e.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format(time.DateTime), e.Protocol, orDash(e.AppPassword), e.RemoteIP,
			orDash(e.Client), result)
	}
	return tw.Flush()
}

// orDash is s, or "-" for an empty table cell.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
