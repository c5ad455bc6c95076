package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/netgate"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// delivery is one delivery of a job message being handled.
type delivery struct {
	msg     jetstream.Msg
	seq     uint64 // stream sequence
	attempt int
	queued  time.Time // when the job was published
	tenant  string    // from the subject the job arrived on
	id      string
	job     *jobs.Job
	secrets *netgate.JobSecrets // the job's secrets' placeholders
	log     *slog.Logger
}

func newDelivery(msg jetstream.Msg, log *slog.Logger) *delivery {
	d := &delivery{msg: msg, attempt: 1, queued: time.Now(), log: log}
	if meta, err := msg.Metadata(); err == nil {
		d.seq, d.attempt, d.queued = meta.Sequence.Stream, int(meta.NumDelivered), meta.Timestamp
	}
	return d
}

func reject(code jobs.RejectCode, format string, args ...any) *jobs.RejectError {
	return &jobs.RejectError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// handle runs one delivery to its end: a published result and an ack, a
// Nak (drain), or nothing at all (connection lost, simulated crash).
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	d := newDelivery(msg, w.log)
	if !w.held.add(d.seq) {
		// This worker is running the job already: its first delivery
		// went unextended past AckWait (heartbeats lost in a server
		// failover, say). Acking this one would take the job off the
		// queue while that run may still die; Nak would hand it to
		// another worker at once. Left alone, it is acked by the running
		// one, or redelivered if that one dies. It spends no budget.
		d.log.Info("second delivery of a job running here: left to the running one", "seq", d.seq, "attempt", d.attempt)
		w.countHandBack(ctx, d, "already running here")
		return
	}
	defer w.held.remove(d.seq)
	_, tenant, ok := w.cfg.Subjects.ParseJobs(msg.Subject())
	if !ok {
		// No tenant to answer to: a result on some other tenant's
		// subjects would be a forgery of ours. Nothing can be reported.
		w.log.Warn("job on a subject without a valid tenant: dropped", "subject", truncate(msg.Subject()), "seq", d.seq)
		_ = msg.Term()
		return
	}
	d.tenant = tenant
	job, decodeErr := jobs.DecodeJob(msg.Data(), w.cfg.Policy.MaxJobBytes)
	d.id, decodeErr = w.jobID(d, job, decodeErr)
	d.log = w.log.With("job", d.id, "tenant", d.tenant, "attempt", d.attempt)
	if failed, drained := w.failedDeliveries(ctx, d); failed >= w.cfg.MaxDeliver {
		w.deadLetter(ctx, d, failed, drained)
		return
	}

	var status jobs.Status
	if w.cfg.StartJob != nil {
		var end func(jobs.Status)
		ctx, end = w.cfg.StartJob(ctx, msg, d.id)
		defer func() { end(status) }()
	}
	defer func() {
		// A bug of ours must not take the worker (and every other job it
		// runs) down with it; the job gets an error result instead.
		if p := recover(); p != nil {
			d.log.Error("panic handling job", "panic", p, "stack", string(debug.Stack()))
			status = w.finish(ctx, d, &jobs.Result{Status: jobs.StatusError, Error: &jobs.ErrorInfo{
				Type: "eryx.InternalError", Message: fmt.Sprint("worker panic: ", p)}})
		}
	}()
	status = w.process(ctx, d, job, decodeErr)
}

// process validates, runs and answers a delivery, returning the status
// of the published result ("" if none was).
func (w *Worker) process(ctx context.Context, d *delivery, job *jobs.Job, decodeErr error) jobs.Status {
	if decodeErr != nil {
		return w.rejectJob(ctx, d, decodeErr)
	}
	d.job = job
	plan, err := w.cfg.Policy.Validate(job)
	if err != nil {
		return w.rejectJob(ctx, d, err)
	}
	if err := jobs.CheckTenant(job, d.tenant); err != nil {
		return w.rejectJob(ctx, d, err)
	}
	if err := w.admit(ctx, d, job, &plan); err != nil {
		return w.rejectJob(ctx, d, err)
	}
	if w.cfg.SimulateCrash != nil && w.cfg.SimulateCrash(job, d.attempt) {
		d.log.Warn("simulating a crash: abandoning the delivery")
		return ""
	}
	stall := w.cfg.SimulateStall != nil && w.cfg.SimulateStall(job, d.attempt)

	// Hold on to the delivery while we work on it, including the checks.
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	if !stall {
		go w.heartbeat(hbCtx, d, stopRun)
	}

	// The same id runs once: the dedup window catches quick duplicates at
	// publication, this catches later ones for as long as results are kept.
	if w.resultExists(ctx, d.tenant, d.id) {
		d.log.Info("duplicate job: a result exists already")
		_ = d.msg.Ack()
		w.forgetDrains(ctx, d)
		return ""
	}
	netReq, err := w.networkRequest(job)
	if err != nil {
		return w.rejectJob(ctx, d, err)
	}
	if d.secrets, err = w.bindSecrets(job); err != nil {
		return w.rejectJob(ctx, d, err)
	}
	pkgs, err := w.pkgs.resolve(ctx, d.tenant, job.Packages, w.cfg.Subjects.PackagesBucket())
	if err != nil {
		return w.rejectJob(ctx, d, err)
	}
	inputs, err := w.inputFiles(ctx, d, job.Files)
	if err != nil {
		return w.rejectJob(ctx, d, err)
	}

	key := jobKey(d.tenant, d.id)
	cancelled, duplicate := w.cancels.start(key, stopRun)
	if duplicate {
		// The same job runs here already; that run owns the result.
		d.log.Info("duplicate job: already running on this worker")
		_ = d.msg.Ack()
		return ""
	}
	if !cancelled {
		defer w.cancels.done(key)
		cancelled = w.cancelRequested(ctx, d.tenant, d.id)
	}
	if cancelled {
		if w.cfg.Observer != nil {
			w.cfg.Observer.JobCancelled()
		}
		return w.finish(ctx, d, &jobs.Result{Status: jobs.StatusCancelled, Reason: "cancelled before it started"})
	}

	res := w.execute(runCtx, d, plan, pkgs, inputs, netReq)
	if res == nil {
		return "" // put back, or nowhere to report to
	}
	if stall {
		d.log.Warn("simulating a stall: abandoning the delivery")
		return ""
	}
	if res.Status == jobs.StatusCancelled && w.cfg.Observer != nil {
		w.cfg.Observer.JobCancelled()
	}
	return w.finish(ctx, d, res)
}

// jobID chooses the id a delivery is answered under, and says why the job
// is not acceptable as sent. A job is answered under its own id only when
// that id is a valid token and agrees with the message's Nats-Msg-Id (the
// key the jobs stream deduplicated it under, jobs.MsgID(tenant, id); a
// message without one is accepted). Anything else is answered under "invalid-<stream sequence>":
// an id read from a message that is not a well-formed claim of it must not
// get a result under that id, which would be somebody else's job.
func (w *Worker) jobID(d *delivery, job *jobs.Job, decodeErr error) (string, error) {
	invalid := "invalid-" + strconv.FormatUint(d.seq, 10)
	if decodeErr != nil {
		return invalid, decodeErr
	}
	if !jobs.ValidToken(job.ID) {
		return invalid, nil // Validate rejects it (invalid_id)
	}
	if h := d.msg.Headers(); h != nil {
		if msgID := h.Get(jobs.HeaderMsgID); msgID != "" && msgID != jobs.MsgID(d.tenant, job.ID) {
			return invalid, reject(jobs.CodeInvalidID, "the Nats-Msg-Id header %q is not %q (tenant.id)",
				truncate(msgID), jobs.MsgID(d.tenant, job.ID))
		}
	}
	return job.ID, nil
}

// truncate keeps hostile input from bloating a reason.
func truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}

// heartbeat extends the delivery's AckWait while the job is handled. If
// the connection is closed, the job cannot be reported or acked, so it is
// stopped: the server will give it to another worker.
func (w *Worker) heartbeat(ctx context.Context, d *delivery, stop context.CancelCauseFunc) {
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.msg.InProgress(); err != nil {
				if w.nc.IsClosed() {
					stop(errConnLost)
					return
				}
				d.log.Warn("heartbeat failed", "err", err)
			}
		}
	}
}

// resultExists looks up the job's result subject, under its tenant: only
// a result of the same tenant makes a job a duplicate. A failed lookup
// says "no": the compare-and-set publication of the result still
// guarantees that there is only one.
func (w *Worker) resultExists(ctx context.Context, tenant, id string) bool {
	_, err := jobs.FirstResult(ctx, w.results, w.cfg.Subjects.Event(tenant, id, jobs.EventResult))
	return err == nil
}

// cancelRequested looks for a stored cancel of the job, under its tenant:
// a job cancelled while queued, perhaps before this worker existed.
func (w *Worker) cancelRequested(ctx context.Context, tenant, id string) bool {
	_, err := w.control.GetLastMsgForSubject(ctx, w.cfg.Subjects.Cancel(tenant, id))
	return err == nil
}

// rejectJob answers a job that will not run.
func (w *Worker) rejectJob(ctx context.Context, d *delivery, err error) jobs.Status {
	re, ok := jobs.AsReject(err)
	if !ok {
		// Not the job's fault (a lookup failed): try again later, without
		// spending the job's budget.
		d.log.Warn("cannot handle job now", "err", err)
		w.countHandBack(ctx, d, "transient failure")
		_ = d.msg.NakWithDelay(time.Second)
		return ""
	}
	d.log.Info("job rejected", "code", re.Code, "reason", re.Reason)
	return w.finish(ctx, d, &jobs.Result{Status: jobs.StatusRejected, Code: re.Code, Reason: re.Reason,
		Limit: re.Limit, RetryAfterMS: re.RetryAfter.Milliseconds()})
}

// execute runs the job's code. It returns nil when the job must not be
// answered: it was put back on the queue (drain) or nothing can be
// reported (connection lost).
func (w *Worker) execute(ctx context.Context, d *delivery, plan jobs.Plan, pkgs []*sandbox.Package,
	inputs []sandbox.InputFile, netReq netgate.Request) *jobs.Result {
	job := d.job
	events := newEventPublisher(w.nc, w.cfg.Subjects, d.tenant, d.id, d.attempt, w.cfg.ID)
	opts := sandbox.ExecOptions{
		Limits: sandbox.Limits{
			Timeout:          plan.Timeout,
			MemoryBytes:      plan.MemoryBytes,
			OutputBytes:      w.cfg.OutputBytes,
			CodeBytes:        w.cfg.Policy.MaxCodeBytes,
			HostCalls:        w.cfg.HostCalls,
			HostCallBytes:    w.cfg.HostCallBytes,
			TraceEvents:      w.cfg.TraceEvents,
			TraceBytes:       w.cfg.TraceBytes,
			Fuel:             plan.Fuel,
			OutputFilesBytes: w.cfg.OutputFilesBytes,
			OutputFiles:      w.cfg.OutputFiles,
		},
		Files:          inputs,
		OnOutput:       events.output,
		Callbacks:      w.callbacksFor(d, job),
		CallbackLimits: w.cfg.CallbackLimits,
		Packages:       pkgs,
		Session:        job.Session != "",
	}
	if job.Trace {
		opts.OnTrace = events.trace
	}
	withSecrets(&opts, d.secrets)
	if w.cfg.Network != nil {
		// Even with networking off the shims get their configuration, so
		// that code trying to connect gets a clear refusal.
		sess := w.cfg.Network.NewSession(netReq)
		defer sess.Close()
		sess.UseSecrets(d.secrets)
		opts.Host, opts.Network = sess, sess.GuestOptions()
	}

	started := time.Now()
	if w.cfg.Observer != nil {
		w.cfg.Observer.QueueWait(started.Sub(d.queued))
	}
	var (
		sres    *sandbox.Result
		err     error
		session *sessionOutcome
	)
	if job.Session != "" {
		sres, session, err = w.runSession(ctx, d, job, opts, pkgs)
	} else {
		sres, err = w.runFresh(ctx, job.Code, opts)
	}
	if pubErr := events.close(); pubErr != nil {
		d.log.Warn("publishing output events", "err", pubErr)
	}
	if w.cfg.Observer != nil {
		w.cfg.Observer.Execution(time.Since(started))
	}

	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errDraining):
		d.log.Info("job interrupted by drain: back to the queue")
		w.handBack(ctx, d, "drain")
		return nil
	case errors.Is(cause, errConnLost):
		d.log.Warn("job abandoned: connection closed")
		return nil
	}
	if sres == nil {
		if re, ok := jobs.AsReject(err); ok {
			return &jobs.Result{Status: jobs.StatusRejected, Code: re.Code, Reason: re.Reason}
		}
		switch {
		case errors.Is(err, sandbox.ErrCodeTooLarge):
			return &jobs.Result{Status: jobs.StatusRejected, Code: jobs.CodeTooLarge, Reason: err.Error()}
		case errors.Is(err, sandbox.ErrInvalidCode):
			return &jobs.Result{Status: jobs.StatusRejected, Code: jobs.CodeInvalidCode, Reason: err.Error()}
		case errors.Is(err, sandbox.ErrInvalidLimits):
			return &jobs.Result{Status: jobs.StatusRejected, Code: jobs.CodeInvalidLimits, Reason: err.Error()}
		case errors.Is(cause, errUserCancel):
			return &jobs.Result{Status: jobs.StatusCancelled, Reason: "cancelled by request"}
		}
		// The sandbox could not even start (host out of memory, say):
		// another worker, or this one later, may do better.
		d.log.Warn("sandbox failed to start: back to the queue", "err", err)
		_ = d.msg.NakWithDelay(time.Second)
		return nil
	}
	res := resultFromSandbox(sres)
	w.outputFiles(ctx, d, sres, res)
	if sres.Status == sandbox.StatusCrashed {
		// The job's result says only that the interpreter crashed; the
		// cause (a wasm trap, a host panic) is for the operator, and a
		// crash that is not a C stack overflow of the job's making is a
		// runtime bug to find.
		cause, stack := crashCause(err)
		d.log.Error("guest crashed", "cause", cause, "stack", stack)
	}
	if sres.Limit != nil {
		d.log.Warn("job stopped: limit exceeded", "limit", sres.Limit.Limit, "max", sres.Limit.Max, "want", sres.Limit.Want)
		if w.cfg.Observer != nil {
			w.cfg.Observer.LimitExceeded(sres.Limit.Limit)
		}
	}
	if sres.Status == sandbox.StatusFuelExhausted {
		d.log.Warn("job stopped: fuel exhausted", "limit", "fuel", "fuel", plan.Fuel, "consumed", sres.FuelConsumed)
		if w.cfg.Observer != nil {
			w.cfg.Observer.LimitExceeded("fuel")
		}
	}
	if sres.TraceTruncated {
		d.log.Info("trace truncated")
	}
	if res.Status == jobs.StatusCancelled {
		res.Reason = "cancelled by request"
	}
	if session != nil {
		session.apply(res)
	}
	redactResult(res, d.secrets)
	res.Stats.QueueMS = ms(started.Sub(d.queued))
	return res
}

// crashStackBytes bounds the stack trace logged with a crash: wazero's
// include the whole Go stack, and a log line is not the place for it all.
const crashStackBytes = 8 << 10

// crashCause splits a crash error into its first line (the trap or panic)
// and the stack traces wazero appends.
func crashCause(err error) (cause, stack string) {
	if err == nil {
		return "unknown (no error from the sandbox)", ""
	}
	cause, stack, _ = strings.Cut(err.Error(), "\n")
	if len(stack) > crashStackBytes {
		stack = stack[:crashStackBytes] + "..."
	}
	return cause, stack
}

// runFresh runs code in a sandbox of its own from the pool.
func (w *Worker) runFresh(ctx context.Context, code string, opts sandbox.ExecOptions) (*sandbox.Result, error) {
	sb, err := w.sandboxes.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer w.sandboxes.Release(sb)
	return sb.Execute(ctx, code, opts)
}

// resultFromSandbox maps the runtime's outcome onto the protocol's.
func resultFromSandbox(r *sandbox.Result) *jobs.Result {
	res := &jobs.Result{
		Stdout:          r.Stdout,
		Stderr:          r.Stderr,
		OutputTruncated: r.OutputTruncated,
		TraceTruncated:  r.TraceTruncated,
		Result:          r.Value,
		ResultError:     r.ValueError,
		ExitCode:        r.ExitCode,
		FuelConsumed:    r.FuelConsumed,
		Stats: jobs.Stats{
			DurationMS:      ms(r.Stats.Duration),
			PeakMemoryBytes: r.Stats.PeakMemoryBytes,
			MemoryLimitHit:  r.Stats.MemoryLimitHit,
		},
	}
	if r.Error != nil {
		res.Error = &jobs.ErrorInfo{Type: r.Error.Type, Message: r.Error.Message, Traceback: r.Error.Traceback, Line: r.Error.Line}
	}
	switch r.Status {
	case sandbox.StatusOK:
		res.Status = jobs.StatusOK
	case sandbox.StatusError:
		res.Status = jobs.StatusError
	case sandbox.StatusExit:
		// sys.exit(0) is a success; any other code is the code's failure.
		res.Status = jobs.StatusOK
		if r.ExitCode != nil && *r.ExitCode != 0 {
			res.Status = jobs.StatusError
			if res.Error == nil {
				res.Error = &jobs.ErrorInfo{Type: "SystemExit", Message: strconv.Itoa(*r.ExitCode)}
			}
		}
	case sandbox.StatusTimeout:
		res.Status = jobs.StatusTimeout
	case sandbox.StatusCancelled:
		res.Status = jobs.StatusCancelled
	case sandbox.StatusFuelExhausted:
		res.Status = jobs.StatusFuelExhausted
	case sandbox.StatusLimit:
		res.Status = jobs.StatusError
		if r.Limit != nil {
			res.Limit = r.Limit.Limit
		}
	default: // crashed, or a status this worker does not know
		res.Status = jobs.StatusError
		if res.Error == nil {
			res.Error = &jobs.ErrorInfo{Type: "SandboxCrashed", Message: "the Python interpreter crashed"}
		} else {
			res.Error.Message += " (the interpreter crashed)"
		}
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
