// gzip framing (RFC 1952) exactly as Go's compress/gzip writes it with a default Header: no
// name, comment or extra field, MTIME 0, OS 255 (unknown), XFL 2 at level 9 and 4 at level 1.
// With GoDeflateEncoder underneath, the bytes equal gzip.NewWriterLevel(w, level) + Write +
// Close, which is what docker/BuildKit/containerd (level 6) and go-containerregistry (level 1)
// produce, so a layer's original compressed digest can be rebuilt from its uncompressed tar.

import type { Transform } from 'node:stream';
import { encoderStream } from './encoder-stream.js';
import { GoDeflateEncoder } from './go-flate.js';
import { GzipFrame, gzipHeader, levelXfl } from './gzip-frame.js';

export interface GoGzipOptions {
  /** 1..9 (6 = Go's DefaultCompression, 1 = BestSpeed) */
  level: number;
}

/**
 * A streaming encoder: push() returns output bytes ready so far; finish() returns the rest
 * (final block + trailer). Output does not depend on how the input is chunked. Memory is
 * bounded (window + one block), never the whole input.
 */
export class GoGzipEncoder extends GzipFrame {
  constructor(o: GoGzipOptions) {
    super(new GoDeflateEncoder(o.level), gzipHeader(levelXfl(o.level), 255), 'go-gzip');
  }
}

/** A Transform stream: uncompressed bytes in, Go-identical gzip out. */
export function createGoGzipStream(o: GoGzipOptions): Transform {
  return encoderStream(new GoGzipEncoder(o));
}
