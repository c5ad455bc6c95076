package catalogue

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// ErrInvalidArguments: a callback's arguments are not a JSON object, or do
// not match its schema. Checked on the worker, before any request leaves
// it: the guest's own check is for good error messages only, since code in
// the sandbox can call the host directly.
var ErrInvalidArguments = errors.New("invalid callback arguments")

// TypeInvalidArguments is the Python type of ErrInvalidArguments: the
// TypeError Python raises for a call with the wrong arguments.
const TypeInvalidArguments = "TypeError"

// maxArgErrorText bounds the validation detail in an error message.
const maxArgErrorText = 512

// noLoader refuses every external reference: a schema announced by a
// service must not make the worker read files or fetch URLs.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema references are not loaded (%s)", url)
}

// schemaCache keeps compiled schemas by their text, so a refresh compiles
// only the schemas it has not seen, and no call compiles any.
type schemaCache map[string]*jsonschema.Schema

// compile returns the compiled schema of raw, from prev if it is there.
func (prev schemaCache) compile(raw string) (*jsonschema.Schema, error) {
	if s, ok := prev[raw]; ok {
		return s, nil
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	// Schemas without "$schema" are read as 2020-12 whatever later
	// versions of the library default to.
	c.DefaultDraft(jsonschema.Draft2020)
	const loc = "eryx:callback-schema.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, err
	}
	return c.Compile(loc)
}

// compileEntries compiles the schema of every entry, reusing prev; an
// entry whose schema does not compile is dropped (and reported). It
// returns the cache for the next refresh: exactly the schemas in use.
func compileEntries(prev schemaCache, entries map[string]*Entry, warn func(format string, args ...any)) (schemaCache, int) {
	next := schemaCache{}
	dropped := 0
	for name, e := range entries {
		if len(e.Schema) == 0 {
			continue
		}
		raw := string(e.Schema)
		s, err := prev.compile(raw)
		if err != nil {
			warn("service %s: callback %q has a schema that does not compile, ignored: %v", e.Service, name, err)
			delete(entries, name)
			dropped++
			continue
		}
		e.schema = s
		next[raw] = s
	}
	return next, dropped
}

// checkArgs validates a call's arguments on the host: a JSON object, and
// one its schema accepts.
func checkArgs(e *Entry, args []byte) error {
	bad := func(format string, a ...any) error {
		msg := fmt.Sprintf(format, a...)
		if len(msg) > maxArgErrorText {
			msg = msg[:maxArgErrorText] + "..."
		}
		return fmt.Errorf("%w: %w", ErrInvalidArguments, &sandbox.CallbackError{Type: TypeInvalidArguments, Message: msg})
	}
	trimmed := bytes.TrimSpace(args)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return bad("%s(): the arguments must be a JSON object of keyword arguments", e.Name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(trimmed))
	if err != nil {
		return bad("%s(): the arguments are not valid JSON: %v", e.Name, err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return bad("%s(): the arguments must be a JSON object of keyword arguments", e.Name)
	}
	if e.schema == nil {
		return nil
	}
	if err := e.schema.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return bad("%s(): %s", e.Name, describe(ve))
		}
		return bad("%s(): %v", e.Name, err)
	}
	return nil
}

// describe names the first failing argument and why, in one line.
func describe(ve *jsonschema.ValidationError) string {
	leaf := ve
	for len(leaf.Causes) > 0 {
		leaf = leaf.Causes[0]
	}
	where := "arguments"
	if len(leaf.InstanceLocation) > 0 {
		where = "argument " + strings.Join(leaf.InstanceLocation, ".")
	}
	return where + ": " + strings.TrimSpace(leaf.ErrorKind.LocalizedString(message.NewPrinter(language.English)))
}
