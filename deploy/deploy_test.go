// Package deploy_test checks the deployment files: no Docker engine or
// systemd runs in CI, so they are parsed and their essentials asserted.
// docker-compose.yml is loaded with compose-go, the library docker compose
// itself uses, so what loads here loads in `docker compose`.
package deploy_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads docker-compose.yml the way `docker compose up` would
// after `cp deploy/mailstack.env.example .env`.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir := t.TempDir()
	for src, dst := range map[string]string{"../docker-compose.yml": "docker-compose.yml", "mailstack.env.example": ".env"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir), cli.WithEnvFiles(), cli.WithDotEnv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	if len(p.Services) != 2 {
		t.Fatalf("services: %v", p.ServiceNames())
	}
	pg, err := p.GetService("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if pg.Image != "postgres:15" {
		t.Errorf("postgres image %q: want a pinned major version, postgres:15", pg.Image)
	}
	if pg.HealthCheck == nil || !slices.Contains(pg.HealthCheck.Test, "pg_isready -U mailstack -d mailstack") {
		t.Errorf("postgres healthcheck: %+v", pg.HealthCheck)
	}
	if !hasVolume(pg, "pgdata", "/var/lib/postgresql/data") {
		t.Errorf("postgres volumes: %+v", pg.Volumes)
	}
	if pg.Restart != "unless-stopped" {
		t.Errorf("postgres restart %q", pg.Restart)
	}
	if len(pg.Ports) != 0 {
		t.Errorf("postgres must not be published: %+v", pg.Ports)
	}

	ms, err := p.GetService("mailstack")
	if err != nil {
		t.Fatal(err)
	}
	if dep, ok := ms.DependsOn["postgres"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("mailstack depends_on: %+v", ms.DependsOn)
	}
	if ms.Build == nil || ms.Build.Dockerfile != "deploy/Dockerfile" {
		t.Errorf("mailstack build: %+v", ms.Build)
	}
	if ms.Restart != "unless-stopped" {
		t.Errorf("mailstack restart %q", ms.Restart)
	}
	var published []string
	for _, port := range ms.Ports {
		published = append(published, port.Published+":"+strconv.Itoa(int(port.Target)))
	}
	for _, want := range []string{"25:25", "465:465", "587:587", "993:993", "143:143", "80:80", "443:443"} {
		if !slices.Contains(published, want) {
			t.Errorf("port %s not published (have %v)", want, published)
		}
	}
	if !hasVolume(ms, "mailstack-data", "/var/lib/mailstack") {
		t.Errorf("mailstack volumes: %+v", ms.Volumes)
	}
	for _, v := range []string{"pgdata", "mailstack-data"} {
		if _, ok := p.Volumes[v]; !ok {
			t.Errorf("volume %s not declared", v)
		}
	}
	env := ms.Environment
	get := func(k string) string {
		if v := env[k]; v != nil {
			return *v
		}
		return ""
	}
	// The database URL points at the postgres service with the password
	// from .env, interpolated by compose.
	if got := get("MAILSTACK_DATABASE_URL"); got != "postgres://mailstack:change-me-to-something-long-and-random@postgres:5432/mailstack?sslmode=disable" {
		t.Errorf("MAILSTACK_DATABASE_URL = %q", got)
	}
	if got := *pg.Environment["POSTGRES_PASSWORD"]; got != "change-me-to-something-long-and-random" {
		t.Errorf("POSTGRES_PASSWORD = %q", got)
	}
	// env_file: .env reaches the container.
	if get("MAILSTACK_HOSTNAME") != "mail.example.org" || get("MAILSTACK_DOMAINS") != "example.org" {
		t.Errorf("env_file not applied: %v", env)
	}
	if ms.Sysctls["net.ipv4.ip_unprivileged_port_start"] != "0" {
		t.Errorf("sysctls: %v", ms.Sysctls)
	}
}

func TestComposeNeedsPassword(t *testing.T) {
	dir := t.TempDir()
	b, _ := os.ReadFile("../docker-compose.yml")
	os.WriteFile(filepath.Join(dir, "docker-compose.yml"), b, 0o600)
	os.WriteFile(filepath.Join(dir, ".env"), []byte("MAILSTACK_HOSTNAME=mail.example.org\n"), 0o600)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")}, cli.WithWorkingDirectory(dir), cli.WithEnvFiles(), cli.WithDotEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "POSTGRES_PASSWORD") {
		t.Errorf("compose loaded without POSTGRES_PASSWORD: %v", err)
	}
}

func hasVolume(s types.ServiceConfig, source, target string) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == source && v.Target == target {
			return true
		}
	}
	return false
}

// TestDockerfile parses deploy/Dockerfile lightly: a multi-stage build of a
// static binary, a small final image, a non-root user.
func TestDockerfile(t *testing.T) {
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type stage struct {
		from, name string
		lines      []string
	}
	var stages []*stage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if strings.EqualFold(fields[0], "FROM") {
			st := &stage{from: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				st.name = fields[3]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("instruction before FROM: %s", line)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, have %d stage(s)", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:") || build.name == "" {
		t.Errorf("build stage: %+v", build)
	}
	joined := strings.Join(build.lines, "\n")
	if !regexp.MustCompile(`CGO_ENABLED=0 .*go build .*\./cmd/mailstack`).MatchString(joined) {
		t.Errorf("build stage does not build a static binary:\n%s", joined)
	}
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final image %q: want distroless/static", final.from)
	}
	var user, entrypoint, expose string
	copied := false
	for _, l := range final.lines {
		switch {
		case strings.HasPrefix(l, "USER "):
			user = strings.TrimPrefix(l, "USER ")
		case strings.HasPrefix(l, "ENTRYPOINT "):
			entrypoint = l
		case strings.HasPrefix(l, "EXPOSE "):
			expose = l
		case strings.HasPrefix(l, "COPY --from="+build.name+" /out/mailstack "):
			copied = true
		}
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("final stage USER %q: must be non-root", user)
	}
	if !copied || !strings.Contains(entrypoint, "/usr/local/bin/mailstack") {
		t.Errorf("binary not copied or not the entrypoint: %q", entrypoint)
	}
	for _, p := range []string{"25", "465", "587", "993", "143", "80", "443"} {
		if !slices.Contains(strings.Fields(expose), p) {
			t.Errorf("EXPOSE lacks %s: %q", p, expose)
		}
	}
}

// TestEnvExample checks that every MAILSTACK_* variable the program reads
// is documented in mailstack.env.example.
func TestEnvExample(t *testing.T) {
	example, err := os.ReadFile("mailstack.env.example")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../cmd/mailstack/*.go")
	re := regexp.MustCompile(`"(MAILSTACK_[A-Z0-9_]+)"`)
	seen := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, _ := os.ReadFile(f)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
	}
	if len(seen) < 15 {
		t.Fatalf("found only %d variables: %v", len(seen), seen)
	}
	for v := range seen {
		if !regexp.MustCompile(`(?m)^#?` + v + `=`).Match(example) {
			t.Errorf("%s is not in deploy/mailstack.env.example", v)
		}
	}
}

// TestSystemdUnit checks the unit runs unprivileged with hardening and
// the managed PostgreSQL's needs.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("mailstack.service")
	if err != nil {
		t.Fatal(err)
	}
	section := ""
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		kv[section+"."+k] = v
	}
	for k, want := range map[string]string{
		"Service.User":                  "mailstack",
		"Service.ExecStart":             "/usr/local/bin/mailstack serve",
		"Service.StateDirectory":        "mailstack",
		"Service.AmbientCapabilities":   "CAP_NET_BIND_SERVICE",
		"Service.CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
		"Service.NoNewPrivileges":       "true",
		"Service.ProtectSystem":         "strict",
		"Service.ProtectHome":           "true",
		"Service.PrivateTmp":            "true",
		"Service.KillMode":              "mixed",
		"Install.WantedBy":              "multi-user.target",
	} {
		if kv[k] != want {
			t.Errorf("%s = %q, want %q", k, kv[k], want)
		}
	}
}
