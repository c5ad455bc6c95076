package worker

// Names of the worker's host-side bounds, as passed to Config.OnBound and
// counted by the eryx_bound_hits_total metric (docs/observability.md).
const (
	// BoundCancelRate: a cancel of a job not running here was not
	// remembered because cancels arrived faster than Config.CancelRate.
	BoundCancelRate = "cancel_rate"
	// BoundSessionMemory: a warm session was evicted to keep the warm
	// sessions within Config.SessionMemory.
	BoundSessionMemory = "session_memory"
	// BoundPackageBytes: a package was refused because it is larger than
	// Config.MaxPackageBytes (by its object info or while reading it).
	BoundPackageBytes = "package_bytes"
	// BoundCallbackInstall: a job without an allow-list was offered more
	// callbacks than Config.CallbackInstallMax; the rest are reachable
	// through invoke() only.
	BoundCallbackInstall = "callback_install"
	// BoundFileBytes, BoundFilesBytes: a job was rejected because an
	// input file, or all of them together, are larger than
	// Config.FileMaxBytes or FilesMaxBytes (by their object infos).
	BoundFileBytes  = "file_bytes"
	BoundFilesBytes = "files_bytes"
	// BoundOutputFilesBytes, BoundOutputFiles: a job's writes under
	// /output were refused by Config.OutputFilesBytes or OutputFiles.
	BoundOutputFilesBytes = "output_files_bytes"
	BoundOutputFiles      = "output_files"
)

// bound reports that bound was hit, to Config.OnBound if set.
func (w *Worker) bound(name string) {
	if w.cfg.OnBound != nil {
		w.cfg.OnBound(name)
	}
}
