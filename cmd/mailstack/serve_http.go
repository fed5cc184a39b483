package main

// httpListeners returns the HTTP(S) listeners: autoconfig, autodiscover,
// MTA-STS, ACME challenges, health, and the admin metrics address.
func (s *server) httpListeners() []listener {
	return nil
}
