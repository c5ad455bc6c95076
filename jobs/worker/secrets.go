package worker

import (
	"errors"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/netgate"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// bindSecrets gives the job's secrets their placeholders; a secret the
// worker does not hold rejects the job.
func (w *Worker) bindSecrets(job *jobs.Job) (*netgate.JobSecrets, error) {
	if len(job.Secrets) == 0 {
		return nil, nil
	}
	js, err := w.cfg.Secrets.Bind(job.Secrets)
	if errors.Is(err, netgate.ErrUnknownSecret) {
		return nil, reject(jobs.CodeUnknownSecret, "%v", err)
	}
	return js, err
}

// withSecrets makes the execution see the placeholders and redacts them
// (and, should one ever get there, the values) from everything the job
// publishes: output events, trace events, the result.
func withSecrets(opts *sandbox.ExecOptions, js *netgate.JobSecrets) {
	if js == nil {
		return
	}
	opts.Env = js.Env()
	if out := opts.OnOutput; out != nil {
		opts.OnOutput = func(s sandbox.Stream, chunk []byte) { out(s, js.RedactBytes(chunk)) }
	}
	if tr := opts.OnTrace; tr != nil {
		opts.OnTrace = func(ev sandbox.TraceEvent) {
			ev.Function = js.Redact(ev.Function)
			ev.Callback = js.Redact(ev.Callback)
			if len(ev.Args) > 0 {
				ev.Args = js.RedactBytes(ev.Args)
			}
			if ev.Error != nil {
				e := *ev.Error
				e.Message = js.Redact(e.Message)
				ev.Error = &e
			}
			tr(ev)
		}
	}
}

// redactResult removes placeholders from a result document.
func redactResult(res *jobs.Result, js *netgate.JobSecrets) {
	if js == nil {
		return
	}
	res.Stdout, res.Stderr = js.Redact(res.Stdout), js.Redact(res.Stderr)
	res.ResultError = js.Redact(res.ResultError)
	if len(res.Result) > 0 {
		res.Result = js.RedactBytes(res.Result)
	}
	if res.Error != nil {
		res.Error.Message = js.Redact(res.Error.Message)
		res.Error.Traceback = js.Redact(res.Error.Traceback)
	}
	res.SessionError = js.Redact(res.SessionError)
	for i := range res.SessionSkipped {
		res.SessionSkipped[i].Name = js.Redact(res.SessionSkipped[i].Name)
		res.SessionSkipped[i].Reason = js.Redact(res.SessionSkipped[i].Reason)
	}
}
