package webui

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/internal/dnscheck"
	"github.com/mailstack/mailstack/internal/mailaddr"
	"github.com/mailstack/mailstack/internal/mtasts"
	"github.com/mailstack/mailstack/store"
)

// The administrators' pages: accounts flagged admin manage domains,
// users, aliases and the outbound queue, and see the server's health.
// Everyone else gets 404, as for a page that does not exist.

func (s *Server) adminRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /admin", s.admin(s.adminHealth))
	m.HandleFunc("GET /admin/users", s.admin(s.adminUsers))
	m.HandleFunc("POST /admin/users", s.admin(s.adminAddUser))
	m.HandleFunc("POST /admin/users/{action}", s.admin(s.adminChangeUser))
	m.HandleFunc("GET /admin/aliases", s.admin(s.adminAliases))
	m.HandleFunc("POST /admin/aliases", s.admin(s.adminAddAlias))
	m.HandleFunc("POST /admin/aliases/delete", s.admin(s.adminDeleteAlias))
	m.HandleFunc("GET /admin/domains", s.admin(s.adminDomains))
	m.HandleFunc("POST /admin/domains", s.admin(s.adminAddDomain))
	m.HandleFunc("GET /admin/domains/{name}", s.admin(s.adminDomain))
	m.HandleFunc("POST /admin/domains/{name}/doctor", s.admin(s.adminDoctor))
	m.HandleFunc("GET /admin/queue", s.admin(s.adminQueue))
	m.HandleFunc("POST /admin/queue/{id}/{action}", s.admin(s.adminQueueAction))
}

// admin wraps a page only administrators may open.
func (s *Server) admin(h handler) http.HandlerFunc {
	return s.signedIn(func(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
		if !ws.Admin {
			http.Error(w, text("err.not-found"), http.StatusNotFound)
			return
		}
		h(w, r, ws)
	})
}

// adminPage renders an administrators' page.
func (s *Server) adminPage(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, name, title, errText string, data any) {
	s.render(w, r, status, name, page{Title: title, Nav: "admin", Session: ws, Err: errText, Data: data})
}

// adminDone redirects after a change, with the notice of a text key.
func adminDone(w http.ResponseWriter, r *http.Request, path, key string) {
	http.Redirect(w, r, path+"?msg="+key, http.StatusSeeOther)
}

type healthData struct {
	Database                   string
	QueueDepth                 int64
	Accounts, Domains, Aliases int
}

func (s *Server) adminHealth(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	ctx := r.Context()
	d := healthData{Database: "ok"}
	if err := s.cfg.Store.Ping(ctx); err != nil {
		d.Database = "unreachable"
		s.log.Warn("health", "err", err)
	}
	var err error
	if d.QueueDepth, err = s.cfg.Store.QueueDepth(ctx); err != nil {
		s.fail(w, r, err)
		return
	}
	accs, err := s.cfg.Store.AccountUsages(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ds, err := s.cfg.Store.Domains(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	als, err := s.cfg.Store.Aliases(ctx, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d.Accounts, d.Domains, d.Aliases = len(accs), len(ds), len(als)
	s.adminPage(w, r, http.StatusOK, ws, "admin", "Server", "", d)
}

func (s *Server) adminUsers(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.renderUsers(w, r, http.StatusOK, ws, "")
}

func (s *Server) renderUsers(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, errText string) {
	accs, err := s.cfg.Store.AccountUsages(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.adminPage(w, r, status, ws, "adminusers", "Users", errText, accs)
}

// quotaMiB reads a quota in MiB (0 or empty: unlimited).
func quotaMiB(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return 0, false
	}
	return n << 20, true
}

func (s *Server) adminAddUser(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	f := r.PostForm
	quota, ok := quotaMiB(f.Get("quota"))
	if !ok {
		s.renderUsers(w, r, http.StatusBadRequest, ws, text("err.quota"))
		return
	}
	pw := f.Get("password")
	if !passwordLengthOK(pw) {
		s.renderUsers(w, r, http.StatusBadRequest, ws, text("err.new-password"))
		return
	}
	_, err := s.cfg.Store.CreateAccount(r.Context(), f.Get("address"), pw, store.AccountOptions{QuotaBytes: quota})
	if err != nil {
		s.adminError(w, r, ws, err, s.renderUsers)
		return
	}
	adminDone(w, r, "/admin/users", "msg.user-created")
}

// adminChangeUser disables, enables, sets the quota or the password of,
// or deletes an account named in the form. An administrator cannot
// disable or delete their own account (nobody would be left to undo it).
func (s *Server) adminChangeUser(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	ctx := r.Context()
	f := r.PostForm
	address := mailaddr.Key(f.Get("address"))
	action := r.PathValue("action")
	if address == ws.Address && (action == "disable" || action == "delete") {
		s.renderUsers(w, r, http.StatusBadRequest, ws, text("err.self"))
		return
	}
	var err error
	var done string // the notice's text key
	switch action {
	case "disable", "enable":
		err, done = s.cfg.Store.SetDisabled(ctx, address, action == "disable"), "msg.user-"+action+"d"
	case "quota":
		quota, ok := quotaMiB(f.Get("quota"))
		if !ok {
			s.renderUsers(w, r, http.StatusBadRequest, ws, text("err.quota"))
			return
		}
		err, done = s.cfg.Store.SetQuota(ctx, address, quota), "msg.quota-set"
	case "password":
		pw := f.Get("password")
		if !passwordLengthOK(pw) {
			s.renderUsers(w, r, http.StatusBadRequest, ws, text("err.new-password"))
			return
		}
		err, done = s.resetPassword(r, address, pw), "msg.password-reset"
	case "delete":
		if mailaddr.Key(f.Get("confirm")) != address {
			s.renderUsers(w, r, http.StatusBadRequest, ws, text("err.confirm-delete"))
			return
		}
		err, done = s.cfg.Store.DeleteAccount(ctx, address), "msg.user-deleted"
	default:
		http.Error(w, text("err.not-found"), http.StatusNotFound)
		return
	}
	if err != nil {
		s.adminError(w, r, ws, err, s.renderUsers)
		return
	}
	adminDone(w, r, "/admin/users", done)
}

// resetPassword sets an account's main password; the store signs out its
// browsers in the same statement.
func (s *Server) resetPassword(r *http.Request, address, password string) error {
	return s.cfg.Store.SetPassword(r.Context(), address, password)
}

// adminError shows a store error about the form's object on the page
// render draws, or fails.
func (s *Server) adminError(w http.ResponseWriter, r *http.Request, ws *store.WebSession, err error,
	render func(http.ResponseWriter, *http.Request, int, *store.WebSession, string)) {
	var oe *store.ObjectError
	switch {
	case errors.As(err, &oe):
		render(w, r, http.StatusBadRequest, ws, objectText(oe))
	case errors.Is(err, store.ErrInvalid):
		render(w, r, http.StatusBadRequest, ws, invalidText(err))
	case errors.Is(err, store.ErrNotFound):
		render(w, r, http.StatusNotFound, ws, text("err.not-found"))
	default:
		s.fail(w, r, err)
	}
}

func (s *Server) adminAliases(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.renderAliases(w, r, http.StatusOK, ws, "")
}

func (s *Server) renderAliases(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, errText string) {
	als, err := s.cfg.Store.Aliases(r.Context(), "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.adminPage(w, r, status, ws, "adminaliases", "Aliases", errText, als)
}

func (s *Server) adminAddAlias(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	alias := r.PostForm.Get("alias")
	if err := s.cfg.Store.CreateAlias(r.Context(), alias, r.PostForm.Get("target")); err != nil {
		s.adminError(w, r, ws, err, s.renderAliases)
		return
	}
	adminDone(w, r, "/admin/aliases", "msg.alias-added")
}

func (s *Server) adminDeleteAlias(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	alias := r.PostForm.Get("alias")
	if err := s.cfg.Store.DeleteAlias(r.Context(), alias); err != nil {
		s.adminError(w, r, ws, err, s.renderAliases)
		return
	}
	adminDone(w, r, "/admin/aliases", "msg.alias-deleted")
}

func (s *Server) adminDomains(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.renderDomains(w, r, http.StatusOK, ws, "")
}

func (s *Server) renderDomains(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, errText string) {
	ds, err := s.cfg.Store.Domains(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.adminPage(w, r, status, ws, "admindomains", "Domains", errText, ds)
}

// dkimSelector is the selector of domains added on the web, as `mailstack
// domain add` chooses by default.
const dkimSelector = "mailstack"

func (s *Server) adminAddDomain(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	key, err := dkimkey.Generate()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.cfg.Store.CreateDomain(r.Context(), r.PostForm.Get("domain"), dkimSelector, key)
	if err != nil {
		s.adminError(w, r, ws, err, s.renderDomains)
		return
	}
	http.Redirect(w, r, "/admin/domains/"+url.PathEscape(d.Name)+"?msg=msg.domain-added", http.StatusSeeOther)
}

type domainData struct {
	Name   string
	Zone   string // the records to publish, as zone file lines
	Report string // the doctor's report, once run
}

// domainParams gathers what dnscheck needs for a stored domain, as
// `mailstack dns` and `doctor` do; a domain not served here is a 404.
func (s *Server) domainParams(w http.ResponseWriter, r *http.Request) (dnscheck.Params, bool) {
	d, err := s.cfg.Store.DomainByName(r.Context(), r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, text("err.not-found"), http.StatusNotFound)
		return dnscheck.Params{}, false
	}
	if err != nil {
		s.fail(w, r, err)
		return dnscheck.Params{}, false
	}
	dkim, err := dkimkey.TXTRecord(d.DKIMKey)
	if err != nil {
		s.fail(w, r, err)
		return dnscheck.Params{}, false
	}
	host := s.cfg.Clients.Hostname
	return dnscheck.Params{Domain: d.Name, Hostname: host, DKIMSelector: d.DKIMSelector, DKIMRecord: dkim,
		MTASTS: mtasts.New(s.cfg.MTASTS, host), Clients: s.cfg.Clients}, true
}

// adminDomain shows the DNS records a domain needs, as `mailstack dns`
// prints them.
func (s *Server) adminDomain(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.renderDomain(w, r, ws, "")
}

func (s *Server) renderDomain(w http.ResponseWriter, r *http.Request, ws *store.WebSession, report string) {
	p, ok := s.domainParams(w, r)
	if !ok {
		return
	}
	var zone strings.Builder
	if err := dnscheck.WriteZone(&zone, p.Domain, dnscheck.Expected(p), 3600); err != nil {
		s.fail(w, r, err)
		return
	}
	s.adminPage(w, r, http.StatusOK, ws, "admindomain", "Domain "+p.Domain, "", domainData{Name: p.Domain, Zone: zone.String(), Report: report})
}

// Bounds of the web's doctor run: the HTTP server's WriteTimeout (30 s)
// must not cut the page off.
const (
	doctorTimeout = 20 * time.Second
	probeTimeout  = 3 * time.Second
)

// adminDoctor runs `mailstack doctor`'s checks now (DNS records, reverse
// DNS, ports and certificates, MTA-STS policy and autoconfig from
// outside) and shows the report with the records.
func (s *Server) adminDoctor(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	p, ok := s.domainParams(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), doctorTimeout)
	defer cancel()
	chk := &dnscheck.Checker{}
	if s.cfg.DNSServer != "" {
		chk.Resolver, chk.Server = dnscheck.ResolverFor(s.cfg.DNSServer), s.cfg.DNSServer
	}
	probe := dnscheck.ProbeOptions{Timeout: probeTimeout}
	recs := chk.CheckRecords(ctx, dnscheck.Expected(p))
	rev := chk.CheckReverse(ctx, p.Hostname)
	eps := chk.CheckEndpoints(ctx, dnscheck.Endpoints(p), probe)
	docs := chk.CheckDocuments(ctx, dnscheck.Documents(p), probe)
	var report strings.Builder
	if _, err := dnscheck.WriteReport(&report, p.Domain, recs, rev, eps, docs, time.Now()); err != nil {
		s.fail(w, r, err)
		return
	}
	s.renderDomain(w, r, ws, report.String())
}

func (s *Server) adminQueue(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	s.renderQueue(w, r, http.StatusOK, ws, "")
}

func (s *Server) renderQueue(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, errText string) {
	q, err := s.cfg.Store.QueueEntries(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.adminPage(w, r, status, ws, "adminqueue", "Outbound queue", errText, q)
}

// adminQueueAction retries or deletes a queue entry.
func (s *Server) adminQueueAction(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var err error
	switch r.PathValue("action") {
	case "retry":
		err = s.cfg.Store.RetryQueued(r.Context(), id)
	case "delete":
		err = s.cfg.Store.DeleteQueued(r.Context(), id)
	default:
		http.Error(w, text("err.not-found"), http.StatusNotFound)
		return
	}
	if err != nil {
		s.adminError(w, r, ws, err, s.renderQueue)
		return
	}
	adminDone(w, r, "/admin/queue", "msg.queue-"+r.PathValue("action"))
}
