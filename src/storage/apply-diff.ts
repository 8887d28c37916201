// Turning a layer blob into a layer, as c/storage's applyDiffWithOptions does: sniff the
// compression, hash the blob as given (compressed digest) and the decompressed stream
// (diff digest), extract the tar into the driver directory and record a tar-split that
// rebuilds the exact tar. Memory stays bounded: everything streams.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { PassThrough, Transform, type Readable, type Writable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { Crc64 } from './crc64.js';
import type { WhiteoutFormat } from './extract.js';
import { ThreadedExtractor } from './extract-thread.js';
import { COMPRESSION } from './records.js';
import { readTar, TarError } from './tar.js';
import { tarSplitLine } from './tarsplit.js';

export interface DiffResult {
  compression: number;
  compressedDigest: string;
  compressedSize: number;
  diffDigest: string;
  diffSize: number;
  uidset: number[];
  gidset: number[];
}

export interface ApplyOptions {
  /** directory the files go to (overlay `diff`, or the vfs layer directory holding the parent's copy) */
  root: string;
  whiteouts: WhiteoutFormat;
  /** in a rootless store's user namespace (LayerExtractor) */
  userNS?: boolean;
  /** where the tar-split (.tar-split.gz) is written */
  tarSplitPath: string;
}

/**
 * The size of the chunks a layer's tar is best given in, for callers reading a blob from a file
 * (Node's default is 64 KiB) and for gunzip's output (zlib's default is 16 KiB): each is hashed
 * and parsed apart, with costs per chunk.
 */
export const BLOB_READ_CHUNK = 256 << 10;

/** c/storage's sniffing of the first bytes (pkg/archive DetectCompression). */
export function detectCompression(head: Buffer): number {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return COMPRESSION.gzip;
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return COMPRESSION.zstd;
  if (head.length >= 3 && head.toString('latin1', 0, 3) === 'BZh') return COMPRESSION.bzip2;
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return COMPRESSION.xz;
  return COMPRESSION.none;
}

function zstdStream(): Transform {
  const t = new Transform({
    transform(chunk: Buffer, _e, cb) {
      try {
        dec.push(chunk, false);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
    flush(cb) {
      try {
        dec.push(new Uint8Array(0), true);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
  });
  const dec = new ZstdDecompress((c: Uint8Array) => t.push(Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
  return t;
}

/** Resolves once w takes writes again, or is destroyed (and so never will). */
function drainedOrDestroyed(w: Writable): Promise<void> {
  if (w.destroyed) return Promise.resolve();
  return new Promise((ok) => {
    const done = () => {
      w.off('drain', done);
      w.off('close', done);
      ok();
    };
    w.on('drain', done);
    w.on('close', done);
  });
}

/**
 * Apply a layer blob (any supported compression) to opts.root; returns what the layer record
 * needs. The files are made on a thread of their own (extract-thread.ts) while this one reads.
 */
export async function applyDiff(input: AsyncIterable<Buffer> | Readable, opts: ApplyOptions): Promise<DiffResult> {
  // first: if no thread can be had, nothing has started yet
  const extractor = new ThreadedExtractor(opts.root, opts.whiteouts, opts.userNS);
  try {
    return await applyWith(extractor, input, opts);
  } catch (e) {
    // (once the thread has stopped touching the layer: the caller removes it)
    await extractor.abort();
    throw e;
  }
}

async function applyWith(extractor: ThreadedExtractor, input: AsyncIterable<Buffer> | Readable, opts: ApplyOptions): Promise<DiffResult> {
  const compressedHash = createHash('sha256');
  let compressedSize = 0;
  const source = input[Symbol.asyncIterator]();
  const first = await source.next();
  const head: Buffer = first.done ? Buffer.alloc(0) : first.value;
  const compression = detectCompression(head);
  if (compression === COMPRESSION.bzip2 || compression === COMPRESSION.xz) {
    throw new TarError(`layer is compressed with ${compression === COMPRESSION.xz ? 'xz' : 'bzip2'}, which csreg does not accept (gzip, zstd or none)`);
  }
  const decompressor: Transform = compression === COMPRESSION.gzip ? createGunzip({ chunkSize: BLOB_READ_CHUNK }) : compression === COMPRESSION.zstd ? zstdStream() : new PassThrough();
  // An uncompressed blob is its own tar: one hash gives both digests.
  const compressed = compression !== COMPRESSION.none;
  // Feed the blob into the decompressor with backpressure, hashing it (if compressed) on the way.
  // A tar that fails mid-way destroys the decompressor, which then never drains: the feeding
  // stops there and the rest of the blob is left unread (its source closed).
  const feeding = (async () => {
    try {
      for (let r: IteratorResult<Buffer> = first; !r.done; r = await source.next()) {
        if (decompressor.destroyed) {
          await source.return?.();
          return;
        }
        if (compressed) compressedHash.update(r.value);
        compressedSize += r.value.length;
        if (!decompressor.write(r.value)) await drainedOrDestroyed(decompressor);
      }
      if (!decompressor.destroyed) decompressor.end();
    } catch (e) {
      decompressor.destroy(e as Error);
    }
  })();

  const diffHash = createHash('sha256');
  let diffSize = 0;
  async function* tarBytes(): AsyncGenerator<Buffer> {
    for await (const c of decompressor) {
      diffHash.update(c as Buffer);
      diffSize += (c as Buffer).length;
      yield c as Buffer;
    }
  }

  const gz = createGzip({ level: 1 });
  const out = createWriteStream(opts.tarSplitPath, { mode: 0o600 });
  gz.pipe(out);
  // A tar-split that cannot be written (directory gone, disk full) fails the apply; without
  // these listeners the error would be uncaught and take the whole process down.
  let sinkError: Error | undefined;
  out.on('error', (e) => {
    sinkError ??= e;
    gz.destroy(e);
  });
  gz.on('error', (e) => {
    sinkError ??= e;
    out.destroy();
  });
  // Lines are gathered into ~64 KiB writes: each write to a zlib stream is a thread-pool job.
  let lines: string[] = [];
  let pendingChars = 0;
  const flushLines = async () => {
    if (sinkError) throw sinkError;
    if (!lines.length) return;
    const text = lines.join('');
    lines = [];
    pendingChars = 0;
    if (!gz.write(text)) {
      if (sinkError) throw sinkError;
      await once(gz, 'drain');
    }
  };
  const emit = async (line: string) => {
    lines.push(line);
    pendingChars += line.length;
    if (pendingChars >= 64 << 10) await flushLines();
  };
  const seen = new Set<string>();
  let position = 0;
  let current: { name: Buffer; size: number; crc: Crc64 } | undefined;
  let owners!: { uids: number[]; gids: number[] };
  const closeEntry = async () => {
    if (!current) return;
    extractor.end();
    const payload = current.size > 0 ? current.crc.digest() : null;
    await emit(tarSplitLine({ type: 1, name: current.name, size: current.size, payload, position: position++ }));
    current = undefined;
  };
  try {
    for await (const ev of readTar(tarBytes())) {
      if (ev.kind === 'raw') {
        await closeEntry();
        await emit(tarSplitLine({ type: 2, payload: ev.bytes, position: position++ }));
      } else if (ev.kind === 'entry') {
        await closeEntry();
        // tar-split cannot rebuild a tar that names one path twice; c/storage refuses it too.
        const key = ev.header.name.toString('latin1').split('/').filter((p) => p && p !== '.').join('/');
        if (seen.has(key)) throw new TarError(`tar: duplicate entry ${JSON.stringify(ev.header.name.toString())}`);
        seen.add(key);
        current = { name: ev.header.name, size: ev.header.size, crc: new Crc64() };
        await extractor.begin(ev.header);
      } else {
        current!.crc.update(ev.bytes);
        await extractor.write(ev.bytes);
      }
    }
    await closeEntry();
    await flushLines();
    owners = await extractor.finish();
    await feeding;
    gz.end();
    if (!out.closed) await once(out, 'close');
    if (sinkError) throw sinkError;
  } catch (e) {
    decompressor.destroy();
    gz.destroy();
    out.destroy();
    await feeding.catch(() => undefined);
    throw e;
  }
  const diffDigest = 'sha256:' + diffHash.digest('hex');
  return {
    compression,
    compressedDigest: compressed ? 'sha256:' + compressedHash.digest('hex') : diffDigest,
    compressedSize,
    diffDigest,
    diffSize,
    uidset: owners.uids.sort((a, b) => a - b),
    gidset: owners.gids.sort((a, b) => a - b),
  };
}
