// gzip framing (RFC 1952) shared by the Go, GNU and zlib encoders: the 10-byte header, the raw
// deflate stream, then CRC-32 and ISIZE (length mod 2^32), little-endian. Each library differs
// only in its header bytes and its deflate encoder, which the caller hands in.

import { crc32 } from './crc32.js';
import type { ChunkEncoder } from './encoder-stream.js';

/** The header of a gzip member with no name, comment or extra field and MTIME 0. */
export function gzipHeader(xfl: number, os: number): Uint8Array {
  return Uint8Array.of(0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, os);
}

/** XFL as Go and GNU gzip set it: 2 (best) at level 9, 4 (fastest) at level 1, else 0. */
export function levelXfl(level: number): number {
  return level === 9 ? 2 : level === 1 ? 4 : 0;
}

/** CRC-32 and ISIZE (length mod 2^32), little-endian. */
export function gzipTrailer(crc: number, size: number): Uint8Array {
  const trailer = new Uint8Array(8);
  const dv = new DataView(trailer.buffer);
  dv.setUint32(0, crc, true);
  dv.setUint32(4, size % 0x100000000, true);
  return trailer;
}

/**
 * A streaming gzip encoder: push() returns output bytes ready so far; finish() returns the rest
 * (final block + trailer). Output does not depend on how the input is chunked as long as the
 * deflate encoder's does not; memory is that of the deflate encoder.
 */
export class GzipFrame implements ChunkEncoder {
  private header: Uint8Array | null;
  private finished = false;
  private crc = 0;
  private size = 0;

  constructor(
    private readonly deflate: ChunkEncoder,
    header: Uint8Array,
    /** prefix for error messages */
    private readonly name: string,
  ) {
    this.header = header;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finished) throw new Error(`${this.name}: push after finish`);
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
    out.push(gzipTrailer(this.crc, this.size));
    return out;
  }

  private withHeader(parts: Uint8Array[]): Uint8Array[] {
    if (this.header === null) return parts;
    const h = this.header;
    this.header = null;
    return [h, ...parts];
  }
}
