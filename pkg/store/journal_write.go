package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Writing the journal. SQLite commits one write at a time, and a journal
// document written for every save halved a drain on devmongo. So a
// process gathers the entries of its saves into batches, one document
// each: the document is inserted open ({_id, open: true}) before the
// first result of its batch is, and replaced by the batch's entries when
// the batch closes: flushEvery after it opened, when its second ends, or
// at bulkEntries entries. A save costs its result's insert and a share
// of two journal writes per batch.
//
// A reader must not miss a result stored before it reads, so it reads
// this process's open batches from memory, and waits for another
// process's to close (within flushEvery, normally): a read that reaches
// the newest second may wait that long. A batch that does not close
// within closeWait has that second read by scanning. An open document
// older than repairAfter was left by a writer that died: the reader
// reads that second's results by scanning, once, and closes the document
// with them (repair).
const (
	flushEvery   = 50 * time.Millisecond
	closeTimeout = 5 * time.Second
	closeWait    = 2 * time.Second
	repairAfter  = time.Minute
)

// batch is an open journal document and the entries gathered for it.
type batch struct {
	key    string
	es     []entry
	opened time.Time
}

// writing is this process's batches.
type writing struct {
	mu       sync.Mutex
	open     map[int64]*batch // the batch taking entries, by second
	closing  []*batch         // batches to close, oldest first
	streams  map[int64]stream // this process's stream of a second and its next place
	flushing bool             // the flusher runs
}

// add puts the entry of a result with id stored at at in a batch, before
// the result is written: when the batch is new, its document is inserted
// first.
func (j *journal) add(ctx context.Context, id uint64, at time.Time) error {
	sec := at.Unix()
	if err := j.mark(ctx, sec); err != nil {
		return err
	}
	w := &j.w
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.open[sec]
	if b == nil || len(b.es) >= bulkEntries {
		if b != nil {
			w.closing = append(w.closing, b)
			delete(w.open, sec)
		}
		var err error
		if b, err = j.openBatch(ctx, sec); err != nil {
			return fmt.Errorf("journal result %d: %w", id, err)
		}
	}
	b.es = append(b.es, entry{ID: id, At: at})
	return nil
}

// openBatch inserts the next open document of this process's stream of
// sec, registering a stream first when it has none. w.mu is held.
func (j *journal) openBatch(ctx context.Context, sec int64) (*batch, error) {
	w := &j.w
	st, ok := w.streams[sec]
	open := func(k, n int) bson.D {
		return bson.D{{Key: "_id", Value: entryKey(sec, k, n)}, {Key: "open", Value: true}}
	}
	if !ok || st.n >= maxStreamLen {
		// A new stream and its first batch in one insert.
		var err error
		if st, err = j.register(ctx, sec, func(k int) []any { return []any{open(k, 0)} }); err != nil {
			delete(w.streams, sec)
			return nil, err
		}
	} else if _, err := j.coll.InsertOne(ctx, open(st.k, st.n)); err != nil {
		delete(w.streams, sec) // its next place is in doubt: the next batch takes a new stream
		return nil, wrap("open a journal batch", err)
	}
	key := entryKey(sec, st.k, st.n)
	st.n++
	w.streams[sec] = st
	b := &batch{key: key, opened: time.Now()}
	w.open[sec] = b
	if !w.flushing {
		w.flushing = true
		go j.flusher()
	}
	return b, nil
}

// flusher closes the batches as they fall due, and ends when none is
// left open.
func (j *journal) flusher() {
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for range t.C {
		if !j.flush(context.Background(), false) {
			return
		}
	}
}

// flush closes the batches that are due, all of them when all is set,
// and reports whether some are left open or failed to close (then the
// flusher keeps running).
func (j *journal) flush(ctx context.Context, all bool) (more bool) {
	w := &j.w
	now := time.Now()
	w.mu.Lock()
	for sec, b := range w.open {
		if all || now.Sub(b.opened) >= flushEvery || sec < now.Unix() {
			w.closing = append(w.closing, b)
			delete(w.open, sec)
		}
	}
	for sec := range w.streams {
		if sec < now.Unix()-1 && w.open[sec] == nil {
			delete(w.streams, sec)
		}
	}
	// They stay in closing, where readers of this process find their
	// entries, until their documents hold them.
	due := slices.Clone(w.closing)
	w.mu.Unlock()

	closed := map[*batch]bool{}
	for _, b := range due {
		cctx, cancel := context.WithTimeout(ctx, closeTimeout)
		_, err := j.coll.ReplaceOne(cctx, bson.D{{Key: "_id", Value: b.key}}, entriesDoc(b.key, b.es))
		cancel()
		closed[b] = err == nil // else tried again next time
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.closing = slices.DeleteFunc(w.closing, func(b *batch) bool { return closed[b] })
	more = len(w.open) > 0 || len(w.closing) > 0
	if !more {
		w.flushing = false
	}
	return more
}

// pending returns the entries this process gathered for the open
// document key, and whether it is one of this process's.
func (j *journal) pending(key string) ([]entry, bool) {
	w := &j.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.open {
		if b.key == key {
			return append([]entry(nil), b.es...), true
		}
	}
	for _, b := range w.closing {
		if b.key == key {
			return append([]entry(nil), b.es...), true
		}
	}
	return nil, false
}

// Flush closes every batch of this process's journal, for a process
// that stops: what it saved shows in other processes' reads at once,
// instead of after repairAfter.
func (s *Results) Flush(ctx context.Context) error {
	for s.journal.flush(ctx, true) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("close the journal's batches: %w", ctx.Err())
		case <-time.After(flushEvery):
		}
	}
	return nil
}
