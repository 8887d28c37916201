// Test oracle for src/compress/go-gzip.ts: gzip stdin to stdout with Go's standard library at
// -level, feeding the compressor as io.Copy from a regular file does (32 KiB writes), whatever
// the kind of stdin.
package main

import (
	"bufio"
	"compress/gzip"
	"flag"
	"io"
	"log"
	"os"
)

func main() {
	level := flag.Int("level", gzip.DefaultCompression, "compression level")
	flag.Parse()
	out := bufio.NewWriter(os.Stdout)
	w, err := gzip.NewWriterLevel(out, *level)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 32*1024)
	for {
		n, err := io.ReadFull(os.Stdin, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				log.Fatal(werr)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	if err := out.Flush(); err != nil {
		log.Fatal(err)
	}
}
