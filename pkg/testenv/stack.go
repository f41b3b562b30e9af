package testenv

import (
	"fmt"
	"maps"
	"testing"

	"github.com/jobsys/jobs/pkg/procs"
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
	// workerEnv is the environment the workers got, so a test can start
	// another with AddWorker.
	workerEnv map[string]string
	t         testing.TB
}

// StartStack builds the services (once per test binary) and starts them
// against b's servers, with b's tube as the workers' tube and b's
// database, each on a port testenv binds and hands it (ServeService).
// Everything stops when the test ends.
func StartStack(t testing.TB, b Bundle, o StackOptions) *Stack {
	t.Helper()
	base := b.Vars()
	maps.Copy(base, o.Env)
	s := &Stack{Bundle: b, t: t}

	s.Manager = ServeService(t, Build(t, "./services/manager"), procs.Manager, merge(base, nil, o.ManagerEnv))
	s.ManagerURL = s.Manager.URL

	s.workerEnv = merge(base, procs.WorkerEnv("", b.Tube), o.WorkerEnv)
	n := o.Workers
	if n == 0 {
		n = 1
	}
	for range max(n, 0) {
		s.AddWorker()
	}

	if !o.NoNotifier {
		s.Notifier = ServeService(t, Build(t, "./services/notifier"), procs.Notifier,
			merge(base, procs.NotifierEnv(s.ManagerURL), o.NotifierEnv))
		s.NotifierURL = s.Notifier.URL
	}
	return s
}

// AddWorker starts one more worker process with the stack's worker
// environment and its own metrics port.
func (s *Stack) AddWorker() *Service {
	s.t.Helper()
	env := merge(s.workerEnv, map[string]string{"WORKER_ID": fmt.Sprintf("worker-%d", len(s.Workers)+1)}, nil)
	w := ServeService(s.t, Build(s.t, "./services/worker"), procs.Worker, env)
	s.Workers = append(s.Workers, w)
	return w
}

func merge(a, b, c map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	maps.Copy(out, c)
	return out
}
