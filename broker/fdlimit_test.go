package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeFDs drives fdWatch.check with a chosen limit and open count.
type fakeFDs struct {
	soft, hard uint64
	open       int
	limitErr   error
}

func (f *fakeFDs) watch(buf *bytes.Buffer) *fdWatch {
	return &fdWatch{
		log:   slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		limit: func() (uint64, uint64, error) { return f.soft, f.hard, f.limitErr },
		count: func() (int, error) { return f.open, nil },
	}
}

func TestFDWatchWarnsNearTheLimitOnce(t *testing.T) {
	tests := []struct {
		name  string
		opens []int // successive checks against a limit of 1000
		warns int
		clear int
	}{
		{name: "well below", opens: []int{10, 500, 799}, warns: 0},
		{name: "crossing 80%", opens: []int{700, 800}, warns: 1},
		{name: "staying above warns once", opens: []int{850, 900, 990, 850}, warns: 1},
		{name: "dipping to 75% does not re-arm", opens: []int{850, 750, 850}, warns: 1},
		{name: "below 70% re-arms", opens: []int{850, 600, 850}, warns: 2, clear: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			f := &fakeFDs{soft: 1000, hard: 4096}
			w := f.watch(&buf)
			for _, n := range tt.opens {
				f.open = n
				w.check()
			}
			out := buf.String()
			if got := strings.Count(out, "level=WARN"); got != tt.warns {
				t.Errorf("%d warnings, want %d:\n%s", got, tt.warns, out)
			}
			if got := strings.Count(out, "back below 70%"); got != tt.clear {
				t.Errorf("%d all-clear lines, want %d:\n%s", got, tt.clear, out)
			}
			if tt.warns > 0 && !strings.Contains(out, "limit=1000") {
				t.Errorf("the warning does not name the limit:\n%s", out)
			}
		})
	}
}

func TestFDWatchStartLogsTheLimitAndStops(t *testing.T) {
	var buf bytes.Buffer
	f := &fakeFDs{soft: 1000, hard: 4096, open: 900}
	stop := f.watch(&buf).start(time.Hour)
	stop()
	stop() // idempotent: Close may run after a failed Start
	out := buf.String()
	for _, want := range []string{"file descriptor limit", "soft=1000", "hard=4096", "at 90% of the limit"} {
		if !strings.Contains(out, want) {
			t.Errorf("start log lacks %q:\n%s", want, out)
		}
	}
}

func TestFDWatchWithoutALimitSaysSo(t *testing.T) {
	var buf bytes.Buffer
	f := &fakeFDs{limitErr: errors.New("no rlimit here")}
	f.watch(&buf).start(time.Hour)()
	if !strings.Contains(buf.String(), "cannot read the file descriptor limit") {
		t.Errorf("no warning about the unreadable limit:\n%s", buf.String())
	}
}

// The real readers: the limit is what getrlimit says, and an opened file shows up in the count.
func TestCountOpenFDsSeesANewDescriptor(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd on this system")
	}
	soft, hard, err := nofileLimit()
	if err != nil || soft == 0 || soft > hard {
		t.Fatalf("nofileLimit = %d, %d, %v", soft, hard, err)
	}
	before, err := countOpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	after, err := countOpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	if after != before+1 {
		t.Errorf("open descriptors %d after opening one more than %d", after, before)
	}
}
