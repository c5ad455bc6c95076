// Package sandbox runs untrusted Python in isolated WebAssembly sandboxes.
//
// An Engine compiles the CPython reactor module once, runs the interpreter's
// start-up once (pre-initialisation) and keeps a copy of the resulting linear
// memory. Every Sandbox is a new wasm instance whose memory is restored from
// that image, so it starts in a few milliseconds with asyncio, json, re and
// friends already imported, and shares nothing mutable with other sandboxes.
package sandbox

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/experimental/sysfs"

	"github.com/eryx-dev/eryx/runtime/assets"
	"github.com/eryx-dev/eryx/runtime/internal/memfs"
	"github.com/eryx-dev/eryx/runtime/internal/preempt"
)

// Names shared with the guest glue (runtime/guest/eryx.c).
const (
	hostModule   = "eryx"
	preemptHook  = "preempt"
	flagExport   = "eryx_preempt"
	stackPointer = "__stack_pointer"
	stdlibMount  = "/lib"
	// exitPreempted is the exit code used to unwind a guest that ignored the
	// soft interrupt. It cannot collide with a guest's own proc_exit code
	// because the sandbox only interprets it while a hard stop is underway.
	exitPreempted = 0x7e57
	// preemptBudget is how many loop iterations the guest may run between
	// two calls of the preempt hook: about a millisecond of tight C loop,
	// which bounds how long a sandbox can keep Go's scheduler and garbage
	// collector waiting, at a negligible cost per call.
	preemptBudget = 1 << 18
)

// Config configures an Engine.
type Config struct {
	// CacheDir keeps wazero's compiled code between processes. Empty means
	// the user's cache directory (~/.cache/eryx/wazero on Linux).
	CacheDir string
	// NoCompilationCache compiles from scratch every time.
	NoCompilationCache bool
	// DisablePreemption leaves out the loop checks that let a running guest
	// be stopped. Without them a C-level loop cannot be interrupted: only for
	// measuring what preemption costs.
	DisablePreemption bool
	// Limits are the defaults of every sandbox and execution of the engine.
	Limits Limits
	// HashSeed, when set, fixes CPython's str/bytes hash secret (as
	// PYTHONHASHSEED does) instead of drawing it at random per engine:
	// engines with the same seed hash alike, so even code whose work
	// depends on hash order consumes the same fuel on every worker. The
	// price is a secret that is the same everywhere and never rotates
	// (docs/security.md).
	HashSeed *uint32
	// NoSlotReset turns in-place resets off: every sandbox is then used
	// once and rebuilt (the path taken anyway where the kernel cannot
	// track dirty pages). For comparisons and as an escape hatch.
	NoSlotReset bool
	// Image is the runtime image: assets.ImageMinimal (the default when
	// empty) or assets.ImageNumpy, which has numpy built in and pre-imported.
	Image string
}

// Slot reset modes, reported in InitStats.SlotReset.
const (
	// SlotResetInPlace: a sandbox is returned to the image in place
	// between jobs (Sandbox.Reset writes back only the pages it dirtied).
	SlotResetInPlace = "in-place"
	// SlotResetRebuild: every job gets a new instance.
	SlotResetRebuild = "rebuild"
)

// InitStats are measurements of NewEngine.
type InitStats struct {
	Instrument time.Duration // rewriting the module for preemption
	Compile    time.Duration // wazero compilation (or cache load)
	PreInit    time.Duration // interpreter start-up and guest runtime import
	ImageBytes int           // size of the memory image every sandbox starts from
	// SlotReset is SlotResetInPlace or SlotResetRebuild, and
	// SlotResetFallback why it is not in place when it is not.
	SlotReset         string
	SlotResetFallback string
}

// Engine creates sandboxes. It is safe for concurrent use.
type Engine struct {
	cfg       Config
	rt        wazero.Runtime
	compiled  wazero.CompiledModule
	stdlib    fs.FS
	data      []dataSegment // the module's data, written once for pre-initialisation
	image     *memoryImage  // linear memory right after pre-initialisation
	sp        uint64        // __stack_pointer at the same moment
	clockBase time.Time
	stats     InitStats
	// In-place resets: the kernel's write tracking (nil: rebuild) and the
	// mutable globals to restore, by export name.
	tracker *dirtyTracker
	globals []string
}

// NewEngine compiles the runtime and pre-initialises the interpreter.
// It takes about a second, or less with a warm compilation cache.
func NewEngine(ctx context.Context, cfg Config) (*Engine, error) {
	cfg.Limits = cfg.Limits.withDefaults()
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	a, err := assets.LoadImage(cfg.Image)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, stdlib: a.Stdlib, clockBase: time.Now()}

	module := a.Module
	if !cfg.DisablePreemption {
		start := time.Now()
		module, err = preempt.Instrument(module, preempt.Options{
			HookModule: hostModule, HookName: preemptHook, FlagExport: flagExport,
		})
		if err != nil {
			return nil, fmt.Errorf("sandbox: instrumenting module: %w", err)
		}
		e.stats.Instrument = time.Since(start)
	}

	reason := e.slotResetShape(module)

	module, e.data, err = stripDataSegments(module)
	if err != nil {
		return nil, fmt.Errorf("sandbox: reading the module's data: %w", err)
	}

	rc := wazero.NewRuntimeConfigCompiler().
		WithMemoryLimitPages(uint32(MaxMemoryBytes / 65536)).
		// Cancellation is handled by preemption, not by wazero's per-loop
		// context checks, which cost 3x on CPU-bound code.
		WithCloseOnContextDone(false)
	if !cfg.NoCompilationCache {
		dir := cfg.CacheDir
		if dir == "" {
			base, err := os.UserCacheDir()
			if err != nil {
				return nil, fmt.Errorf("sandbox: no cache directory (set Config.CacheDir): %w", err)
			}
			dir = filepath.Join(base, "eryx", "wazero")
		}
		cache, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			return nil, fmt.Errorf("sandbox: compilation cache %s: %w", dir, err)
		}
		rc = rc.WithCompilationCache(cache)
	}
	e.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if err := e.instantiateHostModules(ctx); err != nil {
		_ = e.rt.Close(ctx)
		return nil, err
	}

	start := time.Now()
	e.compiled, err = e.rt.CompileModule(ctx, module)
	if err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("sandbox: compiling module: %w", err)
	}
	e.stats.Compile = time.Since(start)

	start = time.Now()
	if err := e.preInitialise(ctx); err != nil {
		_ = e.rt.Close(ctx)
		return nil, err
	}
	e.stats.PreInit = time.Since(start)
	e.stats.ImageBytes = e.image.size
	if reason == "" {
		reason = e.startSlotReset(ctx)
	}
	e.stats.SlotReset, e.stats.SlotResetFallback = SlotResetInPlace, reason
	if reason != "" {
		e.stats.SlotReset = SlotResetRebuild
	}
	return e, nil
}

// slotResetShape checks that everything a job can change in an instance,
// besides memory, can be put back: each mutable global is exported (so it
// can be saved and restored) and no table can change (no instruction writes
// one, none is imported or exported). It returns why not, or "".
func (e *Engine) slotResetShape(module []byte) string {
	if e.cfg.NoSlotReset {
		return "turned off (Config.NoSlotReset)"
	}
	sh, err := preempt.Inspect(module)
	switch {
	case err != nil:
		return fmt.Sprintf("module not understood: %v", err)
	case sh.TableWrites > 0 || sh.ImportedTables > 0 || sh.ExportedTables > 0:
		return "the module can change its function table"
	case sh.ImportedMutableGlobals > 0 || sh.DataOps > 0:
		return "the module imports mutable globals or uses passive data"
	}
	for _, g := range sh.MutableGlobals {
		if g.Export == "" {
			return fmt.Sprintf("mutable global %d is not exported", g.Index)
		}
		e.globals = append(e.globals, g.Export)
	}
	return ""
}

// startSlotReset opens the kernel's write tracking and checks, on a real
// sandbox, what an in-place reset relies on. It returns why in-place resets
// are not possible, or "".
func (e *Engine) startSlotReset(ctx context.Context) string {
	t, err := newDirtyTracker()
	if err != nil {
		return err.Error()
	}
	e.tracker = t
	sb, err := e.NewSandbox(ctx, Limits{})
	if err == nil {
		if _, err = sb.Execute(ctx, "x = [0] * 1000", ExecOptions{}); err == nil {
			err = sb.Reset(ctx)
		}
		_ = sb.Close(ctx)
	}
	if err != nil {
		e.tracker = nil
		_ = t.close()
		return err.Error()
	}
	return ""
}

// SlotReset reports whether sandboxes of this engine can be reset in place
// (Sandbox.Reset keeps the instance) rather than rebuilt for every job.
func (e *Engine) SlotReset() bool { return e.tracker != nil }

// Stats reports how long the engine took to start.
func (e *Engine) Stats() InitStats { return e.stats }

// Limits returns the engine's default limits.
func (e *Engine) Limits() Limits { return e.cfg.Limits }

// Close releases the engine. Sandboxes of the engine must not be used after.
func (e *Engine) Close(ctx context.Context) error {
	err := e.rt.Close(ctx)
	if e.tracker != nil {
		err = errors.Join(err, e.tracker.close())
	}
	if e.image != nil {
		err = errors.Join(err, e.image.close())
	}
	return err
}

// moduleConfig is the WASI view every instance gets: no arguments, no
// environment, the stdlib archive read-only at /lib, a null device, a
// private in-memory /tmp, the execution's input files at /data and its
// output directory /output, and nothing of the host's file system, real clocks
// and crypto-quality randomness.
func (e *Engine) moduleConfig(stdout, stderr streamWriter, tmp *memfs.FS, pkgs *pkgFS, data *dataFS, out *outFS) wazero.ModuleConfig {
	// The mounts must be the same for pre-initialisation and every sandbox:
	// wasi-libc records the preopened directories in linear memory, which
	// the snapshot carries over.
	fsc := wazero.NewFSConfig().(sysfs.FSConfig).
		WithSysFSMount(newRootFS(stdlibMount, "/pkg", "/dev", "/tmp"), "/").(sysfs.FSConfig).
		WithSysFSMount(readOnlyFS{&sysfs.AdaptFS{FS: e.stdlib}}, stdlibMount).(sysfs.FSConfig).
		WithSysFSMount(readOnlyFS{&sysfs.AdaptFS{FS: pkgs}}, "/pkg").(sysfs.FSConfig).
		WithSysFSMount(devFS{}, "/dev").(sysfs.FSConfig).
		WithSysFSMount(tmp, "/tmp").(sysfs.FSConfig).
		WithSysFSMount(data, DataMount).(sysfs.FSConfig).
		WithSysFSMount(out, OutputMount)
	return wazero.NewModuleConfig().
		WithName("").
		WithFSConfig(fsc).
		WithStdout(stdout).
		WithStderr(stderr).
		WithRandSource(rand.Reader).
		WithSysWalltime().
		WithNanotime(e.nanotime, 1).
		WithArgs("python3.11")
}

// nanotime is the guest's monotonic clock. The host's poll_oneoff needs to
// know its origin to honour absolute deadlines, hence our own.
func (e *Engine) nanotime() int64 { return int64(time.Since(e.clockBase)) }

// preInitialise starts the interpreter once and keeps its memory image.
func (e *Engine) preInitialise(ctx context.Context) error {
	sb := &Sandbox{eng: e}
	alloc := &memoryAllocator{limit: MaxMemoryBytes}
	// No start functions: the data segments must be in memory first.
	cfg := e.moduleConfig(streamWriter{sb, Stdout}, streamWriter{sb, Stderr}, memfs.New(1<<20), &pkgFS{}, &dataFS{}, &outFS{}).
		WithStartFunctions()
	// The start-up output (normally none) is only shown if it fails.
	capt := newCapture(64<<10, nil)
	sb.cur = capt
	mod, err := e.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, alloc), e.compiled, cfg)
	if err != nil {
		return fmt.Errorf("sandbox: instantiating for pre-initialisation: %w", err)
	}
	defer func() { _ = mod.Close(ctx) }()
	defer alloc.mem.Free()
	mem := mod.Memory()
	for _, seg := range e.data {
		if !mem.Write(seg.offset, seg.data) {
			return fmt.Errorf("sandbox: data segment at %d does not fit in memory", seg.offset)
		}
	}
	if _, err := mod.ExportedFunction("_initialize").Call(ctx); err != nil {
		return fmt.Errorf("sandbox: _initialize trapped: %w", err)
	}
	if seed := e.cfg.HashSeed; seed != nil {
		if _, err := mod.ExportedFunction("eryx_set_hash_seed").Call(ctx, uint64(*seed)); err != nil {
			return fmt.Errorf("sandbox: setting the hash seed: %w", err)
		}
	}
	res, err := mod.ExportedFunction("eryx_init").Call(ctx)
	if err != nil {
		return fmt.Errorf("sandbox: pre-initialisation trapped: %w (stderr: %s)", err, capt.stderr.String())
	}
	if int32(res[0]) != 0 {
		return fmt.Errorf("sandbox: pre-initialisation failed with %d: %s%s",
			int32(res[0]), capt.stdout.String(), capt.stderr.String())
	}
	buf, ok := mem.Read(0, mem.Size())
	if !ok {
		return errors.New("sandbox: reading pre-initialised memory")
	}
	if e.image, err = newMemoryImage(buf); err != nil {
		return err
	}
	g := mod.ExportedGlobal(stackPointer)
	if g == nil {
		return errors.New("sandbox: module does not export " + stackPointer)
	}
	e.sp = g.Get()
	return nil
}
