// Package mobileconfig writes Apple configuration profiles
// (.mobileconfig) that set up a mail account on iOS, iPadOS and macOS in
// one tap: IMAP over implicit TLS and SMTP submission with authentication,
// with the password embedded.
//
// Profiles are unsigned: the device shows them as "Unverified", which is
// expected for a self-hosted server; signing would need a certificate
// trusted for code signing, which a home server does not have.
package mobileconfig

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"

	"howett.net/plist"

	"github.com/mailstack/mailstack/internal/clientconf"
)

// Account is what goes into the profile.
type Account struct {
	Address     string // also the user name for IMAP and SMTP
	DisplayName string // the sender name; empty: the address
	Password    string // an app password
	IMAPHost    string
	IMAPPort    int  // 993
	IMAPSSL     bool // implicit TLS (993) or STARTTLS (143): Apple's UseSSL covers both
	SMTPHost    string
	SMTPPort    int  // 587
	SMTPSSL     bool // STARTTLS on 587 or implicit TLS on 465
	// Identifier is the reverse-DNS profile identifier base, e.g.
	// "org.example.mail.alice"; a re-installed profile with the same
	// identifier replaces the old one instead of adding a second account.
	Identifier string
}

// MailPayload is the com.apple.mail.managed payload. Field names are
// Apple's (Configuration Profile Reference, "Mail").
type MailPayload struct {
	PayloadType                            string
	PayloadVersion                         int
	PayloadIdentifier                      string
	PayloadUUID                            string
	PayloadDisplayName                     string
	EmailAccountDescription                string
	EmailAccountName                       string
	EmailAccountType                       string
	EmailAddress                           string
	IncomingMailServerHostName             string
	IncomingMailServerPortNumber           int
	IncomingMailServerUseSSL               bool
	IncomingMailServerUsername             string
	IncomingMailServerAuthentication       string
	IncomingPassword                       string
	OutgoingMailServerHostName             string
	OutgoingMailServerPortNumber           int
	OutgoingMailServerUseSSL               bool
	OutgoingMailServerUsername             string
	OutgoingMailServerAuthentication       string
	OutgoingPassword                       string
	OutgoingPasswordSameAsIncomingPassword bool
	PreventMove                            bool
	SMIMEEnabled                           bool
}

// Profile is the top-level Configuration payload.
type Profile struct {
	PayloadType              string
	PayloadVersion           int
	PayloadIdentifier        string
	PayloadUUID              string
	PayloadDisplayName       string
	PayloadDescription       string
	PayloadRemovalDisallowed bool
	PayloadContent           []MailPayload
}

// New builds the profile for an account.
func New(a Account) (*Profile, error) {
	if a.Address == "" || a.Password == "" || a.IMAPHost == "" || a.SMTPHost == "" || a.IMAPPort == 0 || a.SMTPPort == 0 {
		return nil, fmt.Errorf("mobileconfig: address, password, hosts and ports are required")
	}
	id := a.Identifier
	if id == "" {
		id = "mailstack." + a.Address
	}
	name := a.DisplayName
	if name == "" {
		name = a.Address
	}
	mail := MailPayload{
		PayloadType:                            "com.apple.mail.managed",
		PayloadVersion:                         1,
		PayloadIdentifier:                      id + ".mail",
		PayloadUUID:                            uuid(),
		PayloadDisplayName:                     a.Address,
		EmailAccountDescription:                a.Address,
		EmailAccountName:                       name,
		EmailAccountType:                       "EmailTypeIMAP",
		EmailAddress:                           a.Address,
		IncomingMailServerHostName:             a.IMAPHost,
		IncomingMailServerPortNumber:           a.IMAPPort,
		IncomingMailServerUseSSL:               a.IMAPSSL,
		IncomingMailServerUsername:             a.Address,
		IncomingMailServerAuthentication:       "EmailAuthPassword",
		IncomingPassword:                       a.Password,
		OutgoingMailServerHostName:             a.SMTPHost,
		OutgoingMailServerPortNumber:           a.SMTPPort,
		OutgoingMailServerUseSSL:               a.SMTPSSL,
		OutgoingMailServerUsername:             a.Address,
		OutgoingMailServerAuthentication:       "EmailAuthPassword",
		OutgoingPassword:                       a.Password,
		OutgoingPasswordSameAsIncomingPassword: true,
	}
	return &Profile{
		PayloadType:        "Configuration",
		PayloadVersion:     1,
		PayloadIdentifier:  id,
		PayloadUUID:        uuid(),
		PayloadDisplayName: "Mail: " + a.Address,
		PayloadDescription: "Sets up the mail account " + a.Address + " with its own app password.",
		PayloadContent:     []MailPayload{mail},
	}, nil
}

// Write encodes the profile as an XML property list.
func (p *Profile) Write(w io.Writer) error {
	enc := plist.NewEncoderForFormat(w, plist.XMLFormat)
	enc.Indent("\t")
	if err := enc.Encode(p); err != nil {
		return fmt.Errorf("mobileconfig: encode: %w", err)
	}
	return nil
}

// uuid returns a random (version 4) UUID, the form Apple's payloads use.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// ErrNoEndpoints is returned by ForClients when the IMAP or submission
// listeners are all off.
var ErrNoEndpoints = errors.New("IMAP or submission listeners are all turned off: nothing to configure")

// ForClients builds the profile for address with an app password, with
// the servers cc tells clients of. Apple's "use SSL" means implicit TLS on
// 993/465 and STARTTLS on 143/587, so any endpoint works; IMAP 993 and
// SMTP 587 are preferred.
func ForClients(cc clientconf.Config, address, password string) (*Profile, error) {
	domain := clientconf.DomainOf(address)
	imap, smtp := pick(cc.IMAP(domain), clientconf.SSL), pick(cc.SMTP(domain), clientconf.STARTTLS)
	if imap == nil || smtp == nil {
		return nil, ErrNoEndpoints
	}
	return New(Account{
		Address: address, Password: password,
		IMAPHost: imap.Host, IMAPPort: imap.Port, IMAPSSL: true,
		SMTPHost: smtp.Host, SMTPPort: smtp.Port, SMTPSSL: true,
		Identifier: "mailstack." + reverseDNS(domain) + "." + strings.ReplaceAll(address, "@", "."),
	})
}

func pick(servers []clientconf.Server, prefer clientconf.Security) *clientconf.Server {
	for i := range servers {
		if servers[i].Security == prefer {
			return &servers[i]
		}
	}
	if len(servers) > 0 {
		return &servers[0]
	}
	return nil
}

func reverseDNS(domain string) string {
	parts := strings.Split(domain, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}
