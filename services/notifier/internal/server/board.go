package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
)

// board serves the job board's files. They have no fingerprints in their
// names, so browsers are told to revalidate every time (no-cache) and get
// a 304 from the content ETag when nothing changed.
type board struct {
	files http.Handler
	etags map[string]string // by path without the leading slash
}

func newBoard(fsys fs.FS) (*board, error) {
	b := &board{files: http.FileServerFS(fsys), etags: map[string]string{}}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		b.etags[p] = `"` + hex.EncodeToString(sum[:10]) + `"`
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the board's files: %w", err)
	}
	return b, nil
}

func (b *board) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == "" || strings.HasSuffix(p, "/") {
		p += "index.html"
	}
	tag, ok := b.etags[p]
	if !ok {
		// Every file is known: the rest would get FileServer's text 404.
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found", "detail": r.URL.Path})
		return
	}
	h := w.Header()
	h.Set("ETag", tag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	b.files.ServeHTTP(w, r)
}
