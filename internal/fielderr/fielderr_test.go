package fielderr

import (
	"errors"
	"fmt"
	"testing"
)

var errSentinel = errors.New("sentinel")

func TestFieldError(t *testing.T) {
	tests := []struct {
		name string
		err  *FieldError
		want string
	}{
		{"without line", New("providers[0].issuer", "is required for type %s", "oidc"), "providers[0].issuer: is required for type oidc"},
		{"with line", &FieldError{Path: "auth.leeway", Line: 7, Err: errors.New("must be between 0s and 5m")}, "line 7: auth.leeway: must be between 0s and 5m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Fatalf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFieldErrorUnwraps(t *testing.T) {
	err := fmt.Errorf("config: %w", New("rules[0].access", "%w: missing", errSentinel))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "rules[0].access" {
		t.Fatalf("errors.As found %v", fe)
	}
	if !errors.Is(err, errSentinel) {
		t.Fatal("the sentinel wrapped with %w is not reachable")
	}
}
