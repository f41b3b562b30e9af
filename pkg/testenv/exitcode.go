package testenv

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
