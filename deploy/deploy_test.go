// Package deploy_test checks the deployment files: no Docker engine or
// systemd runs in CI, so they are parsed and their essentials asserted.
// docker-compose.yml is loaded with compose-go, the library docker compose
// itself uses, so what loads here loads in `docker compose`.
package deploy_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
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
	if len(p.Services) != 4 {
		t.Fatalf("services: %v", p.ServiceNames())
	}
	pg, err := p.GetService("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if pg.Image != "docker.io/library/postgres:15" {
		t.Errorf("postgres image %q: want a pinned major version, fully qualified: docker.io/library/postgres:15", pg.Image)
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
	// Built here, never pulled: a registry image of the same name would be
	// someone else's.
	if ms.PullPolicy != types.PullPolicyBuild {
		t.Errorf("mailstack pull_policy %q, want %q", ms.PullPolicy, types.PullPolicyBuild)
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
	for _, v := range []string{"pgdata", "mailstack-data", "redis-data", "rspamd-data"} {
		if _, ok := p.Volumes[v]; !ok {
			t.Errorf("volume %s not declared", v)
		}
	}
	// rspamd and its redis: pinned, checked, never published; mailstack
	// does not wait for them (it delivers unscanned meanwhile).
	for name, image := range map[string]string{"rspamd": "docker.io/rspamd/rspamd:3.11.1", "redis": "docker.io/valkey/valkey:8"} {
		svc, err := p.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		if svc.Image != image || svc.HealthCheck == nil || len(svc.HealthCheck.Test) == 0 || len(svc.Ports) != 0 || svc.Restart != "unless-stopped" {
			t.Errorf("%s: image %q (want %s), healthcheck %+v, ports %+v, restart %q", name, svc.Image, image, svc.HealthCheck, svc.Ports, svc.Restart)
		}
	}
	if dep, ok := ms.DependsOn["rspamd"]; !ok || dep.Condition != types.ServiceConditionStarted {
		t.Errorf("mailstack depends_on rspamd: %+v", ms.DependsOn)
	}
	env := ms.Environment
	get := func(k string) string {
		if v := env[k]; v != nil {
			return *v
		}
		return ""
	}
	// The database URL points at the postgres service; the password from
	// .env travels separately in PGPASSWORD (TestComposePassword).
	if got := get("MAILSTACK_DATABASE_URL"); got != "postgres://mailstack@postgres:5432/mailstack?sslmode=disable" {
		t.Errorf("MAILSTACK_DATABASE_URL = %q", got)
	}
	if got := get("MAILSTACK_RSPAMD_URL"); got != "http://rspamd:11333" {
		t.Errorf("MAILSTACK_RSPAMD_URL = %q", got)
	}
	if got := *pg.Environment["POSTGRES_PASSWORD"]; got != "change-me-to-something-long-and-random" || get("PGPASSWORD") != got {
		t.Errorf("POSTGRES_PASSWORD = %q, mailstack's PGPASSWORD = %q", got, get("PGPASSWORD"))
	}
	// env_file: .env reaches the container.
	if get("MAILSTACK_HOSTNAME") != "mail.example.org" || get("MAILSTACK_DOMAINS") != "example.org" {
		t.Errorf("env_file not applied: %v", env)
	}
	if ms.Sysctls["net.ipv4.ip_unprivileged_port_start"] != "0" {
		t.Errorf("sysctls: %v", ms.Sysctls)
	}
}

// TestComposeOtherTools checks docker-compose.yml against what the other
// tools of Debian 12 need: docker-compose 1.29's schema (its
// compose_spec.json, in testdata: no top-level name, no keys it does not
// know) and podman-compose 1.0's habits: podman resolves only fully
// qualified image names, in the Dockerfile too, and podman-compose passes
// each sysctls entry as it is, so they must be KEY=VALUE list items.
func TestComposeOtherTools(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	schemaFile, err := os.Open(filepath.Join("testdata", "compose_spec-1.29.2.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer schemaFile.Close()
	schemaDoc, err := jsonschema.UnmarshalJSON(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("compose_spec.json", schemaDoc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("compose_spec.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(doc); err != nil {
		t.Errorf("docker-compose 1.29 would refuse docker-compose.yml: %v", err)
	}
	// The schema check is a real one: 1.29 refused the top-level name.
	if err := schema.Validate(map[string]any{"name": "mailstack", "services": map[string]any{}}); err == nil {
		t.Error("the 1.29 schema accepts a top-level name")
	}

	services := doc.(map[string]any)["services"].(map[string]any)
	qualified := regexp.MustCompile(`^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+(:[0-9]+)?)/`)
	for name, svc := range services {
		svc := svc.(map[string]any)
		if img, _ := svc["image"].(string); !qualified.MatchString(img) {
			t.Errorf("service %s: image %q is not fully qualified (podman)", name, img)
		}
		if sysctls, ok := svc["sysctls"]; ok {
			list, isList := sysctls.([]any)
			if !isList {
				t.Errorf("service %s: sysctls must be a list of KEY=VALUE for podman-compose: %v", name, sysctls)
			}
			for _, item := range list {
				if s, _ := item.(string); !strings.Contains(s, "=") {
					t.Errorf("service %s: sysctl %v is not KEY=VALUE", name, item)
				}
			}
		}
	}
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(string(dockerfile), -1) {
		if !qualified.MatchString(m[1]) {
			t.Errorf("Dockerfile: FROM %s is not fully qualified (podman)", m[1])
		}
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

// TestComposePassword checks that a password with characters that are
// special in URLs, in .env files and in shells reaches both PostgreSQL
// and mailstack's database connection unchanged.
func TestComposePassword(t *testing.T) {
	const password = `p@ss:w/rd?#%25&$x"y\z`
	dir := t.TempDir()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := "MAILSTACK_HOSTNAME=mail.example.org\nPOSTGRES_PASSWORD='" + password + "'\n"
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")}, cli.WithWorkingDirectory(dir), cli.WithEnvFiles(), cli.WithDotEnv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pg, _ := p.GetService("postgres")
	ms, _ := p.GetService("mailstack")
	if got := *pg.Environment["POSTGRES_PASSWORD"]; got != password {
		t.Fatalf("postgres gets POSTGRES_PASSWORD %q, want %q", got, password)
	}
	// What mailstack's driver makes of the URL and PGPASSWORD it is given.
	t.Setenv("PGPASSWORD", *ms.Environment["PGPASSWORD"])
	cfg, err := pgconn.ParseConfig(*ms.Environment["MAILSTACK_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Password != password || cfg.User != "mailstack" || cfg.Host != "postgres" || cfg.Database != "mailstack" {
		t.Errorf("database connection: user %q password %q host %q database %q", cfg.User, cfg.Password, cfg.Host, cfg.Database)
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
	if !strings.HasPrefix(build.from, "docker.io/library/golang:") || build.name == "" {
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
	kv := unitSettings(t)
	for k, want := range map[string]string{
		"Service.User":                  "mailstack",
		"Service.ExecStart":             "/usr/local/bin/mailstack serve",
		"Service.EnvironmentFile":       "/etc/mailstack/mailstack.env",
		"Service.Environment":           "MAILSTACK_DATA_DIR=/var/lib/mailstack",
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
	// A Documentation= URL must resolve where the unit is installed; the
	// binary ships no docs there.
	if d, ok := kv["Unit.Documentation"]; ok && strings.HasPrefix(d, "file://") {
		t.Errorf("Documentation=%s: no such file is installed", d)
	}
}

// unitSettings parses mailstack.service into "Section.Key" → value.
func unitSettings(t *testing.T) map[string]string {
	t.Helper()
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
	return kv
}

// TestEnvFileIsShell checks the env example is valid sh, and that sh and
// compose's .env parser read the same values from it, also for a value
// quoted as the file's header says.
func TestEnvFileIsShell(t *testing.T) {
	if out, err := exec.Command("sh", "-n", "mailstack.env.example").CombinedOutput(); err != nil {
		t.Fatalf("sh -n mailstack.env.example: %v\n%s", err, out)
	}
	example, err := os.ReadFile("mailstack.env.example")
	if err != nil {
		t.Fatal(err)
	}
	const relay = `smtp://me:p&ss$word;x"y\z@smtp.relay.example:587`
	file := filepath.Join(t.TempDir(), "mailstack.env")
	content := string(example) + "MAILSTACK_RELAY='" + relay + "'\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `set -a; . "$1"; env`, "sh", file)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sourcing the env file: %v", err)
	}
	fromSh := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && (strings.HasPrefix(k, "MAILSTACK_") || k == "POSTGRES_PASSWORD") {
			fromSh[k] = v
		}
	}
	fromCompose, err := dotenv.UnmarshalBytesWithLookup([]byte(content), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if fromSh["MAILSTACK_RELAY"] != relay || fromSh["MAILSTACK_HOSTNAME"] != "mail.example.org" {
		t.Errorf("sh read MAILSTACK_RELAY=%q MAILSTACK_HOSTNAME=%q", fromSh["MAILSTACK_RELAY"], fromSh["MAILSTACK_HOSTNAME"])
	}
	if len(fromSh) != len(fromCompose) {
		t.Errorf("sh sets %v, compose %v", fromSh, fromCompose)
	}
	for k, v := range fromCompose {
		if fromSh[k] != v {
			t.Errorf("%s: compose reads %q, sh %q", k, v, fromSh[k])
		}
	}
}

// TestAdminCommandExample runs the admin-command line from the unit's
// comment (the same line is in GUIDE.md) with a stand-in mailstack that
// prints its arguments and environment: it must see the env file's
// settings and the unit's data directory, and a data directory set in
// the file must win, as it does for the service under systemd.
func TestAdminCommandExample(t *testing.T) {
	unit, err := os.ReadFile("mailstack.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#\s+(runuser -u mailstack -- sh -c '(.*)')$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("no admin-command example in mailstack.service")
	}
	command, script := string(m[1]), string(m[2])
	guide, err := os.ReadFile("GUIDE.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(guide), command) {
		t.Errorf("GUIDE.md lacks the unit's admin command:\n%s", command)
	}
	kv := unitSettings(t)
	dataDir, ok := strings.CutPrefix(kv["Service.Environment"], "MAILSTACK_DATA_DIR=")
	if !ok {
		t.Fatalf("unit Environment=%q", kv["Service.Environment"])
	}
	envFile := kv["Service.EnvironmentFile"]
	setDir, source := strings.Index(script, "MAILSTACK_DATA_DIR="+dataDir+";"), strings.Index(script, ". "+envFile+";")
	if setDir < 0 || source < 0 || setDir > source {
		t.Fatalf("the command must set MAILSTACK_DATA_DIR=%s and then source %s: %s", dataDir, envFile, script)
	}

	bin := t.TempDir()
	fake := "#!/bin/sh\necho \"args=$*\"\nenv\n"
	if err := os.WriteFile(filepath.Join(bin, "mailstack"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("mailstack.env.example")
	if err != nil {
		t.Fatal(err)
	}
	runExample := func(extra string) map[string]string {
		t.Helper()
		file := filepath.Join(t.TempDir(), "mailstack.env")
		if err := os.WriteFile(file, append(example, extra...), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", strings.Replace(script, ". "+envFile+";", ". '"+file+"';", 1))
		cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("admin command: %v\n%s", err, out)
		}
		got := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				got[k] = v
			}
		}
		return got
	}
	got := runExample("")
	for k, want := range map[string]string{
		"args":               "user add you@example.org",
		"MAILSTACK_HOSTNAME": "mail.example.org",
		"MAILSTACK_DOMAINS":  "example.org",
		"MAILSTACK_DATA_DIR": dataDir,
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if got := runExample("MAILSTACK_DATA_DIR=/srv/mail\n"); got["MAILSTACK_DATA_DIR"] != "/srv/mail" {
		t.Errorf("data directory from the env file: %q", got["MAILSTACK_DATA_DIR"])
	}
}
