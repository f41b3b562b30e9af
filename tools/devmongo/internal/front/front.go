// Package front is devmongo's wire-protocol front: it listens where
// clients connect, forwards every command to the embedded FerretDB
// unchanged, and answers what FerretDB cannot itself: MongoDB change
// streams (aggregate with $changeStream, getMore and killCursors on
// their cursors) from the writes it forwarded and saw acknowledged, and
// hello as the primary of a one-member replica set.
package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Config is what a Front needs.
type Config struct {
	// Upstream is FerretDB's address.
	Upstream string
	// Lookup is a client of FerretDB, for the reads some writes need
	// (the matched documents of an update or delete, a collection list).
	Lookup *mongo.Client
	// Advertise is the host:port clients reach this front at, named in
	// hello's hosts and me.
	Advertise string
	// ReplSet is the replica set name hello announces; "" answers as a
	// standalone server, which refuses change streams (40573) as a
	// standalone mongod does.
	ReplSet string
	// MaxEvents and MaxEventBytes bound the change history kept in
	// memory; a stream resuming before it gets ChangeStreamHistoryLost.
	MaxEvents     int
	MaxEventBytes int
	// MaxCursors bounds the open change-stream cursors; idle ones expire
	// after CursorTimeout (MongoDB's default: 10 minutes).
	MaxCursors    int
	CursorTimeout time.Duration
	Logger        *slog.Logger
}

// Front serves clients.
type Front struct {
	cfg     Config
	log     *eventLog
	cursors cursorTable
	// writeMu orders the writes that make events: a write is forwarded,
	// acknowledged and logged before the next one, so the log is in
	// commit order.
	writeMu sync.Mutex
	conns   sync.WaitGroup
	fails   failPoints
}

// New returns a Front with cfg's defaults filled in.
func New(cfg Config) *Front {
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 100_000
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = 64 << 20
	}
	if cfg.MaxCursors <= 0 {
		cfg.MaxCursors = 1000
	}
	if cfg.CursorTimeout <= 0 {
		cfg.CursorTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Front{cfg: cfg, log: newEventLog(cfg.MaxEvents, cfg.MaxEventBytes), cursors: cursorTable{m: map[int64]*csCursor{}}}
}

// Serve accepts connections on ln until ctx ends, then closes them and
// waits for their goroutines.
func (f *Front) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go f.expireCursors(ctx)
	var open sync.Map
	defer func() {
		open.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		f.conns.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		open.Store(c, nil)
		f.conns.Go(func() {
			defer open.Delete(c)
			defer c.Close()
			if err := f.serveConn(ctx, c); err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				f.cfg.Logger.Debug("connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		})
	}
}

// conn is one client connection and its own connection to FerretDB.
type conn struct {
	f        *Front
	client   net.Conn
	upstream net.Conn
	// appName is the client's application name from its handshake, for
	// fail points limited to one application (data.appName).
	appName string
}

// noteAppName keeps the application name a handshake announces.
func (cn *conn) noteAppName(hello bson.Raw) {
	if s, ok := hello.Lookup("client", "application", "name").StringValueOK(); ok {
		cn.appName = s
	}
}

func (f *Front) serveConn(ctx context.Context, c net.Conn) error {
	cn := &conn{f: f, client: c}
	defer func() {
		if cn.upstream != nil {
			cn.upstream.Close()
		}
	}()
	for {
		m, err := readMessage(c)
		if err != nil {
			return err
		}
		reply, err := cn.handle(ctx, m)
		if err != nil {
			return err
		}
		for _, r := range reply {
			if _, err := c.Write(r); err != nil {
				return err
			}
		}
	}
}

// forward sends m to FerretDB and returns its answers for the client:
// none when the request says no answer is wanted (moreToCome), several
// for an exhaust stream.
func (cn *conn) forward(m message) ([]message, error) {
	rs, err := cn.roundTrip(m)
	if err != nil || m.flags()&flagMoreToCome != 0 {
		return nil, err
	}
	return rs, nil
}

// roundTrip sends m to FerretDB and reads its answers. FerretDB 1.24
// answers every request, moreToCome (w:0) or not (its
// internal/clientconn/conn.go writes a reply for each message it
// routes), so that answer is read here too: left unread, it would be
// taken for the answer to the connection's next request. It is the
// caller's to drop when the client asked for none.
func (cn *conn) roundTrip(m message) ([]message, error) {
	if cn.upstream == nil {
		u, err := net.DialTimeout("tcp", cn.f.cfg.Upstream, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("connect to FerretDB: %w", err)
		}
		cn.upstream = u
	}
	if _, err := cn.upstream.Write(m); err != nil {
		return nil, fmt.Errorf("write to FerretDB: %w", err)
	}
	var out []message
	for {
		r, err := readMessage(cn.upstream)
		if err != nil {
			return nil, fmt.Errorf("read from FerretDB: %w", err)
		}
		out = append(out, r)
		if r.flags()&flagMoreToCome == 0 {
			return out, nil
		}
	}
}

func (cn *conn) handle(ctx context.Context, m message) ([]message, error) {
	switch m.opcode() {
	case opQuery:
		return cn.handleQuery(m)
	case opMsg:
	default:
		// OP_COMPRESSED is never negotiated: hello announces no
		// compressors. Anything else goes through as it is.
		return cn.forward(m)
	}
	cmd, err := parseMsg(m)
	if err != nil {
		return nil, err
	}
	lower := strings.ToLower(cmd.name())
	if lower == "configurefailpoint" {
		return []message{msgReply(m.requestID(), cn.f.fails.configure(cmd))}, nil
	}
	id, _ := cmd.body.Lookup(cmd.name()).Int64OK()
	changeStream := (lower == "aggregate" && isChangeStream(cmd.body)) || (lower == "getmore" && isOurs(id))
	if body, closeConn, ok := cn.f.fails.trip(lower, cn.appName, changeStream); ok {
		if lower == "getmore" && isOurs(id) {
			cn.f.dropCursor(id) // a getMore that fails kills its cursor, as MongoDB's
		}
		if closeConn {
			return nil, errCloseConnection
		}
		if m.flags()&flagMoreToCome != 0 {
			return nil, nil
		}
		return []message{msgReply(m.requestID(), body)}, nil
	}
	switch name := cmd.name(); lower {
	case "hello", "ismaster":
		cn.noteAppName(cmd.body)
		rs, err := cn.forward(m)
		if err != nil || len(rs) != 1 {
			return rs, err
		}
		body, err := replyBody(rs[0])
		if err != nil {
			return nil, err
		}
		return []message{msgReply(m.requestID(), cn.f.patchHello(body))}, nil
	case "aggregate":
		if isChangeStream(cmd.body) {
			return []message{msgReply(m.requestID(), cn.f.openStream(ctx, cmd))}, nil
		}
	case "getmore":
		if id, ok := cmd.body.Lookup(name).Int64OK(); ok && isOurs(id) {
			return []message{msgReply(m.requestID(), cn.f.getMore(ctx, id, cmd))}, nil
		}
	case "killcursors":
		if body, ok := cn.f.killCursors(cmd); ok {
			return []message{msgReply(m.requestID(), body)}, nil
		}
	case "collmod":
		if body, ok := cn.f.collMod(ctx, cmd); ok {
			return []message{msgReply(m.requestID(), body)}, nil
		}
	case "insert", "update", "delete", "findandmodify", "drop", "renamecollection", "dropdatabase":
		return cn.write(ctx, m, cmd)
	}
	return cn.forward(m)
}

// handleQuery answers the legacy OP_QUERY hello that drivers send first,
// patched like an OP_MSG hello; other OP_QUERYs go through.
func (cn *conn) handleQuery(m message) ([]message, error) {
	coll, q, err := parseQuery(m)
	rs, ferr := cn.forward(m)
	if err != nil || ferr != nil || !strings.HasSuffix(coll, ".$cmd") || len(rs) != 1 {
		return rs, ferr
	}
	first, ierr := q.IndexErr(0)
	if ierr != nil {
		return rs, nil
	}
	switch strings.ToLower(first.Key()) {
	case "hello", "ismaster":
		cn.noteAppName(q)
	default:
		return rs, nil
	}
	docs, err := replyDocs(rs[0])
	if err != nil || len(docs) != 1 {
		return rs, nil
	}
	return []message{withReplyDoc(rs[0], cn.f.patchHello(docs[0]))}, nil
}

// electionID is the one election of this one-member set.
var electionID = bson.ObjectID{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}

// patchHello makes FerretDB's hello answer that of the primary of a
// one-member replica set named cfg.ReplSet, the shape a driver needs to
// accept `?replicaSet=` and to allow change streams. It announces no
// topologyVersion (so drivers poll hello instead of streaming it, which
// this front does not serve) and no compressors.
func (f *Front) patchHello(body bson.Raw) []byte {
	var d bson.D
	if err := bson.Unmarshal(body, &d); err != nil {
		return body
	}
	out := make(bson.D, 0, len(d)+8)
	for _, e := range d {
		switch e.Key {
		case "topologyVersion", "compression", "setName", "hosts", "primary", "me", "setVersion", "electionId", "secondary", "lastWrite":
			continue
		}
		if e.Key == "ok" && f.cfg.ReplSet != "" {
			now := f.log.now()
			out = append(out,
				bson.E{Key: "setName", Value: f.cfg.ReplSet},
				bson.E{Key: "setVersion", Value: int32(1)},
				bson.E{Key: "hosts", Value: bson.A{f.cfg.Advertise}},
				bson.E{Key: "primary", Value: f.cfg.Advertise},
				bson.E{Key: "me", Value: f.cfg.Advertise},
				bson.E{Key: "secondary", Value: false},
				bson.E{Key: "electionId", Value: electionID},
				bson.E{Key: "lastWrite", Value: bson.D{
					{Key: "opTime", Value: bson.D{{Key: "ts", Value: now}, {Key: "t", Value: int64(1)}}},
					{Key: "lastWriteDate", Value: bson.DateTime(int64(now.T) * 1000)},
				}},
			)
		}
		out = append(out, e)
	}
	b, err := bson.Marshal(out)
	if err != nil {
		return body
	}
	return b
}

// Command errors, as MongoDB answers them.
func errorBody(code int32, codeName, msg string) []byte {
	return labelledError(code, codeName, msg)
}

// labelledError is a command error with errorLabels, as MongoDB 4.4+
// answers the errors of change streams (labelNonResumable on 280 and
// 286, which error_codes.yml puts in the NonResumableChangeStreamError
// category).
func labelledError(code int32, codeName, msg string, labels ...string) []byte {
	d := bson.D{
		{Key: "ok", Value: float64(0)},
		{Key: "errmsg", Value: msg},
		{Key: "code", Value: code},
	}
	if codeName != "" {
		d = append(d, bson.E{Key: "codeName", Value: codeName})
	}
	if len(labels) > 0 {
		d = append(d, bson.E{Key: "errorLabels", Value: labels})
	}
	b, _ := bson.Marshal(d)
	return b
}

const labelNonResumable = "NonResumableChangeStreamError"

var replyIDs atomic.Int32

func nextReplyID() int32 { return replyIDs.Add(1) }
