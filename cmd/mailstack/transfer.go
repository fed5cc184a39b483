package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/mailstack/mailstack/internal/mailimport"
	"github.com/mailstack/mailstack/store"
)

// importMail runs `mailstack import imap|mbox|maildir ADDRESS ...`.
func (c *cli) importMail(ctx context.Context, args []string) error {
	sub, rest, err := c.subcommand(args, "import", "imap", "mbox", "maildir")
	if err != nil {
		return err
	}
	var a *adminCmd
	var from *string
	var conns *int
	if sub == "imap" {
		a = c.newAdmin("import imap", "ADDRESS -from imaps://USER@HOST")
		from = a.fs.String("from", "", "the server and user to import from: imaps://user@host[:port] (TLS) or imap://user@host[:port] (STARTTLS); the password is asked for, or read from the first line of standard input")
		conns = a.fs.Int("connections", 4, "connections to the server that import folders in parallel")
		if err := a.parse(rest, 1, 1); err != nil {
			return err
		}
		if *from == "" {
			return errors.New("import imap needs -from imaps://user@host; see 'mailstack import imap -h'")
		}
		if err := (mailimport.IMAPSource{URL: *from}).Check(); err != nil {
			return err
		}
	} else {
		a = c.newAdmin("import "+sub, "ADDRESS PATH")
		if err := a.parse(rest, 2, 2); err != nil {
			return err
		}
	}
	var password string
	if sub == "imap" {
		if password, err = c.readPasswordText("Password of "+*from+": ", false); err != nil {
			return err
		}
	}
	return c.withAccount(ctx, a, func(st *store.Store, acc *store.Account, progress *mailimport.Progress) error {
		var err error
		im := &mailimport.Importer{Store: st, Account: acc, Log: c.log, Progress: progress}
		switch sub {
		case "imap":
			err = im.ImportIMAP(ctx, mailimport.IMAPSource{URL: *from, Password: password, Connections: *conns})
		case "mbox":
			err = im.ImportMbox(ctx, a.args[1])
		default:
			err = im.ImportMaildir(ctx, a.args[1])
		}
		progress.Finish()
		c.printImportSummary(im.Summary(), err != nil)
		return err
	})
}

func (c *cli) printImportSummary(s mailimport.Summary, stopped bool) {
	verb := "Imported"
	if stopped {
		verb = "Stopped after importing"
	}
	fmt.Fprintf(c.stdout, "%s %d messages (%.1f MiB); %d skipped as already there; %d failed.\n",
		verb, s.Copied, float64(s.Bytes)/(1<<20), s.Duplicates, len(s.Failed))
	for _, f := range s.Skipped {
		fmt.Fprintf(c.stdout, "  folder left out: %s\n", f)
	}
	for _, f := range s.Failed {
		fmt.Fprintf(c.stdout, "  failed: %s\n", f)
	}
	if stopped {
		fmt.Fprintln(c.stdout, "Run the same command again to go on from where it stopped.")
	}
}

// exportMail runs `mailstack export ADDRESS DIR -format mbox|maildir`.
func (c *cli) exportMail(ctx context.Context, args []string) error {
	a := c.newAdmin("export", "ADDRESS DIR")
	format := a.fs.String("format", mailimport.FormatMaildir, "maildir (flags and keywords kept) or mbox (one mboxrd file per mailbox)")
	if err := a.parse(args, 2, 2); err != nil {
		return err
	}
	return c.withAccount(ctx, a, func(st *store.Store, acc *store.Account, progress *mailimport.Progress) error {
		ex := &mailimport.Exporter{Store: st, Account: acc, Progress: progress}
		sum, err := ex.Export(ctx, a.args[1], *format)
		progress.Finish()
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "Exported %d messages (%.1f MiB) of %d mailboxes to %s as %s.\n",
			sum.Messages, float64(sum.Bytes)/(1<<20), sum.Mailboxes, a.args[1], *format)
		if sum.DroppedKeywords > 0 {
			fmt.Fprintf(c.stdout, "%d keywords were left out: a Maildir folder holds at most 26.\n", sum.DroppedKeywords)
		}
		return nil
	})
}

// withAccount runs fn with the account named by the first argument and a
// progress display on stderr (a bar on a terminal, else plain lines).
func (c *cli) withAccount(ctx context.Context, a *adminCmd, fn func(*store.Store, *store.Account, *mailimport.Progress) error) error {
	return a.with(ctx, func(st *store.Store) error {
		acc, err := st.AccountByAddress(ctx, a.args[0])
		if err != nil {
			return err
		}
		return fn(st, acc, mailimport.NewProgress(c.stderr, c.isTerminal(c.stderr)))
	})
}

func (c *cli) isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
