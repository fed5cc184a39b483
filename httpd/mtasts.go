package httpd

import (
	"net/http"
	"strings"

	"github.com/mailstack/mailstack/internal/mtasts"
)

// mtaSTS serves the policy on mta-sts.<domain> for served domains only.
func (c *Config) mtaSTS(w http.ResponseWriter, r *http.Request) {
	host := hostOnly(r.Host)
	domain, ok := strings.CutPrefix(host, "mta-sts.")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if !c.served(w, r, domain) {
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(mtasts.New(c.MTASTS, c.Clients.Hostname).String()))
}
