package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/jobsys/jobs/pkg/job"
)

// MaxJobsPerMessage is the most job ids one subscribe or unsubscribe may
// name.
const MaxJobsPerMessage = 1000

// ErrBadMessage is wrapped by every error DecodeClientMessage returns.
var ErrBadMessage = errors.New("bad message")

// DecodeClientMessage reads one client message: a JSON object with type
// "subscribe" or "unsubscribe" and either "all": true or a non-empty list
// of job ids in "jobs" (not both). Unknown fields and trailing data are
// refused, so a typo is answered instead of silently ignored.
func DecodeClientMessage(b []byte) (job.ClientMessage, error) {
	var m job.ClientMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return job.ClientMessage{}, fmt.Errorf("%w: %s", ErrBadMessage, describe(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return job.ClientMessage{}, fmt.Errorf("%w: one JSON object per message", ErrBadMessage)
	}
	if err := validate(m); err != nil {
		return job.ClientMessage{}, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	if len(m.Jobs) == 0 {
		m.Jobs = nil // "jobs": [] beside "all": true says nothing more
	}
	return m, nil
}

func validate(m job.ClientMessage) error {
	switch m.Type {
	case job.TypeSubscribe, job.TypeUnsubscribe:
	case "":
		return errors.New(`"type" is missing: want "subscribe" or "unsubscribe"`)
	default:
		return fmt.Errorf(`type %q is not "subscribe" or "unsubscribe"`, m.Type)
	}
	switch {
	case m.All && len(m.Jobs) > 0:
		return errors.New(`give "all": true or "jobs", not both`)
	case !m.All && m.Jobs == nil:
		return errors.New(`give "all": true or a list of job ids in "jobs"`)
	case !m.All && len(m.Jobs) == 0:
		return errors.New(`"jobs" is empty`)
	case len(m.Jobs) > MaxJobsPerMessage:
		return fmt.Errorf(`"jobs" lists %d ids; at most %d per message`, len(m.Jobs), MaxJobsPerMessage)
	}
	for _, id := range m.Jobs {
		if id == 0 {
			return errors.New("job ids start at 1")
		}
	}
	return nil
}

// describe turns a JSON error into a short sentence for the client.
func describe(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return fmt.Sprintf("%q must be %s, not %s", te.Field, want(te.Field), te.Value)
	case errors.As(err, &te):
		return fmt.Sprintf("want a JSON object, not %s", te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON (at byte %d)", se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "not valid JSON (empty or cut short)"
	}
	return err.Error()
}

func want(field string) string {
	switch field {
	case "type":
		return "a string"
	case "all":
		return "true or false"
	default:
		return "a list of job ids (whole numbers from 1)"
	}
}
