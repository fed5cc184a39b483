package webui

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mailstack/mailstack/internal/mobileconfig"
	"github.com/mailstack/mailstack/store"
)

// Limits on what forms may hold.
const (
	maxLabel       = 100
	minPassword    = 8
	maxPassword    = 1024
	activityLength = 200
)

// passwordLengthOK says whether a new main password has minPassword to
// maxPassword characters (characters, as the CLI counts them; not bytes).
func passwordLengthOK(pw string) bool {
	n := utf8.RuneCountInString(pw)
	return n >= minPassword && n <= maxPassword
}

// signinPage shows the sign-in form with a fresh double-submit token.
func (s *Server) signinPage(w http.ResponseWriter, r *http.Request) {
	if ws, ok := s.session(w, r); !ok {
		return
	} else if ws != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.renderSignin(w, r, http.StatusOK, "", "")
}

type signinData struct {
	CSRF, Username string
}

func (s *Server) renderSignin(w http.ResponseWriter, r *http.Request, status int, username, errText string) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		s.fail(w, r, err)
		return
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	setCookie(w, signinCookie, token, store.WebPendingMaxAge)
	s.render(w, r, status, "signin", page{Title: "Sign in", Err: errText, Data: signinData{CSRF: token, Username: username}})
}

// signin checks the main password (throttled and recorded like IMAP
// logins) and starts a session, pending its second factor if the account
// has one.
func (s *Server) signin(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(signinCookie)
	want := ""
	if err == nil {
		want = c.Value
	}
	if !s.checkForm(w, r, want) {
		return
	}
	username := strings.TrimSpace(r.PostForm.Get("username"))
	login, err := s.cfg.Store.Authenticate(r.Context(), store.Credentials{
		Username: username, Password: r.PostForm.Get("password"), Protocol: store.ProtocolWeb,
		RemoteIP: remoteIP(r), Client: r.UserAgent(),
	})
	switch {
	case errors.Is(err, store.ErrThrottled):
		s.renderSignin(w, r, http.StatusTooManyRequests, username, text("err.throttled"))
		return
	case errors.Is(err, store.ErrAuthFailed):
		s.renderSignin(w, r, http.StatusUnauthorized, username, text("err.signin"))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	secret, err := s.cfg.Store.TOTPSecret(r.Context(), login.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	token, err := s.cfg.Store.CreateWebSession(r.Context(), login.AccountID, secret != "", remoteIP(r), r.UserAgent())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	clearCookie(w, signinCookie)
	if secret != "" {
		if err := s.cfg.Store.MarkSecondFactorDue(r.Context(), login); err != nil {
			s.fail(w, r, err)
			return
		}
		setCookie(w, sessionCookie, token, store.WebPendingMaxAge)
		http.Redirect(w, r, "/signin/2fa", http.StatusSeeOther)
		return
	}
	setCookie(w, sessionCookie, token, store.WebSessionMaxAge)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) secondFactorPage(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.render(w, r, http.StatusOK, "twofactor", page{Title: "Two-factor authentication", Session: ws})
}

// secondFactor accepts a TOTP code (each once) or an unused recovery code.
// Wrong codes are recorded and count toward the account's throttling; a
// few of them end the pending session.
func (s *Server) secondFactor(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	ctx := r.Context()
	code := strings.TrimSpace(r.PostForm.Get("code"))
	ok, reason := false, store.ReasonTOTP
	if len(strings.ReplaceAll(code, " ", "")) == 6 {
		secret, err := s.cfg.Store.TOTPSecret(ctx, ws.AccountID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if step, match := checkTOTP(secret, code, s.cfg.Now()); match {
			if ok, err = s.cfg.Store.UseTOTPStep(ctx, ws.AccountID, step); err != nil {
				s.fail(w, r, err)
				return
			}
		}
	} else if code != "" && len(code) <= 64 {
		reason = store.ReasonRecoveryCode
		var err error
		if ok, err = s.cfg.Store.UseRecoveryCode(ctx, ws.AccountID, code); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if !ok {
		s.cfg.Store.RecordWebAuth(ctx, ws.AccountID, ws.Address, remoteIP(r), false, store.ReasonWrong2FA) //nolint:errcheck // logged
		gone, err := s.cfg.Store.FailWebSecondFactor(ctx, ws.AccountID, ws.ID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if gone {
			clearCookie(w, sessionCookie)
			http.Redirect(w, r, "/signin?msg=msg.session-ended", http.StatusSeeOther)
			return
		}
		s.render(w, r, http.StatusUnauthorized, "twofactor", page{Title: "Two-factor authentication", Session: ws, Err: text("err.code")})
		return
	}
	if err := s.cfg.Store.RecordWebAuth(ctx, ws.AccountID, ws.Address, remoteIP(r), true, reason); err != nil {
		s.fail(w, r, err)
		return
	}
	token, err := s.cfg.Store.PromoteWebSession(ctx, ws.AccountID, ws.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setCookie(w, sessionCookie, token, store.WebSessionMaxAge)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) signout(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	if err := s.cfg.Store.DeleteWebSession(r.Context(), ws.AccountID, ws.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/signin?msg=msg.signed-out", http.StatusSeeOther)
}

type overviewData struct {
	Used, Quota int64
	Mailboxes   []*store.Mailbox
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	mbs, err := s.cfg.Store.Mailboxes(r.Context(), ws.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := overviewData{Quota: ws.QuotaBytes, Mailboxes: mbs}
	for _, mb := range mbs {
		d.Used += mb.Size
	}
	s.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Session: ws, Data: d})
}

type appPasswordsData struct {
	Passwords []store.AppPassword
	// New is the password just created, shown once.
	New *newAppPassword
}

type newAppPassword struct {
	ID     int64
	Label  string
	Secret string
	QR     template.URL
}

func (s *Server) appPasswords(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.renderAppPasswords(w, r, http.StatusOK, ws, nil, "")
}

func (s *Server) renderAppPasswords(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, n *newAppPassword, errText string) {
	aps, err := s.cfg.Store.AppPasswords(r.Context(), ws.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, status, "apppasswords", page{Title: "App passwords", Nav: "app-passwords", Session: ws, Err: errText,
		Data: appPasswordsData{Passwords: aps, New: n}})
}

// createAppPassword makes a password and shows it once, with a QR code of
// it and a form to download an Apple profile holding it.
func (s *Server) createAppPassword(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	label := strings.TrimSpace(r.PostForm.Get("label"))
	if label == "" || utf8.RuneCountInString(label) > maxLabel || !utf8.ValidString(label) {
		s.renderAppPasswords(w, r, http.StatusBadRequest, ws, nil, text("err.label"))
		return
	}
	secret, ap, err := s.cfg.Store.CreateAppPassword(r.Context(), ws.AccountID, label)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	qrURL, err := qrDataURL(secret)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.renderAppPasswords(w, r, http.StatusOK, ws, &newAppPassword{ID: ap.ID, Label: label, Secret: secret, QR: template.URL(qrURL)}, "")
}

// pathID reads the {id} of a URL; a malformed one is a 404.
func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, text("err.not-found"), http.StatusNotFound)
		return 0, false
	}
	return id, true
}

// byID applies change to the object of the URL's {id} of the session's
// account. The store scopes it by account, so another account's id is not
// found: 404, as for an id that does not exist.
func (s *Server) byID(w http.ResponseWriter, r *http.Request, ws *store.WebSession,
	change func(ctx context.Context, accountID, id int64) error) (int64, bool) {
	id, ok := pathID(w, r)
	if !ok {
		return 0, false
	}
	err := change(r.Context(), ws.AccountID, id)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, text("err.not-found"), http.StatusNotFound)
		return 0, false
	}
	if err != nil {
		s.fail(w, r, err)
		return 0, false
	}
	return id, true
}

// revokeAppPassword revokes one of the session's account's passwords: the
// store scopes it by account, so another account's id is not found. IMAP
// sessions using it end at once, in every process.
func (s *Server) revokeAppPassword(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	if _, ok := s.byID(w, r, ws, s.cfg.Store.RevokeAppPassword); !ok {
		return
	}
	http.Redirect(w, r, "/app-passwords?msg=msg.revoked", http.StatusSeeOther)
}

// appPasswordProfile answers the download form shown with a new password:
// the form carries the secret back (it is stored only hashed), which must
// be that live password of this account.
func (s *Server) appPasswordProfile(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	secret := r.PostForm.Get("secret")
	mine, err := s.cfg.Store.AppPasswordIs(r.Context(), ws.AccountID, id, secret)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !mine {
		http.Error(w, text("err.secret"), http.StatusNotFound)
		return
	}
	prof, err := mobileconfig.ForClients(s.cfg.Clients, ws.Address, secret)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-apple-aspen-config")
	w.Header().Set("Content-Disposition", `attachment; filename="mail.mobileconfig"`)
	w.Header().Set("Cache-Control", "no-store")
	if err := prof.Write(w); err != nil {
		s.log.Warn("write profile", "err", err)
	}
}

func (s *Server) activity(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	evs, err := s.cfg.Store.AuthEvents(r.Context(), ws.AccountID, activityLength)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "activity", page{Title: "Activity", Nav: "activity", Session: ws, Data: evs})
}

type securityData struct {
	Sessions      []store.WebSession
	RecoveryLeft  int
	Setup         string       // a secret being enrolled
	SetupQR       template.URL // its otpauth:// URL as a QR code
	RecoveryCodes []string     // just made, shown once
}

func (s *Server) security(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.renderSecurity(w, r, http.StatusOK, ws, page{}, nil)
}

func (s *Server) renderSecurity(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, p page, codes []string) {
	ctx := r.Context()
	sessions, err := s.cfg.Store.WebSessions(ctx, ws.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := securityData{Sessions: sessions, Setup: ws.TOTPSetup, RecoveryCodes: codes}
	if ws.TOTPEnabled {
		if d.RecoveryLeft, err = s.cfg.Store.RecoveryCodesLeft(ctx, ws.AccountID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if d.Setup != "" {
		qrURL, err := qrDataURL(totpURL(s.cfg.Clients.Hostname, ws.Address, d.Setup))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d.SetupQR = template.URL(qrURL)
	}
	p.Title, p.Nav, p.Session, p.Data = "Security", "security", ws, d
	s.render(w, r, status, "security", p)
}

// passwordConfirmed verifies the form's current main password of the
// session's account, as a sign-in would (throttled and recorded), and
// answers itself when it is wrong.
func (s *Server) passwordConfirmed(w http.ResponseWriter, r *http.Request, ws *store.WebSession) bool {
	_, err := s.cfg.Store.Authenticate(r.Context(), store.Credentials{Username: ws.Address, Password: r.PostForm.Get("current"),
		Protocol: store.ProtocolWeb, RemoteIP: remoteIP(r), Client: r.UserAgent()})
	switch {
	case errors.Is(err, store.ErrAuthFailed) || errors.Is(err, store.ErrThrottled):
		s.renderSecurity(w, r, http.StatusUnauthorized, ws, page{Err: text("err.password")}, nil)
		return false
	case err != nil:
		s.fail(w, r, err)
		return false
	}
	return true
}

// changePassword sets a new main password after checking the current one.
// The store signs out every browser of the account with it; this one
// gets a new session (and token) at once.
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	f := r.PostForm
	next := f.Get("new")
	if !passwordLengthOK(next) || next != f.Get("confirm") {
		s.renderSecurity(w, r, http.StatusBadRequest, ws, page{Err: text("err.new-password")}, nil)
		return
	}
	if !s.passwordConfirmed(w, r, ws) {
		return
	}
	if err := s.cfg.Store.SetPassword(r.Context(), ws.Address, next); err != nil {
		s.fail(w, r, err)
		return
	}
	token, err := s.cfg.Store.CreateWebSession(r.Context(), ws.AccountID, false, remoteIP(r), r.UserAgent())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setCookie(w, sessionCookie, token, store.WebSessionMaxAge)
	http.Redirect(w, r, "/security?msg=msg.password-changed", http.StatusSeeOther)
}

func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	id, ok := s.byID(w, r, ws, s.cfg.Store.DeleteWebSession)
	if !ok {
		return
	}
	if id == ws.ID {
		clearCookie(w, sessionCookie)
		http.Redirect(w, r, "/signin?msg=msg.signed-out", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/security?msg=msg.session-revoked", http.StatusSeeOther)
}

func (s *Server) revokeOtherSessions(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	if _, err := s.cfg.Store.DeleteWebSessions(r.Context(), ws.AccountID, ws.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/security?msg=msg.sessions-revoked", http.StatusSeeOther)
}

// startTOTP makes a new secret for this session to enroll; the account's
// 2FA changes only once a code from it is confirmed.
func (s *Server) startTOTP(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	k, err := newTOTPKey(s.cfg.Clients.Hostname, ws.Address)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Store.SetTOTPSetup(r.Context(), ws.AccountID, ws.ID, k.Secret()); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/security#twofactor", http.StatusSeeOther)
}

// confirmTOTP turns 2FA on once the user enters a code of the secret
// being enrolled and the main password, and shows the recovery codes
// once. The password, as for turning it off: a browser left signed in
// must not let someone tie the account to their phone.
func (s *Server) confirmTOTP(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	if ws.TOTPSetup == "" {
		http.Redirect(w, r, "/security", http.StatusSeeOther)
		return
	}
	step, ok := checkTOTP(ws.TOTPSetup, r.PostForm.Get("code"), s.cfg.Now())
	if !ok {
		s.renderSecurity(w, r, http.StatusBadRequest, ws, page{Err: text("err.code-setup")}, nil)
		return
	}
	if !s.passwordConfirmed(w, r, ws) {
		return
	}
	codes, err := s.cfg.Store.EnableTOTP(r.Context(), ws.AccountID, ws.ID, ws.TOTPSetup, step)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ws.TOTPEnabled, ws.TOTPSetup = true, ""
	s.renderSecurity(w, r, http.StatusOK, ws, page{}, codes)
}

// disableTOTP turns 2FA off after checking the main password; a server
// that requires 2FA does not allow it.
func (s *Server) disableTOTP(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	if s.cfg.Require2FA {
		http.Redirect(w, r, "/security?msg=msg.2fa-required", http.StatusSeeOther)
		return
	}
	if !s.passwordConfirmed(w, r, ws) {
		return
	}
	if err := s.cfg.Store.DisableTOTP(r.Context(), ws.AccountID); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/security?msg=msg.2fa-off", http.StatusSeeOther)
}
