// Command mailstack is a complete self-hosted mail service: IMAP, SMTP
// submission and inbound MX on one PostgreSQL store. Run `mailstack help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `mailstack — a self-hosted mail service (IMAP, SMTP submission, inbound MX) on PostgreSQL.

Usage: mailstack COMMAND [flags] [args]

Service:
  serve                         run the mail service (see 'mailstack serve -h')
  migrate                       apply database migrations and exit

Deployment:
  dns DOMAIN                    print every DNS record DOMAIN needs (zone-file syntax)
  doctor DOMAIN                 check DOMAIN's DNS records, certificates and ports from outside
  mobileconfig ADDRESS [-o FILE]
                                write an Apple profile (iPhone, iPad, Mac) with a new app password

Domains:
  domain add DOMAIN             serve DOMAIN (creates its DKIM key)
  domain list
  domain del DOMAIN

Accounts:
  user add ADDRESS              create an account (asks for the main password, prints a first app password)
  user list [DOMAIN]
  user passwd ADDRESS           change the main password
  user disable|enable ADDRESS
  user del ADDRESS              delete the account and all its mail

Aliases:
  alias add ALIAS ADDRESS       deliver ALIAS (user@domain, or @domain for a catch-all) to ADDRESS
  alias list [DOMAIN]
  alias del ALIAS

App passwords (what phones and mail programs log in with):
  app-password add ADDRESS LABEL
  app-password list ADDRESS
  app-password revoke ADDRESS ID

  activity ADDRESS              recent logins: when, protocol, app, IP, result

Outbound queue (mail to other servers not yet delivered):
  queue list
  queue retry ID                try again now
  queue delete ID               give up without sending a bounce

Every command takes the database flags (-database-url, -data-dir) or their
MAILSTACK_* environment variables; with no database URL the managed local
PostgreSQL in the data directory is used.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "mailstack:", err)
		}
		os.Exit(1)
	}
}

// errUsage means the usage text was already printed.
var errUsage = errors.New("usage")

// run executes one command line; it is main without the process globals, so
// tests can call it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	env := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	switch cmd {
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	case "serve":
		return env.serve(ctx, rest)
	case "migrate":
		return env.migrate(ctx, rest)
	case "domain":
		return env.domain(ctx, rest)
	case "user":
		return env.user(ctx, rest)
	case "alias":
		return env.alias(ctx, rest)
	case "app-password":
		return env.appPassword(ctx, rest)
	case "activity":
		return env.activity(ctx, rest)
	case "dns":
		return env.dns(ctx, rest)
	case "doctor":
		return env.doctor(ctx, rest)
	case "mobileconfig":
		return env.mobileconfig(ctx, rest)
	case "queue":
		return env.queue(ctx, rest)
	}
	return fmt.Errorf("unknown command %q; run 'mailstack help'", cmd)
}

type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}
