package imapd

import (
	"github.com/mailstack/mailstack/store"
)

// QUOTA (RFC 9208). An account has one quota root, named "", holding all
// its mailboxes: the storage quota (accounts.quota_bytes) an administrator
// sets with the CLI. STORAGE is reported in KiB, usage and limit rounded
// up. An account without a quota has the root but no QUOTA response: the
// syntax has no way to give a usage without a limit (Dovecot sends no
// response either). MESSAGE is not offered: there is no message-count
// limit to report, and a resource without a limit never appears.

// quotaRoot is the name of the one quota root of every account.
const quotaRoot = ""

// cmdGetQuotaRoot is GETQUOTAROOT mailbox: the mailbox need not exist
// (RFC 9208 §4.3.2; a client asks before creating one).
func (s *session) cmdGetQuotaRoot(c *cmd) error {
	name, err := s.mailboxCommand(c)
	if err != nil {
		return err
	}
	if n, err := store.NormalizeMailboxName(name); err == nil && n == "INBOX" {
		name = n
	}
	q, err := s.srv.st.Quota(s.ctx, s.accountID())
	if err != nil {
		return storeError(err, "GETQUOTAROOT")
	}
	s.enc.Star().Raw("QUOTAROOT ").Mailbox(name).SP().Quoted(quotaRoot).CRLF()
	s.writeQuota(q)
	return nil
}

// cmdGetQuota is GETQUOTA root.
func (s *session) cmdGetQuota(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	root, err := c.d.AString()
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	if root != quotaRoot {
		return no("NONEXISTENT", "No such quota root")
	}
	q, err := s.srv.st.Quota(s.ctx, s.accountID())
	if err != nil {
		return storeError(err, "GETQUOTA")
	}
	s.writeQuota(q)
	return nil
}

// writeQuota writes the QUOTA response of the root, if it has a limit.
func (s *session) writeQuota(q store.QuotaUsage) {
	if q.LimitBytes <= 0 {
		return
	}
	s.enc.Star().Raw("QUOTA ").Quoted(quotaRoot).Raw(" (STORAGE ").
		Num64(uint64(kib(q.UsedBytes))).SP().Num64(uint64(kib(q.LimitBytes))).Byte(')').CRLF()
}

// quotaPrecheck is the size of a synchronising APPEND literal from which
// the quota is checked before the client is told to send it: one more
// round trip, worth it only to spare the upload of a large message.
const quotaPrecheck = 256 << 10

// kib is n octets in KiB, rounded up.
func kib(n int64) int64 { return (n + 1023) / 1024 }

// cmdSetQuota is SETQUOTA root (resource limit ...): refused, as QUOTASET
// is not offered; quotas are set with "mailstack user" by an
// administrator (Dovecot likewise refuses users).
func (s *session) cmdSetQuota(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	if _, err := c.d.AString(); err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	err := c.d.List(func() error {
		if _, err := c.d.Atom(); err != nil {
			return err
		}
		if err := c.d.SP(); err != nil {
			return err
		}
		_, err := c.d.Number64()
		return err
	})
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	return no("NOPERM", "Quotas are set by the administrator")
}

// statusDeletedStorage is STATUS DELETED-STORAGE (RFC 9208 §4.2): the KiB
// an EXPUNGE of the mailbox would free.
func (s *session) statusDeletedStorage(mb *store.Mailbox) (int64, error) {
	if mb.Deleted == 0 {
		return 0, nil
	}
	n, err := s.srv.st.DeletedSize(s.ctx, s.accountID(), mb.ID)
	return kib(n), err
}
