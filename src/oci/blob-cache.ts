// Blobs csreg keeps in its own state directory, never among the Go tools' files: verified
// uploads waiting for their manifest, and pushed compressed layer blobs that the store cannot
// reproduce bit for bit (so a pull by the pushed digest still works). Files are named by
// digest and only ever appear whole (written aside, verified, then renamed). A file's mtime
// is its last use: the size limit evicts the least recently used first, but never a blob
// younger than the grace period (a push in flight still needs it).
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, promises as fsp, statSync, utimesSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import type { Store } from '../storage/store.js';
import type { Snapshot } from '../storage/snapshot.js';
import { parseManifest } from './manifest.js';
import { DigestMismatchError, verifying } from './digest.js';
import { StateFile } from './state-file.js';

export interface BlobCacheOptions {
  /** evict least recently used blobs beyond this many bytes (undefined: no limit) */
  maxBytes?: number;
  /** blobs used more recently than this are never evicted or pruned */
  graceMs?: number;
  /** a whole read found the file does not match its digest */
  onMismatch?: (digest: string, file: string) => void;
}

/** A blob file verified by this process, to send as it is: its bytes [start, end). */
export class KeptFile {
  constructor(readonly path: string, readonly start: number, readonly end: number) {}
}

/** a file's last use is recorded at most this often */
const TOUCH_MS = 60_000;

export interface CachedBlob {
  digest: string;
  size: number;
  lastUsed: Date;
}

export class BlobCache {
  readonly dir: string;
  readonly tmp: string;
  readonly maxBytes: number | undefined;
  readonly graceMs: number;
  /** which repositories each blob was pushed (or mounted) to: as distribution links blobs per repository */
  private readonly links: StateFile<Record<string, string[]>>;
  /** stat of each file as it was when this process last verified (or wrote) it */
  private readonly trusted = new Map<string, { ino: number; size: number; ctimeMs: number }>();

  constructor(stateDir: string, private readonly opts: BlobCacheOptions = {}) {
    this.dir = join(stateDir, 'blobs', 'sha256');
    this.tmp = join(stateDir, 'blobs', 'tmp');
    this.maxBytes = opts.maxBytes;
    this.graceMs = opts.graceMs ?? 60 * 60_000;
    this.links = new StateFile(join(stateDir, 'blobs', 'links.json'), () => ({}));
  }

  async link(digest: string, repo: string): Promise<void> {
    if (this.linkedTo(digest, repo)) return;
    await this.links.update((l) => {
      l[digest] = [...(l[digest] ?? []), repo];
    });
  }

  /**
   * Whether the blob was pushed or mounted to the repository. Not whether it is still there: a
   * blob mounted from a store image's repository has no file here (the store serves it), so
   * callers ask the resolver for that.
   */
  linkedTo(digest: string, repo: string): boolean {
    return (this.links.get()[digest] ?? []).includes(repo);
  }

  private path(digest: string): string | undefined {
    const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
    return m ? join(this.dir, m[1]) : undefined;
  }

  /** Size of a cached blob, or undefined. */
  size(digest: string): number | undefined {
    const p = this.path(digest);
    if (!p) return undefined;
    try {
      return statSync(p).size;
    } catch {
      return undefined;
    }
  }

  /**
   * Read a blob (or a range of it) and mark it used (at most once a minute: the LRU order needs
   * no more). A file this process has verified, and whose inode, size and ctime have not changed
   * since, comes back as a KeptFile to send as it is; otherwise a stream that verifies a whole
   * blob as it is read (and fails at its end if it does not match). Undefined: gone meanwhile.
   */
  open(digest: string, range?: { start: number; end: number }): KeptFile | Readable | undefined {
    const p = this.path(digest);
    if (!p) throw new Error(`not a cacheable digest: ${digest}`);
    let st: Stats;
    try {
      st = statSync(p);
    } catch {
      return undefined;
    }
    const t = this.trusted.get(digest);
    const ok = !!t && t.ino === st.ino && t.size === st.size && t.ctimeMs === st.ctimeMs;
    if (Date.now() - st.mtimeMs > TOUCH_MS) {
      try {
        utimesSync(p, new Date(), new Date()); // changes ctime: trust the file again after it
        if (ok) this.trust(digest);
      } catch {
        return undefined;
      }
    }
    if (ok) return new KeptFile(p, range?.start ?? 0, range?.end ?? st.size);
    if (range) return createReadStream(p, { start: range.start, end: range.end - 1 });
    const check = verifying(digest);
    // one pipeline: a reader that stops early (a client gone) closes the file too, which a
    // pipe() left open and paused
    pipeline(createReadStream(p), check, () => undefined);
    check.on('end', () => this.trust(digest));
    check.on('error', (e) => {
      if (!(e instanceof DigestMismatchError)) return;
      this.trusted.delete(digest);
      this.opts.onMismatch?.(digest, p);
    });
    return check;
  }

  /** Remember the file as verified (a file written from verified bytes is). */
  trust(digest: string): void {
    try {
      const st = statSync(this.path(digest)!);
      this.trusted.set(digest, { ino: st.ino, size: st.size, ctimeMs: st.ctimeMs });
    } catch {
      this.trusted.delete(digest);
    }
  }

  file(digest: string): string | undefined {
    return this.size(digest) === undefined ? undefined : this.path(digest);
  }

  /** Move a finished upload file in, if its content has the digest; false when it does not. */
  async adopt(file: string, digest: string): Promise<boolean> {
    const p = this.path(digest);
    if (!p) return false;
    const h = createHash('sha256');
    for await (const c of createReadStream(file)) h.update(c as Buffer);
    if ('sha256:' + h.digest('hex') !== digest) return false;
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await fsp.rename(file, p);
    this.trust(digest);
    return true;
  }

  /** A fresh private file path for data being received. */
  async scratch(): Promise<string> {
    await fsp.mkdir(this.tmp, { recursive: true, mode: 0o700 });
    return join(this.tmp, randomUUID());
  }

  async remove(digest: string): Promise<void> {
    const p = this.path(digest);
    if (p) await fsp.rm(p, { force: true });
    this.trusted.delete(digest);
    if (this.links.get()[digest]) {
      await this.links.update((l) => {
        delete l[digest];
      });
    }
  }

  /** Every cached blob, least recently used first. */
  async list(): Promise<CachedBlob[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch {
      return [];
    }
    const out: CachedBlob[] = [];
    for (const n of names) {
      if (!/^[a-f0-9]{64}$/.test(n)) continue;
      const st = await fsp.stat(join(this.dir, n)).catch(() => undefined);
      if (st) out.push({ digest: `sha256:${n}`, size: st.size, lastUsed: st.mtime });
    }
    return out.sort((a, b) => a.lastUsed.getTime() - b.lastUsed.getTime());
  }

  async usage(): Promise<{ blobs: number; bytes: number; maxBytes?: number }> {
    const all = await this.list();
    return { blobs: all.length, bytes: all.reduce((n, b) => n + b.size, 0), maxBytes: this.maxBytes };
  }

  private old(b: CachedBlob, now: number): boolean {
    return now - b.lastUsed.getTime() > this.graceMs;
  }

  /** Evict least recently used blobs until the cache fits its limit; the evicted ones. */
  async enforceLimit(now = Date.now()): Promise<CachedBlob[]> {
    if (this.maxBytes === undefined) return [];
    const all = await this.list();
    let bytes = all.reduce((n, b) => n + b.size, 0);
    const evicted: CachedBlob[] = [];
    for (const b of all) {
      if (bytes <= this.maxBytes) break;
      if (!this.old(b, now)) continue;
      await this.remove(b.digest);
      bytes -= b.size;
      evicted.push(b);
    }
    return evicted;
  }

  /** Remove blobs no stored manifest references (their push was abandoned, or the image deleted). */
  async prune(inUse: Set<string>, now = Date.now()): Promise<CachedBlob[]> {
    const removed: CachedBlob[] = [];
    for (const b of await this.list()) {
      if (inUse.has(b.digest) || !this.old(b, now)) continue;
      await this.remove(b.digest);
      removed.push(b);
    }
    return removed;
  }
}

/** Digests of every blob referenced by a manifest the store holds (big data `manifest*`). */
export async function referencedBlobs(store: Store, snap: Snapshot): Promise<Set<string>> {
  const out = new Set<string>();
  for (const img of snap.images) {
    for (const key of img.bigDataNames) {
      if (!key.startsWith('manifest')) continue;
      try {
        const m = parseManifest(await store.imageBigData(img, key));
        for (const d of [m.config, ...m.layers]) if (d) out.add(d.digest);
      } catch {
        // unreadable or not a manifest: references nothing
      }
    }
  }
  return out;
}
