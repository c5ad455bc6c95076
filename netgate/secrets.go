package netgate

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Secrets are values the worker holds for jobs, each bound to the hosts it
// may be sent to. A job that asks for one sees only a random placeholder;
// its session substitutes the value for the placeholder in what the code
// sends to a bound host, and nowhere else (docs/security.md, "Secrets").

// Environment variables of the worker's secrets.
const (
	// EnvSecrets lists secrets whose values are environment variables of
	// the same name: "GITHUB_TOKEN=api.github.com,*.github.com;OTHER=host".
	EnvSecrets = "ERYX_SECRETS"
	// EnvSecretsFile names a JSON file of secrets (see SecretsFromEnv).
	EnvSecretsFile = "ERYX_SECRETS_FILE"
)

const (
	// placeholderPrefix starts every placeholder, so that one is easy to
	// recognise in output.
	placeholderPrefix = "ERYX_SECRET_"
	// placeholderLen is a placeholder's length for values up to as long:
	// the prefix and 128 random bits in hex.
	placeholderLen = len(placeholderPrefix) + 32
	// MinSecretBytes is the shortest value accepted: received bytes equal
	// to a value are masked, which must not hit ordinary data.
	MinSecretBytes = 8
	// maxSecretBytes bounds one value.
	maxSecretBytes = 16 << 10
)

// ErrInvalidSecret reports a secret definition that cannot be used.
var ErrInvalidSecret = errors.New("netgate: invalid secret")

// ErrUnknownSecret reports a job's request for a secret the worker lacks.
var ErrUnknownSecret = errors.New("netgate: unknown secret")

// Secret is one secret of the worker.
type Secret struct {
	name      string
	value     []byte
	hosts     []hostEntry
	plaintext bool
}

// String and GoString name the secret without its value, so that a
// stray %v in a log cannot print it.
func (s *Secret) String() string { return "secret " + s.name }

// GoString implements fmt.GoStringer like String.
func (s *Secret) GoString() string { return s.String() }

// SecretSpec defines a Secret.
type SecretSpec struct {
	// Name is what jobs ask for, and the environment variable the code
	// finds the placeholder in: a Python identifier-like token.
	Name string
	// Value is the secret. It never leaves the worker except to Hosts.
	Value []byte
	// Hosts are allow-list entries (see hosts.go), optionally with a port:
	// "api.github.com", "*.github.com", "203.0.113.7:8443"; "*" and
	// address ranges are refused.
	Hosts []string
	// Plaintext also substitutes in connections without TLS, where the
	// value crosses the network in the clear. Without it the value is only
	// sent inside TLS verified against the gateway's trust store.
	Plaintext bool
}

// Secrets is the worker's set of secrets. It is immutable and safe for
// concurrent use.
type Secrets struct {
	byName map[string]*Secret
}

// NewSecrets validates the specs.
func NewSecrets(specs []SecretSpec) (*Secrets, error) {
	s := &Secrets{byName: make(map[string]*Secret, len(specs))}
	for _, sp := range specs {
		if !validSecretName(sp.Name) {
			return nil, fmt.Errorf("%w: name %q must be letters, digits and '_', not starting with a digit", ErrInvalidSecret, sp.Name)
		}
		if _, dup := s.byName[sp.Name]; dup {
			return nil, fmt.Errorf("%w: %s defined twice", ErrInvalidSecret, sp.Name)
		}
		if len(sp.Value) < MinSecretBytes || len(sp.Value) > maxSecretBytes {
			return nil, fmt.Errorf("%w: %s: the value must be %d to %d bytes, not %d", ErrInvalidSecret, sp.Name, MinSecretBytes, maxSecretBytes, len(sp.Value))
		}
		if len(sp.Hosts) == 0 {
			return nil, fmt.Errorf("%w: %s is bound to no host", ErrInvalidSecret, sp.Name)
		}
		sec := &Secret{name: sp.Name, value: slices.Clone(sp.Value), plaintext: sp.Plaintext}
		for _, h := range sp.Hosts {
			e, err := parseEntry(h)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSecret, sp.Name, err)
			}
			if e.kind == kindAny || e.kind == kindCIDR {
				return nil, fmt.Errorf("%w: %s: host %q would send the value to hosts nobody named", ErrInvalidSecret, sp.Name, h)
			}
			sec.hosts = append(sec.hosts, e)
		}
		s.byName[sp.Name] = sec
	}
	return s, nil
}

func validSecretName(n string) bool {
	if n == "" || len(n) > 128 || n[0] >= '0' && n[0] <= '9' {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Names lists the secrets, sorted.
func (s *Secrets) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.byName))
	for n := range s.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// secretFile is the JSON form of EnvSecretsFile: name -> definition.
type secretFile map[string]struct {
	ValueEnv  string   `json:"value_env"`
	ValueFile string   `json:"value_file"`
	Hosts     []string `json:"hosts"`
	Plaintext bool     `json:"plaintext"`
}

// SecretsFromEnv reads the worker's secrets: ERYX_SECRETS (values from the
// environment variables it names) and the JSON file ERYX_SECRETS_FILE,
//
//	{"GITHUB_TOKEN": {"value_env": "GH_TOKEN", "hosts": ["api.github.com"]},
//	 "DB_PASSWORD": {"value_file": "/run/secrets/db", "hosts": ["db.internal:5432"], "plaintext": true}}
//
// A value file's trailing newline is dropped. Nil without either.
func SecretsFromEnv(getenv func(string) string, readFile func(string) ([]byte, error)) (*Secrets, error) {
	var specs []SecretSpec
	if list := strings.TrimSpace(getenv(EnvSecrets)); list != "" {
		for _, item := range strings.Split(list, ";") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			name, hosts, ok := strings.Cut(item, "=")
			name = strings.TrimSpace(name)
			if !ok {
				return nil, fmt.Errorf("%s: %w: %q is not NAME=host,host", EnvSecrets, ErrInvalidSecret, item)
			}
			v := getenv(name)
			if v == "" {
				return nil, fmt.Errorf("%s: %w: %s is not set", EnvSecrets, ErrInvalidSecret, name)
			}
			specs = append(specs, SecretSpec{Name: name, Value: []byte(v), Hosts: splitHosts(hosts)})
		}
	}
	if path := strings.TrimSpace(getenv(EnvSecretsFile)); path != "" {
		data, err := readFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvSecretsFile, err)
		}
		var f secretFile
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", EnvSecretsFile, ErrInvalidSecret, err)
		}
		names := make([]string, 0, len(f))
		for n := range f {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			d := f[name]
			var v []byte
			switch {
			case d.ValueEnv != "" && d.ValueFile == "":
				v = []byte(getenv(d.ValueEnv))
			case d.ValueFile != "" && d.ValueEnv == "":
				if v, err = readFile(d.ValueFile); err != nil {
					return nil, fmt.Errorf("%s: %s: %w", EnvSecretsFile, name, err)
				}
				v = bytes.TrimSuffix(bytes.TrimSuffix(v, []byte("\n")), []byte("\r"))
			default:
				return nil, fmt.Errorf("%s: %w: %s needs exactly one of value_env and value_file", EnvSecretsFile, ErrInvalidSecret, name)
			}
			specs = append(specs, SecretSpec{Name: name, Value: v, Hosts: d.Hosts, Plaintext: d.Plaintext})
		}
	}
	if len(specs) == 0 {
		return nil, nil
	}
	return NewSecrets(specs)
}

func splitHosts(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

// JobSecrets are the secrets of one job, each with its placeholder.
type JobSecrets struct {
	bound []boundSecret
}

type boundSecret struct {
	*Secret
	placeholder []byte
}

// Bind gives the named secrets fresh placeholders for one job. An unknown
// name is an error wrapping ErrUnknownSecret.
func (s *Secrets) Bind(names []string) (*JobSecrets, error) {
	j := &JobSecrets{}
	for _, n := range names {
		var sec *Secret
		if s != nil {
			sec = s.byName[n]
		}
		if sec == nil {
			return nil, fmt.Errorf("%w: %q", ErrUnknownSecret, n)
		}
		if slices.ContainsFunc(j.bound, func(b boundSecret) bool { return b.name == n }) {
			continue
		}
		p, err := newPlaceholder(len(sec.value))
		if err != nil {
			return nil, err
		}
		j.bound = append(j.bound, boundSecret{Secret: sec, placeholder: p})
	}
	return j, nil
}

// newPlaceholder is the prefix and random hex, as long as the value when
// that is longer than placeholderLen: substituting then keeps every length
// (an HTTP Content-Length stays right) at the price of telling the code
// how long a long value is.
func newPlaceholder(valueLen int) ([]byte, error) {
	n := max(placeholderLen, valueLen)
	random := make([]byte, (n-len(placeholderPrefix)+1)/2)
	if _, err := rand.Read(random); err != nil {
		return nil, fmt.Errorf("netgate: placeholder: %w", err)
	}
	p := append([]byte(placeholderPrefix), hex.EncodeToString(random)...)
	return p[:n], nil
}

// Env maps each secret's name to its placeholder: the code's view.
func (j *JobSecrets) Env() map[string]string {
	if j == nil || len(j.bound) == 0 {
		return nil
	}
	out := make(map[string]string, len(j.bound))
	for _, b := range j.bound {
		out[b.name] = string(b.placeholder)
	}
	return out
}

// Redact replaces every placeholder, and every value too (which should
// never get there), by [REDACTED:NAME].
func (j *JobSecrets) Redact(s string) string {
	if j == nil || len(j.bound) == 0 || s == "" {
		return s
	}
	pairs := make([]string, 0, 4*len(j.bound))
	for _, b := range j.bound {
		r := "[REDACTED:" + b.name + "]"
		pairs = append(pairs, string(b.placeholder), r, string(b.value), r)
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// RedactBytes is Redact for a chunk of output.
func (j *JobSecrets) RedactBytes(b []byte) []byte {
	if j == nil || len(j.bound) == 0 || len(b) == 0 {
		return b
	}
	return []byte(j.Redact(string(b)))
}

// forConn returns the secrets bound to a connection in its current state,
// as the (placeholder, value) pairs to substitute. Only a connection to a
// bound host (by the name the code connected to, or resolved through this
// session for the address it connected to, and on a bound port)
// qualifies; with TLS the verification must be the gateway's own (no
// skipped checks, no CA data from the code) and a server name, if any,
// must be bound too; without TLS only secrets marked Plaintext.
func (j *JobSecrets) forConn(cn *conn) (placeholders, values [][]byte) {
	if j == nil {
		return nil, nil
	}
	for _, b := range j.bound {
		if !b.boundTo(cn.named, cn.port) {
			continue
		}
		if cn.tls {
			if !cn.verified {
				continue
			}
			if cn.serverName != "" {
				t, err := parseTarget(cn.serverName)
				if err != nil || !b.boundTo(t, cn.port) {
					continue
				}
			}
		} else if !b.plaintext {
			continue
		}
		placeholders = append(placeholders, b.placeholder)
		values = append(values, b.value)
	}
	return placeholders, values
}

func (s *Secret) boundTo(t target, port int) bool {
	for _, e := range s.hosts {
		if e.matches(t) && (e.port == 0 || e.port == port) {
			return true
		}
	}
	return false
}

// UseSecrets sets the job's secrets; call it before the execution starts.
func (s *Session) UseSecrets(j *JobSecrets) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets = j
}

// substitution is a connection's secret rewriting: placeholders become
// values on the way out and values become placeholders on the way in.
type substitution struct {
	out streamReplacer
	in  inboundMasker
}

// set installs the pairs for the connection's current state.
func (sub *substitution) set(placeholders, values [][]byte) {
	sub.out.set(placeholders, values)
	// Received values are masked by as much of the placeholder: lengths
	// stay what the server sent (a recv never returns more than asked).
	masks := make([][]byte, len(values))
	for i, v := range values {
		masks[i] = placeholders[i][:len(v)]
	}
	sub.in.set(values, masks)
}

// maskAfter is how many bytes of a value may reach the code, at most, when
// a piece of received data ends in the value's first bytes: from this many
// on they are masked at once (see inboundMasker).
const maskAfter = 4

// inboundMasker replaces values by their placeholders in received data, so
// that a bound server reflecting what it got (an echo, a header dump)
// hands the code its placeholder back rather than the value. It never
// holds data back (a reply that happens to end like a value must not
// stall): a piece that ends in the first k bytes of a value passes them
// (k < maskAfter) or masks them (k >= maskAfter), and if the next piece
// goes on with the rest of the value, that rest is masked too. At most
// maskAfter-1 bytes of a value can thus reach the code, and only when
// ordinary data happens to end in the first maskAfter bytes of a value is
// it altered.
type inboundMasker struct {
	mu            sync.Mutex
	values, masks [][]byte
	first         [256]bool
	// cont is the value a previous piece ended inside, and how far.
	cont, contAt int
}

func (m *inboundMasker) set(values, masks [][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values, m.masks, m.cont = values, masks, -1
	m.first = [256]bool{}
	for _, v := range values {
		m.first[v[0]] = true
	}
}

func (m *inboundMasker) push(p []byte) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.values) == 0 {
		return p
	}
	out := make([]byte, 0, len(p)+placeholderLen)
	if m.cont >= 0 {
		v, at := m.values[m.cont], m.contAt
		need := v[at:]
		mask := m.masks[m.cont]
		switch {
		case bytes.HasPrefix(p, need):
			out = append(out, mask[at:]...)
			p = p[len(need):]
			m.cont = -1
		case len(p) < len(need) && bytes.HasPrefix(need, p):
			out = append(out, mask[at:at+len(p)]...)
			m.contAt += len(p)
			return out
		default:
			m.cont = -1
		}
	}
	i := 0
scan:
	for i < len(p) {
		if !m.first[p[i]] {
			j := i + 1
			for j < len(p) && !m.first[p[j]] {
				j++
			}
			out = append(out, p[i:j]...)
			i = j
			continue
		}
		rest := p[i:]
		for k, v := range m.values {
			if bytes.HasPrefix(rest, v) {
				out = append(out, m.masks[k]...)
				i += len(v)
				continue scan
			}
		}
		best := -1
		for k, v := range m.values {
			if len(rest) < len(v) && bytes.HasPrefix(v, rest) && (best < 0 || len(v) > len(m.values[best])) {
				best = k
			}
		}
		if best >= 0 {
			m.cont, m.contAt = best, len(rest)
			if len(rest) >= maskAfter {
				out = append(out, m.masks[best][:len(rest)]...)
			} else {
				out = append(out, rest...)
			}
			return out
		}
		out = append(out, p[i])
		i++
	}
	return out
}

// streamReplacer replaces placeholders in a byte stream that arrives in
// pieces: a piece's tail that could be the start of one is held back until
// the next piece tells, or until the connection is read, shut down or
// closed (flush), which is when the code has finished what it was sending.
type streamReplacer struct {
	mu       sync.Mutex
	from, to [][]byte
	first    [256]bool
	carry    []byte
}

// set changes the patterns, keeping what is held back.
func (r *streamReplacer) set(from, to [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.from, r.to = from, to
	r.first = [256]bool{}
	for _, f := range from {
		r.first[f[0]] = true
	}
}

// push takes the next piece and returns what can be passed on.
func (r *streamReplacer) push(p []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.from) == 0 && len(r.carry) == 0 {
		return p
	}
	buf := append(r.carry, p...)
	r.carry = nil
	out := make([]byte, 0, len(buf))
	i := 0
scan:
	for i < len(buf) {
		if !r.first[buf[i]] {
			j := i + 1
			for j < len(buf) && !r.first[buf[j]] {
				j++
			}
			out = append(out, buf[i:j]...)
			i = j
			continue
		}
		rest := buf[i:]
		for k, f := range r.from {
			if bytes.HasPrefix(rest, f) {
				out = append(out, r.to[k]...)
				i += len(f)
				continue scan
			}
		}
		for _, f := range r.from {
			if len(rest) < len(f) && bytes.HasPrefix(f, rest) {
				r.carry = slices.Clone(rest)
				break scan
			}
		}
		out = append(out, buf[i])
		i++
	}
	return out
}

// flush returns what is held back, as is: the stream paused before a
// placeholder completed, so it is not one (and a placeholder's start is
// nothing the code does not know).
func (r *streamReplacer) flush() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.carry
	r.carry = nil
	return c
}
