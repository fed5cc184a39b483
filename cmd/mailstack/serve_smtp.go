package main

// smtpListeners returns the SMTP listeners (587, 465, 25) and starts the
// outbound queue worker.
func (s *server) smtpListeners() []listener {
	return nil
}
