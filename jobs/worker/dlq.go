package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
)

// maxDeliveriesAdvisory is the part of the server's
// io.nats.jetstream.advisory.v1.max_deliver advisory that we read.
type maxDeliveriesAdvisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// onMaxDeliveries moves a job that exhausted its deliveries to the
// dead-letter stream, with the reason, and gives it a final result if it
// has none. One worker of the queue gets each advisory (queue group).
func (w *Worker) onMaxDeliveries(m jetstream.Msg) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data(), &adv); err != nil || adv.StreamSeq == 0 {
		w.log.Warn("unreadable max-deliveries advisory", "err", err)
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.deadLetter(ctx, adv); err != nil {
		w.log.Warn("dead-lettering failed, will retry", "seq", adv.StreamSeq, "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

func (w *Worker) deadLetter(ctx context.Context, adv maxDeliveriesAdvisory) error {
	orig, err := w.jobs.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // acked after all, or handled by another worker
	}
	if err != nil {
		return fmt.Errorf("reading job %d: %w", adv.StreamSeq, err)
	}
	id := jobs.PeekID(orig.Data)
	if !jobs.ValidToken(id) {
		id = orig.Header.Get(jobs.HeaderMsgID)
	}
	if !jobs.ValidToken(id) {
		id = "seq-" + strconv.FormatUint(adv.StreamSeq, 10)
	}
	reason := fmt.Sprintf("delivered %d times without completing: each worker that took it died or stalled (max deliveries %d)",
		adv.Deliveries, w.cfg.MaxDeliver)

	copyMsg := &nats.Msg{
		Subject: w.cfg.Subjects.DeadLetter(w.cfg.Queue),
		Data:    orig.Data,
		Header:  nats.Header{},
	}
	for k, v := range orig.Header {
		// The server's own headers (Nats-Msg-Id, Nats-Expected-Stream...)
		// were instructions for the original publication, not data.
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			copyMsg.Header[k] = v
		}
	}
	copyMsg.Header.Set(jobs.HeaderDLQReason, reason)
	copyMsg.Header.Set(jobs.HeaderDLQStream, adv.Stream)
	copyMsg.Header.Set(jobs.HeaderDLQSequence, strconv.FormatUint(adv.StreamSeq, 10))
	copyMsg.Header.Set(jobs.HeaderDLQDeliveries, strconv.FormatUint(adv.Deliveries, 10))
	copyMsg.Header.Set(jobs.HeaderDLQSubject, orig.Subject)
	// A repeated advisory (or a retry of this function) stores one copy.
	copyMsg.Header.Set(jobs.HeaderMsgID, "dlq-"+adv.Stream+"-"+strconv.FormatUint(adv.StreamSeq, 10))
	if _, err := w.js.PublishMsg(ctx, copyMsg); err != nil {
		return fmt.Errorf("copying job %d to the dead-letter stream: %w", adv.StreamSeq, err)
	}

	res := &jobs.Result{V: jobs.Version, ID: id, Status: jobs.StatusRejected, Code: jobs.CodeDeadLetter, Reason: reason,
		Worker: w.cfg.ID, Attempt: int(adv.Deliveries), FinishedAt: time.Now().UTC()}
	if err := w.publishResult(ctx, res); err != nil && !errors.Is(err, errResultExists) {
		return fmt.Errorf("publishing the dead-letter result of %s: %w", id, err)
	}
	// The copy is safe: take the job off the work queue, where it would
	// otherwise stay, undeliverable, forever.
	if err := w.jobs.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("removing job %d from the queue: %w", adv.StreamSeq, err)
	}
	if w.cfg.Observer != nil {
		w.cfg.Observer.DeadLettered()
	}
	w.log.Warn("job dead-lettered", "job", id, "deliveries", adv.Deliveries)
	return nil
}
