// Bit-exact github.com/klauspost/pgzip 1.2.5 writer output at its defaults (what podman,
// buildah and skopeo write when they push gzip layers): `pgzip.NewWriter(w)`, Write, Close.
//
// pgzip cuts the input into 1 MiB blocks. Each block is compressed on its own by a fresh
// klauspost flate writer (level 5) primed with the previous block's last 16 KiB, and ends
// with a sync flush, so the blocks are independent of each other apart from that tail and
// the output does not depend on how many run in parallel. Only full blocks are cut while
// writing; Close compresses whatever is left (possibly nothing) as the last block and
// then closes that flate writer, which adds an empty final fixed-Huffman block (03 00).
//
// The gzip header is fixed: no name/comment/extra, mtime = uint32(time.Time{}.Unix())
// (00 09 6e 88), XFL 0 (level is "default"), OS 255.

import type { Transform } from 'node:stream';
import { crc32 } from './crc32.js';
import { encoderStream } from './encoder-stream.js';
import { gzipTrailer } from './gzip-frame.js';
import { KlauspostDeflater } from './klauspost-flate.js';

export const PGZIP_BLOCK_SIZE = 1 << 20;
/** How much of the previous block pgzip hands to the next block's compressor as dictionary. */
export const PGZIP_TAIL_SIZE = 16384;

const HEADER = Uint8Array.of(0x1f, 0x8b, 8, 0, 0x00, 0x09, 0x6e, 0x88, 0, 0xff);
/** What flate's Close writes after a sync flush: an empty final fixed-Huffman block. */
const FINAL_BLOCK = Uint8Array.of(0x03, 0x00);

export function pgzipHeader(): Uint8Array {
  return HEADER.slice();
}

let shared: KlauspostDeflater | undefined;

/**
 * Raw deflate bytes of one pgzip block: `data` is the block's input (≤ block size), `dict`
 * the previous block's last 32 KiB (or empty for the first block). Pure and synchronous, so
 * blocks can be compressed on worker threads in parallel and a Range request can start at
 * any block.
 *
 * Only the last 16 KiB of `dict` are used (that is all pgzip keeps), so passing the
 * previous block's last 16 KiB or 32 KiB (or all of it) gives the same bytes.
 */
export function pgzipBlock(data: Uint8Array, dict: Uint8Array): Uint8Array {
  if (data.length > PGZIP_BLOCK_SIZE) throw new RangeError(`pgzip block larger than ${PGZIP_BLOCK_SIZE} bytes`);
  const d = (shared ??= new KlauspostDeflater());
  d.resetDict(dict.length > PGZIP_TAIL_SIZE ? dict.subarray(dict.length - PGZIP_TAIL_SIZE) : dict);
  d.write(data);
  d.flush();
  return d.takeOutput();
}

/** A block's deflate bytes, and the CRC-32 of its input when asked for (else 0). */
export interface CompressedBlock {
  bytes: Uint8Array;
  crc: number;
}

/**
 * pgzipBlock, with the input's CRC-32 taken where the block is compressed: on a pool's thread,
 * that takes it off the thread that orders the blocks (combined there with crc32Combine).
 */
export function compressBlock(data: Uint8Array, dict: Uint8Array, withCrc: boolean): CompressedBlock {
  return { bytes: pgzipBlock(data, dict), crc: withCrc ? crc32(data) : 0 };
}

/** What follows the last block: whatever final deflate bytes pgzip writes on Close, then CRC-32 and ISIZE. */
export function pgzipTrailer(crc: number, totalSize: number): Uint8Array {
  const out = new Uint8Array(10);
  out.set(FINAL_BLOCK, 0);
  out.set(gzipTrailer(crc >>> 0, totalSize), 2);
  return out;
}

/** Streaming encoder: push() returns output ready so far; finish() the rest. Output independent of input chunking. Memory bounded by a block or two. */
export class PgzipEncoder {
  /** compressed offset at which each block's deflate bytes start (block 0 starts right after the header) */
  readonly blockOffsets: number[] = [];
  private readonly block = new Uint8Array(PGZIP_BLOCK_SIZE);
  private fill = 0;
  private tail: Uint8Array = new Uint8Array(0);
  private crc = 0;
  private size = 0;
  private written = 0;
  private finished = false;

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finished) throw new Error('PgzipEncoder: push after finish');
    const out: Uint8Array[] = [];
    this.start(out);
    this.crc = crc32(chunk, this.crc);
    this.size += chunk.length;
    let i = 0;
    while (i < chunk.length) {
      const n = Math.min(PGZIP_BLOCK_SIZE - this.fill, chunk.length - i);
      this.block.set(chunk.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      // Like pgzip, a block is cut as soon as it is full, even if no more input follows.
      if (this.fill === PGZIP_BLOCK_SIZE) this.emitBlock(out);
    }
    return out;
  }

  finish(): Uint8Array[] {
    if (this.finished) return [];
    const out: Uint8Array[] = [];
    this.start(out);
    this.emitBlock(out); // the last block, possibly empty
    this.finished = true;
    out.push(pgzipTrailer(this.crc, this.size));
    this.written += 10;
    return out;
  }

  private start(out: Uint8Array[]): void {
    if (this.written > 0) return;
    out.push(pgzipHeader());
    this.written = HEADER.length;
  }

  private emitBlock(out: Uint8Array[]): void {
    const data = this.block.subarray(0, this.fill);
    const bytes = pgzipBlock(data, this.tail);
    this.blockOffsets.push(this.written);
    this.written += bytes.length;
    out.push(bytes);
    // pgzip keeps a tail only from blocks longer than the tail itself.
    this.tail = this.fill > PGZIP_TAIL_SIZE ? data.slice(this.fill - PGZIP_TAIL_SIZE) : new Uint8Array(0);
    this.fill = 0;
  }
}

export function createPgzipStream(): Transform {
  return encoderStream(new PgzipEncoder());
}
