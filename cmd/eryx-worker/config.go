package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/netgate"
	"github.com/eryx-dev/eryx/runtime/assets"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Config is the worker's configuration, read from ERYX_* variables.
// `eryx-worker --help` prints this table with the defaults.
type Config struct {
	NATSURL         string        `envconfig:"NATS_URL" desc:"NATS server URL(s), comma-separated; empty starts an embedded server"`
	NATSCreds       string        `envconfig:"NATS_CREDS" desc:"NATS credentials file (with ERYX_NATS_URL)"`
	EmbeddedListen  string        `envconfig:"EMBEDDED_LISTEN" default:"127.0.0.1:4222" desc:"host:port of the embedded NATS server"`
	DataDir         string        `envconfig:"DATA_DIR" default:"eryx-data" desc:"JetStream storage of the embedded server"`
	EmbeddedSync    string        `envconfig:"EMBEDDED_SYNC" desc:"when the embedded server syncs JetStream to disk: always (before acknowledging each write), or an interval such as 1s; empty: the server's default, every 2m (docs/operations.md Durability)"`
	Queue           string        `envconfig:"QUEUE" default:"default" desc:"queue to serve (jobs on <prefix>.jobs.<queue>.<tenant>, every tenant)"`
	SubjectPrefix   string        `envconfig:"SUBJECT_PREFIX" default:"eryx" desc:"first token(s) of every subject; streams are named after it"`
	WorkerID        string        `envconfig:"WORKER_ID" desc:"name in results and logs (default: hostname-pid)"`
	PoolSize        int           `envconfig:"POOL_SIZE" default:"4" desc:"jobs run at once, each in a fresh sandbox"`
	PoolMinIdle     int           `envconfig:"POOL_MIN_IDLE" default:"2" desc:"sandboxes kept ready ahead of jobs"`
	ExecTimeout     time.Duration `envconfig:"EXEC_TIMEOUT" default:"30s" desc:"default and maximum run time of a job"`
	MemoryLimit     ByteSize      `envconfig:"MEMORY_LIMIT" default:"128MiB" desc:"default and maximum memory of a job"`
	FuelDefault     uint64        `envconfig:"FUEL_DEFAULT" default:"100000000000" desc:"fuel (deterministic compute units) of a job that asks for none"`
	FuelMax         uint64        `envconfig:"FUEL_MAX" default:"1000000000000" desc:"most fuel a job may ask for"`
	HashSeed        string        `envconfig:"HASH_SEED" desc:"fixed str hash secret 0-4294967295, so that fuel is the same on every worker even for hash-order-dependent code; empty: random per process"`
	OutputLimit     ByteSize      `envconfig:"OUTPUT_LIMIT" default:"1MiB" desc:"stdout+stderr kept per job; the rest is dropped"`
	TraceLimit      ByteSize      `envconfig:"TRACE_LIMIT" default:"4MiB" desc:"trace event bytes published per job; the rest is dropped"`
	TraceEvents     int           `envconfig:"TRACE_EVENTS" default:"10000" desc:"trace events published per job; the rest are dropped"`
	HostCalls       int           `envconfig:"HOST_CALLS" default:"256" desc:"host calls (callbacks, network) a job may have pending; more ends the job"`
	HostCallBytes   ByteSize      `envconfig:"HOST_CALL_BYTES" default:"16MiB" desc:"bytes a job's pending host calls may hold on the host; more ends the job"`
	MaxJobBytes     ByteSize      `envconfig:"MAX_JOB_BYTES" default:"1MiB" desc:"largest job message (capped by the server's max_payload)"`
	MaxCodeBytes    ByteSize      `envconfig:"MAX_CODE_BYTES" default:"1MiB" desc:"largest code of a job"`
	AckWait         time.Duration `envconfig:"ACK_WAIT" default:"30s" desc:"silence after which a job is given to another worker"`
	MaxDeliver      int           `envconfig:"MAX_DELIVER" default:"3" desc:"failed deliveries of a job (its worker died or stalled) before it goes to the dead-letter stream; drains do not count"`
	DrainTimeout    time.Duration `envconfig:"DRAIN_TIMEOUT" default:"30s" desc:"on SIGTERM, time for running jobs to finish before they are requeued"`
	DedupWindow     time.Duration `envconfig:"DEDUP_WINDOW" default:"10m" desc:"jobs stream duplicate window (Nats-Msg-Id = job id)"`
	EventsMaxAge    time.Duration `envconfig:"EVENTS_MAX_AGE" default:"1h" desc:"how long job events and results can be replayed"`
	EventsMaxBytes  ByteSize      `envconfig:"EVENTS_MAX_BYTES" default:"1GiB" desc:"size of the events stream (stdout, stderr, trace); when full, new events are refused"`
	EventsPerJob    int64         `envconfig:"EVENTS_MAX_PER_JOB" default:"10000" desc:"stored stdout, stderr and trace events of one job, each; later ones are refused"`
	ResultsMaxBytes ByteSize      `envconfig:"RESULTS_MAX_BYTES" default:"1GiB" desc:"size of the results stream; only results count against it, the oldest go"`
	Replicas        int           `envconfig:"REPLICAS" default:"1" desc:"replicas of the streams the worker creates"`
	SessionCache    int           `envconfig:"SESSION_CACHE" default:"16" desc:"sessions kept warm in memory"`
	SessionIdle     time.Duration `envconfig:"SESSION_IDLE" default:"10m" desc:"idle time after which a warm session leaves memory"`
	SessionSweep    time.Duration `envconfig:"SESSION_SWEEP" default:"1h" desc:"how often snapshot blobs no session references are removed; 0: never"`
	SessionTTL      time.Duration `envconfig:"SESSION_TTL" default:"24h" desc:"lifetime of a session in KV after its last job"`
	SnapshotLimit   ByteSize      `envconfig:"SNAPSHOT_LIMIT" default:"10MiB" desc:"largest session snapshot"`
	SessionMemory   ByteSize      `envconfig:"SESSION_MEMORY" default:"256MiB" desc:"linear memory of all warm sessions together; least recently used leave first"`
	SnapshotKey     string        `envconfig:"SNAPSHOT_KEY" desc:"secret (at least 32 bytes) session snapshots are tagged with; every worker needs the same"`
	SnapshotKeyFile string        `envconfig:"SNAPSHOT_KEY_FILE" desc:"file holding the snapshot key; neither set: one generated in ERYX_DATA_DIR"`
	// Job files (docs/files.md).
	FilesTTL         time.Duration `envconfig:"FILES_TTL" default:"24h" desc:"lifetime of an object in the files bucket (inputs and outputs)"`
	FilesBucketBytes ByteSize      `envconfig:"FILES_BUCKET_MAX_BYTES" default:"1GiB" desc:"size of each tenant's files bucket; when full, its uploads and output files are refused"`
	FileMaxBytes     ByteSize      `envconfig:"FILE_MAX_BYTES" default:"16MiB" desc:"largest input file of a job (too_large)"`
	FilesMaxBytes    ByteSize      `envconfig:"FILES_MAX_BYTES" default:"32MiB" desc:"input files of a job together (too_large)"`
	FilesMaxCount    int           `envconfig:"FILES_MAX_COUNT" default:"32" desc:"input files a job may name (too_large)"`
	OutputFilesBytes ByteSize      `envconfig:"OUTPUT_FILES_MAX_BYTES" default:"16MiB" desc:"bytes a job may write under /output; more writes fail"`
	OutputFilesCount int           `envconfig:"OUTPUT_FILES_MAX_COUNT" default:"100" desc:"files and directories a job may create under /output"`
	Callbacks        bool          `envconfig:"CALLBACKS" default:"true" desc:"discover callback services ($SRV) and offer them to jobs"`
	// Bounds of discovery and of what a job gets (docs/callbacks.md).
	CallbacksPerService int      `envconfig:"CALLBACKS_MAX_PER_SERVICE" default:"256" desc:"callbacks taken from one service"`
	CallbacksTotal      int      `envconfig:"CALLBACKS_MAX_TOTAL" default:"1024" desc:"callbacks in the whole catalogue"`
	CallbacksInfoBytes  ByteSize `envconfig:"CALLBACKS_MAX_INFO_BYTES" default:"1MiB" desc:"largest $SRV.INFO reply decoded"`
	CallbacksInstall    int      `envconfig:"CALLBACKS_INSTALL_MAX" default:"64" desc:"callbacks installed as Python globals in a job; the rest through invoke()"`
	CallbackServices    string   `envconfig:"CALLBACK_SERVICES" desc:"service names allowed to serve callbacks, comma-separated, 'prefix*' allowed; empty: all"`
	CancelRate          float64  `envconfig:"CANCEL_RATE" default:"1000" desc:"cancels per second of jobs not running here that the worker remembers"`
	ControlMaxMsgs      int64    `envconfig:"CONTROL_MAX_MSGS" default:"50000" desc:"cancel requests the control stream keeps"`
	ControlMaxBytes     ByteSize `envconfig:"CONTROL_MAX_BYTES" default:"16MiB" desc:"bytes the control stream keeps"`
	Quotas              bool     `envconfig:"QUOTAS" default:"true" desc:"enforce tenant quotas from eryx-auth's ERYX_AUTH bucket (none apply while there is no such bucket)"`
	MaxQueuedPerTenant  int64    `envconfig:"MAX_QUEUED_PER_TENANT" default:"10000" desc:"jobs one tenant may have queued on one queue; more are refused at submission"`
	// The network policy is read by netgate.PolicyFromEnv; these fields
	// exist so that --help lists the variables (docs/network.md).
	NetAllowHosts     string `envconfig:"NET_ALLOW_HOSTS" desc:"hosts jobs may connect to (host, *.domain, *, with :port); empty: no network"`
	NetAllowPorts     string `envconfig:"NET_ALLOW_PORTS" desc:"ports of host entries without one (default 80,443)"`
	NetMaxConnections string `envconfig:"NET_MAX_CONNECTIONS" desc:"connections per job (default 32)"`
	NetConnectTimeout string `envconfig:"NET_CONNECT_TIMEOUT" desc:"resolve+connect+TLS bound (default 10s)"`
	NetIOTimeout      string `envconfig:"NET_IO_TIMEOUT" desc:"bound of each send and receive (default 30s)"`
	NetMaxBytesIn     string `envconfig:"NET_MAX_BYTES_IN" desc:"bytes a job may receive (default 64MiB)"`
	NetMaxBytesOut    string `envconfig:"NET_MAX_BYTES_OUT" desc:"bytes a job may send (default 16MiB)"`
	NetAllowLoopback  string `envconfig:"NET_ALLOW_LOOPBACK" desc:"allow 127.0.0.0/8 and ::1 (development only; default false)"`
	NetAllowPrivate   string `envconfig:"NET_ALLOW_PRIVATE" desc:"allow private address ranges (default false)"`
	NetExtraCAFile    string `envconfig:"NET_EXTRA_CA_FILE" desc:"PEM file of CAs trusted besides the system's"`
	// Secrets are read by netgate.SecretsFromEnv (docs/security.md).
	Secrets     string `envconfig:"SECRETS" desc:"secrets jobs may ask for, valued by the env vars of the same name: NAME=host,*.domain;OTHER=host"`
	SecretsFile string `envconfig:"SECRETS_FILE" desc:"JSON file of secrets: {\"NAME\": {\"value_env\"|\"value_file\": ..., \"hosts\": [...]}}"`
	// secrets is what SecretsFromEnv made of the two (not a variable).
	secrets       *netgate.Secrets
	MetricsListen string `envconfig:"METRICS_LISTEN" desc:"address of /metrics, /livez and /readyz (e.g. :9090); empty: off"`
	CacheDir      string `envconfig:"CACHE_DIR" desc:"compiled runtime cache (default: the user cache dir)"`
	RuntimeImage  string `envconfig:"RUNTIME_IMAGE" default:"numpy" desc:"runtime image: numpy (numpy built in and pre-imported) or minimal"`
	LogLevel      string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat     string `envconfig:"LOG_FORMAT" default:"text" desc:"text or json"`
}

// validate checks what envconfig cannot.
func (c *Config) validate() error {
	switch {
	case c.PoolSize < 1:
		return fmt.Errorf("ERYX_POOL_SIZE must be at least 1, not %d", c.PoolSize)
	case c.ExecTimeout <= 0:
		return fmt.Errorf("ERYX_EXEC_TIMEOUT must be positive, not %v", c.ExecTimeout)
	case c.AckWait < time.Second:
		return fmt.Errorf("ERYX_ACK_WAIT must be at least 1s, not %v", c.AckWait)
	case c.MaxDeliver < 1:
		return fmt.Errorf("ERYX_MAX_DELIVER must be at least 1, not %d", c.MaxDeliver)
	case c.EventsPerJob < 1:
		return fmt.Errorf("ERYX_EVENTS_MAX_PER_JOB must be at least 1, not %d", c.EventsPerJob)
	case c.MaxQueuedPerTenant < 1:
		return fmt.Errorf("ERYX_MAX_QUEUED_PER_TENANT must be at least 1, not %d", c.MaxQueuedPerTenant)
	case c.EventsMaxBytes < 1<<20 || c.ResultsMaxBytes < 1<<20:
		return fmt.Errorf("ERYX_EVENTS_MAX_BYTES and ERYX_RESULTS_MAX_BYTES must be at least 1MiB")
	case c.TraceEvents < 1 || c.HostCalls < 1:
		return fmt.Errorf("ERYX_TRACE_EVENTS and ERYX_HOST_CALLS must be at least 1")
	case c.TraceLimit < 1 || c.HostCallBytes < 1:
		return fmt.Errorf("ERYX_TRACE_LIMIT and ERYX_HOST_CALL_BYTES must be at least 1 byte")
	case c.FuelDefault < 1 || c.FuelMax < c.FuelDefault || c.FuelMax > sandbox.MaxFuel:
		return fmt.Errorf("ERYX_FUEL_DEFAULT must be at least 1 and at most ERYX_FUEL_MAX, itself at most %d", uint64(sandbox.MaxFuel))
	case c.HashSeed != "" && !validHashSeed(c.HashSeed):
		return fmt.Errorf("ERYX_HASH_SEED must be an integer from 0 to 4294967295, not %q", c.HashSeed)
	case c.FileMaxBytes < 1 || c.FilesMaxBytes < 1 || c.OutputFilesBytes < 1 || c.FilesBucketBytes < 1<<20:
		return fmt.Errorf("ERYX_FILE_MAX_BYTES, ERYX_FILES_MAX_BYTES, ERYX_OUTPUT_FILES_MAX_BYTES must be at least 1 byte, ERYX_FILES_BUCKET_MAX_BYTES 1MiB")
	case c.FilesMaxCount < 1 || c.OutputFilesCount < 1 || c.FilesTTL <= 0:
		return fmt.Errorf("ERYX_FILES_MAX_COUNT and ERYX_OUTPUT_FILES_MAX_COUNT must be at least 1, ERYX_FILES_TTL positive")
	case !validSync(c.EmbeddedSync):
		return fmt.Errorf("ERYX_EMBEDDED_SYNC must be always or a positive duration, not %q", c.EmbeddedSync)
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("ERYX_LOG_FORMAT must be text or json, not %q", c.LogFormat)
	case c.RuntimeImage != assets.ImageNumpy && c.RuntimeImage != assets.ImageMinimal:
		return fmt.Errorf("ERYX_RUNTIME_IMAGE must be %s or %s, not %q", assets.ImageNumpy, assets.ImageMinimal, c.RuntimeImage)
	}
	if _, err := jobs.NewSubjects(c.SubjectPrefix); err != nil {
		return fmt.Errorf("ERYX_SUBJECT_PREFIX: %w", err)
	}
	if !jobs.ValidToken(c.Queue) {
		return fmt.Errorf("ERYX_QUEUE %q must be letters, digits, '-', '_' or '='", c.Queue)
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		c.WorkerID = host + "-" + strconv.Itoa(os.Getpid())
	}
	return nil
}

// ByteSize is a size in bytes written as 134217728, 128MiB, 128M or 1.5GB
// (binary multiples throughout: K, KB and KiB are all 1024).
type ByteSize uint64

// Decode implements envconfig.Decoder.
func (b *ByteSize) Decode(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}

func (b ByteSize) String() string {
	for _, u := range []struct {
		suffix string
		size   uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if uint64(b) >= u.size && uint64(b)%u.size == 0 {
			return strconv.FormatUint(uint64(b)/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatUint(uint64(b), 10)
}

func parseByteSize(s string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		size   uint64
	}{
		{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10},
		{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.size
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*float64(mult) > float64(1<<62) {
		return 0, fmt.Errorf("invalid size %q (want e.g. 134217728, 128MiB, 1.5G)", s)
	}
	return uint64(f * float64(mult)), nil
}

// splitList splits a comma-separated setting, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func validHashSeed(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

// hashSeed is ERYX_HASH_SEED for sandbox.Config (nil when unset).
func (c *Config) hashSeed() *uint32 {
	if c.HashSeed == "" {
		return nil
	}
	v, _ := strconv.ParseUint(c.HashSeed, 10, 32) // validated
	seed := uint32(v)
	return &seed
}

// validSync reports whether s is a sync policy embednats takes.
func validSync(s string) bool {
	_, _, err := embednats.ParseSync(s)
	return err == nil
}
