// Package sysdeps makes sure the programs the stack and its tests run are
// on PATH, installing the missing ones with apt-get when it can.
//
// `make run` and `make test` are the two commands a newcomer types on a
// fresh Debian machine with only Go; both go through here, so what each
// needs is installed the same way: with apt-get when the user is root, or
// else stopped at once with the one command to run.
package sysdeps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Program is a command looked up on PATH and the Debian package that
// provides it.
type Program struct {
	Command string
	Package string
}

// Known programs, by the name the Makefile and devstack use.
var Known = map[string]Program{
	"beanstalkd": {Command: "beanstalkd", Package: "beanstalkd"},
	"chromium":   {Command: "chromium", Package: "chromium"},
	"node":       {Command: "node", Package: "nodejs"},
}

// Lookup returns the known program called name.
func Lookup(name string) (Program, error) {
	p, ok := Known[name]
	if !ok {
		names := make([]string, 0, len(Known))
		for n := range Known {
			names = append(names, n)
		}
		slices.Sort(names)
		return Program{}, fmt.Errorf("unknown program %q (known: %s)", name, strings.Join(names, ", "))
	}
	return p, nil
}

// Installer is what Ensure needs from the machine; System is the real one.
type Installer interface {
	LookPath(cmd string) (string, error)
	IsRoot() bool
	// Run runs apt-get with args and returns its combined output.
	AptGet(ctx context.Context, args ...string) ([]byte, error)
}

// System looks things up and installs them on this machine.
type System struct{}

// LookPath implements Installer.
func (System) LookPath(cmd string) (string, error) { return exec.LookPath(cmd) }

// IsRoot implements Installer.
func (System) IsRoot() bool { return os.Geteuid() == 0 }

// AptGet implements Installer.
func (System) AptGet(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	return cmd.CombinedOutput()
}

// ErrMissing is returned, wrapped with the command to run, when programs
// are missing and cannot be installed here.
var ErrMissing = errors.New("missing programs")

// Ensure makes every program in progs available on PATH. Missing ones
// are installed in one apt-get run when the user is root (logf says so
// first); otherwise it installs nothing and returns an error that
// names the one command to run.
func Ensure(ctx context.Context, sys Installer, logf func(format string, args ...any), progs ...Program) error {
	var missing []string
	for _, p := range progs {
		if _, err := sys.LookPath(p.Command); err != nil && !slices.Contains(missing, p.Package) {
			missing = append(missing, p.Package)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	install := "apt-get install -y " + strings.Join(missing, " ")
	if !sys.IsRoot() {
		return fmt.Errorf("%w: %s: run `sudo %s` (Debian/Ubuntu), then this command again", ErrMissing, strings.Join(missing, ", "), install)
	}
	logf("not on PATH: %s; installing with apt-get", strings.Join(missing, ", "))
	steps := [][]string{
		{"update", "-qq"},
		append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...),
	}
	for _, args := range steps {
		if out, err := sys.AptGet(ctx, args...); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tail(out, 4096))
		}
	}
	for _, p := range progs {
		if _, err := sys.LookPath(p.Command); err != nil {
			return fmt.Errorf("installed %s, but %s is still not on PATH: %w", p.Package, p.Command, err)
		}
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
