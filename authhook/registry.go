package authhook

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxDeviceKeyFile bounds a registry file: three certificates are a few KiB.
	maxDeviceKeyFile = 64 << 10
	// registryPollInterval is how often registry_dir's own mtime is checked. A file added, removed or renamed
	// changes it, so such a change is live within about this long. fsnotify is not used: it misses changes on
	// network and some container file systems, and a stat per second costs nothing.
	registryPollInterval = time.Second
	// registrySweepEvery forces a full rescan (a stat per file) every this many polls, to catch files edited
	// in place, which leave the directory's mtime alone.
	registrySweepEvery = 10
	// racyWindow: an mtime this close to a scan may be followed by another change in the same timestamp
	// granularity (1 s on some file systems), so whatever carries it is looked at again on the next poll.
	racyWindow = 2 * time.Second
)

// deviceRegistry holds the devices of one provider: inline ones (fixed at New) and those of registry_dir,
// which a goroutine keeps in step with the directory.
type deviceRegistry struct {
	provider string
	dir      string // "" = inline devices only
	inline   map[string]*device
	log      *slog.Logger
	now      func() time.Time
	set      atomic.Pointer[deviceSet]

	// Scan state: owned by whoever scans (New, then the polling goroutine); scanMu serialises Check's scans
	// with the poller's.
	scanMu  sync.Mutex
	dirSig  fileSig
	files   map[string]registryFile // file name -> what it held when last read
	racy    bool                    // something changed too recently to trust its mtime: scan again
	polls   int
	statMu  sync.Mutex
	lastErr error
	lastRun time.Time
}

// fileSig is what tells a changed file (or directory) from an unchanged one without reading it.
type fileSig struct {
	size  int64
	mtime time.Time
}

type registryFile struct {
	sig  fileSig
	sum  [sha256.Size]byte
	dev  *device // nil when the file was refused
	err  error
	racy bool
}

// newDeviceRegistry reads the inline devices' key files and scans registry_dir once; a missing directory or
// an unreadable key file is an error (the broker does not start), while a bad file inside registry_dir is
// only logged and its device refused.
func newDeviceRegistry(name string, c *devicesSettings, at, baseDir string, log *slog.Logger, now func() time.Time) (*deviceRegistry, error) {
	r := &deviceRegistry{provider: name, inline: map[string]*device{}, log: log, now: now, files: map[string]registryFile{}}
	for i, dc := range c.Devices {
		d := &device{id: dc.ID, blocked: dc.Blocked, source: "config"}
		for k, kc := range dc.Keys {
			field := fmt.Sprintf("%s.devices[%d].keys[%d]", at, i, k)
			data := []byte(kc.PEM)
			if kc.File != "" {
				field += ".file"
				var err error
				if data, err = readBounded(resolvePath(baseDir, kc.File)); err != nil {
					return nil, fmt.Errorf("authhook: auth.%s: %w", field, err)
				}
			}
			keys, err := parseDeviceKeys(data)
			if err != nil {
				return nil, fmt.Errorf("authhook: auth.%s: %w", field, err)
			}
			for _, key := range keys {
				if !kc.Expires.IsZero() && (key.expires.IsZero() || kc.Expires.Before(key.expires)) {
					key.expires = kc.Expires
				}
				d.keys = append(d.keys, key)
			}
		}
		if len(d.keys) > maxDeviceKeys {
			return nil, fmt.Errorf("authhook: auth.%s.devices[%d].keys: %d keys, a device has at most %d", at, i, len(d.keys), maxDeviceKeys)
		}
		r.inline[d.id] = d
	}
	if c.RegistryDir != "" {
		r.dir = resolvePath(baseDir, c.RegistryDir)
		fi, err := os.Stat(r.dir)
		if err == nil && !fi.IsDir() {
			err = errors.New("not a directory")
		}
		if err != nil {
			return nil, fmt.Errorf("authhook: auth.%s.registry_dir: %w", at, err)
		}
	}
	r.scan(true)
	return r, nil
}

func resolvePath(baseDir, p string) string {
	if baseDir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(baseDir, p)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDeviceKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxDeviceKeyFile {
		return nil, fmt.Errorf("larger than %d bytes", maxDeviceKeyFile)
	}
	return data, nil
}

// lookup is the CONNECT path: no lock, no allocation, no file system access.
func (r *deviceRegistry) lookup(id string) *device { return r.set.Load().byID[id] }

// run polls registry_dir until ctx ends.
func (r *deviceRegistry) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.poll()
		}
	}
}

// poll rescans when the directory changed, when the last scan saw a change too recent to trust, and every
// registrySweepEvery polls.
func (r *deviceRegistry) poll() {
	r.scanMu.Lock()
	r.polls++
	sweep := r.polls%registrySweepEvery == 0
	racy := r.racy
	prev := r.dirSig
	r.scanMu.Unlock()
	if !sweep && !racy {
		fi, err := os.Stat(r.dir)
		if err == nil && (fileSig{size: fi.Size(), mtime: fi.ModTime()}) == prev {
			return
		}
	}
	r.scan(false)
}

// scan reads registry_dir (re-reading only files whose size or mtime changed, or whose last read was racy)
// and publishes a new device set when anything changed. A file that is unreadable or does not parse refuses
// its device: it was changed on purpose, so its previous keys must not stay valid. A directory that cannot be
// listed for a reason other than being gone keeps the current set (a passing I/O error must not lock the
// fleet out); a directory that is gone has no devices.
func (r *deviceRegistry) scan(initial bool) {
	r.scanMu.Lock()
	defer r.scanMu.Unlock()
	start := r.now()
	wall := time.Now() // mtimes are wall-clock file system times, whatever clock the hook runs on
	if r.dir == "" {
		if initial {
			r.publish(nil)
		}
		r.setStatus(nil, start)
		return
	}
	next := map[string]registryFile{}
	r.racy = false
	dirInfo, err := os.Stat(r.dir)
	var entries []os.DirEntry
	if err == nil {
		entries, err = os.ReadDir(r.dir)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if len(r.files) > 0 {
			r.log.Warn("authhook: the device registry directory is gone; its devices are refused", "provider", r.provider, "dir", r.dir)
		}
		r.dirSig = fileSig{}
	case err != nil:
		r.log.Error("authhook: cannot read the device registry; the devices loaded before stay in use",
			"provider", r.provider, "dir", r.dir, "error", err)
		r.racy = true
		r.setStatus(err, start)
		return
	default:
		r.dirSig = fileSig{size: dirInfo.Size(), mtime: dirInfo.ModTime()}
		r.racy = recent(wall, dirInfo.ModTime())
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".pem") {
			continue // editors' swap files, Kubernetes' ..data, notes
		}
		if f, ok := r.readFile(name, wall); ok {
			next[name] = f
			r.racy = r.racy || f.racy
		}
	}
	added, removed, changed := diffFiles(r.files, next)
	r.files = next
	if initial || len(added)+len(removed)+len(changed) > 0 {
		r.publish(next)
		if !initial {
			r.log.Info("authhook: device registry reloaded", "provider", r.provider, "dir", r.dir, "devices", len(r.set.Load().byID),
				"added", listIDs(added), "removed", listIDs(removed), "changed", listIDs(changed))
		}
	}
	r.setStatus(err, start)
}

func recent(now, mtime time.Time) bool {
	d := now.Sub(mtime)
	return d < racyWindow && d > -racyWindow
}

// readFile returns the file's entry, reusing the previous one when the file did not change.
func (r *deviceRegistry) readFile(name string, wall time.Time) (registryFile, bool) {
	path := filepath.Join(r.dir, name)
	fi, err := os.Stat(path) // follows symbolic links (Kubernetes secrets and config maps are links)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
		return registryFile{}, false
	}
	var f registryFile
	if err == nil {
		f.sig = fileSig{size: fi.Size(), mtime: fi.ModTime()}
		if old, ok := r.files[name]; ok && old.sig == f.sig && !old.racy {
			return old, true
		}
		f.racy = recent(wall, fi.ModTime())
	}
	id := strings.TrimSuffix(name, ".pem")
	var data []byte
	switch {
	case err != nil:
		f.err = err
	case !validDeviceID(id):
		f.err = fmt.Errorf("%q is not a valid device id (the file name must be <device-id>.pem)", id)
	default:
		if data, err = readBounded(path); err != nil {
			f.err = err
		}
	}
	if f.err == nil {
		f.sum = sha256.Sum256(data)
		if old, ok := r.files[name]; ok && old.err == nil && old.sum == f.sum {
			f.dev = old.dev // same content: keep the device (and stay quiet about it)
			return f, true
		}
		keys, err := parseDeviceKeys(data)
		if err != nil {
			f.err = err
		} else {
			f.dev = &device{id: id, keys: keys, source: path}
		}
	}
	if f.err != nil {
		if old, ok := r.files[name]; !ok || old.err == nil || old.err.Error() != f.err.Error() {
			r.log.Warn("authhook: device key file refused; the device cannot connect until it is fixed",
				"provider", r.provider, "file", path, "error", f.err.Error())
		}
	}
	return f, true
}

// publish builds the device set from registry files and inline devices (an inline entry wins over a file
// of the same id, so `blocked: true` in the config blocks a device whatever its file holds).
func (r *deviceRegistry) publish(files map[string]registryFile) {
	s := &deviceSet{byID: make(map[string]*device, len(files)+len(r.inline))}
	for _, f := range files {
		if f.dev != nil {
			s.byID[f.dev.id] = f.dev
		}
	}
	for id, d := range r.inline {
		s.byID[id] = d
	}
	for _, d := range s.byID {
		s.keys += len(d.keys)
	}
	r.set.Store(s)
}

// diffFiles names the devices whose files appeared, disappeared or now hold something else.
func diffFiles(old, next map[string]registryFile) (added, removed, changed []string) {
	for name, f := range next {
		o, ok := old[name]
		switch {
		case !ok:
			added = append(added, name)
		case o.dev != f.dev: // a new key set, or a file that became (in)valid
			changed = append(changed, name)
		}
	}
	for name := range old {
		if _, ok := next[name]; !ok {
			removed = append(removed, name)
		}
	}
	return added, removed, changed
}

// listIDs keeps reload log lines short when thousands of files change at once.
func listIDs(names []string) string {
	sort.Strings(names)
	const most = 10
	ids := make([]string, 0, min(len(names), most))
	for _, n := range names[:min(len(names), most)] {
		ids = append(ids, strings.TrimSuffix(n, ".pem"))
	}
	s := strings.Join(ids, ",")
	if len(names) > most {
		s += fmt.Sprintf(",…(%d in all)", len(names))
	}
	return s
}

func (r *deviceRegistry) setStatus(err error, at time.Time) {
	r.statMu.Lock()
	r.lastErr, r.lastRun = err, at
	r.statMu.Unlock()
}

func (r *deviceRegistry) status() (keys int, lastRun time.Time, lastErr error) {
	r.statMu.Lock()
	defer r.statMu.Unlock()
	return r.set.Load().keys, r.lastRun, r.lastErr
}
