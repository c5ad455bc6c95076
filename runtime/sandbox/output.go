package sandbox

import (
	"bytes"
	"sync"
	"unicode/utf8"
)

// Stream names an output stream of the guest.
type Stream int

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// OutputHandler receives output chunks while the code runs, in order. It is
// called on the executing goroutine: a slow handler slows the guest down.
type OutputHandler func(stream Stream, chunk []byte)

// capture accumulates one execution's output under a shared byte budget.
type capture struct {
	mu        sync.Mutex
	budget    int
	stdout    bytes.Buffer
	stderr    bytes.Buffer
	truncated bool
	handler   OutputHandler
}

func newCapture(limit int, h OutputHandler) *capture {
	return &capture{budget: limit, handler: h}
}

func (c *capture) write(s Stream, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.truncated {
		return
	}
	if len(p) > c.budget {
		p = trimPartialRune(p[:c.budget])
		c.truncated = true
	}
	c.budget -= len(p)
	if len(p) == 0 {
		return
	}
	if s == Stderr {
		c.stderr.Write(p)
	} else {
		c.stdout.Write(p)
	}
	if c.handler != nil {
		c.handler(s, p)
	}
}

// streamWriter is the io.Writer given to wazero for fd 1 and 2. The sandbox
// outlives executions, so it routes to whichever capture is current.
type streamWriter struct {
	sb     *Sandbox
	stream Stream
}

func (w streamWriter) Write(p []byte) (int, error) {
	if c := w.sb.currentCapture(); c != nil {
		c.write(w.stream, p)
	}
	// Never fail the guest's write: a full budget silently drops output.
	return len(p), nil
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of p, so
// truncated output does not end on half a character.
func trimPartialRune(p []byte) []byte {
	for i := 1; i < utf8.UTFMax && i <= len(p); i++ {
		if utf8.RuneStart(p[len(p)-i]) {
			if !utf8.FullRune(p[len(p)-i:]) {
				return p[:len(p)-i]
			}
			return p
		}
	}
	return p
}
