package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/mailaddr"
)

// ThrottlePolicy bounds failed logins. Counts come from auth_events, so all
// processes sharing the database enforce one policy. Within Window:
//
//   - Delay. An attempt waits 100 ms << (n - FreeFailures), at most
//     MaxDelay, where n counts the failures of its user name from its IP
//     and, unless it carries a valid app password, its account's failures
//     from anywhere (which protects the main password against guesses
//     spread over many addresses). Other users behind the same address (a
//     household, an office) do not wait for one device that keeps failing.
//   - IP refusal. From an IP with IPLimit failures, every attempt is
//     refused with ErrThrottled: guessing at many accounts from one
//     address. Refused attempts count too, so a guesser who keeps going
//     stays refused; but each user name's refusals count once, and not at
//     all when they carried a valid app password, so the legitimate users
//     behind that address cannot keep it locked by retrying: the count
//     falls below the limit one Window after the guessing stops.
//   - Account refusal. An account with AccountLimit failures refuses every
//     attempt except with a valid app password (unguessable, so guessing
//     at an address never locks its owner's devices out). Refused attempts
//     do not count here, so the lock ends one Window after the last real
//     guess and cannot be extended by the owner's own retries from another
//     address; a guesser gets at most AccountLimit guesses per Window.
//
// A refusal is immediate (no delay, no password hashed).
type ThrottlePolicy struct {
	// Window is how far back failures count (default 15 minutes).
	Window time.Duration
	// FreeFailures is how many failures pass without delay (default 3).
	FreeFailures int
	// MaxDelay caps the growing delay after FreeFailures (default 5s).
	MaxDelay time.Duration
	// IPLimit and AccountLimit are the failure counts in Window after which
	// attempts from the IP, or on the account, are refused with
	// ErrThrottled (defaults 30 and 15; see above for what counts).
	IPLimit, AccountLimit int

	// wait, if set, is called with a delay instead of sleeping it: tests
	// check which attempts are delayed without timing them.
	wait func(time.Duration)
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

// Protocols recorded in auth_events. Logins for ProtocolManage (the CLI and
// management tools) and ProtocolWeb (the account web's sign-in) accept the
// main password; the others follow the app password policy.
const (
	ProtocolIMAP   = "imap"
	ProtocolSMTP   = "smtp"
	ProtocolManage = "manage"
	ProtocolWeb    = "web"
)

// AppPassword is a revocable device password. Its secret is shown once, at
// creation, and stored only as a SHA-256 hash.
type AppPassword struct {
	ID         int64
	Label      string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	LastUsedIP string
	// LastClient is what the last client to identify itself (IMAP ID)
	// with this password called itself; empty if none has. A login
	// without an ID (SMTP has none) keeps it.
	LastClient string
	RevokedAt  *time.Time
}

// newAppSecret returns 16 random lowercase letters grouped as
// abcd-efgh-ijkl-mnop (~75 bits).
func newAppSecret() (string, error) {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	var b strings.Builder
	for i := 0; i < 16; i++ {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		if err != nil {
			return "", fmt.Errorf("generate app password: %w", err)
		}
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(letters[n.Int64()])
	}
	return b.String(), nil
}

// hashAppSecret hashes a secret as typed, ignoring case, spaces and dashes,
// so "ABCD EFGH IJKL MNOP" works too.
func hashAppSecret(secret string) []byte {
	norm := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		case r == '-' || r == ' ':
			return -1
		}
		return r
	}, secret)
	sum := sha256.Sum256([]byte(norm))
	return sum[:]
}

// CreateAppPassword creates an app password for the account and returns its
// secret, which is not stored and cannot be shown again.
func (s *Store) CreateAppPassword(ctx context.Context, accountID int64, label string) (string, *AppPassword, error) {
	secret, err := newAppSecret()
	if err != nil {
		return "", nil, err
	}
	ap := &AppPassword{Label: label}
	err = s.pool.QueryRow(ctx, `INSERT INTO app_passwords (account_id, label, hash) VALUES ($1, $2, $3)
		RETURNING id, created_at`, accountID, label, hashAppSecret(secret)).Scan(&ap.ID, &ap.CreatedAt)
	if err != nil {
		return "", nil, fmt.Errorf("create app password: %w", err)
	}
	return secret, ap, nil
}

// AppPasswords lists the account's app passwords, revoked ones included.
func (s *Store) AppPasswords(ctx context.Context, accountID int64) ([]AppPassword, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, label, created_at, last_used_at, coalesce(last_used_ip, ''), coalesce(last_client, ''), revoked_at
		FROM app_passwords WHERE account_id = $1 ORDER BY id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list app passwords: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[AppPassword])
}

// RevokeAppPassword revokes one of the account's app passwords. The
// revocation is announced on LoginChannel in the same statement: sessions
// logged in with it end as soon as their servers hear of it (see
// CheckSession).
func (s *Store) RevokeAppPassword(ctx context.Context, accountID, id int64) error {
	tag, err := s.pool.Exec(ctx, `WITH u AS (UPDATE app_passwords SET revoked_at = coalesce(revoked_at, now())
			WHERE id = $1 AND account_id = $2 RETURNING id),
		n AS (SELECT `+loginNotifySQL("$3", "$2", "id")+` FROM u)
		SELECT id FROM u WHERE (SELECT count(*) FROM n) >= 0`, id, accountID, LoginChannel)
	if err != nil {
		return fmt.Errorf("revoke app password: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return objectErr("app password", fmt.Sprint(id), ErrNotFound)
	}
	return nil
}

// Credentials is one login attempt.
type Credentials struct {
	Username, Password string
	Protocol           string // ProtocolIMAP, ProtocolSMTP, ProtocolManage or ProtocolWeb
	RemoteIP           string
	// Client is the client's description of itself (IMAP ID, RFC 2971),
	// e.g. "iPhone Mail 18.2 (iOS 18.2)"; empty if unknown. It is
	// recorded without control characters, cut to 200 bytes.
	Client string
}

// Login is a successful authentication.
type Login struct {
	AccountID     int64
	Address       string
	AppPasswordID int64 // 0 when the main password was used
	// EventID is the id of the login's activity log entry, for
	// SetLoginClient.
	EventID int64
}

// AuthEvent is one recorded login attempt: the account activity log.
type AuthEvent struct {
	At          time.Time
	Username    string
	Protocol    string
	RemoteIP    string
	AppPassword string // label of the app password used, if any
	Success     bool
	Reason      string
	Client      string // the client's description of itself, if it gave one
}

// Reasons recorded in AuthEvent.Reason for failed attempts. On the wire
// every failure looks the same (ErrAuthFailed); only the activity log
// says why.
const (
	ReasonUnknownUser   = "unknown user"
	ReasonDisabled      = "account disabled"
	ReasonRevoked       = "revoked app password"
	ReasonWrongPassword = "wrong password"
	// ReasonMainRefused: the account's correct main password, refused
	// because IMAP and SMTP require app passwords (server or account
	// policy).
	ReasonMainRefused = "main password refused: app passwords are required"
	// ReasonNotAppPassword: no app password matched and the main
	// password was not checked, because it could not have been accepted
	// and this account or address had too many recent failures to spend
	// an argon2id check on finding out.
	ReasonNotAppPassword = "not an app password"
	ReasonThrottled      = "throttled"
)

// maxUsername bounds the user name recorded in the activity log: the
// longest valid address is 320 bytes, anything longer is noise.
const maxUsername = 320

// maxClient bounds a client's description of itself in the activity log:
// an IMAP ID may send 30 fields of 1,024 bytes; a name and a version fit
// in far less.
const maxClient = 200

// cutUTF8 returns s as valid UTF-8 (PostgreSQL refuses anything else in
// text) of at most n bytes, cut at a character boundary.
func cutUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// cleanClient makes a client's description of itself fit to record and to
// show in a table: no control characters (line breaks, tabs, escapes),
// line separators or bidirectional controls (which could make a terminal
// show other text than was sent), no surrounding spaces, at most maxClient
// bytes.
func cleanClient(client string) string {
	client = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Bidi_Control, unicode.Zl, unicode.Zp) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(client, "\uFFFD"))
	return strings.TrimSpace(cutUTF8(client, maxClient))
}

// Authenticate checks credentials, records the attempt in the activity log
// and applies throttling (see ThrottlePolicy): after a few failures of a
// user name from one IP, or on one account, attempts are slowed; after
// many from one IP, or on one account, refused with ErrThrottled. A
// correct app password is refused only for its IP's failures, never for
// the account's, so that an attacker guessing at an address cannot lock
// its owner's devices out (app passwords are unguessable; the account
// limit protects the main password). Every failure returns ErrAuthFailed
// whatever its cause, so the wire never says whether a user exists or why
// a password was refused; the activity log records the reason.
func (s *Store) Authenticate(ctx context.Context, c Credentials) (*Login, error) {
	username := cutUTF8(mailaddr.Key(c.Username), maxUsername)
	client := cleanClient(c.Client)
	pol := s.opts.Throttle
	var (
		accountID, appID                   *int64
		address, hash                      *string
		requireApp, disabled               *bool
		revoked                            *bool
		ipCount, pairFailures, accFailures int
	)
	// One round trip: the account, the app password matching the secret
	// (if any) and the counts of ThrottlePolicy: the IP's (failures, plus
	// refusals once per user name unless a valid app password was
	// refused), the user name's from this IP, and the account's. Refused
	// attempts are those with reason 'throttled'.
	err := s.pool.QueryRow(ctx, `SELECT a.id, a.address, a.password_hash, a.require_app_passwords, a.disabled,
			p.id, p.revoked_at IS NOT NULL, f.ip, f.pair,
			(SELECT count(*) FROM auth_events e WHERE e.account_id = a.id AND NOT success AND reason <> 'throttled'
				AND at > now() - $3::interval)
		FROM (SELECT count(*) FILTER (WHERE reason <> 'throttled')
				+ count(DISTINCT username) FILTER (WHERE reason = 'throttled' AND app_password_id IS NULL) AS ip,
				count(*) FILTER (WHERE username = $1 AND reason <> 'throttled') AS pair
			FROM auth_events WHERE remote_ip = $2 AND NOT success AND at > now() - $3::interval) f
		LEFT JOIN accounts a ON a.address = $1
		LEFT JOIN LATERAL (SELECT id, revoked_at FROM app_passwords
			WHERE account_id = a.id AND hash = $4 ORDER BY revoked_at NULLS FIRST LIMIT 1) p ON true`,
		username, c.RemoteIP, pol.Window, hashAppSecret(c.Password)).
		Scan(&accountID, &address, &hash, &requireApp, &disabled, &appID, &revoked, &ipCount, &pairFailures, &accFailures)
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if c.Protocol == ProtocolWeb {
		// The web signs in with the main password only: an app password
		// is a device's, and must not open the account's settings.
		appID, revoked = nil, nil
	}
	fail := func(reason string, appID *int64) (*Login, error) {
		s.recordAuth(ctx, accountID, username, c.Protocol, c.RemoteIP, client, appID, false, reason) //nolint:errcheck // logged; it fails anyway
		if reason == ReasonThrottled {
			return nil, ErrThrottled
		}
		return nil, ErrAuthFailed
	}
	validApp := accountID != nil && !*disabled && appID != nil && !*revoked
	if ipCount >= pol.IPLimit {
		// A valid app password is recorded as such: that refusal is not
		// a guess and does not count toward the IP's.
		if validApp {
			return fail(ReasonThrottled, appID)
		}
		return fail(ReasonThrottled, nil)
	}
	if !validApp && accFailures >= pol.AccountLimit {
		return fail(ReasonThrottled, nil)
	}
	slow := pairFailures
	if !validApp {
		slow = max(slow, accFailures)
	}
	if n := slow - pol.FreeFailures; n >= 0 {
		delay := min(100*time.Millisecond<<min(n, 10), pol.MaxDelay)
		if pol.wait != nil {
			pol.wait(delay)
		} else {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	// The main password can only succeed where policy allows it. Where it
	// cannot, it is still checked while this account and address have few
	// recent failures, so that the activity log can tell an owner whose
	// device sends the main password from a wrong guess; past that, it is
	// not even hashed, which keeps a stream of failed logins cheap
	// (argon2id costs tens of milliseconds and 19 MiB). The address's
	// count, not the user name's, decides: a guesser trying many names
	// from one address must not cost a hash each.
	mainAllowed := c.Protocol == ProtocolManage || c.Protocol == ProtocolWeb || (s.opts.AllowMainPassword && (requireApp == nil || !*requireApp))
	checkMain := mainAllowed || max(ipCount, accFailures) < pol.FreeFailures
	switch {
	case accountID == nil:
		if checkMain {
			// Spend the time a real check would, so timing does not
			// reveal which users exist.
			s.checkPassword(ctx, dummyHash, c.Password)
		}
		return fail(ReasonUnknownUser, nil)
	case *disabled:
		if checkMain {
			// As for an unknown user: timing must not tell that the
			// account exists, disabled.
			s.checkPassword(ctx, dummyHash, c.Password)
		}
		return fail(ReasonDisabled, nil)
	case appID != nil && *revoked:
		return fail(ReasonRevoked, appID)
	case validApp:
		id, err := s.recordAuth(ctx, accountID, username, c.Protocol, c.RemoteIP, client, appID, true, "")
		if err != nil {
			return nil, fmt.Errorf("authenticate: %w", err)
		}
		return &Login{AccountID: *accountID, Address: *address, AppPasswordID: *appID, EventID: id}, nil
	case !checkMain:
		return fail(ReasonNotAppPassword, nil)
	}
	if !s.checkPassword(ctx, *hash, c.Password) {
		return fail(ReasonWrongPassword, nil)
	}
	if !mainAllowed {
		return fail(ReasonMainRefused, nil)
	}
	id, err := s.recordAuth(ctx, accountID, username, c.Protocol, c.RemoteIP, client, nil, true, "main password")
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return &Login{AccountID: *accountID, Address: *address, EventID: id}, nil
}

// checkPassword verifies a main password, at most GOMAXPROCS at a time:
// argon2id's memory and CPU cost must not multiply with concurrent logins.
func (s *Store) checkPassword(ctx context.Context, hash, password string) bool {
	select {
	case s.argon <- struct{}{}:
		defer func() { <-s.argon }()
	case <-ctx.Done():
		return false
	}
	return checkPassword(hash, password)
}

// dummyHash is a valid argon2id hash of a random password, checked against
// when the user does not exist.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$2w0zsv/Dq2bz1xOdh5Wg5i3ZpKWYqfBG3ujn5+2Kzp0"

// recordAuth writes a login attempt to the activity log and returns the
// id of its entry. For a successful login with an app password the same
// statement records the use on the app password (when, where from, and
// the client if it gave one). An error is logged as well as returned.
func (s *Store) recordAuth(ctx context.Context, accountID *int64, username, protocol, remoteIP, client string, appID *int64, ok bool, reason string) (int64, error) {
	if s.opts.OnLogin != nil {
		s.opts.OnLogin(protocol, ok)
	}
	// Recording must not be skipped because the client went away.
	ctx = context.WithoutCancel(ctx)
	var id int64
	err := s.pool.QueryRow(ctx, `WITH ev AS (
			INSERT INTO auth_events (account_id, username, protocol, remote_ip, app_password_id, success, reason, client)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
		), used AS (
			UPDATE app_passwords SET last_used_at = now(), last_used_ip = $4, last_client = coalesce(nullif($8, ''), last_client)
			WHERE $6 AND id = $5 AND account_id = $1
		)
		SELECT id FROM ev`, accountID, username, protocol, remoteIP, appID, ok, reason, client).Scan(&id)
	if err != nil {
		s.log.Error("record login attempt", "err", err)
		return 0, fmt.Errorf("record login attempt: %w", err)
	}
	return id, nil
}

// SetLoginClient records the client's description of itself (IMAP ID, RFC
// 2971) sent after the login: on the login's activity log entry and, for an
// app password login, as the app password's LastClient. One statement,
// scoped by the login's account. An entry pruned meanwhile is not an
// error; the app password is still updated.
func (s *Store) SetLoginClient(ctx context.Context, l *Login, client string) error {
	_, err := s.pool.Exec(ctx, `WITH ev AS (
			UPDATE auth_events SET client = $3 WHERE id = $1 AND account_id = $2
		)
		UPDATE app_passwords SET last_client = coalesce(nullif($3, ''), last_client) WHERE id = $4 AND account_id = $2`,
		l.EventID, l.AccountID, cleanClient(client), l.AppPasswordID)
	if err != nil {
		return fmt.Errorf("set login client: %w", err)
	}
	return nil
}

// CheckSession reports whether a login is still valid: the account exists
// and is enabled and its app password (if any) is not revoked. Protocol
// servers call it before each command, so revocation takes effect at once.
func (s *Store) CheckSession(ctx context.Context, l *Login) error {
	return checkSession(ctx, s.pool, l)
}

// rowQuerier is what checkSession reads with: the pool or a transaction.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func checkSession(ctx context.Context, q rowQuerier, l *Login) error {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT `+sessionValid("$1", "$2"), l.AccountID, l.AppPasswordID).Scan(&ok); err != nil {
		return fmt.Errorf("check session: %w", err)
	}
	if !ok {
		return ErrAccountGone
	}
	return nil
}

// sessionValid is the SQL of CheckSession's test for the account and app
// password ids in the parameters acc and app.
func sessionValid(acc, app string) string {
	return `EXISTS (SELECT 1 FROM accounts a WHERE a.id = ` + acc + ` AND NOT a.disabled
		AND (` + app + ` = 0 OR EXISTS (SELECT 1 FROM app_passwords p WHERE p.id = ` + app + ` AND p.account_id = a.id AND p.revoked_at IS NULL)))`
}

// sessionGoneCode is the SQLSTATE login_gone raises (migration 6).
const sessionGoneCode = "MS001"

// AuthEvents returns the account's most recent login attempts, newest first.
func (s *Store) AuthEvents(ctx context.Context, accountID int64, limit int) ([]AuthEvent, error) {
	rows, err := s.pool.Query(ctx, `SELECT e.at, e.username, e.protocol, e.remote_ip, coalesce(p.label, ''), e.success, e.reason, e.client
		FROM auth_events e LEFT JOIN app_passwords p ON p.id = e.app_password_id AND p.account_id = e.account_id
		WHERE e.account_id = $1 ORDER BY e.at DESC, e.id DESC LIMIT $2`, accountID, limit)
	if err != nil {
		return nil, fmt.Errorf("list activity: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[AuthEvent])
}

// FailedAuthEventsFrom returns the most recent failed login attempts from
// one remote IP, newest first, on any user name: attempts on addresses
// without an account (guessing) are recorded too, with no account.
func (s *Store) FailedAuthEventsFrom(ctx context.Context, remoteIP string, limit int) ([]AuthEvent, error) {
	rows, err := s.pool.Query(ctx, `SELECT e.at, e.username, e.protocol, e.remote_ip, coalesce(p.label, ''), e.success, e.reason, e.client
		FROM auth_events e LEFT JOIN app_passwords p ON p.id = e.app_password_id AND p.account_id = e.account_id
		WHERE e.remote_ip = $1 AND NOT e.success ORDER BY e.at DESC, e.id DESC LIMIT $2`, remoteIP, limit)
	if err != nil {
		return nil, fmt.Errorf("list failed logins: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[AuthEvent])
}
