package broker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The write-ahead log closes a gap in mochi v2.7.9: processPublish sends PUBACK/PUBREC to the publisher
// before publishToSubscribers queues the message into each subscriber's in-flight store, so a kill -9
// in between loses a message the publisher was told is safe (for QoS 2 the publisher's PUBREC state is
// persisted too, so after a restart it even gets PUBCOMP for a message no subscriber will receive).
//
// Records, per publish with QoS > 0:
//   - pending {id, message}: written in OnPublish, before mochi writes the ack;
//   - queue {id, subscriber, packet id}: written just before the store persists a subscriber's copy;
//   - queued {id, subscriber, packet id}: written just after the store did;
//   - done {id}: written in OnPublished, once every subscriber's copy is queued;
//   - abandoned {id}: the publisher's connection ended before OnPublished (see walAbandoned).
//
// At start, after mochi restored the store and before any listener accepts, every pending record is
// delivered to each matching subscriber that does not already hold it (walEntry.heldBy).
//
// Each record is one write(2) on a file opened for appending, with no fsync: a kill -9 loses nothing
// the kernel has accepted, and a record the process was writing when it died is a torn tail, detected by
// its length and CRC and dropped. Power loss or a kernel crash can lose the tail of the log (and bolt
// fsyncs its own writes, so the store is then newer than the log): that is out of scope here.
const (
	walFileName = "idmq-wal.log"
	// walCompactAt is the default size past which the log is rewritten with only its pending records.
	walCompactAt = 64 << 20
	// walMaxRecord bounds one record: MQTT's largest packet plus room for the fields around it. A longer
	// length prefix can only be garbage.
	walMaxRecord = 268435455 + 64<<10
	// walMaxAbandoned bounds the records kept for publishes whose connection died between OnPublish and
	// the fan-out (mochi returns when it cannot write the ack). They are replayed at the next start; past
	// this many, the oldest is forgotten with an error log.
	walMaxAbandoned = 10000
	walHeaderSize   = 8 // length (4) + CRC32-C (4)
)

type walKind byte

const (
	walPending walKind = 1
	walQueue   walKind = 2
	walQueued  walKind = 3
	walDone    walKind = 4
	// walAbandoned: the publisher's connection died between OnPublish and the fan-out (mochi returns when
	// it cannot write the ack). The PUBREC state was stored before that write, so the publisher can still
	// complete the QoS 2 exchange on its next connection without the message ever being delivered.
	walAbandoned walKind = 5
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// errWALCorrupt marks a record that fails to decode although its CRC matched: a bug, never a torn write.
var errWALCorrupt = errors.New("wal: corrupt record")

// walMessage is what replay needs to deliver a publish exactly as mochi would have.
type walMessage struct {
	Origin          string
	PubPacketID     uint16 // the publisher's packet id, to find its persisted PUBREC state
	Topic           string
	Payload         []byte
	QoS             byte
	Retain          bool
	ProtocolVersion byte
	Created         int64
	Expiry          int64
	Props           packets.Properties // PayloadFormat, MessageExpiryInterval, ContentType, ResponseTopic, CorrelationData, User
}

func walMessageOf(pk packets.Packet) walMessage {
	return walMessage{
		Origin: pk.Origin, PubPacketID: pk.PacketID, Topic: pk.TopicName, Payload: pk.Payload,
		QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain, ProtocolVersion: pk.ProtocolVersion,
		Created: pk.Created, Expiry: pk.Expiry,
		Props: packets.Properties{
			PayloadFormat: pk.Properties.PayloadFormat, PayloadFormatFlag: pk.Properties.PayloadFormatFlag,
			MessageExpiryInterval: pk.Properties.MessageExpiryInterval, ContentType: pk.Properties.ContentType,
			ResponseTopic: pk.Properties.ResponseTopic, CorrelationData: pk.Properties.CorrelationData,
			User: pk.Properties.User,
		},
	}
}

// packet rebuilds the publish as processPublish handed it to publishToSubscribers.
func (m *walMessage) packet() packets.Packet {
	return packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:       m.Topic,
		Payload:         m.Payload,
		Origin:          m.Origin,
		Created:         m.Created,
		Expiry:          m.Expiry,
		ProtocolVersion: m.ProtocolVersion,
		Properties:      m.Props.Copy(false),
	}
}

// walEntry is one publish not yet marked done, with what is known of its fan-out.
type walEntry struct {
	id     uint64
	msg    walMessage
	queue  map[string]uint16 // subscriber -> packet id announced before the store write
	queued map[string]bool   // subscriber -> its copy reached the store
	frames []byte            // this entry's records as written, copied into the log at compaction
	// publisher is the connection whose publish this is while it is in progress (nil once abandoned or
	// when loaded from disk): a client id can be taken over by a new connection.
	publisher *mqtt.Client
	abandoned bool
}

// heldBy reports whether subscriber cl already holds this message, given the in-flight messages mochi
// restored from the store. A queued record means the store had the copy before anything could be sent, so
// it is either still in flight (mochi resends it) or was acknowledged: either way no replay. A queue
// record without queued means the process died around the store write: the restored in-flight message
// under that packet id tells which side of the write it was. The packet id was free when chosen, so a
// matching message there is this copy.
func (e *walEntry) heldBy(cl *mqtt.Client) bool {
	if e.queued[cl.ID] {
		return true
	}
	id, ok := e.queue[cl.ID]
	if !ok {
		return false
	}
	pk, ok := cl.State.Inflight.Get(id)
	return ok && pk.FixedHeader.Type == packets.Publish && pk.TopicName == e.msg.Topic && bytes.Equal(pk.Payload, e.msg.Payload)
}

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

// appendPending records a publish before mochi acknowledges it and marks it as cl's publish in progress.
func (w *walLog) appendPending(cl *mqtt.Client, pk packets.Packet) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev, ok := w.inProgress[cl.ID]; ok {
		w.abandonLocked(prev) // a publish of this id's previous connection never reached OnPublished
	}
	id := w.nextID
	w.nextID++
	m := walMessageOf(pk)
	frame, err := w.writeLocked(walPending, id, func(b []byte) []byte { return m.encode(b) })
	if err != nil {
		return 0, err
	}
	// The payload slice is mochi's and never modified after decoding, so it is kept without a copy.
	w.entries[id] = &walEntry{id: id, msg: m, queue: map[string]uint16{}, queued: map[string]bool{}, frames: slices.Clone(frame), publisher: cl}
	w.inProgress[cl.ID] = id
	return id, nil
}

// inProgressFor finds the publish in progress that pk, a subscriber's new in-flight copy, belongs to.
// The copy is matched on topic and payload too: a resent or retained copy with the same origin must not
// be taken for it (resends also carry DUP, which the caller excludes).
func (w *walLog) inProgressFor(pk packets.Packet) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, ok := w.inProgress[pk.Origin]
	if !ok {
		return 0, false
	}
	e := w.entries[id]
	// With a topic alias mochi may blank the topic of the copy; the payload still has to match.
	if (pk.TopicName != e.msg.Topic && pk.TopicName != "") || !bytes.Equal(pk.Payload, e.msg.Payload) {
		return 0, false
	}
	return id, true
}

// appendMarker writes a queue or queued record for subscriber client and packet id pid.
func (w *walLog) appendMarker(kind walKind, id uint64, client string, pid uint16) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	frame, err := w.writeLocked(kind, id, func(b []byte) []byte {
		b = appendString(b, client)
		return binary.AppendUvarint(b, uint64(pid))
	})
	if err != nil {
		return err
	}
	if e, ok := w.entries[id]; ok {
		e.frames = append(e.frames, frame...)
		if kind == walQueue {
			e.queue[client] = pid
		} else {
			e.queued[client] = true
		}
	}
	return nil
}

// finish writes done for cl's publish in progress, once mochi has queued it for every subscriber.
func (w *walLog) finish(cl *mqtt.Client) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, ok := w.inProgress[cl.ID]
	if !ok || w.entries[id].publisher != cl {
		return nil
	}
	delete(w.inProgress, cl.ID)
	return w.doneLocked(id)
}

// markDone writes done for a record replayed at start.
func (w *walLog) markDone(id uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.doneLocked(id)
}

func (w *walLog) doneLocked(id uint64) error {
	if _, err := w.writeLocked(walDone, id, nil); err != nil {
		return err
	}
	delete(w.entries, id)
	if w.size > w.compactAt {
		return w.compactLocked()
	}
	return nil
}

// abandon is called when cl disconnects: a publish still in progress will never reach OnPublished (mochi
// returned because it could not write the ack). Its record stays pending and is replayed at the next start.
func (w *walLog) abandon(cl *mqtt.Client) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if id, ok := w.inProgress[cl.ID]; ok && w.entries[id].publisher == cl {
		w.abandonLocked(id)
	}
}

func (w *walLog) abandonLocked(id uint64) {
	e := w.entries[id]
	delete(w.inProgress, e.msg.Origin)
	e.publisher = nil
	e.abandoned = true
	// Without this record replay would take a QoS 2 publish completed on a later connection for one that
	// was never acknowledged (walReplay.skip). If it cannot be written, that is the only loss.
	if frame, err := w.writeLocked(walAbandoned, id, nil); err == nil {
		e.frames = append(e.frames, frame...)
	}
	w.abandoned = append(w.abandoned, id)
	for len(w.abandoned) > walMaxAbandoned {
		old := w.abandoned[0]
		w.abandoned = w.abandoned[1:]
		if e, ok := w.entries[old]; ok {
			w.log.Error("wal: too many abandoned publishes; forgetting the oldest, it will not be replayed",
				"topic", e.msg.Topic, "origin", e.msg.Origin, "limit", walMaxAbandoned)
			delete(w.entries, old)
		}
	}
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
// on hook order. It must be the last hook providing OnPublish: a later hook could still reject the packet
// after its pending record is written, or change it.
type walHook struct {
	mqtt.HookBase
	wal *walLog
}

var _ mqtt.Hook = (*walHook)(nil)

func (h *walHook) ID() string { return "idmq-wal" }

func (h *walHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnPublished || b == mqtt.OnDisconnect
}

// OnPublish runs before mochi writes PUBACK/PUBREC. A publish that cannot be logged is not acknowledged:
// v5 publishers get PUBACK 0x80, and 3.1.1 publishers none (mochi has no refusal code for them).
func (h *walHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	if _, err := h.wal.appendPending(cl, pk); err != nil {
		h.Log.Error("publish refused: the write-ahead log cannot record it", "client", cl.ID, "topic", pk.TopicName, "error", err)
		if cl.Properties.ProtocolVersion == 5 {
			return pk, packets.ErrUnspecifiedError
		}
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

func (h *walHook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return
	}
	if err := h.wal.finish(cl); err != nil {
		h.Log.Error("wal: cannot record a finished publish; it may be delivered again after a restart", "error", err)
	}
}

func (h *walHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.wal.abandon(cl) }

func (h *walHook) Stop() error { return h.wal.close() }

// walReplay delivers pending records to restored sessions, before any listener accepts a connection.
type walReplay struct {
	server *mqtt.Server
	// persist stores a subscriber's in-flight copy (the storage hook's OnQosPublish).
	persist func(cl *mqtt.Client, pk packets.Packet)
	// canRead is the ACL verdict for delivering topic to cl, as publishToClient asks it.
	canRead func(cl *mqtt.Client, topic string) bool
	now     func() time.Time
	log     *slog.Logger
}

// walReplayStats is what a replay did, for the log and tests.
type walReplayStats struct {
	Records   int // pending records found
	Delivered int // copies queued for subscribers that did not hold them
	Held      int // subscribers that already held their copy
	Skipped   int // records not replayed: expired, or a QoS 2 publish never acknowledged (see run)
}

// run replays every pending entry, marks it done and empties the log.
func (r *walReplay) run(w *walLog, pending []*walEntry) (walReplayStats, error) {
	st := walReplayStats{Records: len(pending)}
	for _, e := range pending {
		if r.skip(e) {
			st.Skipped++
		} else {
			d, held, err := r.deliver(w, e)
			st.Delivered += d
			st.Held += held
			if err != nil {
				return st, err
			}
		}
		if err := w.markDone(e.id); err != nil {
			return st, err
		}
	}
	return st, w.compact()
}

// skip reports records that must not be replayed. An expired message is dropped as mochi would. A QoS 2
// publish whose publisher session was restored without its PUBREC state was never acknowledged (mochi
// persists that state before writing PUBREC): the publisher still owns it and resends it with the same
// packet id, so replaying it too would deliver it twice. An abandoned publish is the exception: its PUBREC
// state was stored, and may be gone because the publisher completed the exchange on a later connection.
func (r *walReplay) skip(e *walEntry) bool {
	if e.msg.Expiry > 0 && e.msg.Expiry < r.now().Unix() {
		return true
	}
	if e.msg.QoS == 2 && !e.abandoned {
		if pub, ok := r.server.Clients.Get(e.msg.Origin); ok {
			ack, ok := pub.State.Inflight.Get(e.msg.PubPacketID)
			return !ok || ack.FixedHeader.Type != packets.Pubrec
		}
	}
	return false
}

// deliver queues e for every matching subscriber that does not hold it, as publishToSubscribers would.
func (r *walReplay) deliver(w *walLog, e *walEntry) (delivered, held int, err error) {
	pk := e.msg.packet()
	subs := r.server.Topics.Subscribers(pk.TopicName)
	holds := func(id string) bool {
		cl, ok := r.server.Clients.Get(id)
		return ok && e.heldBy(cl)
	}
	// A shared group delivered to one member before the crash is served.
	for group, members := range subs.Shared {
		for id := range members {
			if holds(id) {
				delete(subs.Shared, group)
				held++
				break
			}
		}
	}
	if len(subs.Shared) > 0 {
		subs.SelectShared()
		subs.MergeSharedSelected()
	}
	// Inline subscriptions (Server.Subscribe) live in this process only: nothing to restore for them.
	for id, sub := range subs.Subscriptions {
		cl, ok := r.server.Clients.Get(id)
		if !ok {
			continue
		}
		if e.heldBy(cl) {
			held++
			continue
		}
		ok, err := r.queue(w, e.id, cl, sub, pk)
		if err != nil {
			return delivered, held, err
		}
		if ok {
			delivered++
		}
	}
	return delivered, held, nil
}

// queue does for a restored (offline) session what mochi's publishToClient does for an offline client:
// the same NoLocal, ACL, retain, subscription identifier and QoS rules, a new packet id, the in-flight
// message and its store record. Topic aliases are skipped: they exist only within a network connection
// [MQTT-3.3.2-10], and this client has none yet.
func (r *walReplay) queue(w *walLog, id uint64, cl *mqtt.Client, sub packets.Subscription, pk packets.Packet) (bool, error) {
	if sub.NoLocal && pk.Origin == cl.ID {
		return false, nil // [MQTT-3.8.3-3]
	}
	if !r.canRead(cl, pk.TopicName) {
		return false, nil
	}
	caps := r.server.Options.Capabilities
	out := pk.Copy(false)
	if (cl.Properties.ProtocolVersion == 5 && !sub.RetainAsPublished) || cl.Properties.ProtocolVersion < 5 {
		out.FixedHeader.Retain = false // [MQTT-3.3.1-12]
	}
	if len(sub.Identifiers) > 0 { // [MQTT-3.3.4-3]
		out.Properties.SubscriptionIdentifier = make([]int, 0, len(sub.Identifiers))
		for _, sid := range sub.Identifiers {
			out.Properties.SubscriptionIdentifier = append(out.Properties.SubscriptionIdentifier, sid)
		}
		sort.Ints(out.Properties.SubscriptionIdentifier)
	}
	out.FixedHeader.Qos = min(out.FixedHeader.Qos, sub.Qos, caps.MaximumQos)
	if out.FixedHeader.Qos == 0 {
		return false, nil // mochi drops QoS 0 for an offline client
	}
	if cl.State.Inflight.Len() >= int(caps.MaximumInflight) {
		atomic.AddInt64(&r.server.Info.InflightDropped, 1)
		r.log.Warn("wal replay: client store quota reached, message dropped", "client", cl.ID, "topic", pk.TopicName)
		return false, nil
	}
	pid, err := cl.NextPacketID()
	if err != nil {
		atomic.AddInt64(&r.server.Info.InflightDropped, 1)
		r.log.Warn("wal replay: packet ids exhausted, message dropped", "client", cl.ID, "topic", pk.TopicName)
		return false, nil
	}
	out.PacketID = uint16(pid)
	if !cl.State.Inflight.Set(out) {
		return false, nil
	}
	atomic.AddInt64(&r.server.Info.Inflight, 1)
	// The same queue/queued markers as at publish time, so a crash during replay does not deliver twice.
	if err := w.appendMarker(walQueue, id, cl.ID, out.PacketID); err != nil {
		return false, err
	}
	r.persist(cl, out)
	if err := w.appendMarker(walQueued, id, cl.ID, out.PacketID); err != nil {
		return false, err
	}
	return true, nil
}

// openWAL opens the log when the store is persistent: with the memory store a restart loses everything
// anyway, so there is nothing to replay into.
func (b *Broker) openWAL() error {
	if b.cfg.Storage.Type == StorageMemory {
		return nil
	}
	w, pending, err := openWALLog(walPath(b.cfg.Resolve(b.cfg.DataDir)), 0, b.log)
	if err != nil {
		return err
	}
	b.wal, b.walPending = w, pending
	return nil
}

func (b *Broker) closeWAL() {
	if b.wal != nil {
		_ = b.wal.close()
	}
}

// replayWAL delivers what the log holds to the sessions mochi restored. Start calls it after the store is
// loaded and before the listeners accept. A log that cannot be written refuses the start: serving without
// it would acknowledge messages a crash can lose.
func (b *Broker) replayWAL() error {
	if b.wal == nil {
		return nil
	}
	r := &walReplay{
		server:  b.server,
		persist: func(cl *mqtt.Client, pk packets.Packet) { b.storeHook.OnQosPublish(cl, pk, pk.Created, 0) },
		canRead: func(cl *mqtt.Client, topic string) bool {
			if b.baseline != nil {
				return b.baseline.Provides(mqtt.OnACLCheck) && b.baseline.OnACLCheck(cl, topic, false)
			}
			return b.acl.OnACLCheck(cl, topic, false)
		},
		now: time.Now,
		log: b.log,
	}
	st, err := r.run(b.wal, b.walPending)
	b.walPending = nil
	if err != nil {
		return fmt.Errorf("replaying the write-ahead log %s: %w", b.wal.path, err)
	}
	if st.Records > 0 {
		b.log.Info("write-ahead log replayed", "records", st.Records, "delivered", st.Delivered,
			"already_held", st.Held, "skipped", st.Skipped)
	}
	return nil
}

func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// walPath is the log's place in data_dir.
func walPath(dataDir string) string { return filepath.Join(dataDir, walFileName) }

// walEncoding: a record body is kind (1 byte), id (uvarint), then the kind's fields; strings and byte
// slices are uvarint-length-prefixed.

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func (m *walMessage) encode(b []byte) []byte {
	b = appendString(b, m.Origin)
	b = binary.AppendUvarint(b, uint64(m.PubPacketID))
	b = appendString(b, m.Topic)
	b = appendBytes(b, m.Payload)
	b = append(b, m.QoS, m.ProtocolVersion)
	b = appendBool(b, m.Retain)
	b = binary.AppendVarint(b, m.Created)
	b = binary.AppendVarint(b, m.Expiry)
	p := &m.Props
	b = append(b, p.PayloadFormat)
	b = appendBool(b, p.PayloadFormatFlag)
	b = binary.AppendUvarint(b, uint64(p.MessageExpiryInterval))
	b = appendString(b, p.ContentType)
	b = appendString(b, p.ResponseTopic)
	b = appendBytes(b, p.CorrelationData)
	b = binary.AppendUvarint(b, uint64(len(p.User)))
	for _, u := range p.User {
		b = appendString(b, u.Key)
		b = appendString(b, u.Val)
	}
	return b
}

// walDecoder reads fields, bounds-checked; the first error sticks and later reads return zero values.
type walDecoder struct {
	b   []byte
	err error
}

func (d *walDecoder) fail() { d.err, d.b = errWALCorrupt, nil }

func (d *walDecoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *walDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *walDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *walDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := slices.Clone(d.b[:n])
	d.b = d.b[n:]
	return v
}

func (d *walDecoder) string() string { return string(d.bytes()) }

func (d *walDecoder) message() walMessage {
	var m walMessage
	m.Origin = d.string()
	m.PubPacketID = uint16(d.uvarint())
	m.Topic = d.string()
	m.Payload = d.bytes()
	m.QoS = d.byte()
	m.ProtocolVersion = d.byte()
	m.Retain = d.byte() == 1
	m.Created = d.varint()
	m.Expiry = d.varint()
	p := &m.Props
	p.PayloadFormat = d.byte()
	p.PayloadFormatFlag = d.byte() == 1
	p.MessageExpiryInterval = uint32(d.uvarint())
	p.ContentType = d.string()
	p.ResponseTopic = d.string()
	p.CorrelationData = d.bytes()
	if n := d.uvarint(); n > 0 {
		if n > uint64(len(d.b)) { // each property takes at least two bytes: bound before allocating
			d.fail()
			return m
		}
		p.User = make([]packets.UserProperty, 0, n)
		for range n {
			p.User = append(p.User, packets.UserProperty{Key: d.string(), Val: d.string()})
		}
	}
	return m
}
