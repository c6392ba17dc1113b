package e2e

import (
	"os/exec"
	"testing"
)

// TestSDKUnitTestsAndTypes runs the SDK's own `node --test` unit tests and its TypeScript type check, so that
// the one test command of the README covers the JavaScript package too.
func TestSDKUnitTestsAndTypes(t *testing.T) {
	jsDir := sdkRequireTooling(t)
	for _, script := range []string{"test", "typecheck"} {
		t.Run(script, func(t *testing.T) {
			cmd := exec.Command("npm", "run", "--silent", script)
			cmd.Dir = jsDir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("npm run %s in clients/js: %v\n%s", script, err, out)
			}
		})
	}
}
