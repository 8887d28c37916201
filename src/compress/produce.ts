// Recompression itself, independent of threads: trying a profile against a layer's original
// compressed digest, and producing the original blob (or a range of it) from the rebuilt tar.
import { createHash } from 'node:crypto';
import { pgzipBlock, PGZIP_TAIL_SIZE } from './pgzip.js';
import type { Profile } from './profiles.js';

export interface Target {
  digest: string;
  size: number;
}

/** What a profile that reproduced a blob needs to produce any range of it again. */
export interface Reproduction {
  /** compressed offset of each block (block formats) */
  blockOffsets?: number[];
  /** the blob's last 10 bytes, hex (pgzip: final block, CRC-32, size): a range near the end needs no full pass */
  trailer: string;
}

export type Tar = AsyncIterable<Uint8Array>;

/**
 * Compress the tar with the profile, hashing as it goes; give up as soon as the output is
 * longer than the original. The reproduction when the sha256 matches, else undefined.
 */
export async function tryProfile(tar: Tar, p: Profile, target: Target, onBytes?: (n: number) => void): Promise<Reproduction | undefined> {
  const enc = p.create();
  const h = createHash('sha256');
  let n = 0;
  let last = Buffer.alloc(0);
  const take = (parts: Uint8Array[]) => {
    for (const b of parts) {
      n += b.length;
      h.update(b);
      last = Buffer.concat([last, b]).subarray(-10);
    }
    return n <= target.size;
  };
  for await (const chunk of tar) {
    onBytes?.(chunk.length);
    if (!take(enc.push(chunk))) return undefined;
  }
  if (!take(enc.finish()) || n !== target.size || 'sha256:' + h.digest('hex') !== target.digest) return undefined;
  return { blockOffsets: enc.blockOffsets?.slice(), trailer: last.toString('hex') };
}

/** The bytes [start, end) of a stream of chunks that begins at offset `at`. */
async function* window(parts: AsyncIterable<Uint8Array>, at: number, start: number, end: number): AsyncGenerator<Uint8Array> {
  for await (const b of parts) {
    const from = Math.max(start - at, 0);
    const to = Math.min(end - at, b.length);
    if (to > from) yield b.subarray(from, to);
    at += b.length;
    if (at >= end) return;
  }
}

async function* encodeAll(tar: Tar, p: Profile): AsyncGenerator<Uint8Array> {
  const enc = p.create();
  for await (const chunk of tar) yield* enc.push(chunk);
  yield* enc.finish();
}

/** pgzip from block k on: each block needs only the previous block's tail as dictionary. */
async function* pgzipFromBlock(tar: Tar, blockSize: number, trailer: Uint8Array): AsyncGenerator<Uint8Array> {
  const block = new Uint8Array(blockSize);
  let fill = 0;
  let dict: Uint8Array | undefined; // the first PGZIP_TAIL_SIZE bytes are the previous block's tail
  const pending: Uint8Array[] = [];
  let pendingLen = 0;
  for await (let chunk of tar) {
    if (!dict) {
      pending.push(chunk);
      pendingLen += chunk.length;
      if (pendingLen < PGZIP_TAIL_SIZE) continue;
      const all = Buffer.concat(pending);
      dict = all.subarray(0, PGZIP_TAIL_SIZE);
      chunk = all.subarray(PGZIP_TAIL_SIZE);
    }
    for (let i = 0; i < chunk.length; ) {
      const n = Math.min(blockSize - fill, chunk.length - i);
      block.set(chunk.subarray(i, i + n), fill);
      fill += n;
      i += n;
      if (fill === blockSize) {
        yield pgzipBlock(block, dict);
        dict = block.slice(blockSize - PGZIP_TAIL_SIZE);
        fill = 0;
      }
    }
  }
  if (!dict) throw new Error('layer tar ended before the block it was asked to start at');
  yield pgzipBlock(block.subarray(0, fill), dict); // the last block, possibly empty
  yield trailer;
}

/**
 * The original blob, or bytes [start, end) of it. `tarFrom(offset)` opens the rebuilt tar at
 * an uncompressed offset. A whole blob is checked against its digest while produced and the
 * generator throws at the end on a mismatch (the caller aborts the transfer); a range starts
 * at the block holding it where the format has blocks.
 */
export async function* produce(
  tarFrom: (offset: number) => Promise<Tar>, p: Profile, target: Target, rep: Reproduction, range?: { start: number; end: number },
): AsyncGenerator<Uint8Array> {
  const offsets = rep.blockOffsets;
  if (range && p.blockSize && offsets && offsets.length > 1) {
    let k = 0;
    while (k + 1 < offsets.length && offsets[k + 1] <= range.start) k++;
    if (k > 0) {
      const tar = await tarFrom(k * p.blockSize - PGZIP_TAIL_SIZE);
      yield* window(pgzipFromBlock(tar, p.blockSize, Buffer.from(rep.trailer, 'hex')), offsets[k], range.start, range.end);
      return;
    }
  }
  if (range) {
    yield* window(encodeAll(await tarFrom(0), p), 0, range.start, range.end);
    return;
  }
  // the last chunk waits for the check: a client never gets a whole blob with wrong bytes
  const h = createHash('sha256');
  let n = 0;
  let held: Uint8Array | undefined;
  for await (const b of encodeAll(await tarFrom(0), p)) {
    h.update(b);
    n += b.length;
    if (held) yield held;
    held = b;
  }
  const got = 'sha256:' + h.digest('hex');
  if (got !== target.digest || n !== target.size) throw new Error(`recompressed blob is ${got} (${n} bytes), not ${target.digest}: aborted`);
  if (held) yield held;
}
