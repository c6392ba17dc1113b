// Package mochifix contains idmq's workarounds for defects of mochi-mqtt/server v2.7.9, one file per defect
// or mechanism, each opening with what mochi does wrong, the upstream issue, the test that proves the fix
// and when the file can be deleted.
//
// Add installs them on any mochi server, in the one order that works, together with your own hooks:
//
//	fixes, err := mochifix.Add(server, mochifix.Options{Hooks: []mqtt.Hook{authHook, aclHook}, ...})
//	server.AddListener(fixes.Listener(listeners.NewNet("tcp", ln), mochifix.ListenerOptions{...}))
//	server.Serve()
//	fixes.Start() // replays the write-ahead log, then the listeners accept
//
// Disconnect, Listener, StopClients and CloseServer are usable on their own.
package mochifix
