// Package testkit is what idmq's tests share: real keys, a fake identity provider serving discovery and
// JWKS over HTTP, an in-process mochi broker, paho clients, raw packets and a log buffer safe to read
// while other goroutines write it. One copy of each, so a fix reaches every test.
//
// It must not import idmq's own packages (broker, authhook, aclhook): their in-package tests import it.
package testkit
