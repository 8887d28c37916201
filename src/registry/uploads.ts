// Blob uploads (distribution spec "push"): POST to open a session (or monolithic POST with
// ?digest=, or ?mount=&from= to reuse a blob), PATCH chunks in order (Content-Range), PUT
// ?digest= to close it. The data lives in csreg's state directory; a blob reaches the blob
// cache only once its digest is verified, and sessions left idle are removed.
import { randomUUID } from 'node:crypto';
import { createWriteStream, promises as fsp } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import type { BlobCache } from '../oci/blob-cache.js';
import { isValidDigest } from '../oci/digest.js';
import { RegistryError } from './errors.js';
import { API_HEADERS, type Context } from './context.js';
import { inRepository } from './blobs.js';

interface Session {
  id: string;
  repo: string;
  file: string;
  size: number;
  touched: number;
  busy: boolean;
}

export class Uploads {
  private readonly sessions = new Map<string, Session>();
  private readonly timer: NodeJS.Timeout;

  /** bytes all sessions may stage at once (limits.ts); beyond: 429, or 413 for one chunk larger than all of it */
  stagingMaxBytes = Infinity;
  private inFlight = 0;

  /** open sessions */
  get count(): number {
    return this.sessions.size;
  }

  /** bytes staged by all sessions, including chunks being received */
  get staged(): number {
    let n = this.inFlight;
    for (const s of this.sessions.values()) n += s.size;
    return n;
  }

  constructor(readonly cache: BlobCache, readonly idleMs = 15 * 60_000) {
    this.timer = setInterval(() => void this.expire(), Math.min(idleMs, 60_000));
    this.timer.unref();
  }

  /** Staging files of sessions that no longer exist (a restart, a crash) are removed at start. */
  async cleanStale(): Promise<void> {
    await fsp.rm(this.cache.tmp, { recursive: true, force: true });
  }

  private async expire(): Promise<void> {
    const now = Date.now();
    for (const s of this.sessions.values()) {
      if (!s.busy && now - s.touched > this.idleMs) await this.drop(s);
    }
  }

  async open(repo: string): Promise<Session> {
    const s: Session = { id: randomUUID(), repo, file: await this.cache.scratch(), size: 0, touched: Date.now(), busy: false };
    await fsp.writeFile(s.file, '');
    this.sessions.set(s.id, s);
    return s;
  }

  get(repo: string, id: string): Session {
    const s = this.sessions.get(id);
    if (!s || s.repo !== repo) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id} is not known`, { id });
    return s;
  }

  async drop(s: Session): Promise<void> {
    this.sessions.delete(s.id);
    await fsp.rm(s.file, { force: true });
  }

  /** Append the request body to the session's file. */
  async append(ctx: Context, s: Session): Promise<void> {
    if (s.busy) throw new RegistryError('BLOB_UPLOAD_INVALID', 'a chunk is already being written to this upload', undefined, 416);
    const max = this.stagingMaxBytes;
    const declared = Number(ctx.req.headers['content-length'] ?? 0);
    if (declared > max) throw new RegistryError('SIZE_INVALID', `upload larger than the staging limit (${max} bytes)`, undefined, 413);
    if (this.staged + declared > max) throw new RegistryError('TOOMANYREQUESTS', 'upload staging is full: try again later');
    s.busy = true;
    let n = 0;
    try {
      const count = new Transform({
        transform: (c: Buffer, _e, cb) => {
          n += c.length;
          this.inFlight += c.length;
          if (this.staged > max) cb(new RegistryError('TOOMANYREQUESTS', 'upload staging is full: try again later'));
          else cb(null, c);
        },
      });
      await pipeline(ctx.req, count, createWriteStream(s.file, { flags: 'a' }));
      s.size += n;
      s.touched = Date.now();
    } catch (e) {
      // a chunk that did not arrive whole leaves nothing behind: the session stays at its last good size
      await fsp.truncate(s.file, s.size).catch(() => undefined);
      throw e;
    } finally {
      this.inFlight -= n;
      s.busy = false;
    }
  }
}

function location(repo: string, id: string): string {
  return `/v2/${repo}/blobs/uploads/${id}`;
}

function accepted(ctx: Context, repo: string, s: { id: string; size: number }): void {
  ctx.res.writeHead(202, {
    ...API_HEADERS,
    Location: location(repo, s.id),
    'Docker-Upload-UUID': s.id,
    Range: `0-${Math.max(0, s.size - 1)}`,
    'Content-Length': 0,
  });
  ctx.res.end();
}

function created(ctx: Context, repo: string, digest: string): void {
  ctx.res.writeHead(201, { ...API_HEADERS, Location: `/v2/${repo}/blobs/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': 0 });
  ctx.res.end();
}

/** Verify and move the session's data into the blob cache, or fail with DIGEST_INVALID. */
async function finish(ctx: Context, up: Uploads, s: Session, digest: string): Promise<void> {
  if (!isValidDigest(digest) || !digest.startsWith('sha256:')) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
  const ok = await up.cache.adopt(s.file, digest);
  if (!ok) {
    await up.drop(s);
    throw new RegistryError('DIGEST_INVALID', `uploaded content does not match digest ${digest}`, { digest });
  }
  await up.drop(s);
  await up.cache.link(digest, s.repo);
  created(ctx, s.repo, digest);
}

/** POST, PATCH, PUT, GET and DELETE on /v2/<name>/blobs/uploads/[<id>]. */
export async function handleUpload(ctx: Context, repo: string, id: string | undefined): Promise<void> {
  const up = ctx.uploads!;
  const method = ctx.req.method;
  const q = ctx.url.searchParams;
  if (!id) {
    if (method !== 'POST') throw new RegistryError('UNSUPPORTED', `${method} on uploads`);
    const mount = q.get('mount');
    if (mount) {
      if (!isValidDigest(mount)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(mount)}`);
      // Only a blob of the `from` repository (which the client may pull) is mounted; otherwise
      // an upload session starts, as distribution does.
      const from = q.get('from');
      if (from && (await inRepository(ctx, from, mount)) && ctx.resolver.blob(mount)) {
        await up.cache.link(mount, repo);
        return created(ctx, repo, mount);
      }
    }
    const s = await up.open(repo);
    const digest = q.get('digest');
    if (digest) {
      await up.append(ctx, s);
      return finish(ctx, up, s, digest);
    }
    return accepted(ctx, repo, s);
  }
  const s = up.get(repo, id);
  if (method === 'GET') {
    ctx.res.writeHead(204, { ...API_HEADERS, Location: location(repo, s.id), Range: `0-${Math.max(0, s.size - 1)}`, 'Docker-Upload-UUID': s.id });
    ctx.res.end();
    return;
  }
  if (method === 'DELETE') {
    await up.drop(s);
    ctx.res.writeHead(204, API_HEADERS);
    ctx.res.end();
    return;
  }
  if (method === 'PATCH' || method === 'PUT') {
    const cr = ctx.req.headers['content-range'];
    if (cr) {
      // Chunks must arrive in order: "start-end" with start = what we have.
      const m = /^(?:bytes )?(\d+)-(\d+)$/.exec(String(cr));
      // and, as distribution checks, a Content-Length that is not the range's length is refused
      const cl = ctx.req.headers['content-length'];
      if (!m || Number(m[1]) !== s.size || Number(m[2]) < Number(m[1]) || (cl !== undefined && Number(cl) !== Number(m[2]) - Number(m[1]) + 1)) {
        ctx.res.writeHead(416, { ...API_HEADERS, Location: location(repo, s.id), Range: `0-${Math.max(0, s.size - 1)}`, 'Content-Length': 0 });
        ctx.res.end();
        return;
      }
    }
    await up.append(ctx, s);
    if (method === 'PATCH') return accepted(ctx, repo, s);
    const digest = q.get('digest');
    if (!digest) throw new RegistryError('DIGEST_INVALID', 'PUT to finish an upload needs ?digest=');
    return finish(ctx, up, s, digest);
  }
  throw new RegistryError('UNSUPPORTED', `${method} on an upload`);
}
