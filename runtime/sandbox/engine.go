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
	// Image is the runtime image: assets.ImageMinimal (the default when
	// empty) or assets.ImageNumpy, which has numpy built in and pre-imported.
	Image string
}

// InitStats are measurements of NewEngine.
type InitStats struct {
	Instrument time.Duration // rewriting the module for preemption
	Compile    time.Duration // wazero compilation (or cache load)
	PreInit    time.Duration // interpreter start-up and guest runtime import
	ImageBytes int           // size of the memory image every sandbox starts from
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
	return e, nil
}

// Stats reports how long the engine took to start.
func (e *Engine) Stats() InitStats { return e.stats }

// Limits returns the engine's default limits.
func (e *Engine) Limits() Limits { return e.cfg.Limits }

// Close releases the engine. Sandboxes of the engine must not be used after.
func (e *Engine) Close(ctx context.Context) error {
	err := e.rt.Close(ctx)
	if e.image != nil {
		err = errors.Join(err, e.image.close())
	}
	return err
}

// moduleConfig is the WASI view every instance gets: no arguments, no
// environment, the stdlib archive read-only at /lib, a null device, a
// private in-memory /tmp and nothing of the host's file system, real clocks
// and crypto-quality randomness.
func (e *Engine) moduleConfig(stdout, stderr streamWriter, tmp *memfs.FS, pkgs *pkgFS) wazero.ModuleConfig {
	// The mounts must be the same for pre-initialisation and every sandbox:
	// wasi-libc records the preopened directories in linear memory, which
	// the snapshot carries over.
	fsc := wazero.NewFSConfig().WithFSMount(e.stdlib, stdlibMount).WithFSMount(pkgs, "/pkg").(sysfs.FSConfig).
		WithSysFSMount(devFS{}, "/dev").(sysfs.FSConfig).
		WithSysFSMount(tmp, "/tmp")
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
	cfg := e.moduleConfig(streamWriter{sb, Stdout}, streamWriter{sb, Stderr}, memfs.New(1<<20), &pkgFS{}).
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
