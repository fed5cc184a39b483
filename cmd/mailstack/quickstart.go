package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/dnscheck"
	"github.com/mailstack/mailstack/internal/mailaddr"
	"github.com/mailstack/mailstack/store"
)

// quickstart sets up a first domain and account the way a new user needs
// it: it checks what can be checked from here, writes the settings file,
// creates the domain and the account, and prints the DNS records, an app
// password and what to type into a mail program.
func (c *cli) quickstart(ctx context.Context, args []string) error {
	a := c.newAdmin("quickstart", "DOMAIN")
	var pub publicFlags
	pub.register(a.fs)
	address := a.fs.String("address", "", "the first account's address, e.g. you@DOMAIN (asked for when not given)")
	target := a.fs.String("for", "", `where mailstack will run: "compose" (writes .env) or "systemd" (writes /etc/mailstack/mailstack.env); default compose if docker-compose.yml is in the current directory`)
	envFile := a.fs.String("env", "-", `settings file to write (default: .env for compose, /etc/mailstack/mailstack.env for systemd); empty: write none`)
	force := a.fs.Bool("force", false, "overwrite an existing settings file")
	noAccount := a.fs.Bool("no-account", false, "only check and write the settings file (for compose before 'up': the database is not there yet)")
	dnsServer := a.fs.String("dns-server", "", "ask this DNS server (host:port) instead of the system resolver")
	dnsbls := a.fs.String("dnsbl", "zen.spamhaus.org,bl.spamcop.net", "comma-separated DNS blocklists to look the server's address up in")
	probe25 := a.fs.String("port25-probe", "gmail-smtp-in.l.google.com:25", "a mail server to connect to on port 25, to see whether this network lets outgoing mail out")
	timeout := a.fs.Duration("timeout", 5*time.Second, "time allowed for each network check")
	checks := a.fs.Bool("checks", true, "check this host (address, reverse DNS, blocklists, port 25, free ports)")
	// Root writes the settings file, then creates the account as the
	// data directory's owner.
	a.switchLater = true
	if err := a.parse(args, 1, 1); err != nil {
		return err
	}
	domain := mailaddr.Domain(a.args[0])
	if !strings.Contains(domain, ".") {
		return fmt.Errorf("%q is not a mail domain such as example.org", a.args[0])
	}
	set := a.explicit()
	if _, ok := os.LookupEnv("MAILSTACK_HOSTNAME"); !set["hostname"] && !ok {
		pub.hostname = c.ask("Host name of this server (its MX, with an A record)", "mail."+domain)
	}
	pub.hostname = strings.ToLower(strings.TrimSuffix(pub.hostname, "."))
	if *address == "" {
		*address = c.ask("Your first address", "")
	}
	addr, err := store.NormalizeAddress(*address)
	if err != nil {
		return err
	}
	if clientconf.DomainOf(addr) != domain {
		return fmt.Errorf("the first address %s is not in %s", addr, domain)
	}
	switch *target {
	case "":
		*target = "systemd"
		if _, err := os.Stat("docker-compose.yml"); err == nil {
			*target = "compose"
		}
	case "compose", "systemd":
	default:
		return fmt.Errorf(`-for %q: want "compose" or "systemd"`, *target)
	}
	if *envFile == "-" {
		*envFile = map[string]string{"compose": ".env", "systemd": "/etc/mailstack/mailstack.env"}[*target]
	}

	chk := &dnscheck.Checker{}
	if *dnsServer != "" {
		chk.Resolver, chk.Server = dnscheck.ResolverFor(*dnsServer), *dnsServer
	}
	w := c.stdout
	blocked := false
	if *checks {
		fmt.Fprintf(w, "Checks for %s (%s):\n", domain, pub.hostname)
		q := quickChecks{w: w, chk: chk, timeout: *timeout}
		q.host(ctx, pub.hostname, strings.Split(*dnsbls, ","))
		blocked = !q.port25(ctx, *probe25)
		q.ports(ctx)
		if q.problems == 0 {
			fmt.Fprintln(w, "  All checks passed.")
		} else {
			fmt.Fprintf(w, "  %d problem(s); mail may not flow until they are fixed (deploy/GUIDE.md explains each).\n", q.problems)
		}
	}

	if *envFile != "" {
		if err := writeSettings(*envFile, *target, pub.hostname, domain, addr, blocked, *force); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nWrote %s.\n", *envFile)
	}
	if *noAccount {
		fmt.Fprintf(w, "\nNext: %s\n", nextSteps(*target, domain, addr))
		return nil
	}
	if *target == "systemd" && a.db.url == "" && os.Geteuid() == 0 {
		// What systemd's StateDirectory= does at the first start: the
		// service user's data directory, so the cluster is made as its own.
		if err := makeServiceDataDir(a.db.dataDir); err != nil {
			return err
		}
	}
	if uid, gid, ok := a.db.needsOwner(); ok {
		c.args = append(c.args, "-env=", "-checks=false", "-hostname="+pub.hostname, "-address="+addr, "-for="+*target)
		if err := c.asDataDirOwner(&a.db, uid, gid); err != nil {
			return err
		}
		return exitCode(0)
	}
	pw, err := c.readPassword("Main password for " + addr + " (for account management, not for devices): ")
	if err != nil {
		return err
	}
	return a.with(ctx, func(st *store.Store) error {
		d, err := ensureDomain(ctx, st, c.log, domain)
		if err != nil {
			return err
		}
		acc, err := st.CreateAccount(ctx, addr, pw, store.AccountOptions{})
		if err != nil {
			return err
		}
		secret, _, err := st.CreateAppPassword(ctx, acc.ID, "first device")
		if err != nil {
			return err
		}
		p, err := pub.dnsParams(ctx, st, d.Name)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "\nDomain %s and account %s created.\n\n", d.Name, acc.Address)
		if err := dnscheck.WriteZone(w, d.Name, dnscheck.Expected(p), 3600); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nMail program settings (most find them by themselves from the address):\n")
		fmt.Fprintf(w, "  User name      %s\n", acc.Address)
		fmt.Fprintf(w, "  Password       %s   (an app password, shown only now; one per device: mailstack app-password add)\n", secret)
		for _, s := range append(p.Clients.IMAP(d.Name), p.Clients.SMTP(d.Name)...) {
			fmt.Fprintf(w, "  %-14s %s port %d, %s\n", strings.ToUpper(s.Protocol), s.Host, s.Port, securityName(s.Security))
		}
		fmt.Fprintf(w, "\nNext: publish the records above, then %s\n", nextSteps(*target, domain, ""))
		return nil
	})
}

func securityName(s clientconf.Security) string {
	if s == clientconf.SSL {
		return "SSL/TLS"
	}
	return string(s)
}

// nextSteps says what to run after quickstart.
func nextSteps(target, domain, address string) string {
	var steps []string
	switch {
	case target == "compose" && address != "":
		steps = append(steps, "docker compose up -d",
			"docker compose exec mailstack mailstack quickstart -for compose -env= -checks=false -address "+address+" "+domain+" (creates the account)")
	case target == "compose":
		steps = append(steps, "docker compose up -d (if it is not up yet)")
	default:
		steps = append(steps, "systemctl enable --now mailstack (see deploy/mailstack.service)")
	}
	steps = append(steps, "mailstack doctor "+domain+" (checks the records and ports from outside)")
	return strings.Join(steps, "; then ")
}

// ask prompts on a terminal and returns the answer, or def when there is
// no terminal or the answer is empty.
func (c *cli) ask(question, def string) string {
	f, ok := c.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return def
	}
	if def != "" {
		fmt.Fprintf(c.stderr, "%s [%s]: ", question, def)
	} else {
		fmt.Fprintf(c.stderr, "%s: ", question)
	}
	line, _ := bufio.NewReader(f).ReadString('\n')
	if v := strings.TrimSpace(line); v != "" {
		return v
	}
	return def
}

// quickChecks prints one line per check and counts the problems.
type quickChecks struct {
	w        io.Writer
	chk      *dnscheck.Checker
	timeout  time.Duration
	problems int
}

func (q *quickChecks) say(ok bool, what, detail string) {
	status := "ok"
	if !ok {
		status = "PROBLEM"
		q.problems++
	}
	fmt.Fprintf(q.w, "  %-8s %-22s %s\n", status, what, detail)
}

func (q *quickChecks) resolver() *net.Resolver {
	if q.chk.Resolver != nil {
		return q.chk.Resolver
	}
	return net.DefaultResolver
}

// host checks that the host name resolves to public addresses, that each
// has reverse DNS naming it, and that none is on a blocklist.
func (q *quickChecks) host(ctx context.Context, hostname string, blocklists []string) {
	ctx, cancel := context.WithTimeout(ctx, 3*q.timeout)
	defer cancel()
	res := q.resolver()
	addrs, err := res.LookupIPAddr(ctx, hostname)
	if err != nil {
		q.say(false, "address of "+hostname, "does not resolve ("+q.chk.Named(err).Error()+"): publish an A record with your public address")
		return
	}
	for _, a := range addrs {
		ip := a.IP
		if !public(ip) {
			q.say(false, "address of "+hostname, ip.String()+" is not a public address (loopback or private: /etc/hosts, or an internal DNS?); other servers must reach this one there")
			continue
		}
		q.say(true, "address of "+hostname, ip.String())
		names, err := res.LookupAddr(ctx, ip.String())
		switch {
		case err != nil:
			q.say(false, "reverse DNS of "+ip.String(), "none: ask your ISP to set it (PTR) to "+hostname+"; many receivers junk mail without it")
		case !containsName(names, hostname):
			q.say(false, "reverse DNS of "+ip.String(), strings.Join(names, ", ")+", not "+hostname+": ask your ISP to change it")
		default:
			q.say(true, "reverse DNS of "+ip.String(), hostname)
		}
		if ip4 := ip.To4(); ip4 != nil {
			q.blocklists(ctx, ip4, blocklists)
		}
	}
}

func (q *quickChecks) blocklists(ctx context.Context, ip net.IP, zones []string) {
	rev := fmt.Sprintf("%d.%d.%d.%d", ip[3], ip[2], ip[1], ip[0])
	for _, zone := range zones {
		if zone = strings.TrimSpace(zone); zone == "" {
			continue
		}
		found, err := q.resolver().LookupHost(ctx, rev+"."+zone)
		var de *net.DNSError
		switch {
		case errors.As(err, &de) && de.IsNotFound:
			q.say(true, "blocklist "+zone, "not listed")
		case err != nil:
			fmt.Fprintf(q.w, "  %-8s %-22s %s\n", "unknown", "blocklist "+zone, "lookup failed: "+q.chk.Named(err).Error())
		case len(found) > 0 && strings.HasPrefix(found[0], "127.255.255."):
			// Spamhaus' answer to queries through public resolvers.
			fmt.Fprintf(q.w, "  %-8s %-22s %s\n", "unknown", "blocklist "+zone, "the list refused the query ("+found[0]+"): check on its website")
		default:
			q.say(false, "blocklist "+zone, ip.String()+" is listed ("+strings.Join(found, ", ")+"): mail from it is refused by many; ask for delisting, or send through a relay (MAILSTACK_RELAY)")
		}
	}
}

// port25 reports whether a connection to a mail server's port 25 gets an
// SMTP greeting: many residential ISPs block outgoing port 25.
func (q *quickChecks) port25(ctx context.Context, probe string) bool {
	d := net.Dialer{Timeout: q.timeout, Resolver: q.resolver()}
	conn, err := d.DialContext(ctx, "tcp", probe)
	if err == nil {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(q.timeout)) //nolint:errcheck
		line, rerr := bufio.NewReader(conn).ReadString('\n')
		if rerr == nil && strings.HasPrefix(line, "220") {
			q.say(true, "outgoing port 25", "open ("+probe+" answers)")
			return true
		}
		err = fmt.Errorf("no SMTP greeting: %v", rerr)
	}
	q.say(false, "outgoing port 25", "blocked or filtered ("+q.chk.Named(err).Error()+"): send through a relay, MAILSTACK_RELAY (left commented in the settings file)")
	return false
}

// ports checks that the listen addresses serve will use are free.
func (q *quickChecks) ports(ctx context.Context) {
	for _, l := range []struct{ env, def, name string }{
		{"MAILSTACK_MX_ADDR", ":25", "inbound mail"}, {"MAILSTACK_HTTP_ADDR", ":80", "HTTP"},
		{"MAILSTACK_IMAP_STARTTLS_ADDR", ":143", "IMAP STARTTLS"}, {"MAILSTACK_HTTPS_ADDR", ":443", "HTTPS"},
		{"MAILSTACK_SUBMISSIONS_ADDR", ":465", "SMTP SSL/TLS"}, {"MAILSTACK_SUBMISSION_ADDR", ":587", "SMTP STARTTLS"},
		{"MAILSTACK_IMAP_ADDR", ":993", "IMAP SSL/TLS"},
	} {
		addr := envOr(l.env, l.def)
		if addr == "" {
			continue
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", addr)
		switch {
		case err == nil:
			ln.Close()
			q.say(true, "port "+addr, "free ("+l.name+")")
		case errors.Is(err, syscall.EADDRINUSE):
			q.say(false, "port "+addr, "in use by another program ("+l.name+"); stop it (or this is a mailstack already running)")
		case errors.Is(err, syscall.EACCES):
			// Only root may bind it here; the service gets the capability.
			fmt.Fprintf(q.w, "  %-8s %-22s %s\n", "unknown", "port "+addr, "needs root or CAP_NET_BIND_SERVICE to check ("+l.name+"); the systemd unit and compose grant it")
		default:
			q.say(false, "port "+addr, err.Error())
		}
	}
}

// public reports whether ip can be reached from the internet.
func public(ip net.IP) bool {
	return !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() ||
		ip.IsMulticast() || ip.Equal(net.IPv4bcast) || isCGNAT(ip))
}

// isCGNAT reports addresses of carrier-grade NAT (RFC 6598), which the
// internet cannot reach either.
func isCGNAT(ip net.IP) bool {
	ip4 := ip.To4()
	return ip4 != nil && ip4[0] == 100 && ip4[1]&0xc0 == 64
}

func containsName(names []string, host string) bool {
	for _, n := range names {
		if strings.EqualFold(strings.TrimSuffix(n, "."), host) {
			return true
		}
	}
	return false
}

// makeServiceDataDir creates dir for the "mailstack" service user when
// both are missing and present, as systemd would.
func makeServiceDataDir(dir string) error {
	u, err := user.Lookup("mailstack")
	if err != nil {
		return nil // no service user (yet): the data directory stays root's
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	return os.Chown(dir, uid, gid)
}

// writeSettings writes the settings file for target: what serve needs,
// everything else at its default (deploy/mailstack.env.example lists all).
func writeSettings(path, target, hostname, domain, address string, port25Blocked, force bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# mailstack settings written by 'mailstack quickstart %s' on %s.\n", domain, time.Now().Format(time.DateOnly))
	b.WriteString("# Every variable, with comments: deploy/mailstack.env.example.\n\n")
	fmt.Fprintf(&b, "MAILSTACK_HOSTNAME=%s\nMAILSTACK_DOMAINS=%s\n", hostname, domain)
	b.WriteString("# Let's Encrypt certificates (ports 80 or 443 must be reachable); contact for expiry notices:\n")
	fmt.Fprintf(&b, "MAILSTACK_ACME_EMAIL=%s\n", address)
	if target == "compose" {
		secret := make([]byte, 24)
		rand.Read(secret) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
		fmt.Fprintf(&b, "# The compose postgres service's password.\nPOSTGRES_PASSWORD=%s\n", hex.EncodeToString(secret))
	}
	if port25Blocked {
		b.WriteString("# Outgoing port 25 looked blocked: send through your provider's or a relay service's SMTP.\n")
	}
	b.WriteString("#MAILSTACK_RELAY=smtp://user:password@smtp.relay.example:587\n")

	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	mode := os.FileMode(0o600) // compose: it holds the database password
	if target == "systemd" {
		mode = 0o640 // group mailstack: admin commands run as the service user read it
	}
	f, err := os.OpenFile(path, flags, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists already: remove it, write another file with -env, or overwrite it with -force", path)
	}
	if err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	if _, err := io.WriteString(f, b.String()); err != nil {
		f.Close()
		return fmt.Errorf("write settings: %w", err)
	}
	if target == "systemd" && os.Geteuid() == 0 {
		if g, err := user.LookupGroup("mailstack"); err == nil {
			if gid, err := strconv.Atoi(g.Gid); err == nil {
				f.Chown(0, gid) //nolint:errcheck // the guide's install -g does the same
			}
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}
