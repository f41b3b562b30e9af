package job

import "time"

// FailureState says what became of a job after its last failed attempt.
type FailureState string

// The states of a failure record. A record whose job completes, or is
// deleted, is removed; one whose job is kicked is marked kicked, so its
// last error still shows while the job waits for its next attempt.
const (
	// FailureRetrying: released for a retry after the back-off. The
	// board's "failed" list.
	FailureRetrying FailureState = "failed"
	// FailureBuried: buried after the last attempt (WORKER_MAX_ATTEMPTS),
	// or because a different result is stored under its id.
	FailureBuried FailureState = "buried"
	// FailureKicked: buried, then kicked back to ready by an operator.
	FailureKicked FailureState = "kicked"
)

// Valid reports whether s is one of the known failure states.
func (s FailureState) Valid() bool {
	switch s {
	case FailureRetrying, FailureBuried, FailureKicked:
		return true
	}
	return false
}

// Failure is the record of a job's last failed attempt, one per job id,
// written by the worker each time an attempt fails. Field order is the
// JSON order, which is the board's job list row.
type Failure struct {
	ID    uint64       `json:"id" bson:"_id"`
	Tube  string       `json:"tube" bson:"tube"`
	State FailureState `json:"state" bson:"state"`
	// Payload is the job's body, as the result's payload.
	Payload string `json:"payload" bson:"payload"`
	// Error is the last attempt's error text (for an exec handler, the
	// exit status and the end of its stderr).
	Error string `json:"error" bson:"error"`
	// Attempts is how many times a handler ran the job, this failure
	// included.
	Attempts int    `json:"attempts" bson:"attempts"`
	Worker   string `json:"worker" bson:"worker"`
	// FailedAt is when the attempt failed, by the worker's clock; a kick
	// moves it to the kick's time. Records are listed newest first by
	// it, and expire by it when RESULTS_TTL is set.
	FailedAt time.Time `json:"updated_at" bson:"failed_at"`
}

// CursorOfFailure is the cursor just past f in a newest-first list of
// failure records, ordered by (failed_at, _id) descending.
func CursorOfFailure(f Failure) Cursor {
	return NewCursor(f.FailedAt, f.ID)
}

// Held is GET /N/'s answer for a job beanstalkd still holds: its stats,
// and from its failure record, when it has one, the payload, the last
// attempt's error and how many attempts ran.
type Held struct {
	Stats
	Payload  string `json:"payload,omitempty"`
	Error    string `json:"error,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
}

// HeldOf is s with f's payload, error and attempts.
func HeldOf(s Stats, f Failure) Held {
	return Held{Stats: s, Payload: f.Payload, Error: f.Error, Attempts: f.Attempts}
}
