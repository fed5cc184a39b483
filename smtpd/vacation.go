package smtpd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/mailstack/mailstack/internal/mailaddr"
	"github.com/mailstack/mailstack/store"
)

// Vacation replies (RFC 3834, with Sieve vacation's rules, RFC 5230 §4.5
// and §4.6): after a delivery, each recipient account whose vacation
// reply is on answers the envelope sender, at most once per sender per
// the account's interval, never to mail from lists, bulk or automatic
// senders, never to itself, and only when the account's address is in To
// or Cc. The reply has a null return path (nothing bounces back to it),
// is DKIM-signed with the account's domain and leaves through the
// outbound queue (or straight into the INBOX of a local sender).

// maxReplyCandidates bounds the To and Cc addresses checked against the
// recipients' addresses.
const maxReplyCandidates = 50

// autoReplyAllowed applies the checks that need no database: a sender to
// answer, and no sign of a list, bulk or automatic message (RFC 3834
// §2, RFC 5230 §4.5).
func autoReplyAllowed(sender string, h textproto.Header) bool {
	a, err := mailaddr.Parse(sender)
	if err != nil {
		return false
	}
	local := strings.ToLower(a.Local)
	if local == "mailer-daemon" || strings.HasPrefix(local, "owner-") ||
		strings.HasSuffix(local, "-request") || strings.HasPrefix(local, "bounce") || local == "noreply" || local == "no-reply" {
		return false
	}
	if as := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted"))); as != "" && as != "no" {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(h.Get("Precedence"))) {
	case "bulk", "list", "junk":
		return false
	}
	for _, f := range []string{"List-Id", "List-Unsubscribe", "List-Post", "List-Help", "X-Auto-Response-Suppress", "X-Loop"} {
		if h.Has(f) {
			return false
		}
	}
	return true
}

// replyCandidates returns the addresses in To and Cc (also without a
// +tag), which a recipient's address must be among.
func replyCandidates(in *incoming) []string {
	var out []string
	for _, key := range []string{"To", "Cc"} {
		addrs, _ := in.addresses(key)
		for _, a := range addrs {
			addr, err := mailaddr.Parse(a.Address)
			if err != nil {
				continue // no account's address
			}
			out = append(out, addr.Key())
			if addr.Tagged() {
				out = append(out, addr.Base().Key())
			}
			if len(out) >= maxReplyCandidates {
				return out
			}
		}
	}
	return out
}

// vacation sends the replies due for a delivered message. Failures are
// logged: the message itself is delivered whatever happens here.
func (s *mxSession) vacation(ctx context.Context, log *slog.Logger, in *incoming) {
	if !autoReplyAllowed(s.from, in.header) {
		return
	}
	candidates := replyCandidates(in)
	if len(candidates) == 0 {
		return
	}
	replies, err := s.m.cfg.Store.ClaimVacationReplies(ctx, s.accounts, s.from, candidates)
	if err != nil {
		log.Error("vacation", "err", err)
		return
	}
	for _, r := range replies {
		if err := s.sendVacation(ctx, in, r); err != nil {
			log.Error("vacation reply", "err", err, "rcpt_account", r.AccountID)
			continue
		}
		log.Info("vacation reply queued", "rcpt_account", r.AccountID, "to", s.from)
	}
}

// sendVacation composes, signs and sends one reply.
func (s *mxSession) sendVacation(ctx context.Context, in *incoming, r store.VacationReply) error {
	d, err := s.m.cfg.Store.DomainByName(ctx, mailaddr.DomainOf(r.Address))
	if err != nil {
		return err
	}
	msg, h, err := vacationMessage(s.m.cfg.Hostname, r, s.from, in.header, time.Now())
	if err != nil {
		return err
	}
	sig, err := dkimSign(d, h, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	spooled, err := store.Spool(bytes.NewReader(append([]byte(sig), msg...)), 0)
	if err != nil {
		return err
	}
	defer spooled.Close()
	var targets []store.Target
	var remote []store.Outbound
	if acc, err := s.m.cfg.Store.ResolveRecipient(ctx, s.from); err == nil {
		mb, err := s.mailboxFor(ctx, acc.ID, false)
		if err != nil {
			return err
		}
		targets = append(targets, store.Target{AccountID: acc.ID, MailboxID: mb})
	} else {
		remote = append(remote, store.Outbound{AccountID: r.AccountID, MailFrom: "", RcptTo: s.from})
	}
	_, err = s.m.cfg.Store.Submit(ctx, nil, spooled, targets, remote)
	return err
}

// oneLine removes line breaks from a header value taken from a message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// vacationMessage writes the reply to a message with header orig from
// sender: Auto-Submitted: auto-replied (RFC 3834 §5), In-Reply-To and
// References for threading, the text as quoted-printable UTF-8.
func vacationMessage(hostname string, r store.VacationReply, sender string, orig textproto.Header, now time.Time) ([]byte, textproto.Header, error) {
	subject := r.Subject
	if subject == "" {
		subject = "Auto: " + oneLine(orig.Get("Subject"))
		if strings.TrimSpace(subject) == "Auto:" {
			subject = "Automatic reply"
		}
	}
	var h textproto.Header
	h.Add("MIME-Version", "1.0")
	h.Add("Content-Transfer-Encoding", "quoted-printable")
	h.Add("Content-Type", "text/plain; charset=utf-8")
	h.Add("Auto-Submitted", "auto-replied")
	if mid := oneLine(orig.Get("Message-Id")); mid != "" {
		refs := oneLine(orig.Get("References"))
		if refs == "" {
			refs = oneLine(orig.Get("In-Reply-To"))
		}
		h.Add("References", strings.TrimSpace(refs+" "+mid))
		h.Add("In-Reply-To", mid)
	}
	h.Add("Message-Id", "<"+newID()+".vacation@"+hostname+">")
	h.Add("Date", now.Format(time.RFC1123Z))
	h.Add("Subject", mime.QEncoding.Encode("utf-8", subject))
	h.Add("To", (&mail.Address{Address: sender}).String())
	h.Add("From", (&mail.Address{Address: r.Address}).String())
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, h); err != nil {
		return nil, textproto.Header{}, fmt.Errorf("vacation: %w", err)
	}
	qp := quotedprintable.NewWriter(&b)
	body := strings.ReplaceAll(strings.ReplaceAll(r.Body, "\r\n", "\n"), "\n", "\r\n")
	if _, err := qp.Write([]byte(body + "\r\n")); err != nil {
		return nil, textproto.Header{}, fmt.Errorf("vacation: %w", err)
	}
	if err := qp.Close(); err != nil {
		return nil, textproto.Header{}, fmt.Errorf("vacation: %w", err)
	}
	return b.Bytes(), h, nil
}
