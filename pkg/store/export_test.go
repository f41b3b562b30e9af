package store

// CreateIndexes is what EnsureIndexes does on MongoDB, for the tests,
// which run against FerretDB.
var CreateIndexes = (*Results).createIndexes
