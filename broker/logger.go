package broker

import (
	"io"
	"log/slog"
)

// NewLogger builds the process logger from the log section (validated already). Its level follows
// log.level when the broker reloads the config (the format needs a restart).
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	lh := &leveledHandler{level: new(slog.LevelVar)}
	lh.setLevel(c.Level)
	opts := &slog.HandlerOptions{Level: lh.level}
	if c.Format == "json" {
		lh.Handler = slog.NewJSONHandler(w, opts)
	} else {
		lh.Handler = slog.NewTextHandler(w, opts)
	}
	return slog.New(lh)
}

// leveledHandler is the root handler of NewLogger's logger: it lets a reload find the level to change.
// Loggers derived with With share the level, as their handlers share the LevelVar.
type leveledHandler struct {
	slog.Handler
	level *slog.LevelVar
}

func (h *leveledHandler) setLevel(name string) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(name))
	h.level.Set(level)
}

// setLogLevel applies log.level to a logger made by NewLogger; another logger is left as it is.
func setLogLevel(log *slog.Logger, name string) bool {
	lh, ok := log.Handler().(*leveledHandler)
	if ok {
		lh.setLevel(name)
	}
	return ok
}
