package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// Store keeps undelivered events in a bbolt file, one bucket per webhook, so a restart delivers them.
//
// Writes are behind the queue: Emit never waits for the disk (a CONNECT must not wait for an fsync), and a
// writer goroutine commits whatever accumulated in one transaction. A clean shutdown (Close) writes
// everything; a crash (kill -9, power loss) loses the events of the last, not yet committed, batch: at most
// commitDelay plus one commit's worth.
type Store struct {
	db      *bbolt.DB
	mu      sync.Mutex
	ops     []storeOp
	closed  bool
	kick    chan struct{}
	done    chan struct{}
	onError func(error)
}

// commitDelay is how long a write waits for more to commit with it: the crash window of an event.
const commitDelay = 50 * time.Millisecond

type storeOp struct {
	bucket string
	seq    uint64
	body   []byte // nil: delete
}

// OpenStore opens (creating) the file at path. A file locked by another process is an error after 2 s.
func OpenStore(path string) (*Store, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("events: store %s: %w", path, err)
	}
	s := &Store{db: db, kick: make(chan struct{}, 1), done: make(chan struct{}), onError: func(error) {}}
	go s.write()
	return s, nil
}

func bucketName(webhook string) []byte { return []byte("webhook/" + webhook) }

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// load returns a webhook's persisted events, oldest first.
func (s *Store) load(webhook string) ([]*item, error) {
	var out []*item
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketName(webhook))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil
			}
			out = append(out, &item{seq: binary.BigEndian.Uint64(k), body: append([]byte(nil), v...)})
			return nil
		})
	})
	return out, err
}

// buckets lists the webhooks with persisted events.
func (s *Store) buckets() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			out = append(out, string(name))
			return nil
		})
	})
	return out, err
}

func (s *Store) put(webhook string, it *item) {
	s.add(storeOp{bucket: webhook, seq: it.seq, body: it.body})
}

func (s *Store) del(webhook string, it *item) { s.add(storeOp{bucket: webhook, seq: it.seq}) }

func (s *Store) add(op storeOp) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.ops = append(s.ops, op)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Store) write() {
	defer close(s.done)
	for range s.kick {
		// Gather for a moment: a burst of events (a CONNECT storm) becomes one transaction and one fsync
		// instead of one each, which would compete for the disk with the session store's own writes.
		time.Sleep(commitDelay)
		s.mu.Lock()
		ops, closed := s.ops, s.closed
		s.ops = nil
		s.mu.Unlock()
		if len(ops) > 0 {
			if err := s.commit(ops); err != nil {
				s.onError(err)
			}
		}
		if closed {
			return
		}
	}
}

func (s *Store) commit(ops []storeOp) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		for _, op := range ops {
			b, err := tx.CreateBucketIfNotExists(bucketName(op.bucket))
			if err != nil {
				return err
			}
			if op.body == nil {
				err = b.Delete(key(op.seq))
			} else {
				err = b.Put(key(op.seq), op.body)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// Close writes what is pending and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("events: store already closed")
	}
	s.closed = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	<-s.done
	return s.db.Close()
}
