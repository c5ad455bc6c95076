package worker

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Output batching. The runtime calls OnOutput for every write the code
// makes; one message per print() would cost a stream append each, so
// adjacent writes are coalesced for a short while. A flush happens after
// flushDelay, when maxBatch bytes are pending, and at the end of the job
// (before the result), so the result never overtakes its output.
const (
	flushDelay = 20 * time.Millisecond
	maxBatch   = 32 << 10
	// maxEventBytes bounds one output message, well below any server's
	// max_payload.
	maxEventBytes = 64 << 10
)

type segment struct {
	kind jobs.EventKind
	data []byte
	// trace is set instead of data for a trace event.
	trace *sandbox.TraceEvent
}

// eventPublisher publishes one job attempt's stdout, stderr and trace
// events in order, numbering them with jobs.HeaderSeq.
type eventPublisher struct {
	nc       *nats.Conn
	subjects jobs.Subjects
	tenant   string
	id       string
	attempt  int
	worker   string
	hdrAtt   string // attempt, formatted once for the headers

	mu      sync.Mutex
	pending []segment
	size    int
	timer   *time.Timer
	closed  bool

	// pubMu serialises flushes, so that a timer flush and an end-of-job
	// flush cannot interleave their messages.
	pubMu sync.Mutex
	seq   int
	err   error
}

func newEventPublisher(nc *nats.Conn, s jobs.Subjects, tenant, id string, attempt int, worker string) *eventPublisher {
	return &eventPublisher{nc: nc, subjects: s, tenant: tenant, id: id, attempt: attempt, worker: worker, hdrAtt: strconv.Itoa(attempt)}
}

// output is the sandbox.OutputHandler of the job.
func (p *eventPublisher) output(stream sandbox.Stream, chunk []byte) {
	kind := jobs.EventStdout
	if stream == sandbox.Stderr {
		kind = jobs.EventStderr
	}
	p.add(segment{kind: kind, data: chunk})
}

// trace is the job's OnTrace handler.
func (p *eventPublisher) trace(ev sandbox.TraceEvent) {
	p.add(segment{kind: jobs.EventTrace, trace: &ev})
}

func (p *eventPublisher) add(seg segment) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if n := len(p.pending); seg.trace == nil && n > 0 && p.pending[n-1].kind == seg.kind && p.pending[n-1].trace == nil {
		p.pending[n-1].data = append(p.pending[n-1].data, seg.data...)
	} else {
		if seg.data != nil {
			// The runtime may reuse its buffer after the handler returns.
			seg.data = append([]byte(nil), seg.data...)
		}
		p.pending = append(p.pending, seg)
	}
	p.size += len(seg.data) + 64
	full := p.size >= maxBatch
	if !full && p.timer == nil {
		p.timer = time.AfterFunc(flushDelay, p.flush)
	}
	p.mu.Unlock()
	if full {
		p.flush()
	}
}

// flush publishes what is pending.
func (p *eventPublisher) flush() {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	p.mu.Lock()
	batch := p.pending
	p.pending, p.size = nil, 0
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.mu.Unlock()
	for _, seg := range batch {
		if seg.trace != nil {
			p.publishTrace(seg.trace)
			continue
		}
		for data := seg.data; len(data) > 0; {
			n := min(len(data), maxEventBytes)
			p.publish(seg.kind, data[:n])
			data = data[n:]
		}
	}
}

// publishTrace publishes one trace event. The runtime has counted the
// event against the job's trace limits by its size as the guest reported
// it; encoding without HTML escaping keeps the published event no larger.
func (p *eventPublisher) publishTrace(ev *sandbox.TraceEvent) {
	raw, err := marshalNoEscape(ev)
	if err != nil {
		return
	}
	doc, err := marshalNoEscape(jobs.TraceEvent{V: jobs.Version, Attempt: p.attempt, Seq: p.seq + 1, Event: raw})
	if err != nil {
		return
	}
	p.publish(jobs.EventTrace, doc)
}

func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// publish sends one event with core NATS: the events stream captures it,
// and the connection keeps it in order with the result that follows.
// Output is best effort (the result document repeats it), so a failure is
// recorded, not retried.
func (p *eventPublisher) publish(kind jobs.EventKind, data []byte) {
	p.seq++
	msg := &nats.Msg{
		Subject: p.subjects.Event(p.tenant, p.id, kind),
		Data:    data,
		Header: nats.Header{
			jobs.HeaderVersion: []string{protocolVersion},
			jobs.HeaderAttempt: []string{p.hdrAtt},
			jobs.HeaderSeq:     []string{strconv.Itoa(p.seq)},
			jobs.HeaderWorker:  []string{p.worker},
		},
	}
	if err := p.nc.PublishMsg(msg); err != nil && p.err == nil {
		p.err = err
	}
}

// close flushes and drops anything written afterwards (a callback
// goroutine outliving the execution, say).
func (p *eventPublisher) close() error {
	p.flush()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	return p.err
}
