package deploycheck

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// connectionVars are what the stack sets to reach its own network (service
// names, ports inside the containers, the secret's mount point); the test
// points them at its local servers instead and keeps everything else.
var connectionVars = []string{
	"BEANSTALK_HOST", "BEANSTALK_PORT", "MONGO_URL", "MONGO_DB",
	"MANAGER_LISTEN_PORT", "WORKER_METRICS_PORT", "NOTIFIER_LISTEN_PORT",
	"MANAGER_URL", "API_TOKEN_FILE",
}

// TestStackEnvironmentRunsTheServices starts the real manager, worker and
// notifier binaries with the environment the stack (with the TLS front)
// gives them, less only the addresses, and sends a job through: a value the
// services refuse (a bad duration, list or URL) fails here, not at deploy
// time.
func TestStackEnvironmentRunsTheServices(t *testing.T) {
	t.Parallel()
	requireDocker(t)
	_, token, envOf := stackEnvironment(t, stackFile, tlsFile)
	menv, wenv, nenv := envOf("manager"), envOf("worker"), envOf("notifier")
	mounted, err := os.ReadFile(menv["API_TOKEN_FILE"])
	require.NoError(t, err, "the stack gives the manager its token as a file")
	require.Equal(t, token+"\n", string(mounted))

	b := testenv.Setup(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{ManagerEnv: menv, WorkerEnv: wenv, NotifierEnv: nenv})

	for _, url := range []string{s.ManagerURL + "/readyz", s.NotifierURL + "/readyz"} {
		require.Eventually(t, func() bool {
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, 30*time.Second, 100*time.Millisecond, "%s never answered 200", url)
	}

	// The token the stack mounts is the one writes need.
	post := func(auth string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, s.ManagerURL+"/", strings.NewReader(`{"example":"data"}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, body := post("")
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = post(token)
	require.Equal(t, http.StatusCreated, code, body)

	var id int
	_, err = fmt.Sscanf(strings.TrimPrefix(body, `{"id":`), "%d", &id)
	require.NoError(t, err, "no id in %s", body)
	// The worker watches the stack's tube and stores the original's hash.
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/%d/", s.ManagerURL, id), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		return bytes.Contains(got, []byte(`"hash":"09ee943c4fa33cd5a355eb7a4e38f7ef"`))
	}, 30*time.Second, 100*time.Millisecond, "job %d was not completed by a worker with the stack's environment", id)
}

// stackEnvironment renders the stack files and returns the rendered stack,
// a fresh API token, and envOf: a service's environment in the stack, less
// the addresses testenv sets (connectionVars), with API_TOKEN_FILE pointing
// at a file holding that token.
func stackEnvironment(t *testing.T, files ...string) (stack, string, func(name string) map[string]string) {
	t.Helper()
	root := repoRoot(t)
	d := &deployment{root: root, dir: filepath.Join(root, "deploy"), env: operatorEnv(t)}
	out, err := d.render(nil, nil, files...)
	require.NoError(t, err)
	var st stack
	require.NoError(t, yaml.Unmarshal(out, &st))

	token := randomHex(t, 32)
	tokenFile := filepath.Join(t.TempDir(), "api_token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	envOf := func(name string) map[string]string {
		env := maps.Clone(st.Services[name].Environment)
		require.NotEmpty(t, env, "%s has no environment in the stack", name)
		for _, k := range connectionVars {
			delete(env, k)
		}
		if _, ok := st.Services[name].Environment["API_TOKEN_FILE"]; ok {
			env["API_TOKEN_FILE"] = tokenFile
		}
		return env
	}
	return st, token, envOf
}
