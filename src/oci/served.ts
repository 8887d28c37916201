// Blobs csreg makes on request (layer tars rebuilt from the store's files, original blobs
// recompressed by a recipe) cost CPU and thousands of file reads each time; a file costs one
// read. So a whole blob is made once into a file in csreg's state (single flight): every
// request for it while it is being made reads that file as it grows, and later requests read
// the kept file, until the size limit evicts it (least recently used first). It is a bounded
// cache, not a second copy of the store: files are keyed by content digest (never stale), and
// served only for blobs the resolver still finds in the store. Readers close behind the maker
// take its latest bytes from memory, and the maker keeps pace with its fastest reader for a
// while, so a first pull costs about what streaming from the store does (a 315 MB layer tar to
// curl: 770 ms, 990 ms of CPU, reading the file back; 440 ms, 620 ms of CPU from memory;
// 340 ms uncached).
//
// Never a wrong whole blob: producers fail rather than end with bytes that miss the digest,
// readers of a file being made get its last byte only once it is complete, and a kept file is
// hashed on its first read by this process and again whenever its inode, size or ctime change.
import { close, closeSync, mkdirSync, openSync, promises as fsp, read, readdirSync, renameSync, rmSync, statfsSync, statSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BlobCache, type KeptFile } from './blob-cache.js';
import { alignedBuffer } from '../storage/syscalls.js';

export type Range = { start: number; end: number };
/** Makes the blob (or a range of it) from the store. */
export type Make = (range?: Range) => Promise<Readable>;

/** read size of a file being made */
const CHUNK = 256 << 10;
/** leave at least this much of the state directory's filesystem free */
const MIN_FREE = 1 << 30;
/** after a failed write (disk full?), make blobs directly for this long */
const PAUSE_MS = 60_000;

export interface ServedBlobsOptions {
  /** keep at most this many bytes; 0 turns the cache (and single flight) off */
  maxBytes: number;
  onError?: (msg: string, fields: Record<string, unknown>) => void;
}

export class ServedBlobs {
  readonly cache: BlobCache;
  private readonly making = new Map<string, Spool>();
  private pausedUntil = 0;

  constructor(dir: string, private readonly opts: ServedBlobsOptions) {
    this.cache = new BlobCache(dir, {
      maxBytes: opts.maxBytes,
      graceMs: 0,
      onMismatch: (digest, file) => {
        rmSync(file, { force: true }); // the next request makes it again
        opts.onError?.('a kept blob did not match its digest: removed', { digest });
      },
    });
    removeStale(this.cache.tmp);
  }

  /** The blob's bytes (or a range): the kept file, the file being made, or made now. */
  async open(digest: string, size: number, make: Make, range?: Range): Promise<Readable | KeptFile> {
    if (this.cache.size(digest) === size) {
      const kept = this.cache.open(digest, range);
      if (kept) return kept;
    }
    if (range) return make(range); // the store seeks to a range far cheaper than making the whole
    if (!/^sha256:[a-f0-9]{64}$/.test(digest)) return make(); // kept files are named by sha256
    const spool = this.making.get(digest) ?? this.start(digest, size, make);
    return spool ? spool.reader() : make();
  }

  private worthKeeping(size: number): boolean {
    if (!this.opts.maxBytes || size > this.opts.maxBytes || Date.now() < this.pausedUntil) return false;
    try {
      mkdirSync(this.cache.tmp, { recursive: true, mode: 0o700 });
      const fs = statfsSync(this.cache.tmp);
      const free = fs.bavail * fs.bsize;
      return free - size > Math.max(MIN_FREE, fs.blocks * fs.bsize * 0.05);
    } catch {
      return false;
    }
  }

  /** Move a finished file whose bytes have the digest into the kept files. */
  private keepFile(file: string, digest: string): void {
    mkdirSync(this.cache.dir, { recursive: true, mode: 0o700 });
    renameSync(file, join(this.cache.dir, digest.slice(digest.indexOf(':') + 1)));
    this.cache.trust(digest);
  }

  /**
   * A file to write a blob of about `size` bytes into while it is made elsewhere (a recipe
   * worker compressing a layer for `--synthesize gzip`), when one is worth keeping now; then
   * adopt() it, or remove it.
   */
  reserve(size: number): string | undefined {
    return this.worthKeeping(size) ? join(this.cache.tmp, randomUUID()) : undefined;
  }

  /** Keep a reserved file, written whole, whose bytes have the digest (the maker hashed them as it wrote). */
  async adopt(file: string, digest: string): Promise<void> {
    try {
      this.keepFile(file, digest);
      await this.cache.enforceLimit();
    } catch (e) {
      rmSync(file, { force: true });
      this.opts.onError?.('keeping a blob failed', { digest, error: (e as Error).message });
    }
  }

  private start(digest: string, size: number, make: Make): Spool | undefined {
    if (!this.worthKeeping(size)) return undefined;
    const spool = new Spool(join(this.cache.tmp, randomUUID()), size);
    this.making.set(digest, spool);
    void (async () => {
      try {
        await spool.fill(await make());
        this.keepFile(spool.file, digest);
        this.making.delete(digest); // from now on requests find the kept file
        spool.finish();
        await this.cache.enforceLimit();
      } catch (e) {
        this.making.delete(digest);
        spool.fail(e as Error);
        rmSync(spool.file, { force: true });
        const ours = e instanceof SpoolWriteError; // the disk's fault (full?), not the blob's
        if (ours) this.pausedUntil = Date.now() + PAUSE_MS;
        this.opts.onError?.('making a blob failed', { digest, error: (e as Error).message, ...(ours ? { pausedMs: PAUSE_MS } : {}) });
      }
    })();
    return spool;
  }
}

class SpoolWriteError extends Error {
  override name = 'SpoolWriteError';
}

/** Files a stopped csreg left half-made (one being made is written to at least every few seconds). */
function removeStale(dir: string, olderThanMs = 600_000): void {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    try {
      if (Date.now() - statSync(join(dir, n)).mtimeMs > olderThanMs) rmSync(join(dir, n), { force: true });
    } catch { /* gone meanwhile */ }
  }
}

/**
 * The bytes most recently made stay in memory, for readers close behind the maker: they take
 * them from there instead of reading the file back (which cost as much CPU as writing it).
 */
const WINDOW = 8 << 20;
/** writes to the file in flight at once, per blob */
const WRITES_AHEAD = 4;
/**
 * Bytes all blobs being made may hold in memory (windows and writes in flight): many made at
 * once (a fresh csreg, clients pulling different images' tar layers) share this, their
 * readers reading the file back beyond it, and their makers waiting for their writes.
 */
const ALL_WINDOWS = 32 << 20;
let held = 0;
/**
 * The maker waits for its fastest reader to come within WINDOW (so that reader takes every
 * byte from memory), but for at most this long in all: the layer's read lock is held until
 * the blob is made, and a slow client must not hold podman's writers back for long.
 */
const PACE_BUDGET_MS = 2000;

/** Reads of blobs being made, from memory and from the file, and the bytes held now (tests check them). */
const spoolReads = { memory: 0, file: 0 };
export const servedSpoolReads = (): Readonly<typeof spoolReads & { held: number }> => ({ ...spoolReads, held });

/** A file being written once and read by any number of readers, each at its own pace. */
class Spool {
  /** bytes the maker has given (readable from memory while in the window) */
  private received = 0;
  /** bytes in the file (a prefix: writes finish in any order) */
  private written = 0;
  private done = false;
  private failed?: Error;
  private waiting: (() => void)[] = [];
  /** the latest chunks made, in order, from the first not yet written or within WINDOW of the end */
  private recent: { at: number; buf: Buffer }[] = [];
  private recentBytes = 0;
  /** each open reader's position */
  private readonly readers = new Set<{ pos: number }>();

  constructor(readonly file: string, readonly size: number) {
    closeSync(openSync(file, 'w', 0o600)); // exists from now on: readers open it at once
  }

  /** Copy the producer's stream into the file; it must end with exactly `size` bytes. */
  async fill(src: Readable): Promise<void> {
    const fh = await fsp.open(this.file, 'r+');
    const writes: { end: number; done: boolean; p: Promise<void> }[] = [];
    let writeError: Error | undefined;
    let paced = 0;
    try {
      for await (const chunk of src as AsyncIterable<Buffer>) {
        if (this.received + chunk.length > this.size) throw new Error(`more than the blob's ${this.size} bytes`);
        const at = this.received;
        this.received += chunk.length;
        this.recent.push({ at, buf: chunk });
        this.recentBytes += chunk.length;
        held += chunk.length;
        const w = { end: this.received, done: false, p: Promise.resolve() };
        w.p = fh.write(chunk, 0, chunk.length, at).then(
          () => {
            w.done = true;
            while (writes.length && writes[0].done) this.written = writes.shift()!.end;
            this.trim();
            this.wake();
          },
          (e: Error) => void (writeError ??= new SpoolWriteError(`writing ${this.file}: ${e.message}`)),
        );
        writes.push(w);
        this.wake();
        // (a failed write stays first in the queue: stop at once)
        while (!writeError && (writes.length >= WRITES_AHEAD || (held > ALL_WINDOWS && writes.length))) await writes[0].p;
        if (writeError) throw writeError;
        // pace: the fastest reader within WINDOW, while the time budget lasts (and the memory
        // one: over it, windows are dropped as written, and a reader reads the file back)
        while (paced < PACE_BUDGET_MS && held <= ALL_WINDOWS && this.readers.size && Math.max(...[...this.readers].map((r) => r.pos)) < this.received - WINDOW) {
          const t0 = Date.now();
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([this.changed(), new Promise((r) => (timer = setTimeout(r, PACE_BUDGET_MS - paced)))]);
          clearTimeout(timer);
          paced += Date.now() - t0;
        }
      }
      await Promise.all(writes.map((w) => w.p));
      if (writeError) throw writeError;
      if (this.written !== this.size) throw new Error(`${this.written} bytes, not the blob's ${this.size}`);
    } catch (e) {
      src.destroy();
      await Promise.all(writes.map((w) => w.p));
      throw e;
    } finally {
      await fh.close();
    }
  }

  /** Drop chunks that are in the file and more than WINDOW behind the newest byte (or all of them, over ALL_WINDOWS). */
  private trim(): void {
    while (this.recent.length) {
      const c = this.recent[0];
      if (c.at + c.buf.length > this.written || (this.recentBytes - c.buf.length < WINDOW && held <= ALL_WINDOWS)) break;
      this.recent.shift();
      this.recentBytes -= c.buf.length;
      held -= c.buf.length;
    }
  }

  private dropWindow(): void {
    held -= this.recentBytes;
    this.recent = [];
    this.recentBytes = 0;
  }

  /** The made bytes from pos (up to limit) that are still in memory. */
  private fromMemory(pos: number, limit: number): Buffer | undefined {
    for (const c of this.recent) {
      if (pos >= c.at && pos < c.at + c.buf.length) return c.buf.subarray(pos - c.at, Math.min(c.buf.length, limit - c.at));
    }
    return undefined;
  }

  finish(): void {
    this.done = true;
    this.dropWindow();
    this.wake();
  }

  fail(e: Error): void {
    this.failed = e;
    this.dropWindow();
    this.wake();
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = [];
    for (const f of w) f();
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** The blob from its first byte; the last byte only once the whole is made and complete. */
  reader(): Readable {
    // opened now: the file is renamed into the cache when done, and an open fd still reads it
    const fd = openSync(this.file, 'r');
    const me = { pos: 0 };
    this.readers.add(me);
    let reading: Promise<number> | undefined;
    const pump = async (): Promise<void> => {
      for (;;) {
        if (out.destroyed) return;
        if (this.failed) return void out.destroy(this.failed);
        const ready = this.done ? this.size : Math.min(this.received, this.size - 1);
        const mem = me.pos < ready ? this.fromMemory(me.pos, ready) : undefined;
        if (mem) {
          spoolReads.memory++;
          me.pos += mem.length;
          this.wake(); // (a maker pacing itself waits for this)
          out.push(mem);
          return;
        }
        const inFile = Math.min(ready, this.written);
        if (me.pos < inFile) {
          const buf = alignedBuffer(Math.min(CHUNK, inFile - me.pos));
          reading = new Promise<number>((resolve, reject) => read(fd, buf, 0, buf.length, me.pos, (err, n) => (err ? reject(err) : resolve(n))));
          const n = await reading.finally(() => (reading = undefined));
          spoolReads.file++;
          me.pos += n;
          this.wake();
          out.push(buf.subarray(0, n));
          return;
        }
        if (this.done) return void out.push(null);
        await this.changed();
      }
    };
    const out = new Readable({
      highWaterMark: CHUNK,
      read: () => void pump().catch((e: Error) => out.destroy(e)),
      destroy: (err, cb) => {
        this.readers.delete(me);
        this.wake();
        // never close the fd under a read in flight: its number could be reused meanwhile
        void (reading ?? Promise.resolve()).catch(() => undefined).then(() => close(fd, () => cb(err)));
      },
    });
    return out;
  }
}
