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

// failure is one recipient given up on.
type failure struct {
	row     store.QueuedMessage
	err     error
	remote  string
	expired bool
}

// buildDSN writes the RFC 3464 delivery status notification for failures
// (all of one message and sender): a human-readable part, the
// message/delivery-status part, and the original header (not the body, so
// bounces stay small).
func (w *Worker) buildDSN(ctx context.Context, fs []failure) (*store.Spooled, error) {
	_, origHeader, err := w.cfg.Store.OpenQueued(ctx, fs[0].row.ID)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var h message.Header
	h.Set("From", fmt.Sprintf("Mail Delivery System <MAILER-DAEMON@%s>", w.cfg.Hostname))
	h.Set("To", "<"+fs[0].row.MailFrom+">")
	h.Set("Subject", "Undelivered Mail Returned to Sender")
	h.Set("Date", now.Format(time.RFC1123Z))
	h.Set("Message-ID", fmt.Sprintf("<dsn.%d.%d@%s>", fs[0].row.ID, now.UnixNano(), w.cfg.Hostname))
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
	fmt.Fprintf(&status, "Reporting-MTA: dns; %s\r\nArrival-Date: %s\r\n", w.cfg.Hostname, fs[0].row.CreatedAt.Format(time.RFC1123Z))
	for _, f := range fs {
		code, diag := dsnStatus(f)
		reason := f.err.Error()
		if f.expired {
			reason = "gave up after retrying for too long; last error: " + reason
		}
		fmt.Fprintf(&human, "<%s>: %s\r\n", f.row.RcptTo, oneLine(reason))
		fmt.Fprintf(&status, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n", f.row.RcptTo, code)
		if f.remote != "" {
			fmt.Fprintf(&status, "Remote-MTA: dns; %s\r\n", f.remote)
		}
		if diag != "" {
			fmt.Fprintf(&status, "Diagnostic-Code: smtp; %s\r\n", diag)
		}
		if f.row.LastAttemptAt != nil {
			fmt.Fprintf(&status, "Last-Attempt-Date: %s\r\n", f.row.LastAttemptAt.Format(time.RFC1123Z))
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

// dsnStatus returns the Status and Diagnostic-Code values for a failure.
func dsnStatus(f failure) (status, diag string) {
	var se *smtp.SMTPError
	var pe *permError
	switch {
	case f.expired:
		status = "4.4.7" // delivery time expired
	case errors.As(f.err, &pe):
		status = pe.status
	default:
		status = "5.0.0"
	}
	if errors.As(f.err, &se) {
		ec := se.EnhancedCode
		if !f.expired && ec[0] >= 2 {
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
