// Package fielderr holds the one error type for configuration problems. broker, authhook and aclhook each
// re-export it as FieldError, so an embedder handles every section's errors with one errors.As, and the
// broker adds the section prefix and the YAML line without parsing another package's message.
package fielderr

import "fmt"

// FieldError is a problem with one configuration field.
type FieldError struct {
	// Path names the field with dots and indexes, relative to the section that validated it
	// ("providers[2].jwks_url"); the broker's loader makes it absolute ("auth.providers[2].jwks_url").
	Path string
	// Line is the field's line in the YAML file; 0 when not known (a config built in Go).
	Line int
	// Err says what is wrong with the value, without the path.
	Err error
}

// New is a FieldError whose reason is fmt.Errorf(format, args...), so %w keeps a sentinel reachable.
func New(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %v", e.Line, e.Path, e.Err)
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }
