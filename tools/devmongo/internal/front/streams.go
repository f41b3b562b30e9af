package front

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Error codes of change streams, as MongoDB's.
const (
	codeBadValue           = 2
	codeFailedToParse      = 9
	codeTypeMismatch       = 14
	codeCursorNotFound     = 43
	codeNoMatchingDocument = 47
	codeInvalidNamespace   = 73
	codeInvalidResumeTok   = 260
	codeChangeStreamFatal  = 280
	codeHistoryLost        = 286
	codeUnknownField       = 40415 // the IDL parser: an unknown field
	codeUnrecognizedStage  = 40324
	codeNotReplicaSet      = 40573
	codeBadTokenData       = 40647 // ResumeToken::parse: _data missing or not a string
	codeResumeOptions      = 40674 // more than one kind of resume option
	codeKeyString          = 50811 // KeyString decoding: the hex is no token
	codeStartAndResume     = 50865 // both startAfter and resumeAfter
	codeTooManyCursors     = 261   // TooManyFilesOpen is MongoDB's; used here for the cursor bound
)

// historyLost is 286 as MongoDB answers it.
func historyLost(msg string) []byte {
	return labelledError(codeHistoryLost, "ChangeStreamHistoryLost", msg, labelNonResumable)
}

// watchable refuses the namespaces MongoDB does not watch: the admin,
// local and config databases and system.* collections (73; the server's
// DocumentSourceChangeStream::assertIsLegalSpecification).
func watchable(db, coll string) []byte {
	switch db {
	case "admin", "local", "config":
		return errorBody(codeInvalidNamespace, "InvalidNamespace", fmt.Sprintf("$changeStream may not be opened on the internal %s database", db))
	}
	if strings.HasPrefix(coll, "system.") {
		return errorBody(codeInvalidNamespace, "InvalidNamespace", fmt.Sprintf("$changeStream may not be opened on the internal %s.%s collection", db, coll))
	}
	return nil
}

// ourCursorBit marks the cursor ids of this front's change streams;
// FerretDB numbers its own cursors from 1 up.
const ourCursorBit = int64(1) << 62

func isOurs(id int64) bool { return id&ourCursorBit != 0 }

// csCursor is an open change stream.
type csCursor struct {
	mu       sync.Mutex
	id       int64
	db, coll string
	cluster  bool    // allChangesForCluster: every database (db is admin, coll "")
	stages   []stage // after $changeStream: $match and $project
	fullDoc  string  // default, updateLookup, whenAvailable, required
	// fullDocBefore is off, whenAvailable or required: devmongo keeps no
	// pre-images, so the latter two answer as MongoDB does for a
	// collection without changeStreamPreAndPostImages.
	fullDocBefore string
	pos           uint64 // seq of the last event this stream has gone past
	// reinvalidate is the event a stream resumed after that invalidates
	// it (a drop's token): its first getMore gives the invalidate again,
	// as MongoDB's does.
	reinvalidate *event
	lastUsed     time.Time
}

// sees reports whether e is an event of stream c: one of its
// collection's; on a database stream, any of the database's, its drops,
// renames and dropDatabase included; on a cluster stream, any outside
// admin, config and local.
func (c *csCursor) sees(e *event) bool {
	switch {
	case c.cluster:
		return e.db != "admin" && e.db != "config" && e.db != "local"
	case c.coll == "":
		return e.db == c.db || (e.op == "rename" && e.toDB == c.db)
	}
	return e.concerns(c.db, c.coll)
}

// invalidatedBy reports whether e ends stream c: a collection's drop or
// rename ends its stream, dropDatabase a database's; nothing ends a
// cluster stream.
func (c *csCursor) invalidatedBy(e *event) bool {
	switch {
	case c.cluster:
		return false
	case c.coll == "":
		return e.op == "dropDatabase" && e.db == c.db
	}
	return e.invalidates(c.db, c.coll)
}

// ns is the cursor's namespace, as MongoDB names it.
func (c *csCursor) ns() string {
	switch {
	case c.cluster:
		return "admin.$cmd.aggregate"
	case c.coll == "":
		return c.db + ".$cmd.aggregate"
	}
	return c.db + "." + c.coll
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
	stages, _ := cmd.body.Lookup("pipeline").Array().Values()
	opts := stages[0].Document().Lookup("$changeStream").Document()
	// aggregate: "coll" watches a collection; aggregate: 1 the database,
	// or with allChangesForCluster on admin, every database.
	coll, isColl := cmd.body.Lookup("aggregate").StringValueOK()
	cluster, _ := opts.Lookup("allChangesForCluster").BooleanOK()
	switch {
	case cluster && (isColl || db != "admin"):
		return errorBody(codeInvalidNamespace, "InvalidNamespace", "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database, and with no collection name")
	case !isColl && !cluster:
		if n, ok := asInt(cmd.body.Lookup("aggregate")); !ok || n != 1 {
			return errorBody(codeFailedToParse, "FailedToParse", "aggregate must be a collection name or 1")
		}
	}
	if !cluster {
		if refused := watchable(db, coll); refused != nil {
			return refused
		}
	}
	c := &csCursor{db: db, coll: coll, cluster: cluster, fullDoc: "default", fullDocBefore: "off", lastUsed: time.Now()}
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
		case "resumeAfter", "startAfter":
			if e.Value().Type != bson.TypeEmbeddedDocument {
				return wrongType(e, "object")
			}
			if e.Key() == "resumeAfter" {
				resume = e.Value()
			} else {
				startAfter = e.Value()
			}
		case "startAtOperationTime":
			t, i, ok := e.Value().TimestampOK()
			if !ok {
				return wrongType(e, "timestamp")
			}
			startAt = &bson.Timestamp{T: t, I: i}
		case "fullDocumentBeforeChange":
			s, _ := e.Value().StringValueOK()
			switch s {
			case "off", "whenAvailable", "required":
				c.fullDocBefore = s
			default:
				return errorBody(codeBadValue, "BadValue", fmt.Sprintf("Enumeration value '%s' for field 'fullDocumentBeforeChange' is not a valid value.", s))
			}
		case "allChangesForCluster":
			// read above
		case "showExpandedEvents", "showMigrationEvents", "showSystemEvents", "showRawUpdateDescription":
			// Options MongoDB has: false is what devmongo does anyway.
			if b, _ := e.Value().BooleanOK(); b {
				return errorBody(codeBadValue, "BadValue", fmt.Sprintf("devmongo's change streams do not support %s", e.Key()))
			}
		default:
			return errorBody(codeUnknownField, "Location40415", fmt.Sprintf("BSON field '$changeStream.%s' is an unknown field.", e.Key()))
		}
	}
	// As DocumentSourceChangeStream::createFromBson checks them.
	if resume.Type != 0 && startAfter.Type != 0 {
		return errorBody(codeStartAndResume, "Location50865", "Do not specify both 'startAfter' and 'resumeAfter' in a $changeStream stage.")
	}
	if (resume.Type != 0 || startAfter.Type != 0) && startAt != nil {
		return errorBody(codeResumeOptions, "Location40674", "Only one type of resume option is allowed, but multiple were found.")
	}
	for _, st := range stages[1:] {
		d, ok := st.DocumentOK()
		if !ok {
			return errorBody(codeFailedToParse, "FailedToParse", "each pipeline stage must be an object")
		}
		e, err := d.IndexErr(0)
		if err != nil {
			return errorBody(codeFailedToParse, "FailedToParse", "empty pipeline stage")
		}
		arg, ok := e.Value().DocumentOK()
		switch e.Key() {
		case "$match":
			if !ok {
				return errorBody(codeFailedToParse, "FailedToParse", "the $match filter must be an object")
			}
			m, err := compileMatch(arg)
			if err != nil {
				return errorBody(codeBadValue, "BadValue", err.Error())
			}
			c.stages = append(c.stages, matchStage(m))
		case "$project":
			if !ok {
				return errorBody(codeFailedToParse, "FailedToParse", "$project specification must be an object")
			}
			p, err := compileProject(arg)
			if err != nil {
				return errorBody(codeBadValue, "BadValue", err.Error())
			}
			c.stages = append(c.stages, p)
		default:
			return errorBody(codeUnrecognizedStage, "Location40324", fmt.Sprintf("devmongo's change streams support only $match and $project after $changeStream, not %s", e.Key()))
		}
	}

	switch {
	case resume.Type != 0 || startAfter.Type != 0:
		v, after := resume, false
		if startAfter.Type != 0 {
			v, after = startAfter, true
		}
		tok, refused := parseToken(v)
		if refused != nil {
			return refused
		}
		if tok.kind == tokInvalidate && !after {
			return errorBody(codeInvalidResumeTok, "InvalidResumeToken", "cannot resumeAfter an invalidate event: use startAfter")
		}
		if tok.epoch != f.log.epoch {
			return historyLost("resume point no longer in the history: devmongo restarted since the token was given, and keeps its change history in memory")
		}
		c.pos = tok.seq
		if _, _, lost := f.log.after(c.pos, 0); lost {
			return historyLost("resume point no longer in the history: it fell out of devmongo's bounded change history")
		}
		e := f.log.at(tok.seq)
		if tok.kind == tokEvent && e != nil && c.invalidatedBy(e) {
			c.reinvalidate = e
		}
		if tok.kind != tokHighWater && e != nil && !c.sees(e) && !c.invalidatedBy(e) {
			// The token's event is not one of this stream's: MongoDB does
			// not find it when it resumes (the server's
			// DocumentSourceChangeStreamEnsureResumeTokenPresent).
			return labelledError(codeChangeStreamFatal, "ChangeStreamFatalError", "cannot resume stream; the resume token was not found", labelNonResumable)
		}
	case startAt != nil:
		seq, lost := f.log.seqBefore(*startAt)
		if lost {
			return historyLost("startAtOperationTime is older than devmongo's change history")
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
			{Key: "ns", Value: c.ns()},
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
	// add runs doc through the stream's pipeline and batches what passes;
	// a refusal drops the cursor and is the answer.
	add := func(doc bson.Raw) (bool, []byte) {
		out, pass, refused := c.apply(doc)
		if refused != nil {
			f.dropCursor(id)
			return false, refused
		}
		if pass {
			batch = append(batch, out)
			bytes += len(out)
		}
		return pass, nil
	}
	if e := c.reinvalidate; e != nil {
		c.reinvalidate = nil
		inv, t := invalidateDoc(f.log.epoch, e)
		if _, refused := add(inv); refused != nil {
			return refused
		}
		lastTok, lastSeen, closed = &t, e, true
	}
	for !closed {
		evs, wake, lost := f.log.after(c.pos, 1000)
		if lost {
			f.dropCursor(id)
			return historyLost("the stream fell behind devmongo's bounded change history")
		}
		for _, e := range evs {
			c.pos = e.seq
			lastSeen = e
			if !c.sees(e) && !c.invalidatedBy(e) {
				continue
			}
			if c.sees(e) {
				doc, refused := f.eventDoc(ctx, c, e)
				if refused != nil {
					f.dropCursor(id)
					return refused
				}
				pass, refused := add(doc)
				if refused != nil {
					return refused
				}
				if pass {
					t := token{ts: e.ts, epoch: f.log.epoch, seq: e.seq, kind: tokEvent}
					lastTok = &t
				}
			}
			if c.invalidatedBy(e) {
				inv, t := invalidateDoc(f.log.epoch, e)
				if _, refused := add(inv); refused != nil {
					return refused
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
			{Key: "ns", Value: c.ns()},
		}},
		{Key: "operationTime", Value: f.log.now()},
		{Key: "ok", Value: float64(1)},
	})
	return b
}

// apply passes an event through the stream's stages: what comes out,
// whether it passes, or MongoDB's error when the stages changed its _id.
func (c *csCursor) apply(doc bson.Raw) (bson.Raw, bool, []byte) {
	out, pass := runStages(c.stages, doc)
	if !pass {
		return nil, false, nil
	}
	if refused := idKept(doc, out); refused != nil {
		return nil, false, refused
	}
	return out, true, nil
}

// invalidateDoc is the invalidate that follows e, and its token.
func invalidateDoc(epoch uint64, e *event) (bson.Raw, token) {
	t := token{ts: e.ts, epoch: epoch, seq: e.seq, kind: tokInvalidate}
	inv, _ := bson.Marshal(bson.D{
		{Key: "_id", Value: t.doc()},
		{Key: "operationType", Value: "invalidate"},
		{Key: "clusterTime", Value: e.ts},
		{Key: "wallTime", Value: bson.NewDateTimeFromTime(e.wall)},
	})
	return inv, t
}

// noImage is MongoDB's answer when a stream requires a pre- or
// post-image that the collection does not keep (the server's
// document_source_change_stream_add_{pre,post}_image.cpp).
func noImage(which string, e *event) []byte {
	return errorBody(codeNoMatchingDocument, "NoMatchingDocument", fmt.Sprintf("Change stream was configured to require a %s-image for all update, delete and replace events, but the %s-image was not found for event: %s %s.%s", which, which, e.op, e.db, e.coll))
}

// eventDoc builds the change event of e for stream c, or the error that
// ends the stream.
func (f *Front) eventDoc(ctx context.Context, c *csCursor, e *event) (bson.Raw, []byte) {
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
		switch c.fullDoc {
		case "updateLookup":
			// As MongoDB's updateLookup: the document as it is when the
			// event is read, null when it is gone.
			var cur any
			if full := f.lookupByKey(ctx, e); full != nil {
				cur = full
			}
			d = append(d, bson.E{Key: "fullDocument", Value: cur})
		case "whenAvailable":
			d = append(d, bson.E{Key: "fullDocument", Value: nil}) // no post-image kept
		case "required":
			return nil, noImage("post", e)
		}
	}
	switch {
	case e.op != "update" && e.op != "replace" && e.op != "delete":
	case c.fullDocBefore == "whenAvailable":
		d = append(d, bson.E{Key: "fullDocumentBeforeChange", Value: nil}) // no pre-image kept
	case c.fullDocBefore == "required":
		return nil, noImage("pre", e)
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
	return b, nil
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

// wrongType is the IDL parser's answer to an option of the wrong type.
func wrongType(e bson.RawElement, want string) []byte {
	return errorBody(codeTypeMismatch, "TypeMismatch", fmt.Sprintf("BSON field '$changeStream.%s' is the wrong type '%s', expected type '%s'", e.Key(), typeName(e.Value().Type), want))
}

func typeName(t bson.Type) string {
	switch t {
	case bson.TypeString:
		return "string"
	case bson.TypeEmbeddedDocument:
		return "object"
	case bson.TypeArray:
		return "array"
	case bson.TypeInt32:
		return "int"
	case bson.TypeInt64:
		return "long"
	case bson.TypeDouble:
		return "double"
	case bson.TypeBoolean:
		return "bool"
	case bson.TypeNull:
		return "null"
	}
	return t.String()
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

// collMod answers a collMod that only sets changeStreamPreAndPostImages
// (FerretDB has no collMod): disabled is what every collection here is;
// enabled is refused, as devmongo keeps no pre- or post-images. ok is
// false for any other collMod, which FerretDB then answers.
func (f *Front) collMod(ctx context.Context, cmd command) ([]byte, bool) {
	elems, _ := cmd.body.Elements()
	var images bson.RawValue
	for _, e := range elems {
		switch e.Key() {
		case "collMod", "$db", "lsid", "$clusterTime", "writeConcern", "comment", "txnNumber", "$readPreference", "apiVersion", "apiStrict", "apiDeprecationErrors", "maxTimeMS":
		case "changeStreamPreAndPostImages":
			images = e.Value()
		default:
			return nil, false
		}
	}
	if images.Type == 0 {
		return nil, false
	}
	db, _ := cmd.body.Lookup("$db").StringValueOK()
	coll, _ := cmd.body.Lookup("collMod").StringValueOK()
	if f.cfg.Lookup != nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		names, err := f.cfg.Lookup.Database(db).ListCollectionNames(ctx, bson.D{{Key: "name", Value: coll}})
		if err == nil && len(names) == 0 {
			return errorBody(26, "NamespaceNotFound", fmt.Sprintf("ns does not exist: %s.%s", db, coll)), true
		}
	}
	d, _ := images.DocumentOK()
	if on, _ := d.Lookup("enabled").BooleanOK(); on {
		return errorBody(codeBadValue, "BadValue", "devmongo keeps no pre- or post-images: changeStreamPreAndPostImages cannot be enabled"), true
	}
	b, _ := bson.Marshal(bson.D{{Key: "ok", Value: float64(1)}})
	return b, true
}
