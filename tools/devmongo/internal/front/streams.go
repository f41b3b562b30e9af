package front

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Error codes of change streams, as MongoDB's.
const (
	codeBadValue          = 2
	codeFailedToParse     = 9
	codeCursorNotFound    = 43
	codeInvalidResumeTok  = 260
	codeHistoryLost       = 286
	codeUnrecognizedStage = 40324
	codeNotReplicaSet     = 40573
	codeTooManyCursors    = 261 // TooManyFilesOpen is MongoDB's; used here for the cursor bound
)

// ourCursorBit marks the cursor ids of this front's change streams;
// FerretDB numbers its own cursors from 1 up.
const ourCursorBit = int64(1) << 62

func isOurs(id int64) bool { return id&ourCursorBit != 0 }

// csCursor is an open change stream.
type csCursor struct {
	mu       sync.Mutex
	id       int64
	db, coll string
	match    matcher
	fullDoc  string // default, updateLookup, whenAvailable, required
	pos      uint64 // seq of the last event this stream has gone past
	lastUsed time.Time
}

type cursorTable struct {
	mu   sync.Mutex
	m    map[int64]*csCursor
	next int64
}

func isChangeStream(body bson.Raw) bool {
	arr, ok := body.Lookup("pipeline").ArrayOK()
	if !ok {
		return false
	}
	first, err := arr.IndexErr(0)
	if err != nil {
		return false
	}
	d, ok := first.DocumentOK()
	if !ok {
		return false
	}
	e, err := d.IndexErr(0)
	return err == nil && e.Key() == "$changeStream"
}

// openStream answers an aggregate whose pipeline starts with
// $changeStream.
func (f *Front) openStream(_ context.Context, cmd command) []byte {
	if f.cfg.ReplSet == "" {
		return errorBody(codeNotReplicaSet, "Location40573", "The $changeStream stage is only supported on replica sets")
	}
	db, _ := cmd.body.Lookup("$db").StringValueOK()
	coll, ok := cmd.body.Lookup("aggregate").StringValueOK()
	if !ok {
		return errorBody(codeBadValue, "BadValue", "devmongo serves change streams on a collection only, not on a database or the cluster")
	}
	stages, _ := cmd.body.Lookup("pipeline").Array().Values()
	c := &csCursor{db: db, coll: coll, fullDoc: "default", lastUsed: time.Now()}
	opts := stages[0].Document().Lookup("$changeStream").Document()
	elems, _ := opts.Elements()
	var resume, startAfter bson.RawValue
	var startAt *bson.Timestamp
	for _, e := range elems {
		switch e.Key() {
		case "fullDocument":
			s, _ := e.Value().StringValueOK()
			switch s {
			case "default", "updateLookup", "whenAvailable", "required":
				c.fullDoc = s
			default:
				return errorBody(codeBadValue, "BadValue", fmt.Sprintf("unknown fullDocument mode %q", s))
			}
		case "resumeAfter":
			resume = e.Value()
		case "startAfter":
			startAfter = e.Value()
		case "startAtOperationTime":
			t, i, ok := e.Value().TimestampOK()
			if !ok {
				return errorBody(codeFailedToParse, "FailedToParse", "startAtOperationTime must be a timestamp")
			}
			startAt = &bson.Timestamp{T: t, I: i}
		case "fullDocumentBeforeChange":
			if s, _ := e.Value().StringValueOK(); s != "off" {
				return errorBody(codeBadValue, "BadValue", "devmongo keeps no pre-images: fullDocumentBeforeChange must be off")
			}
		case "allChangesForCluster", "showExpandedEvents":
			if b, _ := e.Value().BooleanOK(); b {
				return errorBody(codeBadValue, "BadValue", fmt.Sprintf("devmongo's change streams do not support %s", e.Key()))
			}
		default:
			return errorBody(codeFailedToParse, "FailedToParse", fmt.Sprintf("unrecognized $changeStream option %q", e.Key()))
		}
	}
	n := 0
	for _, v := range []bool{resume.Type != 0, startAfter.Type != 0, startAt != nil} {
		if v {
			n++
		}
	}
	if n > 1 {
		return errorBody(codeBadValue, "BadValue", "only one of resumeAfter, startAfter and startAtOperationTime may be given")
	}
	var matches []matcher
	for _, st := range stages[1:] {
		d, ok := st.DocumentOK()
		if !ok {
			return errorBody(codeFailedToParse, "FailedToParse", "each pipeline stage must be an object")
		}
		e, err := d.IndexErr(0)
		if err != nil {
			return errorBody(codeFailedToParse, "FailedToParse", "empty pipeline stage")
		}
		if e.Key() != "$match" {
			return errorBody(codeUnrecognizedStage, "Location40324", fmt.Sprintf("devmongo's change streams support only $match after $changeStream, not %s", e.Key()))
		}
		filter, ok := e.Value().DocumentOK()
		if !ok {
			return errorBody(codeFailedToParse, "FailedToParse", "the $match filter must be an object")
		}
		m, err := compileMatch(filter)
		if err != nil {
			return errorBody(codeBadValue, "BadValue", err.Error())
		}
		matches = append(matches, m)
	}
	c.match = combine("$and", matches)

	switch {
	case resume.Type != 0 || startAfter.Type != 0:
		v, after := resume, false
		if startAfter.Type != 0 {
			v, after = startAfter, true
		}
		tok, ok := parseToken(v)
		if !ok {
			return errorBody(codeInvalidResumeTok, "InvalidResumeToken", "the resume token does not parse")
		}
		if tok.kind == tokInvalidate && !after {
			return errorBody(codeInvalidResumeTok, "InvalidResumeToken", "cannot resumeAfter an invalidate event: use startAfter")
		}
		if tok.epoch != f.log.epoch {
			return errorBody(codeHistoryLost, "ChangeStreamHistoryLost", "resume point no longer in the history: devmongo restarted since the token was given, and keeps its change history in memory")
		}
		c.pos = tok.seq
		if _, _, lost := f.log.after(c.pos, 0); lost {
			return errorBody(codeHistoryLost, "ChangeStreamHistoryLost", "resume point no longer in the history: it fell out of devmongo's bounded change history")
		}
	case startAt != nil:
		seq, lost := f.log.seqBefore(*startAt)
		if lost {
			return errorBody(codeHistoryLost, "ChangeStreamHistoryLost", "startAtOperationTime is older than devmongo's change history")
		}
		c.pos = seq
	default:
		c.pos = f.log.head()
	}

	f.cursors.mu.Lock()
	if len(f.cursors.m) >= f.cfg.MaxCursors {
		f.cursors.mu.Unlock()
		return errorBody(codeTooManyCursors, "TooManyFilesOpen", fmt.Sprintf("devmongo allows at most %d open change streams", f.cfg.MaxCursors))
	}
	f.cursors.next++
	c.id = ourCursorBit | f.cursors.next
	f.cursors.m[c.id] = c
	f.cursors.mu.Unlock()

	b, _ := bson.Marshal(bson.D{
		{Key: "cursor", Value: bson.D{
			{Key: "firstBatch", Value: bson.A{}},
			{Key: "postBatchResumeToken", Value: token{ts: f.log.now(), epoch: f.log.epoch, seq: c.pos, kind: tokHighWater}.doc()},
			{Key: "id", Value: c.id},
			{Key: "ns", Value: db + "." + coll},
		}},
		{Key: "operationTime", Value: f.log.now()},
		{Key: "ok", Value: float64(1)},
	})
	return b
}

// maxBatchBytes keeps a batch under MongoDB's 16 MiB reply size.
const maxBatchBytes = 15 << 20

// getMore returns the stream's next events, waiting up to maxTimeMS
// (1s by default, as MongoDB's awaitData cursors) when there are none.
func (f *Front) getMore(ctx context.Context, id int64, cmd command) []byte {
	f.cursors.mu.Lock()
	c := f.cursors.m[id]
	f.cursors.mu.Unlock()
	if c == nil {
		return errorBody(codeCursorNotFound, "CursorNotFound", fmt.Sprintf("cursor id %d not found", id))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	batchSize := 0
	if v, ok := asInt(cmd.body.Lookup("batchSize")); ok && v > 0 {
		batchSize = int(v)
	}
	wait := time.Second
	if v, ok := asInt(cmd.body.Lookup("maxTimeMS")); ok {
		wait = time.Duration(v) * time.Millisecond
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()

	var (
		batch    bson.A
		bytes    int
		closed   bool
		lastTok  *token
		lastSeen *event
	)
	for {
		evs, wake, lost := f.log.after(c.pos, 1000)
		if lost {
			f.dropCursor(id)
			return errorBody(codeHistoryLost, "ChangeStreamHistoryLost", "the stream fell behind devmongo's bounded change history")
		}
		for _, e := range evs {
			c.pos = e.seq
			lastSeen = e
			if !e.concerns(c.db, c.coll) && !e.invalidates(c.db, c.coll) {
				continue
			}
			if e.concerns(c.db, c.coll) {
				doc := f.eventDoc(ctx, c, e)
				if c.match(doc) {
					batch = append(batch, doc)
					bytes += len(doc)
					t := token{ts: e.ts, epoch: f.log.epoch, seq: e.seq, kind: tokEvent}
					lastTok = &t
				}
			}
			if e.invalidates(c.db, c.coll) {
				t := token{ts: e.ts, epoch: f.log.epoch, seq: e.seq, kind: tokInvalidate}
				inv, _ := bson.Marshal(bson.D{
					{Key: "_id", Value: t.doc()},
					{Key: "operationType", Value: "invalidate"},
					{Key: "clusterTime", Value: e.ts},
					{Key: "wallTime", Value: bson.NewDateTimeFromTime(e.wall)},
				})
				if c.match(inv) {
					batch = append(batch, bson.Raw(inv))
				}
				lastTok, closed = &t, true
				break
			}
			if (batchSize > 0 && len(batch) >= batchSize) || bytes >= maxBatchBytes {
				break
			}
		}
		if closed || len(batch) > 0 || (batchSize > 0 && len(batch) >= batchSize) {
			break
		}
		if len(evs) > 0 {
			continue // everything read was filtered out: read on
		}
		select {
		case <-wake:
			continue
		case <-deadline.C:
		case <-ctx.Done():
		}
		break
	}
	c.lastUsed = time.Now()

	// The batch's resume point: its last event's token when that is the
	// last event the stream went past, else a high-water mark there, at
	// the current cluster time when the stream is idle (so that an idle
	// stream's token advances, as MongoDB's does).
	pbrt := token{epoch: f.log.epoch, seq: c.pos, kind: tokHighWater}
	switch {
	case lastTok != nil && lastTok.seq == c.pos:
		pbrt = *lastTok
	case lastSeen != nil:
		pbrt.ts = lastSeen.ts
	default:
		pbrt.ts = f.log.now()
	}
	cursorID := id
	if closed {
		cursorID = 0
		f.dropCursor(id)
	}
	if batch == nil {
		batch = bson.A{}
	}
	b, _ := bson.Marshal(bson.D{
		{Key: "cursor", Value: bson.D{
			{Key: "nextBatch", Value: batch},
			{Key: "postBatchResumeToken", Value: pbrt.doc()},
			{Key: "id", Value: cursorID},
			{Key: "ns", Value: c.db + "." + c.coll},
		}},
		{Key: "operationTime", Value: f.log.now()},
		{Key: "ok", Value: float64(1)},
	})
	return b
}

// eventDoc builds the change event of e for stream c.
func (f *Front) eventDoc(ctx context.Context, c *csCursor, e *event) bson.Raw {
	d := bson.D{
		{Key: "_id", Value: token{ts: e.ts, epoch: f.log.epoch, seq: e.seq, kind: tokEvent}.doc()},
		{Key: "operationType", Value: e.op},
		{Key: "clusterTime", Value: e.ts},
		{Key: "wallTime", Value: bson.NewDateTimeFromTime(e.wall)},
	}
	switch e.op {
	case "insert", "replace":
		d = append(d, bson.E{Key: "fullDocument", Value: e.full})
	case "update":
		if c.fullDoc == "updateLookup" || c.fullDoc == "whenAvailable" || c.fullDoc == "required" {
			// As MongoDB's updateLookup: the document as it is when the
			// event is read, null when it is gone.
			var cur any
			if full := f.lookupByKey(ctx, e); full != nil {
				cur = full
			}
			d = append(d, bson.E{Key: "fullDocument", Value: cur})
		}
	}
	ns := bson.D{{Key: "db", Value: e.db}}
	if e.coll != "" {
		ns = append(ns, bson.E{Key: "coll", Value: e.coll})
	}
	d = append(d, bson.E{Key: "ns", Value: ns})
	if e.op == "rename" {
		d = append(d, bson.E{Key: "to", Value: bson.D{{Key: "db", Value: e.toDB}, {Key: "coll", Value: e.toColl}}})
	}
	if e.key != nil {
		d = append(d, bson.E{Key: "documentKey", Value: e.key})
	}
	if e.op == "update" {
		d = append(d, bson.E{Key: "updateDescription", Value: e.upd})
	}
	b, _ := bson.Marshal(d)
	return b
}

func (f *Front) lookupByKey(ctx context.Context, e *event) bson.Raw {
	if f.cfg.Lookup == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := f.cfg.Lookup.Database(e.db).Collection(e.coll).FindOne(ctx, e.key).Raw()
	if err != nil {
		return nil
	}
	return raw
}

// killCursors answers a killCursors whose cursors are all this front's;
// ok is false when some are FerretDB's, which then answers.
func (f *Front) killCursors(cmd command) ([]byte, bool) {
	arr, ok := cmd.body.Lookup("cursors").ArrayOK()
	if !ok {
		return nil, false
	}
	vals, _ := arr.Values()
	var killed, notFound bson.A
	for _, v := range vals {
		id, ok := v.Int64OK()
		if !ok || !isOurs(id) {
			return nil, false
		}
		if f.dropCursor(id) {
			killed = append(killed, id)
		} else {
			notFound = append(notFound, id)
		}
	}
	if killed == nil {
		killed = bson.A{}
	}
	if notFound == nil {
		notFound = bson.A{}
	}
	b, _ := bson.Marshal(bson.D{
		{Key: "cursorsKilled", Value: killed},
		{Key: "cursorsNotFound", Value: notFound},
		{Key: "cursorsAlive", Value: bson.A{}},
		{Key: "cursorsUnknown", Value: bson.A{}},
		{Key: "ok", Value: float64(1)},
	})
	return b, true
}

func (f *Front) dropCursor(id int64) bool {
	f.cursors.mu.Lock()
	defer f.cursors.mu.Unlock()
	_, ok := f.cursors.m[id]
	delete(f.cursors.m, id)
	return ok
}

// expireCursors closes change streams nobody has read for
// CursorTimeout, as MongoDB does with idle cursors.
func (f *Front) expireCursors(ctx context.Context) {
	t := time.NewTicker(min(f.cfg.CursorTimeout/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var idle []*csCursor
		f.cursors.mu.Lock()
		for _, c := range f.cursors.m {
			idle = append(idle, c)
		}
		f.cursors.mu.Unlock()
		for _, c := range idle {
			if c.mu.TryLock() {
				if time.Since(c.lastUsed) > f.cfg.CursorTimeout {
					f.dropCursor(c.id)
				}
				c.mu.Unlock()
			}
		}
	}
}

// OpenCursors is how many change streams are open.
func (f *Front) OpenCursors() int {
	f.cursors.mu.Lock()
	defer f.cursors.mu.Unlock()
	return len(f.cursors.m)
}

func asInt(v bson.RawValue) (int64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return int64(v.Int32()), true
	case bson.TypeInt64:
		return v.Int64(), true
	case bson.TypeDouble:
		return int64(v.Double()), true
	}
	return 0, false
}
