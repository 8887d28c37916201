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
import { readCached } from '../storage/syscalls.js';

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
  if (!b) return Buffer.allocUnsafeSlow(size);
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

/** Write the file's bytes [start, end) to the response (headers already set) and end it; rejects if the client leaves or the read fails. */
export async function sendFile(res: ServerResponse, f: KeptFile): Promise<void> {
  const fd = await new Promise<number>((ok, fail) => open(f.path, 'r', (e, fd) => (e ? fail(e) : ok(fd))));
  const size = ++sending <= FEW ? BIG : SMALL;
  // the client leaving ends the transfer: a write to a destroyed socket never calls back
  let left!: (e: Error) => void;
  const gone = new Promise<never>((_, fail) => (left = fail));
  gone.catch(() => undefined);
  const onClose = () => left(new Error('client closed the connection'));
  res.once('close', onClose);
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
      writes[i] = new Promise<void>((ok, fail) => res.write(got === b.length ? b : b.subarray(0, got), (e) => (e ? fail(e) : ok())));
      writes[i]!.catch(() => undefined);
    }
    await Promise.race([Promise.all(writes), gone]);
    writes.fill(undefined);
    res.end();
  } finally {
    res.removeListener('close', onClose);
    sending--;
    // a buffer goes back only once neither the socket nor a read uses it
    for (let k = 0; k < 2; k++) if (!writes[k] && !(reading && k === i)) give(bufs[k]);
    // never close the fd under a read in flight: its number could be reused meanwhile
    void (reading ?? Promise.resolve(0)).catch(() => 0).then(() => close(fd, () => undefined));
  }
}
