package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/internal/metrics"
)

func TestExposition(t *testing.T) {
	depth := int64(3)
	var depthErr error
	m := metrics.New(func(context.Context) (int64, error) { return depth, depthErr })
	m.Connections.With("imap").Inc()
	m.Connections.With("imap").Inc()
	m.Connections.With("mx").Add(5)
	m.OpenConnections.With("imap").Inc()
	m.Logins.With("imap", "ok").Inc()
	m.Logins.With("smtp", "failed").Inc()
	m.IdleSessions.Set(2)
	m.NotifyLag.Observe(0.002)
	m.NotifyLag.Observe(0.3)
	m.NotifyLag.Observe(30)
	m.WatchChangeFeed(func() bool { return true })

	var buf bytes.Buffer
	if err := m.Registry.WriteText(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"# TYPE mailstack_connections_total counter\n",
		"mailstack_connections_total{service=\"imap\"} 2\nmailstack_connections_total{service=\"mx\"} 5\n",
		"mailstack_connections_open{service=\"imap\"} 1\n",
		"mailstack_logins_total{protocol=\"imap\",result=\"ok\"} 1\n",
		"mailstack_logins_total{protocol=\"smtp\",result=\"failed\"} 1\n",
		"mailstack_imap_idle_sessions 2\n",
		"mailstack_notify_lag_seconds_bucket{le=\"0.005\"} 1\n",
		"mailstack_notify_lag_seconds_bucket{le=\"0.5\"} 2\n",
		"mailstack_notify_lag_seconds_bucket{le=\"+Inf\"} 3\n",
		"mailstack_notify_lag_seconds_count 3\n",
		"mailstack_queue_depth 3\n",
		"mailstack_change_feed_up 1\n",
		"# TYPE mailstack_messages_in_total counter\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// Every line is a comment or a well-formed sample.
	sample := regexp.MustCompile(`^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+Inf-]+$`)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "#") && !sample.MatchString(line) {
			t.Errorf("malformed line %q", line)
		}
	}

	// A failing database leaves the sample out instead of reporting 0.
	depthErr = errors.New("db down")
	buf.Reset()
	m.Registry.WriteText(context.Background(), &buf)
	if strings.Contains(buf.String(), "mailstack_queue_depth 3") || !strings.Contains(buf.String(), "# mailstack_queue_depth unavailable") {
		t.Errorf("queue depth with a failing database:\n%s", buf.String())
	}
}
