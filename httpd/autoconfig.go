package httpd

import (
	"encoding/xml"
	"net/http"
	"strings"

	"github.com/mailstack/mailstack/internal/clientconf"
)

// autoconfig answers Thunderbird. The domain comes from ?emailaddress= when
// given, else from the host name (autoconfig.<domain> or <domain>).
func (c *Config) autoconfig(w http.ResponseWriter, r *http.Request) {
	domain := clientconf.DomainOf(r.URL.Query().Get("emailaddress"))
	if domain == "" {
		domain = strings.TrimPrefix(hostOnly(r.Host), "autoconfig.")
	}
	if !c.served(w, r, domain) {
		return
	}
	body, err := xml.MarshalIndent(clientconf.Autoconfig(c.Clients, domain), "", "  ")
	if err != nil {
		c.log().Error("autoconfig", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.Write([]byte(xml.Header))
	w.Write(body)
	w.Write([]byte("\n"))
}
