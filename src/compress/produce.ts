// Recompression itself, independent of who runs it: trying a profile against a layer's
// original compressed digest, and producing the original blob (or a range of it) from the
// rebuilt tar. Block formats (pgzip) compress their blocks in parallel on a BlockPool.
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { BlockPool } from './block-pool.js';
import type { TarCheck } from '../storage/layer-tar.js';
import { crc32Combine } from './crc32.js';
import { compressBlock, pgzipHeader, pgzipTrailer, PGZIP_TAIL_SIZE, type CompressedBlock } from './pgzip.js';
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
 * Output memory nothing here reads again once it is yielded (pgzip's blocks, fresh from the
 * encoder): a consumer may keep it, or transfer it to another thread, instead of copying it.
 */
const handedOver = new WeakSet<ArrayBufferLike>();

/** Whether chunk b is the whole of memory its consumer may keep (no copy needed to transfer it). */
export function ownsMemory(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && handedOver.has(b.buffer);
}

/**
 * Whether compressing with the profile is done with each tar chunk once it asks for the next
 * (pgzip copies it into its blocks), so the tar may come in reused memory (layerTarChunks).
 * The other encoders may keep a chunk for their window.
 */
export const copiesTar = (p: Profile): boolean => !!p.blockSize;

/** An encoding in progress: its output, and the offsets of its blocks as they are produced (block formats). */
interface Encoding {
  chunks: AsyncGenerator<Uint8Array>;
  blockOffsets?: number[];
}

/**
 * pgzip blocks of the tar, compressed on the pool and yielded in order, each with the size of
 * its input and, if `withCrc`, that input's CRC-32. `dict` is the tail of the block before the
 * first one (a mid-stream start).
 */
async function* pgzipBlocks(tar: Tar, blockSize: number, pool: BlockPool | undefined, dict: Uint8Array, withCrc: boolean): AsyncGenerator<CompressedBlock & { size: number }> {
  const compress = pool ? (d: Uint8Array, t: Uint8Array) => pool.compress(d, t, withCrc) : async (d: Uint8Array, t: Uint8Array) => compressBlock(d, t, withCrc);
  const depth = pool ? pool.size * 2 : 0;
  // (each pool promise already has its rejection handled: blocks of a stream given up are never awaited)
  const inFlight: { size: number; block: Promise<CompressedBlock & { input?: Uint8Array<ArrayBuffer> }> }[] = [];
  const spare: Uint8Array<ArrayBuffer>[] = []; // input blocks handed back by the pool, to be filled again
  const next = async () => {
    const f = inFlight.shift()!;
    const { input, ...b } = await f.block;
    if (input?.length === blockSize) spare.push(input);
    handedOver.add(b.bytes.buffer);
    return { ...b, size: f.size };
  };
  let block = new Uint8Array(blockSize);
  let fill = 0;
  const submit = (data: Uint8Array) => {
    const tail = data.length > PGZIP_TAIL_SIZE ? data.slice(data.length - PGZIP_TAIL_SIZE) : new Uint8Array(0);
    inFlight.push({ size: data.length, block: compress(data, dict) }); // a pool takes over data's buffer
    dict = tail;
  };
  for await (const chunk of tar) {
    for (let i = 0; i < chunk.length; ) {
      const n = Math.min(blockSize - fill, chunk.length - i);
      block.set(chunk.subarray(i, i + n), fill);
      fill += n;
      i += n;
      if (fill === blockSize) {
        submit(block); // handed to a thread: the next block goes into one handed back
        block = spare.pop() ?? new Uint8Array(blockSize);
        fill = 0;
      }
    }
    while (inFlight.length > depth) yield await next();
  }
  submit(block.slice(0, fill)); // the last block, possibly empty
  while (inFlight.length) yield await next();
}

/**
 * The tar compressed with the profile. `trailer`: the blob's last 10 bytes when already known
 * (a recipe's), which spares pgzip the CRC-32 of the input: a whole blob's digest covers them.
 */
function encode(tar: Tar, p: Profile, pool: BlockPool | undefined, trailer?: Uint8Array): Encoding {
  if (p.blockSize) {
    const blockOffsets: number[] = [];
    const blockSize = p.blockSize;
    return {
      blockOffsets,
      chunks: (async function* () {
        let crc = 0;
        let size = 0;
        const header = pgzipHeader();
        let at = header.length;
        yield header;
        for await (const b of pgzipBlocks(tar, blockSize, pool, new Uint8Array(0), !trailer)) {
          blockOffsets.push(at);
          at += b.bytes.length;
          if (!trailer) crc = crc32Combine(crc, b.crc, b.size);
          size += b.size;
          yield b.bytes;
        }
        yield trailer ?? pgzipTrailer(crc, size);
      })(),
    };
  }
  if (p.onPool && pool) return { chunks: p.onPool(tar, pool) };
  const enc = p.create();
  return {
    blockOffsets: enc.blockOffsets,
    chunks: (async function* () {
      for await (const chunk of tar) yield* enc.push(chunk);
      yield* enc.finish();
    })(),
  };
}

let blockPool: BlockPool | undefined;

/** tar size from which a pool is worth its threads (a new one takes ~40 ms to start and compile; a pgzip block or a Go segment is 1 MiB) */
const POOL_FROM = 4 << 20;

/**
 * The block pool, for a profile that can use one (blocks, or onPool), when worth its threads.
 * One pool per thread, kept (its threads idle between uses) so that they are warm next time.
 */
export function poolFor(p: Profile, tarSize: number): BlockPool | undefined {
  return (p.blockSize || p.onPool) && tarSize > POOL_FROM && availableParallelism() > 1 ? (blockPool ??= new BlockPool()) : undefined;
}

/** What compressing a tar with a profile gave: the blob's digest and size, and how to make any range of it again. */
export interface Measured extends Reproduction {
  digest: string;
  size: number;
}

/**
 * Compress the tar with the profile, hashing as it goes (and giving each piece of output to
 * `out`); give up (undefined) as soon as the output is longer than `limit`.
 */
export async function measure(tar: Tar, p: Profile, pool?: BlockPool, onBytes?: (n: number) => void, limit = Infinity, out?: (b: Uint8Array) => Promise<void>): Promise<Measured | undefined> {
  const counted = (async function* () {
    for await (const c of tar) {
      onBytes?.(c.length);
      yield c;
    }
  })();
  const e = encode(counted, p, pool);
  const h = createHash('sha256');
  let n = 0;
  let last = Buffer.alloc(0);
  for await (const b of e.chunks) {
    n += b.length;
    if (n > limit) {
      await e.chunks.return(undefined);
      return undefined;
    }
    h.update(b);
    await out?.(b);
    last = Buffer.concat([last, b.subarray(Math.max(0, b.length - 10))]).subarray(-10); // (a copy of 10 bytes, not of every block)
  }
  return { digest: 'sha256:' + h.digest('hex'), size: n, blockOffsets: e.blockOffsets?.slice(), trailer: Buffer.from(last).toString('hex') };
}

/** The reproduction when the profile gives exactly the target blob, else undefined (`out` gets its output as it is made). */
export async function tryProfile(tar: Tar, p: Profile, target: Target, pool?: BlockPool, onBytes?: (n: number) => void, out?: (b: Uint8Array) => Promise<void>): Promise<Reproduction | undefined> {
  const m = await measure(tar, p, pool, onBytes, target.size, out);
  if (!m || m.size !== target.size || m.digest !== target.digest) return undefined;
  return { blockOffsets: m.blockOffsets, trailer: m.trailer };
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

/** pgzip from a block on: the tar starts PGZIP_TAIL_SIZE bytes early, the previous block's tail. */
async function* pgzipFromBlock(tar: Tar, blockSize: number, pool: BlockPool | undefined, trailer: Uint8Array): AsyncGenerator<Uint8Array> {
  const it = tar[Symbol.asyncIterator]();
  try {
    const head: Uint8Array[] = [];
    let have = 0;
    while (have < PGZIP_TAIL_SIZE) {
      const r = await it.next();
      if (r.done) throw new Error('layer tar ended before the block it was asked to start at');
      head.push(Buffer.from(r.value)); // (a copy: the tar's chunks may be read into again once the next is asked for)
      have += r.value.length;
    }
    const all = Buffer.concat(head);
    const rest = (async function* () {
      yield all.subarray(PGZIP_TAIL_SIZE);
      for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
    })();
    for await (const b of pgzipBlocks(rest, blockSize, pool, all.subarray(0, PGZIP_TAIL_SIZE), false)) yield b.bytes;
    yield trailer;
  } finally {
    // a range ends before the tar does: the rebuild is ended here, or it would keep its files
    // and the layer store's read lock (podman's writes would wait on it for good)
    await it.return?.();
  }
}

/**
 * The original blob, or bytes [start, end) of it. `tarFrom(offset)` opens the rebuilt tar at
 * an uncompressed offset. A whole blob is checked against its digest while produced; its last
 * chunk waits for the check, and a mismatch throws instead (the caller aborts the transfer),
 * so a client never gets a whole blob with wrong bytes. A range starts at the block holding
 * it where the format has blocks.
 */
export async function* produce(
  tarFrom: (offset: number, check?: TarCheck) => Promise<Tar>, p: Profile, target: Target, rep: Reproduction, range?: { start: number; end: number }, pool?: BlockPool,
): AsyncGenerator<Uint8Array> {
  const offsets = rep.blockOffsets;
  if (range && p.blockSize && offsets && offsets.length > 1) {
    let k = 0;
    while (k + 1 < offsets.length && offsets[k + 1] <= range.start) k++;
    if (k > 0) {
      const tar = await tarFrom(k * p.blockSize - PGZIP_TAIL_SIZE);
      yield* window(pgzipFromBlock(tar, p.blockSize, pool, Buffer.from(rep.trailer, 'hex')), offsets[k], range.start, range.end);
      return;
    }
  }
  // A whole blob is checked against its digest below, which any wrong tar byte would fail: the
  // tar's own SHA-256 (a sixth of the CPU) would only repeat that. A range is not: its files
  // are checked against their CRC-64s as they are read.
  const e = encode(await tarFrom(0, range ? 'crc' : 'caller'), p, pool, Buffer.from(rep.trailer, 'hex'));
  if (range) {
    yield* window(e.chunks, 0, range.start, range.end);
    return;
  }
  const h = createHash('sha256');
  let n = 0;
  let held: Uint8Array | undefined;
  for await (const b of e.chunks) {
    h.update(b);
    n += b.length;
    if (held) yield held;
    held = b;
  }
  const got = 'sha256:' + h.digest('hex');
  if (got !== target.digest || n !== target.size) throw new Error(`recompressed blob is ${got} (${n} bytes), not ${target.digest}: aborted`);
  if (held) yield held;
}
