package idindex

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A database file that vanished between the listing and the open is not
// created again (FerretDB would take an empty file for a database), and
// a file FerretDB has not yet given its collections table is left alone.
func TestEnsureLeavesFilesItShouldNotTouch(t *testing.T) {
	dir := t.TempDir()
	gone := filepath.Join(dir, "gone.sqlite")
	_, err := Ensure(context.Background(), gone)
	require.Error(t, err)
	_, err = os.Stat(gone)
	require.ErrorIs(t, err, os.ErrNotExist)

	fresh := filepath.Join(dir, "fresh.sqlite")
	db, err := sql.Open("sqlite", "file:"+fresh)
	require.NoError(t, err)
	_, err = db.Exec(`CREATE TABLE other (x TEXT)`)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	tables, err := Ensure(context.Background(), fresh)
	require.NoError(t, err)
	require.Empty(t, tables)
	require.NoError(t, New(dir, slog.New(slog.DiscardHandler)).Pass(context.Background()))
}

// Every collection table gets the index once; a second pass opens no
// file that did not change.
func TestEnsureIndexesEveryCollectionOnce(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "db.sqlite")
	db, err := sql.Open("sqlite", "file:"+f)
	require.NoError(t, err)
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE _ferretdb_collections (name TEXT, table_name TEXT, settings TEXT)`,
		`CREATE TABLE a_1 (_ferretdb_sjson TEXT)`,
		`CREATE TABLE b_2 (_ferretdb_sjson TEXT)`,
		`INSERT INTO _ferretdb_collections VALUES ('a', 'a_1', '{}'), ('b', 'b_2', '{}')`,
	} {
		_, err := db.Exec(q)
		require.NoError(t, err)
	}
	tables, err := Ensure(context.Background(), f)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a_1", "b_2"}, tables)
	tables, err = Ensure(context.Background(), f)
	require.NoError(t, err)
	require.Empty(t, tables, "indexed already")

	// This connection reads the new schema at its next statement that
	// reads the table (EXPLAIN alone would show the plan it had).
	_, err = db.Exec(`SELECT count(*) FROM a_1`)
	require.NoError(t, err)
	var plan string
	var id, parent, notused int
	require.NoError(t, db.QueryRow(`EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM a_1 WHERE `+Expr+` = ?`, `"1"`).Scan(&id, &parent, &notused, &plan))
	require.Contains(t, plan, "SEARCH")
}
