package front

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// write forwards a write command and logs the changes FerretDB
// acknowledged. Writes that make events hold writeMu from before they
// are forwarded until their events are logged, so the log is in commit
// order. An unacknowledged write (w: 0, moreToCome) is logged the same
// way from FerretDB's answer, which the client does not get: MongoDB's
// change streams show w:0 writes as any other.
func (cn *conn) write(ctx context.Context, m message, cmd command) ([]message, error) {
	rs, err := cn.loggedWrite(ctx, m, cmd)
	if err != nil || m.flags()&flagMoreToCome != 0 {
		return nil, err
	}
	return rs, nil
}

func (cn *conn) loggedWrite(ctx context.Context, m message, cmd command) ([]message, error) {
	if stmts := cmd.docs("updates"); strings.EqualFold(cmd.name(), "update") && len(stmts) > 1 {
		return cn.updateEach(ctx, m, cmd, stmts)
	}
	f := cn.f
	name := cmd.name()
	db, _ := cmd.body.Lookup("$db").StringValueOK()
	coll, _ := cmd.body.Lookup(name).StringValueOK()

	f.writeMu.Lock()
	defer f.writeMu.Unlock()

	// What the changes need from before the write.
	var (
		pre     [][]bson.Raw // per update/delete statement: matched documents
		fam     bson.Raw     // findAndModify: the matched document
		dropped []string     // dropDatabase: the collections
		existed bool         // drop: whether the collection existed
	)
	switch strings.ToLower(name) {
	case "update":
		for _, st := range cmd.docs("updates") {
			multi, _ := st.Lookup("multi").BooleanOK()
			pre = append(pre, f.find(ctx, db, coll, st.Lookup("q"), bson.RawValue{}, multi))
		}
	case "delete":
		for _, st := range cmd.docs("deletes") {
			limit, _ := asInt(st.Lookup("limit"))
			pre = append(pre, f.find(ctx, db, coll, st.Lookup("q"), bson.RawValue{}, limit == 0))
		}
	case "findAndModify", "findandmodify":
		if docs := f.find(ctx, db, coll, cmd.body.Lookup("query"), cmd.body.Lookup("sort"), false); len(docs) > 0 {
			fam = docs[0]
		}
	case "dropDatabase", "dropdatabase":
		if f.cfg.Lookup != nil {
			dropped, _ = f.cfg.Lookup.Database(db).ListCollectionNames(ctx, bson.D{})
		}
	case "renameCollection", "renamecollection":
		m, cmd = f.withoutDropTarget(ctx, m, cmd)
	case "drop":
		// MongoDB logs no drop of a collection that does not exist, so
		// its streams see no drop and no invalidate.
		existed = f.cfg.Lookup == nil || f.exists(ctx, db, coll)
	}

	rs, err := cn.roundTrip(m)
	if err != nil || len(rs) != 1 {
		return rs, err
	}
	reply, err := replyBody(rs[0])
	if err != nil {
		return rs, nil
	}
	if ok, _ := asInt(reply.Lookup("ok")); ok != 1 {
		return rs, nil
	}

	var evs []*event
	switch strings.ToLower(name) {
	case "insert":
		evs = insertEvents(db, coll, cmd, reply)
	case "update":
		evs = f.updateEvents(ctx, db, coll, cmd, reply, pre)
	case "delete":
		evs = f.deleteEvents(ctx, db, coll, pre)
	case "findandmodify":
		evs = f.famEvents(ctx, db, coll, cmd, reply, fam)
	case "drop":
		if existed {
			evs = []*event{{op: "drop", db: db, coll: coll}}
		}
	case "renamecollection":
		from, _ := cmd.body.Lookup(name).StringValueOK()
		to, _ := cmd.body.Lookup("to").StringValueOK()
		fdb, fcoll, _ := strings.Cut(from, ".")
		tdb, tcoll, _ := strings.Cut(to, ".")
		evs = []*event{{op: "rename", db: fdb, coll: fcoll, toDB: tdb, toColl: tcoll}}
	case "dropdatabase":
		for _, c := range dropped {
			evs = append(evs, &event{op: "drop", db: db, coll: c})
		}
		evs = append(evs, &event{op: "dropDatabase", db: db})
	}
	f.log.append(evs...)
	return rs, nil
}

// exists reports whether db.coll exists (true when the lookup fails:
// a drop event too many ends a stream that resumes after it; one too
// few would leave a stream on a dropped collection running).
func (f *Front) exists(ctx context.Context, db, coll string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	names, err := f.cfg.Lookup.Database(db).ListCollectionNames(ctx, bson.D{{Key: "name", Value: coll}})
	return err != nil || len(names) > 0
}

// find reads the documents filter matches (one, in sort order, unless
// many), for the changes an update or delete makes.
func (f *Front) find(ctx context.Context, db, coll string, filter, sort bson.RawValue, many bool) []bson.Raw {
	if f.cfg.Lookup == nil {
		return nil
	}
	q, ok := filter.DocumentOK()
	if !ok {
		q = bson.Raw(emptyDoc)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	opts := options.Find()
	if s, ok := sort.DocumentOK(); ok {
		opts.SetSort(s)
	}
	if !many {
		opts.SetLimit(1)
	}
	return readAll(ctx, f.cfg.Lookup.Database(db).Collection(coll), q, opts)
}

// readAll returns the documents filter finds, or none when the read fails.
func readAll(ctx context.Context, coll *mongo.Collection, filter any, opts ...options.Lister[options.FindOptions]) []bson.Raw {
	cur, err := coll.Find(ctx, filter, opts...)
	if err != nil {
		return nil
	}
	defer cur.Close(ctx)
	var out []bson.Raw
	for cur.Next(ctx) {
		out = append(out, bytes.Clone(cur.Current))
	}
	return out
}

var emptyDoc = []byte{5, 0, 0, 0, 0}

func keyOf(doc bson.Raw) bson.Raw {
	id, err := doc.LookupErr("_id")
	if err != nil {
		return nil
	}
	b, _ := bson.Marshal(bson.D{{Key: "_id", Value: id}})
	return b
}

// insertEvents are the inserts FerretDB acknowledged: every document but
// those with a write error, and in an ordered insert none after the
// first error.
func insertEvents(db, coll string, cmd command, reply bson.Raw) []*event {
	docs := cmd.docs("documents")
	failed := map[int64]bool{}
	firstErr := int64(len(docs))
	if arr, ok := reply.Lookup("writeErrors").ArrayOK(); ok {
		vals, _ := arr.Values()
		for _, v := range vals {
			if i, ok := asInt(v.Document().Lookup("index")); ok {
				failed[i] = true
				firstErr = min(firstErr, i)
			}
		}
	}
	ordered := true
	if b, ok := cmd.body.Lookup("ordered").BooleanOK(); ok {
		ordered = b
	}
	var evs []*event
	for i, d := range docs {
		if failed[int64(i)] || (ordered && int64(i) > firstErr) {
			continue
		}
		key := keyOf(d)
		if key == nil {
			// FerretDB made the _id: there is no telling which. Drivers
			// always send one.
			continue
		}
		evs = append(evs, &event{op: "insert", db: db, coll: coll, key: key, full: bytes.Clone(d)})
	}
	return evs
}

// updateEvents compare each statement's matched documents before and
// after, and read the documents its upserts made.
func (f *Front) updateEvents(ctx context.Context, db, coll string, cmd command, reply bson.Raw, pre [][]bson.Raw) []*event {
	stmts := cmd.docs("updates")
	upserted := map[int64]bson.RawValue{}
	if arr, ok := reply.Lookup("upserted").ArrayOK(); ok {
		vals, _ := arr.Values()
		for _, v := range vals {
			if i, ok := asInt(v.Document().Lookup("index")); ok {
				upserted[i] = v.Document().Lookup("_id")
			}
		}
	}
	var evs []*event
	for i, st := range stmts {
		if id, ok := upserted[int64(i)]; ok {
			key, _ := bson.Marshal(bson.D{{Key: "_id", Value: id}})
			if full := f.byKeys(ctx, db, coll, []bson.Raw{key}); len(full) == 1 {
				evs = append(evs, &event{op: "insert", db: db, coll: coll, key: key, full: full[0]})
			}
			continue
		}
		if i < len(pre) {
			evs = append(evs, f.changed(ctx, db, coll, pre[i], st.Lookup("u"))...)
		}
	}
	return evs
}

func isReplacement(u bson.RawValue) bool {
	d, ok := u.DocumentOK()
	if !ok {
		return false // a pipeline update
	}
	e, err := d.IndexErr(0)
	return err != nil || !strings.HasPrefix(e.Key(), "$")
}

// changed reads the documents of before again and returns an update or
// replace event for each that update u changed.
func (f *Front) changed(ctx context.Context, db, coll string, before []bson.Raw, u bson.RawValue) []*event {
	replace := isReplacement(u)
	if len(before) == 0 {
		return nil
	}
	keys := make([]bson.Raw, 0, len(before))
	for _, d := range before {
		if k := keyOf(d); k != nil {
			keys = append(keys, k)
		}
	}
	after := map[string]bson.Raw{}
	for _, d := range f.byKeys(ctx, db, coll, keys) {
		after[string(keyOf(d))] = d
	}
	var evs []*event
	for _, old := range before {
		key := keyOf(old)
		now, ok := after[string(key)]
		if !ok || bytes.Equal(old, now) {
			continue
		}
		if replace {
			evs = append(evs, &event{op: "replace", db: db, coll: coll, key: key, full: now})
			continue
		}
		evs = append(evs, &event{op: "update", db: db, coll: coll, key: key, upd: describeUpdate(u, old, now)})
	}
	return evs
}

// describe is an update's updateDescription by top-level field, for the
// updates describeUpdate cannot read by paths.
func describe(old, now bson.Raw) bson.Raw {
	updated := bson.D{}
	removed := bson.A{}
	oldElems, _ := old.Elements()
	nowElems, _ := now.Elements()
	was := map[string]bson.RawValue{}
	for _, e := range oldElems {
		was[e.Key()] = e.Value()
	}
	is := map[string]bool{}
	for _, e := range nowElems {
		is[e.Key()] = true
		if v, ok := was[e.Key()]; !ok || v.Type != e.Value().Type || !bytes.Equal(v.Value, e.Value().Value) {
			updated = append(updated, bson.E{Key: e.Key(), Value: e.Value()})
		}
	}
	for _, e := range oldElems {
		if !is[e.Key()] {
			removed = append(removed, e.Key())
		}
	}
	b, _ := bson.Marshal(bson.D{
		{Key: "updatedFields", Value: updated},
		{Key: "removedFields", Value: removed},
		{Key: "truncatedArrays", Value: bson.A{}},
	})
	return b
}

// deleteEvents are the matched documents that are gone.
func (f *Front) deleteEvents(ctx context.Context, db, coll string, pre [][]bson.Raw) []*event {
	var keys []bson.Raw
	for _, docs := range pre {
		for _, d := range docs {
			if k := keyOf(d); k != nil {
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	left := map[string]bool{}
	for _, d := range f.byKeys(ctx, db, coll, keys) {
		left[string(keyOf(d))] = true
	}
	var evs []*event
	for _, k := range keys {
		if !left[string(k)] {
			evs = append(evs, &event{op: "delete", db: db, coll: coll, key: k})
			left[string(k)] = true // once, if two statements matched it
		}
	}
	return evs
}

func (f *Front) famEvents(ctx context.Context, db, coll string, cmd command, reply bson.Raw, pre bson.Raw) []*event {
	leo, _ := reply.Lookup("lastErrorObject").DocumentOK()
	if id, err := leo.LookupErr("upserted"); err == nil {
		key, _ := bson.Marshal(bson.D{{Key: "_id", Value: id}})
		if full := f.byKeys(ctx, db, coll, []bson.Raw{key}); len(full) == 1 {
			return []*event{{op: "insert", db: db, coll: coll, key: key, full: full[0]}}
		}
		return nil
	}
	if pre == nil {
		return nil
	}
	if remove, _ := cmd.body.Lookup("remove").BooleanOK(); remove {
		return f.deleteEvents(ctx, db, coll, [][]bson.Raw{{pre}})
	}
	return f.changed(ctx, db, coll, []bson.Raw{pre}, cmd.body.Lookup("update"))
}

// byKeys reads the documents with the given {_id} keys.
func (f *Front) byKeys(ctx context.Context, db, coll string, keys []bson.Raw) []bson.Raw {
	if f.cfg.Lookup == nil || len(keys) == 0 {
		return nil
	}
	ids := make(bson.A, 0, len(keys))
	indexed := true
	for _, k := range keys {
		id := k.Lookup("_id")
		ids = append(ids, id)
		indexed = indexed && (id.Type == bson.TypeString || id.Type == bson.TypeObjectID)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := f.cfg.Lookup.Database(db).Collection(coll)
	if len(ids) == 1 || indexed {
		// FerretDB looks up {_id: <string or ObjectID>} by index, and
		// reads the whole collection for $in: one query per key then
		// costs what it reads (a query per update of a large collection
		// read it whole before).
		var out []bson.Raw
		for _, id := range ids {
			out = append(out, readAll(ctx, c, bson.D{{Key: "_id", Value: id}})...)
		}
		return out
	}
	return readAll(ctx, c, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
}

// updateEach runs an update command of several statements as one
// command per statement, as MongoDB applies them (one oplog entry, one
// event each, a statement matching what the one before it wrote), and
// answers with the replies merged: n and nModified summed, upserted and
// writeErrors at their statement's index; an ordered update stops at
// its first error.
func (cn *conn) updateEach(ctx context.Context, m message, cmd command, stmts []bson.Raw) ([]message, error) {
	ordered := true
	if b, ok := cmd.body.Lookup("ordered").BooleanOK(); ok {
		ordered = b
	}
	var (
		n, modified    int64
		upserted, errs bson.A
		last           bson.Raw
		wcErr          bson.RawValue
	)
	for i, st := range stmts {
		sub, subCmd := singleStatement(m, cmd, st)
		rs, err := cn.loggedWrite(ctx, sub, subCmd)
		if err != nil {
			return nil, err
		}
		if len(rs) != 1 {
			return rs, nil
		}
		reply, err := replyBody(rs[0])
		if err != nil {
			return rs, nil
		}
		if ok, _ := asInt(reply.Lookup("ok")); ok != 1 {
			return rs, nil // the command failed whole: its answer is the answer
		}
		last = reply
		x, _ := asInt(reply.Lookup("n"))
		n += x
		x, _ = asInt(reply.Lookup("nModified"))
		modified += x
		if v := reply.Lookup("writeConcernError"); v.Type != 0 {
			wcErr = v
		}
		failed := false
		for _, key := range []string{"upserted", "writeErrors"} {
			arr, ok := reply.Lookup(key).ArrayOK()
			if !ok {
				continue
			}
			vals, _ := arr.Values()
			for _, v := range vals {
				d := reindexed(v.Document(), i)
				if key == "upserted" {
					upserted = append(upserted, d)
				} else {
					errs = append(errs, d)
					failed = true
				}
			}
		}
		if failed && ordered {
			break
		}
	}
	out := bson.D{{Key: "n", Value: int32(n)}, {Key: "nModified", Value: int32(modified)}}
	if len(upserted) > 0 {
		out = append(out, bson.E{Key: "upserted", Value: upserted})
	}
	if len(errs) > 0 {
		out = append(out, bson.E{Key: "writeErrors", Value: errs})
	}
	if wcErr.Type != 0 {
		out = append(out, bson.E{Key: "writeConcernError", Value: wcErr})
	}
	elems, _ := last.Elements()
	for _, e := range elems {
		switch e.Key() {
		case "n", "nModified", "upserted", "writeErrors", "writeConcernError":
		default:
			out = append(out, bson.E{Key: e.Key(), Value: e.Value()})
		}
	}
	b, _ := bson.Marshal(out)
	return []message{msgReply(m.requestID(), b)}, nil
}

// singleStatement is update command cmd (of message m) with st as its
// only statement.
func singleStatement(m message, cmd command, st bson.Raw) (message, command) {
	elems, _ := cmd.body.Elements()
	d := bson.D{}
	for _, e := range elems {
		if e.Key() != "updates" {
			d = append(d, bson.E{Key: e.Key(), Value: e.Value()})
		}
	}
	d = append(d, bson.E{Key: "updates", Value: bson.A{st}})
	body, _ := bson.Marshal(d)
	return withBody(m, body), command{body: body}
}

// withBody is request m with body instead of its own (and no document
// sequences).
func withBody(m message, body []byte) message {
	out := msgReply(0, body) // an OP_MSG of body
	binary.LittleEndian.PutUint32(out[4:], uint32(m.requestID()))
	binary.LittleEndian.PutUint32(out[16:], m.flags()&flagMoreToCome)
	return out
}

// withoutDropTarget does a renameCollection's dropTarget itself, which
// FerretDB 1.24 does not: it drops the target (when the source exists
// and is another collection) without an event of its own, and returns the command without
// dropTarget. On MongoDB the target's streams see the rename and an
// invalidate, as they do here from the rename's event.
func (f *Front) withoutDropTarget(ctx context.Context, m message, cmd command) (message, command) {
	drop, _ := cmd.body.Lookup("dropTarget").BooleanOK()
	if !drop || f.cfg.Lookup == nil {
		return m, cmd
	}
	from, _ := cmd.body.Lookup(cmd.name()).StringValueOK()
	to, _ := cmd.body.Lookup("to").StringValueOK()
	fdb, fcoll, _ := strings.Cut(from, ".")
	if tdb, tcoll, ok := strings.Cut(to, "."); ok && from != to && f.exists(ctx, fdb, fcoll) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = f.cfg.Lookup.Database(tdb).Collection(tcoll).Drop(ctx)
	}
	elems, _ := cmd.body.Elements()
	d := bson.D{}
	for _, e := range elems {
		if e.Key() != "dropTarget" {
			d = append(d, bson.E{Key: e.Key(), Value: e.Value()})
		}
	}
	body, _ := bson.Marshal(d)
	return withBody(m, body), command{body: body}
}

// reindexed is an upserted or writeErrors entry of a one-statement
// reply, at the index of statement i.
func reindexed(d bson.Raw, i int) bson.D {
	elems, _ := d.Elements()
	out := bson.D{}
	for _, e := range elems {
		if e.Key() == "index" {
			out = append(out, bson.E{Key: "index", Value: int32(i)})
			continue
		}
		out = append(out, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return out
}
