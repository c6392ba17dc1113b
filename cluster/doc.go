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
//	KV idmq-retained   key RetainedKey(topic) ("m.<tokens>" or "t.<tokens>.<hash>"): the retained message's
//	                   envelope; an empty retained payload is a delete. One value per topic, last writer wins.
//	KV idmq-sessions   key ClientKey(client id): a persistent session, its subscriptions and its cursor, the
//	                   stream sequence up to which its node delivered it.
//	KV idmq-owners     key ClientKey(client id): the node and connection holding the client now, for takeover
//	                   (a node that sees another node take its client's key disconnects it, 0x8E).
//	KV idmq-revocations  credential revocations, kept until they expire.
//	KV idmq-nodes      key: node name; value JSON {node, started, meta_leader}; memory storage; TTL PresenceTTL
//	                   (5s) renewed by each node's heartbeat (Options.Heartbeat, 1s); Close deletes the key.
//	KV idmq-wills      key ClientKey(client id) + "." + the owners record's conn: the Will of one connection,
//	                   JSON {client, node, node_started, conn, delay, will (envelope)}, while it is connected.
//
// The broker writes the retained, sessions, owners, wills and revocations buckets; this package provisions
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
// # Routing
//
// A node publishes each accepted PUBLISH to the stream (Publish, or PublishAsync with acks waited in order) and
// acknowledges its MQTT publisher only after JetStream's ack. Each node runs ONE ordered consumer (Consume):
// ephemeral, unacknowledged, memory-light, recreated by the client from the last sequence after a leader change;
// it starts at the stream's end and passes every message published by OTHER nodes, in stream order, to the
// broker, which delivers it to its local subscribers (the node's own messages were delivered locally already).
// No durable consumer per subscription or per session (nats-server #3116, #6191): a persistent session is a
// cursor, a stream sequence; resuming it on any node replays the stream from the cursor (Consume with StartSeq,
// IncludeOwn and the session's FilterSubjects).
//
// # Readiness
//
// Ready is true while the NATS connection is up and a heartbeat write to idmq-nodes (which needs the bucket's
// leader and a quorum) succeeded within the last 3 heartbeats. A node whose server stops, or that is cut off
// from the majority, turns not ready within 3 heartbeats (3s by default), and at once when its connection
// drops; OnReadyChange tells the broker, which answers /readyz 503 and refuses CONNECTs (0x88) meanwhile.
// Nodes lists the live nodes (keys in idmq-nodes), the JetStream meta leader and the stream's leader.
// LiveNodes answers from a local view of the same keys, without a JetStream round trip.
//
// # Wills
//
// mochi publishes a Will when a connection ends on a live node; a dead node publishes nothing. So each node
// stores the Will of each connection in idmq-wills and deletes it when the connection ends there. Every node
// follows idmq-wills and idmq-nodes: a record whose node has not renewed its presence for PresenceTTL (or
// restarted since) is an orphan; once its Will Delay Interval has passed, counted from when the loss was seen
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
