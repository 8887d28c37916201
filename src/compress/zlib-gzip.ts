// gzip framing (RFC 1952) around ZlibDeflateEncoder, as the zlib-based tools write it. The
// deflate data is the same for all of them; only the 10-byte header differs (no name, comment
// or extra field, MTIME 0 in every case here):
//  - 'python': Python's own header, OS 255, XFL 2 at level 9, 4 at level 1, else 0. Written by
//    gzip.compress(data, L, mtime=0) in Python <= 3.10 and >= 3.13, and by gzip.GzipFile
//    (without a file name) in every version;
//  - 'zlib': zlib's default gzip header (deflateInit2 with windowBits 31), OS 3 (Unix), XFL 2
//    at level 9, 4 at levels 0-1, else 0. Python 3.11 and 3.12 gzip.compress(data, L, mtime=0)
//    hand the whole job to zlib.compress(wbits=31) and so write this one;
//  - 'java': java.util.zip.GZIPOutputStream of JDK 16 and later: XFL 0 whatever the level, OS
//    255 (JDK-8244706);
//  - 'java-legacy': GZIPOutputStream up to JDK 15: XFL 0, OS 0.
// Then the deflate stream, CRC-32 and ISIZE (length mod 2^32), little-endian.

import type { Transform } from 'node:stream';
import { encoderStream } from './encoder-stream.js';
import { GzipFrame, gzipHeader, levelXfl } from './gzip-frame.js';
import { ZlibDeflateEncoder } from './zlib-deflate.js';

export type ZlibGzipHeader = 'python' | 'zlib' | 'java' | 'java-legacy';

export interface ZlibGzipOptions {
  /** 1..9 (6 = zlib's Z_DEFAULT_COMPRESSION, Java's default) */
  level: number;
  header: ZlibGzipHeader;
}

/** The 10-byte header `header` writes at `level`. */
export function zlibGzipHeader(header: ZlibGzipHeader, level: number): Uint8Array {
  let xfl: number;
  let os: number;
  switch (header) {
    case 'python':
      xfl = levelXfl(level);
      os = 255;
      break;
    case 'zlib':
      xfl = level === 9 ? 2 : level < 2 ? 4 : 0;
      os = 3;
      break;
    case 'java':
      xfl = 0;
      os = 255;
      break;
    case 'java-legacy':
      xfl = 0;
      os = 0;
      break;
    default:
      throw new Error(`zlib-gzip: unknown header ${String(header)}`);
  }
  return gzipHeader(xfl, os);
}

/**
 * A streaming encoder: push() returns output bytes ready so far; finish() returns the rest
 * (final block + trailer). Output does not depend on how the input is chunked; memory is
 * bounded (window + one block).
 */
export class ZlibGzipEncoder extends GzipFrame {
  constructor(o: ZlibGzipOptions) {
    const header = zlibGzipHeader(o.header, o.level); // (an unknown header fails before the level)
    super(new ZlibDeflateEncoder(o.level), header, 'zlib-gzip');
  }
}

/** A Transform stream: uncompressed bytes in, zlib-identical gzip out. */
export function createZlibGzipStream(o: ZlibGzipOptions): Transform {
  return encoderStream(new ZlibGzipEncoder(o));
}
