package imapd

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailstack/mailstack/store"
)

// authFailedText answers every failed login.
const authFailedText = "Authentication failed: log in with the full address and an app password, not the account's main password"

// errAnswered says the handler wrote its tagged response itself.
var errAnswered = errors.New("answered")

func (s *session) cmdCapability(c *cmd) error {
	if err := c.end(); err != nil {
		return err
	}
	s.enc.Star().Raw("CAPABILITY ").Raw(s.capabilities()).CRLF()
	return nil
}

// cmdNoop is NOOP and CHECK: the poll before the tagged OK does the work.
func (s *session) cmdNoop(c *cmd) error { return c.end() }

func (s *session) cmdLogout(c *cmd) error {
	if err := c.end(); err != nil {
		return err
	}
	s.enc.Status("*", "BYE", "", "Logging out")
	s.enc.Status(c.tag, "OK", "", "LOGOUT completed")
	return errLogout
}

func (s *session) cmdStartTLS(c *cmd) error {
	if err := c.end(); err != nil {
		return err
	}
	if s.tls {
		return bad("TLS is active already")
	}
	if s.srv.opts.TLSConfig == nil {
		return no("", "TLS is not available")
	}
	if s.dec.Buffered() > 0 {
		// Anything sent after STARTTLS before the handshake would be
		// read as if it came over TLS (CVE-2011-0411 and kin).
		return &protocolViolation{"Data after STARTTLS; closing"}
	}
	s.enc.Status(c.tag, "OK", "", "Begin TLS negotiation now")
	if err := s.enc.Flush(); err != nil {
		return err
	}
	tc := tls.Server(s.nc, s.srv.opts.TLSConfig)
	tc.SetDeadline(time.Now().Add(tlsTimeout)) //nolint:errcheck // the handshake fails
	if err := tc.HandshakeContext(s.ctx); err != nil {
		return fmt.Errorf("STARTTLS handshake: %w", err)
	}
	tc.SetDeadline(time.Time{}) //nolint:errcheck
	s.setTransport(tc)
	s.tls = true
	return errAnswered
}

// protocolViolation ends the connection with BYE.
type protocolViolation struct{ text string }

func (e *protocolViolation) Error() string { return e.text }

func (s *session) cmdLogin(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	user, err := c.d.AString()
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	pass, err := c.d.AString()
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	if !s.tls {
		return no("PRIVACYREQUIRED", "LOGIN needs TLS: use STARTTLS first")
	}
	return s.authenticate(c, user, pass)
}

func (s *session) cmdAuthenticate(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	mech, err := c.d.Atom()
	if err != nil {
		return err
	}
	var ir *string
	if c.d.PeekIs(' ') {
		c.d.SP() //nolint:errcheck // peeked
		v, err := c.d.Atom()
		if err != nil {
			return err
		}
		ir = &v
	}
	if err := c.end(); err != nil {
		return err
	}
	if !strings.EqualFold(mech, "PLAIN") {
		return no("CANNOT", "Unsupported authentication mechanism")
	}
	if !s.tls {
		return no("PRIVACYREQUIRED", "AUTHENTICATE needs TLS: use STARTTLS first")
	}
	var resp string
	if ir != nil {
		resp = *ir
		if resp == "=" {
			resp = ""
		}
	} else {
		s.enc.Raw("+ ").CRLF()
		if err := s.enc.Flush(); err != nil {
			return err
		}
		line, err := s.dec.Line()
		if err != nil {
			return err
		}
		if line == "*" {
			return bad("AUTHENTICATE aborted")
		}
		resp = line
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		return bad("Invalid base64 in AUTHENTICATE response")
	}
	parts := bytes.Split(raw, []byte{0})
	if len(parts) != 3 {
		return bad("Invalid PLAIN response")
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && !strings.EqualFold(authz, user) {
		return no("AUTHORIZATIONFAILED", "Logging in as another user is not supported")
	}
	return s.authenticate(c, user, pass)
}

// authenticate checks credentials for LOGIN and AUTHENTICATE.
func (s *session) authenticate(c *cmd, user, pass string) error {
	login, err := s.srv.st.Authenticate(s.ctx, store.Credentials{
		Username: user, Password: pass, Protocol: store.ProtocolIMAP, RemoteIP: s.remote, Client: s.client,
	})
	switch {
	case errors.Is(err, store.ErrAuthFailed):
		// The same words whatever the reason (as SMTP's): they reveal
		// nothing, and tell those who typed the main password what to do.
		return no("AUTHENTICATIONFAILED", authFailedText)
	case errors.Is(err, store.ErrThrottled):
		return no("UNAVAILABLE", "Too many failed login attempts; try again later")
	case err != nil:
		s.log.Error("login", "err", err)
		return no("UNAVAILABLE", "Temporary server failure; try again later")
	}
	if !s.srv.acquireConn(login.AccountID) {
		s.log.Info("login refused: too many connections", "account", login.Address)
		return no("LIMIT", fmt.Sprintf("Too many connections for this account (maximum %d)", s.srv.opts.MaxConnsPerAccount))
	}
	s.setLogin(login)
	s.counted = true
	s.log = s.log.With("account", login.Address)
	s.log.Debug("login")
	c.okCode, c.okText = "CAPABILITY "+s.capabilities(), "Logged in"
	return nil
}

func (s *session) cmdEnable(c *cmd) error {
	var names []string
	for !c.d.AtEnd() {
		if err := c.d.SP(); err != nil {
			return err
		}
		a, err := c.d.Atom()
		if err != nil {
			return err
		}
		names = append(names, a)
	}
	if len(names) == 0 {
		return bad("ENABLE needs a capability")
	}
	if err := c.end(); err != nil {
		return err
	}
	var enabled []string
	for _, n := range names {
		switch strings.ToUpper(n) {
		case "IMAP4REV2":
			if !s.rev2 {
				s.rev2, s.utf8 = true, true
				s.enc.UTF8 = true
				enabled = append(enabled, "IMAP4rev2")
			}
		case "CONDSTORE":
			if !s.condstore {
				s.enableCondstore()
				enabled = append(enabled, "CONDSTORE")
			}
		case "QRESYNC":
			if !s.qresync {
				s.qresync = true
				s.enableCondstore()
				enabled = append(enabled, "QRESYNC")
			}
		case "UIDONLY":
			if !s.uidonly {
				s.uidonly = true
				enabled = append(enabled, "UIDONLY")
			}
		}
	}
	s.enc.Star().Raw("ENABLED")
	for _, e := range enabled {
		s.enc.SP().Raw(e)
	}
	s.enc.CRLF()
	return nil
}

func (s *session) cmdNamespace(c *cmd) error {
	if err := c.end(); err != nil {
		return err
	}
	s.enc.Star().Raw(`NAMESPACE (("" "/")) NIL NIL`).CRLF()
	return nil
}

// ID field limits (RFC 2971 §3.3): longer values are cut when recorded.
const (
	maxIDValue = 1024
	maxIDPairs = 30
)

// cmdID answers ID (RFC 2971) and remembers what the client says of
// itself, for the activity log.
func (s *session) cmdID(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	fields := map[string]string{}
	if c.d.PeekIs('(') {
		var key *string
		err := c.d.List(func() error {
			v, err := c.d.NString()
			if err != nil {
				return err
			}
			if key == nil {
				if v == nil {
					return bad("ID field names cannot be NIL")
				}
				key = v
				return nil
			}
			if v != nil && len(fields) < maxIDPairs {
				val := *v
				if len(val) > maxIDValue {
					val = val[:maxIDValue]
				}
				fields[strings.ToLower(*key)] = val
			}
			key = nil
			return nil
		})
		if err != nil {
			return err
		}
		if key != nil {
			return bad("ID field without a value")
		}
	} else if _, err := c.d.NString(); err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	s.enc.Star().Raw(`ID ("name" "mailstack" "version" `).Quoted(s.srv.opts.Version).Raw(`)`).CRLF()
	if client := clientName(fields); client != "" {
		s.client = client
		s.log = s.log.With("client", client)
		if s.login != nil {
			s.recordClient()
		}
	}
	return nil
}

// clientName makes "iPhone Mail 18.2 (iOS 18.2)" of ID fields.
func clientName(f map[string]string) string {
	name := strings.TrimSpace(f["name"])
	if name == "" {
		return ""
	}
	if v := strings.TrimSpace(f["version"]); v != "" {
		name += " " + v
	}
	if os := strings.TrimSpace(f["os"]); os != "" {
		if v := strings.TrimSpace(f["os-version"]); v != "" {
			os += " " + v
		}
		name += " (" + os + ")"
	}
	return name
}

// recordClient notes the client named by an ID sent after login on the
// login's activity entry and app password.
func (s *session) recordClient() {
	if err := s.srv.st.SetLoginClient(s.ctx, s.login, s.client); err != nil && s.ctx.Err() == nil {
		s.log.Warn("record IMAP ID", "err", err)
	}
}
