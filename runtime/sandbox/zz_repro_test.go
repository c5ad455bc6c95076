package sandbox_test

import (
	"testing"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func TestZZRepro(t *testing.T) {
	code := "import socket, _socket\nprint(sorted((n, getattr(_socket, n)) for n in dir(_socket) if n.isupper() and isinstance(getattr(_socket, n), int)))\nimport sys\nprint(sorted(m for m, mod in list(sys.modules.items()) if mod is not None and any(getattr(mod, a, None) is getattr(socket, a) for a in ('AF_INET', 'SOCK_STREAM', 'AF_INET6')) ))"
	res, _ := engine.Execute(t.Context(), code, sandbox.ExecOptions{})
	t.Logf("%s %+v", res.Stdout, res.Error)
}
