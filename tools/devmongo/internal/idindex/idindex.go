// Package idindex gives every collection table of FerretDB's SQLite
// backend an index on the expression FerretDB looks documents up by.
//
// FerretDB 1.24 hands SQLite a filter only for an _id equal to a string
// or an ObjectID, as WHERE _ferretdb_sjson->'$._id' = ?, but creates its
// unique _id index on _ferretdb_sjson->"_id": the same value written
// differently, which SQLite does not recognise, so every such lookup
// scans the table (EXPLAIN QUERY PLAN: SCAN). An index on the queried
// expression turns it into a SEARCH. devmongo owns its SQLite files, so
// it adds that index itself: once for every table when it starts, and
// for new tables shortly after they appear (a new table is small, and a
// scan of it cheap, until then).
package idindex

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the driver FerretDB itself uses
)

// Expr is the expression FerretDB's SQLite backend compares _id with
// (metadata.IDColumn in its source).
const Expr = `_ferretdb_sjson->'$._id'`

// suffix names the index devmongo adds to a table.
const suffix = "__devmongo_id_path"

// metadataTable is FerretDB's list of collections in a database file.
const metadataTable = "_ferretdb_collections"

// ext is the extension of FerretDB's database files.
const ext = ".sqlite"

// Ensure adds the index to every collection table of the database file
// at path that lacks it and returns the tables it indexed. A file that
// holds no collections yet is left alone.
func Ensure(ctx context.Context, path string) ([]string, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=rw&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	rows, err := db.QueryContext(ctx, `SELECT c.table_name FROM `+metadataTable+` c
		WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || ?)`, suffix)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil, nil // a database FerretDB is still creating
		}
		return nil, fmt.Errorf("list the tables of %s: %w", path, err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list the tables of %s: %w", path, err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the tables of %s: %w", path, err)
	}
	var done []string
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (%s)`, t+suffix, t, Expr)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped meanwhile
			}
			return done, fmt.Errorf("index table %s of %s: %w", t, path, err)
		}
		done = append(done, t)
	}
	return done, nil
}

// Indexer keeps the index on every table of the database files in a
// directory.
type Indexer struct {
	dir string
	log *slog.Logger
	// seen is what each file (and its write-ahead log) looked like when
	// it was last indexed: a file that has not changed since has no new
	// table, and is not opened.
	seen map[string]state
}

type state struct {
	db, wal fileState
}

type fileState struct {
	size  int64
	mtime time.Time
}

// New returns an indexer of the database files in dir.
func New(dir string, log *slog.Logger) *Indexer {
	return &Indexer{dir: dir, log: log, seen: map[string]state{}}
}

// Pass indexes the tables of every database file that changed since the
// last pass (every file, the first time).
func (ix *Indexer) Pass(ctx context.Context) error {
	files, err := filepath.Glob(filepath.Join(ix.dir, "*"+ext))
	if err != nil {
		return fmt.Errorf("list the database files: %w", err)
	}
	present := make(map[string]bool, len(files))
	var errs []error
	for _, f := range files {
		present[f] = true
		st, ok := stat(f)
		if !ok || ix.seen[f] == st {
			continue
		}
		tables, err := Ensure(ctx, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(tables) > 0 {
			ix.log.Debug("indexed _id lookups", "file", filepath.Base(f), "tables", tables)
		}
		// Stat again: the index itself changed the file.
		if st, ok = stat(f); ok {
			ix.seen[f] = st
		}
	}
	for f := range ix.seen {
		if !present[f] {
			delete(ix.seen, f)
		}
	}
	return errors.Join(errs...)
}

// Run makes a pass every interval until ctx ends.
func (ix *Indexer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ix.Pass(ctx); err != nil && ctx.Err() == nil {
			ix.log.Warn("indexing _id lookups failed; trying again later", "err", err)
		}
	}
}

func stat(path string) (state, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return state{}, false
	}
	s := state{db: fileState{fi.Size(), fi.ModTime()}}
	if wi, err := os.Stat(path + "-wal"); err == nil {
		s.wal = fileState{wi.Size(), wi.ModTime()}
	}
	return s, true
}
