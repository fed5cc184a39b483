package smtpd

import (
	"errors"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// errBadSASL answers a SASL response that decodes but is not what the
// mechanism expects, such as PLAIN without its two NULs: a permanent
// syntax error (RFC 4954 §4: 501), where go-smtp would answer 454, a
// temporary failure clients retry, with go-sasl's text.
var errBadSASL = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}

// strictServer passes a mechanism's replies through, turning its own
// errors (not the login's SMTP replies) into errBadSASL.
type strictServer struct{ sasl.Server }

func (s strictServer) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := s.Server.Next(response)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		return nil, true, errBadSASL
	}
	return challenge, done, err
}

// loginServer is the server side of the obsolete but ubiquitous LOGIN SASL
// mechanism (draft-murchison-sasl-login), which go-sasl only implements as a
// client. Outlook and some phones still use it.
type loginServer struct {
	step     int
	username string
	auth     func(username, password string) error
}

func newLoginServer(auth func(username, password string) error) sasl.Server {
	return &loginServer{auth: auth}
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		// "AUTH LOGIN dXNlcg==" carries the user name as initial response.
		if len(response) == 0 {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.username, l.step = string(response), 2
		return []byte("Password:"), false, nil
	case 1:
		l.username, l.step = string(response), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.auth(l.username, string(response))
	}
}
