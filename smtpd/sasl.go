package smtpd

import (
	"github.com/emersion/go-sasl"
)

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
