package mcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// lineTransport is newline-delimited JSON-RPC over a reader and a writer,
// like the SDK's stdio transport except that a line that is not a
// JSON-RPC message (garbage, an oversized line, a batch) is answered with
// a JSON-RPC error and reading goes on: the SDK's own transport ends the
// session at the first bad line.
//
// NewLineTransport returns it for r and w; closer, if set, is closed with
// the connection.
func NewLineTransport(r io.Reader, w io.Writer, closer io.Closer) sdk.Transport {
	return &lineTransport{r: r, w: w, closer: closer, maxLine: DefaultMaxRequestBytes}
}

type lineTransport struct {
	r       io.Reader
	w       io.Writer
	closer  io.Closer
	maxLine int
}

func (t *lineTransport) Connect(context.Context) (sdk.Connection, error) {
	c := &lineConn{w: t.w, closer: t.closer, msgs: make(chan readResult), done: make(chan struct{})}
	go c.readLoop(bufio.NewReaderSize(t.r, 64<<10), t.maxLine)
	return c, nil
}

type readResult struct {
	msg jsonrpc.Message
	err error
}

type lineConn struct {
	w      io.Writer
	closer io.Closer
	wmu    sync.Mutex
	msgs   chan readResult

	once sync.Once
	done chan struct{}
}

func (c *lineConn) readLoop(br *bufio.Reader, maxLine int) {
	for {
		line, tooLong, err := readLine(br, maxLine)
		if len(bytes.TrimSpace(line)) > 0 || tooLong {
			var msg jsonrpc.Message
			var derr error
			switch {
			case tooLong:
				derr = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: fmt.Sprintf("message over the limit of %d bytes", maxLine)}
			case bytes.HasPrefix(bytes.TrimSpace(line), []byte("[")):
				derr = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "JSON-RPC batches are not supported"}
			default:
				msg, derr = jsonrpc.DecodeMessage(line)
			}
			if derr != nil {
				c.reject(line, derr)
			} else {
				select {
				case c.msgs <- readResult{msg: msg}:
				case <-c.done:
					return
				}
			}
		}
		if err != nil {
			select {
			case c.msgs <- readResult{err: err}:
			case <-c.done:
			}
			return
		}
	}
}

// readLine reads one line of at most max bytes; a longer one is skipped
// to its end and reported.
func readLine(br *bufio.Reader, max int) ([]byte, bool, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > max {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, tooLong, err
	}
}

// reject answers a bad line: with its id when one can be read from it,
// else with a null id (as JSON-RPC prescribes for parse errors).
func (c *lineConn) reject(line []byte, err error) {
	werr := &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "parse error: " + err.Error()}
	var je *jsonrpc.Error
	if errors.As(err, &je) {
		werr = je
	}
	werr.Message = bounded(werr.Message, 200)
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	id := json.RawMessage("null")
	if json.Unmarshal(line, &probe) == nil && len(probe.ID) > 0 {
		id = probe.ID
		if werr.Code == jsonrpc.CodeParseError {
			werr = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "invalid request: " + err.Error()}
		}
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   *jsonrpc.Error  `json:"error"`
	}{"2.0", id, werr})
	_ = c.writeLine(b)
}

func (c *lineConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case r := <-c.msgs:
		return r.msg, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, io.EOF
	}
}

func (c *lineConn) Write(_ context.Context, msg jsonrpc.Message) error {
	b, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return err
	}
	return c.writeLine(b)
}

func (c *lineConn) writeLine(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.w.Write(append(b, '\n'))
	return err
}

func (c *lineConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		if c.closer != nil {
			_ = c.closer.Close()
		}
	})
	return nil
}

func (c *lineConn) SessionID() string { return "" }
