package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/eryx-dev/eryx/jobs"
)

// fileSpec parses --file LOCAL[:PATH]: the guest path PATH is below
// /data ("sales.csv", "data/sales.csv" and "/data/sales.csv" are all
// /data/sales.csv), LOCAL's base name by default.
func fileSpec(spec string) (local, guest string, err error) {
	local, guest = spec, ""
	if i := strings.LastIndexByte(spec, ':'); i > 0 {
		local, guest = spec[:i], spec[i+1:]
		if guest == "" {
			return "", "", fmt.Errorf("--file %q: empty PATH after ':'", spec)
		}
	}
	if guest == "" {
		guest = filepath.Base(local)
	}
	guest = strings.TrimPrefix(strings.TrimPrefix(guest, "/"), jobs.DataDir+"/")
	if why := jobs.ValidFilePath(guest); why != "" {
		return "", "", fmt.Errorf("--file %q: guest path %q: %s", spec, guest, why)
	}
	return local, jobs.DataDir + "/" + guest, nil
}

// uploadInputs uploads each --file (content-addressed: a file the tenant
// has already is not sent again) and returns the job's files.
func uploadInputs(ctx context.Context, client *jobs.Client, specs []string) (map[string]string, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	files := make(map[string]string, len(specs))
	for _, spec := range specs {
		local, guest, err := fileSpec(spec)
		if err != nil {
			return nil, err
		}
		if _, dup := files[guest]; dup {
			return nil, fmt.Errorf("--file: %s given twice", guest)
		}
		name, err := client.UploadFile(ctx, local)
		if err != nil {
			return nil, err
		}
		files[guest] = name
	}
	return files, nil
}

// downloadOutputs writes the job's output files into dir (--out).
func downloadOutputs(ctx context.Context, e env, client *jobs.Client, res *jobs.Result, dir string) error {
	if res.FilesError != "" {
		fmt.Fprintf(e.stderr, "eryx-submit: %s\n", res.FilesError)
	}
	if res.FilesLimit != "" {
		fmt.Fprintf(e.stderr, "eryx-submit: some writes under /output were refused: limit %s\n", res.FilesLimit)
	}
	if len(res.Files) == 0 {
		return nil
	}
	paths, err := client.DownloadOutputs(ctx, res, dir)
	if err != nil {
		return err
	}
	partial := ""
	if res.Files[0].Partial {
		partial = " (partial: the job did not finish ok)"
	}
	fmt.Fprintf(e.stderr, "eryx-submit: %d output file(s) in %s%s\n", len(paths), dir, partial)
	return nil
}

func cmdFiles(ctx context.Context, e env, args []string) int {
	const use = "usage: eryx-submit files put LOCAL [NAME] | get NAME [LOCAL] | ls [PREFIX] | rm NAME..."
	if len(args) == 0 {
		return e.errorf(use)
	}
	sub := args[0]
	c, pos, ok := adminFlags(e, "files "+sub, args[1:], nil)
	valid := map[string]func(int) bool{
		"put": func(n int) bool { return n == 1 || n == 2 },
		"get": func(n int) bool { return n == 1 || n == 2 },
		"ls":  func(n int) bool { return n <= 1 },
		"rm":  func(n int) bool { return n >= 1 },
	}
	if check, known := valid[sub]; !ok || !known || !check(len(pos)) {
		return e.errorf(use)
	}
	nc, client, err := c.connect()
	if err != nil {
		return e.errorf("%v", err)
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	switch sub {
	case "put":
		if len(pos) == 1 {
			name, err := client.UploadFile(cctx, pos[0])
			if err != nil {
				return e.errorf("%v", err)
			}
			fmt.Fprintln(e.stdout, name)
			return exitOK
		}
		f, err := os.Open(pos[0])
		if err != nil {
			return e.errorf("%v", err)
		}
		defer func() { _ = f.Close() }()
		info, err := client.PutFile(cctx, pos[1], f)
		if err != nil {
			return e.errorf("%v", err)
		}
		fmt.Fprintf(e.stdout, "%s (%d bytes)\n", info.Name, info.Size)
	case "get":
		w := e.stdout
		var out *os.File
		if len(pos) == 2 {
			if out, err = os.Create(pos[1]); err != nil {
				return e.errorf("%v", err)
			}
			w = out
		}
		_, err := client.GetFile(cctx, pos[0], w)
		if out != nil {
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				_ = os.Remove(pos[1])
			}
		}
		if err != nil {
			return e.errorf("%v", err)
		}
	case "ls":
		prefix := ""
		if len(pos) == 1 {
			prefix = pos[0]
		}
		list, err := client.ListFiles(cctx, prefix)
		if err != nil {
			return e.errorf("%v", err)
		}
		tw := tabwriter.NewWriter(e.stdout, 1, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSIZE\tTYPE")
		for _, f := range list {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", f.Name, f.Size, f.ContentType)
		}
		_ = tw.Flush()
	case "rm":
		failed := false
		for _, name := range pos {
			if err := client.DeleteFile(cctx, name); err != nil {
				fmt.Fprintf(e.stderr, "eryx-submit: %v\n", err)
				failed = failed || !errors.Is(err, jobs.ErrNoSuchFile) || len(pos) == 1
			}
		}
		if failed {
			return exitUsage
		}
	}
	return exitOK
}

// registerFileFlags adds --file and --out to the run flags.
func (o *runOptions) registerFileFlags(fs *flag.FlagSet) {
	fs.Var(&o.files, "file", "upload LOCAL and mount it read-only as /data/PATH (LOCAL[:PATH], repeatable; PATH defaults to LOCAL's name)")
	fs.StringVar(&o.outDir, "out", "", "after the job, download its /output files into this directory")
}
