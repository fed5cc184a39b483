package smtpd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/store"
)

// spamFields are the header fields the MX writes about rspamd's verdict.
// The same fields arriving with a message are forgeries (a filter trusting
// X-Spam-Flag: NO would be fooled), so they are removed when rspamd is on,
// as rspamd's own milter does with X-Spam.
var spamFields = []string{"X-Spam", "X-Spam-Flag", "X-Spam-Score", "X-Spam-Action", "X-Spam-Symbols", "X-Spam-Status"}

// maxSymbolsField bounds the X-Spam-Symbols field: rules that matched,
// highest scores first, as many as fit.
const maxSymbolsField = 900

// scan asks rspamd for a verdict on the message that will be stored (pre,
// our trace fields, then msg). It returns the fields to write on top and
// whether the message goes to Junk, or the refusal to answer: rspamd's
// reject is 550, its soft reject or greylisting 451. When rspamd gives no
// verdict (down, slow, unreadable), the message is delivered with a field
// saying it was not scanned, or deferred with 451 if so configured.
func (s *mxSession) scan(ctx context.Context, log *slog.Logger, id, pre string, msg *store.Spooled) (fields string, junk bool, err error) {
	env := rspamd.Envelope{IP: s.ip, Helo: s.conn.Hostname(), MailFrom: s.from, Rcpts: s.rcptAddr, QueueID: id}
	if len(s.accountAddr) > 0 {
		// Per-user Bayes: the statistics the learner feeds, keyed by the
		// account's own address (a recipient may be an alias). With
		// several accounts, the first one's, as rspamd would pick the
		// first recipient.
		env.User = s.accountAddr[0]
	}
	res, err := s.m.opts.Rspamd.Check(ctx, env, io.MultiReader(strings.NewReader(pre), msg.Reader()), int64(len(pre))+msg.Size)
	if err != nil {
		s.m.cfg.Metrics.RspamdScan("error")
		if s.m.opts.RspamdTempFail {
			log.Warn("mx: rspamd gave no verdict; deferring", "err", err)
			return "", false, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Content scan unavailable; try again later"}
		}
		log.Warn("mx: rspamd gave no verdict; delivering unscanned", "err", err)
		return "X-Spam-Status: not scanned (rspamd unavailable)\r\n", false, nil
	}
	s.m.cfg.Metrics.RspamdScan(res.Action)
	level := slog.LevelInfo
	if res.Action == rspamd.ActionNoAction {
		level = slog.LevelDebug // the delivery's own line follows
	}
	log.Log(ctx, level, "mx rspamd", "spam_action", res.Action, "spam_score", res.Score, "symbols", strings.Join(res.SymbolNames(), " "))
	switch res.Action {
	case rspamd.ActionReject:
		return "", false, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Message refused as spam: " + replyText(res.SMTPMessage(), "Spam message rejected")}
	case rspamd.ActionSoftReject, rspamd.ActionGreylist:
		return "", false, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1},
			Message: replyText(res.SMTPMessage(), "Try again later")}
	}
	flag := "NO"
	if res.Spam() {
		flag = "YES"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "X-Spam-Flag: %s\r\nX-Spam-Score: %.2f / %.2f\r\nX-Spam-Action: %s\r\n", flag, res.Score, res.RequiredScore, replyText(res.Action, "unknown"))
	if syms := res.SymbolNames(); len(syms) > 0 {
		b.WriteString("X-Spam-Symbols: ")
		n := 0
		for i, sym := range syms {
			if n += len(sym) + 4; n > maxSymbolsField {
				break
			}
			if i > 0 {
				b.WriteString(",\r\n\t")
			}
			b.WriteString(sym)
		}
		b.WriteString("\r\n")
	}
	return b.String(), res.Spam(), nil
}

// replyText is rspamd's suggested reply text made safe for an SMTP reply
// line, or def when it has none.
func replyText(s, def string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return ' '
		}
		return r
	}, s)
	if s = strings.TrimSpace(s); s == "" {
		return def
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// isSpamField reports whether a header field name is one of spamFields.
func isSpamField(name string) bool {
	for _, f := range spamFields {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}
