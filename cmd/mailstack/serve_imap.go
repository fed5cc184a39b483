package main

// imapListeners returns the IMAP listeners (993 implicit TLS, 143 STARTTLS).
func (s *server) imapListeners() []listener {
	return nil
}
