package front

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// event is one committed change, as the log keeps it. The document a
// change stream returns is built from it when a cursor reads it, with
// that cursor's options.
type event struct {
	seq  uint64
	ts   bson.Timestamp
	wall time.Time
	op   string // insert, update, replace, delete, drop, rename, dropDatabase
	db   string
	coll string
	key  bson.Raw // documentKey, {_id: ...}
	full bson.Raw // the document after an insert or replace
	upd  bson.Raw // updateDescription of an update
	// toDB and toColl are a rename's target.
	toDB, toColl string
	size         int
}

// invalidates reports whether e ends a change stream on db.coll: a drop
// of it, a rename of it or onto it. dropDatabase does not: the drop of
// each collection it held comes first and ends their streams, and a
// stream on a collection that never existed goes on (the server's
// change_stream_filter_helpers.cpp, a collection stream's invalidation
// filter).
func (e *event) invalidates(db, coll string) bool {
	switch e.op {
	case "drop":
		return e.db == db && e.coll == coll
	case "rename":
		return (e.db == db && e.coll == coll) || (e.toDB == db && e.toColl == coll)
	}
	return false
}

// concerns reports whether e belongs to a stream on db.coll.
func (e *event) concerns(db, coll string) bool {
	switch e.op {
	case "dropDatabase":
		// A collection stream sees its collection's drop, then the
		// invalidate; MongoDB shows it no dropDatabase event.
		return false
	case "rename":
		return (e.db == db && e.coll == coll) || (e.toDB == db && e.toColl == coll)
	}
	return e.db == db && e.coll == coll
}

// eventLog is the history of changes this process has seen, bounded by
// count and bytes: the oldest fall out first, as an oplog rolls over.
type eventLog struct {
	mu       sync.Mutex
	epoch    uint64 // this process's start, in tokens: another epoch is history lost
	startTS  bson.Timestamp
	events   []*event
	first    uint64 // seq of events[0]; the next seq when empty
	bytes    int
	maxCount int
	maxBytes int
	lastTS   bson.Timestamp
	// dropped is the clusterTime of the newest event that fell out.
	dropped bson.Timestamp
	// wake is closed and replaced whenever events are appended.
	wake chan struct{}
}

func newEventLog(maxCount, maxBytes int) *eventLog {
	now := time.Now()
	l := &eventLog{epoch: uint64(now.UnixNano()), first: 1, maxCount: maxCount, maxBytes: maxBytes, wake: make(chan struct{})}
	l.startTS = l.nextTS(now)
	return l
}

// nextTS returns a cluster time after every one given before; l.mu is
// held (or l is not shared yet).
func (l *eventLog) nextTS(now time.Time) bson.Timestamp {
	t := uint32(now.Unix())
	if t > l.lastTS.T {
		l.lastTS = bson.Timestamp{T: t, I: 1}
	} else {
		l.lastTS.I++
	}
	return l.lastTS
}

// now returns the current cluster time without taking a new one: what an
// idle stream's high-water mark says.
func (l *eventLog) now() bson.Timestamp {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := uint32(time.Now().Unix())
	if t > l.lastTS.T {
		return bson.Timestamp{T: t, I: 0}
	}
	return l.lastTS
}

// append stamps and stores events, in the order given, and wakes the
// waiting cursors.
func (l *eventLog) append(evs ...*event) {
	if len(evs) == 0 {
		return
	}
	l.mu.Lock()
	now := time.Now()
	for _, e := range evs {
		e.seq = l.first + uint64(len(l.events))
		e.ts = l.nextTS(now)
		e.wall = now.Truncate(time.Millisecond)
		e.size = 200 + len(e.key) + len(e.full) + len(e.upd)
		l.events = append(l.events, e)
		l.bytes += e.size
	}
	for len(l.events) > 0 && (len(l.events) > l.maxCount || l.bytes > l.maxBytes) {
		old := l.events[0]
		l.events[0] = nil
		l.events = l.events[1:]
		l.bytes -= old.size
		l.first++
		l.dropped = old.ts
	}
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// at returns the event with seq, nil when it is not in the history.
func (l *eventLog) at(seq uint64) *event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq < l.first || seq-l.first >= uint64(len(l.events)) {
		return nil
	}
	return l.events[seq-l.first]
}

// head is the seq of the newest event (first-1 when there is none).
func (l *eventLog) head() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first + uint64(len(l.events)) - 1
}

// after returns up to max events after seq, and the channel that is
// closed when more arrive. lost says that events after seq fell out of
// the history.
func (l *eventLog) after(seq uint64, max int) (evs []*event, wake <-chan struct{}, lost bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq+1 < l.first {
		return nil, l.wake, true
	}
	i := int(seq + 1 - l.first)
	if i < len(l.events) {
		evs = l.events[i:min(len(l.events), i+max)]
	}
	return evs, l.wake, false
}

// seqBefore returns the seq after which a stream that starts at cluster
// time ts begins, or lost when events at or after ts are gone.
func (l *eventLog) seqBefore(ts bson.Timestamp) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ts.Before(l.startTS) || (!l.dropped.IsZero() && !l.dropped.Before(ts)) {
		return 0, true
	}
	seq := l.first - 1
	for _, e := range l.events {
		if !e.ts.Before(ts) {
			break
		}
		seq = e.seq
	}
	return seq, false
}

// Resume tokens. MongoDB's are opaque hex strings under _data; these
// carry the cluster time (so they sort as MongoDB's do), this process's
// epoch, the seq the stream resumes after and what kind of point it is.
const (
	tokEvent      = 0
	tokInvalidate = 1
	tokHighWater  = 2
	tokLen        = 8 + 8 + 8 + 1
)

type token struct {
	ts    bson.Timestamp
	epoch uint64
	seq   uint64
	kind  byte
}

func (t token) doc() bson.D {
	var b [tokLen]byte
	binary.BigEndian.PutUint32(b[0:], t.ts.T)
	binary.BigEndian.PutUint32(b[4:], t.ts.I)
	binary.BigEndian.PutUint64(b[8:], t.epoch)
	binary.BigEndian.PutUint64(b[16:], t.seq)
	b[24] = t.kind
	return bson.D{{Key: "_data", Value: "82" + strings.ToUpper(hex.EncodeToString(b[:]))}}
}

// parseToken reads a resume token, or returns MongoDB's answer to one
// it cannot read (the server's ResumeToken::parse and its KeyString
// decoding).
func parseToken(v bson.RawValue) (token, []byte) {
	d, _ := v.DocumentOK()
	s, ok := d.Lookup("_data").StringValueOK()
	if !ok {
		return token{}, errorBody(codeBadTokenData, "Location40647", "Bad resume token: _data of missing or of wrong type. Expected string, got "+typeName(d.Lookup("_data").Type))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return token{}, errorBody(codeFailedToParse, "FailedToParse", "resume token string was not a valid hex string")
	}
	if len(b) != 1+tokLen || b[0] != 0x82 || b[25] > tokHighWater {
		// Hex, but not a token devmongo made (or a real server's): it
		// fails where MongoDB's fails, decoding it as a KeyString.
		return token{}, errorBody(codeKeyString, "Location50811", "KeyString format error: the resume token is not one this server made")
	}
	b = b[1:]
	return token{
		ts:    bson.Timestamp{T: binary.BigEndian.Uint32(b[0:]), I: binary.BigEndian.Uint32(b[4:])},
		epoch: binary.BigEndian.Uint64(b[8:]),
		seq:   binary.BigEndian.Uint64(b[16:]),
		kind:  b[24],
	}, nil
}
