package testenv

import (
	"fmt"
	"maps"
	"strconv"
	"testing"
)

// StackOptions choose what StartStack runs. Zero values run one manager,
// one worker and one notifier on the bundle's shared servers.
type StackOptions struct {
	// Workers is the number of worker processes (default 1; -1 for none).
	Workers int
	// NoNotifier leaves the notifier out.
	NoNotifier bool
	// Env is added to every service's environment; ManagerEnv, WorkerEnv
	// and NotifierEnv to one kind's.
	Env, ManagerEnv, WorkerEnv, NotifierEnv map[string]string
}

// Stack is the three services running as real binaries against one
// beanstalkd and one MongoDB-compatible server.
type Stack struct {
	Bundle
	Manager     *Service
	Workers     []*Service
	Notifier    *Service
	ManagerURL  string // http://127.0.0.1:port
	NotifierURL string
	// WorkerEnv is the environment the workers got, so a test can start
	// another with AddWorker.
	workerEnv map[string]string
	t         testing.TB
}

// StartStack builds the services (once per test binary) and starts them
// against b's servers, with b's tube as the workers' tube and b's
// database. Everything stops when the test ends.
func StartStack(t testing.TB, b Bundle, o StackOptions) *Stack {
	t.Helper()
	base := b.Vars()
	maps.Copy(base, o.Env)
	s := &Stack{Bundle: b, t: t}

	mport := mustPort(t)
	menv := merge(base, map[string]string{"MANAGER_LISTEN_PORT": strconv.Itoa(mport)}, o.ManagerEnv)
	s.ManagerURL = fmt.Sprintf("http://127.0.0.1:%d", mport)
	s.Manager = StartService(t, Build(t, "./services/manager"), menv, s.ManagerURL+"/healthz")

	s.workerEnv = merge(base, map[string]string{"WORKER_TUBES": b.Tube}, o.WorkerEnv)
	n := o.Workers
	if n == 0 {
		n = 1
	}
	for range max(n, 0) {
		s.AddWorker()
	}

	if !o.NoNotifier {
		nport := mustPort(t)
		nenv := merge(base, map[string]string{
			"NOTIFIER_LISTEN_PORT": strconv.Itoa(nport),
			"MANAGER_URL":          s.ManagerURL,
		}, o.NotifierEnv)
		s.NotifierURL = fmt.Sprintf("http://127.0.0.1:%d", nport)
		s.Notifier = StartService(t, Build(t, "./services/notifier"), nenv, s.NotifierURL+"/healthz")
	}
	return s
}

// AddWorker starts one more worker process with the stack's worker
// environment and its own metrics port.
func (s *Stack) AddWorker() *Service {
	s.t.Helper()
	port := mustPort(s.t)
	env := merge(s.workerEnv, map[string]string{
		"WORKER_METRICS_PORT": strconv.Itoa(port),
		"WORKER_ID":           fmt.Sprintf("worker-%d", len(s.Workers)+1),
	}, nil)
	w := StartService(s.t, Build(s.t, "./services/worker"), env, fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	s.Workers = append(s.Workers, w)
	return w
}

func mustPort(t testing.TB) int {
	t.Helper()
	p, err := FreePort()
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	return p
}

func merge(a, b, c map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	maps.Copy(out, c)
	return out
}
