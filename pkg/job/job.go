// Package job holds the types that cross process boundaries: the job's
// queue statistics, the stored result, the notifier's events, and the JSON
// shapes the API promises. The API contract lives here.
package job

import (
	"crypto/md5"
	"encoding/hex"
	"time"
)

// State is where a job is in its life.
type State string

// The states a job can be in. The first four are beanstalkd's own; a job
// is completed once its result is stored.
const (
	StateReady     State = "ready"
	StateDelayed   State = "delayed"
	StateReserved  State = "reserved"
	StateBuried    State = "buried"
	StateCompleted State = "completed"
)

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case StateReady, StateDelayed, StateReserved, StateBuried, StateCompleted:
		return true
	}
	return false
}

// Stats is beanstalkd's stats-job answer in the original system's JSON
// shape: the same keys, numbers as JSON numbers.
type Stats struct {
	ID       uint64 `json:"id"`
	Tube     string `json:"tube"`
	State    State  `json:"state"`
	Pri      uint32 `json:"pri"`
	Age      uint64 `json:"age"`
	Delay    uint64 `json:"delay"`
	TTR      uint64 `json:"ttr"`
	TimeLeft uint64 `json:"timeLeft"`
	File     uint64 `json:"file"`
	Reserves uint64 `json:"reserves"`
	Timeouts uint64 `json:"timeouts"`
	Releases uint64 `json:"releases"`
	Buries   uint64 `json:"buries"`
	Kicks    uint64 `json:"kicks"`
}

// Result is a completed job as stored in MongoDB (docs/results.md shows
// the document). _id, hash and payload are the original system's
// document, and the md5 handler's results keep them; other handlers'
// results have no hash and carry what the handler returned in Result. The
// rest say who did the work and when. Field order is the JSON order.
type Result struct {
	ID      uint64 `json:"_id" bson:"_id"`
	Hash    string `json:"hash,omitempty" bson:"hash,omitempty"`
	Payload string `json:"payload" bson:"payload"`
	// Result is what the handler returned, a JSON value (see Value);
	// absent when it returned nothing.
	Result Value `json:"result,omitempty" bson:"result,omitempty"`
	// ResultEncoding is EncodingBase64 when the handler's output was not
	// UTF-8 text and Result holds it in base64; otherwise absent.
	ResultEncoding string `json:"result_encoding,omitempty" bson:"result_encoding,omitempty"`

	Tube        string    `json:"tube,omitempty" bson:"tube,omitempty"`
	Worker      string    `json:"worker,omitempty" bson:"worker,omitempty"`
	Attempts    int       `json:"attempts,omitempty" bson:"attempts,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero" bson:"started_at,omitempty"`
	CompletedAt time.Time `json:"completed_at,omitzero" bson:"completed_at,omitempty"`
	DurationMS  float64   `json:"duration_ms" bson:"duration_ms"`
	// StoredAt is when the result was stored: by the database's own clock
	// on MongoDB, by the storing process's clock just before its insert on
	// FerretDB (see store.Results.Save). Results are streamed and replayed
	// in (stored_at, _id) order, which follows the order in which they
	// became visible more closely than completed_at.
	StoredAt time.Time `json:"stored_at,omitzero" bson:"stored_at,omitempty"`
}

// SameWork reports whether r and other are results of the same job body,
// so that a redelivered job whose result is already stored can be deleted
// without a second document.
func (r Result) SameWork(other Result) bool {
	return r.ID == other.ID && r.Payload == other.Payload
}

// Hash is the demo work: the MD5 hex digest of JavaScript's
// JSON.stringify(payload), exactly as the original system computed it.
func Hash(payload string) string {
	sum := md5.Sum([]byte(JSONStringify(payload)))
	return hex.EncodeToString(sum[:])
}
