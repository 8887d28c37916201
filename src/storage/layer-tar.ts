// Rebuilding a layer's exact uncompressed tar from its tar-split and the layer's files, as
// c/storage's Diff does, but checked harder: every file is read to exactly its recorded size,
// a full stream is hashed while produced (its last batch held back until the digest matches),
// and ranges (or layers without a recorded digest) check each file's CRC-64; any mismatch
// destroys the stream with an error, so a consumer can never take wrong bytes for a clean end.
// A caller that checks what it makes of the whole tar against a digest known in advance (a
// recompressed original blob) asks for no check here (TarCheck 'caller').
import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, read, readSync, readvSync, realpathSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { Readable } from 'node:stream';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Crc64 } from './crc64.js';
import { alignableBuffer, alignedBuffer, alignedView, cachedReadsWork, closeFd, openBeneath, pread, readCached } from './syscalls.js';
import { readTarSplitBatches, type TarSplitEntry } from './tarsplit.js';

export class LayerVerifyError extends Error {
  override name = 'LayerVerifyError';
}

export interface LayerTarOptions {
  layerId: string;
  tarSplitPath: string;
  /** directories the names resolve in, nearest first (overlay: diff, then lowers; vfs: the layer dir) */
  contentRoots: string[];
  diffDigest?: string;
  diffSize?: number;
  start?: number;
  /** exclusive */
  end?: number;
  /** called exactly once when the stream ends, fails or is destroyed */
  onClose?: () => void;
  /** open files with the realpath checks used where the kernel has no openat2, even where it does (tests) */
  checkedOpens?: boolean;
  /** how the bytes are checked (default: 'digest' for a whole tar, 'crc' for a range) */
  check?: TarCheck;
  /** the size of the pieces large files are read in (default: by the streams open, below) */
  readPiece?: number;
}

/**
 * 'digest': a whole tar's SHA-256 against the layer's diff digest, its last chunk held back
 * until it matches (files' CRC-64s where no digest is recorded). 'crc': each file against its
 * tar-split CRC-64, as it is read (for a consumer that may stop before the end). 'caller': no
 * check here, for a caller that checks what it makes of the whole tar against a digest known
 * in advance (a recompressed original blob), which no wrong tar byte can pass.
 */
export type TarCheck = 'digest' | 'crc' | 'caller';

/**
 * Large files are read in pieces of this size, one piece ahead, while at most FEW_STREAMS layer
 * streams are open: into fresh memory (layerTarStream), per-piece costs were a fifth of a
 * large-file layer's time at 256 KiB, and a first fetch through the served-blob cache, which
 * writes each piece to its file, 20% slower...
 */
const READ_CHUNK = 1 << 20;
/**
 * ...and of this size beyond, or into reused memory (layerTarChunks), where the pieces in
 * circulation (read ahead, hashed, held back, taken) then stay in the CPU's caches between the
 * pool thread's copy and the hash: the 315 MB bench layer in process 241-248 -> 205-221 ms,
 * sent uncached to curl (two runs of 8 fetches) median ~0.345 -> ~0.29 s, spread wider
 * (0.24-0.41). Beyond FEW_STREAMS it is about what 32 concurrent pulls can afford (bench:
 * < 256 MB RSS).
 */
const SMALL_READ_CHUNK = 256 << 10;
const FEW_STREAMS = 4;
let openStreams = 0;
/**
 * Stretches (about BATCH each) at the reader thread at once, per stream: with one, the two
 * threads took turns (each a third idle); four keep both busy, for up to ~1 MiB more per stream.
 */
const READS_AHEAD = 4;
/** Output is gathered into chunks of about this size: headers, padding and small files in one buffer. */
const BATCH = 256 << 10;
/**
 * Files up to this size are read whole, with synchronous calls on the reader thread, straight
 * into the output chunk: from the page cache that takes microseconds, less than a thread-pool
 * round trip per open, read and close (measured: 2-3x the throughput of reading them ahead in
 * parallel through the thread pool on a layer of small files).
 */
const SMALL_FILE = 256 << 10;
/**
 * Small files open at once while their reads wait for a disk (Resolver.readFiles): a layer of
 * 30,000 small files not in the page cache, read one after another, waits on each. With the
 * two reader threads, waves of 16, 32, 64 and 128 files took 0.9, 0.87, 0.8 and 0.8 s there;
 * three threads may each hold a wave's descriptors at once.
 */
const WAVE = 64;

// Plain file descriptors through the callback API: FileHandle objects cost more to create
// and close than reading a small file does (measured: half the CPU of a small-file layer).
const readFd = (fd: number, buf: Buffer, off: number, len: number, pos: number) => new Promise<number>((ok, fail) => read(fd, buf, off, len, pos, (e, n) => (e ? fail(e) : ok(n))));

/** Linux's O_CLOEXEC (x86, arm, riscv): Node's own opens add it, openat2 is told */
const O_CLOEXEC = 0o2000000;
// O_NONBLOCK: a FIFO where a file should be (a damaged store) fails its read at once instead
// of holding the reader thread, and every stream behind it, until someone writes to it (no
// effect on a regular file's reads)
const O_FILE = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const O_DIR = constants.O_RDONLY | constants.O_DIRECTORY;
const ENOENT = -osConstants.errno.ENOENT;
const ENOTDIR = -osConstants.errno.ENOTDIR;
const ELOOP = -osConstants.errno.ELOOP;
const EXDEV = -osConstants.errno.EXDEV;
const errnoNames = new Map(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));
/** An error for a failed call given as -errno, with Node's `code` (ENOENT...). */
function errnoError(what: string, negErrno: number): Error {
  const code = errnoNames.get(-negErrno);
  return Object.assign(new Error(`${what}: ${code ?? negErrno}`), { code });
}
/** Does this thread open through openat2 (Linux 5.6+, not refused by a seccomp filter)? Learned on first use. */
let beneath: boolean | undefined;
/** What this thread learned: true = openat2, false = realpath checks, undefined = nothing opened yet. */
export const opensBeneath = (): boolean | undefined => beneath;
const SLASH_DOT = Buffer.from('/.');

/** A name made of its bytes and a NUL, as the open calls take it. */
function cName(name: Buffer): Buffer {
  const z = Buffer.allocUnsafe(name.length + 1);
  name.copy(z);
  z[name.length] = 0;
  return z;
}

/**
 * Resolves tar-split names inside the content roots, refusing ".." and symlinks that leave
 * them. With openat2 the kernel keeps each open below its root (RESOLVE_BENEATH), in one call
 * per file and with no gap between a check and the open (through koffi: half the cost of
 * Node's openSync on a layer of small files); without it, each directory is checked with
 * realpath (cached) before an open that refuses a final symlink.
 */
class Resolver {
  private readonly realRoots: string[];
  private readonly dirOk = new Map<string, boolean>();
  /** Did the current wave's first small file miss the page cache (readFiles)? */
  private waits = false;
  /** root directory descriptors for openat2, opened on first use (-errno: unusable), closed by release() */
  private dirs: number[] = [];

  /** checked: the realpath checks even where openat2 exists (tests run both ways) */
  constructor(readonly roots: string[], readonly layerId: string, private readonly checked = false) {
    this.realRoots = roots.map((r) => {
      try {
        return realpathSync(r);
      } catch {
        return r;
      }
    });
  }

  private rel(name: Buffer): string {
    const parts = name.toString('latin1').split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) throw new LayerVerifyError(`layer ${this.layerId}: tar-split name ${JSON.stringify(name.toString())} contains ".."`);
    return parts.join('/');
  }

  /** The directory part of the path must resolve (through any symlinks) inside its root. */
  private insideRoot(i: number, rel: string): boolean {
    const slash = rel.lastIndexOf('/');
    if (slash < 0) return true;
    const key = `${i}\0${rel.slice(0, slash)}`;
    let ok = this.dirOk.get(key);
    if (ok === undefined) {
      try {
        const real = realpathSync(Buffer.from(`${this.roots[i]}/${rel.slice(0, slash)}`, 'latin1')).toString();
        ok = real === this.realRoots[i] || real.startsWith(this.realRoots[i] + '/');
      } catch {
        ok = true; // missing here: the open below fails with ENOENT and the next root is tried
      }
      this.dirOk.set(key, ok);
    }
    return ok;
  }

  private dir(i: number): number {
    let d = this.dirs[i];
    if (d === undefined) {
      try {
        d = openSync(this.roots[i], O_DIR);
      } catch (e) {
        d = -((e as NodeJS.ErrnoException).errno ?? 1);
      }
      this.dirs[i] = d;
    }
    return d;
  }

  /** Close the root directories openat2 used (a later open reopens them). */
  release(): void {
    for (const d of this.dirs) if (d >= 0) closeSync(d);
    this.dirs = [];
  }

  /**
   * Close a descriptor open() gave, as it was opened: Node tracks the descriptors its fs opens
   * in a worker thread, and warns (slowly) when one comes back from elsewhere under a number it
   * still holds.
   */
  close(fd: number): void {
    if (this.viaKoffi()) closeFd(fd);
    else closeSync(fd);
  }

  /** Are descriptors opened (and read) through koffi's openat2? Settled before the first open returns. */
  private viaKoffi(): boolean {
    return !this.checked && beneath === true;
  }

  private missing(name: Buffer): LayerVerifyError {
    return new LayerVerifyError(`layer ${this.layerId}: file ${JSON.stringify(name.toString())} is missing from the layer`);
  }

  private outside(name: Buffer): LayerVerifyError {
    return new LayerVerifyError(`layer ${this.layerId}: ${JSON.stringify(name.toString())} resolves outside the layer`);
  }

  /** A read failed: ESPIPE is what a positioned read of a FIFO or socket gives. */
  readFailed(name: Buffer, e: Error): Error {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ESPIPE' ? new LayerVerifyError(`layer ${this.layerId}: ${JSON.stringify(name.toString())} is not a regular file`) : e;
  }

  private symlink(name: Buffer): LayerVerifyError {
    return new LayerVerifyError(`layer ${this.layerId}: ${JSON.stringify(name.toString())} is a symlink, expected a regular file`);
  }

  /** Open the file a name (its bytes and a NUL: cName) stands for, read-only; synchronous (a path lookup costs less than a thread-pool round trip). */
  open(z: Buffer): number {
    const name = z.subarray(0, z.length - 1);
    // a NUL would end the name early for the kernel (and is a TypeError for Node's open)
    if (z.indexOf(0) !== name.length) throw new LayerVerifyError(`layer ${this.layerId}: tar-split name ${JSON.stringify(name.toString())} contains a NUL byte`);
    if (!this.checked && beneath !== false) {
      // names are mostly plain ("usr/bin/x"); "./x", "/x", "x/", "a//b", "a/./b", "a/../b" are normalized (and ".." refused) first
      const plain = z[0] !== 0x2f && z[0] !== 0x2e && z[name.length - 1] !== 0x2f && z.indexOf(SLASH_DOT) < 0 && !name.includes('//');
      const path = plain ? z : Buffer.from(`${this.rel(name)}\0`, 'latin1');
      for (let i = 0; i < this.roots.length; i++) {
        const d = this.dir(i);
        if (d === ENOENT || d === ENOTDIR) continue;
        if (d < 0) throw errnoError(`open ${this.roots[i]}`, d);
        let fd: number;
        try {
          fd = openBeneath(d, path, O_FILE | O_CLOEXEC);
        } catch {
          fd = -osConstants.errno.ENOSYS; // no koffi for this platform
        }
        if (fd >= 0) return (beneath = true), fd;
        if (fd === ENOENT || fd === ENOTDIR) continue;
        if (fd === ELOOP) throw this.symlink(name);
        if (fd === EXDEV) throw this.outside(name);
        if (!beneath && (fd === -osConstants.errno.ENOSYS || fd === -osConstants.errno.EPERM)) {
          beneath = false; // this kernel (or its seccomp filter) has no openat2: the checks below
          this.release();
          return this.open(z);
        }
        throw errnoError(`open ${this.roots[i]}/${name.toString()}`, fd);
      }
      throw this.missing(name);
    }
    const rel = this.rel(name);
    for (let i = 0; i < this.roots.length; i++) {
      if (!this.insideRoot(i, rel)) throw this.outside(name);
      try {
        return openSync(Buffer.from(`${this.roots[i]}/${rel}`, 'latin1'), O_FILE);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        if (code === 'ELOOP') throw this.symlink(name);
        throw e;
      }
    }
    throw this.missing(name);
  }

  /**
   * Read a job's small files whole into buf (file k into buf[ats[k], ats[k] + sizes[k])), each
   * checked to have exactly its size. Through koffi, a wave of files is opened and read from
   * the page cache only (preadv2 RWF_NOWAIT, the same one call as a plain read); the files that
   * were not there are read, with waiting reads, only once the whole wave is open: the kernel
   * was asked for all their pages by then (a RWF_NOWAIT miss starts the file's readahead), so a
   * cold layer's reads go to the disk side by side instead of one after another (the bench's
   * small-file layer, page cache dropped: 2.0-2.2 -> 1.1 s with one thread). Returns whether
   * any missed.
   */
  readFiles(names: Buffer, nameAts: number[], sizes: number[], ats: number[], buf: Buffer, spare: Buffer): boolean {
    const name = (k: number) => names.subarray(nameAts[k], nameAts[k + 1] ?? names.length);
    const late: number[] = []; // pairs: file index, descriptor
    let missed = false;
    try {
      for (let w = 0; w < sizes.length; w += WAVE) {
        for (let k = w; k < Math.min(sizes.length, w + WAVE); k++) {
          const fd = this.open(name(k));
          let read = false;
          try {
            // (a RWF_NOWAIT read costs twice a plain one through koffi: only a wave's first file
            // is read that way unless it missed the page cache)
            read = this.readAll(fd, name(k), sizes[k], buf, ats[k], spare, (k === w || this.waits) && this.viaKoffi() && cachedReadsWork());
          } finally {
            if (read) this.close(fd);
            else late.push(k, fd);
          }
          if (k === w) this.waits = !read;
          missed ||= !read;
        }
        while (late.length) {
          const [k, fd] = late.splice(0, 2);
          try {
            this.readAll(fd, name(k), sizes[k], buf, ats[k], spare, false);
          } finally {
            this.close(fd);
          }
        }
      }
    } finally {
      for (let i = 1; i < late.length; i += 2) this.close(late[i]);
    }
    return missed;
  }

  /** Read a file whole into buf[at, at + size); cachedOnly: false (nothing read) where its first bytes are not in the page cache. */
  private readAll(fd: number, z: Buffer, size: number, buf: Buffer, at: number, spare: Buffer, cachedOnly: boolean): boolean {
    let n: number;
    if (this.viaKoffi()) {
      // through koffi as the open: one pread into the place, and one at the end that must find
      // nothing; where the buffer goes on past the place (the tar's padding or next header,
      // copied in already), one pread of size + 1 does both: a byte read there means a longer
      // file and a failed stream (an open, a read and a close: the reader thread is syscall-bound)
      n = 0;
      let ended = false;
      if (size) {
        const ask = at + size < buf.length ? size + 1 : size;
        n = cachedOnly ? readCached(fd, buf.subarray(at), ask, 0) : pread(fd, buf.subarray(at), ask, 0);
        if (n < 0 && cachedOnly) return false; // (an error shows again in the waiting read)
        if (n < 0) throw this.readFailed(z.subarray(0, -1), errnoError(`read ${z.subarray(0, -1).toString()}`, n));
        ended = ask > size && n === size; // (n < size: short, read on)
      }
      for (let got = 1; n < size && got > 0; n += got) {
        got = pread(fd, n ? buf.subarray(at + n) : buf.subarray(at), size - n, n);
        if (got < 0) throw this.readFailed(z.subarray(0, -1), errnoError(`read ${z.subarray(0, -1).toString()}`, got));
      }
      if (n === size && !ended && pread(fd, spare, 1, size) > 0) n++;
    } else {
      // one readv(2) into the place and a spare byte: exactly `size` of the size + 1 asked is the end
      try {
        n = readvSync(fd, [buf.subarray(at, at + size), spare], 0);
      } catch (e) {
        throw this.readFailed(z.subarray(0, -1), e as Error);
      }
      if (n < size) {
        // short: the end, or a filesystem (FUSE, network) that returns less than asked; read on
        for (let more = 1; n < size && more; n += more) more = readSync(fd, buf, at + n, size - n, n);
        if (n === size && readSync(fd, spare, 0, 1, size)) n++;
      }
    }
    if (n !== size) throw new LayerVerifyError(`layer ${this.layerId}: file ${JSON.stringify(z.subarray(0, -1).toString())} has ${n > size ? 'more than ' : ''}${n > size ? size : n} bytes, expected ${size}`);
    return true;
  }
}

type FileEntry = Extract<TarSplitEntry, { kind: 'file' }>;

// Small files are opened and read on a worker thread: the open/read/close system calls were
// half of a small-file layer's main-thread time, and the thread pool costs more per file than
// the calls themselves (measured: 2-3x slower). The main thread meanwhile parses the tar-split,
// copies the raw segments and hashes. One reader serves every stream (two once files had to
// be waited for); a job is one stretch of segments and small files, read into shared memory
// that becomes the output chunk.
const READER = 'csreg-layer-reader';
/** names: each file's name bytes and a NUL, one after the other (name i starts at nameAts[i]); bufAt: where in buf the stretch starts (ats count from there) */
interface ReadJob { id: number; layerId: string; roots: string[]; checked: boolean; buf: SharedArrayBuffer; bufAt: number; names: Uint8Array; nameAts: number[]; sizes: number[]; ats: number[] }
/** missed: some files were not in the page cache */
interface ReadDone { id: number; missed: boolean; error?: { message: string; code?: string; verify: boolean } }

/** Read a job's small files into its shared buffer; the error, if any, as it crosses threads. */
function readJob(job: Omit<ReadJob, 'id'>, resolvers: Map<string, Resolver>, spare: Buffer): Omit<ReadDone, 'id'> {
  try {
    const key = `${job.layerId}\0${job.checked}\0${job.roots.join('\0')}`;
    let res = resolvers.get(key);
    if (!res) {
      if (resolvers.size >= 64) resolvers.clear(); // only a cache of directory checks
      resolvers.set(key, (res = new Resolver(job.roots, job.layerId, job.checked)));
    }
    const buf = Buffer.from(job.buf, job.bufAt);
    const names = Buffer.from(job.names.buffer, job.names.byteOffset, job.names.length);
    try {
      return { missed: res.readFiles(names, job.nameAts, job.sizes, job.ats, buf, spare) };
    } finally {
      res.release();
    }
  } catch (e) {
    return { missed: false, error: { message: (e as Error).message, code: (e as NodeJS.ErrnoException).code, verify: e instanceof LayerVerifyError } };
  }
}

function readError(error: NonNullable<ReadDone['error']>): Error {
  return error.verify ? new LayerVerifyError(error.message) : Object.assign(new Error(error.message), { code: error.code });
}

if (!isMainThread && workerData === READER) {
  const resolvers = new Map<string, Resolver>();
  const spare = Buffer.alloc(1);
  parentPort!.on('message', (job: ReadJob) => {
    parentPort!.postMessage({ id: job.id, ...readJob(job, resolvers, spare) } satisfies ReadDone);
  });
}

/**
 * Small files this thread reads itself before it starts the reader thread: a layer of a few
 * thousand files is done before that thread would be up and warm (a CLI diff of the bench's
 * 2,000-file layer: 233 → 197 ms). Counted per process: a server starts the thread once.
 */
const FILES_BEFORE_THREAD = 4096;
let filesHere = 0;
const hereResolvers = new Map<string, Resolver>();
const hereSpare = Buffer.alloc(1);

/**
 * Stretches read so far by this thread and by the reader threads, and of them those with files
 * that were not in the page cache (tests check every path runs).
 */
const stretchesRead = { here: 0, thread: 0, hereMissed: 0, threadMissed: 0 };
export const layerReads = () => ({ ...stretchesRead, threads: Reader.count() });

function stretchDone(where: 'here' | 'thread', missed: boolean): void {
  stretchesRead[where]++;
  if (missed) stretchesRead[`${where}Missed`]++;
}
/** Have files had to be waited for (then two reader threads, and none read here)? */
const missedOnce = () => stretchesRead.hereMissed + stretchesRead.threadMissed > 0;

function readHere(job: Omit<ReadJob, 'id'>): Promise<void> {
  const { missed, error } = readJob(job, hereResolvers, hereSpare);
  stretchDone('here', missed);
  if (!error) return Promise.resolve();
  const p = Promise.reject(readError(error));
  p.catch(() => undefined); // as in Reader.read
  return p;
}

/**
 * A stretch's small files: read here at first (and while a thread starts), then by the reader
 * threads; by them at once where files were not in the page cache (two threads wait for their
 * opens side by side).
 */
function readSmallFiles(job: Omit<ReadJob, 'id'>): Promise<void> {
  if (!Reader.count() && !missedOnce() && (filesHere += job.sizes.length) <= FILES_BEFORE_THREAD) return readHere(job);
  return Reader.get().read(job);
}

/**
 * Reader threads once files were not in the page cache: each waits for its opens (inodes,
 * directories: not asked for ahead) one at a time. The bench's small-file layer, page cache
 * dropped: 1.1 s with one, 0.8 with two, 0.88-0.93 with four.
 */
const COLD_READERS = 2;

class Reader {
  private static readonly all: Reader[] = [];
  private readonly worker = new Worker(new URL(import.meta.url), { workerData: READER });
  private readonly waiting = new Map<number, { ok: () => void; fail: (e: Error) => void }>();
  private nextId = 1;
  private online = false;

  /** The thread with the fewest stretches out (the first, until one is up), started as needed. */
  static get(): Reader {
    if (Reader.all.length < (missedOnce() ? COLD_READERS : 1)) Reader.all.push(new Reader());
    let best = Reader.all[0];
    for (const r of Reader.all) if (r.online && (!best.online || r.waiting.size < best.waiting.size)) best = r;
    return best;
  }

  /** reader threads started */
  static count(): number {
    return Reader.all.length;
  }

  private constructor() {
    this.worker.once('online', () => (this.online = true));
    this.worker.on('message', ({ id, missed, error }: ReadDone) => {
      const w = this.waiting.get(id);
      this.waiting.delete(id);
      if (!this.waiting.size) this.worker.unref();
      stretchDone('thread', missed);
      if (!error) return w?.ok();
      w?.fail(readError(error));
    });
    const die = (e: Error) => {
      const i = Reader.all.indexOf(this);
      if (i >= 0) Reader.all.splice(i, 1);
      for (const w of this.waiting.values()) w.fail(e);
      this.waiting.clear();
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`layer reader thread exited (${code})`)));
    // ref'd only while a job is out, so it never holds a process open (after the listeners:
    // adding a 'message' listener refs it again)
    this.worker.unref();
  }

  read(job: Omit<ReadJob, 'id'>): Promise<void> {
    // until the thread has started (some 25-80 ms), jobs are done here
    if (!this.online) return readHere(job);
    const id = this.nextId++;
    const p = new Promise<void>((ok, fail) => this.waiting.set(id, { ok, fail }));
    p.catch(() => undefined); // a stream that stopped early never awaits its last job
    if (this.waiting.size === 1) this.worker.ref();
    this.worker.postMessage({ ...job, id } satisfies ReadJob);
    return p;
  }
}

function checkCrc(layerId: string, e: FileEntry, crc: Crc64): void {
  if (e.crc && !crc.digest().equals(e.crc)) throw new LayerVerifyError(`layer ${layerId}: file ${JSON.stringify(e.name)} does not match its tar-split checksum (changed on disk?)`);
}

/** A stretch of the tar (raw segments and small files) read as one job: tar bytes [at, at + buf.length). */
interface Stretch { buf: Buffer; at: number; files: FileEntry[]; fileAts: number[]; done: Promise<void> }

/** Where a rebuild's bytes go: a Readable's buffer (layerTarStream) or an async generator's consumer (layerTarChunks). */
interface Sink {
  /** the consumer is gone: stop */
  readonly stopped: boolean;
  /** take b; resolves once more may be given */
  put(b: Buffer): Promise<void>;
  end(): void;
  fail(e: Error): void;
}

/** The exact uncompressed tar of a layer, or of the byte range [start, end) of it. */
export function layerTarStream(opts: LayerTarOptions): Readable {
  let waiting: (() => void) | undefined;
  const wake = () => {
    const w = waiting;
    waiting = undefined;
    w?.();
  };
  const stream = new Readable({
    highWaterMark: 256 << 10,
    read: wake,
    destroy(err, cb) {
      wake();
      cb(err);
    },
  });
  if (opts.onClose) stream.once('close', opts.onClose);
  openStreams++;
  stream.once('close', () => openStreams--);
  void rebuild(opts, {
    get stopped() {
      return stream.destroyed;
    },
    put: async (b) => {
      if (!stream.push(b)) await new Promise<void>((r) => (waiting = r));
    },
    end: () => void stream.push(null),
    fail: (e) => void stream.destroy(e),
  });
  return stream;
}

/**
 * The same bytes as an async generator whose chunks are each valid only until the next one is
 * asked for: their memory is then read into again. For consumers that write or copy a chunk
 * before going on (a file, pgzip's blocks, a socket's write callback): a fresh buffer per read
 * costs its page faults and cache misses every time (the 315 MB bench layer in process: 286 →
 * 224 ms; `serve`, where glibc maps each large buffer anew, sending it uncached: 0.42–0.47 →
 * 0.37–0.40 s, a quarter less CPU).
 */
export async function* layerTarChunks(opts: LayerTarOptions): AsyncGenerator<Buffer, void, undefined> {
  const pool = new ChunkPool();
  let slot: Buffer | undefined; // made, not yet taken
  let ended = false;
  let failed: Error | undefined;
  let stopped = false;
  let producerWaits: (() => void) | undefined;
  let consumerWaits: (() => void) | undefined;
  const wakeProducer = () => {
    const w = producerWaits;
    producerWaits = undefined;
    w?.();
  };
  const wakeConsumer = () => {
    const w = consumerWaits;
    consumerWaits = undefined;
    w?.();
  };
  openStreams++;
  const made = rebuild(opts, {
    get stopped() {
      return stopped;
    },
    put: async (b) => {
      while (slot && !stopped) await new Promise<void>((r) => (producerWaits = r));
      slot = b;
      wakeConsumer();
    },
    end: () => {
      ended = true;
      wakeConsumer();
    },
    fail: (e) => {
      failed = e;
      wakeConsumer();
    },
  }, pool);
  try {
    for (;;) {
      while (!slot && !ended && !failed) await new Promise<void>((r) => (consumerWaits = r));
      if (slot) {
        const b = slot;
        slot = undefined;
        wakeProducer(); // it makes the next chunk while this one is used
        yield b;
        pool.give(b);
      } else if (failed) throw failed;
      else return;
    }
  } finally {
    stopped = true;
    wakeProducer();
    await made; // (it reads no more files once it has seen `stopped`)
    openStreams--;
    opts.onClose?.();
  }
}

/**
 * The memory layerTarChunks reads into: a buffer goes back once its chunk's consumer has asked
 * for the next chunk. Only buffers of one chunk each are lent (a large file's piece, a
 * stretch), so a chunk given back frees no other chunk's bytes.
 */
class ChunkPool {
  private readonly free = new Map<number, Buffer[]>();
  private readonly lent = new Map<ArrayBufferLike, { raw: Buffer; key: number }>();

  /**
   * `size` bytes of a buffer of `capacity` (shared: a stretch the reader thread fills), starting
   * `phase` bytes past a 64-byte boundary (alignedView)
   */
  take(size: number, capacity: number, shared: boolean, phase = 0): Buffer {
    const key = shared ? -capacity : capacity; // (shared and plain buffers of a size in lists of their own)
    const raw = this.free.get(key)?.pop() ?? alignableBuffer(capacity, shared);
    this.lent.set(raw.buffer, { raw, key });
    return alignedView(raw, size, phase);
  }

  /** The chunk's memory is free again (a chunk of other memory: nothing to do). */
  give(chunk: Uint8Array): void {
    const l = this.lent.get(chunk.buffer);
    if (!l) return;
    this.lent.delete(chunk.buffer);
    const list = this.free.get(l.key) ?? [];
    this.free.set(l.key, list);
    if (list.length < POOL_FREE_MAX) list.push(l.raw);
  }
}
/** free buffers a ChunkPool keeps per size (a stream has about five out at once) */
const POOL_FREE_MAX = 8;
/** a stretch's buffer size in a ChunkPool: a stretch is under BATCH plus its last entry */
const STRETCH_CAPACITY = BATCH + SMALL_FILE;

async function rebuild(opts: LayerTarOptions, sink: Sink, pool?: ChunkPool): Promise<void> {
  const start = opts.start ?? 0;
  const end = opts.end ?? Infinity;
  const whole = start === 0 && end === Infinity;
  const checked = !!opts.checkedOpens;
  const res = new Resolver(opts.contentRoots, opts.layerId, checked);
  const check = opts.check ?? (whole ? 'digest' : 'crc');
  const hash = whole && check === 'digest' ? createHash('sha256') : undefined;
  // A whole tar with a recorded digest is verified by its sha256 before its last bytes go
  // out; the per-file CRC-64s (a third of the CPU) are then redundant: only ranges need them.
  const fileCrcs = check === 'crc' || (check === 'digest' && !(whole && opts.diffDigest));

  let offset = 0; // position in the full tar of the next piece's first byte
  let held: Buffer | undefined; // a whole tar's latest chunk: the last one waits for the digest check

  /** Hash (whole tars) and push the part of the tar bytes b, starting at tar offset `at`, inside the range. */
  const send = async (b: Buffer, at: number) => {
    if (hash) {
      hash.update(b);
      const prev = held;
      held = b;
      if (prev) await sink.put(prev);
      return;
    }
    const lo = Math.max(start, at) - at;
    const hi = Math.min(end, at + b.length) - at;
    if (hi > lo) await sink.put(lo === 0 && hi === b.length ? b : b.subarray(lo, hi));
    else pool?.give(b); // not sent: free at once
  };

  /**
   * Take entries from i on, up to the next large file, as one stretch: raw segments are copied
   * in now, small files go to the reader. Pieces before the range are skipped (not read).
   */
  const stretch = (entries: TarSplitEntry[], i: number): { s?: Stretch; next: number } => {
    let j = i;
    let total = 0;
    let at = -1;
    let o = offset;
    // (about a batch per job: a handful of messages per MiB, and bounded memory)
    for (; j < entries.length && o < end && total < BATCH; j++) {
      const e = entries[j];
      const n = e.kind === 'segment' ? e.payload.length : e.size;
      if (e.kind === 'file' && n > SMALL_FILE) break;
      if (o + n > start && at < 0) at = o;
      if (at >= 0) total += n;
      o += n;
    }
    if (at < 0 || !total) {
      offset = o;
      return { next: j };
    }
    // (file data, which starts at multiples of 512 in the tar, lands on 64-byte boundaries)
    const phase = at % 64;
    const buf = pool && total <= STRETCH_CAPACITY ? pool.take(total, STRETCH_CAPACITY, true, phase) : alignedBuffer(total, true, phase);
    const files: FileEntry[] = [];
    const fileAts: number[] = [];
    const sizes: number[] = [];
    let nameBytes = 0;
    for (let k = i; k < j; k++) {
      const e = entries[k];
      const n = e.kind === 'segment' ? e.payload.length : e.size;
      if (offset >= at && n) {
        const p = offset - at;
        if (e.kind === 'segment') {
          e.payload.copy(buf, p);
        } else {
          files.push(e);
          fileAts.push(p);
          sizes.push(n);
          nameBytes += e.nameBytes.length + 1;
        }
      }
      offset += n;
    }
    // the names as the open calls take them: their bytes (whatever they are), each with a NUL
    const names = Buffer.allocUnsafeSlow(nameBytes); // (not from the pool: a clone would copy all of it)
    const nameAts: number[] = [];
    for (let k = 0, p = 0; k < files.length; k++) {
      nameAts.push(p);
      p += files[k].nameBytes.copy(names, p);
      names[p++] = 0;
    }
    // (the reader thread starts after some thousands of small files: most layers never need it)
    const done = files.length ? readSmallFiles({ layerId: opts.layerId, roots: opts.contentRoots, checked, buf: buf.buffer as SharedArrayBuffer, bufAt: buf.byteOffset, names, nameAts, sizes, ats: fileAts }) : Promise.resolve();
    return { s: { buf, at, files, fileAts, done }, next: j };
  };

  /** A stretch is read: check CRCs (when asked) and send it. */
  const finish = async (s: Stretch) => {
    await s.done;
    if (fileCrcs) s.files.forEach((e, k) => checkCrc(opts.layerId, e, new Crc64().update(s.buf.subarray(s.fileAts[k], s.fileAts[k] + e.size))));
    await send(s.buf, s.at);
  };

  /** A large file: read a piece ahead through the thread pool while the last one is hashed and sent. */
  const streamFile = async (e: FileEntry) => {
    const fd = res.open(cName(e.nameBytes));
    let ahead: Promise<number> | undefined;
    try {
      const crc = fileCrcs ? new Crc64() : undefined;
      const piece = opts.readPiece ?? (openStreams <= FEW_STREAMS && !pool ? READ_CHUNK : SMALL_READ_CHUNK);
      const readAt = (p: number) => {
        const want = Math.min(piece, e.size - p);
        const buf = pool && want ? pool.take(want, piece, false) : alignedBuffer(want || 1);
        // one byte past the end is read too: it shows a file that grew
        return { buf, done: readFd(fd, buf, 0, buf.length, p).catch((err: Error) => Promise.reject(res.readFailed(e.nameBytes, err))) };
      };
      let filePos = 0;
      let cur = readAt(0);
      ahead = cur.done;
      while (filePos < e.size) {
        const n = await cur.done;
        ahead = undefined;
        if (n === 0) throw new LayerVerifyError(`layer ${opts.layerId}: file ${JSON.stringify(e.name)} is shorter than its ${e.size} bytes`);
        const chunk = cur.buf.subarray(0, n);
        filePos += n;
        cur = readAt(filePos);
        ahead = cur.done;
        if (sink.stopped) return;
        crc?.update(chunk);
        await send(chunk, offset);
        offset += n;
      }
      const extra = await cur.done;
      ahead = undefined;
      if (extra) throw new LayerVerifyError(`layer ${opts.layerId}: file ${JSON.stringify(e.name)} is longer than its ${e.size} bytes`);
      if (crc) checkCrc(opts.layerId, e, crc);
    } finally {
      // the descriptor stays open until no read of it is in flight
      await ahead?.catch(() => undefined);
      res.close(fd);
    }
  };

  const run = async () => {
    const batches = readTarSplitBatches(opts.tarSplitPath);
    // A few stretches are with the reader while the next is parsed and the oldest is sent.
    const pending: Stretch[] = [];
    try {
      outer: for await (const entries of batches) {
        for (let i = 0; i < entries.length; ) {
          if (sink.stopped) return;
          if (offset >= end) break outer;
          const e = entries[i];
          if (e.kind === 'file' && e.size > SMALL_FILE) {
            i++;
            if (offset + e.size <= start) {
              offset += e.size; // before the range: not read at all
              continue;
            }
            while (pending.length) await finish(pending.shift()!);
            await streamFile(e);
            continue;
          }
          const { s, next } = stretch(entries, i);
          i = next;
          if (s) pending.push(s);
          if (pending.length > READS_AHEAD) await finish(pending.shift()!);
        }
      }
      while (pending.length) await finish(pending.shift()!);
      if (sink.stopped) return;
      if (whole && opts.diffSize !== undefined && offset !== opts.diffSize) {
        throw new LayerVerifyError(`layer ${opts.layerId}: rebuilt tar has ${offset} bytes, the store records ${opts.diffSize}`);
      }
      if (hash) {
        const digest = 'sha256:' + hash.digest('hex');
        if (opts.diffDigest && digest !== opts.diffDigest) {
          throw new LayerVerifyError(`layer ${opts.layerId}: rebuilt tar has digest ${digest}, the store records ${opts.diffDigest}`);
        }
        if (held) await sink.put(held);
      } else if (start > offset && end === Infinity) {
        throw new LayerVerifyError(`layer ${opts.layerId}: offset ${start} is past the end of the layer (${offset} bytes)`);
      }
      sink.end();
    } catch (e) {
      sink.fail(e instanceof Error ? e : new Error(String(e)));
    } finally {
      res.release();
      await batches.return(undefined);
    }
  };
  await run();
}
