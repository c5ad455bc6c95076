package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
)

// finish publishes the job's result and acks the delivery, returning the
// result's status ("" when it could not be published and the job went
// back to the queue). The result is published only if the job has none
// yet (compare-and-set on the result subject), which makes "exactly one
// result per job" hold across redeliveries, duplicates and racing workers.
func (w *Worker) finish(ctx context.Context, d *delivery, res *jobs.Result) jobs.Status {
	res.V, res.ID, res.Tenant, res.Worker, res.Attempt = jobs.Version, d.id, d.tenant, w.cfg.ID, d.attempt
	if d.job != nil {
		res.Session = d.job.Session
	}
	res.FinishedAt = time.Now().UTC()
	w.eventsBarrier(ctx, d.id)
	err := w.publishResult(ctx, res)
	switch {
	case err == nil:
		if w.cfg.Observer != nil {
			w.cfg.Observer.JobFinished(string(res.Status))
			if o, ok := w.cfg.Observer.(tenantObserver); ok {
				o.TenantJobFinished(d.tenant, string(res.Status))
			}
		}
		d.log.Debug("job finished", "status", res.Status, "duration_ms", res.Stats.DurationMS)
	case errors.Is(err, errResultExists):
		d.log.Info("a result exists already; dropping this one")
	default:
		d.log.Warn("publishing result failed: back to the queue", "err", err)
		w.countHandBack(ctx, d, "result not published")
		_ = d.msg.NakWithDelay(time.Second)
		return ""
	}
	if err := d.msg.Ack(); err != nil {
		// The result is out; a redelivery will find it and only ack.
		d.log.Warn("ack failed", "err", err)
	}
	w.forgetDrains(ctx, d)
	return res.Status
}

var errResultExists = errors.New("worker: result exists")

// protocolVersion is the Eryx-V header of every event and result.
var protocolVersion = strconv.Itoa(jobs.Version)

// publishResult publishes res on its result subject, unless one exists.
func (w *Worker) publishResult(ctx context.Context, res *jobs.Result) error {
	limit := int(w.nc.MaxPayload()) - resultHeadroom
	data, err := encodeResult(res, limit)
	if err != nil {
		return err
	}
	msg := &nats.Msg{
		Subject: w.cfg.Subjects.Event(res.Tenant, res.ID, jobs.EventResult),
		Data:    data,
		Header:  nats.Header{jobs.HeaderVersion: []string{protocolVersion}, jobs.HeaderWorker: []string{w.cfg.ID}},
	}
	// Keep trying through a short disconnection: the alternative, running
	// the job again elsewhere, costs more.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	var lastErr error
	for try := 0; ; try++ {
		if try > 0 {
			select {
			case <-time.After(min(time.Duration(try)*200*time.Millisecond, 2*time.Second)):
			case <-pctx.Done():
				return lastErr
			}
		}
		_, lastErr = w.js.PublishMsg(pctx, msg,
			jetstream.WithExpectStream(w.cfg.Subjects.ResultsStream()),
			// Sequence 0: "no message on this subject yet".
			jetstream.WithExpectLastSequencePerSubject(0))
		if lastErr == nil {
			return nil
		}
		if isWrongLastSequence(lastErr) {
			return errResultExists
		}
		if w.nc.IsClosed() || pctx.Err() != nil {
			return lastErr
		}
	}
}

// barrierStream is a name no stream can have (stream names have no spaces).
const barrierStream = "eryx events barrier"

// errCodeStreamNotMatch is the server's "expected stream does not match".
const errCodeStreamNotMatch jetstream.ErrorCode = 10060

// eventsBarrier returns once the events stream has stored every event this
// worker's connection published before: it publishes to the stream's
// barrier subject expecting a stream that cannot exist, and the refusal
// comes back only after the messages queued before it. The result, on
// another stream, then cannot overtake the job's last output for a watcher
// that reads both. A failure only costs that ordering, so it is logged.
func (w *Worker) eventsBarrier(ctx context.Context, id string) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := w.js.PublishMsg(bctx, &nats.Msg{Subject: w.cfg.Subjects.EventsBarrier()},
		jetstream.WithExpectStream(barrierStream))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamNotMatch {
		return
	}
	w.log.Debug("events barrier", "job", id, "err", err)
}

// isWrongLastSequence reports the error of a publish whose expected last
// subject sequence did not hold: here, a result that already exists.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// resultHeadroom leaves room for headers and protocol overhead.
const resultHeadroom = 4 << 10

// encodeResult marshals res, cutting stdout, stderr, the traceback and
// the result value until the document fits in limit bytes. The cut parts
// are flagged; stdout and stderr stay complete in their events.
func encodeResult(res *jobs.Result, limit int) ([]byte, error) {
	data, err := json.Marshal(res)
	if err != nil || len(data) <= limit {
		return data, err
	}
	r := *res
	if len(r.Result) > limit/4 {
		r.ResultError = fmt.Sprintf("the result value (%d bytes of JSON) is too large for the result document", len(r.Result))
		r.Result = nil
	}
	if r.Error != nil && len(r.Error.Traceback) > limit/8 {
		e := *r.Error
		e.Traceback = "...\n" + tail(e.Traceback, limit/8)
		r.Error = &e
	}
	fixed := r
	fixed.Stdout, fixed.Stderr = "", ""
	base, err := json.Marshal(&fixed)
	if err != nil {
		return nil, err
	}
	// Share what is left between the two streams, stderr first (it is
	// usually short and explains failures). JSON escaping can make text
	// longer, so shrink until it fits.
	room := limit - len(base) - 64
	for range 8 {
		errBudget := min(len(res.Stderr), room/2)
		r.Stderr, r.StderrTruncated = cut(res.Stderr, errBudget)
		r.Stdout, r.StdoutTruncated = cut(res.Stdout, room-errBudget)
		data, err = json.Marshal(&r)
		if err != nil || len(data) <= limit {
			return data, err
		}
		room = int(float64(room) * float64(limit-len(base)) / float64(len(data)-len(base)) * 0.9)
	}
	return nil, fmt.Errorf("worker: result document does not fit in %d bytes", limit)
}

// cut returns the first n bytes of s, backing off a partial UTF-8 rune.
func cut(s string, n int) (string, bool) {
	n = max(n, 0)
	if len(s) <= n {
		return s, false
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n], true
}

// tail returns the last n bytes of s, starting on a whole UTF-8 rune.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && s[i]&0xC0 == 0x80 {
		i++
	}
	return s[i:]
}
