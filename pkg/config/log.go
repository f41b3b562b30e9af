package config

import (
	"io"
	"log/slog"
	"os"
	"strings"
)

// NewLogger returns the logger that l describes, writing to w.
func NewLogger(w io.Writer, l Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToLower(l.Level)))
	opts := &slog.HandlerOptions{Level: lvl}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// IsTerminal reports whether w is a terminal: the services log text to a
// person there and JSON everywhere else.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
