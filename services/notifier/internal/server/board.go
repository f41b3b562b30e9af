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
	// csp is the Content-Security-Policy, and frame the X-Frame-Options
	// ("" when other origins may frame the board).
	csp, frame string
}

// boardPolicy allows the board's own files and connections and nothing
// else: no inline script or style, no plugin, no foreign form target.
// The favicon is a data: URL.
const boardPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors "

// newBoard serves fsys; ancestors are the origins that may frame the
// board (NOTIFIER_FRAME_ANCESTORS), none when empty: the board, with its
// token dialog, must not render inside a foreign page.
func newBoard(fsys fs.FS, ancestors []string) (*board, error) {
	b := &board{files: http.FileServerFS(fsys), etags: map[string]string{}, csp: boardPolicy + "'none'", frame: "DENY"}
	if len(ancestors) > 0 {
		b.csp, b.frame = boardPolicy+strings.Join(ancestors, " "), ""
	}
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
	h.Set("Content-Security-Policy", b.csp)
	if b.frame != "" {
		h.Set("X-Frame-Options", b.frame)
	}
	b.files.ServeHTTP(w, r)
}
