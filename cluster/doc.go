// Package cluster makes several idmq nodes one broker on NATS JetStream: a nats-server embedded in every node
// (routes between the nodes) or an external NATS cluster. It owns the connection, the JetStream data, message
// routing between nodes and each node's presence; the broker wires it into mochi with hooks.
//
// # Nodes and NATS
//
// Each node is named (Config.Node, default the hostname). Embedded, the name is the nats-server's name, the NATS
// cluster is named "idmq", routes go to nats.listen/nats.routes, and JetStream keeps its files in
// <nats.store_dir>/jetstream (nats-server adds the last element; store_dir defaults to data_dir/jetstream). The
// node talks to its own server over an in-process connection. nats-server starts routes only once it listens for
// clients, so a routed node without nats.client_listen listens on an ephemeral 127.0.0.1 port protected by a
// random token only the process knows; nats.client_listen opens a client port WITHOUT authentication, for
// monitoring and the nats CLI on a trusted network. With nats.url the node connects to an external NATS
// (nats.credentials_file for its credentials) and reconnects forever, reporting not ready meanwhile.
//
// Every JetStream call is bounded (Options.OpTimeout, 5s); Start waits up to Options.StartTimeout (60s) for the
// JetStream meta leader, i.e. for a quorum of the cluster's servers.
//
// # Data layout
//
// All names are fixed; every node creates or updates them at start (Start -> provision), idempotently. Streams
// and buckets use Config.Replicas (R3 tolerates the loss of one node).
//
//	idmq-msgs          stream, limits retention, MaxAge = cluster.retention, file storage, duplicate window 2m.
//	                   Subjects idmq.m.> and idmq.t.>: every MQTT PUBLISH accepted by any node, once.
//	                   Subject: TopicSubject(topic) (below). Body: the envelope (below), no headers.
//	idmq-share-<hash> durable pull consumer on idmq-msgs, one per shared subscription group and filter
//	                   (hash: ShareConsumerName(group, filter), the same on every node), FilterSubjects(filter),
//	                   DeliverNew, explicit ack, AckWait 30s, created by the first node with a member, deleted by
//	                   JetStream 2 minutes after the last pull request (no member left on any node).
//	KV idmq-retained   key RetainedKey(topic) ("m.<tokens>" or "t.<tokens>.<hash>"): the retained message's
//	                   envelope; an empty retained payload is a delete. One value per topic, last writer wins.
//	KV idmq-sessions   key ClientKey(client id): a persistent session (JSON: user, node, protocol, expiry,
//	                   subscriptions, cursor, updated, disconnected); see Persistent sessions.
//	KV idmq-owners     key ClientKey(client id): the node and connection holding the client now, for takeover
//	                   (a node that sees another node take its client's key disconnects it, 0x8E).
//	KV idmq-revocations  credential revocations, kept until they expire.
//	KV idmq-nodes      key: node name; value JSON {node, started, meta_leader}; memory storage; TTL PresenceTTL
//	                   (5s) renewed by each node's heartbeat (Options.Heartbeat, 1s); Close deletes the key.
//	KV idmq-wills      key ClientKey(client id) + "." + the owners record's conn: the Will of one connection,
//	                   JSON {client, node, node_started, conn, delay, will (envelope)}, while it is connected.
//	KV idmq-qos2       key ClientKey(client id): a persistent session's outbound QoS 2 deliveries in flight
//	                   (binary: format byte 1, then per delivery state 's' sent, 'r' released or 'd' completed,
//	                   packet id (2 bytes), uvarint stream sequence (0: unknown), 16-byte fingerprint).
//
// The broker writes the retained, sessions, owners, wills, qos2 and revocations buckets; this package provisions
// them and defines their keys.
//
// # Subjects
//
// Each MQTT topic level is one subject token. [A-Za-z0-9-]+ stays as it is; any other level (empty, '.', ' ',
// '*', '>', '_', '$', non-ASCII) becomes '_' + the level with every other byte as '_' + two lowercase hex digits:
// "a.b/ /é" -> "idmq.m._a_2eb.__20.__c3_a9". The mapping is injective and TopicOf reverses it. A topic whose
// subject would exceed 1024 bytes goes to "idmq.t.<leading tokens that fit>.<128-bit SHA-256 hex>".
// FilterSubjects turns an MQTT filter into non-overlapping NATS filters ('+' -> '*', '#' -> '>') covering both
// forms, so a consumer can narrow per level; mochi still does the exact MQTT match.
//
// # Envelope
//
// Version byte (1), flags byte (bits 0-1 QoS, bit 2 retain, bit 3 payload format present, bit 4 its value),
// then fields as tag byte + uvarint length + bytes: 1 origin node, 2 topic, 3 publishing client id, 4 created
// (uvarint unix ms), 5 message expiry (uvarint s), 6 content type, 7 response topic, 8 correlation data, 9 user
// property (uvarint key length, key, value; repeated in order); tag 0 ends the fields and the rest is the
// payload. Readers skip unknown tags, so nodes of different versions can share a stream.
//
// A batch (version byte 2) carries several MQTT messages of one topic from one node in one stream message:
// version byte 2, a zero byte, the origin field (tag 1, as above, so a reader tells its own messages without
// decoding), then each message as uvarint length + its version 1 envelope, in publish order. A node that cannot
// read version 2 skips such messages (nodes of one cluster must run the same version). A malformed batch is
// skipped whole.
//
// # Routing
//
// A node publishes each accepted PUBLISH to the stream (Publish, or PublishAsync with acks waited in order) and
// acknowledges its MQTT publisher only after JetStream's ack. PublishAsync batches adaptively, per subject: the
// first message of a subject goes at once; while it is on its way, later messages of that subject wait, and go
// as one batch (at most 128 messages, 64 KiB; several back to back if more waited) when its ack came; each
// message's Ack returns its batch's sequence. One goroutine at a time sends a subject's messages, in order, so
// a topic's messages are stored in the order they were published; topics may interleave differently. QoS 2
// messages and those with a DedupID are never batched (each its own stream message, in its turn). A lone publisher waits for nothing more; under load one JetStream publish, raft entry, ack and
// delivery per consumer carries many MQTT messages. Every reader (routing, replay, shared groups) handles a
// batch's messages in order; several messages may thus share one sequence. Each node runs ONE ordered consumer (Consume):
// ephemeral, unacknowledged, memory-light, recreated by the client from the last sequence after a leader change;
// it starts at the stream's end and passes every message published by OTHER nodes, in stream order, to the
// broker, which delivers it to its local subscribers (the node's own messages were delivered locally already).
// No durable consumer per subscription or per session (nats-server #3116, #6191): a persistent session is a
// cursor, a stream sequence; resuming it on any node replays the stream from the cursor through a short-lived
// ephemeral consumer filtered to the session's FilterSubjects, deleted when the replay ends.
//
// # Persistent sessions
//
// A persistent session is its record in idmq-sessions; the stream is its queue. The cursor is a stream
// sequence such that the client received and acknowledged every message up to it (of a batch: all of its
// messages; Delivery.Through). It moves to the routing
// consumer's position only at a moment when everything up to that position was handed to mochi on this node
// (no local publish between the stream and mochi's delivery) and the client has nothing in flight; it is checked
// when an acknowledgement empties the client's window (at most every 100ms) and once a second, and written at
// most once a second, on SUBSCRIBE/UNSUBSCRIBE before the SUBACK, and at disconnect. A session that goes offline
// leaves its node entirely (record written, mochi's copy dropped); a clean start or the end of the session
// deletes the record.
//
// A clean_start=false CONNECT of the same user on any node resumes it: mochi is handed an empty offline client
// to take over (so CONNACK says Session Present), then a short-lived filtered consumer replays the stream from
// cursor+1 to this client alone with mochi's per-subscriber rules and the ACL's read check, at most half the
// server's maximum in flight (or the client's Receive Maximum) outstanding. Another node's message is replayed
// only once routing here has passed it; the last few are delivered while routing and local publishes pause,
// then the subscriptions enter mochi's topic tree: no gap, no duplicate, stream order (sessions_resume.go).
//
// QoS 2 deliveries to a persistent session are recorded in idmq-qos2 (sessions_qos2.go): a PUBLISH is written
// to the client only once {packet id, message} is stored as sent, and the PUBREL answers the client's PUBREC
// only once it is stored as released (the PUBREC is taken from mochi meanwhile, so the client's other packets
// are read on). Writes of one session are coalesced (one write carries every change made while the previous
// one was in flight). A message is named by a fingerprint (publishing client, topic, created second of the
// stream's copy, which a local delivery's repeats, payload hash) and by its stream sequence where the node
// knows it (routed, replayed). Completed entries go once a stored cursor covers
// them. On resume elsewhere mochi first sends the released entries' PUBRELs; the replay then skips released
// and completed entries' messages (the client had them), sends a sent entry's message with its recorded
// packet id and DUP set (a client that PUBREC'd it does not deliver it again [MQTT-4.3.3-9]; the id is held
// for it meanwhile) and every other message as new.
//
// Guarantees: nothing acknowledged to a publisher is lost while it is within cluster.retention. QoS 2 is
// delivered exactly once across a node's death and the session's resume on another node, to a client that
// keeps its session state (MQTT 5, 4.3.3 method B). QoS 1 messages after the cursor are delivered again on
// resume elsewhere (at least once). Limits: a local publish's delivery is dropped from the record 2 x
// OpTimeout after it completed if the cursor covers the moment; a routing consumer lagging longer than that
// before a node's death can make such a message come again. A takeover from a live node on another node reads
// the record the old node last stored, which a write still in flight there can overtake (a QoS 2 message may
// then come twice). A session whose client disconnected longer ago than its expiry is not resumed (one whose
// node died with the client connected has no disconnect time and does not expire until resumed); a record is
// removed when its session ends or when its client id connects again after its expiry, never by a sweep.
//
// # Shared subscriptions
//
// mochi would pick one member of a $share group on every node, so a node takes shared subscribers out of every
// routed publish (OnSelectSubscribers) and the group's consumer delivers instead: each local member keeps two
// pull requests open for as many messages as it has room for (32 unacknowledged; two so that one still waits
// while the other is renewed). JetStream serves waiting pull requests in turn, so messages spread over the
// members cluster-wide, one member each, by member rather than by node. The node hands a pulled message to that member through mochi (an inline publish whose subscriber
// selection is that member's subscription alone: ACL, QoS and packet ids stay mochi's) and acknowledges it to
// JetStream on the member's PUBACK or PUBCOMP (QoS 0: when handed over). A QoS 1/2 copy mochi did not put in
// the member's in-flight window (full) is Nak'd; one the ACL's read check refuses (HookOptions.ReadAllowed,
// checked first) is acknowledged and dropped, as on one node. A member that disconnects first has
// its deliveries removed from its session and Nak'd, so another member receives them at once; deliveries held
// by a dead node return after the AckWait. While a member is connected its deliveries are kept from
// redelivery (InProgress every 10s). A node holding members subscribes a "guard" shared subscription on the
// group's filter, so that mochi consults the hook for every such delivery whatever members come and go.
//
// A pulled batch goes, message by message in order, to the member it was pulled for (or other members here
// when it has no room; a message waits up to 5s for room rather than being given back at once), and each
// message is settled as above; JetStream is told once all are: Ack if every message was delivered (or
// dropped), Nak if any was given back, and then the whole batch comes again, so its delivered QoS 0/1
// messages are delivered a second time (never lost). QoS 2 messages are never batched (sharebatch.go).
//
// Each group is a durable consumer replicated cluster-wide, so a node holds members of at most 1,000 distinct
// groups (group+filter) and a client is a member of at most 16; a SUBSCRIBE's shared subscription beyond either
// bound is refused with 0x97 Quota exceeded (MQTT 3.1.1: 0x80), the packet's other filters unaffected. How the
// hook makes mochi refuse one filter is in sharequota.go.
//
// # Readiness
//
// Ready is true while the NATS connection is up and a heartbeat write to idmq-nodes (which needs the bucket's
// leader and a quorum) succeeded within the last 3 heartbeats. A node whose server stops, or that is cut off
// from the majority, turns not ready within 3 heartbeats (3s by default), and at once when its connection
// drops; OnReadyChange tells the broker, which answers /readyz 503 and refuses CONNECTs (0x88) meanwhile.
// Readiness does not cover the other buckets: each elects its own leader, so after a node's death a ready node
// may find the owners or wills bucket without one for seconds; its CONNECTs then wait for the election (up to
// ElectionWait, election.go) rather than being refused.
// Nodes lists the live nodes (keys in idmq-nodes), the JetStream meta leader and the stream's leader.
// LiveNodes answers from a local view of the same keys, without a JetStream round trip.
//
// # Wills
//
// mochi publishes a Will when a connection ends on a live node; a dead node publishes nothing. So each node
// stores the Will of each connection in idmq-wills and deletes it when the connection ends there. Every node
// follows idmq-wills and idmq-nodes: a record whose node has not renewed its presence for PresenceTTL, confirmed
// by a read of its presence key finding it gone (or restarted since), is an orphan; once its Will Delay Interval has passed, counted from when the loss was seen
// (never early, up to PresenceTTL late), the survivors race to delete the record at its revision and the winner publishes the Will as
// the client's publish on its own node (so it is routed and retained like any publish): once. If the client
// connected again meanwhile (the owners record names another connection), Clean Start 0 cancels the Will and
// Clean Start 1 sends it [MQTT-3.1.3-9]. A node closing normally deletes its records first: its clients'
// connections end without Wills, as on one node. A node not ready publishes no orphan's Will, and forgets its
// view of the others' heartbeats when it is ready again. On a takeover from another node, a delayed Will of
// the old connection is cancelled (Clean Start 0) or sent at once (Clean Start 1); an undelayed one is mochi's,
// sent at the close, as on one node (MQTT 5, 3.1.3.2.2).
//
// # Admin requests
//
// Nodes answer each other's admin requests (the broker's cluster-wide GET and DELETE /v1/clients) over NATS
// request/reply on idmq.admin.<node>.<name>, within AdminTimeout (2s); AskAll names the live nodes that did
// not answer. Whoever can publish on the NATS cluster can send them, as they could write to the stream and
// buckets: NATS access (nats.client_listen, an external NATS's accounts) is the cluster's trust boundary.
package cluster
