// Package netgate is the host side of sandboxed networking: the only way
// Python code in an eryx sandbox reaches the network.
//
// WASI gives the guest no sockets of its own. Guest shims
// (runtime/guest/_eryx_net.py and ssl.py) turn socket and ssl calls into
// host calls ("net.connect", "net.send", ...), which a Session serves under
// a Policy. The host resolves names itself, checks every resolved address
// against blocked ranges (loopback, private, link-local, ...), and dials the
// exact address it checked, so neither the guest nor DNS rebinding can
// steer a connection somewhere the policy did not approve. TLS runs on the
// host too, with the system trust store plus the operator's extra CAs.
//
// A zero Policy denies everything: networking is off unless the operator
// lists hosts. A job may only narrow the worker's policy (Policy.Narrow).
// docs/network.md describes the policy, its environment variables and the
// SSRF model.
package netgate
