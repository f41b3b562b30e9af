package store

import (
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
)

// Majority returns the same results read at read concern "majority": only
// writes a majority of the replica set holds, which no failover rolls
// back. A change stream shows only those, so a query that fills a gap in
// a stream (the notifier's catch-up) reads at majority too.
func (s *Results) Majority() *Results {
	m := &Results{coll: s.coll.Clone(options.Collection().SetReadConcern(readconcern.Majority())), gates: newGates(),
		readConcern: "majority", journal: s.journal} // the journal is FerretDB's, where every read is the primary's
	if b := s.chosen.Load(); b != nil {
		m.chosen.Store(b)
	}
	return m
}
