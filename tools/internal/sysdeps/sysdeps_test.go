package sysdeps_test

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/tools/internal/sysdeps"
)

// machine is an Installer whose PATH is a set and whose apt-get puts the
// packages it installs on that PATH, the way Debian's packages do.
type machine struct {
	path  map[string]bool
	root  bool
	calls [][]string
	fail  string // apt-get subcommand that fails
	bin   map[string]string
}

func (m *machine) LookPath(cmd string) (string, error) {
	if m.path[cmd] {
		return "/usr/bin/" + cmd, nil
	}
	return "", &exec.Error{Name: cmd, Err: exec.ErrNotFound}
}

func (m *machine) IsRoot() bool { return m.root }

func (m *machine) AptGet(_ context.Context, args ...string) ([]byte, error) {
	m.calls = append(m.calls, args)
	if args[0] == m.fail {
		return []byte("E: Unable to locate package"), errors.New("exit status 100")
	}
	if args[0] == "install" {
		for _, a := range args[1:] {
			if !strings.HasPrefix(a, "-") {
				m.path[m.bin[a]] = true
			}
		}
	}
	return nil, nil
}

func newMachine(root bool, have ...string) *machine {
	m := &machine{path: map[string]bool{}, root: root, bin: map[string]string{}}
	for _, h := range have {
		m.path[h] = true
	}
	for _, p := range sysdeps.Known {
		m.bin[p.Package] = p.Command
	}
	return m
}

func all(t *testing.T, names ...string) []sysdeps.Program {
	var out []sysdeps.Program
	for _, n := range names {
		p, err := sysdeps.Lookup(n)
		require.NoError(t, err)
		out = append(out, p)
	}
	return out
}

func TestEnsureInstallsMissingAsRootInOneRun(t *testing.T) {
	m := newMachine(true, "beanstalkd")
	var logged []string
	logf := func(f string, a ...any) { logged = append(logged, f) }
	err := sysdeps.Ensure(context.Background(), m, logf, all(t, "beanstalkd", "chromium", "node")...)
	require.NoError(t, err)
	require.Len(t, m.calls, 2, "apt-get update, then one install")
	require.Equal(t, "update", m.calls[0][0])
	require.Equal(t, "install", m.calls[1][0])
	require.True(t, slices.Contains(m.calls[1], "chromium"))
	require.True(t, slices.Contains(m.calls[1], "nodejs"), "node comes from Debian's nodejs package")
	require.False(t, slices.Contains(m.calls[1], "beanstalkd"), "what is there is not installed again")
	require.Len(t, logged, 1, "says what it installs before it does")
}

func TestEnsureNothingMissingRunsNothing(t *testing.T) {
	m := newMachine(false, "beanstalkd", "chromium", "node")
	require.NoError(t, sysdeps.Ensure(context.Background(), m, t.Logf, all(t, "beanstalkd", "chromium", "node")...))
	require.Empty(t, m.calls)
}

func TestEnsureNotRootNamesTheOneCommand(t *testing.T) {
	m := newMachine(false, "node")
	err := sysdeps.Ensure(context.Background(), m, t.Logf, all(t, "beanstalkd", "chromium", "node")...)
	require.ErrorIs(t, err, sysdeps.ErrMissing)
	require.Contains(t, err.Error(), "sudo apt-get install -y beanstalkd chromium")
	require.Empty(t, m.calls, "installs nothing without root")
}

func TestEnsureAptFailureSaysWhich(t *testing.T) {
	m := newMachine(true)
	m.fail = "install"
	err := sysdeps.Ensure(context.Background(), m, t.Logf, all(t, "beanstalkd")...)
	require.ErrorContains(t, err, "apt-get install")
	require.ErrorContains(t, err, "Unable to locate package")
}

func TestLookupUnknown(t *testing.T) {
	_, err := sysdeps.Lookup("mongod")
	require.ErrorContains(t, err, `unknown program "mongod"`)
}
