// Package clientconf decides what a mail client is told to connect to: the
// host names, ports and TLS modes that autoconfig, autodiscover, Apple
// configuration profiles and the DNS SRV records all advertise, so the four
// never disagree.
package clientconf

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/mailstack/mailstack/internal/mailaddr"
)

// Security is how a client secures a connection.
type Security string

// Security modes. Plain text is never offered.
const (
	SSL      Security = "SSL"      // implicit TLS (RFC 8314)
	STARTTLS Security = "STARTTLS" // upgrade after the greeting
)

// Server is one endpoint a client may use.
type Server struct {
	Protocol string // "imap" or "smtp"
	Host     string
	Port     int
	Security Security
}

// HostStyle says which host names clients are given.
type HostStyle string

// Host styles.
const (
	// PerDomain gives imap.<domain> and smtp.<domain>: names that survive a
	// move of the server and that ACME certificates cover.
	PerDomain HostStyle = "per-domain"
	// Hostname gives the server's own host name for every domain: simplest
	// DNS, used in development and when the per-domain names are not set up.
	Hostname HostStyle = "hostname"
)

// ParseHostStyle checks a -client-hosts value.
func ParseHostStyle(s string) (HostStyle, error) {
	switch HostStyle(s) {
	case PerDomain, Hostname:
		return HostStyle(s), nil
	}
	return "", fmt.Errorf("client host style %q: want %q or %q", s, PerDomain, Hostname)
}

// Config is what the server offers. A zero port means that endpoint is off.
type Config struct {
	Hostname         string
	Hosts            HostStyle
	IMAPPort         int // implicit TLS, normally 993
	IMAPStartTLSPort int // normally 143
	SubmissionsPort  int // implicit TLS, normally 465
	SubmissionPort   int // STARTTLS, normally 587
}

// Default is the configuration of a server on the standard ports.
func Default(hostname string) Config {
	return Config{Hostname: hostname, Hosts: PerDomain, IMAPPort: 993, IMAPStartTLSPort: 143, SubmissionsPort: 465, SubmissionPort: 587}
}

// PortOf returns the port of a listen address such as ":993" or
// "127.0.0.1:1993", or 0 when the address is empty (the listener is off) or
// has no numeric port.
func PortOf(addr string) int {
	if addr == "" {
		return 0
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0
	}
	return n
}

// IMAPHost is the IMAP host name for a domain.
func (c Config) IMAPHost(domain string) string { return c.host("imap", domain) }

// SMTPHost is the submission host name for a domain.
func (c Config) SMTPHost(domain string) string { return c.host("smtp", domain) }

func (c Config) host(prefix, domain string) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	// "localhost" has no sub-names that resolve everywhere; and a domain
	// equal to the host name needs no second name.
	if c.Hosts == Hostname || domain == "" || domain == "localhost" || domain == c.Hostname {
		return c.Hostname
	}
	return prefix + "." + domain
}

// IMAP lists the IMAP endpoints for a domain, most preferred first:
// implicit TLS before STARTTLS, as RFC 8314 recommends.
func (c Config) IMAP(domain string) []Server {
	var s []Server
	if c.IMAPPort != 0 {
		s = append(s, Server{"imap", c.IMAPHost(domain), c.IMAPPort, SSL})
	}
	if c.IMAPStartTLSPort != 0 {
		s = append(s, Server{"imap", c.IMAPHost(domain), c.IMAPStartTLSPort, STARTTLS})
	}
	return s
}

// SMTP lists the submission endpoints for a domain, most preferred first.
func (c Config) SMTP(domain string) []Server {
	var s []Server
	if c.SubmissionsPort != 0 {
		s = append(s, Server{"smtp", c.SMTPHost(domain), c.SubmissionsPort, SSL})
	}
	if c.SubmissionPort != 0 {
		s = append(s, Server{"smtp", c.SMTPHost(domain), c.SubmissionPort, STARTTLS})
	}
	return s
}

// DomainOf returns the lower-cased domain of an address, or "" if it has none.
func DomainOf(address string) string { return mailaddr.DomainOf(address) }
