package clientconf_test

import (
	"reflect"
	"testing"

	"github.com/mailstack/mailstack/internal/clientconf"
)

func TestHostsAndPorts(t *testing.T) {
	def := clientconf.Default("mail.example.net")
	host := def
	host.Hosts = clientconf.Hostname
	noStartTLS := def
	noStartTLS.IMAPStartTLSPort, noStartTLS.SubmissionPort = 0, 0
	tests := []struct {
		name       string
		c          clientconf.Config
		domain     string
		imap, smtp []clientconf.Server
	}{
		{"per-domain names, implicit TLS first", def, "example.org",
			[]clientconf.Server{{"imap", "imap.example.org", 993, clientconf.SSL}, {"imap", "imap.example.org", 143, clientconf.STARTTLS}},
			[]clientconf.Server{{"smtp", "smtp.example.org", 465, clientconf.SSL}, {"smtp", "smtp.example.org", 587, clientconf.STARTTLS}}},
		{"hostname style", host, "example.org",
			[]clientconf.Server{{"imap", "mail.example.net", 993, clientconf.SSL}, {"imap", "mail.example.net", 143, clientconf.STARTTLS}},
			[]clientconf.Server{{"smtp", "mail.example.net", 465, clientconf.SSL}, {"smtp", "mail.example.net", 587, clientconf.STARTTLS}}},
		{"localhost has no sub-names", def, "localhost",
			[]clientconf.Server{{"imap", "mail.example.net", 993, clientconf.SSL}, {"imap", "mail.example.net", 143, clientconf.STARTTLS}},
			[]clientconf.Server{{"smtp", "mail.example.net", 465, clientconf.SSL}, {"smtp", "mail.example.net", 587, clientconf.STARTTLS}}},
		{"listeners off are not offered", noStartTLS, "example.org",
			[]clientconf.Server{{"imap", "imap.example.org", 993, clientconf.SSL}},
			[]clientconf.Server{{"smtp", "smtp.example.org", 465, clientconf.SSL}}},
	}
	for _, tt := range tests {
		if got := tt.c.IMAP(tt.domain); !reflect.DeepEqual(got, tt.imap) {
			t.Errorf("%s: IMAP %+v", tt.name, got)
		}
		if got := tt.c.SMTP(tt.domain); !reflect.DeepEqual(got, tt.smtp) {
			t.Errorf("%s: SMTP %+v", tt.name, got)
		}
	}
	for addr, want := range map[string]int{":993": 993, "127.0.0.1:1993": 1993, "": 0, "[::1]:25": 25, "bad": 0} {
		if got := clientconf.PortOf(addr); got != want {
			t.Errorf("PortOf(%q) = %d, want %d", addr, got, want)
		}
	}
	if clientconf.DomainOf("Alice@Example.ORG") != "example.org" || clientconf.DomainOf("nobody") != "" {
		t.Error("DomainOf")
	}
}
