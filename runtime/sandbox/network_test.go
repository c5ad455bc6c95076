package sandbox_test

import (
	"testing"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func TestNetScratch(t *testing.T) {
	res := run(t, `
import sys, _socket, socket
print(sys.version, sys.platform)
print(sorted(n for n in dir(_socket) if not n.startswith('__'))[:400])
print(socket.socket.__mro__)
try:
    s = _socket.socket()
    print('created', s)
except Exception as e:
    print('create fail', type(e), e)
try:
    print(socket.getaddrinfo('localhost', 80))
except Exception as e:
    print('gai fail', type(e), e)
try:
    import ssl
except Exception as e:
    print('ssl fail', type(e), e)
import http.client, urllib.request
print('ok')
print('selectors' in sys.modules, 'select' in sys.builtin_module_names)
try:
    import select; print(dir(select))
except Exception as e: print('select', e)
`, sandbox.ExecOptions{})
	t.Log(res.Stdout, res.Stderr, res.Error)
}
