package hub

import (
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// told is what one client has been told about jobs, and the one place
// that decides whether a frame is news to it: the hub asks it before
// queueing a frame (completions, state changes, "unknown" answers) and
// the pump before writing a completion that a replay may have sent. The
// client's mu guards it.
//
// It replaces three records that decided the same thing apart: a state
// per watch in the client, the completed flag of the hub's watches (the
// hub now drops a job's watch when it completes, so the tracker, which
// owns job state, only ever sees jobs still to be answered), and the
// pump's own map of replayed ids.
type told struct {
	// all: the client wants every new completion.
	all bool
	// jobs is the last state told of each job the client watches.
	jobs map[uint64]stateCode
	// replayed are the completions its replay sent, kept until
	// replayedUntil to drop their live duplicates: a result the replay
	// read can still be on its way through the feed.
	replayed      map[uint64]struct{}
	replayedUntil time.Time
}

// verdict is what told decides about one frame for one client.
type verdict uint8

const (
	// stale: the client has had it; nothing is queued.
	stale verdict = iota
	// news counts against the client's buffer (Config.Buffer).
	news
	// answer is the first word about a job the client just watched. It
	// does not count against the buffer: a subscribe of thousands of
	// jobs is answered at once, and the client, which asked, was closed
	// as too slow. Answers are bounded by the watches instead (at most
	// two per watch: why there is no state yet, then the state).
	answer
)

// completion decides about a completion of job id. live is a new
// completion from the feed, for the clients that want all of them; a
// completion found in the store answers the job's watchers only.
func (t *told) completion(id uint64, live bool) verdict {
	st, watched := t.jobs[id]
	switch {
	case watched && st == stateCompleted:
		return stale
	case watched:
		t.jobs[id] = stateCompleted
		return firstWord(st)
	case live && t.all:
		return news
	}
	return stale
}

// state decides about a state change of a watched job: only a change,
// and nothing after its completion.
func (t *told) state(id uint64, s job.State) verdict {
	st, watched := t.jobs[id]
	if !watched || st == stateCompleted || st == codeOf(s) {
		return stale
	}
	t.jobs[id] = codeOf(s)
	return firstWord(st)
}

// unknown decides about telling why a watched job has no state yet: once,
// and only before it has one.
func (t *told) unknown(id uint64) verdict {
	if st, watched := t.jobs[id]; !watched || st != stateNone {
		return stale
	}
	t.jobs[id] = stateTold
	return answer
}

func firstWord(st stateCode) verdict {
	if st == stateNone || st == stateTold {
		return answer
	}
	return news
}

// sentByReplay records the completions a replay wrote, for a minute.
func (t *told) sentByReplay(ids map[uint64]struct{}, until time.Time) {
	t.replayed, t.replayedUntil = ids, until
}

// replayedAlready says whether f is a live completion the replay sent.
func (t *told) replayedAlready(f *frame, now time.Time) bool {
	if t.replayed == nil || f.state != job.StateCompleted {
		return false
	}
	if now.After(t.replayedUntil) {
		t.replayed = nil
		return false
	}
	_, ok := t.replayed[f.id]
	return ok
}

// stateCode is the last state a client was sent about a job, in a byte.
type stateCode uint8

const (
	stateNone stateCode = iota // watched, nothing sent yet
	stateReady
	stateDelayed
	stateReserved
	stateBuried
	stateCompleted
	stateOther // a state this code does not know; still told apart from none
	stateTold  // no state yet, but told why (Hub.Unknown)
)

func codeOf(s job.State) stateCode {
	switch s {
	case job.StateReady:
		return stateReady
	case job.StateDelayed:
		return stateDelayed
	case job.StateReserved:
		return stateReserved
	case job.StateBuried:
		return stateBuried
	case job.StateCompleted:
		return stateCompleted
	case "":
		return stateNone
	}
	return stateOther
}
