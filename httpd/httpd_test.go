package httpd_test

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/httpd"
	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/mtasts"
)

type domains map[string]bool

func (d domains) IsLocalDomain(_ context.Context, name string) (bool, error) { return d[name], nil }

func testConfig(health error) *httpd.Config {
	return &httpd.Config{
		Clients: clientconf.Default("mail.example.net"),
		MTASTS:  mtasts.Enforce,
		Domains: domains{"example.org": true},
		Health:  func(context.Context) error { return health },
	}
}

func do(t *testing.T, h http.Handler, method, url, body string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, url, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAutoconfig(t *testing.T) {
	cfg := testConfig(nil)
	tests := []struct {
		name    string
		handler http.Handler
		url     string
		status  int
	}{
		{"autoconfig host over https", cfg.HTTPSHandler(), "https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=alice%40example.org", 200},
		{"autoconfig host over http (older Thunderbird)", cfg.HTTPHandler(), "http://autoconfig.example.org/mail/config-v1.1.xml", 200},
		{"well-known on the domain", cfg.HTTPSHandler(), "https://example.org/.well-known/autoconfig/mail/config-v1.1.xml", 200},
		{"well-known on the domain, address wins over host", cfg.HTTPSHandler(), "https://mail.example.net/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=Bob@Example.ORG", 200},
		{"foreign domain", cfg.HTTPSHandler(), "https://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=eve%40example.com", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, tt.handler, "GET", tt.url, "")
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/xml") {
				t.Errorf("Content-Type %q", ct)
			}
			// Validate the document against the values the server is
			// configured with, element by element.
			var doc struct {
				XMLName  xml.Name `xml:"clientConfig"`
				Version  string   `xml:"version,attr"`
				Provider struct {
					ID       string   `xml:"id,attr"`
					Domain   []string `xml:"domain"`
					Incoming []struct {
						Type       string `xml:"type,attr"`
						Hostname   string `xml:"hostname"`
						Port       int    `xml:"port"`
						SocketType string `xml:"socketType"`
						Auth       string `xml:"authentication"`
						Username   string `xml:"username"`
					} `xml:"incomingServer"`
					Outgoing []struct {
						Type       string `xml:"type,attr"`
						Hostname   string `xml:"hostname"`
						Port       int    `xml:"port"`
						SocketType string `xml:"socketType"`
						Auth       string `xml:"authentication"`
						Username   string `xml:"username"`
					} `xml:"outgoingServer"`
				} `xml:"emailProvider"`
			}
			if err := xml.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatalf("%v\n%s", err, body)
			}
			if doc.Version != "1.1" || doc.Provider.ID != "example.org" || len(doc.Provider.Domain) != 1 || doc.Provider.Domain[0] != "example.org" {
				t.Errorf("provider: %+v", doc)
			}
			imap := cfg.Clients.IMAP("example.org")
			smtp := cfg.Clients.SMTP("example.org")
			if len(doc.Provider.Incoming) != len(imap) || len(doc.Provider.Outgoing) != len(smtp) {
				t.Fatalf("servers: %s", body)
			}
			for i, s := range doc.Provider.Incoming {
				if s.Type != "imap" || s.Hostname != imap[i].Host || s.Port != imap[i].Port || s.SocketType != string(imap[i].Security) ||
					s.Auth != "password-cleartext" || s.Username != "%EMAILADDRESS%" {
					t.Errorf("incoming %d = %+v, want %+v", i, s, imap[i])
				}
			}
			for i, s := range doc.Provider.Outgoing {
				if s.Type != "smtp" || s.Hostname != smtp[i].Host || s.Port != smtp[i].Port || s.SocketType != string(smtp[i].Security) ||
					s.Auth != "password-cleartext" || s.Username != "%EMAILADDRESS%" {
					t.Errorf("outgoing %d = %+v, want %+v", i, s, smtp[i])
				}
			}
			if imap[0].Host != "imap.example.org" || imap[0].Port != 993 || smtp[0].Host != "smtp.example.org" || smtp[0].Port != 465 {
				t.Errorf("unexpected defaults: %+v %+v", imap, smtp)
			}
		})
	}
}

// outlookRequest is the body Outlook sends (MS-OXDSCLI 4.1, as captured
// from Outlook 2016 for an IMAP account).
const outlookRequest = `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>alice@example.org</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`

const activeSyncRequest = `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006">
  <Request>
    <EMailAddress>alice@example.org</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006</AcceptableResponseSchema>
  </Request>
</Autodiscover>`

func TestAutodiscover(t *testing.T) {
	cfg := testConfig(nil)
	h := cfg.HTTPSHandler()

	resp := do(t, h, "POST", "https://autodiscover.example.org/autodiscover/autodiscover.xml", outlookRequest)
	body := readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	// Decode with the namespaces Outlook checks.
	var doc struct {
		XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
		Response struct {
			XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
			Account struct {
				AccountType string `xml:"AccountType"`
				Action      string `xml:"Action"`
				Protocol    []struct {
					Type, Server, LoginName, SSL, Encryption, AuthRequired string
					Port                                                   int
				} `xml:"Protocol"`
			} `xml:"Account"`
		} `xml:"Response"`
	}
	if err := xml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	acc := doc.Response.Account
	if acc.AccountType != "email" || acc.Action != "settings" || len(acc.Protocol) != 2 {
		t.Fatalf("account: %+v\n%s", acc, body)
	}
	want := []struct {
		typ, server string
		port        int
		enc         string
	}{{"IMAP", "imap.example.org", 993, "SSL"}, {"SMTP", "smtp.example.org", 465, "SSL"}}
	for i, p := range acc.Protocol {
		w := want[i]
		if p.Type != w.typ || p.Server != w.server || p.Port != w.port || p.Encryption != w.enc ||
			p.SSL != "on" || p.AuthRequired != "on" || p.LoginName != "alice@example.org" {
			t.Errorf("protocol %d = %+v, want %+v", i, p, w)
		}
	}

	tests := []struct {
		name, url, body string
		status          int
		contains        string
	}{
		{"ActiveSync is refused with error 600", "https://example.org/autodiscover/autodiscover.xml", activeSyncRequest, 200, "<ErrorCode>600</ErrorCode>"},
		{"capitalised path", "https://example.org/Autodiscover/Autodiscover.xml", outlookRequest, 200, "<Server>imap.example.org</Server>"},
		{"foreign domain", "https://example.org/autodiscover/autodiscover.xml", strings.ReplaceAll(outlookRequest, "example.org", "example.com"), 404, ""},
		{"garbage", "https://example.org/autodiscover/autodiscover.xml", "not xml <", 400, ""},
	}
	for _, tt := range tests {
		resp := do(t, h, "POST", tt.url, tt.body)
		body := readBody(t, resp)
		if resp.StatusCode != tt.status || !strings.Contains(body, tt.contains) {
			t.Errorf("%s: status %d body %s", tt.name, resp.StatusCode, body)
		}
	}
}

func TestMTASTSAndRedirects(t *testing.T) {
	cfg := testConfig(nil)
	tests := []struct {
		name     string
		handler  http.Handler
		method   string
		url      string
		status   int
		body     string // exact, when not empty
		location string
	}{
		{"policy", cfg.HTTPSHandler(), "GET", "https://mta-sts.example.org/.well-known/mta-sts.txt", 200,
			"version: STSv1\r\nmode: enforce\r\nmx: mail.example.net\r\nmax_age: 604800\r\n", ""},
		{"policy of a foreign domain", cfg.HTTPSHandler(), "GET", "https://mta-sts.example.com/.well-known/mta-sts.txt", 404, "", ""},
		{"policy on the wrong host", cfg.HTTPSHandler(), "GET", "https://example.org/.well-known/mta-sts.txt", 404, "", ""},
		{"policy over http redirects", cfg.HTTPHandler(), "GET", "http://mta-sts.example.org/.well-known/mta-sts.txt", 308, "",
			"https://mta-sts.example.org/.well-known/mta-sts.txt"},
		{"anything over http redirects, query kept", cfg.HTTPHandler(), "GET", "http://mail.example.net:80/x?y=1", 308, "", "https://mail.example.net/x?y=1"},
		{"redirect keeps a non-default HTTPS port", (&httpd.Config{HTTPSPort: 1443}).HTTPHandler(), "GET", "http://localhost:1080/x", 308, "", "https://localhost:1443/x"},
		{"autodiscover POST over http keeps its method", cfg.HTTPHandler(), "POST", "http://autodiscover.example.org/autodiscover/autodiscover.xml", 308, "",
			"https://autodiscover.example.org/autodiscover/autodiscover.xml"},
		{"acme challenge without ACME", cfg.HTTPHandler(), "GET", "http://mail.example.net/.well-known/acme-challenge/abc", 404, "", ""},
		{"healthz over http", cfg.HTTPHandler(), "GET", "http://mail.example.net/healthz", 200, "ok\n", ""},
		{"healthz over https", cfg.HTTPSHandler(), "GET", "https://mail.example.net/healthz", 200, "ok\n", ""},
		{"healthz with the database down", testConfig(errors.New("down")).HTTPSHandler(), "GET", "https://mail.example.net/healthz", 503, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, tt.handler, tt.method, tt.url, "")
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.body != "" && body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if loc := resp.Header.Get("Location"); loc != tt.location {
				t.Errorf("Location %q, want %q", loc, tt.location)
			}
		})
	}
}
