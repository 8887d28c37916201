// Blobs csreg keeps in its own state directory, never among the Go tools' files: verified
// uploads waiting for their manifest, and pushed compressed layer blobs that the store cannot
// reproduce bit for bit (so a pull by the pushed digest still works). Files are named by
// digest and only ever appear whole (written aside, verified, then renamed).
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, promises as fsp, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';

export class BlobCache {
  readonly dir: string;
  readonly tmp: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'blobs', 'sha256');
    this.tmp = join(stateDir, 'blobs', 'tmp');
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

  open(digest: string, range?: { start: number; end: number }): Readable {
    const p = this.path(digest);
    if (!p) throw new Error(`not a cacheable digest: ${digest}`);
    return createReadStream(p, range ? { start: range.start, end: range.end - 1 } : {});
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
  }
}
