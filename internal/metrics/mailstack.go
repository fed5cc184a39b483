package metrics

import "context"

// Mailstack is the set of metrics one mailstack process exports. The
// protocol servers increment them; the admin listener writes them out.
//
// Label values in use: service is "imap", "imap-starttls", "submission",
// "submissions" or "mx" (connections) and "mx" or "submission" (messages
// in); the HTTP listeners are not counted. protocol is "imap" or "smtp";
// result of a login is "ok" or "failed"; result of an outbound delivery is
// "delivered", "deferred" or "bounced".
type Mailstack struct {
	Registry *Registry
	// Connections counts accepted connections per service.
	Connections *CounterVec // service
	// OpenConnections is the number of connections open now per service.
	OpenConnections *GaugeVec // service
	// Logins counts authentication attempts per protocol and result.
	Logins *CounterVec // protocol, result
	// MessagesIn counts messages accepted per service (mx, submission).
	MessagesIn *CounterVec // service
	// MessagesOut counts outbound delivery attempts per result.
	MessagesOut *CounterVec // result
	// IdleSessions is the number of IMAP sessions in IDLE now.
	IdleSessions *Gauge
	// NotifyLag observes seconds from a change's commit to this process
	// applying it to its watched mailboxes.
	NotifyLag *Histogram
	// RspamdScans counts the MX's rspamd scans per result: rspamd's
	// action ("no action", "add header", "reject", ...) or "error" (rspamd
	// down, slow or unreadable: the message was not scanned).
	RspamdScans *CounterVec // result
	// JunkLearned counts messages taught to rspamd per class (spam, ham)
	// and result (ok, retry, failed).
	JunkLearned *CounterVec // class, result
}

// New registers mailstack's metrics in a fresh registry. queueDepth, when
// not nil, is called at each scrape for the number of queued outbound
// messages (a database count, shared by all processes).
func New(queueDepth func(ctx context.Context) (int64, error)) *Mailstack {
	r := NewRegistry()
	m := &Mailstack{
		Registry:        r,
		Connections:     r.NewCounterVec("mailstack_connections_total", "Connections accepted, per service.", "service"),
		OpenConnections: r.NewGaugeVec("mailstack_connections_open", "Connections open now, per service.", "service"),
		Logins:          r.NewCounterVec("mailstack_logins_total", "Login attempts, per protocol and result (ok or failed).", "protocol", "result"),
		MessagesIn:      r.NewCounterVec("mailstack_messages_in_total", "Messages accepted, per service (mx, submission).", "service"),
		MessagesOut:     r.NewCounterVec("mailstack_messages_out_total", "Outbound delivery attempts, per result (delivered, deferred, bounced).", "result"),
		IdleSessions:    r.NewGaugeVec("mailstack_imap_idle_sessions", "IMAP sessions in IDLE now.").With(),
		NotifyLag: r.NewHistogram("mailstack_notify_lag_seconds", "Seconds from a mailbox change's commit to this process applying it.",
			0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
		RspamdScans: r.NewCounterVec("mailstack_rspamd_scans_total", "Inbound messages scanned by rspamd, per result (its action, or error: not scanned).", "result"),
		JunkLearned: r.NewCounterVec("mailstack_junk_learned_total", "Messages taught to rspamd from the Junk folder, per class (spam, ham) and result (ok, retry, failed).", "class", "result"),
	}
	if queueDepth != nil {
		r.NewGaugeFunc("mailstack_queue_depth", "Outbound messages waiting in the queue (all processes).", func(ctx context.Context) (float64, error) {
			n, err := queueDepth(ctx)
			return float64(n), err
		})
	}
	return m
}

// WatchChangeFeed exports mailstack_change_feed_up: 1 while up reports
// that the process's LISTEN connection listens, else 0. While it is 0,
// changes made by other processes reach this one's sessions only when the
// connection is back (every watched mailbox is read again then).
func (m *Mailstack) WatchChangeFeed(up func() bool) {
	m.Registry.NewGaugeFunc("mailstack_change_feed_up", "1 while the process's change feed (its LISTEN connection) listens, else 0.",
		func(context.Context) (float64, error) {
			if up() {
				return 1, nil
			}
			return 0, nil
		})
}

// The methods below are what the protocol servers call. They are safe on a
// nil *Mailstack (metrics off, as in most tests).

// ConnOpened counts an accepted connection of service and returns the
// function to call when it closes.
func (m *Mailstack) ConnOpened(service string) (closed func()) {
	if m == nil {
		return func() {}
	}
	m.Connections.With(service).Inc()
	open := m.OpenConnections.With(service)
	open.Add(1)
	return func() { open.Add(-1) }
}

// Login counts a login attempt.
func (m *Mailstack) Login(protocol string, ok bool) {
	if m == nil {
		return
	}
	result := "failed"
	if ok {
		result = "ok"
	}
	m.Logins.With(protocol, result).Inc()
}

// MessageIn counts a message accepted (committed) by service.
func (m *Mailstack) MessageIn(service string) {
	if m != nil {
		m.MessagesIn.With(service).Inc()
	}
}

// MessageOut counts an outbound delivery attempt's result.
func (m *Mailstack) MessageOut(result string) {
	if m != nil {
		m.MessagesOut.With(result).Inc()
	}
}

// IdleStarted counts an IMAP session entering IDLE and returns the function
// to call when it leaves.
func (m *Mailstack) IdleStarted() (done func()) {
	if m == nil {
		return func() {}
	}
	m.IdleSessions.Add(1)
	return func() { m.IdleSessions.Add(-1) }
}

// ObserveNotifyLag records how long after its commit a change was applied.
func (m *Mailstack) ObserveNotifyLag(seconds float64) {
	if m != nil {
		m.NotifyLag.Observe(seconds)
	}
}

// RspamdScan counts one rspamd scan's result (its action, or "error").
func (m *Mailstack) RspamdScan(result string) {
	if m != nil {
		m.RspamdScans.With(result).Inc()
	}
}

// JunkLearn counts one attempt at teaching rspamd a message.
func (m *Mailstack) JunkLearn(spam bool, result string) {
	if m != nil {
		class := "ham"
		if spam {
			class = "spam"
		}
		m.JunkLearned.With(class, result).Inc()
	}
}
