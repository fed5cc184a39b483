// Package webui is the account web on the HTTPS listener: each user signs
// in with the account's main password and, when enabled, a TOTP code (RFC
// 6238) or a recovery code, then manages app passwords, reviews the
// account's activity, changes the password, sets up two-factor
// authentication, signs out other browsers and sees the storage used.
//
// Pages are server-rendered html/template with embedded assets: no
// JavaScript, no third-party request, a strict Content-Security-Policy.
// Sessions live in PostgreSQL (store.WebSession), so any process serves
// any request and a revocation holds everywhere at the next request. The
// session cookie is __Host- prefixed, Secure, HttpOnly and SameSite=Strict;
// every form carries the session's CSRF token, and cross-origin POSTs are
// refused before that (http.CrossOriginProtection).
package webui

import (
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/mtasts"
	"github.com/mailstack/mailstack/store"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Config is what the account web needs.
type Config struct {
	Store *store.Store
	// Clients is what app password profiles configure.
	Clients clientconf.Config
	// MTASTS is the MTA-STS mode the DNS records of the administrators'
	// domain page announce.
	MTASTS mtasts.Mode
	// DNSServer (host:port) answers the domain page's doctor checks;
	// empty: the system resolver.
	DNSServer string
	// Require2FA makes two-factor authentication mandatory: an account
	// without it can open only the Security page until it is set up.
	Require2FA bool
	// Log receives request errors; nil means slog.Default().
	Log *slog.Logger
	// Now, if set, replaces time.Now for TOTP checks (tests).
	Now func() time.Time
}

// Server serves the account web. Create it with New.
type Server struct {
	cfg   Config
	log   *slog.Logger
	pages map[string]*template.Template
	mux   *http.ServeMux
	csrf  *http.CrossOriginProtection
}

// Cookie names. The __Host- prefix makes browsers refuse them unless
// Secure, host-only and Path=/, so no subdomain can plant one.
const (
	sessionCookie = "__Host-mailstack"
	// signinCookie carries the sign-in form's CSRF token (double submit):
	// before sign-in there is no session to hold one.
	signinCookie = "__Host-mailstack-signin"
)

// maxForm bounds a form's body.
const maxForm = 64 << 10

// contentSecurityPolicy allows nothing but the server's own stylesheet
// and inline images (QR codes), and forms posting back to it.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// New returns the account web's server.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Log.With("service", "web"), pages: map[string]*template.Template{}}
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.csrf = http.NewCrossOriginProtection()
	s.routes()
	return s, nil
}

func (s *Server) parseTemplates() error {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return err
	}
	funcs := template.FuncMap{"text": text, "bytes": formatBytes, "when": formatTime, "percent": percent}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return err
		}
		s.pages[base] = t
	}
	return nil
}

// ServeHTTP serves a request with the security headers every answer
// carries.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Strict-Transport-Security", "max-age=31536000")
	if r.TLS == nil {
		// The HTTP listener redirects before reaching here; a page is
		// never served in clear text whatever the wiring.
		http.Error(w, text("err.https"), http.StatusForbidden)
		return
	}
	if err := s.csrf.Check(r); err != nil {
		http.Error(w, text("err.csrf"), http.StatusForbidden)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	m := http.NewServeMux()
	// The one asset, named: a directory listing of static/ is no page.
	m.Handle("GET /static/style.css", http.FileServerFS(assets))
	m.HandleFunc("GET /signin", s.signinPage)
	m.HandleFunc("POST /signin", s.signin)
	m.HandleFunc("GET /signin/2fa", s.pending(s.secondFactorPage))
	m.HandleFunc("POST /signin/2fa", s.pending(s.secondFactor))
	// A browser waiting for its second factor may sign out too (cancel).
	m.HandleFunc("POST /signout", s.withSession(eitherSession, s.signout))
	m.HandleFunc("GET /{$}", s.signedIn(s.overview))
	m.HandleFunc("GET /app-passwords", s.signedIn(s.appPasswords))
	m.HandleFunc("POST /app-passwords", s.signedIn(s.createAppPassword))
	m.HandleFunc("POST /app-passwords/{id}/revoke", s.signedIn(s.revokeAppPassword))
	m.HandleFunc("POST /app-passwords/{id}/profile", s.signedIn(s.appPasswordProfile))
	m.HandleFunc("GET /activity", s.signedIn(s.activity))
	m.HandleFunc("GET /security", s.signedIn(s.security))
	m.HandleFunc("POST /security/password", s.signedIn(s.changePassword))
	m.HandleFunc("POST /security/sessions/{id}/revoke", s.signedIn(s.revokeSession))
	m.HandleFunc("POST /security/sessions/revoke-others", s.signedIn(s.revokeOtherSessions))
	m.HandleFunc("POST /security/2fa/start", s.signedIn(s.startTOTP))
	m.HandleFunc("POST /security/2fa/confirm", s.signedIn(s.confirmTOTP))
	m.HandleFunc("POST /security/2fa/disable", s.signedIn(s.disableTOTP))
	m.HandleFunc("GET /vacation", s.signedIn(s.vacation))
	m.HandleFunc("POST /vacation", s.signedIn(s.saveVacation))
	s.adminRoutes(m)
	s.mux = m
}

// handler is a page handler for a request with a live session.
type handler func(w http.ResponseWriter, r *http.Request, ws *store.WebSession)

// session returns the request's live session, or nil.
func (s *Server) session(w http.ResponseWriter, r *http.Request) (*store.WebSession, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, true
	}
	ws, err := s.cfg.Store.WebSessionByToken(r.Context(), c.Value)
	if errors.Is(err, store.ErrNotFound) {
		clearCookie(w, sessionCookie)
		return nil, true
	}
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	return ws, true
}

// signedIn wraps a handler that needs a complete sign-in: without one
// the browser goes to the sign-in page; a POST must carry the session's
// CSRF token. With Require2FA, an account without two-factor
// authentication reaches only the Security page.
func (s *Server) signedIn(h handler) http.HandlerFunc {
	return s.withSession(fullSession, func(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
		if s.cfg.Require2FA && !ws.TOTPEnabled && !strings.HasPrefix(r.URL.Path, "/security") && r.URL.Path != "/signout" {
			http.Redirect(w, r, "/security?msg=msg.2fa-required", http.StatusSeeOther)
			return
		}
		h(w, r, ws)
	})
}

// pending wraps the second-factor step: only a session waiting for it.
func (s *Server) pending(h handler) http.HandlerFunc { return s.withSession(pendingSession, h) }

// sessionWant says which sessions a handler serves: signed in fully,
// waiting for the second factor, or either.
type sessionWant int

const (
	fullSession sessionWant = iota
	pendingSession
	eitherSession
)

// withSession runs h for a request with a session in the state want,
// sending other browsers where they belong, and checks the CSRF token of a
// POST.
func (s *Server) withSession(want sessionWant, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ws, ok := s.session(w, r)
		switch {
		case !ok:
			return
		case ws == nil:
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		case ws.Pending2FA && want == fullSession:
			http.Redirect(w, r, "/signin/2fa", http.StatusSeeOther)
			return
		case !ws.Pending2FA && want == pendingSession:
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && !s.checkForm(w, r, ws.CSRF) {
			return
		}
		h(w, r, ws)
	}
}

// checkForm parses a POSTed form (bounded) and checks its CSRF token
// against want, answering 403 itself when it does not match.
func (s *Server) checkForm(w http.ResponseWriter, r *http.Request, want string) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, text("err.form"), http.StatusBadRequest)
		return false
	}
	got := r.PostForm.Get("csrf")
	if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		http.Error(w, text("err.csrf"), http.StatusForbidden)
		return false
	}
	return true
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// remoteIP is the client's address as the activity log records it.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string // the current page's menu entry
	Session *store.WebSession
	Msg     string // a notice (a text key's text)
	Err     string // an error to show
	Data    any
}

// render writes a page. A page is never cached: some show secrets once.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	t, ok := s.pages[name]
	if !ok {
		s.fail(w, r, errors.New("no template "+name))
		return
	}
	if p.Msg == "" {
		if key := r.URL.Query().Get("msg"); strings.HasPrefix(key, "msg.") {
			p.Msg = text(key)
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, p); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(b.String())) //nolint:errcheck // the client went away
}

// fail logs an internal error and answers 500 without details.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("web request", "path", r.URL.Path, "remote", remoteIP(r), "err", err)
	http.Error(w, text("err.internal"), http.StatusInternalServerError)
}
