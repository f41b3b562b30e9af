package testenv

import "github.com/jobsys/jobs/pkg/procs"

// RSS returns the resident memory of the service's current process in
// bytes, read from /proc; 0 when it is not running.
func (s *Service) RSS() int64 {
	if s.proc.Exited() {
		return 0
	}
	n, _ := procs.RSS(s.proc.Pid())
	return n
}
