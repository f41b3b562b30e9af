package job

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Message types of the notifier's protocol, in the "type" field.
const (
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypeJob         = "job"
	TypeStats       = "stats"
	TypeGap         = "gap"
	TypeError       = "error"
)

// Event is a message from the notifier to a subscriber: a job's state
// (Type "job"), the queue statistics (Type "stats"), a gap in a replay or
// an error about the client's last message.
type Event struct {
	Type  string `json:"type"`
	ID    uint64 `json:"id,omitempty"`
	State State  `json:"state,omitempty"`
	// Result and Cursor are set only for a completed job.
	Result *Result `json:"result,omitempty"`
	Cursor Cursor  `json:"cursor,omitempty"`
	// Tubes and CompletedLastSecond are set only for stats, and so are
	// Totals (the job counts over every tube) and TubeCount (how many
	// tubes there are): Tubes lists only the busiest.
	Tubes               map[string]TubeStats `json:"tubes,omitempty"`
	CompletedLastSecond *int                 `json:"completed_last_second,omitempty"`
	Totals              *TubeStats           `json:"totals,omitempty"`
	TubeCount           *int                 `json:"tube_count,omitempty"`
	Error               string               `json:"error,omitempty"`
}

// TubeStats is the count of jobs in one tube by state, and how many
// reservers watch it.
type TubeStats struct {
	Ready    uint64 `json:"ready"`
	Reserved uint64 `json:"reserved"`
	Delayed  uint64 `json:"delayed"`
	Buried   uint64 `json:"buried"`
	Watching uint64 `json:"watching"`
}

// ClientMessage is a message from a subscriber to the notifier.
type ClientMessage struct {
	Type string   `json:"type"`
	Jobs []uint64 `json:"jobs,omitempty"`
	All  bool     `json:"all,omitempty"`
}

// Completed returns the event that announces r.
func Completed(r Result) Event {
	return Event{Type: TypeJob, ID: r.ID, State: StateCompleted, Result: &r, Cursor: CursorOf(r)}
}

// Cursor marks a place in the stream of completions, ordered by
// (stored_at, _id). Its text form is "<unix milliseconds>-<id>":
// MongoDB keeps dates to the millisecond.
type Cursor string

// ErrBadCursor is returned for a cursor that does not parse.
var ErrBadCursor = errors.New("bad cursor")

// CursorOf returns the cursor just after r.
func CursorOf(r Result) Cursor {
	return NewCursor(r.StoredAt, r.ID)
}

// NewCursor returns the cursor for job id's result stored at t.
func NewCursor(t time.Time, id uint64) Cursor {
	return Cursor(strconv.FormatInt(t.UnixMilli(), 10) + "-" + strconv.FormatUint(id, 10))
}

// Parse returns the time and id that c stands for.
func (c Cursor) Parse() (time.Time, uint64, error) {
	ms, id, ok := strings.Cut(string(c), "-")
	if !ok {
		return time.Time{}, 0, fmt.Errorf("%w %q: want <unix ms>-<id>", ErrBadCursor, string(c))
	}
	m, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || m < 0 {
		return time.Time{}, 0, fmt.Errorf("%w %q: time is not a number", ErrBadCursor, string(c))
	}
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("%w %q: id is not a number", ErrBadCursor, string(c))
	}
	return time.UnixMilli(m).UTC(), n, nil
}
