package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ExitCode is the exit code of the service's last run once Exited is
// closed: 0 for a clean exit, -1 when it was killed by a signal or has not
// exited.
func (s *Service) ExitCode() int {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || cmd.ProcessState == nil {
		return -1
	}
	return cmd.ProcessState.ExitCode()
}

// RSS returns the resident memory of the service's current process in
// bytes, read from /proc; 0 when it is not running.
func (s *Service) RSS() int64 {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
