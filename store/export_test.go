package store

import "time"

// RecordThrottleDelays returns pol with its delays passed to record
// instead of slept, so that tests see which attempts wait without timing
// them.
func RecordThrottleDelays(pol ThrottlePolicy, record func(time.Duration)) ThrottlePolicy {
	pol.wait = record
	return pol
}
