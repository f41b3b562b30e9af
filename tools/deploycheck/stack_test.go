package deploycheck

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The files under test, in deploy/.
const (
	stackFile    = "docker-compose.yml"
	httpFile     = "docker-compose.http.yml"
	tlsFile      = "docker-compose.tls.yml"
	registryFile = "registry.yml"
)

// stack is the part of a rendered stack file (the output of `docker stack
// config`, interpolated and normalised) that the checks read.
type stack struct {
	Services map[string]service `yaml:"services"`
	Networks map[string]network `yaml:"networks"`
	Volumes  map[string]any     `yaml:"volumes"`
	Secrets  map[string]fileRef `yaml:"secrets"`
	Configs  map[string]fileRef `yaml:"configs"`
}

type service struct {
	Image           string            `yaml:"image"`
	Build           any               `yaml:"build"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Healthcheck     *healthcheck      `yaml:"healthcheck"`
	Deploy          deploySpec        `yaml:"deploy"`
	Ports           []port            `yaml:"ports"`
	Volumes         []mount           `yaml:"volumes"`
	Networks        map[string]any    `yaml:"networks"`
	Secrets         []secretRef       `yaml:"secrets"`
	Configs         []secretRef       `yaml:"configs"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
}

type healthcheck struct {
	Test     []string `yaml:"test"`
	Disable  bool     `yaml:"disable"`
	Interval string   `yaml:"interval"`
	Timeout  string   `yaml:"timeout"`
	Retries  *int     `yaml:"retries"`
}

type ipam struct {
	Config []struct {
		Subnet string `yaml:"subnet"`
	} `yaml:"config"`
}

type deploySpec struct {
	Mode           string         `yaml:"mode"`
	Replicas       *int           `yaml:"replicas"`
	EndpointMode   string         `yaml:"endpoint_mode"`
	Placement      placement      `yaml:"placement"`
	UpdateConfig   *updateConfig  `yaml:"update_config"`
	RollbackConfig *updateConfig  `yaml:"rollback_config"`
	RestartPolicy  *restartPolicy `yaml:"restart_policy"`
	Resources      resources      `yaml:"resources"`
}

type placement struct {
	Constraints []string `yaml:"constraints"`
}

type updateConfig struct {
	Parallelism   *int   `yaml:"parallelism"`
	Order         string `yaml:"order"`
	FailureAction string `yaml:"failure_action"`
}

type restartPolicy struct {
	Condition string `yaml:"condition"`
}

type resources struct {
	Limits struct {
		Cpus   string `yaml:"cpus"`
		Memory string `yaml:"memory"`
	} `yaml:"limits"`
}

type port struct {
	Target    int    `yaml:"target"`
	Published any    `yaml:"published"`
	Mode      string `yaml:"mode"`
}

type mount struct {
	Type   string `yaml:"type"`
	Source string `yaml:"source"`
	Target string `yaml:"target"`
}

type secretRef struct {
	Source string `yaml:"source"`
	Target string `yaml:"target"`
}

type network struct {
	Driver     string            `yaml:"driver"`
	DriverOpts map[string]string `yaml:"driver_opts"`
	External   any               `yaml:"external"`
	Ipam       ipam              `yaml:"ipam"`
}

type fileRef struct {
	File     string `yaml:"file"`
	External any    `yaml:"external"`
}

// rawStack is a stack file as written, before interpolation: the place to
// see how a value is given (a literal, a variable, a required variable).
type rawStack struct {
	Services map[string]map[string]any `yaml:"services"`
	Secrets  map[string]map[string]any `yaml:"secrets"`
	Configs  map[string]map[string]any `yaml:"configs"`
}

// env returns the service's environment as written, as a map, whichever of
// the two compose forms (map or KEY=VALUE list) the file uses.
func (r rawStack) env(name string) map[string]string {
	out := map[string]string{}
	switch e := r.Services[name]["environment"].(type) {
	case map[string]any:
		for k, v := range e {
			if v == nil {
				out[k] = ""
			} else {
				out[k] = fmt.Sprint(v)
			}
		}
	case []any:
		for _, item := range e {
			k, v, _ := strings.Cut(fmt.Sprint(item), "=")
			out[k] = v
		}
	}
	return out
}

// deployment is deploy/ (or a mutated copy of it) with its stack file
// rendered by the docker client.
type deployment struct {
	root     string            // the repository root, for the services' sources
	dir      string            // the deploy directory under test
	env      map[string]string // the variables the stack is rendered with
	stack    stack             // docker-compose.yml, rendered
	http     stack             // docker-compose.yml + docker-compose.http.yml, rendered
	tls      stack             // docker-compose.yml + docker-compose.tls.yml, rendered
	registry stack             // registry.yml, rendered
	raw      rawStack          // docker-compose.yml as written
	rawHTTP  rawStack          // docker-compose.http.yml as written
	rawTLS   rawStack          // docker-compose.tls.yml as written
}

// fronted are the two ways the stack is deployed, each with one front,
// rendered: every service of a deployment is in one of them.
func (d *deployment) fronted() map[string]stack {
	return map[string]stack{stackFile + " + " + httpFile: d.http, stackFile + " + " + tlsFile: d.tls}
}

// raws are the stack files as written, by name.
func (d *deployment) raws() map[string]rawStack {
	return map[string]rawStack{stackFile: d.raw, httpFile: d.rawHTTP, tlsFile: d.rawTLS}
}

// load renders and parses the deployment in dir with env.
func load(root, dir string, env map[string]string) (*deployment, error) {
	d := &deployment{root: root, dir: dir, env: env}
	out, err := d.render(nil, nil, stackFile)
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(out, &d.stack); err != nil {
		return nil, fmt.Errorf("parse rendered %s: %w", stackFile, err)
	}
	for _, r := range []struct {
		files []string
		dst   *stack
	}{
		{[]string{stackFile, httpFile}, &d.http},
		{[]string{stackFile, tlsFile}, &d.tls},
		{[]string{registryFile}, &d.registry},
	} {
		if out, err = d.render(nil, nil, r.files...); err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(out, r.dst); err != nil {
			return nil, fmt.Errorf("parse rendered %s: %w", strings.Join(r.files, " + "), err)
		}
	}
	for name, dst := range map[string]*rawStack{stackFile: &d.raw, httpFile: &d.rawHTTP, tlsFile: &d.rawTLS} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(b, dst); err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
	}
	return d, nil
}

// render runs `docker stack config` on files (in d.dir) with d.env, plus
// set, less unset, and nothing else from this process's environment, so a
// developer's exported TAG cannot change the outcome.
func (d *deployment) render(set map[string]string, unset []string, files ...string) ([]byte, error) {
	args := []string{"stack", "config"}
	for _, f := range files {
		args = append(args, "-c", filepath.Join(d.dir, f))
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range d.env {
		if _, over := set[k]; !over && !slices.Contains(unset, k) {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	cmd := exec.Command("docker", args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// renderStack is render of the stack file alone, parsed.
func (d *deployment) renderStack(set map[string]string) (stack, error) {
	var s stack
	out, err := d.render(set, nil, stackFile)
	if err != nil {
		return s, err
	}
	return s, yaml.Unmarshal(out, &s)
}

func (d *deployment) read(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, name))
	return string(b), err
}

// requireDocker skips the test when there is no docker client to render the
// stack file with. No engine is needed.
func requireDocker(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("the docker client is not on PATH, so the stack file cannot be rendered (`docker stack config` needs only the client, no engine): " + err.Error())
	}
}

// repoRoot is the repository root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("no go.work at %s: %v", root, err)
	}
	return root
}

// operatorEnv is what an operator exports before deploying: the required
// credentials (test values, none a well-known default) and the API token
// secret's file.
func operatorEnv(t *testing.T) map[string]string {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "api_token")
	if err := os.WriteFile(tokenFile, []byte(randomHex(t, 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"ADMIN_USER":            "ops-" + randomHex(t, 3),
		"ADMIN_PASSWORD_HASH":   "$2a$14$" + randomHex(t, 26),
		"ME_SESSION_SECRET":     randomHex(t, 32),
		"API_TOKEN_SECRET_FILE": tokenFile,
		"TAG":                   "deploycheck-" + randomHex(t, 4),
		"DOMAIN":                "jobs.deploycheck.test",
		"ACME_EMAIL":            "ops@deploycheck.test",
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// copyDir copies the regular files of src (not its subdirectories, which
// hold nothing the checks read) into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	// dst/.. gets a copy of the configuration table, which checks read
	// as ../docs/configuration.md, as they read the real one from deploy/.
	dst := filepath.Join(t.TempDir(), "deploy")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(src, topReadme))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, topReadme)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, topReadme), readme, 0o644); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// serviceBlock returns the start and end offsets of service name's block in
// a stack file's text: from "  name:" to the next line indented by two
// spaces or less.
func serviceBlock(text, name string) (int, int, error) {
	head := "\n  " + name + ":\n"
	start := strings.Index(text, head)
	if start < 0 {
		return 0, 0, fmt.Errorf("no service %q in the stack file", name)
	}
	end := len(text)
	lines := strings.SplitAfter(text[start+len(head):], "\n")
	off := start + len(head)
	for _, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if trimmed != "" && trimmed != "\n" && !strings.HasPrefix(trimmed, "#") && len(l)-len(trimmed) <= 2 {
			end = off
			break
		}
		off += len(l)
	}
	return start, end, nil
}

var errNotFound = errors.New("text to replace not found")
