package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/store"
)

// maxConnectTries bounds how many addresses one attempt dials.
const maxConnectTries = 10

// errTLSHandshake marks a failed STARTTLS handshake: opportunistic TLS
// then retries the same host in plain text, as Postfix's "may" level does.
var errTLSHandshake = errors.New("TLS handshake failed")

// deliverGroup delivers rows that share a recipient domain (or all go to
// the relay) over one connection, one SMTP transaction per message with
// all its recipients, and returns a result per row.
func (w *Worker) deliverGroup(ctx context.Context, rows []store.QueuedMessage) []result {
	results := make([]result, len(rows))
	failFrom := func(i int, err error) {
		for ; i < len(rows); i++ {
			results[i].err = err
		}
	}
	c, remote, err := w.connect(ctx, domainOf(rows[0].RcptTo))
	if err != nil {
		failFrom(0, err)
		return results
	}
	defer c.Close()
	for i := range results {
		results[i].remote = remote
	}
	for i := 0; i < len(rows); {
		j := i + 1
		for j < len(rows) && rows[j].MessageID == rows[i].MessageID && rows[j].MailFrom == rows[i].MailFrom {
			j++
		}
		if err := w.sendMessage(ctx, c, rows[i:j], results[i:j]); err != nil {
			// The connection is unusable: everything not yet sent waits.
			failFrom(j, &connError{err})
			return results
		}
		if j < len(rows) {
			if err := c.Reset(); err != nil {
				failFrom(j, &connError{err})
				return results
			}
		}
		i = j
	}
	c.Quit() //nolint:errcheck // delivered is delivered
	return results
}

// sendMessage runs one mail transaction for rows (one message, one
// sender, several recipients), filling res. It returns an error only when
// the connection cannot be used any further.
func (w *Worker) sendMessage(ctx context.Context, c *smtp.Client, rows []store.QueuedMessage, res []result) error {
	setAll := func(idx []int, err error) {
		for _, k := range idx {
			res[k].err = err
		}
	}
	all := make([]int, len(rows))
	for k := range all {
		all[k] = k
	}
	body, _, err := w.cfg.Store.OpenQueued(ctx, rows[0].ID)
	if err != nil {
		setAll(all, err)
		return nil
	}
	if err := c.Mail(rows[0].MailFrom, &smtp.MailOptions{Size: rows[0].Size}); err != nil {
		setAll(all, err)
		return replyOrFatal(err)
	}
	var accepted []int
	for k, r := range rows {
		if err := c.Rcpt(r.RcptTo, nil); err != nil {
			res[k].err = err
			if replyOrFatal(err) != nil {
				setAll(all[k:], err)
				return err
			}
			continue
		}
		accepted = append(accepted, k)
	}
	if len(accepted) == 0 {
		return nil
	}
	wc, err := c.Data()
	if err != nil {
		setAll(accepted, err)
		return replyOrFatal(err)
	}
	if _, err := io.Copy(wc, body); err != nil {
		// The message cannot be finished with "." safely: drop the
		// connection so the server discards the partial message.
		setAll(accepted, err)
		return err
	}
	err = wc.Close()
	setAll(accepted, err)
	return replyOrFatal(err)
}

// replyOrFatal returns nil for an SMTP reply (the session goes on) and
// err for anything else (network failure).
func replyOrFatal(err error) error {
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		return nil
	}
	return err
}

// connect opens an SMTP session for domain: to the relay if configured,
// else to its MX hosts in preference order, each address in turn.
func (w *Worker) connect(ctx context.Context, domain string) (*smtp.Client, string, error) {
	if r := w.cfg.Relay; r != nil {
		c, err := w.dialRelay(ctx, r)
		if err != nil {
			return nil, "", &connError{fmt.Errorf("relay %s: %w", r.Host, err)}
		}
		return c, r.Host, nil
	}
	hosts, implicit, err := w.mxHosts(ctx, domain)
	if err != nil {
		return nil, "", err
	}
	var errs []error
	tries := 0
	for _, h := range hosts {
		addrs, err := w.cfg.Resolver.LookupIPAddr(ctx, h)
		if err != nil {
			var de *net.DNSError
			if implicit && errors.As(err, &de) && de.IsNotFound {
				return nil, "", &permError{msg: fmt.Sprintf("domain %s has no mail server (no MX, A or AAAA record)", domain), status: "5.1.2"}
			}
			errs = append(errs, fmt.Errorf("%s: %w", h, err))
			continue
		}
		for _, a := range addrs {
			if tries == maxConnectTries {
				break
			}
			tries++
			addr := net.JoinHostPort(a.IP.String(), strconv.Itoa(w.cfg.Port))
			c, err := w.open(ctx, addr, h, tlsOpportunistic)
			if errors.Is(err, errTLSHandshake) {
				w.cfg.Log.Warn("outbound: STARTTLS failed, retrying in plain text", "host", h, "err", err)
				c, err = w.open(ctx, addr, h, tlsNone)
			}
			if err == nil {
				return c, h, nil
			}
			errs = append(errs, fmt.Errorf("%s [%s]: %w", h, a.IP, err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, fmt.Errorf("no addresses for the mail servers of %s", domain))
	}
	return nil, "", &connError{errors.Join(errs...)}
}

// mxHosts returns the MX host names of domain by preference, or the domain
// itself (implicit = true) when it has no MX records (RFC 5321 §5.1).
func (w *Worker) mxHosts(ctx context.Context, domain string) (hosts []string, implicit bool, err error) {
	mxs, err := w.cfg.Resolver.LookupMX(ctx, domain)
	var de *net.DNSError
	if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
		return nil, false, &connError{fmt.Errorf("MX lookup for %s: %w", domain, err)}
	}
	if len(mxs) == 0 {
		return []string{domain}, true, nil
	}
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		return nil, false, &permError{msg: fmt.Sprintf("domain %s accepts no mail (null MX)", domain), status: "5.1.10"}
	}
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	for _, mx := range mxs {
		hosts = append(hosts, strings.TrimSuffix(mx.Host, "."))
	}
	return hosts, false, nil
}

// tlsMode says how open secures a connection.
type tlsMode int

const (
	tlsNone          tlsMode = iota // plain text
	tlsOpportunistic                // STARTTLS if offered
	tlsStartTLS                     // STARTTLS required
	tlsImplicit                     // TLS from the first byte
)

// open connects to addr and returns a client that has greeted the server
// and, per mode, negotiated TLS. serverName is for TLS and logs.
func (w *Worker) open(ctx context.Context, addr, serverName string, mode tlsMode) (*smtp.Client, error) {
	return w.openTLS(ctx, addr, serverName, mode, w.cfg.TLS)
}

func (w *Worker) openTLS(ctx context.Context, addr, serverName string, mode tlsMode, tlsCfg *tls.Config) (*smtp.Client, error) {
	conn, err := w.cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Shutdown or the end of the attempt closes the connection, which
	// interrupts whatever the session is waiting for.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, err := w.handshake(ctx, conn, serverName, mode, tlsCfg)
	if err != nil {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return c, nil
}

// handshake reads the greeting and does EHLO and STARTTLS itself, because
// go-smtp's client cannot start TLS only when offered; it then hands the
// (possibly upgraded) connection to go-smtp behind a replayed greeting.
func (w *Worker) handshake(ctx context.Context, conn net.Conn, serverName string, mode tlsMode, tlsCfg *tls.Config) (*smtp.Client, error) {
	cfg := tlsCfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = serverName
	}
	if mode == tlsImplicit {
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", errTLSHandshake, err)
		}
		c := smtp.NewClient(tc)
		if err := c.Hello(w.cfg.Hostname); err != nil {
			return nil, err
		}
		return c, nil
	}
	conn.SetDeadline(time.Now().Add(5 * time.Minute)) //nolint:errcheck
	tp := textproto.NewConn(conn)
	if _, msg, err := tp.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("greeting: %w", smtpErr(err, msg))
	}
	var rd io.Reader = tp.R
	if mode != tlsNone {
		offered := false
		if _, msg, err := ehlo(tp, w.cfg.Hostname); err == nil {
			for _, line := range strings.Split(msg, "\n")[1:] {
				if f := strings.Fields(line); len(f) > 0 && strings.EqualFold(f[0], "STARTTLS") {
					offered = true
				}
			}
		}
		switch {
		case offered:
			id, err := tp.Cmd("STARTTLS")
			if err != nil {
				return nil, err
			}
			tp.StartResponse(id)
			_, msg, err := tp.ReadResponse(220)
			tp.EndResponse(id)
			if err != nil {
				return nil, fmt.Errorf("%w: STARTTLS refused: %w", errTLSHandshake, smtpErr(err, msg))
			}
			if tp.R.Buffered() > 0 {
				// Anything sent before the handshake could be an injected
				// plain-text reply (CVE-2011-0411 style).
				return nil, errors.New("data after STARTTLS reply")
			}
			tc := tls.Client(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("%w: %w", errTLSHandshake, err)
			}
			rd = tc
			conn = tc
		case mode == tlsStartTLS:
			return nil, errors.New("server does not offer STARTTLS, which is required")
		}
	}
	conn.SetDeadline(time.Time{}) //nolint:errcheck
	c := smtp.NewClient(&greetedConn{Conn: conn, r: io.MultiReader(strings.NewReader("220 "+serverName+" ESMTP\r\n"), rd)})
	if err := c.Hello(w.cfg.Hostname); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func ehlo(tp *textproto.Conn, name string) (int, string, error) {
	id, err := tp.Cmd("EHLO %s", name)
	if err != nil {
		return 0, "", err
	}
	tp.StartResponse(id)
	defer tp.EndResponse(id)
	return tp.ReadResponse(250)
}

// smtpErr turns a net/textproto reply error into go-smtp's type, so 5xx
// replies classify as permanent.
func smtpErr(err error, msg string) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		return &smtp.SMTPError{Code: te.Code, Message: te.Msg}
	}
	return err
}

// greetedConn replays a greeting in front of a connection whose real
// greeting (and EHLO/STARTTLS) were already consumed.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) { return g.r.Read(p) }

// dialRelay connects and authenticates to the smarthost.
func (w *Worker) dialRelay(ctx context.Context, r *Relay) (*smtp.Client, error) {
	mode := tlsStartTLS
	if r.ImplicitTLS {
		mode = tlsImplicit
	}
	cfg := r.TLS
	if cfg == nil {
		// A relay is a known host: verify its certificate.
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c, err := w.openTLS(ctx, net.JoinHostPort(r.Host, strconv.Itoa(r.Port)), r.Host, mode, cfg)
	if err != nil {
		return nil, err
	}
	if r.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", r.Username, r.Password)); err != nil {
			c.Close()
			return nil, fmt.Errorf("relay authentication: %w", err)
		}
	}
	return c, nil
}
