package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/internal/dnscheck"
	"github.com/mailstack/mailstack/internal/mobileconfig"
	"github.com/mailstack/mailstack/internal/mtasts"
	"github.com/mailstack/mailstack/store"
)

// publicFlags are the settings of a running server that the deployment
// commands need to describe it: its host name, MTA-STS mode and the host
// names clients get. They read the same MAILSTACK_* variables as serve,
// so with one environment file all commands agree.
type publicFlags struct {
	hostname    string
	mtaSTSMode  string
	clientHosts string
	// dev describes serve --dev's listeners instead of the MAILSTACK_*
	// ones.
	dev bool
}

// applyDev describes serve --dev (host localhost, its loopback ports)
// except where flags given on the command line (set) say otherwise.
func (p *publicFlags) applyDev(set devSetter) {
	p.dev = true
	set.str("hostname", &p.hostname, "localhost")
	set.str("client-hosts", &p.clientHosts, string(clientconf.Hostname))
}

func (p *publicFlags) register(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&p.hostname, "hostname", envOr("MAILSTACK_HOSTNAME", host), "the server's public host name (env MAILSTACK_HOSTNAME)")
	registerClientFlags(fs, &p.mtaSTSMode, &p.clientHosts)
}

// clients returns what clients are told; the ports follow the listener
// variables serve reads.
func (p *publicFlags) clients() (clientconf.Config, error) {
	style, err := clientconf.ParseHostStyle(p.clientHosts)
	if err != nil {
		return clientconf.Config{}, err
	}
	port := func(env, def, dev string) int {
		if p.dev {
			return clientconf.PortOf(dev)
		}
		return clientconf.PortOf(envOr(env, def))
	}
	return clientconf.Config{
		Hostname:         strings.ToLower(p.hostname),
		Hosts:            style,
		IMAPPort:         port("MAILSTACK_IMAP_ADDR", ":993", devIMAPAddr),
		IMAPStartTLSPort: port("MAILSTACK_IMAP_STARTTLS_ADDR", ":143", devIMAPStartTLSAddr),
		SubmissionsPort:  port("MAILSTACK_SUBMISSIONS_ADDR", ":465", devSubmissionsAddr),
		SubmissionPort:   port("MAILSTACK_SUBMISSION_ADDR", ":587", devSubmissionAddr),
	}, nil
}

// dnsParams gathers what dnscheck needs for a stored domain.
func (p *publicFlags) dnsParams(ctx context.Context, st *store.Store, domain string) (dnscheck.Params, error) {
	d, err := st.DomainByName(ctx, domain)
	if err != nil {
		return dnscheck.Params{}, err
	}
	dkim, err := dkimkey.TXTRecord(d.DKIMKey)
	if err != nil {
		return dnscheck.Params{}, err
	}
	mode, err := mtasts.ParseMode(p.mtaSTSMode)
	if err != nil {
		return dnscheck.Params{}, err
	}
	cc, err := p.clients()
	if err != nil {
		return dnscheck.Params{}, err
	}
	if !strings.Contains(p.hostname, ".") {
		return dnscheck.Params{}, fmt.Errorf("host name %q is not a public DNS name: set -hostname or MAILSTACK_HOSTNAME", p.hostname)
	}
	return dnscheck.Params{
		Domain: d.Name, Hostname: strings.ToLower(p.hostname), DKIMSelector: d.DKIMSelector, DKIMRecord: dkim,
		MTASTS: mtasts.New(mode, p.hostname), Clients: cc,
	}, nil
}

// dns prints every record a domain needs.
func (c *cli) dns(ctx context.Context, args []string) error {
	a := c.newAdmin("dns", "DOMAIN")
	var pub publicFlags
	pub.register(a.fs)
	ttl := a.fs.Int("ttl", 3600, "TTL of the printed records, in seconds")
	if err := a.parse(args, 1, 1); err != nil {
		return err
	}
	return a.with(ctx, func(st *store.Store) error {
		p, err := pub.dnsParams(ctx, st, a.args[0])
		if err != nil {
			return err
		}
		return dnscheck.WriteZone(c.stdout, p.Domain, dnscheck.Expected(p), *ttl)
	})
}

// doctor checks a domain's DNS, certificates, ports and web documents
// (MTA-STS policy, autoconfig) from the outside.
func (c *cli) doctor(ctx context.Context, args []string) error {
	a := c.newAdmin("doctor", "DOMAIN")
	var pub publicFlags
	pub.register(a.fs)
	dnsServer := a.fs.String("dns-server", "", "ask this DNS server (host:port) instead of the system resolver, e.g. your provider's authoritative server to check before caches expire")
	timeout := a.fs.Duration("timeout", 5*time.Second, "time allowed for each port and certificate check")
	if err := a.parse(args, 1, 1); err != nil {
		return err
	}
	return a.with(ctx, func(st *store.Store) error {
		p, err := pub.dnsParams(ctx, st, a.args[0])
		if err != nil {
			return err
		}
		chk := &dnscheck.Checker{}
		if *dnsServer != "" {
			chk.Resolver, chk.Server = dnscheck.ResolverFor(*dnsServer), *dnsServer
		}
		recs := chk.CheckRecords(ctx, dnscheck.Expected(p))
		rev := chk.CheckReverse(ctx, p.Hostname)
		probe := dnscheck.ProbeOptions{Timeout: *timeout}
		eps := chk.CheckEndpoints(ctx, dnscheck.Endpoints(p), probe)
		docs := chk.CheckDocuments(ctx, dnscheck.Documents(p), probe)
		n, err := dnscheck.WriteReport(c.stdout, p.Domain, recs, rev, eps, docs, time.Now())
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("doctor found %d problem(s) for %s", n, p.Domain)
		}
		return nil
	})
}

// mobileconfig writes an Apple configuration profile with a new app
// password for ADDRESS.
func (c *cli) mobileconfig(ctx context.Context, args []string) error {
	a := c.newAdmin("mobileconfig", "ADDRESS")
	var pub publicFlags
	pub.register(a.fs)
	out := a.fs.String("o", "", "write the profile to this file (mode 0600: it holds a password); empty or -: standard output")
	label := a.fs.String("label", "", `label of the new app password (default "Apple profile DATE")`)
	if err := a.parse(args, 1, 1); err != nil {
		return err
	}
	if a.db.dev {
		pub.applyDev(a.explicit())
	}
	address, err := store.NormalizeAddress(a.args[0])
	if err != nil {
		return err
	}
	if *label == "" {
		*label = "Apple profile " + time.Now().Format(time.DateOnly)
	}
	cc, err := pub.clients()
	if err != nil {
		return err
	}
	return a.with(ctx, func(st *store.Store) error {
		acc, err := st.AccountByAddress(ctx, address)
		if err != nil {
			return err
		}
		secret, ap, err := st.CreateAppPassword(ctx, acc.ID, *label)
		if err != nil {
			return err
		}
		prof, err := mobileconfig.ForClients(cc, acc.Address, secret)
		if err == nil {
			err = writeProfile(c.stdout, *out, prof)
		}
		if err != nil {
			// The password was never shown: do not leave it usable.
			if rerr := st.RevokeAppPassword(ctx, acc.ID, ap.ID); rerr != nil {
				return errors.Join(err, rerr)
			}
			return err
		}
		where := *out
		if where == "" || where == "-" {
			where = "standard output"
		}
		n, err := appPasswordNumber(ctx, st, acc.ID, ap.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "Wrote the profile for %s to %s with new app password %d (%s).\n"+
			"It contains the password: send it to the device privately (AirDrop, a cable), open it there and install it in Settings.\n"+
			"Revoke with: mailstack app-password revoke %s %d\n", acc.Address, where, n, ap.Label, acc.Address, n)
		return nil
	})
}

func writeProfile(stdout io.Writer, path string, prof *mobileconfig.Profile) error {
	if path == "" || path == "-" {
		return prof.Write(stdout)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	if err := prof.Write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	return nil
}
