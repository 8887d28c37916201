// gzip framing exactly as GNU gzip 1.12 writes it for `gzip -n` reading stdin: no name, MTIME 0,
// XFL 2 at -9 and 4 at -1 (0 otherwise), OS 3 (Unix). With GnuDeflateEncoder underneath, the
// bytes equal `gzip -n -<level> < input`, which is what `tar czf` and GNU-gzip-based layer
// builders produce, so such a layer's compressed digest can be rebuilt from its tar.

import type { Transform } from 'node:stream';
import { crc32 } from './crc32.js';
import { encoderStream } from './encoder-stream.js';
import { GnuDeflateEncoder } from './gnu-deflate.js';

export interface GnuGzipOptions {
  /** 1..9 (6 = gzip's default) */
  level: number;
}

/**
 * A streaming encoder: push() returns output bytes ready so far; finish() returns the rest
 * (final block + trailer). Output does not depend on how the input is chunked; memory is
 * bounded (window + one block).
 */
export class GnuGzipEncoder {
  private readonly deflate: GnuDeflateEncoder;
  private readonly level: number;
  private headerDone = false;
  private finished = false;
  private crc = 0;
  private size = 0;

  constructor(o: GnuGzipOptions) {
    this.deflate = new GnuDeflateEncoder(o.level);
    this.level = o.level;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finished) throw new Error('gnu-gzip: push after finish');
    if (chunk.length > 0) {
      this.crc = crc32(chunk, this.crc);
      this.size += chunk.length;
    }
    return this.withHeader(this.deflate.push(chunk));
  }

  finish(): Uint8Array[] {
    if (this.finished) return [];
    this.finished = true;
    const out = this.withHeader(this.deflate.finish());
    const trailer = new Uint8Array(8);
    const dv = new DataView(trailer.buffer);
    dv.setUint32(0, this.crc, true);
    dv.setUint32(4, this.size % 0x100000000, true); // ISIZE: length mod 2^32
    out.push(trailer);
    return out;
  }

  private withHeader(parts: Uint8Array[]): Uint8Array[] {
    if (this.headerDone) return parts;
    this.headerDone = true;
    const xfl = this.level === 9 ? 2 : this.level === 1 ? 4 : 0;
    const header = Uint8Array.of(0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3);
    return [header, ...parts];
  }
}

/** A Transform stream: uncompressed bytes in, GNU-gzip-identical gzip out. */
export function createGnuGzipStream(o: GnuGzipOptions): Transform {
  return encoderStream(new GnuGzipEncoder(o));
}
