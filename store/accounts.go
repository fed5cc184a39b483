package store

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/argon2"

	"github.com/mailstack/mailstack/internal/mailaddr"
)

// Domain is a mail domain served by mailstack.
type Domain struct {
	ID           int64
	Name         string
	DKIMSelector string
	DKIMKey      []byte // PKCS#8 DER private key
	CreatedAt    time.Time
}

// Account is a mailbox owner who can log in.
type Account struct {
	ID                  int64
	DomainID            int64
	Address             string
	QuotaBytes          int64
	RequireAppPasswords bool
	Disabled            bool
	CreatedAt           time.Time
}

// Alias maps an address (or "@domain", a catch-all) to an account.
type Alias struct {
	Address string
	Target  string // the account's address
}

// DefaultMailbox is a mailbox every new account starts with.
type DefaultMailbox struct{ Name, SpecialUse string }

// defaultMailboxes is an array, not a slice, so DefaultMailboxes hands out
// copies and no caller can change what new accounts get.
var defaultMailboxes = [...]DefaultMailbox{
	{"INBOX", ""},
	{"Drafts", `\Drafts`},
	{"Sent", `\Sent`},
	{"Archive", `\Archive`},
	{"Junk", `\Junk`},
	{"Trash", `\Trash`},
}

// DefaultMailboxes returns the mailboxes created for every new account,
// with their SPECIAL-USE attributes (RFC 6154).
func DefaultMailboxes() []DefaultMailbox {
	mbs := defaultMailboxes
	return mbs[:]
}

// NormalizeAddress reads an address an account or alias can have
// (mailaddr.Parse, and Plain) and returns it lower-cased.
func NormalizeAddress(addr string) (string, error) {
	a, err := parseOwnAddress(addr)
	if err != nil {
		return "", err
	}
	return a.Key(), nil
}

// parseOwnAddress parses an address an account or alias can have.
func parseOwnAddress(addr string) (mailaddr.Addr, error) {
	a, err := mailaddr.Parse(addr)
	if err != nil || !a.Plain() {
		return mailaddr.Addr{}, fmt.Errorf("%w: %q is not an address of the form user@domain", ErrInvalid, addr)
	}
	a.Local = strings.ToLower(a.Local)
	return a, nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// CreateDomain adds a served domain with its DKIM signing key.
func (s *Store) CreateDomain(ctx context.Context, name, selector string, dkimKey []byte) (*Domain, error) {
	name = mailaddr.Domain(name)
	if name == "" || strings.ContainsAny(name, "@ /") || !strings.Contains(name, ".") && name != "localhost" {
		return nil, fmt.Errorf("%w: %q is not a domain name", ErrInvalid, name)
	}
	d := &Domain{Name: name, DKIMSelector: selector, DKIMKey: dkimKey}
	err := s.pool.QueryRow(ctx, `INSERT INTO domains (name, dkim_selector, dkim_key) VALUES ($1, $2, $3)
		RETURNING id, created_at`, name, selector, dkimKey).Scan(&d.ID, &d.CreatedAt)
	if isUniqueViolation(err) {
		return nil, objectErr("domain", name, ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("create domain: %w", err)
	}
	return d, nil
}

// Domains lists the served domains by name.
func (s *Store) Domains(ctx context.Context) ([]Domain, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, dkim_selector, dkim_key, created_at FROM domains ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Domain, error) {
		var d Domain
		err := r.Scan(&d.ID, &d.Name, &d.DKIMSelector, &d.DKIMKey, &d.CreatedAt)
		return d, err
	})
}

// DomainByName returns one served domain.
func (s *Store) DomainByName(ctx context.Context, name string) (*Domain, error) {
	var d Domain
	err := s.pool.QueryRow(ctx, `SELECT id, name, dkim_selector, dkim_key, created_at FROM domains WHERE name = $1`,
		strings.ToLower(name)).Scan(&d.ID, &d.Name, &d.DKIMSelector, &d.DKIMKey, &d.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, objectErr("domain", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get domain: %w", err)
	}
	return &d, nil
}

// DeleteDomain removes a domain and its aliases. It refuses while accounts
// still exist in it.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM domains d WHERE name = $1`, strings.ToLower(name))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		// Accounts reference the domain: it still has children.
		return objectErr("domain", name, ErrHasChildren)
	}
	if err != nil {
		return fmt.Errorf("delete domain: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return objectErr("domain", name, ErrNotFound)
	}
	return nil
}

// AccountOptions are the settings of a new account.
type AccountOptions struct {
	QuotaBytes int64
	// AllowMainPassword lets this account log in to IMAP/SMTP with its
	// main password when the server permits it (Options.AllowMainPassword).
	AllowMainPassword bool
}

// CreateAccount adds an account in an existing domain, with the default
// mailboxes.
func (s *Store) CreateAccount(ctx context.Context, address, password string, opts AccountOptions) (*Account, error) {
	parsed, err := parseOwnAddress(address)
	if err != nil {
		return nil, err
	}
	addr, domain := parsed.Key(), parsed.Domain
	if password == "" {
		return nil, fmt.Errorf("%w: empty password", ErrInvalid)
	}
	hash, err := hashPassword(password)
	if err != nil {
		return nil, err
	}
	a := &Account{Address: addr, QuotaBytes: opts.QuotaBytes, RequireAppPasswords: !opts.AllowMainPassword}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO accounts (domain_id, address, password_hash, quota_bytes, require_app_passwords)
			SELECT id, $2, $3, $4, $5 FROM domains WHERE name = $1
			RETURNING id, domain_id, created_at`, domain, addr, hash, opts.QuotaBytes, a.RequireAppPasswords).
			Scan(&a.ID, &a.DomainID, &a.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return objectErr("domain", domain, ErrNotFound)
		}
		if isUniqueViolation(err) {
			return objectErr("account", addr, ErrExists)
		}
		if err != nil {
			return err
		}
		var taken bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM aliases WHERE address = $1)`, addr).Scan(&taken); err != nil {
			return err
		}
		if taken {
			return objectErr("alias", addr, ErrExists)
		}
		for _, mb := range defaultMailboxes {
			if _, err := createMailboxTx(ctx, tx, a.ID, mb.Name, mb.SpecialUse, true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create account: %w", err)
	}
	return a, nil
}

const accountColumns = `id, domain_id, address, quota_bytes, require_app_passwords, disabled, created_at`

func scanAccount(r pgx.Row) (*Account, error) {
	var a Account
	err := r.Scan(&a.ID, &a.DomainID, &a.Address, &a.QuotaBytes, &a.RequireAppPasswords, &a.Disabled, &a.CreatedAt)
	return &a, err
}

// AccountByAddress returns the account with exactly this address.
func (s *Store) AccountByAddress(ctx context.Context, address string) (*Account, error) {
	a, err := scanAccount(s.pool.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE address = $1`,
		mailaddr.Key(address)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, objectErr("account", address, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get account: %w", err)
	}
	return a, nil
}

// Accounts lists accounts, of one domain or (domain == "") all.
func (s *Store) Accounts(ctx context.Context, domain string) ([]Account, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+accountColumns+` FROM accounts
		WHERE $1 = '' OR domain_id = (SELECT id FROM domains WHERE name = $1) ORDER BY address`, strings.ToLower(domain))
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) {
		a, err := scanAccount(r)
		return *a, err
	})
}

func (s *Store) execOne(ctx context.Context, what, address, sql string, args ...any) error {
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, objectErr("account", address, ErrNotFound))
	}
	return nil
}

// SetPassword changes an account's main password and, in the same
// statement, signs out every browser of the account (web_sessions): a
// new password is how an account is taken back, and a session opened
// with the old one must not outlive it.
func (s *Store) SetPassword(ctx context.Context, address, password string) error {
	if password == "" {
		return fmt.Errorf("%w: empty password", ErrInvalid)
	}
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	return s.execOne(ctx, "set password", address, `WITH u AS (UPDATE accounts SET password_hash = $2 WHERE address = $1 RETURNING id),
		w AS (DELETE FROM web_sessions WHERE account_id IN (SELECT id FROM u))
		SELECT id FROM u`, mailaddr.Key(address), hash)
}

// SetDisabled disables or re-enables an account. A disabled account cannot
// log in; disabling is announced on LoginChannel in the same statement, so
// its open sessions end as soon as their servers hear of it, and deletes
// its browser sessions, so enabling it again does not revive them.
func (s *Store) SetDisabled(ctx context.Context, address string, disabled bool) error {
	return s.execOne(ctx, "disable account", address, `WITH u AS (UPDATE accounts SET disabled = $2 WHERE address = $1 RETURNING id),
		n AS (SELECT `+loginNotifySQL("$3", "id", "0")+` FROM u WHERE $2),
		w AS (DELETE FROM web_sessions WHERE $2 AND account_id IN (SELECT id FROM u))
		SELECT id FROM u WHERE (SELECT count(*) FROM n) >= 0`, mailaddr.Key(address), disabled, LoginChannel)
}

// DeleteAccount removes an account with all its mailboxes, messages and
// credentials. Every mailbox is announced on MailboxChannel in the same
// statement, so sessions that have one selected end at once, not at their
// next command.
func (s *Store) DeleteAccount(ctx context.Context, address string) error {
	return s.execOne(ctx, "delete account", address, `WITH d AS (DELETE FROM accounts WHERE address = $1 RETURNING id),
		n AS (SELECT `+mailboxNotifySQL("$2", "m.id", "0", "")+` FROM mailboxes m JOIN d ON m.account_id = d.id),
		l AS (SELECT `+loginNotifySQL("$3", "id", "0")+` FROM d)
		SELECT d.id FROM d WHERE (SELECT count(*) FROM n) + (SELECT count(*) FROM l) >= 0`, mailaddr.Key(address), MailboxChannel, LoginChannel)
}

// CreateAlias makes alias (an address, or "@domain" for a catch-all) deliver
// to the account target. The alias's domain must be served.
func (s *Store) CreateAlias(ctx context.Context, alias, target string) error {
	alias, domain, err := aliasKey(alias)
	if err != nil {
		return err
	}
	target = mailaddr.Key(target)
	// One statement inserts the alias and says what was missing if it
	// could not: the domain, the target account, or the address is
	// already an account's.
	var domainOK, targetOK, isAccount, inserted bool
	err = s.pool.QueryRow(ctx, `WITH d AS (SELECT id FROM domains WHERE name = $2),
			t AS (SELECT id FROM accounts WHERE address = $3),
			clash AS (SELECT 1 FROM accounts WHERE address = $1),
			ins AS (INSERT INTO aliases (domain_id, address, account_id)
				SELECT d.id, $1, t.id FROM d, t WHERE NOT EXISTS (SELECT 1 FROM clash) RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM d), EXISTS (SELECT 1 FROM t), EXISTS (SELECT 1 FROM clash), EXISTS (SELECT 1 FROM ins)`,
		alias, domain, target).Scan(&domainOK, &targetOK, &isAccount, &inserted)
	switch {
	case isUniqueViolation(err):
		return objectErr("alias", alias, ErrExists)
	case err != nil:
		return fmt.Errorf("create alias: %w", err)
	case inserted:
		return nil
	case !domainOK:
		return objectErr("domain", domain, ErrNotFound)
	case !targetOK:
		return objectErr("account", target, ErrNotFound)
	case isAccount:
		return objectErr("account", alias, ErrExists)
	}
	return fmt.Errorf("create alias %s: not inserted", alias)
}

// aliasKey returns the stored form of an alias, an address or "@domain"
// (a catch-all), and its domain.
func aliasKey(alias string) (key, domain string, err error) {
	in, catchAll := alias, false
	if rest, ok := strings.CutPrefix(strings.TrimSpace(alias), "@"); ok {
		// A catch-all's local part is empty, which Parse refuses.
		in, catchAll = "catchall@"+rest, true
	}
	a, err := parseOwnAddress(in)
	if err != nil {
		return "", "", fmt.Errorf("%w: alias %q must be user@domain or @domain", ErrInvalid, alias)
	}
	if catchAll {
		a.Local = ""
	}
	return a.Key(), a.Domain, nil
}

// Aliases lists aliases, of one domain or (domain == "") all.
func (s *Store) Aliases(ctx context.Context, domain string) ([]Alias, error) {
	rows, err := s.pool.Query(ctx, `SELECT al.address, a.address FROM aliases al JOIN accounts a ON a.id = al.account_id
		WHERE $1 = '' OR al.domain_id = (SELECT id FROM domains WHERE name = $1) ORDER BY al.address`, strings.ToLower(domain))
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Alias])
}

// DeleteAlias removes an alias.
func (s *Store) DeleteAlias(ctx context.Context, alias string) error {
	key, _, err := aliasKey(alias)
	if err != nil {
		return objectErr("alias", alias, ErrNotFound) // no alias has that form
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM aliases WHERE address = $1`, key)
	if err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return objectErr("alias", alias, ErrNotFound)
	}
	return nil
}

// ResolveRecipient finds the account that receives mail for addr: the
// account itself, then an alias, each with any "+tag" removed from the local
// part, then the domain's catch-all. postmaster@ any served domain always
// resolves (RFC 5321 §4.5.1; DMARC and TLS-RPT reports go there): without
// an account or alias of that name, to the domain's first enabled account,
// else the server's first. It returns ErrNotFound for unknown addresses
// and for domains not served here.
func (s *Store) ResolveRecipient(ctx context.Context, addr string) (*Account, error) {
	return s.resolveRecipient(ctx, nil, addr)
}

// ResolveRecipientFor is ResolveRecipient for an authenticated session: in
// the same round trip it checks the session's login as CheckSession does,
// and returns ErrAccountGone rather than the recipient if it is no longer
// valid (a submission session revoked since AUTH).
func (s *Store) ResolveRecipientFor(ctx context.Context, l *Login, addr string) (*Account, error) {
	acc, err := s.resolveRecipient(ctx, l, addr)
	if errors.Is(err, ErrNotFound) {
		// No row says nothing of the login: the rare case pays a check.
		if cerr := s.CheckSession(ctx, l); cerr != nil {
			return nil, cerr
		}
	}
	return acc, err
}

func (s *Store) resolveRecipient(ctx context.Context, l *Login, addr string) (*Account, error) {
	parsed, err := mailaddr.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("recipient %s: %w", addr, ErrNotFound)
	}
	a, domain := parsed.Key(), parsed.Domain
	base := parsed.Base()
	plain := base.Key()
	// The statement is as small as the address allows (its plan is set up
	// afresh for every execution): the postmaster fallback only for
	// postmaster, the login check only for a session.
	args := []any{a, plain, "@" + domain}
	postmaster := ""
	if strings.EqualFold(base.Local, "postmaster") {
		args = append(args, domain)
		postmaster = `UNION ALL (SELECT a.id, 4 FROM accounts a
				WHERE EXISTS (SELECT 1 FROM domains WHERE name = $4)
				ORDER BY a.disabled, a.domain_id = (SELECT id FROM domains WHERE name = $4) DESC, a.id LIMIT 1)`
	}
	check := "true"
	if l != nil {
		n := len(args)
		check = sessionValid(fmt.Sprintf("$%d", n+1), fmt.Sprintf("$%d", n+2))
		args = append(args, l.AccountID, l.AppPasswordID)
	}
	var valid bool
	var acc Account
	err = s.pool.QueryRow(ctx, `SELECT `+check+`, `+accountColumns+` FROM accounts WHERE id = (
		SELECT account_id FROM (
			SELECT id AS account_id, 1 AS rank FROM accounts WHERE address IN ($1, $2)
			UNION ALL SELECT account_id, 2 FROM aliases WHERE address IN ($1, $2)
			UNION ALL SELECT account_id, 3 FROM aliases WHERE address = $3
			`+postmaster+`
		) c ORDER BY rank LIMIT 1)`, args...).Scan(
		&valid, &acc.ID, &acc.DomainID, &acc.Address, &acc.QuotaBytes, &acc.RequireAppPasswords, &acc.Disabled, &acc.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("recipient %s: %w", addr, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve recipient: %w", err)
	}
	if !valid {
		return nil, ErrAccountGone
	}
	return &acc, nil
}

// OwnsAddress reports whether the account may send as addr: its own address,
// an alias of it (not a catch-all), either with a "+tag".
func (s *Store) OwnsAddress(ctx context.Context, accountID int64, addr string) (bool, error) {
	a, err := mailaddr.Parse(addr)
	if err != nil {
		return false, nil
	}
	var owns bool
	err = s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1 AND address = $2)
		OR EXISTS (SELECT 1 FROM aliases WHERE account_id = $1 AND address = $2)`, accountID, a.Base().Key()).Scan(&owns)
	if err != nil {
		return false, fmt.Errorf("check sender address: %w", err)
	}
	return owns, nil
}

// IsLocalDomain reports whether domain is served here.
func (s *Store) IsLocalDomain(ctx context.Context, domain string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1)`,
		mailaddr.Domain(domain)).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("check domain: %w", err)
	}
	return ok, nil
}

// argon2id parameters: OWASP's recommended minimum (19 MiB, 2 passes).
// The main password is for account management, so cost is acceptable.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

func hashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// checkPassword verifies password against a PHC-format argon2id hash.
func checkPassword(hash, password string) bool {
	var version int
	var mem, t uint32
	var threads uint8
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &t, &threads); err != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, mem, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}
