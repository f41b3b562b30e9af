package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/jobsys/jobs/pkg/procs"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

// Build compiles the main package at pkgDir (relative to the repository
// root, like "./services/worker") once per test binary and returns the
// executable's path. Go's build cache keeps repeated builds cheap.
func Build(t testing.TB, pkgDir string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkgDir]; ok {
		return p
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if buildDir == "" {
		if buildDir, err = os.MkdirTemp("", "testenv-bin-"); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		stopShared = append(stopShared, func() { os.RemoveAll(buildDir) })
	}
	out := filepath.Join(buildDir, filepath.Base(pkgDir))
	cmd := exec.Command("go", "build", "-o", out, pkgDir)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: build %s: %v\n%s", pkgDir, err, b)
	}
	built[pkgDir] = out
	return out
}

// Service is a service binary running as a child process.
type Service struct {
	proc *procs.Proc
	// HealthURL is polled by Restart and StartService until it answers 200.
	HealthURL string
	// URL is the base URL of a service started by ServeService.
	URL string
}

// Logs returns the last procs.TailBytes the service wrote to stdout and
// stderr.
func (s *Service) Logs() string { return s.proc.Tail() }

// Signal sends sig and waits up to 10s for the process to exit.
func (s *Service) Signal(sig syscall.Signal) { s.proc.Signal(sig, grace) }

// Kill stops the service with SIGKILL.
func (s *Service) Kill() { s.proc.Kill() }

// Stop stops the service with SIGTERM and waits for it.
func (s *Service) Stop() { s.proc.Stop() }

// Exited is closed when the current process has exited.
func (s *Service) Exited() <-chan struct{} { return s.proc.Done() }

// ExitCode is the exit code of the service's last run once Exited is
// closed: 0 for a clean exit, -1 when it was killed by a signal or has not
// exited.
func (s *Service) ExitCode() int { return s.proc.ExitCode() }

// Restart starts the service again with the same environment (and, for
// ServeService, on the same port) and waits for its health URL.
func (s *Service) Restart() error {
	if err := s.proc.Restart(); err != nil {
		return err
	}
	return s.Wait()
}

// Wait waits until HealthURL answers 200: after ServeService, a test that
// needs more than /healthz points HealthURL at /readyz and calls it.
func (s *Service) Wait() error {
	return s.proc.WaitFor(context.Background(), within, s.HealthURL, procs.HTTP(s.HealthURL))
}

// StartService runs binary with exactly the variables in env (plus PATH
// and HOME), waits until healthURL answers 200, and stops it with SIGTERM
// when the test ends. On failure the test log gets the service's output.
//
// The service binds the port env gives it, which the caller took from
// FreePort and another process may have taken since.
//
// Deprecated: use ServeService, which hands the service a listener and
// has no such window; StartService stays for tests written against it.
func StartService(t testing.TB, binary string, env map[string]string, healthURL string) *Service {
	t.Helper()
	spec := procs.Spec{Name: filepath.Base(binary), Path: binary, Env: procs.EnvList(env)}
	return start(t, spec, healthURL)
}

// ServeService runs binary as svc with exactly the variables in env (plus
// PATH and HOME) on a loopback port that testenv binds and hands it as a
// listener, waits until its /healthz answers 200, and stops it with
// SIGTERM when the test ends. s.URL is its base URL. An env that sets
// svc.PortVar chooses the port instead.
func ServeService(t testing.TB, binary string, svc procs.Service, env map[string]string) *Service {
	t.Helper()
	return start(t, procs.ServiceSpec(svc, binary, procs.Servers{}, env), "")
}

// start starts spec in a temporary directory and waits for healthURL,
// or for the listener's /healthz when healthURL is "".
func start(t testing.TB, spec procs.Spec, healthURL string) *Service {
	t.Helper()
	spec.Dir, spec.Grace = t.TempDir(), grace
	p, err := procs.Start(spec)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s := &Service{proc: p, HealthURL: healthURL}
	if healthURL == "" {
		s.URL = procs.URL(p)
		s.HealthURL = s.URL + "/healthz"
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", spec.Name, s.Logs())
		}
	})
	if err := p.WaitFor(context.Background(), within, s.HealthURL, procs.HTTP(s.HealthURL)); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return s
}
