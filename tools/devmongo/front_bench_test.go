package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// BenchmarkInsert compares a worker's write, one InsertOne of a result
// at a time, through the front (which logs it for change streams) and
// straight to FerretDB (-bare): what the front costs the ordinary
// commands. With a change stream open on the collection for the front, as
// the notifier keeps one.
//
//	go test -run '^$' -bench Insert -benchtime 3000x ./tools/devmongo/
func BenchmarkInsert(b *testing.B) {
	for _, mode := range []struct {
		name  string
		flags []string
	}{{"front", nil}, {"bare", []string{"-bare"}}} {
		b.Run(mode.name, func(b *testing.B) {
			s := start(b, b.TempDir(), mode.flags...)
			c := connect(b, s.uri)
			coll := c.Database("db").Collection("results")
			ctx := context.Background()
			if mode.name == "front" {
				cs, err := coll.Watch(ctx, bson.A{})
				if err != nil {
					b.Fatal(err)
				}
				defer cs.Close(ctx)
			}
			var id atomic.Int64
			b.ResetTimer()
			for b.Loop() {
				n := id.Add(1)
				if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: n}, {Key: "hash", Value: "09ee943c4fa33cd5a355eb7a4e38f7ef"},
					{Key: "payload", Value: fmt.Sprintf(`{"n":%d}`, n)}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
