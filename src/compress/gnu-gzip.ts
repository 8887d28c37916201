// gzip framing exactly as GNU gzip 1.12 writes it for `gzip -n` reading stdin: no name, MTIME 0,
// XFL 2 at -9 and 4 at -1 (0 otherwise), OS 3 (Unix). With GnuDeflateEncoder underneath, the
// bytes equal `gzip -n -<level> < input`, which is what `tar czf` and GNU-gzip-based layer
// builders produce, so such a layer's compressed digest can be rebuilt from its tar.

import type { Transform } from 'node:stream';
import { encoderStream } from './encoder-stream.js';
import { GnuDeflateEncoder } from './gnu-deflate.js';
import { GzipFrame, gzipHeader, levelXfl } from './gzip-frame.js';

export interface GnuGzipOptions {
  /** 1..9 (6 = gzip's default) */
  level: number;
}

/**
 * A streaming encoder: push() returns output bytes ready so far; finish() returns the rest
 * (final block + trailer). Output does not depend on how the input is chunked; memory is
 * bounded (window + one block).
 */
export class GnuGzipEncoder extends GzipFrame {
  constructor(o: GnuGzipOptions) {
    super(new GnuDeflateEncoder(o.level), gzipHeader(levelXfl(o.level), 3), 'gnu-gzip');
  }
}

/** A Transform stream: uncompressed bytes in, GNU-gzip-identical gzip out. */
export function createGnuGzipStream(o: GnuGzipOptions): Transform {
  return encoderStream(new GnuGzipEncoder(o));
}
