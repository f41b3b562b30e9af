package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
)

// State is what a notifier instance remembers across restarts: the change
// stream's resume token and the cursor of the last completion it
// delivered (for a catch-up query when the token is lost).
type State struct {
	Token  bson.Raw
	Cursor job.Cursor
	// SavedAt is when the state was saved (Load fills it; Save ignores
	// it): the lower bound of a catch-up when a token must be dropped
	// before any completion was delivered.
	SavedAt time.Time
}

// StateStore keeps one State per notifier instance.
type StateStore interface {
	Load(ctx context.Context, id string) (State, error)
	Save(ctx context.Context, id string, st State) error
}

// StateCollection is the collection that holds the notifiers' states.
const StateCollection = "notifier_state"

// MongoState keeps states in a collection, one document per instance,
// with _id = the instance's id.
type MongoState struct {
	Coll *mongo.Collection
}

var _ StateStore = MongoState{}

type stateDoc struct {
	ID        string    `bson:"_id"`
	Token     bson.Raw  `bson:"resume_token,omitempty"`
	Cursor    string    `bson:"cursor,omitempty"`
	UpdatedAt time.Time `bson:"updated_at"`
}

// Load implements StateStore; an instance never saved has the zero State.
func (m MongoState) Load(ctx context.Context, id string) (State, error) {
	var d stateDoc
	err := m.Coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("load notifier state %q: %w", id, err)
	}
	return State{Token: d.Token, Cursor: job.Cursor(d.Cursor), SavedAt: d.UpdatedAt}, nil
}

// Save implements StateStore.
func (m MongoState) Save(ctx context.Context, id string, st State) error {
	d := stateDoc{ID: id, Token: st.Token, Cursor: string(st.Cursor), UpdatedAt: time.Now().UTC()}
	_, err := m.Coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, d, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("save notifier state %q: %w", id, err)
	}
	return nil
}

// Expire removes the states of other instances not saved since before:
// those of notifiers that are gone (a task slot scaled away, an id that
// changed). It returns how many it removed.
func (m MongoState) Expire(ctx context.Context, keep string, before time.Time) (int64, error) {
	res, err := m.Coll.DeleteMany(ctx, bson.D{
		{Key: "_id", Value: bson.D{{Key: "$ne", Value: keep}}},
		{Key: "updated_at", Value: bson.D{{Key: "$lt", Value: before}}},
	})
	if err != nil {
		return 0, fmt.Errorf("expire notifier states: %w", err)
	}
	return res.DeletedCount, nil
}

// expirer is a StateStore that can forget stale states.
type expirer interface {
	Expire(ctx context.Context, keep string, before time.Time) (int64, error)
}

// expireStates removes, once, the states nobody saved for StateTTL.
func (f *Feed) expireStates(ctx context.Context) {
	e, ok := f.state.(expirer)
	if !ok || f.stateTTL <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := e.Expire(ctx, f.id, time.Now().Add(-f.stateTTL))
	if err != nil {
		f.log.Warn("expire old notifier states", "err", err)
		return
	}
	if n > 0 {
		f.log.Info("removed the saved states of notifiers gone for longer than the state TTL", "states", n, "ttl", f.stateTTL.String())
	}
}

// loadState retries until the store answers or ctx ends.
func loadState(ctx context.Context, s StateStore, id string, log *slog.Logger) (State, error) {
	for attempt := 0; ; attempt++ {
		st, err := s.Load(ctx, id)
		if err == nil {
			return st, nil
		}
		log.Warn("load notifier state", "err", err, "attempt", attempt)
		if !sleep(ctx, backoff(attempt)) {
			return State{}, ctx.Err()
		}
	}
}
