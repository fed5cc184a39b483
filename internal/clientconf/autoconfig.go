package clientconf

import "encoding/xml"

// ClientConfig is Thunderbird's autoconfig document, version 1.1
// (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
type ClientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider EmailProvider `xml:"emailProvider"`
}

// EmailProvider is the provider element of ClientConfig.
type EmailProvider struct {
	ID               string             `xml:"id,attr"`
	Domains          []string           `xml:"domain"`
	DisplayName      string             `xml:"displayName"`
	DisplayShortName string             `xml:"displayShortName"`
	Incoming         []AutoconfigServer `xml:"incomingServer"`
	Outgoing         []AutoconfigServer `xml:"outgoingServer"`
}

// AutoconfigServer is an incomingServer or outgoingServer element.
type AutoconfigServer struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
}

// Autoconfig returns the autoconfig document for a domain.
func Autoconfig(cc Config, domain string) ClientConfig {
	conv := func(servers []Server) []AutoconfigServer {
		var out []AutoconfigServer
		for _, s := range servers {
			out = append(out, AutoconfigServer{
				Type: s.Protocol, Hostname: s.Host, Port: s.Port, SocketType: string(s.Security),
				// Over TLS only, so cleartext passwords are what every client
				// can do; the user name is always the full address.
				Authentication: "password-cleartext", Username: "%EMAILADDRESS%",
			})
		}
		return out
	}
	return ClientConfig{
		Version: "1.1",
		Provider: EmailProvider{
			ID: domain, Domains: []string{domain},
			DisplayName: domain + " mail", DisplayShortName: domain,
			Incoming: conv(cc.IMAP(domain)), Outgoing: conv(cc.SMTP(domain)),
		},
	}
}
