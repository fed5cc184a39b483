// Package rspamd is a small client of rspamd's HTTP protocol: the scanner's
// /checkv2, which the inbound MX asks for a verdict on each message, and
// the controller's /learnspam and /learnham, which the Learner feeds from
// the store's junk_learn queue when a user moves mail into or out of Junk.
// See https://rspamd.com/doc/developers/protocol.html.
package rspamd

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Actions rspamd returns (the "action" of a /checkv2 reply).
const (
	ActionNoAction       = "no action"
	ActionGreylist       = "greylist"
	ActionAddHeader      = "add header"
	ActionRewriteSubject = "rewrite subject"
	ActionSoftReject     = "soft reject"
	ActionReject         = "reject"
)

// DefaultTimeout bounds one scan unless Config.Timeout says otherwise:
// a little over rspamd's own task_timeout (8 s), after which rspamd
// answers by itself.
const DefaultTimeout = 10 * time.Second

// maxReplyBytes bounds a reply read into memory: a verdict with every
// symbol's options is a few KiB.
const maxReplyBytes = 1 << 20

// Config configures a Client.
type Config struct {
	// URL is the scanner (normal worker), e.g. http://rspamd:11333.
	URL string
	// ControllerURL is the controller worker, which learns, e.g.
	// http://rspamd:11334 (default: URL's host on port 11334).
	ControllerURL string
	// Password is the controller's password (its "enable_password" or
	// "password"); empty when the controller trusts our address
	// (secure_ip).
	Password string
	// Timeout bounds one scan (default DefaultTimeout). Learning gets
	// four times as long: nobody waits for it.
	Timeout time.Duration
	// HTTP is the client used (default: one with its own transport).
	HTTP *http.Client
}

// Client talks to one rspamd. It is safe for concurrent use.
type Client struct {
	cfg Config
}

// New returns a client for cfg. It fails if the URLs do not parse.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("rspamd: bad URL %q: want http://host:port", cfg.URL)
	}
	if cfg.ControllerURL == "" {
		c := *u
		c.Host = net.JoinHostPort(u.Hostname(), "11334")
		cfg.ControllerURL = c.String()
	} else if c, err := url.Parse(cfg.ControllerURL); err != nil || c.Host == "" {
		return nil, fmt.Errorf("rspamd: bad controller URL %q: want http://host:port", cfg.ControllerURL)
	}
	cfg.URL = strings.TrimSuffix(cfg.URL, "/")
	cfg.ControllerURL = strings.TrimSuffix(cfg.ControllerURL, "/")
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     time.Minute,
		}}
	}
	return &Client{cfg: cfg}, nil
}

// URL returns the scanner's URL, for banners and logs.
func (c *Client) URL() string { return c.cfg.URL }

// Timeout returns the bound on one scan.
func (c *Client) Timeout() time.Duration { return c.cfg.Timeout }

// Envelope is what rspamd is told about a message besides its bytes.
type Envelope struct {
	IP       string   // the sending client's address
	Helo     string   // its HELO/EHLO name
	MailFrom string   // envelope sender; "" for <>
	Rcpts    []string // envelope recipients
	// User is the address whose statistics rspamd's per-user Bayes
	// classifier uses (sent as Deliver-To); "" for rspamd's default (the
	// first recipient).
	User string
	// QueueID is our id of the message, shown in rspamd's log.
	QueueID string
}

// Symbol is one rule that matched.
type Symbol struct {
	Name    string   `json:"name"`
	Score   float64  `json:"score"`
	Options []string `json:"options"`
}

// Result is rspamd's verdict on a message.
type Result struct {
	Action        string            `json:"action"`
	Score         float64           `json:"score"`
	RequiredScore float64           `json:"required_score"`
	Symbols       map[string]Symbol `json:"symbols"`
	Messages      map[string]string `json:"messages"`
	// Subject is the rewritten subject of a "rewrite subject" action.
	Subject string `json:"subject"`
}

// Spam reports whether the action files the message as junk (or worse).
func (r *Result) Spam() bool {
	switch r.Action {
	case ActionNoAction, ActionGreylist:
		return false
	}
	return true
}

// SMTPMessage is the reply text rspamd suggests for a refusal, if any.
func (r *Result) SMTPMessage() string { return r.Messages["smtp_message"] }

// SymbolNames returns the matched symbols with a non-zero score, highest
// first, as "NAME(score)".
func (r *Result) SymbolNames() []string {
	syms := make([]Symbol, 0, len(r.Symbols))
	for _, s := range r.Symbols {
		if s.Score != 0 {
			syms = append(syms, s)
		}
	}
	slices.SortFunc(syms, func(a, b Symbol) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), strings.Compare(a.Name, b.Name))
	})
	out := make([]string, len(syms))
	for i, s := range syms {
		out[i] = fmt.Sprintf("%s(%.2f)", clean(s.Name), s.Score)
	}
	return out
}

// Check asks the scanner for a verdict on the message of size bytes read
// from msg, within the client's timeout (and ctx). An error means no
// verdict: rspamd is down, slow or answered something unreadable.
func (c *Client) Check(ctx context.Context, env Envelope, msg io.Reader, size int64) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL+"/checkv2", msg)
	if err != nil {
		return nil, fmt.Errorf("rspamd check: %w", err)
	}
	req.ContentLength = size
	h := req.Header
	set := func(k, v string) {
		if v = clean(v); v != "" {
			h.Set(k, v)
		}
	}
	set("IP", env.IP)
	set("Helo", env.Helo)
	// rspamd reads From as the envelope sender; an empty one is <>.
	h.Set("From", cmp.Or(clean(env.MailFrom), "<>"))
	for _, r := range env.Rcpts {
		if r = clean(r); r != "" {
			h.Add("Rcpt", r)
		}
	}
	set("Deliver-To", env.User)
	set("Queue-Id", env.QueueID)
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rspamd check: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return nil, fmt.Errorf("rspamd check: read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("rspamd check: %s: %s", resp.Status, replyError(body))
	}
	var res Result
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("rspamd check: reply: %w", err)
	}
	if res.Action == "" {
		return nil, fmt.Errorf("rspamd check: reply without an action: %s", replyError(body))
	}
	return &res, nil
}

// ErrRefused is wrapped by Learn's error when rspamd refused the request
// for good (a 4xx other than "already learned"): retrying cannot help.
var ErrRefused = errors.New("refused")

// Learn teaches rspamd's Bayes classifier, for user's statistics, that the
// message of size bytes read from msg is spam (or ham). A message rspamd
// has already learned the same way, or cannot learn (too few words),
// counts as learned: nil. A 4xx error wraps ErrRefused; other errors
// (rspamd down, 5xx) are worth retrying.
func (c *Client) Learn(ctx context.Context, spam bool, user string, msg io.Reader, size int64) error {
	ctx, cancel := context.WithTimeout(ctx, 4*c.cfg.Timeout)
	defer cancel()
	path := "/learnham"
	if spam {
		path = "/learnspam"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.ControllerURL+path, msg)
	if err != nil {
		return fmt.Errorf("rspamd %s: %w", path[1:], err)
	}
	req.ContentLength = size
	if u := clean(user); u != "" {
		req.Header.Set("Deliver-To", u)
	}
	if c.cfg.Password != "" {
		req.Header.Set("Password", c.cfg.Password)
	}
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("rspamd %s: %w", path[1:], err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		// 200 learned; 204 nothing to learn (too few tokens); 208
		// already learned as this class.
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return fmt.Errorf("rspamd %s: %s: %s: %w", path[1:], resp.Status, replyError(body), ErrRefused)
	}
	return fmt.Errorf("rspamd %s: %s: %s", path[1:], resp.Status, replyError(body))
}

// Ping reports whether the scanner answers.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.URL+"/ping", nil)
	if err != nil {
		return fmt.Errorf("rspamd ping: %w", err)
	}
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("rspamd ping: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxReplyBytes)) //nolint:errcheck // only the status matters
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("rspamd ping: %s", resp.Status)
	}
	return nil
}

// replyError returns the "error" of a JSON error reply, else the reply's
// start.
func replyError(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return strconv.Quote(string(body))
}

// clean keeps a value from breaking the HTTP header it goes in.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
}
