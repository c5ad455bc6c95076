package sandbox_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// fuelProgram does a bit of everything whose cost could depend on the
// machine if fuel were measured in time: Python loops, C loops, dicts,
// strings, an import, a raised and caught exception, recursion.
const fuelProgram = `
import json
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
d = {}
for i in range(20000):
    d[i] = str(i) * 3
try:
    {}["missing"]
except KeyError:
    pass
total = sum(range(100000)) + fib(18) + len(json.dumps(d))
print(total)
result = total
`

// fuelOf runs code in a fresh sandbox and returns the fuel it consumed.
func fuelOf(t *testing.T, code string, lim sandbox.Limits) (*sandbox.Result, error) {
	t.Helper()
	if lim.Timeout == 0 {
		lim.Timeout = 5 * time.Minute // fuel, not time, is under test
	}
	return engine.Execute(context.Background(), code, sandbox.ExecOptions{Limits: lim})
}

func TestFuelIsDeterministic(t *testing.T) {
	// Not parallel: the contention below is part of the test.
	first, err := fuelOf(t, fuelProgram, sandbox.Limits{})
	if err != nil || first.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, first)
	}
	if first.FuelConsumed < 100000 {
		t.Fatalf("fuel_consumed %d: the C loop over 100000 items alone should count", first.FuelConsumed)
	}
	check := func(name string) {
		for i := 0; i < 3; i++ {
			res, err := fuelOf(t, fuelProgram, sandbox.Limits{})
			if err != nil || res.Status != sandbox.StatusOK {
				t.Fatalf("%s: %v %+v", name, err, res)
			}
			if res.FuelConsumed != first.FuelConsumed {
				t.Fatalf("%s run %d: fuel %d, first run %d", name, i, res.FuelConsumed, first.FuelConsumed)
			}
		}
	}
	check("quiet")

	// CPU contention: more busy goroutines than cores, for the whole run.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < 2*runtime.GOMAXPROCS(0); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for !stop.Load() {
				x++
			}
			_ = x
		}()
	}
	check("under contention")
	// And the same program running concurrently in other sandboxes.
	var others sync.WaitGroup
	for i := 0; i < 2; i++ {
		others.Add(1)
		go func() {
			defer others.Done()
			_, _ = fuelOf(t, fuelProgram, sandbox.Limits{})
		}()
	}
	check("next to other sandboxes")
	others.Wait()
	stop.Store(true)
	wg.Wait()
}

func TestFuelLimitBoundary(t *testing.T) {
	t.Parallel()
	probe, err := fuelOf(t, fuelProgram, sandbox.Limits{})
	if err != nil || probe.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, probe)
	}
	need := probe.FuelConsumed
	tests := []struct {
		name   string
		fuel   uint64
		status sandbox.Status
		output bool // fuel counts the runtime's reporting after the code too
	}{
		{"exactly enough", need, sandbox.StatusOK, true},
		{"one more", need + 1, sandbox.StatusOK, true},
		{"one less", need - 1, sandbox.StatusFuelExhausted, true},
		{"half", need / 2, sandbox.StatusFuelExhausted, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := fuelOf(t, fuelProgram, sandbox.Limits{Fuel: tt.fuel})
			if res == nil || res.Status != tt.status {
				t.Fatalf("fuel %d of %d: %v %+v", tt.fuel, need, err, res)
			}
			if tt.status == sandbox.StatusOK {
				if err != nil || res.FuelConsumed != need || res.Stdout == "" {
					t.Fatalf("%v %+v", err, res)
				}
				return
			}
			if !errors.Is(err, sandbox.ErrFuelExhausted) || res.Error == nil || res.Error.Type != "eryx.FuelExhausted" {
				t.Fatalf("err %v, result error %+v", err, res.Error)
			}
			if (res.Stdout != "") != tt.output || res.FuelConsumed <= tt.fuel {
				t.Fatalf("stopped with output %q after %d units, limit %d", res.Stdout, res.FuelConsumed, tt.fuel)
			}
			// The stop is deterministic too, unwinding included.
			again, _ := fuelOf(t, fuelProgram, sandbox.Limits{Fuel: tt.fuel})
			if again.Status != res.Status || again.FuelConsumed != res.FuelConsumed {
				t.Fatalf("second stop: %s after %d, first %s after %d", again.Status, again.FuelConsumed, res.Status, res.FuelConsumed)
			}
		})
	}
}

func TestFuelCountsCLoops(t *testing.T) {
	t.Parallel()
	small, err := fuelOf(t, "sum(range(10**5))", sandbox.Limits{})
	if err != nil || small.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, small)
	}
	big, err := fuelOf(t, "sum(range(10**6))", sandbox.Limits{})
	if err != nil || big.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, big)
	}
	if d := big.FuelConsumed - small.FuelConsumed; d < 900_000 {
		t.Fatalf("900000 more C-level iterations cost only %d fuel", d)
	}
	// A C loop never checks for KeyboardInterrupt: the reserve runs out and
	// the stop is hard, still reported as fuel, long before the timeout.
	res, err := fuelOf(t, "print('go')\nsum(range(10**12))", sandbox.Limits{Fuel: 10_000_000})
	if !errors.Is(err, sandbox.ErrFuelExhausted) || res.Status != sandbox.StatusFuelExhausted || res.Stdout != "go\n" {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestFuelExhaustedSandboxSurvivesSoftStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name      string
		code      string
		survives  bool
		wantFinal string
	}{
		{"python loop", "print('a')\nwhile True:\n    pass", true, "a\n"},
		{"finally runs", "try:\n    while True:\n        pass\nfinally:\n    print('cleanup')", true, "cleanup\n"},
		{"interrupt swallowed", "while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sb, err := engine.NewSandbox(ctx, sandbox.Limits{Timeout: 5 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sb.Close(ctx) }()
			res, err := sb.Execute(ctx, tt.code, sandbox.ExecOptions{Limits: sandbox.Limits{Fuel: 1_000_000}})
			if !errors.Is(err, sandbox.ErrFuelExhausted) || res.Status != sandbox.StatusFuelExhausted || res.Stdout != tt.wantFinal {
				t.Fatalf("%v %+v", err, res)
			}
			next, err := sb.Execute(ctx, "print('next')", sandbox.ExecOptions{})
			if tt.survives {
				if err != nil || next.Status != sandbox.StatusOK || next.Stdout != "next\n" {
					t.Fatalf("after a soft stop: %v %+v", err, next)
				}
			} else if !errors.Is(err, sandbox.ErrSandboxClosed) {
				t.Fatalf("after a hard stop: %v %+v", err, next)
			}
		})
	}
}

func TestFuelLimitValidation(t *testing.T) {
	t.Parallel()
	if err := (sandbox.Limits{Fuel: sandbox.MaxFuel + 1}).Validate(); !errors.Is(err, sandbox.ErrInvalidLimits) {
		t.Fatalf("err = %v", err)
	}
	if engine.Limits().Fuel != sandbox.DefaultFuel {
		t.Fatalf("default fuel %d", engine.Limits().Fuel)
	}
}

// Env is the execution's own: a later execution in the same sandbox (a
// session) does not see it.
func TestEnvIsPerExecution(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	code := "import os, eryx\ntry:\n    s = eryx.secret('TOKEN')\nexcept KeyError:\n    s = None\nresult = [os.environ.get('TOKEN'), s]"
	res, err := sb.Execute(ctx, code, sandbox.ExecOptions{Session: true, Env: map[string]string{"TOKEN": "ERYX_SECRET_x"}})
	if err != nil || string(res.Value) != `["ERYX_SECRET_x","ERYX_SECRET_x"]` {
		t.Fatalf("%v %s %+v", err, res.Value, res.Error)
	}
	res, err = sb.Execute(ctx, code, sandbox.ExecOptions{Session: true})
	if err != nil || string(res.Value) != `[null,null]` {
		t.Fatalf("next execution: %v %s %+v", err, res.Value, res.Error)
	}
}

// Engines draw their hash secret at random, so str-keyed work differs
// between worker processes; with Config.HashSeed it does not.
func TestFuelAcrossEnginesWithHashSeed(t *testing.T) {
	ctx := context.Background()
	const code = "s = set()\nfor i in range(20000):\n    s.add('k%d' % i)\nd = {k: 1 for k in s}\nresult = [hash('x'), len(d)]"
	seed := uint32(7)
	var fuel []uint64
	var hashes []string
	for i := 0; i < 2; i++ {
		e, err := sandbox.NewEngine(ctx, sandbox.Config{HashSeed: &seed})
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.Execute(ctx, code, sandbox.ExecOptions{})
		_ = e.Close(ctx)
		if err != nil || res.Status != sandbox.StatusOK {
			t.Fatalf("%v %+v", err, res)
		}
		fuel = append(fuel, res.FuelConsumed)
		hashes = append(hashes, string(res.Value))
	}
	if fuel[0] != fuel[1] || hashes[0] != hashes[1] {
		t.Fatalf("same seed, two engines: fuel %v, hashes %v", fuel, hashes)
	}
	// The shared engine has a random secret: a different hash('x').
	res := run(t, code, sandbox.ExecOptions{})
	if string(res.Value) == hashes[0] {
		t.Fatalf("the unseeded engine hashes like seed 7: %s", res.Value)
	}
}
