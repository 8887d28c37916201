// Oracle for test/compress-pgzip.test.ts: compresses stdin to stdout exactly as
// podman/buildah/skopeo do (klauspost/pgzip with its defaults).
//
//	-mode=pgzip  (default) pgzip.NewWriter + io.Copy + Close
//	-mode=flate  raw klauspost flate at level 5 (DefaultCompression), for debugging the encoder alone
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/pgzip"
)

func main() {
	mode := flag.String("mode", "pgzip", "pgzip or flate")
	flag.Parse()
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	var w io.WriteCloser
	switch *mode {
	case "pgzip":
		w = pgzip.NewWriter(out)
	case "flate":
		fw, err := flate.NewWriter(out, flate.DefaultCompression)
		if err != nil {
			fail(err)
		}
		w = fw
	default:
		fail(fmt.Errorf("unknown mode %q", *mode))
	}
	if _, err := io.Copy(w, os.Stdin); err != nil {
		fail(err)
	}
	if err := w.Close(); err != nil {
		fail(err)
	}
	if err := out.Flush(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pgzip oracle:", err)
	os.Exit(1)
}
