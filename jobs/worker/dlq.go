package worker

import (
	"context"
	"encoding/json"
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
// has none. One worker of the queue gets each advisory (durable consumer).
//
// Anyone who can publish on the advisory subject can forge one, so an
// advisory is only a hint: the job is dead-lettered only when the
// consumer's own state and the queue's workers confirm it (see verify).
func (w *Worker) onMaxDeliveries(m jetstream.Msg) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data(), &adv); err != nil || adv.StreamSeq == 0 {
		w.log.Warn("unreadable max-deliveries advisory", "err", err)
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := w.deadLetter(ctx, adv)
	switch {
	case errors.Is(err, errUndecided):
		// Some delivery of the queue is unaccounted for: it may be this
		// job, waiting for its next delivery. Look again later.
		w.log.Info("max-deliveries advisory not confirmed yet", "seq", adv.StreamSeq, "err", err)
		_ = m.NakWithDelay(w.cfg.AckWait)
	case err != nil:
		w.log.Warn("dead-lettering failed, will retry", "seq", adv.StreamSeq, "err", err)
		_ = m.NakWithDelay(time.Second)
	default:
		_ = m.Ack()
	}
}

// advisoryObserver is implemented by an Observer that counts advisories
// the worker refused to act on.
type advisoryObserver interface{ AdvisoryRejected() }

// errUndecided: the advisory can be neither confirmed nor refuted yet.
var errUndecided = errors.New("worker: delivery state undecided")

func (w *Worker) deadLetter(ctx context.Context, adv maxDeliveriesAdvisory) error {
	orig, err := w.jobs.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // acked after all, or handled by another worker
	}
	if err != nil {
		return fmt.Errorf("reading job %d: %w", adv.StreamSeq, err)
	}
	if err := w.verifyExhausted(ctx, adv, orig); err != nil {
		if errors.Is(err, errNotExhausted) {
			w.log.Warn("ignoring a max-deliveries advisory the consumer's state contradicts",
				"seq", adv.StreamSeq, "reason", err)
			if o, ok := w.cfg.Observer.(advisoryObserver); ok {
				o.AdvisoryRejected()
			}
			return nil
		}
		return err
	}
	// The tenant is the subject's (verifyExhausted checked it). The id is
	// read from the body only when the body is a well-formed claim of it
	// (as for a job that runs; see jobID).
	_, tenant, _ := w.cfg.Subjects.ParseJobs(orig.Subject)
	id := "invalid-" + strconv.FormatUint(adv.StreamSeq, 10)
	if job, err := jobs.DecodeJob(orig.Data, 0); err == nil && jobs.ValidToken(job.ID) {
		if msgID := orig.Header.Get(jobs.HeaderMsgID); msgID == "" || msgID == jobs.MsgID(tenant, job.ID) {
			id = job.ID
		}
	}
	reason := fmt.Sprintf("delivered %d times without completing: each worker that took it died or stalled (max deliveries %d)",
		adv.Deliveries, w.cfg.MaxDeliver)

	copyMsg := &nats.Msg{
		Subject: w.cfg.Subjects.DeadLetter(w.cfg.Queue, tenant),
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

	res := &jobs.Result{V: jobs.Version, ID: id, Tenant: tenant, Status: jobs.StatusRejected, Code: jobs.CodeDeadLetter, Reason: reason,
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
	w.log.Warn("job dead-lettered", "job", id, "tenant", tenant, "deliveries", adv.Deliveries)
	return nil
}

// onQueue reports whether subject is a job subject of the worker's queue
// with a valid tenant (the only jobs it delivers answers for).
func (w *Worker) onQueue(subject string) bool {
	q, _, ok := w.cfg.Subjects.ParseJobs(subject)
	return ok && q == w.cfg.Queue
}

// errNotExhausted: the advisory is contradicted by the consumer's state.
var errNotExhausted = errors.New("worker: job has not exhausted its deliveries")

// verifyExhausted checks a max-deliveries advisory against the real state
// of the queue, returning nil when the job did exhaust its deliveries,
// errNotExhausted (wrapped) when it certainly did not, and errUndecided
// when it cannot tell yet.
//
// The server drops an exhausted job from the consumer's pending set (and
// moves the ack floor past it if it was the oldest) but leaves it in the
// stream. A job still in the stream is therefore exhausted if it was
// delivered, no worker holds it, and either it is at or below the ack
// floor or no pending delivery is unaccounted for (pending deliveries
// minus those the workers hold is zero, so none is waiting for a
// redelivery).
func (w *Worker) verifyExhausted(ctx context.Context, adv maxDeliveriesAdvisory, orig *jetstream.RawStreamMsg) error {
	s := w.cfg.Subjects
	_, tenant, _ := s.ParseJobs(orig.Subject)
	switch {
	case !w.onQueue(orig.Subject):
		return fmt.Errorf("%w: message %d is on %s, not a tenant's subject of this queue", errNotExhausted, adv.StreamSeq, orig.Subject)
	case adv.Stream != s.JobsStream() || adv.Consumer != s.TenantConsumerName(w.cfg.Queue, tenant):
		return fmt.Errorf("%w: the advisory names %s/%s", errNotExhausted, adv.Stream, adv.Consumer)
	case w.held.has(adv.StreamSeq):
		return fmt.Errorf("%w: this worker is running it", errNotExhausted)
	}
	cons, err := w.js.Consumer(ctx, s.JobsStream(), adv.Consumer)
	if err != nil {
		return fmt.Errorf("reading the consumer's state: %w", err)
	}
	before, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading the consumer's state: %w", err)
	}
	if adv.StreamSeq > before.Delivered.Stream {
		return fmt.Errorf("%w: never delivered (delivered up to %d)", errNotExhausted, before.Delivered.Stream)
	}
	holders, held, err := w.askHolds(ctx, adv.StreamSeq, orig.Subject)
	if err != nil {
		return fmt.Errorf("asking the workers: %w", err)
	}
	if len(holders) > 0 {
		return fmt.Errorf("%w: held by %v", errNotExhausted, holders)
	}
	after, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading the consumer's state: %w", err)
	}
	if adv.StreamSeq <= after.AckFloor.Stream {
		return nil
	}
	// Deliveries may start or end while the workers answer: take the
	// larger count, so that a race can only make the answer "undecided".
	pending := max(before.NumAckPending, after.NumAckPending)
	if pending > held {
		return fmt.Errorf("%w: %d deliveries pending, %d held by workers", errUndecided, pending, held)
	}
	return nil
}

// advisoryPoll is how often the advisories stream is asked which of the
// queue's tenant consumers have max-deliveries advisories waiting.
const advisoryPoll = time.Second

// advisoryLoop handles the max-deliveries advisories of the queue's
// tenant consumers until ctx ends. Each consumer's advisories have a
// durable consumer of their own on the advisories stream (a work-queue
// stream: one consumer per subject, shared by the queue's workers), found
// from the stream's per-subject counts: advisories are rare, so a poll
// costs less than a standing pull per tenant.
func (w *Worker) advisoryLoop(ctx context.Context) {
	t := time.NewTicker(advisoryPoll)
	defer t.Stop()
	cons := map[string]jetstream.Consumer{}
	for {
		if err := w.pollAdvisories(ctx, cons); err != nil && ctx.Err() == nil {
			w.log.Warn("reading max-deliveries advisories", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) pollAdvisories(ctx context.Context, cons map[string]jetstream.Consumer) error {
	s := w.cfg.Subjects
	adv, err := w.js.Stream(ctx, s.AdvisoriesStream())
	if err != nil {
		return err
	}
	info, err := adv.Info(ctx, jetstream.WithSubjectFilter(jobs.MaxDeliveriesAdvisory(s.JobsStream(), "*")))
	if err != nil {
		return err
	}
	for subject, n := range info.State.Subjects {
		name := subject[strings.LastIndexByte(subject, '.')+1:]
		if _, ok := s.ParseTenantConsumer(w.cfg.Queue, name); !ok || n == 0 {
			continue
		}
		c := cons[name]
		if c == nil {
			c, err = w.js.CreateOrUpdateConsumer(ctx, s.AdvisoriesStream(), jetstream.ConsumerConfig{
				Durable:           "dlq-" + name,
				FilterSubject:     subject,
				AckPolicy:         jetstream.AckExplicitPolicy,
				AckWait:           30 * time.Second,
				InactiveThreshold: tenantConsumerIdle,
			})
			if err != nil {
				return fmt.Errorf("advisories consumer of %s: %w", name, err)
			}
			cons[name] = c
		}
		batch, err := c.FetchNoWait(16)
		if err != nil {
			delete(cons, name)
			return err
		}
		for m := range batch.Messages() {
			w.onMaxDeliveries(m)
		}
	}
	return nil
}

// holdsQuery asks the queue's workers whether they hold a delivery.
type holdsQuery struct {
	Seq uint64 `json:"seq"`
	// Subject narrows the count to the deliveries of one tenant's
	// consumer (the one whose pending count it is compared with).
	Subject string `json:"subject,omitempty"`
}

// holdsReply is one worker's answer.
type holdsReply struct {
	Worker string `json:"worker"`
	// Held is how many deliveries the worker holds; Holds whether the
	// asked one is among them.
	Held  int  `json:"held"`
	Holds bool `json:"holds"`
}

// Replies to a holds query are collected until none came for holdsIdle,
// or for holdsMax at most. A late reply only undercounts the held
// deliveries, which makes the check undecided, never wrong.
const (
	holdsIdle = 250 * time.Millisecond
	holdsMax  = 2 * time.Second
)

// askHolds asks every worker of the queue (this one included) about seq,
// returning the workers that hold it and how many deliveries they hold.
func (w *Worker) askHolds(ctx context.Context, seq uint64, subject string) (holders []string, held int, err error) {
	inbox := w.nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := w.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	q, _ := json.Marshal(holdsQuery{Seq: seq, Subject: subject})
	if err := w.nc.PublishRequest(w.cfg.Subjects.WorkerHolds(w.cfg.Queue), inbox, q); err != nil {
		return nil, 0, err
	}
	deadline := time.NewTimer(holdsMax)
	defer deadline.Stop()
	idle := time.NewTimer(holdsMax)
	defer idle.Stop()
	seen := map[string]bool{}
	for {
		select {
		case m := <-replies:
			var r holdsReply
			if json.Unmarshal(m.Data, &r) != nil || seen[r.Worker] {
				continue
			}
			seen[r.Worker] = true
			held += max(r.Held, 0)
			if r.Holds {
				holders = append(holders, r.Worker)
			}
			idle.Reset(holdsIdle)
		case <-idle.C:
			return holders, held, nil
		case <-deadline.C:
			return holders, held, nil
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// onHolds answers a holds query about this worker's deliveries.
func (w *Worker) onHolds(m *nats.Msg) {
	var q holdsQuery
	if json.Unmarshal(m.Data, &q) != nil || m.Reply == "" {
		return
	}
	n, has := w.held.state(q.Seq, q.Subject)
	data, _ := json.Marshal(holdsReply{Worker: w.cfg.ID, Held: n, Holds: has})
	_ = m.Respond(data)
}

// heldSet counts the deliveries a worker is handling, by stream sequence,
// with the subject each came on (its tenant's consumer).
type heldSet struct {
	mu   sync.Mutex
	seqs map[uint64]heldEntry
}

type heldEntry struct {
	n       int
	subject string
}

func newHeldSet() *heldSet { return &heldSet{seqs: map[uint64]heldEntry{}} }

func (h *heldSet) add(seq uint64, subject string) {
	h.mu.Lock()
	e := h.seqs[seq]
	e.n++
	e.subject = subject
	h.seqs[seq] = e
	h.mu.Unlock()
}

func (h *heldSet) remove(seq uint64) {
	h.mu.Lock()
	if e := h.seqs[seq]; e.n <= 1 {
		delete(h.seqs, seq)
	} else {
		e.n--
		h.seqs[seq] = e
	}
	h.mu.Unlock()
}

func (h *heldSet) has(seq uint64) bool {
	_, has := h.state(seq, "")
	return has
}

// state returns how many deliveries on subject are held (all of them if
// subject is empty), and whether seq is.
func (h *heldSet) state(seq uint64, subject string) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.seqs {
		if subject == "" || e.subject == subject {
			n += e.n
		}
	}
	return n, h.seqs[seq].n > 0
}
