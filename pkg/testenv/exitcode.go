package testenv

// ExitCode returns the exit code of the service's current process once it
// has exited: -1 while it still runs or when a signal ended it.
func (s *Service) ExitCode() int {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return -1
	}
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}
