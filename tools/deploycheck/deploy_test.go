package deploycheck

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDeployment renders deploy/docker-compose.yml (alone and with the TLS
// front) with `docker stack config`, which validates it against the stack
// file schema, and runs every check on it.
func TestDeployment(t *testing.T) {
	t.Parallel()
	requireDocker(t)
	root := repoRoot(t)
	d, err := load(root, filepath.Join(root, "deploy"), operatorEnv(t))
	require.NoError(t, err, "docker stack config must accept the stack files")
	require.NotEmpty(t, d.stack.Services)
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range c.fn(d) {
				t.Error(p)
			}
		})
	}
}

// A mutation is a mistake made in a copy of deploy/ that one check must
// catch: every check above can fail.
type mutation struct {
	name    string
	file    string // in deploy/
	service string // limits the replacement to this service's block of the stack file
	old     string
	new     string
	all     bool // replace every occurrence, not only the first
	check   string
}

var mutations = []mutation{
	{name: "no --replSet", file: stackFile, old: `"--replSet", "rs0", `, check: "replica set"},
	{name: "URL without the set", file: stackFile, old: "MONGO_URL: mongodb://database:27017/?replicaSet=rs0", new: "MONGO_URL: mongodb://database:27017/", check: "replica set"},
	{name: "set never initialised", file: stackFile, old: "rs.initiate(", new: "printjson(", check: "replica set"},
	{name: "initialise every time", file: stackFile, old: "if (e.codeName !== 'NotYetInitialized') throw e;", check: "replica set"},
	{name: "member not resolvable", file: stackFile, old: "host: 'database:27017'", new: "host: 'localhost:27017'", check: "replica set"},
	{name: "database data not on a volume", file: stackFile, old: "      - mongo-data:/data/db\n", check: "replica set"},
	{name: "no binlog", file: stackFile, old: `"-b", "/data", `, check: "binlog"},
	{name: "binlog not on the volume", file: stackFile, old: "      - beanstalkd:/data\n", new: "      - beanstalkd:/var/lib/beanstalkd\n", check: "binlog"},
	{name: "no fsync policy", file: stackFile, old: `"-f", "${BEANSTALKD_FSYNC_MS:-0}", `, check: "binlog"},
	{name: "-z apart from MAX_JOB_SIZE", file: stackFile, old: `"-z", "${MAX_JOB_SIZE:-65535}"`, new: `"-z", "1048576"`, check: "binlog"},
	{name: "-z pinned to the default", file: stackFile, old: `"-z", "${MAX_JOB_SIZE:-65535}"`, new: `"-z", "65535"`, check: "binlog"},
	{name: "queue placed by role", file: stackFile, service: "queue", old: "          - node.labels.jobs.beanstalkd == true\n", new: "          - node.role == manager\n", check: "stateful placement"},
	{name: "database placed by role", file: stackFile, service: "database", old: "          - node.labels.jobs.mongo == true\n", new: "          - node.role == manager\n", check: "stateful placement"},
	{name: "tls front placed by role", file: tlsFile, old: "          - node.labels.jobs.front == true\n", new: "          - node.role == manager\n", check: "stateful placement"},
	{name: "http front anywhere", file: httpFile, old: "      placement:\n        constraints:\n          - node.labels.jobs.front == true\n", check: "stateful placement"},
	{name: "registry without volume", file: registryFile, old: "    volumes:\n      - registry-data:/var/lib/registry\n", check: "stateful placement"},
	{name: "registry anywhere", file: registryFile, old: "          - node.labels.jobs.registry == true\n", new: "          - node.role == manager\n", check: "stateful placement"},
	{name: "walk-through without labels", file: "README.md", old: "--label-add jobs.mongo=true", new: "--label-add jobs.data=true", all: true, check: "stateful placement"},
	{name: "initiate over a used data directory", file: stackFile, old: "if (!c || c.collections + c.views > 0) {", new: "if (false) {", check: "replica set"},
	{name: "notifier id from the hostname", file: stackFile, old: "      NOTIFIER_ID: notifier-{{.Task.Slot}}\n", check: "notifier id"},
	{name: "notifier id per container", file: stackFile, old: "NOTIFIER_ID: notifier-{{.Task.Slot}}", new: "NOTIFIER_ID: notifier-{{.Task.ID}}", check: "notifier id"},
	{name: "manager published by the stack", file: stackFile, service: "manager", old: "    secrets:\n", new: "    ports: [\"8080:8080\"]\n    secrets:\n", check: "fronts"},
	{name: "notifier published beside tls", file: tlsFile, old: "configs:\n  front_caddyfile:", new: "  notifier:\n    ports: [\"8083:8083\"]\n\nconfigs:\n  front_caddyfile:", check: "fronts"},
	{name: "front behind the routing mesh", file: httpFile, old: "        published: ${MANAGER_PORT:-8080}\n        protocol: tcp\n        mode: host", new: "        published: ${MANAGER_PORT:-8080}\n        protocol: tcp\n        mode: ingress", check: "fronts"},
	{name: "reset tag in an overlay", file: tlsFile, old: "  front:\n", new: "  manager:\n    ports: !reset []\n  front:\n", check: "fronts"},
	{name: "trust every private range", file: stackFile, old: "MANAGER_TRUSTED_PROXIES: ${STACK_SUBNET:-10.231.0.0/20}", new: "MANAGER_TRUSTED_PROXIES: 10.0.0.0/8,172.16.0.0/12,192.168.0.0/16", check: "fronts"},
	{name: "trusted subnet fixed apart from the network", file: stackFile, old: "MANAGER_TRUSTED_PROXIES: ${STACK_SUBNET:-10.231.0.0/20}", new: "MANAGER_TRUSTED_PROXIES: 10.231.0.0/20", check: "fronts"},
	{name: "no fixed subnet", file: stackFile, old: "    ipam:\n      config:\n        - subnet: ${STACK_SUBNET:-10.231.0.0/20}\n", check: "fronts"},
	{name: "subnet over the ingress network", file: stackFile, old: "${STACK_SUBNET:-10.231.0.0/20}", new: "${STACK_SUBNET:-10.0.0.0/16}", all: true, check: "fronts"},
	{name: "board api through the notifier", file: "http.Caddyfile", old: "\thandle_path /api/* {\n\t\treverse_proxy manager:8080\n\t}\n", check: "fronts"},
	{name: "front trusts clients", file: "Caddyfile", old: "\temail {$ACME_EMAIL}\n", new: "\temail {$ACME_EMAIL}\n\tservers {\n\t\ttrusted_proxies static private_ranges\n\t}\n", check: "fronts"},
	{name: "board links on fixed ports", file: stackFile, old: "${PUBLIC_HOST:-localhost}:${MONGO_EXPRESS_PORT:-8081}", new: "${PUBLIC_HOST:-localhost}:8081", check: "board links"},
	{name: "database start-first", file: stackFile, service: "database", old: "order: stop-first", new: "order: start-first", check: "stateful placement"},
	{name: "two workers", file: stackFile, old: "replicas: 3 #", new: "replicas: 2 #", check: "workers"},
	{name: "workers killed mid-job", file: stackFile, old: "stop_grace_period: 40s", new: "stop_grace_period: 30s", check: "workers"},
	{name: "worker publishes", file: stackFile, service: "worker", old: "    stop_grace_period: 40s\n", new: "    stop_grace_period: 40s\n    ports: [\"8084:8084\"]\n", check: "workers"},
	{name: "queue without healthcheck", file: stackFile, old: `      test: ["CMD", "/usr/local/bin/beanstalkd-healthcheck"]`, new: "      disable: true", check: "healthchecks"},
	{name: "worker probes the wrong port", file: stackFile, old: "http://127.0.0.1:8084/healthz", new: "http://127.0.0.1:8080/healthz", check: "healthchecks"},
	{name: "caddy without healthcheck", file: tlsFile, old: `      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8090/healthz"]`, new: "      disable: true", check: "healthchecks"},
	{name: "build in the stack", file: stackFile, service: "worker", old: "    image: ", new: "    build: .\n    image: ", check: "no build"},
	{name: "literal console user", file: stackFile, old: "${ADMIN_USER:?set ADMIN_USER to the console login name}", new: "admin", check: "credentials"},
	{name: "mongo-express default password", file: stackFile, old: `      ME_CONFIG_BASICAUTH_ENABLED: "false"`, new: "      ME_CONFIG_BASICAUTH_PASSWORD: pass", check: "credentials"},
	{name: "token in the environment", file: stackFile, service: "manager", old: "API_TOKEN_FILE: /run/secrets/api_token", new: "API_TOKEN: ${API_TOKEN:-}", check: "credentials"},
	{name: "mongo-express published", file: stackFile, old: "    image: mongo-express:1.0.2\n", new: "    image: mongo-express:1.0.2\n    ports: [\"8081:8081\"]\n", check: "credentials"},
	{name: "console without log-in", file: "admin.Caddyfile", old: "\timport login\n\treverse_proxy beanstalkd-console:2080", new: "\treverse_proxy beanstalkd-console:2080", check: "credentials"},
	{name: "hyphen in a required message", file: stackFile, old: "${ADMIN_USER:?set ADMIN_USER to the console login name}", new: "${ADMIN_USER:?set ADMIN_USER to the console log-in name}", check: "required variables"},
	{name: "session secret optional", file: stackFile, old: "${ME_SESSION_SECRET:?set ME_SESSION_SECRET to a random string, see deploy/README.md}", new: "${ME_SESSION_SECRET:-}", all: true, check: "required variables"},
	{name: "domain optional", file: tlsFile, old: "${DOMAIN:?set DOMAIN to the name the board is served on}", new: "${DOMAIN:-localhost}", check: "required variables"},
	{name: "network not encrypted", file: stackFile, old: `encrypted: "true"`, new: `encrypted: "false"`, check: "network"},
	{name: "bridge by default", file: stackFile, old: "driver: ${NETWORK_DRIVER:-overlay}", new: "driver: ${NETWORK_DRIVER:-bridge}", check: "network"},
	{name: "service off the network", file: stackFile, service: "worker", old: "    networks:\n      - internal\n", check: "network"},
	{name: "fixed registry", file: stackFile, old: "${REGISTRY:-localhost:5000}/jobs-worker:", new: "localhost:5000/jobs-worker:", check: "images"},
	{name: "fixed tag", file: stackFile, old: "${REGISTRY:-localhost:5000}/jobs-manager:${TAG:?set TAG to the tag of the images you built and pushed, see deploy/README.md}", new: "${REGISTRY:-localhost:5000}/jobs-manager:latest", check: "images"},
	{name: "tag defaults to latest", file: stackFile, old: "${TAG:?set TAG to the tag of the images you built and pushed, see deploy/README.md}", new: "${TAG:-latest}", all: true, check: "images"},
	{name: "build-images tags latest", file: "build-images.sh", old: "REGISTRY=${REGISTRY:-localhost:5000}\n", new: "REGISTRY=${REGISTRY:-localhost:5000}\nTAG=${TAG:-latest}\n", check: "images"},
	{name: "unpinned registry", file: registryFile, old: "image: registry:2.8", new: "image: registry", check: "images"},
	{name: "unpinned mongo", file: stackFile, old: "image: mongo:7.0", new: "image: mongo", check: "images"},
	{name: "caddy latest", file: tlsFile, old: "image: caddy:2.10", new: "image: caddy:latest", check: "images"},
	{name: "manager stop-first", file: stackFile, service: "manager", old: "order: start-first", new: "order: stop-first", check: "updates"},
	{name: "notifier without rollback", file: stackFile, service: "notifier", old: "      rollback_config:\n        parallelism: 1\n        order: start-first\n", check: "updates"},
	{name: "no memory limit", file: stackFile, service: "manager", old: "          memory: 256M\n", check: "updates"},
	{name: "manager image runs as root", file: "Dockerfile", old: "USER 65532:65532\nEXPOSE 8080", new: "EXPOSE 8080", check: "dockerfile"},
	{name: "cgo binaries", file: "Dockerfile", old: "CGO_ENABLED=0 GOOS", new: "GOOS", check: "dockerfile"},
	{name: "worker image on debian", file: "Dockerfile", old: "FROM ${RUNTIME_IMAGE} AS worker", new: "FROM debian:bookworm-slim AS worker", check: "dockerfile"},
	{name: "notifier without healthcheck", file: "Dockerfile", old: `CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:${NOTIFIER_LISTEN_PORT:-8083}/healthz"]`, new: `CMD ["true"]`, check: "dockerfile"},
	{name: "beanstalkd uid from the package", file: "beanstalkd.Dockerfile", old: "USER 11300:11300", new: "USER beanstalkd", check: "dockerfile"},
	{name: "beanstalkd uid not created", file: "beanstalkd.Dockerfile", old: "    groupadd --system --gid 11300 beanstalkd; \\\n", check: "dockerfile"},
	{name: "smoke builds differently", file: "smoke.sh", old: `-ldflags="-s -w" -o "$work/bin/"`, new: `-o "$work/bin/"`, check: "dockerfile"},
	{name: "variable missing from the table", file: topReadme, old: "| `WORKER_RETRY_MAX` |", new: "| WORKER_RETRY_MAX |", check: "documented"},
	{name: "shared variable missing from the table", file: topReadme, old: "| `MONGO_COLLECTION` |", new: "| MONGO_COLLECTION |", check: "documented"},
	{name: "typo in the stack", file: stackFile, old: "WORKER_TUBES: ${WORKER_TUBES:-default}", new: "WORKER_TUBE: ${WORKER_TUBES:-default}", check: "documented"},
	{name: "config not versioned", file: stackFile, old: "    name: jobs_admin_caddyfile_${CONFIG_VERSION:-1}\n", check: "files"},
	{name: "missing Caddyfile", file: tlsFile, old: "file: ./Caddyfile", new: "file: ./Caddyfile.missing", check: "files"},
	{name: "same tag leaves tasks alone", file: "README.md", old: "What a redeploy changes:", new: "Redeploying the same tag leaves running tasks alone. What a redeploy changes:", check: "operations"},
	{name: "dump of jobs only", file: "README.md", old: `--db "${MONGO_DB:-jobs}"`, new: "--db jobs", check: "operations"},
	{name: "no binlog restore", file: "README.md", old: "tar -xzf /backup/beanstalkd-", new: "tar -x /backup/beanstalkd-", check: "operations"},
	{name: "no logs", file: "README.md", old: "docker service logs", new: "docker logs", all: true, check: "operations"},
	{name: "no quorum recovery", file: "README.md", old: "docker swarm init --force-new-cluster", new: "docker swarm init", check: "operations"},
	{name: "no forced update", file: "README.md", old: "docker service update --force", new: "docker service update", check: "operations"},
	{name: "file not in the README", file: "README.md", old: "`registry.yml`", new: "registry.yml", all: true, check: "operations"},
}

// TestChecksCatchMistakes makes each mutation in a copy of deploy/ and
// requires its check to report it, so no check passes whatever it is given.
func TestChecksCatchMistakes(t *testing.T) {
	t.Parallel()
	requireDocker(t)
	root := repoRoot(t)
	env := operatorEnv(t)
	byName := map[string]check{}
	for _, c := range checks {
		byName[c.name] = c
	}
	covered := map[string]bool{}
	for _, m := range mutations {
		c, ok := byName[m.check]
		require.True(t, ok, "mutation %q names the unknown check %q", m.name, m.check)
		covered[m.check] = true
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			dir := copyDir(t, filepath.Join(root, "deploy"))
			require.NoError(t, m.apply(dir), "the mutation no longer applies to deploy/%s: update it", m.file)
			d, err := load(root, dir, env)
			require.NoError(t, err, "the mutated stack must still render, so that the check (not the schema) catches it")
			problems := c.fn(d)
			require.NotEmpty(t, problems, "check %q did not notice %q", m.check, m.name)
			t.Logf("%s: %s", m.check, strings.Join(problems, "; "))
		})
	}
	for _, c := range checks {
		require.True(t, covered[c.name], "no mutation shows that check %q can fail", c.name)
	}
}

// apply makes the mutation in dir.
func (m mutation) apply(dir string) error {
	path := filepath.Join(dir, m.file)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(b)
	start, end := 0, len(text)
	if m.service != "" {
		if start, end, err = serviceBlock(text, m.service); err != nil {
			return err
		}
	}
	part := text[start:end]
	if !strings.Contains(part, m.old) {
		return fmt.Errorf("%w: %q", errNotFound, m.old)
	}
	n := 1
	if m.all {
		n = -1
	}
	text = text[:start] + strings.Replace(part, m.old, m.new, n) + text[end:]
	return os.WriteFile(path, []byte(text), 0o644)
}

// TestComposeAcceptsTheStack: the same file is meant for `docker compose
// up` too, whose parser is stricter in places than the stack loader.
func TestComposeAcceptsTheStack(t *testing.T) {
	t.Parallel()
	requireDocker(t)
	if out, err := execOutput("docker", "compose", "version"); err != nil {
		t.Skipf("the docker compose plugin is not installed here (%v: %s), so only docker stack config validated the file", err, out)
	}
	root := repoRoot(t)
	env := operatorEnv(t)
	for _, files := range [][]string{{stackFile}, {stackFile, httpFile}, {stackFile, tlsFile}, {registryFile}} {
		args := []string{"compose", "--project-directory", filepath.Join(root, "deploy")}
		for _, f := range files {
			args = append(args, "-f", filepath.Join(root, "deploy", f))
		}
		args = append(args, "config", "--quiet")
		cmd := exec.Command("docker", args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "NETWORK_DRIVER=bridge"}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "docker %s:\n%s", strings.Join(args, " "), out)
	}
}

// TestCaddyfilesAdapt: both Caddyfiles parse, when a caddy binary is here to
// say so.
func TestCaddyfilesAdapt(t *testing.T) {
	t.Parallel()
	caddy, err := exec.LookPath("caddy")
	if err != nil {
		t.Skip("no caddy binary on PATH, so the Caddyfiles were not parsed; the images use caddy:2.10")
	}
	root := repoRoot(t)
	for _, f := range []string{"Caddyfile", "http.Caddyfile", "admin.Caddyfile"} {
		cmd := exec.Command(caddy, "adapt", "--adapter", "caddyfile", "--config", filepath.Join(root, "deploy", f))
		cmd.Env = append(os.Environ(), "DOMAIN=jobs.deploycheck.test", "ACME_EMAIL=ops@deploycheck.test",
			"ADMIN_USER=ops", "ADMIN_PASSWORD_HASH=$2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "caddy adapt %s:\n%s", f, out)
		require.NotContains(t, string(out), "{$", "%s: a variable was left unexpanded", f)
	}
}

// execOutput runs a command and returns its combined output.
func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
