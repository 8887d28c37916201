// Sending a verified kept file (csreg's served-blob cache or a pushed blob) to a response:
// read into buffers reused from a small pool, each read again only once the socket has taken
// what it held. A file ReadStream allocates a fresh buffer per chunk: since `serve` has glibc
// return freed memory (mallopt), each one costs a page fault per 4 KiB and its zeroing, a third
// of the CPU of 32 concurrent pulls; without it, the freed buffers stay as RSS. Pieces in the
// page cache are read on this thread: a read through the thread pool wakes a pool thread,
// which on 2 cores takes this one's core (the profile of 32 concurrent pulls had ~9% of the
// main thread inside fs.read's call); only what would wait for a disk goes through the pool.
import { close, open, read } from 'node:fs';
import type { ServerResponse } from 'node:http';
import type { KeptFile } from '../oci/blob-cache.js';
import { alignedBuffer, readCached } from '../storage/syscalls.js';

/** read size: per-chunk costs dominate below this (one stream over loopback: 4.7 GB/s at 1 MiB, 1.45 at 64 KiB), memory above it (32 pulls) */
const BIG = 1 << 20;
const SMALL = 256 << 10;
/** up to this many files being sent at once, each reads BIG pieces */
const FEW = 8;
/** buffers kept for reuse, at most (the rest are left to the GC) */
const POOL_MAX = 48 << 20;

const pool = new Map<number, Buffer[]>();
let pooled = 0;
let sending = 0;

function take(size: number): Buffer {
  const b = pool.get(size)?.pop();
  if (!b) return alignedBuffer(size); // (aligned: reads into it run several times faster)
  pooled -= size;
  return b;
}

function give(b: Buffer): void {
  if (pooled + b.length > POOL_MAX) return;
  pooled += b.length;
  const list = pool.get(b.length) ?? [];
  pool.set(b.length, list);
  list.push(b);
}

/** The file's bytes [pos, pos + n) into b: what is cached, here; the rest through the thread pool. */
async function readPiece(fd: number, b: Buffer, n: number, pos: number): Promise<number> {
  let got = Math.max(readCached(fd, b, n, pos), 0);
  while (got < n) {
    const more = await new Promise<number>((ok, fail) => read(fd, b, got, n - got, pos + got, (e, k) => (e ? fail(e) : ok(k))));
    if (!more) break;
    got += more;
  }
  return got;
}

/**
 * `gone` rejects once the client has closed the connection, which ends a transfer: a write to
 * a destroyed socket never calls back. dispose() stops watching.
 */
function whileConnected(res: ServerResponse): { gone: Promise<never>; dispose: () => void } {
  let left!: (e: Error) => void;
  const gone = new Promise<never>((_, fail) => (left = fail));
  gone.catch(() => undefined);
  const onClose = () => left(new Error('client closed the connection'));
  res.once('close', onClose);
  return { gone, dispose: () => res.removeListener('close', onClose) };
}

/** res.write(b), resolved once the socket has taken b (its memory may then be used again). */
function written(res: ServerResponse, b: Buffer): Promise<void> {
  const w = new Promise<void>((ok, fail) => res.write(b, (e) => (e ? fail(e) : ok())));
  w.catch(() => undefined); // (a client gone first: nobody awaits it)
  return w;
}

/**
 * Write a layer tar's chunks (Store.layerTarChunks: each valid until the next is asked for) to
 * the response (headers already set), each taken by the socket before the next is asked for,
 * and end it; `first` is the chunk already taken. Rejects if the client leaves or the chunks
 * fail; either way the rebuild is stopped (and its lock given back).
 */
export async function sendChunks(res: ServerResponse, chunks: AsyncGenerator<Buffer, void>, first: IteratorResult<Buffer, void>): Promise<void> {
  const { gone, dispose } = whileConnected(res);
  try {
    for (let r = first; !r.done; r = await Promise.race([chunks.next(), gone])) await Promise.race([written(res, r.value), gone]);
    res.end();
  } finally {
    dispose();
    // (a chunk the socket may still hold is never given back: the rebuild ends here)
    void chunks.return(undefined).catch(() => undefined);
  }
}

/** Write the file's bytes [start, end) to the response (headers already set) and end it; rejects if the client leaves or the read fails. */
export async function sendFile(res: ServerResponse, f: KeptFile): Promise<void> {
  const fd = await new Promise<number>((ok, fail) => open(f.path, 'r', (e, fd) => (e ? fail(e) : ok(fd))));
  const size = ++sending <= FEW ? BIG : SMALL;
  const { gone, dispose } = whileConnected(res);
  const bufs = [take(size), take(size)];
  // the write of each buffer in flight (undefined: the buffer is free)
  const writes: (Promise<void> | undefined)[] = [undefined, undefined];
  let reading: Promise<number> | undefined;
  let i = 0;
  try {
    for (let pos = f.start; pos < f.end; i ^= 1) {
      await Promise.race([writes[i], gone]);
      writes[i] = undefined;
      const n = Math.min(size, f.end - pos);
      reading = readPiece(fd, bufs[i], n, pos);
      const got = await Promise.race([reading, gone]);
      reading = undefined;
      if (got !== n) throw new Error(`${f.path}: ${pos + got} bytes, expected ${f.end}`);
      pos += n;
      const b = bufs[i];
      writes[i] = written(res, got === b.length ? b : b.subarray(0, got));
    }
    await Promise.race([Promise.all(writes), gone]);
    writes.fill(undefined);
    res.end();
  } finally {
    dispose();
    sending--;
    // a buffer goes back only once neither the socket nor a read uses it
    for (let k = 0; k < 2; k++) if (!writes[k] && !(reading && k === i)) give(bufs[k]);
    // never close the fd under a read in flight: its number could be reused meanwhile
    void (reading ?? Promise.resolve(0)).catch(() => 0).then(() => close(fd, () => undefined));
  }
}
