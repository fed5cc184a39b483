package webui

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailstack/mailstack/store"
)

// text returns the English text of a message key: every sentence the
// handlers show lives here (page text is in the templates). Unknown keys
// give "", so a key from a URL shows nothing it was not meant to.
func text(key string) string {
	switch key {
	case "err.https":
		return "The account pages are served over HTTPS only."
	case "err.csrf":
		return "This form has expired or did not come from this site. Go back, reload the page and try again."
	case "err.form":
		return "The form could not be read."
	case "err.internal":
		return "Something went wrong on the server. Try again later."
	case "err.signin":
		return "Wrong address or password."
	case "err.throttled":
		return "Too many failed sign-in attempts. Wait a few minutes and try again."
	case "err.code":
		return "That code is not right. Enter the current code from your authenticator app, or a recovery code."
	case "err.code-setup":
		return "That code is not right. Check the time on your phone and enter the current code."
	case "err.label":
		return "Give the app password a name of up to 100 characters, e.g. \"Alice's iPhone\"."
	case "err.password":
		return "Your current password is not right."
	case "err.new-password":
		return "The new password must have at least 8 characters and both entries must match."
	case "err.not-found":
		return "Not found."
	case "err.secret":
		return "That app password is not one of yours."
	case "msg.signed-out":
		return "You have signed out."
	case "msg.session-ended":
		return "Too many wrong codes: sign in again."
	case "msg.revoked":
		return "The app password is revoked. Devices using it are signed out now."
	case "msg.session-revoked":
		return "That browser is signed out."
	case "msg.sessions-revoked":
		return "Every other browser is signed out."
	case "msg.password-changed":
		return "Your password is changed. Every other browser is signed out."
	case "msg.2fa-off":
		return "Two-factor authentication is off."
	case "err.quota":
		return "Give the quota in MiB as a whole number; 0 means unlimited."
	case "err.self":
		return "You cannot disable or delete your own account here."
	case "err.confirm-delete":
		return "To delete an account, type its address in the confirmation field."
	case "msg.user-created":
		return "The account is created, with INBOX, Drafts, Sent, Archive, Junk and Trash."
	case "msg.user-disabled":
		return "The account is disabled: its sessions end now and it cannot sign in."
	case "msg.user-enabled":
		return "The account is enabled again."
	case "msg.quota-set":
		return "The quota is changed."
	case "msg.password-reset":
		return "The main password is reset and the account's browsers are signed out."
	case "msg.user-deleted":
		return "The account and all its mail are deleted."
	case "msg.alias-added":
		return "The alias is added."
	case "msg.alias-deleted":
		return "The alias is deleted."
	case "msg.domain-added":
		return "The domain is added. Publish these records at your DNS provider."
	case "msg.queue-retry":
		return "The message will be tried again now."
	case "msg.queue-delete":
		return "The message is deleted from the queue: it will not be delivered."
	case "err.vacation-form":
		return "Give the days as dates and the interval as a number of days."
	case "msg.vacation-saved":
		return "Your vacation reply is saved."
	case "msg.2fa-required":
		return "This server requires two-factor authentication: set it up to use your account."
	}
	return ""
}

// formatBytes shows a size in the largest binary unit under it.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// formatTime shows a time in UTC to the second; nil or zero is "never".
func formatTime(t any) string {
	var v time.Time
	switch x := t.(type) {
	case time.Time:
		v = x
	case *time.Time:
		if x != nil {
			v = *x
		}
	}
	if v.IsZero() {
		return "never"
	}
	return v.UTC().Format("2006-01-02 15:04:05 UTC")
}

// percent is used of total in whole percent, at most 100.
func percent(used, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return min(used*100/total, 100)
}

// objectText says what went wrong with a named object.
func objectText(e *store.ObjectError) string {
	switch {
	case errors.Is(e, store.ErrExists):
		return fmt.Sprintf("The %s %s already exists.", e.Kind, e.Name)
	case errors.Is(e, store.ErrNotFound):
		return fmt.Sprintf("There is no %s %s.", e.Kind, e.Name)
	case errors.Is(e, store.ErrHasChildren):
		return fmt.Sprintf("The %s %s still has accounts: delete them first.", e.Kind, e.Name)
	}
	return e.Error()
}

// invalidText shows the reason of a store.ErrInvalid as a sentence.
func invalidText(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, store.ErrInvalid.Error()+": "); ok {
		msg = after
	}
	if msg == "" {
		return msg
	}
	return strings.ToUpper(msg[:1]) + msg[1:] + "."
}
