package httpd

import (
	"encoding/xml"
	"io"
	"net/http"
	"strings"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/mailaddr"
)

// Autodiscover namespaces (MS-OXDSCLI, "POX" autodiscover).
const (
	NSAutodiscoverResponse = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	NSOutlookResponse      = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

// AutodiscoverRequest is what Outlook POSTs.
type AutodiscoverRequest struct {
	XMLName                  xml.Name `xml:"Autodiscover"`
	EMailAddress             string   `xml:"Request>EMailAddress"`
	AcceptableResponseSchema string   `xml:"Request>AcceptableResponseSchema"`
}

// AutodiscoverResponse is the POX answer.
type AutodiscoverResponse struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response OutlookResponse
}

// OutlookResponse is the Response element in the Outlook response schema.
type OutlookResponse struct {
	XMLName xml.Name       `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
	Account OutlookAccount `xml:"Account"`
}

// OutlookAccount lists the account's protocols.
type OutlookAccount struct {
	AccountType string            `xml:"AccountType"`
	Action      string            `xml:"Action"`
	Protocols   []OutlookProtocol `xml:"Protocol"`
}

// OutlookProtocol is one server. Encryption (SSL for implicit TLS, TLS for
// STARTTLS) supersedes the older SSL on/off flag; both are sent for older
// Outlook versions.
type OutlookProtocol struct {
	Type           string `xml:"Type"`
	Server         string `xml:"Server"`
	Port           int    `xml:"Port"`
	DomainRequired string `xml:"DomainRequired"`
	LoginName      string `xml:"LoginName"`
	SPA            string `xml:"SPA"`
	SSL            string `xml:"SSL"`
	Encryption     string `xml:"Encryption"`
	AuthRequired   string `xml:"AuthRequired"`
	UsePOPAuth     string `xml:"UsePOPAuth,omitempty"`
}

// AutodiscoverErrorResponse tells the client the request cannot be
// answered (for example, an ActiveSync request: not offered here).
type AutodiscoverErrorResponse struct {
	XMLName   xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	ErrorCode int      `xml:"Response>Error>ErrorCode"`
	Message   string   `xml:"Response>Error>Message"`
}

// Autodiscover returns the settings for an address. Only the first (most
// preferred) IMAP and SMTP endpoints are given: Outlook uses one of each.
func Autodiscover(cc clientconf.Config, address string) AutodiscoverResponse {
	domain := clientconf.DomainOf(address)
	var ps []OutlookProtocol
	for _, list := range [][]clientconf.Server{cc.IMAP(domain), cc.SMTP(domain)} {
		if len(list) == 0 {
			continue
		}
		s := list[0]
		p := OutlookProtocol{
			Type: strings.ToUpper(s.Protocol), Server: s.Host, Port: s.Port,
			DomainRequired: "off", LoginName: address, SPA: "off", SSL: "on", AuthRequired: "on",
		}
		if s.Security == clientconf.SSL {
			p.Encryption = "SSL"
		} else {
			p.Encryption = "TLS"
		}
		if s.Protocol == "smtp" {
			// Log in to SMTP with the same credentials as to IMAP.
			p.UsePOPAuth = "on"
		}
		ps = append(ps, p)
	}
	return AutodiscoverResponse{Response: OutlookResponse{Account: OutlookAccount{
		AccountType: "email", Action: "settings", Protocols: ps,
	}}}
}

func (c *Config) autodiscover(w http.ResponseWriter, r *http.Request) {
	var req AutodiscoverRequest
	if err := xml.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "malformed autodiscover request", http.StatusBadRequest)
		return
	}
	address := mailaddr.Key(req.EMailAddress)
	if !c.served(w, r, clientconf.DomainOf(address)) {
		return
	}
	var doc any = Autodiscover(c.Clients, address)
	if req.AcceptableResponseSchema != "" && req.AcceptableResponseSchema != NSOutlookResponse {
		// 600 "Invalid Request": the mobilesync (ActiveSync) schema and
		// anything else we do not speak.
		doc = AutodiscoverErrorResponse{ErrorCode: 600, Message: "Invalid Request"}
	}
	body, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		c.log().Error("autodiscover", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.Write([]byte(xml.Header))
	w.Write(body)
	w.Write([]byte("\n"))
}
