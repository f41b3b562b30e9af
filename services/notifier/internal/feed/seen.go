package feed

import (
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// seen is the set of recently delivered result ids, so that a result read
// twice (by overlapping poll windows, or by a catch-up query that overlaps
// a new change stream) is delivered once. Entries are pruned by
// stored time, which keeps the set as small as the window it guards.
type seen struct {
	ids map[uint64]time.Time
}

func newSeen() *seen { return &seen{ids: map[uint64]time.Time{}} }

// fresh returns the results of rs not delivered before and marks them.
func (s *seen) fresh(rs []job.Result) []job.Result {
	var out []job.Result
	for _, r := range rs {
		if _, ok := s.ids[r.ID]; ok {
			continue
		}
		s.ids[r.ID] = r.StoredAt
		out = append(out, r)
	}
	return out
}

// prune forgets results stored before t.
func (s *seen) prune(t time.Time) {
	for id, at := range s.ids {
		if at.Before(t) {
			delete(s.ids, id)
		}
	}
}

// between counts the delivered results stored in [from, to).
func (s *seen) between(from, to time.Time) int {
	n := 0
	for _, at := range s.ids {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// position is a place in (stored_at, _id) order.
type position struct {
	at time.Time
	id uint64
}

func positionOf(r job.Result) position { return position{at: r.StoredAt, id: r.ID} }

func (p position) less(q position) bool {
	if !p.at.Equal(q.at) {
		return p.at.Before(q.at)
	}
	return p.id < q.id
}

func (p position) cursor() job.Cursor {
	if p.at.IsZero() {
		return ""
	}
	return job.NewCursor(p.at, p.id)
}

func parsePosition(c job.Cursor) (position, bool) {
	if c == "" {
		return position{}, false
	}
	at, id, err := c.Parse()
	if err != nil {
		return position{}, false
	}
	return position{at: at, id: id}, true
}
