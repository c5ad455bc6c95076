package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
)

// The delivery budget. The tenant consumers deliver a job any number of
// times (MaxDeliver -1); the worker that receives a delivery decides
// whether the job has had enough. A delivery spends the budget unless a
// worker handed it back without failing it: a drain (the worker stopped),
// or a second delivery of a job the worker is still running. Those hand-
// backs are counted per stream sequence in the drains bucket, so that
//
//	failed deliveries = NumDelivered - 1 - drains(seq)
//
// counts the deliveries before this one that ended with the worker dying
// or stalling past AckWait, or with a transient failure the worker could
// not get past (the sandbox did not start). A delivery that finds
// MaxDeliver failed ones before it dead-letters the job instead of
// running it. NumDelivered comes from the server (the delivery's reply
// subject), the drains count from a bucket only workers write: neither is
// a claim of the job's submitter. See docs/RATIONALE.md.

// drainKey is the key of a job's count of handed-back deliveries.
func drainKey(seq uint64) string { return strconv.FormatUint(seq, 10) }

// drains returns how many deliveries of the job at seq were handed back.
func (w *Worker) drains(ctx context.Context, seq uint64) (int, uint64, error) {
	e, err := w.drainsKV.Get(ctx, drainKey(seq))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, 0, nil
	case err != nil:
		return 0, 0, err
	}
	n, err := strconv.Atoi(string(e.Value()))
	if err != nil || n < 0 {
		// Only workers write the bucket; an unreadable count is treated
		// as none (the job's budget is then only what the server counted).
		return 0, e.Revision(), nil //nolint:nilerr // see above
	}
	return n, e.Revision(), nil
}

// countHandBack records that the delivery d is handed back without
// failing, before the caller puts it back. If the count cannot be
// written, the delivery spends the budget like a failed one.
func (w *Worker) countHandBack(ctx context.Context, d *delivery, why string) {
	if d.seq == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for range 8 {
		n, rev, err := w.drains(ctx, d.seq)
		if err == nil {
			val := []byte(strconv.Itoa(n + 1))
			if rev == 0 {
				_, err = w.drainsKV.Create(ctx, drainKey(d.seq), val)
			} else {
				_, err = w.drainsKV.Update(ctx, drainKey(d.seq), val, rev)
			}
			if err == nil {
				d.log.Debug("delivery handed back", "why", why, "drains", n+1)
				return
			}
		}
		if ctx.Err() != nil {
			d.log.Warn("counting a handed-back delivery failed: it spends the job's delivery budget", "why", why, "err", err)
			return
		}
		// a concurrent count (another worker's hand-back of an older
		// delivery): read again
	}
	d.log.Warn("counting a handed-back delivery failed: it spends the job's delivery budget", "why", why)
}

// handBack puts d back on the queue without spending its budget.
func (w *Worker) handBack(ctx context.Context, d *delivery, why string) {
	w.countHandBack(ctx, d, why)
	_ = d.msg.Nak()
}

// forgetDrains removes the job's count once the job has ended (its
// delivery acked). Only deliveries after the first, or a first one
// that had a second handed back meanwhile, can have one.
func (w *Worker) forgetDrains(ctx context.Context, d *delivery) {
	if d.seq == 0 || (d.attempt <= 1 && !w.held.handedBack(d.seq)) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := w.drainsKV.Purge(ctx, drainKey(d.seq)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		// The bucket's TTL removes it in the end.
		d.log.Debug("removing the drains count", "err", err)
	}
}

// failedDeliveries is how many deliveries of d's job before this one
// failed (see above). A count that cannot be read counts as none: the
// job is then run rather than dead-lettered on a guess.
func (w *Worker) failedDeliveries(ctx context.Context, d *delivery) (failed, drained int) {
	if d.attempt <= 1 {
		return 0, 0
	}
	n, _, err := w.drains(ctx, d.seq)
	if err != nil {
		d.log.Warn("reading the job's drained deliveries failed: running it", "err", err)
		return 0, 0
	}
	return max(d.attempt-1-n, 0), n
}

// deadLetter moves the job of d, which exhausted its deliveries, to the
// dead-letter stream with the reason, gives it a final result if it has
// none, and acks it off the work queue.
func (w *Worker) deadLetter(ctx context.Context, d *delivery, failed, drained int) {
	msg := d.msg
	reason := fmt.Sprintf("delivered %d times without completing: each worker that took it died or stalled (max deliveries %d)",
		failed, w.cfg.MaxDeliver)
	if drained > 0 {
		reason += fmt.Sprintf("; %d more deliveries were handed back by draining workers and not counted", drained)
	}
	meta, _ := msg.Metadata()
	stream := w.cfg.Subjects.JobsStream()
	if meta != nil {
		stream = meta.Stream
	}
	copyMsg := &nats.Msg{
		Subject: w.cfg.Subjects.DeadLetter(w.cfg.Queue, d.tenant),
		Data:    msg.Data(),
		Header:  nats.Header{},
	}
	for k, v := range msg.Headers() {
		// The server's own headers (Nats-Msg-Id, Nats-Expected-Stream...)
		// were instructions for the original publication, not data.
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			copyMsg.Header[k] = v
		}
	}
	seq := strconv.FormatUint(d.seq, 10)
	copyMsg.Header.Set(jobs.HeaderDLQReason, reason)
	copyMsg.Header.Set(jobs.HeaderDLQStream, stream)
	copyMsg.Header.Set(jobs.HeaderDLQSequence, seq)
	copyMsg.Header.Set(jobs.HeaderDLQDeliveries, strconv.Itoa(failed))
	copyMsg.Header.Set(jobs.HeaderDLQSubject, msg.Subject())
	// A retry (after a failure below) stores one copy.
	copyMsg.Header.Set(jobs.HeaderMsgID, "dlq-"+stream+"-"+seq)
	if _, err := w.js.PublishMsg(ctx, copyMsg); err != nil {
		d.log.Warn("copying the job to the dead-letter stream failed: back to the queue", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	res := &jobs.Result{V: jobs.Version, ID: d.id, Tenant: d.tenant, Status: jobs.StatusRejected, Code: jobs.CodeDeadLetter,
		Reason: reason, Worker: w.cfg.ID, Attempt: d.attempt, FinishedAt: time.Now().UTC()}
	if err := w.publishResult(ctx, res); err != nil && !errors.Is(err, errResultExists) {
		d.log.Warn("publishing the dead-letter result failed: back to the queue", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		d.log.Warn("ack of the dead-lettered job failed", "err", err)
	}
	w.forgetDrains(ctx, d)
	if w.cfg.Observer != nil {
		w.cfg.Observer.DeadLettered()
	}
	d.log.Warn("job dead-lettered", "failed_deliveries", failed, "drained_deliveries", drained)
}

// heldSet is the stream sequences of the jobs a worker is handling.
type heldSet struct {
	mu   sync.Mutex
	seqs map[uint64]bool // true: a second delivery was handed back meanwhile
}

func newHeldSet() *heldSet { return &heldSet{seqs: map[uint64]bool{}} }

// add records seq, or reports false if it is held already. Sequence 0
// (no metadata) is never refused.
func (h *heldSet) add(seq uint64) bool {
	if seq == 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.seqs[seq]; ok {
		h.seqs[seq] = true
		return false
	}
	h.seqs[seq] = false
	return true
}

// handedBack reports whether a second delivery of seq was handed back
// while it was held (so it has a drains count to remove).
func (h *heldSet) handedBack(seq uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seqs[seq]
}

func (h *heldSet) remove(seq uint64) {
	h.mu.Lock()
	delete(h.seqs, seq)
	h.mu.Unlock()
}
