// Package events tells a backend what happened to its clients: connections, disconnections, failed
// authentications, token refreshes and expiries, revocations. Each event is POSTed as JSON to the configured
// webhooks, signed with HMAC-SHA256 over "timestamp.body" (signer.go), off the MQTT path: a CONNECT never
// waits on a webhook.
//
// Delivery is at-least-once and in order per client: a webhook's queue is split into shards by client id,
// each shard delivers one event at a time and retries it with exponential backoff and jitter until it is
// delivered or older than the webhook's retry_for. The queue is bounded; when it is full the oldest event is
// dropped and counted. With a persistent Store (bolt) undelivered events survive a restart; without one they
// are in memory only and a shutdown counts what it loses.
package events
