// Package web holds the live job board: static files, embedded so that a
// service (the notifier) can serve them with no build step and no CDN.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Static returns the board's files, rooted at the directory that holds
// index.html.
func Static() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
