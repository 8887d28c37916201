// gzip framing (RFC 1952) exactly as Go's compress/gzip writes it with a default Header: no
// name, comment or extra field, MTIME 0, OS 255 (unknown), XFL 2 at level 9 and 4 at level 1.
// With GoDeflateEncoder underneath, the bytes equal gzip.NewWriterLevel(w, level) + Write +
// Close, which is what docker/BuildKit/containerd (level 6) and go-containerregistry (level 1)
// produce, so a layer's original compressed digest can be rebuilt from its uncompressed tar.

import type { Transform } from 'node:stream';
import { crc32 } from './crc32.js';
import { encoderStream } from './encoder-stream.js';
import { GoDeflateEncoder } from './go-flate.js';

export interface GoGzipOptions {
  /** 1..9 (6 = Go's DefaultCompression, 1 = BestSpeed) */
  level: number;
}

/**
 * A streaming encoder: push() returns output bytes ready so far; finish() returns the rest
 * (final block + trailer). Output does not depend on how the input is chunked. Memory is
 * bounded (window + one block), never the whole input.
 */
export class GoGzipEncoder {
  private readonly deflate: GoDeflateEncoder;
  private readonly level: number;
  private headerDone = false;
  private finished = false;
  private crc = 0;
  private size = 0;

  constructor(o: GoGzipOptions) {
    this.deflate = new GoDeflateEncoder(o.level);
    this.level = o.level;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finished) throw new Error('go-gzip: push after finish');
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
    const header = Uint8Array.of(0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255);
    return [header, ...parts];
  }
}

/** A Transform stream: uncompressed bytes in, Go-identical gzip out. */
export function createGoGzipStream(o: GoGzipOptions): Transform {
  return encoderStream(new GoGzipEncoder(o));
}
