package store

import "time"

// ThrottlePolicy bounds failed logins. Counts come from auth_events, so all
// processes sharing the database enforce one policy.
type ThrottlePolicy struct {
	// Window is how far back failures count (default 15 minutes).
	Window time.Duration
	// FreeFailures is how many failures pass without delay (default 3).
	FreeFailures int
	// MaxDelay caps the growing delay after FreeFailures (default 5s).
	MaxDelay time.Duration
	// IPLimit and AccountLimit are the failure counts in Window after which
	// every attempt is refused with ErrThrottled (defaults 30 and 15).
	IPLimit, AccountLimit int
}

func (p ThrottlePolicy) withDefaults() ThrottlePolicy {
	if p.Window == 0 {
		p.Window = 15 * time.Minute
	}
	if p.FreeFailures == 0 {
		p.FreeFailures = 3
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = 5 * time.Second
	}
	if p.IPLimit == 0 {
		p.IPLimit = 30
	}
	if p.AccountLimit == 0 {
		p.AccountLimit = 15
	}
	return p
}
