// Package e2e starts the real idmq binary on loopback and talks to it with real MQTT clients.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// idmqBin is built once per test run, with the race detector, from this checkout. Run it through idmqPath.
var idmqBin string

var consultSources sync.Once

// idmqPath is idmqBin, after the test has looked at every file the binary is built from. TestMain builds it
// with a `go build` the test cache cannot see, so without this a change to the broker's code left `go test`
// replaying an earlier e2e result ("(cached)"). go test keys its cache on the files a test stats or opens.
func idmqPath() string {
	consultSources.Do(func() {
		_ = filepath.WalkDir(repoRoot(), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			if name := d.Name(); strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum" {
				_, _ = os.Stat(path)
			}
			return nil
		})
	})
	return idmqBin
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "idmq-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	idmqBin = filepath.Join(dir, "idmq")
	build := exec.Command("go", "build", "-race", "-o", idmqBin, "./cmd/idmq")
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building idmq:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// raceEnv makes a data race in the broker fatal (exit 66, the report in its log) rather than a line nobody
// reads, and drops the race runtime's 1 s pause at exit, which would slow every `idmq token`.
func raceEnv() []string {
	return append(os.Environ(), "GORACE=halt_on_error=1 atexit_sleep_ms=0")
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

// requireTool finds an external program. Outside CI a missing tool skips the test; in CI it fails it,
// so a CI machine without the tool never reports green for a test that did not run.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missingTool(t, fmt.Sprintf("%s is not installed (%s)", name, install))
	}
	return p
}

// missingTool skips a test whose external tool is absent, but fails it when CI=true.
func missingTool(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI must install it)")
	}
	t.Skip(msg + " (skipped; fails when CI=true)")
}

// idmqProc is one running broker process.
type idmqProc struct {
	t      *testing.T
	dir    string // working directory; config and data live here
	config string
	ports  map[string]int
	cmd    *exec.Cmd
	logs   *testkit.LogBuffer
	exited chan struct{}
	err    error
}

// newIdmq prepares a broker in a fresh directory. The config template may use {{tcp}}, {{tls}}, {{ws}},
// {{wss}}, {{http}} (each replaced with a free loopback port) and {{dir}}.
func newIdmq(t *testing.T, configTemplate string) *idmqProc {
	t.Helper()
	p := &idmqProc{t: t, dir: t.TempDir(), ports: map[string]int{}}
	cfg := configTemplate
	for _, name := range []string{"tcp", "tls", "ws", "wss", "http"} {
		key := "{{" + name + "}}"
		if strings.Contains(cfg, key) {
			p.ports[name] = testkit.FreePort(t)
			cfg = strings.ReplaceAll(cfg, key, fmt.Sprint(p.ports[name]))
		}
	}
	cfg = strings.ReplaceAll(cfg, "{{dir}}", p.dir)
	p.config = filepath.Join(p.dir, "idmq.yaml")
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs `idmq serve -c idmq.yaml` and waits until /readyz answers 200.
func (p *idmqProc) start() {
	p.t.Helper()
	p.launch()
	p.waitStarted()
}

// launch runs `idmq serve -c idmq.yaml` without waiting for it to be ready.
func (p *idmqProc) launch() {
	p.t.Helper()
	if p.logs == nil {
		// One log buffer and one cleanup for every start of this broker, so restarts keep their history.
		p.logs = &testkit.LogBuffer{}
		p.t.Cleanup(func() {
			p.stop()
			if p.t.Failed() {
				p.t.Logf("idmq logs:\n%s", p.logs.String())
			}
		})
	}
	p.cmd = exec.Command(idmqPath(), "serve", "-c", p.config)
	p.cmd.Env = raceEnv()
	p.cmd.Dir = p.dir
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
}

// waitStarted waits until the launched broker's /readyz answers 200 (without an HTTP listener: until it
// logs that it listens).
func (p *idmqProc) waitStarted() {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.t.Fatalf("idmq exited during start: %v\n%s", p.err, p.logs.String())
		default:
		}
		if p.ports["http"] != 0 {
			if code, _ := p.get("/readyz"); code == 200 {
				return
			}
		} else if p.logs.Contains("listening") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("idmq not ready after 30s:\n%s", p.logs.String())
}

// stop sends SIGTERM and waits; it returns the exit code.
func (p *idmqProc) stop() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return -1
	}
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.t.Errorf("idmq did not stop within 20s of SIGTERM")
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *idmqProc) addr(name string) string { return fmt.Sprintf("127.0.0.1:%d", p.ports[name]) }

func (p *idmqProc) get(path string) (int, string) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + p.addr("http") + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// idmqCmd runs a one-shot idmq command (check, token, version) in the broker's directory.
func (p *idmqProc) idmqCmd(args ...string) (stdout string, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, idmqPath(), args...)
	cmd.Env = raceEnv()
	cmd.Dir = p.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	_ = cmd.Run()
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// token mints a local-provider token for sub with `idmq token`, exactly as a user would.
func (p *idmqProc) token(sub string, extra ...string) string {
	p.t.Helper()
	args := append([]string{"token", "-c", p.config, "--sub", sub}, extra...)
	out, errOut, code := p.idmqCmd(args...)
	if code != 0 {
		p.t.Fatalf("idmq token failed (%d): %s", code, errOut)
	}
	return strings.TrimSpace(out)
}

// waitLog waits until the broker's log contains s.
func (p *idmqProc) waitLog(s string, within time.Duration) bool {
	return p.logs.Await(s, within)
}

// metric returns the value of a Prometheus sample line that starts with prefix (name plus labels).
func (p *idmqProc) metric(prefix string) (string, bool) {
	_, body := p.get("/metrics")
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix+" ") {
			return strings.TrimSpace(strings.TrimPrefix(line, prefix)), true
		}
	}
	return "", false
}

func syscallHUP() os.Signal { return syscall.SIGHUP }
