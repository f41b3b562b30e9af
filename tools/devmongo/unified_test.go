package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// TestUnifiedChangeStreamSpec runs the change-streams spec's own unified
// tests (testdata/change-streams, see NOTICE there) with a runner of the
// part of the unified test format they use
// (mongodb/specifications source/unified-test-format). On devmongo every
// test runs; those devmongo does not pass are listed in
// devmongoDoesNot with the reason, must fail, and fail the run if they
// start to pass (so the list stays true). With MONGO_REPLSET_URL set the
// same files run against that replica set, where every applicable test
// must pass.
func TestUnifiedChangeStreamSpec(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/change-streams/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	t.Run("devmongo", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		var rows []string
		t.Cleanup(func() {
			slices.Sort(rows)
			t.Logf("unified change-stream tests on devmongo:\n%s", strings.Join(rows, "\n"))
		})
		for _, f := range files {
			t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
				t.Parallel()
				s := start(t, t.TempDir())
				for _, row := range runSpecFile(t, f, s.uri, devmongoDoesNot) {
					mu.Lock()
					rows = append(rows, row)
					mu.Unlock()
				}
			})
		}
	})
	t.Run("replicaset", func(t *testing.T) {
		url := os.Getenv("MONGO_REPLSET_URL")
		if url == "" {
			t.Skip("MONGO_REPLSET_URL not set: no MongoDB replica set here")
		}
		// One file at a time: the files share database names.
		for _, f := range files {
			t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
				for _, row := range runSpecFile(t, f, url, nil) {
					t.Log(row)
				}
			})
		}
	})
}

// Why devmongo fails a spec test.
const (
	noImages          = "pre- and post-images: devmongo keeps none, so changeStreamPreAndPostImages cannot be enabled"
	noExpandedEvents  = "showExpandedEvents: devmongo makes no create, createIndexes, dropIndexes or modify events"
	noUpdatePipelines = "update pipelines: FerretDB 1.24 has none (its answer is TypeMismatch)"
)

// devmongoDoesNot lists, by file and test description, the spec tests
// devmongo fails, and why.
var devmongoDoesNot = map[string]string{
	"change-streams-disambiguatedPaths: disambiguatedPaths is present on updateDescription when an ambiguous path is present":          noExpandedEvents,
	"change-streams-disambiguatedPaths: disambiguatedPaths returns array indices as integers":                                          noExpandedEvents,
	"change-streams-pre_and_post_images: fullDocument:required with changeStreamPreAndPostImages enabled":                              noImages,
	"change-streams-pre_and_post_images: fullDocument:whenAvailable with changeStreamPreAndPostImages enabled":                         noImages,
	"change-streams-pre_and_post_images: fullDocumentBeforeChange:off with changeStreamPreAndPostImages enabled":                       noImages,
	"change-streams-pre_and_post_images: fullDocumentBeforeChange:required with changeStreamPreAndPostImages enabled":                  noImages,
	"change-streams-pre_and_post_images: fullDocumentBeforeChange:whenAvailable with changeStreamPreAndPostImages enabled":             noImages,
	"change-streams-showExpandedEvents: when provided, showExpandedEvents is sent as a part of the aggregate command":                  noExpandedEvents,
	"change-streams-showExpandedEvents: when showExpandedEvents is true, create events are reported":                                   noExpandedEvents,
	"change-streams-showExpandedEvents: when showExpandedEvents is true, create events on views are reported":                          noExpandedEvents,
	"change-streams-showExpandedEvents: when showExpandedEvents is true, createIndex events are reported":                              noExpandedEvents,
	"change-streams-showExpandedEvents: when showExpandedEvents is true, dropIndexes events are reported":                              noExpandedEvents,
	"change-streams-showExpandedEvents: when showExpandedEvents is true, modify events are reported":                                   noExpandedEvents,
	"change-streams-showExpandedEvents: when showExpandedEvents is true, new fields on change stream events are handled appropriately": noExpandedEvents,
	"change-streams: Test array truncation": noUpdatePipelines,
}

// errNoFailPoints: the server has no configureFailPoint (a MongoDB
// started without enableTestCommands, or devmongo).
var errNoFailPoints = errors.New("the server has no fail points")

// specTimeout bounds one operation; an iterate that finds nothing in it
// fails.
const specTimeout = 10 * time.Second

// runSpecFile runs the tests of one file against uri and returns a
// result row per test. notExpected names the tests expected to fail.
func runSpecFile(t *testing.T, path, uri string, notExpected map[string]string) []string {
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var file bson.Raw
	require.NoError(t, bson.UnmarshalExtJSON(data, false, &file), path)
	name := strings.TrimSuffix(filepath.Base(path), ".json")

	admin := connect(t, uri)
	ctx := ctxT(t)
	version := serverVersion(ctx, t, admin)
	var rows []string
	fileOK, why := runnable(file.Lookup("runOnRequirements"), version)
	tests, _ := file.Lookup("tests").Array().Values()
	for _, tv := range tests {
		tc := tv.Document()
		desc := tc.Lookup("description").StringValue()
		key := name + ": " + desc
		reason, listed := notExpected[key]
		t.Run(desc, func(t *testing.T) {
			ok, skipWhy := fileOK, why
			if ok {
				ok, skipWhy = runnable(tc.Lookup("runOnRequirements"), version)
			}
			if s, has := tc.Lookup("skipReason").StringValueOK(); has && ok {
				ok, skipWhy = false, "skipReason: "+s
			}
			if !ok {
				rows = append(rows, "not applicable  "+key+" ("+skipWhy+")")
				t.Skipf("not applicable to this server (%s): version %v", skipWhy, version)
			}
			err := runSpecTest(t, uri, admin, file, tc)
			switch {
			case errors.Is(err, errNoFailPoints) && notExpected == nil:
				// A real server without test commands: the spec's runner
				// needs them for these tests.
				rows = append(rows, "not applicable  "+key+" (the server has no configureFailPoint: start it with --setParameter enableTestCommands=1)")
				t.Skip("the server has no configureFailPoint: start it with --setParameter enableTestCommands=1")
			case err == nil && !listed:
				rows = append(rows, "pass            "+key)
			case err == nil && listed:
				rows = append(rows, "UNEXPECTED PASS "+key)
				t.Errorf("passes now: remove it from devmongoDoesNot (%s)", reason)
			case listed:
				rows = append(rows, "not supported   "+key+" ("+reason+")")
				t.Logf("fails as listed (%s): %v", reason, err)
			default:
				rows = append(rows, "FAIL            "+key+": "+err.Error())
				t.Error(err)
			}
		})
	}
	return rows
}

func serverVersion(ctx context.Context, t *testing.T, c *mongo.Client) []int {
	var info struct {
		VersionArray []int `bson:"versionArray"`
		Version      string
	}
	require.NoError(t, c.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info))
	if len(info.VersionArray) > 0 {
		return info.VersionArray
	}
	return parseVersion(info.Version)
}

func parseVersion(s string) []int {
	var out []int
	for _, p := range strings.Split(s, ".") {
		n, _ := strconv.Atoi(p)
		out = append(out, n)
	}
	return out
}

func compareVersions(a, b []int) int {
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// runnable evaluates runOnRequirements (any one of them met) for a
// non-serverless replica set of the given version.
func runnable(reqs bson.RawValue, version []int) (bool, string) {
	arr, ok := reqs.ArrayOK()
	if !ok {
		return true, ""
	}
	vals, _ := arr.Values()
	var whys []string
	for _, v := range vals {
		r := v.Document()
		why := ""
		if s, ok := r.Lookup("minServerVersion").StringValueOK(); ok && compareVersions(version, parseVersion(s)) < 0 {
			why = "needs server >= " + s
		}
		if s, ok := r.Lookup("maxServerVersion").StringValueOK(); ok && compareVersions(version, parseVersion(s)) > 0 {
			why = "needs server <= " + s
		}
		if topo, ok := r.Lookup("topologies").ArrayOK(); ok {
			tv, _ := topo.Values()
			found := false
			for _, x := range tv {
				found = found || x.StringValue() == "replicaset"
			}
			if !found {
				why = "topologies " + topo.String()
			}
		}
		if s, ok := r.Lookup("serverless").StringValueOK(); ok && s == "require" {
			why = "serverless only"
		}
		if why == "" {
			return true, ""
		}
		whys = append(whys, why)
	}
	return false, strings.Join(whys, " or ")
}

// specClient is a client entity and the command-started events it saw.
type specClient struct {
	client  *mongo.Client
	mu      sync.Mutex
	started []*event.CommandStartedEvent
}

func (c *specClient) events() []*event.CommandStartedEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.started)
}

// entities is one test's entity map.
type entities struct {
	clients     map[string]*specClient
	dbs         map[string]*mongo.Database
	colls       map[string]*mongo.Collection
	streams     map[string]*mongo.ChangeStream
	failPoints  []failPoint
	closeStream []func()
}

type failPoint struct {
	client *mongo.Client
	name   string
}

func runSpecTest(t *testing.T, uri string, admin *mongo.Client, file, tc bson.Raw) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := loadInitialData(ctx, admin, file.Lookup("initialData")); err != nil {
		return fmt.Errorf("initialData: %w", err)
	}
	en := &entities{clients: map[string]*specClient{}, dbs: map[string]*mongo.Database{}, colls: map[string]*mongo.Collection{}, streams: map[string]*mongo.ChangeStream{}}
	defer en.close()
	if err := en.create(ctx, uri, file.Lookup("createEntities")); err != nil {
		return fmt.Errorf("createEntities: %w", err)
	}
	ops, _ := tc.Lookup("operations").Array().Values()
	for i, o := range ops {
		if err := en.run(ctx, o.Document()); err != nil {
			return fmt.Errorf("operation %d (%s): %w", i, o.Document().Lookup("name").StringValue(), err)
		}
	}
	if exp, ok := tc.Lookup("expectEvents").ArrayOK(); ok {
		if err := en.checkEvents(exp); err != nil {
			return fmt.Errorf("expectEvents: %w", err)
		}
	}
	return nil
}

func loadInitialData(ctx context.Context, c *mongo.Client, v bson.RawValue) error {
	arr, ok := v.ArrayOK()
	if !ok {
		return nil
	}
	vals, _ := arr.Values()
	for _, x := range vals {
		d := x.Document()
		db := c.Database(d.Lookup("databaseName").StringValue(), options.Database().SetWriteConcern(writeconcern.Majority()))
		coll := db.Collection(d.Lookup("collectionName").StringValue())
		if err := coll.Drop(ctx); err != nil {
			return err
		}
		docs, _ := d.Lookup("documents").Array().Values()
		if len(docs) == 0 {
			if err := db.CreateCollection(ctx, coll.Name()); err != nil {
				return err
			}
			continue
		}
		many := make([]any, len(docs))
		for i, x := range docs {
			many[i] = x.Document()
		}
		if _, err := coll.InsertMany(ctx, many); err != nil {
			return err
		}
	}
	return nil
}

// entityKeys are the entity options this runner reads (useMultipleMongoses
// means nothing on a replica set).
var entityKeys = map[string][]string{
	"client":     {"id", "observeEvents", "ignoreCommandMonitoringEvents", "useMultipleMongoses"},
	"database":   {"id", "client", "databaseName"},
	"collection": {"id", "database", "collectionName"},
}

func (en *entities) create(ctx context.Context, uri string, v bson.RawValue) error {
	vals, _ := v.Array().Values()
	for _, x := range vals {
		e, _ := x.Document().IndexErr(0)
		kind, d := e.Key(), e.Value().Document()
		id := d.Lookup("id").StringValue()
		keys, _ := d.Elements()
		for _, k := range keys {
			if !slices.Contains(entityKeys[kind], k.Key()) {
				return fmt.Errorf("%s option %s not supported by this runner", kind, k.Key())
			}
		}
		switch kind {
		case "client":
			sc := &specClient{}
			observe := map[string]bool{}
			if a, ok := d.Lookup("observeEvents").ArrayOK(); ok {
				av, _ := a.Values()
				for _, x := range av {
					observe[x.StringValue()] = true
				}
			}
			ignore := map[string]bool{"configureFailPoint": true}
			if a, ok := d.Lookup("ignoreCommandMonitoringEvents").ArrayOK(); ok {
				av, _ := a.Values()
				for _, x := range av {
					ignore[x.StringValue()] = true
				}
			}
			mon := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
				if !observe["commandStartedEvent"] || ignore[e.CommandName] {
					return
				}
				sc.mu.Lock()
				sc.started = append(sc.started, e)
				sc.mu.Unlock()
			}}
			c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(mon).SetServerSelectionTimeout(10 * time.Second))
			if err != nil {
				return err
			}
			sc.client = c
			en.clients[id] = sc
		case "database":
			c, ok := en.clients[d.Lookup("client").StringValue()]
			if !ok {
				return fmt.Errorf("database %s: no client %s", id, d.Lookup("client"))
			}
			en.dbs[id] = c.client.Database(d.Lookup("databaseName").StringValue())
		case "collection":
			db, ok := en.dbs[d.Lookup("database").StringValue()]
			if !ok {
				return fmt.Errorf("collection %s: no database %s", id, d.Lookup("database"))
			}
			en.colls[id] = db.Collection(d.Lookup("collectionName").StringValue())
		default:
			return fmt.Errorf("entity kind %q not supported by this runner", kind)
		}
	}
	return nil
}

func (en *entities) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cs := range en.streams {
		_ = cs.Close(ctx)
	}
	for _, fp := range en.failPoints {
		_ = fp.client.Database("admin").RunCommand(ctx, bson.D{{Key: "configureFailPoint", Value: fp.name}, {Key: "mode", Value: "off"}}).Err()
	}
	for _, c := range en.clients {
		_ = c.client.Disconnect(ctx)
	}
}

// run runs one operation and checks its expectResult / expectError.
func (en *entities) run(ctx context.Context, op bson.Raw) error {
	name := op.Lookup("name").StringValue()
	object := op.Lookup("object").StringValue()
	args, _ := op.Lookup("arguments").DocumentOK()
	save, _ := op.Lookup("saveResultAsEntity").StringValueOK()
	result, err := en.call(ctx, name, object, args, save)
	if exp, ok := op.Lookup("expectError").DocumentOK(); ok {
		if err == nil {
			return fmt.Errorf("expected an error %s, got result %v", exp, result)
		}
		return checkError(exp, err)
	}
	if err != nil {
		return err
	}
	if exp := op.Lookup("expectResult"); exp.Type != 0 {
		var act bson.RawValue
		if result != nil {
			act = bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: result}
		}
		if err := match(exp, act, result != nil, true, "result"); err != nil {
			return fmt.Errorf("expectResult: %w (got %s)", err, result)
		}
	}
	if save != "" && name != "createChangeStream" {
		return fmt.Errorf("saveResultAsEntity %s for %s not supported by this runner", save, name)
	}
	return nil
}

// runnerArgs are the arguments this runner reads, by operation: any
// other fails the test rather than being ignored.
var runnerArgs = map[string][]string{
	"createChangeStream":          {"pipeline", "batchSize", "comment", "fullDocument", "fullDocumentBeforeChange", "showExpandedEvents", "resumeAfter", "startAfter", "startAtOperationTime", "maxAwaitTimeMS"},
	"iterateUntilDocumentOrError": {},
	"insertOne":                   {"document"},
	"updateOne":                   {"filter", "update"},
	"replaceOne":                  {"filter", "replacement"},
	"deleteOne":                   {"filter"},
	"dropCollection":              {"collection"},
	"createCollection":            {"collection", "viewOn"},
	"rename":                      {"to", "dropTarget"},
	"runCommand":                  {"command", "commandName"},
	"createIndex":                 {"keys", "name"},
	"dropIndex":                   {"name"},
	"failPoint":                   {"client", "failPoint"},
}

// call runs one operation and returns its result document (nil for none).
func (en *entities) call(ctx context.Context, name, object string, args bson.Raw, save string) (bson.Raw, error) {
	known, ok := runnerArgs[name]
	if !ok {
		return nil, fmt.Errorf("operation %s not supported by this runner", name)
	}
	elems, _ := args.Elements()
	for _, e := range elems {
		if !slices.Contains(known, e.Key()) {
			return nil, fmt.Errorf("argument %s of %s not supported by this runner", e.Key(), name)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, specTimeout)
	defer cancel()
	arg := func(k string) bson.RawValue { return args.Lookup(k) }
	doc := func(k string) bson.Raw { d, _ := arg(k).DocumentOK(); return d }
	coll := en.colls[object]
	db := en.dbs[object]
	switch name {
	case "createChangeStream":
		opts := options.ChangeStream()
		if v, ok := asInt(arg("batchSize")); ok {
			opts.SetBatchSize(int32(v))
		}
		if v := arg("comment"); v.Type != 0 {
			opts.SetComment(v)
		}
		if s, ok := arg("fullDocument").StringValueOK(); ok {
			opts.SetFullDocument(options.FullDocument(s))
		}
		if s, ok := arg("fullDocumentBeforeChange").StringValueOK(); ok {
			opts.SetFullDocumentBeforeChange(options.FullDocument(s))
		}
		if b, ok := arg("showExpandedEvents").BooleanOK(); ok {
			opts.SetShowExpandedEvents(b)
		}
		for _, k := range []string{"resumeAfter", "startAfter", "startAtOperationTime", "maxAwaitTimeMS"} {
			if arg(k).Type != 0 {
				return nil, fmt.Errorf("createChangeStream option %s not supported by this runner", k)
			}
		}
		pipeline := []bson.Raw{}
		if a, ok := arg("pipeline").ArrayOK(); ok {
			vals, _ := a.Values()
			for _, v := range vals {
				pipeline = append(pipeline, v.Document())
			}
		}
		var cs *mongo.ChangeStream
		var err error
		switch {
		case coll != nil:
			cs, err = coll.Watch(ctx, pipeline, opts)
		case db != nil:
			cs, err = db.Watch(ctx, pipeline, opts)
		case en.clients[object] != nil:
			cs, err = en.clients[object].client.Watch(ctx, pipeline, opts)
		default:
			return nil, fmt.Errorf("no entity %s", object)
		}
		if err != nil {
			return nil, err
		}
		if save == "" {
			_ = cs.Close(ctx)
			return nil, nil
		}
		en.streams[save] = cs
		return nil, nil
	case "iterateUntilDocumentOrError":
		cs := en.streams[object]
		if cs == nil {
			return nil, fmt.Errorf("no change stream %s", object)
		}
		if cs.Next(ctx) {
			return cs.Current, nil
		}
		if err := cs.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, fmt.Errorf("no document nor error within %s", specTimeout)
	case "insertOne":
		res, err := coll.InsertOne(ctx, doc("document"))
		if err != nil {
			return nil, err
		}
		return must(bson.Marshal(bson.D{{Key: "insertedId", Value: res.InsertedID}})), nil
	case "updateOne", "replaceOne":
		var res *mongo.UpdateResult
		var err error
		if name == "updateOne" {
			u := arg("update")
			if a, ok := u.ArrayOK(); ok {
				vals, _ := a.Values()
				pl := []bson.Raw{}
				for _, v := range vals {
					pl = append(pl, v.Document())
				}
				res, err = coll.UpdateOne(ctx, doc("filter"), pl)
			} else {
				res, err = coll.UpdateOne(ctx, doc("filter"), u.Document())
			}
		} else {
			res, err = coll.ReplaceOne(ctx, doc("filter"), doc("replacement"))
		}
		if err != nil {
			return nil, err
		}
		return must(bson.Marshal(bson.D{{Key: "matchedCount", Value: res.MatchedCount}, {Key: "modifiedCount", Value: res.ModifiedCount}, {Key: "upsertedCount", Value: res.UpsertedCount}})), nil
	case "deleteOne":
		res, err := coll.DeleteOne(ctx, doc("filter"))
		if err != nil {
			return nil, err
		}
		return must(bson.Marshal(bson.D{{Key: "deletedCount", Value: res.DeletedCount}})), nil
	case "dropCollection":
		return nil, db.Collection(arg("collection").StringValue()).Drop(ctx)
	case "createCollection":
		if on, ok := arg("viewOn").StringValueOK(); ok {
			return nil, db.CreateView(ctx, arg("collection").StringValue(), on, []bson.Raw{})
		}
		return nil, db.CreateCollection(ctx, arg("collection").StringValue())
	case "rename":
		cmd := bson.D{{Key: "renameCollection", Value: coll.Database().Name() + "." + coll.Name()}, {Key: "to", Value: coll.Database().Name() + "." + arg("to").StringValue()}}
		if b, ok := arg("dropTarget").BooleanOK(); ok {
			cmd = append(cmd, bson.E{Key: "dropTarget", Value: b})
		}
		return nil, coll.Database().Client().Database("admin").RunCommand(ctx, cmd).Err()
	case "runCommand":
		return db.RunCommand(ctx, doc("command")).Raw()
	case "createIndex":
		_, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: doc("keys"), Options: options.Index().SetName(arg("name").StringValue())})
		return nil, err
	case "dropIndex":
		return nil, coll.Indexes().DropOne(ctx, arg("name").StringValue())
	case "failPoint":
		c := en.clients[arg("client").StringValue()]
		if c == nil {
			return nil, fmt.Errorf("no client %s", arg("client"))
		}
		fp := doc("failPoint")
		if err := c.client.Database("admin").RunCommand(ctx, fp).Err(); err != nil {
			var ce mongo.CommandError
			if errors.As(err, &ce) && ce.Code == 59 {
				err = fmt.Errorf("%w: %w", errNoFailPoints, err)
			}
			return nil, fmt.Errorf("configureFailPoint: %w", err)
		}
		en.failPoints = append(en.failPoints, failPoint{client: c.client, name: fp.Lookup("configureFailPoint").StringValue()})
		return nil, nil
	}
	return nil, fmt.Errorf("operation %s not supported by this runner", name)
}

func checkError(exp bson.Raw, err error) error {
	var ce mongo.CommandError
	errors.As(err, &ce)
	var se mongo.ServerError
	isServer := errors.As(err, &se)
	if b, ok := exp.Lookup("isClientError").BooleanOK(); ok && b == isServer {
		return fmt.Errorf("isClientError %v, got %T: %v", b, err, err)
	}
	if code, ok := asInt(exp.Lookup("errorCode")); ok {
		if se == nil || !se.HasErrorCode(int(code)) {
			return fmt.Errorf("want error code %d, got %v", code, err)
		}
	}
	if name, ok := exp.Lookup("errorCodeName").StringValueOK(); ok && ce.Name != name {
		return fmt.Errorf("want error code name %s, got %v", name, err)
	}
	if a, ok := exp.Lookup("errorLabelsContain").ArrayOK(); ok {
		vals, _ := a.Values()
		for _, v := range vals {
			if se == nil || !se.HasErrorLabel(v.StringValue()) {
				return fmt.Errorf("want error label %s, got %v (labels %v)", v.StringValue(), err, ce.Labels)
			}
		}
	}
	return nil
}

func (en *entities) checkEvents(exp bson.RawArray) error {
	vals, _ := exp.Values()
	for _, v := range vals {
		d := v.Document()
		c := en.clients[d.Lookup("client").StringValue()]
		if c == nil {
			return fmt.Errorf("no client %s", d.Lookup("client"))
		}
		if et, ok := d.Lookup("eventType").StringValueOK(); ok && et != "command" {
			return fmt.Errorf("eventType %s not supported by this runner", et)
		}
		extra, _ := d.Lookup("ignoreExtraEvents").BooleanOK()
		want, _ := d.Lookup("events").Array().Values()
		got := c.events()
		if len(got) < len(want) || (!extra && len(got) != len(want)) {
			return fmt.Errorf("client %s: %d events, want %d: %s", d.Lookup("client"), len(got), len(want), eventNames(got))
		}
		for i, w := range want {
			e, _ := w.Document().IndexErr(0)
			if e.Key() != "commandStartedEvent" {
				return fmt.Errorf("event %s not supported by this runner", e.Key())
			}
			we := e.Value().Document()
			g := got[i]
			if s, ok := we.Lookup("commandName").StringValueOK(); ok && s != g.CommandName {
				return fmt.Errorf("event %d: command %s, want %s", i, g.CommandName, s)
			}
			if s, ok := we.Lookup("databaseName").StringValueOK(); ok && s != g.DatabaseName {
				return fmt.Errorf("event %d: database %s, want %s", i, g.DatabaseName, s)
			}
			if cmd := we.Lookup("command"); cmd.Type != 0 {
				if err := match(cmd, bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: g.Command}, true, true, "command"); err != nil {
					return fmt.Errorf("event %d (%s): %w: %s", i, g.CommandName, err, g.Command)
				}
			}
		}
	}
	return nil
}

func eventNames(es []*event.CommandStartedEvent) string {
	var out []string
	for _, e := range es {
		out = append(out, e.CommandName)
	}
	return strings.Join(out, ",")
}

// match is the unified format's "Evaluating Matches": extra fields are
// allowed in root documents only; $$exists, $$type and $$unsetOrMatches;
// numbers compare by value.
func match(exp, act bson.RawValue, present, root bool, path string) error {
	if d, ok := exp.DocumentOK(); ok {
		if op, arg, ok := special(d); ok {
			switch op {
			case "$$type":
				if !present {
					return fmt.Errorf("%s: missing, want type %s", path, arg)
				}
				return matchType(arg, act, path)
			case "$$unsetOrMatches":
				if !present {
					return nil
				}
				return match(arg, act, true, root, path)
			case "$$exists":
				if want, _ := arg.BooleanOK(); want != present {
					return fmt.Errorf("%s: exists %v, want %v", path, present, want)
				}
				return nil
			}
			return fmt.Errorf("%s: operator %s not supported by this runner", path, op)
		}
		if !present {
			return fmt.Errorf("%s: missing", path)
		}
		ad, ok := act.DocumentOK()
		if !ok {
			return fmt.Errorf("%s: %s, want a document", path, act)
		}
		elems, _ := d.Elements()
		for _, e := range elems {
			k := e.Key()
			av, err := ad.LookupErr(k)
			has := err == nil
			if sd, ok := e.Value().DocumentOK(); ok {
				if op, arg, ok := special(sd); ok && op == "$$exists" {
					if want, _ := arg.BooleanOK(); want != has {
						return fmt.Errorf("%s.%s: exists %v, want %v", path, k, has, want)
					}
					continue
				}
			}
			if err := match(e.Value(), av, has, false, path+"."+k); err != nil {
				return err
			}
		}
		if !root {
			aelems, _ := ad.Elements()
			for _, e := range aelems {
				if _, err := d.LookupErr(e.Key()); err != nil {
					return fmt.Errorf("%s: unexpected field %s", path, e.Key())
				}
			}
		}
		return nil
	}
	if !present {
		return fmt.Errorf("%s: missing, want %s", path, exp)
	}
	if a, ok := exp.ArrayOK(); ok {
		aa, ok := act.ArrayOK()
		if !ok {
			return fmt.Errorf("%s: %s, want an array", path, act)
		}
		ev, _ := a.Values()
		av, _ := aa.Values()
		if len(ev) != len(av) {
			return fmt.Errorf("%s: %d elements, want %d: %s", path, len(av), len(ev), act)
		}
		for i := range ev {
			if err := match(ev[i], av[i], true, false, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if x, ok := numberOf(exp); ok {
		if y, ok := numberOf(act); ok && x == y {
			return nil
		}
		return fmt.Errorf("%s: %s, want %s", path, act, exp)
	}
	if exp.Type != act.Type || string(exp.Value) != string(act.Value) {
		return fmt.Errorf("%s: %s, want %s", path, act, exp)
	}
	return nil
}

func special(d bson.Raw) (string, bson.RawValue, bool) {
	elems, err := d.Elements()
	if err != nil || len(elems) != 1 || !strings.HasPrefix(elems[0].Key(), "$$") {
		return "", bson.RawValue{}, false
	}
	return elems[0].Key(), elems[0].Value(), true
}

var typeNames = map[string]bson.Type{
	"double": bson.TypeDouble, "string": bson.TypeString, "object": bson.TypeEmbeddedDocument, "array": bson.TypeArray,
	"binData": bson.TypeBinary, "objectId": bson.TypeObjectID, "bool": bson.TypeBoolean, "date": bson.TypeDateTime,
	"null": bson.TypeNull, "int": bson.TypeInt32, "timestamp": bson.TypeTimestamp, "long": bson.TypeInt64, "decimal": bson.TypeDecimal128,
}

func matchType(want, act bson.RawValue, path string) error {
	var names []string
	if s, ok := want.StringValueOK(); ok {
		names = []string{s}
	} else if a, ok := want.ArrayOK(); ok {
		vals, _ := a.Values()
		for _, v := range vals {
			names = append(names, v.StringValue())
		}
	}
	for _, n := range names {
		if typeNames[n] == act.Type {
			return nil
		}
	}
	return fmt.Errorf("%s: type %s, want %v", path, act.Type, names)
}

func numberOf(v bson.RawValue) (float64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return float64(v.Int32()), true
	case bson.TypeInt64:
		return float64(v.Int64()), true
	case bson.TypeDouble:
		return v.Double(), !math.IsNaN(v.Double())
	}
	return 0, false
}

func asInt(v bson.RawValue) (int64, bool) {
	if f, ok := numberOf(v); ok {
		return int64(f), true
	}
	return 0, false
}
