package mochifix

// Part of the write-ahead log: wal_hook.go says which mochi defect it works around, what proves it and
// when it can go. This file: loading with torn-tail recovery, one write(2) per record, compaction.
//
// Each record is one write(2) on a file opened for appending, with no fsync: a kill -9 loses nothing
// the kernel has accepted, and a record the process was writing when it died is a torn tail, detected by
// its length and CRC and dropped. Power loss or a kernel crash can lose the tail of the log (and bolt
// fsyncs its own writes, so the store is then newer than the log): that is out of scope here.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
)

// walLog is the append-only file and the in-memory index of its pending records.
type walLog struct {
	mu          sync.Mutex
	path        string
	f           *os.File
	size        int64
	compactAt   int64 // the size that triggers the next compaction
	minCompact  int64 // the configured bound; compactAt never goes below it
	nextID      uint64
	entries     map[uint64]*walEntry
	inProgress  map[string]uint64 // publisher client id -> its publish between OnPublish and OnPublished
	abandoned   []uint64          // oldest first
	buf         []byte
	closed      bool
	compactions int // rewrites so far, for tests
	log         *slog.Logger
	writes      atomic.Int64 // records written, for tests and benchmarks
}

// openWALLog reads the log at path (creating it if absent), drops a torn or corrupt tail, and returns the
// pending records, oldest first, for replay.
func openWALLog(path string, compactAt int64, log *slog.Logger) (*walLog, []*walEntry, error) {
	if compactAt <= 0 {
		compactAt = walCompactAt
	}
	w := &walLog{
		path: path, compactAt: compactAt, minCompact: compactAt, nextID: 1,
		entries: map[uint64]*walEntry{}, inProgress: map[string]uint64{}, log: log,
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("wal: %w", err)
	}
	// Loading truncates a torn tail: never do that to the live log of another process on the same data_dir.
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("wal %s: in use by another process: %w", path, err)
	}
	good, err := w.load(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("wal %s: %w at offset %d; move the file aside to start without replaying it", path, err, good)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("wal: %w", err)
	}
	if st.Size() > good {
		log.Warn("wal: dropping a torn or corrupt tail (a record being written when the process died)",
			"file", path, "offset", good, "bytes", st.Size()-good)
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("wal: truncating torn tail: %w", err)
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("wal: %w", err)
	}
	w.f, w.size = f, good
	pending := make([]*walEntry, 0, len(w.entries))
	for _, e := range w.entries {
		pending = append(pending, e)
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i].id < pending[j].id })
	return w, pending, nil
}

// load reads records until the end or the first bad one, and returns the offset after the last good one.
func (w *walLog) load(r io.Reader) (int64, error) {
	var off int64
	hdr := make([]byte, walHeaderSize)
	var body []byte
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return off, nil // EOF, or a header cut short: the tail
		}
		n := binary.BigEndian.Uint32(hdr)
		if n == 0 || n > walMaxRecord {
			return off, nil
		}
		if cap(body) < int(n) {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return off, nil
		}
		if crc32.Checksum(body, walCRC) != binary.BigEndian.Uint32(hdr[4:]) {
			return off, nil
		}
		if err := w.apply(body, append(hdr[:walHeaderSize:walHeaderSize], body...)); err != nil {
			return off, err
		}
		off += walHeaderSize + int64(n)
	}
}

// apply replays one decoded record into the index; frame is the record as it sits in the file.
func (w *walLog) apply(body, frame []byte) error {
	d := walDecoder{b: body}
	kind := walKind(d.byte())
	id := d.uvarint()
	if id >= w.nextID {
		w.nextID = id + 1
	}
	switch kind {
	case walPending:
		m := d.message()
		if d.err != nil {
			return d.err
		}
		w.entries[id] = &walEntry{id: id, msg: m, queue: map[string]uint16{}, queued: map[string]bool{}, frames: frame}
	case walQueue, walQueued:
		client, pid := d.string(), uint16(d.uvarint())
		if d.err != nil {
			return d.err
		}
		if e, ok := w.entries[id]; ok {
			if kind == walQueue {
				e.queue[client] = pid
			} else {
				e.queued[client] = true
			}
			e.frames = append(e.frames, frame...)
		}
	case walDone, walAbandoned:
		if d.err != nil {
			return d.err
		}
		if kind == walDone {
			delete(w.entries, id)
		} else if e, ok := w.entries[id]; ok {
			e.abandoned = true
			e.frames = append(e.frames, frame...)
		}
	default:
		return fmt.Errorf("%w: kind %d", errWALCorrupt, kind)
	}
	return nil
}

// writeLocked frames one record and writes it with a single write(2). It returns the frame, which is
// w.buf: valid until the next write, so a caller that keeps it copies it.
func (w *walLog) writeLocked(kind walKind, id uint64, fields func([]byte) []byte) ([]byte, error) {
	if w.closed {
		return nil, errors.New("wal: closed")
	}
	b := append(w.buf[:0], make([]byte, walHeaderSize)...)
	b = append(b, byte(kind))
	b = binary.AppendUvarint(b, id)
	if fields != nil {
		b = fields(b)
	}
	body := b[walHeaderSize:]
	if len(body) > walMaxRecord {
		return nil, fmt.Errorf("wal: record of %d bytes exceeds %d", len(body), walMaxRecord)
	}
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(body, walCRC))
	w.buf = b
	n, err := w.f.Write(b)
	w.size += int64(n)
	if err != nil {
		// A partial record is a torn tail to the next load, and later records after it would be lost
		// with it: cut it off now.
		if terr := w.f.Truncate(w.size - int64(n)); terr == nil {
			w.size -= int64(n)
			_, _ = w.f.Seek(w.size, io.SeekStart)
		}
		return nil, fmt.Errorf("wal: write: %w", err)
	}
	w.writes.Add(1)
	return b, nil
}

// compactLocked rewrites the log with only the records of pending entries, through a temporary file
// renamed over the log (atomic on POSIX), so a crash leaves either the old or the new file whole.
func (w *walLog) compactLocked() error {
	tmp := w.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("wal: compact: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return fmt.Errorf("wal: compact: %w", err)
	}
	ids := make([]uint64, 0, len(w.entries))
	for id := range w.entries {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	bw := bufio.NewWriterSize(f, 1<<20)
	var size int64
	for _, id := range ids {
		n, _ := bw.Write(w.entries[id].frames)
		size += int64(n)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("wal: compact: %w", err)
	}
	if err := os.Rename(tmp, w.path); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("wal: compact: %w", err)
	}
	w.f.Close()
	w.f, w.size = f, size
	// Many pending records (a large fan-out under way) must not make every later record compact again.
	w.compactAt = max(w.minCompact, 2*size)
	w.compactions++
	return nil
}

// compact rewrites the log now (after replay, when nothing is pending, this empties it).
func (w *walLog) compact() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.compactLocked()
}

func (w *walLog) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.f.Close()
}

// walHook writes the pending and done records around mochi's processPublish. The queue/queued records
// are written by storageFixes around the store's own write, so their order against it does not depend
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
