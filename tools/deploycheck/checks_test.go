package deploycheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A check looks at a deployment and returns what is wrong with it, one
// sentence per problem; none means it passes.
type check struct {
	name string
	fn   func(d *deployment) []string
}

var checks = []check{
	{"required variables", checkRequiredVariables},
	{"replica set", checkReplicaSet},
	{"binlog", checkBinlog},
	{"stateful placement", checkStatefulPlacement},
	{"notifier id", checkNotifierID},
	{"fronts", checkFronts},
	{"board links", checkBoardLinks},
	{"workers", checkWorkers},
	{"healthchecks", checkHealthchecks},
	{"no build", checkNoBuild},
	{"credentials", checkCredentials},
	{"network", checkNetwork},
	{"images", checkImages},
	{"updates", checkUpdates},
	{"dockerfile", checkDockerfile},
	{"documented", checkDocumented},
	{"files", checkFiles},
	{"operations", checkOperations},
}

// ourImages are the services whose images this repository builds, and the
// image names build-images.sh gives them.
var ourImages = map[string]string{
	"queue":    "jobs-beanstalkd",
	"manager":  "jobs-manager",
	"worker":   "jobs-worker",
	"notifier": "jobs-notifier",
}

// goServices are the Go services, each with its port variable: the port its
// /healthz answers on.
var goServices = map[string]string{
	"manager":  "MANAGER_LISTEN_PORT",
	"worker":   "WORKER_METRICS_PORT",
	"notifier": "NOTIFIER_LISTEN_PORT",
}

// requiredVars must be given by the operator: the stack refuses to render
// without them. tlsRequiredVars likewise for the TLS front.
var (
	requiredVars    = []string{"ADMIN_USER", "ADMIN_PASSWORD_HASH", "ME_SESSION_SECRET"}
	tlsRequiredVars = []string{"DOMAIN", "ACME_EMAIL"}
)

// unpinnedImages are third-party images allowed without a release tag, and
// why.
var unpinnedImages = map[string]string{
	"beanstalkd-console": "its only published tag is latest; the README tells operators to pin it by digest through BEANSTALKD_CONSOLE_IMAGE",
}

// allServices are the services of both ways to deploy the stack: those of
// the stack file by name, each front as "front (file)".
func allServices(d *deployment) map[string]service {
	all := map[string]service{}
	for file, st := range map[string]stack{httpFile: d.http, tlsFile: d.tls} {
		for name, s := range st.Services {
			if _, base := d.stack.Services[name]; !base {
				name += " (" + file + ")"
			}
			all[name] = s
		}
	}
	return all
}

// checkRequiredVariables: each credential is a required variable (the render
// fails without it, naming it), and a given value arrives unchanged. The
// docker client's interpolation reads a "-" inside a ${VAR:?message} as a
// default, so a careless message silently replaces the operator's value.
func checkRequiredVariables(d *deployment) []string {
	var problems []string
	for _, c := range []struct {
		files []string
		vars  []string
	}{
		{[]string{stackFile}, requiredVars},
		{[]string{stackFile, tlsFile}, tlsRequiredVars},
	} {
		for _, v := range c.vars {
			_, err := d.render(nil, []string{v}, c.files...)
			switch {
			case err == nil:
				problems = append(problems, fmt.Sprintf("%s renders without %s: it must be a required variable (${%s:?message})", strings.Join(c.files, " + "), v, v))
			case !strings.Contains(err.Error(), "required variable "+v+" is missing"):
				problems = append(problems, fmt.Sprintf("rendering without %s failed, but not by naming it: %v", v, err))
			}
		}
	}
	for _, v := range append(slices.Clone(requiredVars), tlsRequiredVars...) {
		found := false
		for name, s := range d.tls.Services {
			for k, got := range s.Environment {
				if !strings.Contains(rawValue(d, name, k), "${"+v+":?") {
					continue
				}
				found = true
				if got != d.env[v] {
					problems = append(problems, fmt.Sprintf("%s.environment.%s renders as %q, not the %q given in %s (a \"-\" in the ${%s:?message}?)", name, k, got, d.env[v], v, v))
				}
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("no service's environment takes the required variable %s", v))
		}
	}
	return problems
}

// rawValue is the environment value of service name as written, in either
// stack file.
func rawValue(d *deployment, name, key string) string {
	if v, ok := d.raw.env(name)[key]; ok {
		return v
	}
	if v, ok := d.rawHTTP.env(name)[key]; ok {
		return v
	}
	return d.rawTLS.env(name)[key]
}

// initiateGuardRe is the test, before rs.initiate, that the data directory
// holds no collections or views, ending in quit(1) when it does.
var initiateGuardRe = regexp.MustCompile(`catalogStats;\s*if \(!c \|\| c\.collections \+ c\.views > 0\) \{[^}]*quit\(1\)`)

var initiateRe = regexp.MustCompile(`rs\.initiate\(\s*\{\s*_id:\s*'([^']+)'.*?host:\s*'([^':]+):(\d+)'`)

// checkReplicaSet: MongoDB runs as a replica set, the set is initialised
// automatically and only once, the services' URLs name the set, and the data
// is on a named volume.
func checkReplicaSet(d *deployment) []string {
	db, ok := d.stack.Services["database"]
	if !ok {
		return []string{"no database service"}
	}
	var problems []string
	set := flagValue(db.Command, "--replSet")
	if set == "" {
		problems = append(problems, fmt.Sprintf("database command %q has no --replSet", db.Command))
	}
	hc := ""
	if db.Healthcheck != nil {
		hc = strings.Join(db.Healthcheck.Test, " ")
	}
	m := initiateRe.FindStringSubmatch(hc)
	switch {
	case m == nil:
		problems = append(problems, "the database healthcheck does not initialise the replica set with rs.initiate({_id: ..., members: [{host: ...}]})")
	default:
		if m[1] != set {
			problems = append(problems, fmt.Sprintf("rs.initiate names the set %q, mongod runs --replSet %q", m[1], set))
		}
		if m[2] != "database" || m[3] != "27017" {
			problems = append(problems, fmt.Sprintf("rs.initiate names the member %s:%s, not database:27017 (the service name the others resolve)", m[2], m[3]))
		}
		status, initiate := strings.Index(hc, "rs.status()"), strings.Index(hc, "rs.initiate(")
		if status < 0 || status > initiate || !strings.Contains(hc, "NotYetInitialized") {
			problems = append(problems, "rs.initiate is not guarded by rs.status() failing with NotYetInitialized: it must run only once")
		}
		// An uninitialised member answers no reads, so whether its data
		// directory is new is asked of serverStatus, which counts the user
		// collections the catalog holds (catalogStats, MongoDB 5.1 on).
		if guard := initiateGuardRe.FindStringIndex(hc); guard == nil || guard[0] > initiate {
			problems = append(problems, "rs.initiate is not guarded by db.serverStatus().catalogStats finding no collections: it would start a new set over a data directory that holds data")
		}
	}
	for name, s := range d.stack.Services {
		for _, key := range []string{"MONGO_URL", "ME_CONFIG_MONGODB_URL"} {
			raw, ok := s.Environment[key]
			if !ok {
				continue
			}
			u, err := url.Parse(raw)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s %s=%q: %v", name, key, raw, err))
				continue
			}
			if u.Host != "database:27017" {
				problems = append(problems, fmt.Sprintf("%s %s=%q does not point at database:27017", name, key, raw))
			}
			if got := u.Query().Get("replicaSet"); got != set && u.Query().Get("directConnection") != "true" {
				problems = append(problems, fmt.Sprintf("%s %s=%q: replicaSet=%q, want %q", name, key, raw, got, set))
			}
		}
	}
	for _, name := range []string{"manager", "worker", "notifier"} {
		if _, ok := d.stack.Services[name].Environment["MONGO_URL"]; !ok {
			problems = append(problems, name+" has no MONGO_URL")
		}
	}
	if !hasNamedVolume(d.stack, db, "/data/db") {
		problems = append(problems, "the database's /data/db is not a named volume")
	}
	return problems
}

// hasNamedVolume says whether s mounts a volume declared in the stack at
// target.
func hasNamedVolume(st stack, s service, target string) bool {
	for _, m := range s.Volumes {
		if m.Target == target && m.Type == "volume" {
			_, declared := st.Volumes[m.Source]
			return declared
		}
	}
	return false
}

// flagValue returns the value of flag in args ("-b /data" or "-b/data").
func flagValue(args []string, flag string) string {
	for i, a := range args {
		switch {
		case a == flag && i+1 < len(args):
			return args[i+1]
		case strings.HasPrefix(a, flag+"=") && strings.HasPrefix(flag, "--"):
			return strings.TrimPrefix(a, flag+"=")
		case !strings.HasPrefix(flag, "--") && strings.HasPrefix(a, flag) && len(a) > len(flag):
			return a[len(flag):]
		}
	}
	return ""
}

// checkBinlog: beanstalkd keeps a binlog on a named volume, with an explicit
// fsync policy, and its job size limit is the manager's MAX_JOB_SIZE.
func checkBinlog(d *deployment) []string {
	q, ok := d.stack.Services["queue"]
	if !ok {
		return []string{"no queue service"}
	}
	var problems []string
	if dir := flagValue(q.Command, "-b"); dir == "" {
		problems = append(problems, fmt.Sprintf("queue command %q has no -b (binlog directory)", q.Command))
	} else if !hasNamedVolume(d.stack, q, dir) {
		problems = append(problems, fmt.Sprintf("the binlog directory %s is not a named volume", dir))
	}
	if slices.Contains(q.Command, "-F") {
		problems = append(problems, "queue runs with -F: the binlog is never fsynced")
	}
	if f := flagValue(q.Command, "-f"); f == "" {
		problems = append(problems, fmt.Sprintf("queue command %q has no explicit -f (fsync interval)", q.Command))
	} else if n, err := strconv.Atoi(f); err != nil || n < 0 {
		problems = append(problems, fmt.Sprintf("queue -f %q is not a number of milliseconds", f))
	}
	z := flagValue(q.Command, "-z")
	max := d.stack.Services["manager"].Environment["MAX_JOB_SIZE"]
	switch {
	case z == "":
		problems = append(problems, fmt.Sprintf("queue command %q has no -z (max job size)", q.Command))
	case max == "":
		problems = append(problems, "the manager's MAX_JOB_SIZE is not set, so nothing ties it to beanstalkd's -z")
	case z != max:
		problems = append(problems, fmt.Sprintf("beanstalkd -z %s differs from the manager's MAX_JOB_SIZE %s", z, max))
	}
	// One variable must move both, or they drift apart.
	if s, err := d.renderStack(map[string]string{"MAX_JOB_SIZE": "131072"}); err != nil {
		problems = append(problems, err.Error())
	} else if z, max := flagValue(s.Services["queue"].Command, "-z"), s.Services["manager"].Environment["MAX_JOB_SIZE"]; z != "131072" || max != "131072" {
		problems = append(problems, fmt.Sprintf("with MAX_JOB_SIZE=131072, beanstalkd gets -z %s and the manager %s: one variable must set both", z, max))
	}
	return problems
}

// statefulLabels are the services that own a node-local volume, each with
// the node label that pins it to the node holding that volume.
var statefulLabels = map[string]string{"queue": "jobs.beanstalkd", "database": "jobs.mongo"}

// checkStatefulPlacement: the queue and the database run only on the node
// labelled for them (placed by role, a drained task starts on another
// manager with an empty volume, and the database's healthcheck would make a
// new set there), once, never twice on one volume; the fronts and the
// registry are pinned the same way, and the walk-through sets each label.
func checkStatefulPlacement(d *deployment) []string {
	var problems []string
	for name, label := range statefulLabels {
		s := d.stack.Services[name]
		if want := "node.labels." + label + " == true"; !slices.Contains(s.Deploy.Placement.Constraints, want) {
			problems = append(problems, fmt.Sprintf("%s is placed by %q, not pinned to the node that holds its volume by %q", name, s.Deploy.Placement.Constraints, want))
		}
		if s.Deploy.Replicas != nil && *s.Deploy.Replicas != 1 {
			problems = append(problems, fmt.Sprintf("%s has %d replicas; it owns a volume, so one", name, *s.Deploy.Replicas))
		}
		for what, u := range map[string]*updateConfig{"update_config": s.Deploy.UpdateConfig, "rollback_config": s.Deploy.RollbackConfig} {
			if u == nil || u.Order != "stop-first" {
				problems = append(problems, fmt.Sprintf("%s.deploy.%s is not order: stop-first: two tasks would share its volume", name, what))
			}
		}
	}
	for variant, st := range d.fronted() {
		if f, ok := st.Services["front"]; !ok {
			problems = append(problems, variant+" has no front service")
		} else if !slices.Contains(f.Deploy.Placement.Constraints, "node.labels.jobs.front == true") {
			problems = append(problems, fmt.Sprintf("%s: the front is placed by %q, not on the node labelled jobs.front that DNS and its host ports point at", variant, f.Deploy.Placement.Constraints))
		}
	}
	r, ok := d.registry.Services["registry"]
	switch {
	case !ok:
		problems = append(problems, registryFile+" has no registry service")
	case !hasNamedVolume(d.registry, r, "/var/lib/registry"):
		problems = append(problems, "the registry's /var/lib/registry is not a named volume: a restarted registry would have lost every image")
	case !slices.Contains(r.Deploy.Placement.Constraints, "node.labels.jobs.registry == true"):
		problems = append(problems, fmt.Sprintf("the registry is placed by %q, not on the node labelled jobs.registry that holds its volume", r.Deploy.Placement.Constraints))
	}
	readme, err := d.read("README.md")
	if err != nil {
		return append(problems, err.Error())
	}
	for _, label := range []string{"jobs.beanstalkd", "jobs.mongo", "jobs.front", "jobs.registry"} {
		if !strings.Contains(readme, "--label-add "+label+"=true") {
			problems = append(problems, "the README's walk-through never labels a node "+label+"=true")
		}
	}
	return problems
}

// checkWorkers: three workers, no published port, and more stop grace than
// the worker's own shutdown grace.
func checkWorkers(d *deployment) []string {
	w, ok := d.stack.Services["worker"]
	if !ok {
		return []string{"no worker service"}
	}
	var problems []string
	if w.Deploy.Replicas == nil || *w.Deploy.Replicas != 3 {
		problems = append(problems, fmt.Sprintf("worker replicas = %v, want 3", deref(w.Deploy.Replicas)))
	}
	if len(w.Ports) > 0 {
		problems = append(problems, fmt.Sprintf("the worker publishes ports %v", w.Ports))
	}
	grace, err := parseDuration(w.Environment["WORKER_SHUTDOWN_GRACE"], 30*time.Second)
	if err != nil {
		problems = append(problems, "WORKER_SHUTDOWN_GRACE: "+err.Error())
	}
	stop, err := parseDuration(w.StopGracePeriod, 10*time.Second) // Docker's default
	if err != nil {
		problems = append(problems, "worker stop_grace_period: "+err.Error())
	}
	if stop <= grace {
		problems = append(problems, fmt.Sprintf("worker stop_grace_period %s is not longer than WORKER_SHUTDOWN_GRACE %s: Docker would kill workers mid-job", stop, grace))
	}
	return problems
}

func deref(p *int) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// parseDuration reads a Go duration or a number of seconds, as the services
// do; "" is def.
func parseDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

// checkHealthchecks: every service (all of them run for good) has an
// explicit healthcheck; the Go services' probe their own /healthz on the
// port they listen on, which is also the port they publish.
func checkHealthchecks(d *deployment) []string {
	var problems []string
	for name, s := range allServices(d) {
		hc := s.Healthcheck
		switch {
		case hc == nil:
			problems = append(problems, name+" has no healthcheck")
			continue
		case hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE":
			problems = append(problems, name+"'s healthcheck is disabled")
			continue
		case hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL":
			problems = append(problems, fmt.Sprintf("%s's healthcheck test %q does not start with CMD or CMD-SHELL", name, hc.Test))
		}
		if hc.Interval == "" || hc.Timeout == "" {
			problems = append(problems, name+"'s healthcheck has no explicit interval and timeout")
		}
	}
	for name, portVar := range goServices {
		s := d.stack.Services[name]
		p := s.Environment[portVar]
		if p == "" {
			problems = append(problems, fmt.Sprintf("%s does not set %s, so its healthcheck cannot be sure of the port", name, portVar))
			continue
		}
		want := []string{"CMD", "/usr/local/bin/healthcheck", "http://127.0.0.1:" + p + "/healthz"}
		if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, want) {
			problems = append(problems, fmt.Sprintf("%s's healthcheck is not %q", name, want))
		}
		for _, pt := range s.Ports {
			if strconv.Itoa(pt.Target) != p {
				problems = append(problems, fmt.Sprintf("%s publishes container port %d but listens on %s=%s", name, pt.Target, portVar, p))
			}
		}
	}
	return problems
}

// checkNoBuild: docker stack deploy ignores build:, so the stack files have
// none (builds are build-images.sh's job).
func checkNoBuild(d *deployment) []string {
	var problems []string
	for file, raw := range d.raws() {
		for name, s := range raw.Services {
			if _, ok := s["build"]; ok {
				problems = append(problems, fmt.Sprintf("%s: service %s has build:", file, name))
			}
		}
	}
	for variant, st := range d.fronted() {
		for name, s := range st.Services {
			if s.Build != nil {
				problems = append(problems, fmt.Sprintf("%s: service %s has build:", variant, name))
			}
		}
	}
	return problems
}

var (
	// credentialKey is an environment variable that holds a credential.
	credentialKey = regexp.MustCompile(`(?i)(PASS|PASSWORD|SECRET|TOKEN|HASH|USER|USERNAME|KEY)$`)
	// requiredRef is a value given only by a required variable.
	requiredRef = regexp.MustCompile(`^\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}$`)
	// wellKnown are credentials nobody should find in a deployment.
	wellKnown = []string{"admin", "pass", "password", "secret", "changeme", "example", "root", "toor", "test", "123456", "admin:admin", "admin:pass", "cookiesecret", "sessionsecret"}
)

// checkCredentials: every credential comes from a required variable or a
// Docker secret, no environment value is a well-known default, the API token
// is a secret file, and the consoles are reachable only through a log-in.
func checkCredentials(d *deployment) []string {
	var problems []string
	for file, raw := range d.raws() {
		for name := range raw.Services {
			for k, v := range raw.env(name) {
				if base, ok := strings.CutSuffix(k, "_FILE"); ok && credentialKey.MatchString(base) {
					if !strings.HasPrefix(v, "/run/secrets/") {
						problems = append(problems, fmt.Sprintf("%s: %s.%s=%q is not a Docker secret under /run/secrets/", file, name, k, v))
					}
					continue
				}
				if credentialKey.MatchString(k) && !requiredRef.MatchString(v) {
					problems = append(problems, fmt.Sprintf("%s: the credential %s.%s=%q is not a required variable (${VAR:?message}) or a secret", file, name, k, v))
				}
			}
		}
	}
	for name, s := range allServices(d) {
		for k, v := range s.Environment {
			if slices.Contains(wellKnown, strings.ToLower(strings.TrimSpace(v))) {
				problems = append(problems, fmt.Sprintf("%s.%s=%q is a well-known default credential", name, k, v))
			}
		}
	}
	// The API token: a secret file, mounted where API_TOKEN_FILE says.
	if sec, ok := d.stack.Secrets["api_token"]; !ok || (sec.File == "" && sec.External == nil) {
		problems = append(problems, "no api_token secret (a file or an external secret)")
	}
	for _, name := range []string{"manager", "notifier"} {
		s := d.stack.Services[name]
		if v := s.Environment["API_TOKEN"]; v != "" {
			problems = append(problems, name+" has API_TOKEN in its environment; use the secret through API_TOKEN_FILE")
		}
		file := s.Environment["API_TOKEN_FILE"]
		mounted := slices.ContainsFunc(s.Secrets, func(r secretRef) bool {
			target := r.Target
			if target == "" {
				target = r.Source
			}
			if !strings.HasPrefix(target, "/") {
				target = "/run/secrets/" + target
			}
			return r.Source == "api_token" && target == file
		})
		if !mounted {
			problems = append(problems, fmt.Sprintf("%s's API_TOKEN_FILE=%q is not the mounted api_token secret", name, file))
		}
	}
	// The consoles have no log-in of their own worth having: they must not
	// be published, and whatever proxies to them must ask for one.
	for _, name := range []string{"mongo-express", "beanstalkd-console"} {
		if s, ok := d.stack.Services[name]; !ok {
			problems = append(problems, "no "+name+" service")
		} else if len(s.Ports) > 0 {
			problems = append(problems, name+" publishes a port: it must be reached only through the log-in of the admin service")
		}
	}
	problems = append(problems, checkAdminLogin(d)...)
	return problems
}

// checkAdminLogin: every site of admin.Caddyfile that proxies asks for the
// operator's log-in.
func checkAdminLogin(d *deployment) []string {
	text, err := d.read("admin.Caddyfile")
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	blocks := caddyBlocks(text)
	login, ok := blocks["(login)"]
	if !ok || !strings.Contains(login, "basic_auth") || !strings.Contains(login, "{$ADMIN_USER} {$ADMIN_PASSWORD_HASH}") {
		problems = append(problems, "admin.Caddyfile has no (login) snippet with basic_auth {$ADMIN_USER} {$ADMIN_PASSWORD_HASH}")
	}
	proxied := 0
	for addr, body := range blocks {
		if !strings.Contains(body, "reverse_proxy") {
			continue
		}
		proxied++
		if !strings.Contains(body, "import login") && !strings.Contains(body, "basic_auth") {
			problems = append(problems, fmt.Sprintf("admin.Caddyfile site %s proxies without asking for the log-in", addr))
		}
	}
	if proxied < 2 {
		problems = append(problems, fmt.Sprintf("admin.Caddyfile proxies %d sites, want mongo-express and the beanstalkd console", proxied))
	}
	for _, name := range []string{"mongo-express:8081", "beanstalkd-console:2080"} {
		if !strings.Contains(text, "reverse_proxy "+name) {
			problems = append(problems, "admin.Caddyfile does not proxy "+name)
		}
	}
	if a, ok := d.stack.Services["admin"]; !ok || len(a.Ports) != 2 {
		problems = append(problems, "the admin service does not publish the two console ports")
	}
	return problems
}

// caddyBlocks splits a Caddyfile into its top-level blocks by their
// heading (the site address or snippet name); the global options block is
// "".
func caddyBlocks(text string) map[string]string {
	blocks := map[string]string{}
	depth, head, body := 0, "", strings.Builder{}
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if depth == 0 {
			if strings.HasSuffix(trimmed, "{") {
				head = strings.TrimSpace(strings.TrimSuffix(trimmed, "{"))
				body.Reset()
				depth = 1
			}
			continue
		}
		depth += strings.Count(trimmed, "{") - strings.Count(trimmed, "}")
		if depth == 0 {
			blocks[head] = body.String()
			continue
		}
		body.WriteString(trimmed + "\n")
	}
	return blocks
}

// checkNetwork: every service is on the encrypted overlay network only.
func checkNetwork(d *deployment) []string {
	var problems []string
	if len(d.stack.Networks) == 0 {
		problems = append(problems, "the stack declares no network")
	}
	for variant, st := range d.fronted() {
		for name, n := range st.Networks {
			if n.Driver != "overlay" {
				problems = append(problems, fmt.Sprintf("%s: network %s has driver %q, want overlay", variant, name, n.Driver))
			}
			if n.DriverOpts["encrypted"] != "true" {
				problems = append(problems, fmt.Sprintf("%s: network %s is not encrypted (driver_opts encrypted: \"true\")", variant, name))
			}
		}
		for name, s := range st.Services {
			if len(s.Networks) == 0 {
				problems = append(problems, variant+": "+name+" joins no declared network, so it lands on the default one, which is not encrypted")
			}
			for n := range s.Networks {
				if _, ok := st.Networks[n]; !ok {
					problems = append(problems, fmt.Sprintf("%s: %s joins the undeclared network %s", variant, name, n))
				}
			}
		}
	}
	return problems
}

var (
	// ourImageRef is how the stack names an image we build.
	ourImageRef = regexp.MustCompile(`^\$\{REGISTRY:-[^}]+\}/([a-z0-9-]+):\$\{TAG:\?[^}]+\}$`)
	pinnedRef   = regexp.MustCompile(`^[^:@]+(?::[^:/@]+)?:(\w[\w.-]*)$|@sha256:[0-9a-f]{64}$`)
)

// checkImages: our images are named by ${REGISTRY} and ${TAG}, both of which
// change all four, and TAG is required (build-images.sh pushes the tag it
// is given, not latest); third-party images are pinned.
func checkImages(d *deployment) []string {
	var problems []string
	for name, image := range ourImages {
		raw, _ := d.raw.Services[name]["image"].(string)
		if m := ourImageRef.FindStringSubmatch(raw); m == nil || m[1] != image {
			problems = append(problems, fmt.Sprintf("%s's image %q is not ${REGISTRY:-...}/%s:${TAG:?...}", name, raw, image))
		}
	}
	if _, err := d.render(nil, []string{"TAG"}, stackFile); err == nil {
		problems = append(problems, "the stack renders without TAG: it must be required, or nodes run a latest nobody pushed")
	} else if !strings.Contains(err.Error(), "required variable TAG is missing") {
		problems = append(problems, fmt.Sprintf("rendering without TAG failed, but not by naming it: %v", err))
	}
	script, err := d.read("build-images.sh")
	if err != nil {
		return append(problems, err.Error())
	}
	if regexp.MustCompile(`TAG=\$\{TAG:-latest\}`).MatchString(script) || !strings.Contains(script, "git rev-parse") {
		problems = append(problems, "build-images.sh does not default TAG to the commit it builds")
	}
	s, err := d.renderStack(map[string]string{"REGISTRY": "registry.deploycheck.test:5000/team", "TAG": "v9.8.7"})
	if err != nil {
		return append(problems, err.Error())
	}
	for name, image := range ourImages {
		if want := "registry.deploycheck.test:5000/team/" + image + ":v9.8.7"; s.Services[name].Image != want {
			problems = append(problems, fmt.Sprintf("with REGISTRY and TAG set, %s runs %q, want %q", name, s.Services[name].Image, want))
		}
	}
	third := allServices(d)
	third["registry ("+registryFile+")"] = d.registry.Services["registry"]
	for name, svc := range third {
		if _, ours := ourImages[name]; ours {
			continue
		}
		if _, ok := unpinnedImages[name]; ok {
			continue
		}
		m := pinnedRef.FindStringSubmatch(svc.Image)
		if m == nil || m[1] == "latest" {
			problems = append(problems, fmt.Sprintf("%s's image %q is not pinned to a release tag or digest", name, svc.Image))
		}
	}
	readme, err := d.read("README.md")
	if err != nil {
		return append(problems, err.Error())
	}
	for name := range unpinnedImages {
		if !strings.Contains(readme, "digest") || !strings.Contains(readme, d.stack.Services[name].Image) {
			problems = append(problems, fmt.Sprintf("%s's image is unpinned and the README does not say how to pin it by digest", name))
		}
	}
	return problems
}

// checkUpdates: rolling updates that keep the API and the board up, a way
// back, restart policies and resource limits everywhere.
func checkUpdates(d *deployment) []string {
	var problems []string
	for _, name := range []string{"manager", "notifier"} {
		s := d.stack.Services[name]
		if u := s.Deploy.UpdateConfig; u == nil || u.Order != "start-first" || u.FailureAction != "rollback" {
			problems = append(problems, name+".deploy.update_config is not order: start-first with failure_action: rollback")
		}
		if r := s.Deploy.RollbackConfig; r == nil || r.Order != "start-first" {
			problems = append(problems, name+".deploy.rollback_config is not order: start-first")
		}
	}
	if w := d.stack.Services["worker"]; w.Deploy.UpdateConfig == nil || w.Deploy.RollbackConfig == nil {
		problems = append(problems, "the worker has no update_config and rollback_config")
	}
	for name, s := range allServices(d) {
		if p := s.Deploy.RestartPolicy; p == nil || (p.Condition != "any" && p.Condition != "on-failure") {
			problems = append(problems, name+" has no restart policy")
		}
		if s.Deploy.Resources.Limits.Memory == "" || s.Deploy.Resources.Limits.Cpus == "" {
			problems = append(problems, name+" has no cpu and memory limits")
		}
		if s.Deploy.UpdateConfig == nil {
			problems = append(problems, name+" has no update_config")
		}
	}
	return problems
}

var (
	fromRe   = regexp.MustCompile(`(?m)^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$`)
	argRe    = regexp.MustCompile(`(?m)^ARG\s+(\w+)=(\S+)\s*$`)
	goBuilds = regexp.MustCompile(`go build ((?:-\S+(?:="[^"]*")?\s+)+)-o\b`)
)

// checkDockerfile: static binaries, non-root distroless final stages for the
// three services with a healthcheck through the probe, and smoke.sh building
// with the very same flags.
func checkDockerfile(d *deployment) []string {
	text, err := d.read("Dockerfile")
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	args := map[string]string{}
	for _, m := range argRe.FindAllStringSubmatch(text, -1) {
		args[m[1]] = m[2]
	}
	stages := map[string]string{} // name -> its text
	locs := fromRe.FindAllStringSubmatchIndex(text, -1)
	for i, loc := range locs {
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		name := ""
		if loc[4] >= 0 {
			name = text[loc[4]:loc[5]]
		}
		stages[name] = text[loc[0]:end]
	}
	build, ok := stages["build"]
	if !ok {
		return []string{"Dockerfile has no stage named build"}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "./tools/healthcheck"} {
		if !strings.Contains(build, want) {
			problems = append(problems, "the build stage does not use "+want)
		}
	}
	for _, name := range []string{"manager", "worker", "notifier"} {
		stage, ok := stages[name]
		if !ok {
			problems = append(problems, "Dockerfile has no target "+name)
			continue
		}
		base := fromRe.FindStringSubmatch(stage)[1]
		if strings.HasPrefix(base, "${") {
			base = args[strings.Trim(base, "${}")]
		}
		if !strings.Contains(base, "distroless/static") && base != "scratch" {
			problems = append(problems, fmt.Sprintf("target %s is based on %q, not a distroless static or scratch image", name, base))
		}
		user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindStringSubmatch(stage)
		if user == nil || user[1] == "root" || user[1] == "0" || strings.HasPrefix(user[1], "0:") {
			problems = append(problems, "target "+name+" does not switch to a non-root USER")
		}
		if !regexp.MustCompile(`(?m)^HEALTHCHECK .*\n?.*CMD \["/usr/local/bin/healthcheck", "http://127\.0\.0\.1:[^"]*/healthz"\]`).MatchString(stage) {
			problems = append(problems, "target "+name+" has no HEALTHCHECK through /usr/local/bin/healthcheck on /healthz")
		}
		if !strings.Contains(stage, "COPY --from=build /out/healthcheck /usr/local/bin/healthcheck") ||
			!strings.Contains(stage, "COPY --from=build /out/"+name+" ") {
			problems = append(problems, "target "+name+" does not copy its binary and the probe from the build stage")
		}
	}
	m := goBuilds.FindStringSubmatch(build)
	if m == nil {
		return append(problems, "no go build ... -o in the build stage")
	}
	smoke, err := d.read("smoke.sh")
	if err != nil {
		return append(problems, err.Error())
	}
	want := "CGO_ENABLED=0 go build " + m[1]
	if !strings.Contains(smoke, want) {
		problems = append(problems, fmt.Sprintf("smoke.sh does not build with the Dockerfile's flags: %q", want))
	}
	bd, err := d.read("beanstalkd.Dockerfile")
	if err != nil {
		return append(problems, err.Error())
	}
	// The binlog volume keeps the owner it was first written by: the user's
	// ids must not depend on what the package's adduser picks in a rebuild.
	if user := regexp.MustCompile(`(?m)^USER\s+(\d+):(\d+)\s*$`).FindStringSubmatch(bd); user == nil || user[1] == "0" {
		problems = append(problems, "beanstalkd.Dockerfile does not run as a fixed, non-root numeric USER uid:gid")
	} else if !strings.Contains(bd, "useradd --system --uid "+user[1]) || !strings.Contains(bd, "groupadd --system --gid "+user[2]) {
		problems = append(problems, fmt.Sprintf("beanstalkd.Dockerfile runs as %s:%s but does not create the beanstalkd user and group with those ids before installing the package", user[1], user[2]))
	}
	if !strings.Contains(bd, "HEALTHCHECK") {
		problems = append(problems, "beanstalkd.Dockerfile has no HEALTHCHECK")
	}
	return problems
}

// topReadme is the configuration table of the services
// (docs/configuration.md), seen from deploy/.
const topReadme = "../docs/configuration.md"

// checkDocumented: the top README's table lists every variable the services read
// (string literals like NAME in their configuration code), and the stack
// sets no variable a service does not read (a typo would go unnoticed).
func checkDocumented(d *deployment) []string {
	var problems []string
	shared, err := envNames(filepath.Join(d.root, "pkg", "config", "config.go"))
	if err != nil {
		return []string{err.Error()}
	}
	if len(shared) == 0 {
		problems = append(problems, "found no variable names in pkg/config/config.go")
	}
	// The table is docs/configuration.md, beside deploy/.
	readme, err := d.read(topReadme)
	if err != nil {
		return append(problems, err.Error())
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "|") {
			for _, m := range regexp.MustCompile("`([A-Z][A-Z0-9_]+)`").FindAllStringSubmatch(line, -1) {
				documented[m[1]] = true
			}
		}
	}
	for name := range goServices {
		files, _ := filepath.Glob(filepath.Join(d.root, "services", name, "internal", "config", "*.go"))
		files = slices.DeleteFunc(files, func(f string) bool { return strings.HasSuffix(f, "_test.go") })
		if len(files) == 0 {
			problems = append(problems, fmt.Sprintf("services/%s/internal/config has no Go files to read its variables from", name))
			continue
		}
		reads := slices.Clone(shared)
		for _, f := range files {
			names, err := envNames(f)
			if err != nil {
				problems = append(problems, err.Error())
			}
			reads = append(reads, names...)
		}
		for _, v := range reads {
			if !documented[v] {
				problems = append(problems, fmt.Sprintf("%s reads %s, which docs/configuration.md does not list", name, v))
			}
		}
		for k := range d.stack.Services[name].Environment {
			if !slices.Contains(reads, k) {
				problems = append(problems, fmt.Sprintf("the stack sets %s on %s, which %s does not read", k, name, name))
			}
		}
	}
	return problems
}

var envNameRe = regexp.MustCompile(`^[A-Z][A-Z0-9_]+$`)

// envNames returns the string literals in a Go file that look like
// environment variable names.
func envNames(path string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		if s, err := strconv.Unquote(lit.Value); err == nil && envNameRe.MatchString(s) && !slices.Contains(names, s) {
			names = append(names, s)
		}
		return true
	})
	return names, nil
}

var versionedName = regexp.MustCompile(`\$\{[A-Z][A-Z0-9_]*_VERSION:-[^}]+\}`)

// checkFiles: the files the stacks reference exist under names that can be
// moved on (Swarm cannot update a secret or config in place), and the
// scripts parse.
func checkFiles(d *deployment) []string {
	var problems []string
	for file, raw := range d.raws() {
		for kind, objs := range map[string]map[string]map[string]any{"secret": raw.Secrets, "config": raw.Configs} {
			for name, obj := range objs {
				if n, _ := obj["name"].(string); !versionedName.MatchString(n) {
					problems = append(problems, fmt.Sprintf("%s: %s %s has no name with a ${..._VERSION} in it, so a changed file cannot be deployed", file, kind, name))
				}
			}
		}
	}
	for variant, st := range d.fronted() {
		for name, c := range st.Configs {
			if _, err := os.Stat(c.File); err != nil {
				problems = append(problems, fmt.Sprintf("%s: config %s: %v", variant, name, err))
			}
		}
	}
	for _, script := range []string{"build-images.sh", "smoke.sh"} {
		path := filepath.Join(d.dir, script)
		info, err := os.Stat(path)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if d.dir == filepath.Join(d.root, "deploy") && info.Mode()&0o111 == 0 {
			problems = append(problems, script+" is not executable")
		}
		if out, err := execOutput("bash", "-n", path); err != nil {
			problems = append(problems, fmt.Sprintf("bash -n %s: %v: %s", script, err, out))
		}
	}
	return problems
}
