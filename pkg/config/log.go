package config

import (
	"io"
	"log/slog"
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
