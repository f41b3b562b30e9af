package api

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/services/manager/internal/idem"
)

const (
	// headerIdempotencyKey names a POST's key: the same key within the
	// window gives the same job (draft-ietf-httpapi-idempotency-key-header).
	headerIdempotencyKey = "Idempotency-Key"
	// headerReplayed marks the answer to a POST whose key created its
	// job earlier.
	headerReplayed = "Idempotent-Replayed"
)

// idempotencyKey reads the request's Idempotency-Key, "" when it has
// none. The draft spells it as a quoted string; a bare token is taken
// too, as most clients send one.
func (h *handler) idempotencyKey(hd http.Header) (string, error) {
	vs := hd.Values(headerIdempotencyKey)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", errorf(http.StatusBadRequest, "Idempotency-Key is given %d times; give it once", len(vs))
	case h.keys == nil:
		return "", &Error{Status: http.StatusNotImplemented, Msg: "Idempotency-Key is not supported by this server"}
	}
	k := strings.TrimSpace(vs[0])
	if len(k) >= 2 && k[0] == '"' && k[len(k)-1] == '"' {
		k = k[1 : len(k)-1]
	}
	if !idem.ValidKey(k) {
		return "", &Error{Status: http.StatusBadRequest, Msg: "Idempotency-Key " + clip(k) + " is not a valid key",
			Detail: "a key is 1 to 255 visible ASCII characters, like a UUID"}
	}
	return k, nil
}

// fingerprint names what a POST asks for, so that a key sent again with
// another request is told apart: the normalised body, tube, priority,
// delay and ttr.
func fingerprint(p PutRequest) string {
	s := sha256.New()
	var n [8]byte
	for _, v := range []uint64{uint64(len(p.Tube)), uint64(p.Priority), uint64(p.Delay), uint64(p.TTR)} {
		binary.BigEndian.PutUint64(n[:], v)
		s.Write(n[:])
	}
	s.Write([]byte(p.Tube))
	s.Write(p.Body)
	return hex.EncodeToString(s.Sum(nil))
}

// putOnce puts p unless a request with the same key did: it claims the
// key in MongoDB first, so that of concurrent requests with one key, on
// any manager, one puts the job, and a retry after an answer lost on the
// way gets the same job back (replayed). A key whose put may or may not
// have made a job stays unknown for the window: no second job is put
// for it.
func (h *handler) putOnce(ctx context.Context, key string, p PutRequest) (Created, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, backendTimeout)
	claim, err := h.keys.Claim(cctx, key, fingerprint(p))
	cancel()
	if err != nil {
		e := h.storeError("claim Idempotency-Key", err)
		if ae, ok := e.(*Error); ok {
			no := false
			ae.JobMayExist, ae.Detail = &no, "the job was not created; retry shortly"
		}
		return Created{}, false, e
	}
	window := h.keys.Window().String()
	switch claim.Outcome {
	case idem.Replay:
		r := claim.Record
		return Created{ID: r.ID, Tube: r.Tube, State: job.State(r.State)}, true, nil
	case idem.Mismatch:
		return Created{}, false, &Error{Status: http.StatusUnprocessableEntity,
			Msg:    "Idempotency-Key " + clip(key) + " was used for a different request",
			Detail: "a key stands for one request (body, tube, priority, delay, ttr) for " + window + ": send a new job with a new key"}
	case idem.InProgress:
		return Created{}, false, &Error{Status: http.StatusConflict,
			Msg:    "a request with this Idempotency-Key is still being served",
			Detail: "retry shortly with the same key to get its job", RetryAfter: 1}
	case idem.Unknown:
		return Created{}, false, &Error{Status: http.StatusConflict,
			Msg: "an earlier request with this Idempotency-Key may have created a job, but its id is unknown",
			Detail: "the job queue did not answer that request in time; no second job is made with this key (for " + window +
				"). Look for the job (it runs if it was created) before you send it again with a new key"}
	}

	created, err := h.put(ctx, p)
	// The request may be gone; the record must still be written.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), backendTimeout)
	defer cancel()
	if err != nil {
		var e *Error
		surelyNot := errors.As(err, &e) && (e.Status < 500 || e.JobMayExist != nil && !*e.JobMayExist)
		rerr := h.keys.Unknown(rctx, claim)
		if surelyNot {
			rerr = h.keys.Release(rctx, claim)
		}
		if rerr != nil {
			h.log.Warn("could not update the Idempotency-Key record after a failed put; retries with the key get 409 until it is abandoned",
				"err", rerr, "put_err", err)
		}
		return Created{}, false, err
	}
	if err := h.keys.Done(rctx, claim, idem.Record{ID: created.ID, Tube: created.Tube, State: string(created.State)}); err != nil {
		h.log.Warn("could not record the job of an Idempotency-Key; retries with the key get 409",
			"job_id", created.ID, "err", err)
	}
	return created, false, nil
}
