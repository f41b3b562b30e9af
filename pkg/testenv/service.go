package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"
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
	*process
	// HealthURL is polled by Restart and StartService until it answers 200.
	HealthURL string
}

// Logs returns the last 64 KiB the service wrote to stdout and stderr.
func (s *Service) Logs() string { return s.logs.String() }

// Signal sends sig and waits up to 10s for the process to exit.
func (s *Service) Signal(sig syscall.Signal) { s.signal(sig) }

// Kill stops the service with SIGKILL.
func (s *Service) Kill() { s.signal(syscall.SIGKILL) }

// Stop stops the service with SIGTERM and waits for it.
func (s *Service) Stop() { s.stop() }

// Exited is closed when the current process has exited.
func (s *Service) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Restart starts the service again with the same environment and waits
// for its health URL.
func (s *Service) Restart() error {
	if err := s.startWithEnv(); err != nil {
		return err
	}
	return waitHTTP(s.HealthURL, 30*time.Second, s.Exited())
}

func (s *Service) startWithEnv() error {
	out, err := s.start()
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := out.Read(buf)
			s.logs.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	return nil
}

// StartService runs binary with exactly the variables in env (plus PATH
// and HOME), waits until healthURL answers 200, and stops it with SIGTERM
// when the test ends. On failure the test log gets the service's output.
func StartService(t testing.TB, binary string, env map[string]string, healthURL string) *Service {
	t.Helper()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vars := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range keys {
		vars = append(vars, k+"="+env[k])
	}
	s := &Service{process: &process{name: binary, logs: &tailBuffer{}, env: vars, dir: t.TempDir()}, HealthURL: healthURL}
	if err := s.startWithEnv(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(binary), s.Logs())
		}
	})
	if err := waitHTTP(healthURL, 30*time.Second, s.Exited()); err != nil {
		t.Fatalf("testenv: %s: %v\n%s", filepath.Base(binary), err, s.Logs())
	}
	return s
}

func waitHTTP(url string, within time.Duration, done <-chan struct{}) error {
	deadline := time.Now().Add(within)
	client := http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-done:
			return fmt.Errorf("exited before %s answered", url)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy within %s: %w", url, within, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
