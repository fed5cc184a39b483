package webui

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mailstack/mailstack/store"
)

// dateForm is how date inputs send a day.
const dateForm = "2006-01-02"

type vacationData struct {
	store.Vacation
	Starts, Ends string // as the date inputs take them
}

func (s *Server) vacation(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	v, err := s.cfg.Store.Vacation(r.Context(), ws.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.renderVacation(w, r, http.StatusOK, ws, *v, "")
}

func (s *Server) renderVacation(w http.ResponseWriter, r *http.Request, status int, ws *store.WebSession, v store.Vacation, errText string) {
	d := vacationData{Vacation: v}
	if v.Starts != nil {
		d.Starts = v.Starts.Format(dateForm)
	}
	if v.Ends != nil {
		d.Ends = v.Ends.Format(dateForm)
	}
	s.render(w, r, status, "vacation", page{Title: "Vacation reply", Nav: "vacation", Session: ws, Err: errText, Data: d})
}

// parseDay reads an optional date input.
func parseDay(v string) (*time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, true
	}
	t, err := time.Parse(dateForm, v)
	if err != nil {
		return nil, false
	}
	return &t, true
}

// saveVacation stores the form's settings; the store checks the limits.
func (s *Server) saveVacation(w http.ResponseWriter, r *http.Request, ws *store.WebSession) {
	f := r.PostForm
	v := store.Vacation{Enabled: f.Get("enabled") == "on", Subject: strings.TrimSpace(f.Get("subject")),
		Body: strings.ReplaceAll(f.Get("body"), "\r\n", "\n")}
	var ok1, ok2 bool
	v.Starts, ok1 = parseDay(f.Get("starts"))
	v.Ends, ok2 = parseDay(f.Get("ends"))
	n, err := strconv.Atoi(strings.TrimSpace(f.Get("interval")))
	if !ok1 || !ok2 || err != nil {
		s.renderVacation(w, r, http.StatusBadRequest, ws, v, text("err.vacation-form"))
		return
	}
	v.IntervalDays = n
	if err := s.cfg.Store.SetVacation(r.Context(), ws.AccountID, v); err != nil {
		if errors.Is(err, store.ErrInvalid) {
			s.renderVacation(w, r, http.StatusBadRequest, ws, v, invalidText(err))
			return
		}
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/vacation?msg=msg.vacation-saved", http.StatusSeeOther)
}
