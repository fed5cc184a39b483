package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Web session lifetimes (migration 0012). A session unused for
// WebSessionIdle, or older than WebSessionMaxAge, is gone; one still
// waiting for its second factor lasts WebPendingMaxAge.
const (
	WebSessionIdle   = 7 * 24 * time.Hour
	WebSessionMaxAge = 30 * 24 * time.Hour
	WebPendingMaxAge = 10 * time.Minute
	// WebMaxSecondFactorFailures wrong codes end a session waiting for
	// its second factor: the password must be given again (and is
	// throttled), so codes cannot be guessed on one sign-in.
	WebMaxSecondFactorFailures = 5
)

// Reasons recorded in the activity log for the web's second factor.
const (
	// ReasonSecondFactorDue marks a right main password on the web whose
	// sign-in still needs the second factor: the activity log must not
	// show it as a complete sign-in.
	ReasonSecondFactorDue = "main password; two-factor code due"
	ReasonWrong2FA        = "wrong two-factor code"
	ReasonTOTP            = "two-factor code"
	ReasonRecoveryCode    = "recovery code"
)

// WebSession is a browser signed in to the account web.
type WebSession struct {
	ID        int64
	AccountID int64
	Address   string
	// CSRF is the token every form of the session must carry.
	CSRF string
	// Pending2FA: the password was right, the second factor is due.
	Pending2FA bool
	// TOTPEnabled: the account has two-factor authentication on.
	TOTPEnabled bool
	// Admin: the account administers the server.
	Admin bool
	// TOTPSetup is a secret being enrolled on this session, if any.
	TOTPSetup  string
	QuotaBytes int64
	CreatedAt  time.Time
	LastSeenAt time.Time
	RemoteIP   string
	UserAgent  string
}

// newTokens returns a new session token and CSRF token.
func newTokens() (token, csrf string, err error) {
	if token, err = randomToken(); err != nil {
		return "", "", err
	}
	csrf, err = randomToken()
	return token, csrf, err
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// CreateWebSession signs a browser in to the account and returns the
// session's secret token (for its cookie; only a hash is stored). With
// pending2FA the session opens nothing until PromoteWebSession. The
// account's expired sessions are removed in the same statement.
func (s *Store) CreateWebSession(ctx context.Context, accountID int64, pending2FA bool, remoteIP, userAgent string) (string, error) {
	token, csrf, err := newTokens()
	if err != nil {
		return "", err
	}
	_, err = s.pool.Exec(ctx, `WITH gone AS (DELETE FROM web_sessions WHERE account_id = $1 AND `+webExpiredAt(7)+`)
		INSERT INTO web_sessions (account_id, token_hash, csrf, pending_2fa, remote_ip, user_agent)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		accountID, hashToken(token), csrf, pending2FA, remoteIP, cleanClient(userAgent),
		WebSessionIdle, WebSessionMaxAge, WebPendingMaxAge)
	if err != nil {
		return "", fmt.Errorf("create web session: %w", err)
	}
	return token, nil
}

// webExpiredAt is the SQL test for an expired row of web_sessions, with
// the lifetimes (idle, maximum, pending) in the parameters from $n on.
func webExpiredAt(n int) string {
	return fmt.Sprintf(`(last_seen_at < now() - $%d::interval OR created_at < now() - $%d::interval
	OR (pending_2fa AND created_at < now() - $%d::interval))`, n, n+1, n+2)
}

const webSessionColumns = `w.id, w.account_id, a.address, w.csrf, w.pending_2fa, a.totp_secret IS NOT NULL, a.admin,
	coalesce(w.totp_setup, ''), a.quota_bytes, w.created_at, w.last_seen_at, w.remote_ip, w.user_agent`

func scanWebSession(r pgx.Row) (*WebSession, error) {
	var w WebSession
	err := r.Scan(&w.ID, &w.AccountID, &w.Address, &w.CSRF, &w.Pending2FA, &w.TOTPEnabled, &w.Admin, &w.TOTPSetup,
		&w.QuotaBytes, &w.CreatedAt, &w.LastSeenAt, &w.RemoteIP, &w.UserAgent)
	return &w, err
}

// WebSessionByToken returns the live session whose cookie holds token and
// marks it used, in one statement. A session revoked, expired, or of a
// disabled or deleted account is ErrNotFound: every process refuses it at
// its next request, as the row is the only state.
func (s *Store) WebSessionByToken(ctx context.Context, token string) (*WebSession, error) {
	w, err := scanWebSession(s.pool.QueryRow(ctx, `UPDATE web_sessions w SET last_seen_at = now()
		FROM accounts a
		WHERE w.token_hash = $1 AND a.id = w.account_id AND NOT a.disabled
			AND w.last_seen_at >= now() - $2::interval AND w.created_at >= now() - $3::interval
			AND (NOT w.pending_2fa OR w.created_at >= now() - $4::interval)
		RETURNING `+webSessionColumns, hashToken(token), WebSessionIdle, WebSessionMaxAge, WebPendingMaxAge))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, objectErr("web session", "", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("web session: %w", err)
	}
	return w, nil
}

// PromoteWebSession ends the second-factor wait of a session: it gets a
// new token and CSRF token (the old cookie is worthless, so a token seen
// before sign-in completed cannot be used after it) and opens the pages.
func (s *Store) PromoteWebSession(ctx context.Context, accountID, sessionID int64) (string, error) {
	token, csrf, err := newTokens()
	if err != nil {
		return "", err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE web_sessions SET token_hash = $3, csrf = $4, pending_2fa = false, failed_2fa = 0
		WHERE id = $1 AND account_id = $2`, sessionID, accountID, hashToken(token), csrf)
	if err != nil {
		return "", fmt.Errorf("promote web session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return "", objectErr("web session", fmt.Sprint(sessionID), ErrNotFound)
	}
	return token, nil
}

// FailWebSecondFactor counts a wrong second factor on a session waiting
// for it and ends the session at WebMaxSecondFactorFailures. It reports
// whether the session is gone.
func (s *Store) FailWebSecondFactor(ctx context.Context, accountID, sessionID int64) (bool, error) {
	var gone bool
	// The row is either deleted or updated, never both: two changes of
	// one row in one statement would leave only one of them.
	err := s.pool.QueryRow(ctx, `WITH old AS (SELECT id, failed_2fa + 1 >= $3 AS last FROM web_sessions
			WHERE id = $1 AND account_id = $2),
		d AS (DELETE FROM web_sessions WHERE id IN (SELECT id FROM old WHERE last)),
		u AS (UPDATE web_sessions SET failed_2fa = failed_2fa + 1 WHERE id IN (SELECT id FROM old WHERE NOT last) RETURNING id)
		SELECT NOT EXISTS (SELECT 1 FROM u)`,
		sessionID, accountID, WebMaxSecondFactorFailures).Scan(&gone)
	if err != nil {
		return false, fmt.Errorf("count second factor failure: %w", err)
	}
	return gone, nil
}

// WebSessions lists the account's live sessions, most recently used first.
func (s *Store) WebSessions(ctx context.Context, accountID int64) ([]WebSession, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+webSessionColumns+` FROM web_sessions w JOIN accounts a ON a.id = w.account_id
		WHERE w.account_id = $1 AND NOT w.pending_2fa
			AND w.last_seen_at >= now() - $2::interval AND w.created_at >= now() - $3::interval
		ORDER BY w.last_seen_at DESC, w.id DESC`, accountID, WebSessionIdle, WebSessionMaxAge)
	if err != nil {
		return nil, fmt.Errorf("list web sessions: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebSession, error) {
		w, err := scanWebSession(r)
		return *w, err
	})
}

// DeleteWebSession signs one of the account's sessions out.
func (s *Store) DeleteWebSession(ctx context.Context, accountID, sessionID int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM web_sessions WHERE id = $1 AND account_id = $2`, sessionID, accountID)
	if err != nil {
		return fmt.Errorf("delete web session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return objectErr("web session", fmt.Sprint(sessionID), ErrNotFound)
	}
	return nil
}

// DeleteWebSessions signs out every session of the account but keep (0:
// all of them) and returns how many it ended.
func (s *Store) DeleteWebSessions(ctx context.Context, accountID, keep int64) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM web_sessions WHERE account_id = $1 AND id <> $2`, accountID, keep)
	if err != nil {
		return 0, fmt.Errorf("delete web sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// SetTOTPSetup keeps a TOTP secret being enrolled on the session (empty:
// none) until the user confirms a code from it with EnableTOTP.
func (s *Store) SetTOTPSetup(ctx context.Context, accountID, sessionID int64, secret string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE web_sessions SET totp_setup = nullif($3, '') WHERE id = $1 AND account_id = $2`,
		sessionID, accountID, secret)
	if err != nil {
		return fmt.Errorf("set up two-factor authentication: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return objectErr("web session", fmt.Sprint(sessionID), ErrNotFound)
	}
	return nil
}

// TOTPSecret returns the account's TOTP secret ("" when two-factor
// authentication is off).
func (s *Store) TOTPSecret(ctx context.Context, accountID int64) (string, error) {
	var secret *string
	err := s.pool.QueryRow(ctx, `SELECT totp_secret FROM accounts WHERE id = $1`, accountID).Scan(&secret)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", objectErr("account", fmt.Sprint(accountID), ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("two-factor secret: %w", err)
	}
	if secret == nil {
		return "", nil
	}
	return *secret, nil
}

// RecoveryCodeCount is how many recovery codes EnableTOTP hands out.
const RecoveryCodeCount = 10

// newRecoveryCode returns 10 random lowercase letters as abcde-fghij
// (~47 bits: single use, and the second factor's guesses are bounded).
func newRecoveryCode() (string, error) {
	code, err := newAppSecret()
	if err != nil {
		return "", err
	}
	// abcd-efgh-ijkl-mnop → abcde-fghij
	plain := code[0:4] + code[5:9] + code[10:12]
	return plain[:5] + "-" + plain[5:], nil
}

// EnableTOTP turns two-factor authentication on with secret, whose code
// for time step step the user has just confirmed (so it cannot be used
// again), replaces the recovery codes and clears the session's setup. It
// returns the new recovery codes, shown once.
func (s *Store) EnableTOTP(ctx context.Context, accountID, sessionID int64, secret string, step int64) ([]string, error) {
	codes := make([]string, RecoveryCodeCount)
	hashes := make([][]byte, RecoveryCodeCount)
	for i := range codes {
		c, err := newRecoveryCode()
		if err != nil {
			return nil, err
		}
		codes[i], hashes[i] = c, hashAppSecret(c)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE accounts SET totp_secret = $2, totp_last_step = $3 WHERE id = $1`, accountID, secret, step); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE account_id = $1`, accountID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO recovery_codes (account_id, hash) SELECT $1, unnest($2::bytea[])`, accountID, hashes); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE web_sessions SET totp_setup = NULL WHERE id = $1 AND account_id = $2`, sessionID, accountID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("enable two-factor authentication: %w", err)
	}
	return codes, nil
}

// DisableTOTP turns two-factor authentication off and drops the recovery
// codes.
func (s *Store) DisableTOTP(ctx context.Context, accountID int64) error {
	_, err := s.pool.Exec(ctx, `WITH d AS (DELETE FROM recovery_codes WHERE account_id = $1)
		UPDATE accounts SET totp_secret = NULL WHERE id = $1`, accountID)
	if err != nil {
		return fmt.Errorf("disable two-factor authentication: %w", err)
	}
	return nil
}

// UseTOTPStep records that a code of time step step was accepted, and
// reports false if a code of that step or a later one already was: each
// code works once (RFC 6238 §5.2), in any process.
func (s *Store) UseTOTPStep(ctx context.Context, accountID, step int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE accounts SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2
		AND totp_secret IS NOT NULL`, accountID, step)
	if err != nil {
		return false, fmt.Errorf("use two-factor code: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// UseRecoveryCode spends one of the account's unused recovery codes and
// reports whether code was one.
func (s *Store) UseRecoveryCode(ctx context.Context, accountID int64, code string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE recovery_codes SET used_at = now() WHERE id = (
		SELECT id FROM recovery_codes WHERE account_id = $1 AND hash = $2 AND used_at IS NULL LIMIT 1 FOR UPDATE)`,
		accountID, hashAppSecret(code))
	if err != nil {
		return false, fmt.Errorf("use recovery code: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// RecoveryCodesLeft counts the account's unused recovery codes.
func (s *Store) RecoveryCodesLeft(ctx context.Context, accountID int64) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM recovery_codes WHERE account_id = $1 AND used_at IS NULL`, accountID).Scan(&n); err != nil {
		return 0, fmt.Errorf("count recovery codes: %w", err)
	}
	return n, nil
}

// RecordWebAuth records a step of a web sign-in after the password (the
// second factor) in the activity log. A failure counts toward the
// account's throttling like a wrong password (ThrottlePolicy).
func (s *Store) RecordWebAuth(ctx context.Context, accountID int64, username, remoteIP string, ok bool, reason string) error {
	_, err := s.recordAuth(ctx, &accountID, username, ProtocolWeb, remoteIP, "", nil, ok, reason)
	return err
}

// AppPasswordIs reports whether secret is the live app password id of the
// account (the web's profile download carries the secret back, as only
// its hash is stored).
func (s *Store) AppPasswordIs(ctx context.Context, accountID, id int64, secret string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM app_passwords
		WHERE id = $1 AND account_id = $2 AND hash = $3 AND revoked_at IS NULL)`, id, accountID, hashAppSecret(secret)).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("check app password: %w", err)
	}
	return ok, nil
}

// PruneWebSessions deletes expired web sessions (they are refused anyway;
// this keeps the table small) and returns how many.
func (s *Store) PruneWebSessions(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM web_sessions WHERE `+webExpiredAt(1),
		WebSessionIdle, WebSessionMaxAge, WebPendingMaxAge)
	if err != nil {
		return 0, fmt.Errorf("prune web sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// MarkSecondFactorDue notes on a web login's activity log entry that the
// sign-in still waits for its second factor.
func (s *Store) MarkSecondFactorDue(ctx context.Context, l *Login) error {
	_, err := s.pool.Exec(ctx, `UPDATE auth_events SET reason = $3 WHERE id = $1 AND account_id = $2`,
		l.EventID, l.AccountID, ReasonSecondFactorDue)
	if err != nil {
		return fmt.Errorf("mark second factor due: %w", err)
	}
	return nil
}
