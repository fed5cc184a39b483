package outbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/store"
)

// buildDSN writes the RFC 3464 delivery status notification for fs, the
// failed rows of one message and sender: a human-readable part, the
// message/delivery-status part with one block per recipient, and the
// original header (not the body, so bounces stay small).
func (w *Worker) buildDSN(ctx context.Context, fs []store.QueuedMessage) (*store.Spooled, error) {
	_, origHeader, err := w.cfg.Store.OpenQueued(ctx, fs[0].ID)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var h message.Header
	h.Set("From", fmt.Sprintf("Mail Delivery System <MAILER-DAEMON@%s>", w.cfg.Hostname))
	h.Set("To", "<"+fs[0].MailFrom+">")
	h.Set("Subject", "Undelivered Mail Returned to Sender")
	h.Set("Date", now.Format(time.RFC1123Z))
	h.Set("Message-ID", fmt.Sprintf("<dsn.%d.%d@%s>", fs[0].ID, now.UnixNano(), w.cfg.Hostname))
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("MIME-Version", "1.0")
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	var buf bytes.Buffer
	mw, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}

	var human strings.Builder
	fmt.Fprintf(&human, "This is the mail system at %s.\r\n\r\nYour message could not be delivered to the following recipients:\r\n\r\n", w.cfg.Hostname)
	var status strings.Builder
	fmt.Fprintf(&status, "Reporting-MTA: dns; %s\r\nArrival-Date: %s\r\n", w.cfg.Hostname, fs[0].CreatedAt.Format(time.RFC1123Z))
	for _, f := range fs {
		fmt.Fprintf(&human, "<%s>: %s\r\n", f.RcptTo, oneLine(f.LastError))
		fmt.Fprintf(&status, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n", f.RcptTo, f.DSNStatus)
		if f.RemoteMTA != "" {
			fmt.Fprintf(&status, "Remote-MTA: dns; %s\r\n", f.RemoteMTA)
		}
		if f.DSNDiagnostic != "" {
			fmt.Fprintf(&status, "Diagnostic-Code: smtp; %s\r\n", f.DSNDiagnostic)
		}
		if f.LastAttemptAt != nil {
			fmt.Fprintf(&status, "Last-Attempt-Date: %s\r\n", f.LastAttemptAt.Format(time.RFC1123Z))
		}
	}
	parts := []struct {
		typ  string
		body string
	}{
		{"text/plain", human.String()},
		{"message/delivery-status", status.String()},
		{"text/rfc822-headers", string(origHeader)},
	}
	for _, p := range parts {
		var ph message.Header
		params := map[string]string{}
		if p.typ == "text/plain" {
			params["charset"] = "utf-8"
		}
		ph.SetContentType(p.typ, params)
		pw, err := mw.CreatePart(ph)
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		if _, err := pw.Write([]byte(p.body)); err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		if err := pw.Close(); err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	return store.Spool(&buf, 0)
}

// dsnStatus returns the DSN Status and Diagnostic-Code values for a
// recipient given up on with err; expired says retries ran out.
func dsnStatus(err error, expired bool) (status, diag string) {
	var se *smtp.SMTPError
	var pe *permError
	switch {
	case expired:
		status = "4.4.7" // delivery time expired
	case errors.As(err, &pe):
		status = pe.status
	default:
		status = "5.0.0"
	}
	if errors.As(err, &se) {
		ec := se.EnhancedCode
		if !expired && ec[0] >= 2 {
			status = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
		}
		diag = fmt.Sprintf("%d %s", se.Code, oneLine(se.Message))
		if ec[0] >= 2 {
			diag = fmt.Sprintf("%d %d.%d.%d %s", se.Code, ec[0], ec[1], ec[2], oneLine(se.Message))
		}
	}
	return status, diag
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
