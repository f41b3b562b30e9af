package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
)

// The journal gives FerretDB's keyed layout its completion order. FerretDB
// 1.24 sorts only by $natural and filters by index only on _id equal to a
// string, so a read in stored order (the newest results, the results after
// a cursor) would read the whole collection. The journal is made of small
// documents in the collection <results>_order whose string _ids a reader
// can compute, so that every read is a lookup by _id, and a read in
// stored order costs what it returns, not what is stored:
//
//   - entries {_id: "e<second>.<stream>.<n>", es: [{id, at}, …]}: a batch
//     of one process's saves (journal_write.go), or up to bulkEntries
//     imported results, written before the results: <second> is
//     stored_at's Unix second (11 digits), <stream> a slot of that second
//     that one writer took (4 digits), <n> the document's place in that
//     stream (6 digits), counted from 0 without gaps;
//   - a registration {_id: "r<second>.<stream>"} per stream, taken by an
//     insert that fails when another writer has the slot: the taken slots
//     of a second are always 0, 1, 2 … without gaps;
//   - markers {_id: "<level><unit>"} for each era (512 days), month (32
//     days), day, hour and minute that has an entry, written before its
//     first entry, so a reader skips empty stretches a level at a time,
//     with at most 60 lookups a level;
//   - a document {_id: "complete"}, written once every result stored
//     before the journal existed has an entry (ensure backfills them).
//
// A stream is written by one process and dropped when an insert into it
// fails, so its documents have no gaps: a reader reads a stream until
// its first missing document, journalLookups at a time. An entry whose
// result is missing or has another stored_at (a save that failed after
// its entry, or a second save of a stored id) is skipped, so the results
// read are exactly those stored, in the order (stored_at, _id). Results written around the
// store (by hand, or by the original system) have no entries: until a
// collection's journal is complete, the store reads as before, by
// scanning.

// OrderSuffix names the journal's collection after the results'.
const OrderSuffix = "_order"

// Journal limits: streams per second, entries per stream, how far past
// this process's clock the newest reads look (other writers' clocks may
// be ahead), and how many lookups run at once.
const (
	maxStreams     = 10_000
	maxStreamLen   = 1_000_000
	bulkEntries    = 512
	maxHints       = 1024 // seconds whose next free slot a process remembers
	journalAhead   = time.Hour
	journalLookups = 8
)

// units are the markers' levels, in seconds, widest first; their letters
// start the markers' _ids. The last level, seconds, has no markers: a
// second has entries when its stream 0 is registered.
var (
	units   = []int64{512 * 86_400, 32 * 86_400, 86_400, 3_600, 60, 1}
	letters = "EWDHM"
)

func markerKey(level int, unit int64) string  { return fmt.Sprintf("%c%011d", letters[level], unit) }
func registrationKey(sec int64, k int) string { return fmt.Sprintf("r%011d.%04d", sec, k) }
func entryKey(sec int64, k, n int) string     { return fmt.Sprintf("e%011d.%04d.%06d", sec, k, n) }

const completeID = "complete"

// entry is one saved result's place in the journal.
type entry struct {
	ID uint64    `bson:"id"`
	At time.Time `bson:"at"`
}

func (e entry) before(f entry) bool { return byEntryOrder(e, f) < 0 }

// byEntryOrder orders entries by (at, id), the stored order.
func byEntryOrder(a, b entry) int { return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.ID, b.ID)) }

// stream is a writer's slot in one second and its next document's place.
type stream struct {
	k int
	n int
}

// journal is a store's journal and this process's writing state.
type journal struct {
	coll    *mongo.Collection
	results *mongo.Collection

	mu     sync.Mutex
	next   map[int64]int // the slot to try first when registering, by second
	marked [5]int64      // the last unit of each level this process marked, +1
	ready  bool          // the journal is complete

	w writing // journal_write.go
}

func newJournal(results *mongo.Collection) *journal {
	return &journal{
		coll:    results.Database().Collection(results.Name() + OrderSuffix),
		results: results,
		next:    map[int64]int{},
		w:       writing{open: map[int64]*batch{}, streams: map[int64]stream{}},
	}
}

// addMany writes the entries of results imported in bulk, a stream per
// second, each stream's entries in order.
func (j *journal) addMany(ctx context.Context, es []entry) error {
	bySec := map[int64][]entry{}
	for _, e := range es {
		bySec[e.At.Unix()] = append(bySec[e.At.Unix()], e)
	}
	for sec, es := range bySec {
		if err := j.mark(ctx, sec); err != nil {
			return err
		}
		st, err := j.register(ctx, sec, nil)
		if err != nil {
			return err
		}
		var docs []any
		for chunk := range slices.Chunk(es, bulkEntries) {
			docs = append(docs, entriesDoc(entryKey(sec, st.k, len(docs)), chunk))
		}
		// Ordered: an insert that fails leaves the ones before it only.
		if _, err := j.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true)); err != nil {
			return wrap(fmt.Sprintf("journal %d imported results", len(es)), err)
		}
	}
	return nil
}

// entriesDoc is the journal document key of es.
func entriesDoc(key string, es []entry) bson.D {
	list := make(bson.A, len(es))
	for i, e := range es {
		list[i] = bson.D{{Key: "id", Value: int64(e.ID)}, {Key: "at", Value: e.At}}
	}
	return bson.D{{Key: "_id", Value: key}, {Key: "es", Value: list}}
}

// mark writes the markers of sec's era, month, day, hour and minute that
// this process has not written yet.
func (j *journal) mark(ctx context.Context, sec int64) error {
	for level := range len(letters) {
		unit := sec / units[level]
		j.mu.Lock()
		done := j.marked[level] == unit+1
		j.mu.Unlock()
		if done {
			continue
		}
		if err := j.insertOnce(ctx, markerKey(level, unit)); err != nil {
			return err
		}
		j.mu.Lock()
		j.marked[level] = unit + 1
		j.mu.Unlock()
	}
	return nil
}

// insertOnce inserts {_id: key} unless it is there.
func (j *journal) insertOnce(ctx context.Context, key string) error {
	_, err := j.coll.InsertOne(ctx, bson.D{{Key: "_id", Value: key}})
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return wrap("journal marker "+key, err)
	}
	return nil
}

// register takes the first free slot of sec from the one this process
// saw last: every slot below it is taken, so the taken slots stay
// without gaps. The documents with(k) gives, if any, are inserted in
// the same ordered insert, after the registration: one round trip, and
// none of them when the slot is taken.
func (j *journal) register(ctx context.Context, sec int64, with func(k int) []any) (stream, error) {
	j.mu.Lock()
	k := j.next[sec]
	j.mu.Unlock()
	for ; k < maxStreams; k++ {
		docs := []any{bson.D{{Key: "_id", Value: registrationKey(sec, k)}}}
		if with != nil {
			docs = append(docs, with(k)...)
		}
		_, err := j.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true))
		if taken(err) {
			continue
		}
		if err != nil {
			return stream{}, wrap("register a journal stream", err)
		}
		j.mu.Lock()
		j.next[sec] = max(j.next[sec], k+1)
		if len(j.next) > maxHints { // only a hint: keep the newest seconds'
			for s := range j.next {
				if s < sec-1 {
					delete(j.next, s)
				}
			}
		}
		j.mu.Unlock()
		return stream{k: k}, nil
	}
	return stream{}, fmt.Errorf("journal: more than %d streams in second %d", maxStreams, sec)
}

// taken reports an insert that failed because its first document, a
// registration, exists.
func taken(err error) bool {
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0 {
		return bwe.WriteErrors[0].Index == 0 && mongo.IsDuplicateKeyError(bwe.WriteErrors[0])
	}
	return false
}

// complete reports whether every result has an entry, asking the
// server until it says so.
func (j *journal) complete(ctx context.Context) (bool, error) {
	j.mu.Lock()
	ready := j.ready
	j.mu.Unlock()
	if ready {
		return true, nil
	}
	ok, err := j.exists(ctx, completeID)
	if err != nil || !ok {
		return false, err
	}
	j.mu.Lock()
	j.ready = true
	j.mu.Unlock()
	return true, nil
}

// ensure makes the journal complete: it reads every stored result's id
// and stored_at once (a collection read whole, the one time) and writes
// their entries, then the completion mark. Results saved meanwhile have
// entries of their own; a result with two entries is read once.
func (j *journal) ensure(ctx context.Context, results *mongo.Collection) error {
	if ok, err := j.complete(ctx); ok || err != nil {
		return err
	}
	cur, err := results.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "stored_at", Value: 1}}))
	if err != nil {
		return wrap("read the results to journal", err)
	}
	var stored []job.Result // decodes the keyed _id
	if err := cur.All(ctx, &stored); err != nil {
		return wrap("read the results to journal", err)
	}
	var es []entry
	for _, r := range stored {
		if !r.StoredAt.IsZero() { // the original's results are never read in stored order
			es = append(es, entry{ID: r.ID, At: r.StoredAt})
		}
	}
	if err := j.addMany(ctx, es); err != nil {
		return err
	}
	return j.insertOnce(ctx, completeID)
}

// exists reports whether a document has _id key.
func (j *journal) exists(ctx context.Context, key string) (bool, error) {
	err := j.coll.FindOne(ctx, bson.D{{Key: "_id", Value: key}}, options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, wrap("read the journal", err)
	}
	return true, nil
}

// existing reports which of keys exist, journalLookups at a time.
func (j *journal) existing(ctx context.Context, keys []string) ([]bool, error) {
	out := make([]bool, len(keys))
	err := each(ctx, journalLookups, len(keys), func(ctx context.Context, i int) (err error) {
		out[i], err = j.exists(ctx, keys[i])
		return err
	})
	return out, err
}

// each runs fn for 0..n-1, workers at a time, and returns the first
// error; the others stop at their next index once one fails.
func each(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, n)
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n || ctx.Err() != nil {
					return
				}
				if errs[i] = fn(ctx, i); errs[i] != nil {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// second returns the entries of second sec, in no order.
func (j *journal) second(ctx context.Context, sec int64) ([]entry, error) {
	ks, err := j.slots(ctx, sec)
	if err != nil {
		return nil, err
	}
	var out []entry
	var stale []string
	for _, k := range ks {
		es, left, err := j.stream(ctx, sec, k)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
		stale = append(stale, left...)
	}
	if len(stale) > 0 {
		es, err := j.repair(ctx, sec, stale)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	return out, nil
}

// slots returns the registered stream slots of second sec: 0, 1, 2 …
// up to the first free one.
func (j *journal) slots(ctx context.Context, sec int64) ([]int, error) {
	var ks []int
	for k := 0; k < maxStreams; k++ {
		ok, err := j.exists(ctx, registrationKey(sec, k))
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// stream returns the entries of stream k of second sec, reading its
// documents journalLookups at a time until the first missing one, and
// the open documents that writers left (journal_write.go).
func (j *journal) stream(ctx context.Context, sec int64, k int) (out []entry, stale []string, err error) {
	for n := 0; n < maxStreamLen; n += journalLookups {
		docs := make([]struct {
			Es   []entry `bson:"es"`
			Open bool    `bson:"open"`
			mine bool
		}, journalLookups)
		found := make([]bool, journalLookups)
		err := each(ctx, journalLookups, journalLookups, func(ctx context.Context, i int) error {
			// This process's own batch first: once it is not pending, its
			// document holds its entries, read below.
			if es, ok := j.pending(entryKey(sec, k, n+i)); ok {
				docs[i].Es, docs[i].mine, found[i] = es, true, true
				return nil
			}
			err := j.coll.FindOne(ctx, bson.D{{Key: "_id", Value: entryKey(sec, k, n+i)}}).Decode(&docs[i])
			if errors.Is(err, mongo.ErrNoDocuments) {
				return nil
			}
			if err != nil {
				return wrap("read the journal", err)
			}
			found[i] = true
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		for i, d := range docs {
			if !found[i] {
				return out, stale, nil
			}
			key := entryKey(sec, k, n+i)
			switch {
			case d.mine || !d.Open:
				out = append(out, d.Es...)
			case time.Unix(sec, 0).Before(time.Now().Add(-repairAfter)):
				stale = append(stale, key)
			default:
				// Another process's batch, still open: its results may be
				// stored already, so wait for it to close; when it does
				// not in time, read the second by scanning.
				es, closed, err := j.awaitClose(ctx, key)
				if err != nil {
					return nil, nil, err
				}
				if !closed {
					stale = append(stale, "") // scan, but leave it to its writer
					continue
				}
				out = append(out, es...)
			}
		}
	}
	return out, stale, nil
}

// awaitClose waits for another process's open batch to close, for at
// most closeWait, and returns its entries.
func (j *journal) awaitClose(ctx context.Context, key string) (es []entry, closed bool, err error) {
	deadline := time.Now().Add(closeWait)
	for {
		var doc struct {
			Es   []entry `bson:"es"`
			Open bool    `bson:"open"`
		}
		err := j.coll.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&doc)
		if err != nil {
			return nil, false, wrap("read the journal", err)
		}
		if !doc.Open {
			return doc.Es, true, nil
		}
		if time.Now().After(deadline) {
			return nil, false, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(flushEvery / 2):
		}
	}
}

// repair reads the results of second sec by scanning (a writer died with
// batches of that second open, or has not closed one in time: their
// entries are unknown) and closes the open documents keys with them, the
// first holding them all; an empty key is a batch left to its writer.
func (j *journal) repair(ctx context.Context, sec int64, keys []string) ([]entry, error) {
	from := time.Unix(sec, 0).UTC()
	filter := bson.D{{Key: "stored_at", Value: bson.D{{Key: "$gte", Value: from}, {Key: "$lt", Value: from.Add(time.Second)}}}}
	cur, err := j.results.Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "stored_at", Value: 1}}))
	if err != nil {
		return nil, wrap("read the results of a journal batch left open", err)
	}
	var rs []job.Result
	if err := cur.All(ctx, &rs); err != nil {
		return nil, wrap("read the results of a journal batch left open", err)
	}
	es := make([]entry, len(rs))
	for i, r := range rs {
		es[i] = entryOf(r)
	}
	first := true
	for _, key := range keys {
		if key == "" {
			continue // a batch whose writer may still close it
		}
		var put []entry
		if first {
			put, first = es, false
		}
		if _, err := j.coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: key}}, entriesDoc(key, put)); err != nil {
			return nil, wrap("close a journal batch left open", err)
		}
	}
	return es, nil
}

// walk calls visit with the entries of each second in [lo, hi] that has
// some, in ascending order of seconds or, when desc, descending, until
// visit returns false or an error.
func (j *journal) walk(ctx context.Context, lo, hi int64, desc bool, visit func(sec int64, es []entry) (bool, error)) error {
	_, err := j.walkLevel(ctx, 0, lo, hi, desc, visit)
	return err
}

func (j *journal) walkLevel(ctx context.Context, level int, lo, hi int64, desc bool, visit func(int64, []entry) (bool, error)) (more bool, err error) {
	size := units[level]
	var us []int64
	for u := lo / size; u <= hi/size; u++ {
		us = append(us, u)
	}
	if desc {
		slices.Reverse(us)
	}
	// Probe a batch of units at once, and the next batch only when the
	// walk goes on past this one.
	for batch := range slices.Chunk(us, journalLookups) {
		keys := make([]string, len(batch))
		for i, u := range batch {
			if level == len(letters) { // seconds: stream 0 marks them
				keys[i] = registrationKey(u, 0)
			} else {
				keys[i] = markerKey(level, u)
			}
		}
		have, err := j.existing(ctx, keys)
		if err != nil {
			return false, err
		}
		for i, u := range batch {
			if !have[i] {
				continue
			}
			if level < len(letters) {
				more, err := j.walkLevel(ctx, level+1, max(lo, u*size), min(hi, (u+1)*size-1), desc, visit)
				if !more || err != nil {
					return false, err
				}
				continue
			}
			es, err := j.second(ctx, u)
			if err != nil {
				return false, err
			}
			if more, err := visit(u, es); !more || err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// reader is what the journal's reads need of the store: the results of
// ids, by one lookup each.
type reader func(ctx context.Context, ids []uint64) (map[uint64]job.Result, error)

// results returns up to want results of es, taken in the order of es
// (all when want is 0 or less): those stored with the entry's stored_at,
// each once, those of seen left out and added to it. It reads them a
// chunk at a time, as many as are still wanted, so that the newest
// result of a busy second costs one lookup, not one per entry.
func results(ctx context.Context, read reader, es []entry, seen map[uint64]bool, want int) ([]job.Result, error) {
	var out []job.Result
	for len(es) > 0 && (want <= 0 || len(out) < want) {
		size := len(es)
		if want > 0 {
			size = min(size, want-len(out))
		}
		chunk := es[:size]
		es = es[size:]
		ids := make([]uint64, 0, len(chunk))
		for _, e := range chunk {
			if !seen[e.ID] {
				ids = append(ids, e.ID)
			}
		}
		found, err := read(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, e := range chunk {
			r, ok := found[e.ID]
			if ok && !seen[e.ID] && r.StoredAt.Equal(e.At) {
				seen[e.ID] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// byStoredOrder orders results by (stored_at, _id).
func byStoredOrder(a, b job.Result) int {
	return cmp.Or(a.StoredAt.Compare(b.StoredAt), cmp.Compare(a.ID, b.ID))
}

func entryOf(r job.Result) entry { return entry{ID: r.ID, At: r.StoredAt} }

// newest returns the newest n stored results before the position
// (at, id) in stored order (before none when at is zero), oldest first.
func (j *journal) newest(ctx context.Context, read reader, n int, at time.Time, id uint64) ([]job.Result, error) {
	hi := time.Now().Add(journalAhead).Unix()
	limit := entry{ID: id, At: at}
	if !at.IsZero() {
		hi = at.Unix()
	}
	var out []job.Result
	seen := map[uint64]bool{}
	err := j.walk(ctx, 0, hi, true, func(_ int64, es []entry) (bool, error) {
		if !at.IsZero() {
			es = slices.DeleteFunc(es, func(e entry) bool { return !e.before(limit) })
		}
		slices.SortFunc(es, func(a, b entry) int { return byEntryOrder(b, a) })
		rs, err := results(ctx, read, es, seen, n-len(out))
		out = append(out, rs...)
		return len(out) < n, err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, byStoredOrder)
	return out[max(0, len(out)-n):], nil
}

// after returns the first limit stored results after (at, id) in stored
// order, all of them when limit is 0 or less.
func (j *journal) after(ctx context.Context, read reader, at time.Time, id uint64, limit int) ([]job.Result, error) {
	from := entry{ID: id, At: at}
	var out []job.Result
	seen := map[uint64]bool{}
	err := j.walk(ctx, at.Unix(), time.Now().Add(journalAhead).Unix(), false, func(_ int64, es []entry) (bool, error) {
		es = slices.DeleteFunc(es, func(e entry) bool { return !from.before(e) })
		slices.SortFunc(es, byEntryOrder)
		rs, err := results(ctx, read, es, seen, limit-len(out))
		out = append(out, rs...)
		return limit <= 0 || len(out) < limit, err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, byStoredOrder)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// count returns how many results are stored in [from, to).
func (j *journal) count(ctx context.Context, read reader, from, to time.Time) (int64, error) {
	if !from.Before(to) {
		return 0, nil
	}
	var n int64
	seen := map[uint64]bool{}
	err := j.walk(ctx, from.Unix(), to.Add(-time.Millisecond).Unix(), false, func(_ int64, es []entry) (bool, error) {
		es = slices.DeleteFunc(es, func(e entry) bool { return e.At.Before(from) || !e.At.Before(to) })
		rs, err := results(ctx, read, es, seen, 0)
		n += int64(len(rs))
		return true, err
	})
	return n, err
}

// expire deletes the results stored in the whole seconds before cut,
// with their journal, oldest first: it reads what it deletes, not the
// collection. del deletes results by id. It returns how many results it
// deleted.
func (j *journal) expire(ctx context.Context, read reader, del func(ctx context.Context, ids []uint64) error, cut time.Time) (int64, error) {
	var n int64
	var secs []int64
	err := j.walk(ctx, 0, cut.Unix()-1, false, func(sec int64, es []entry) (bool, error) {
		rs, err := results(ctx, read, es, map[uint64]bool{}, 0)
		if err != nil {
			return false, err
		}
		ids := make([]uint64, len(rs))
		for i, r := range rs {
			ids[i] = r.ID
		}
		if err := del(ctx, ids); err != nil {
			return false, err
		}
		n += int64(len(ids))
		secs = append(secs, sec)
		return true, j.drop(ctx, sec)
	})
	if err != nil {
		return n, err
	}
	// The markers of the units that lie wholly before cut.
	for level := range len(letters) {
		var keys []string
		for _, sec := range secs {
			u := sec / units[level]
			key := markerKey(level, u)
			if (u+1)*units[level] <= cut.Unix() && (len(keys) == 0 || keys[len(keys)-1] != key) {
				keys = append(keys, key)
			}
		}
		if err := j.deleteAll(ctx, keys); err != nil {
			return n, err
		}
	}
	return n, nil
}

// drop deletes second sec's journal: its streams' documents, then their
// registrations.
func (j *journal) drop(ctx context.Context, sec int64) error {
	ks, err := j.slots(ctx, sec)
	if err != nil {
		return err
	}
	var keys []string
	for _, k := range ks {
		keys = append(keys, registrationKey(sec, k))
		for n := 0; n < maxStreamLen; n += journalLookups {
			gone := make([]bool, journalLookups)
			err := each(ctx, journalLookups, journalLookups, func(ctx context.Context, i int) error {
				res, err := j.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: entryKey(sec, k, n+i)}})
				if err != nil {
					return wrap("delete expired journal entries", err)
				}
				gone[i] = res.DeletedCount == 0
				return nil
			})
			if err != nil {
				return err
			}
			if slices.Contains(gone, true) {
				break
			}
		}
	}
	// Registrations last, highest first, so that the slots stay without
	// gaps until the last is gone.
	slices.Reverse(keys)
	for _, key := range keys {
		if _, err := j.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: key}}); err != nil {
			return wrap("delete expired journal registrations", err)
		}
	}
	return nil
}

// deleteAll deletes the documents of keys, journalLookups at a time.
func (j *journal) deleteAll(ctx context.Context, keys []string) error {
	return each(ctx, journalLookups, len(keys), func(ctx context.Context, i int) error {
		if _, err := j.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: keys[i]}}); err != nil {
			return wrap("delete expired journal markers", err)
		}
		return nil
	})
}

// expireByJournal deletes the results stored before cut by the journal,
// when the store keeps a complete one; done is false when it does not.
func (s *Results) expireByJournal(ctx context.Context, cut time.Time) (n int64, done bool, err error) {
	j, b, err := s.ordered(ctx)
	if err != nil || j == nil {
		return 0, false, err
	}
	del := func(ctx context.Context, ids []uint64) error {
		return each(ctx, journalLookups, len(ids), func(ctx context.Context, i int) error {
			_, err := s.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: b.key(ids[i])}})
			return err
		})
	}
	n, err = j.expire(ctx, s.lookup(b, true), del, cut)
	if err != nil {
		return n, true, wrap("delete expired results", err)
	}
	return n, true, nil
}
