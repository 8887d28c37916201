// GET/HEAD /v2/<name>/blobs/<digest>: configs from big data, layers rebuilt on the fly (or
// read from the served-blob cache, oci/served.ts). A layer
// stream that fails verification destroys the connection, never ends it cleanly, so no
// client takes wrong bytes for a whole blob.
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { KeptFile } from '../oci/blob-cache.js';
import { isValidDigest } from '../oci/digest.js';
import { LayerVerifyError } from '../storage/layer-tar.js';
import { RegistryError } from './errors.js';
import { sendChunks, sendFile } from './send-file.js';
import { API_HEADERS, repository, type Context } from './context.js';

/** One `bytes=` range of a blob of `size` bytes: [start, end) or 'unsatisfiable'; undefined = whole blob. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined; // several ranges or another unit: ignored, as RFC 9110 allows
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'unsatisfiable'; // no last bytes of an empty blob (RFC 9110 14.1.1)
    return { start: Math.max(0, size - n), end: size };
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (!Number.isSafeInteger(start) || start >= size || last < start) return 'unsatisfiable';
  return { start, end: last + 1 };
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

/** Compress on the wire when enabled and the client takes gzip; `auto` skips loopback, where it only costs time. */
function wantsWireGzip(ctx: Context): boolean {
  if (ctx.wireGzip === 'off' || !/\bgzip\b/.test(String(ctx.req.headers['accept-encoding'] ?? ''))) return false;
  return ctx.wireGzip === 'on' || !LOOPBACK.test(ctx.req.socket.remoteAddress ?? '');
}

/**
 * Whether the blob is in the repository (pushed or mounted to it, or used by its images), as
 * distribution links blobs per repository; if it is, and is an original compressed layer seen
 * for the first time, its recipe is found now (so that the resolver can make it).
 */
export async function inRepository(ctx: Context, name: string, digest: string): Promise<boolean> {
  const repo = ctx.repos.get(name);
  let member = !!ctx.cache?.linkedTo(digest, name) || (repo !== undefined && (await ctx.resolver.belongsTo(digest, repo)));
  // an original blob of a layer reused from a pull with another compression: only its image's
  // manifest names it (noted when that manifest was served, or now, for this snapshot)
  if (!member && repo && ctx.recipes && (await ctx.recipes.noteReused(repo.images, ctx.snapshot)).includes(digest)) member = await ctx.resolver.belongsTo(digest, repo);
  if (member && !ctx.resolver.blob(digest)) await ctx.recipes?.ensure([digest], ctx.snapshot).catch((e: Error) => ctx.log.error('recipe detection failed', { digest, error: e.message }));
  return member;
}

export async function getBlob(ctx: Context, name: string, digest: string): Promise<void> {
  if (!isValidDigest(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
  const member = await inRepository(ctx, name, digest);
  let src = ctx.resolver.blob(digest);
  // A blob is visible in the repositories it was pushed to, or whose images use it.
  if (!member) {
    if (src?.kind !== 'cache') repository(ctx, name);
    src = undefined;
  }
  if (!src) throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is not known (or cannot be produced) in ${name}`, { digest });
  const range = parseRange(ctx.req.headers.range, src.size);
  if (range === 'unsatisfiable') {
    ctx.res.writeHead(416, { ...API_HEADERS, 'Content-Range': `bytes */${src.size}`, 'Content-Length': 0 });
    ctx.res.end();
    return;
  }
  const headers: Record<string, string | number> = {
    ...API_HEADERS,
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest,
    ETag: `"${digest}"`,
    'Accept-Ranges': 'bytes',
    'Content-Length': range ? range.end - range.start : src.size,
  };
  if (range) headers['Content-Range'] = `bytes ${range.start}-${range.end - 1}/${src.size}`;
  const status = range ? 206 : 200;

  if (src.kind === 'bigdata') {
    const data = await ctx.store.imageBigData(src.image, src.key);
    ctx.res.writeHead(status, headers);
    ctx.res.end(ctx.head ? undefined : range ? data.subarray(range.start, range.end) : data);
    return;
  }
  if (ctx.head) {
    ctx.res.writeHead(status, headers);
    ctx.res.end();
    return;
  }
  // made from the store: a rebuilt layer tar, or an original blob a recipe reproduces
  const made = src.kind === 'produced' ? src : undefined;
  const layer = src.kind === 'layer' ? src.layer : undefined;
  const make = (r?: { start: number; end: number }) => (made ? made.blob.open(r) : ctx.store.layerTar(layer!.id, r ?? {}));
  const gzip = !range && !!layer && wantsWireGzip(ctx);
  // A layer tar sent as it is rebuilt (no served-blob cache, or a range) comes in chunks each
  // taken by the socket before the next is read into their memory (fresh memory per read cost
  // a quarter of the CPU); its first chunk before the headers, so that the store's errors (a
  // layer gone meanwhile, a changed file where a range starts) are answered with a status.
  const chunks = layer && !gzip && (range || !ctx.served) ? ctx.store.layerTarChunks(layer.id, range ?? {}) : undefined;
  const first = await chunks?.next().catch((e: Error) => {
    if (e instanceof LayerVerifyError) ctx.log.error('layer did not verify', { layer: layer!.id, digest, error: e.message });
    throw e;
  });
  const stream = chunks ? undefined : src.kind === 'cache' ? ctx.cache!.open(digest, range) : ctx.served ? await ctx.served.open(digest, src.size, make, range) : await make(range);
  if (!chunks && !stream) throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is not known in ${name}`, { digest });
  if (gzip) {
    // Transport compression only: the digest is still that of the uncompressed tar, which
    // clients (Go's transport in containers/image) decompress transparently before hashing.
    delete headers['Content-Length'];
    headers['Content-Encoding'] = 'gzip';
    headers.Vary = 'Accept-Encoding';
  }
  ctx.res.writeHead(status, headers);
  try {
    if (chunks) await sendChunks(ctx.res, chunks, first!);
    else if (stream instanceof KeptFile && !gzip) await sendFile(ctx.res, stream);
    else if (stream) {
      const body = stream instanceof KeptFile ? createReadStream(stream.path, { start: stream.start, end: stream.end - 1 }) : stream;
      await (gzip ? pipeline(body, createGzip({ level: 1 }), ctx.res) : pipeline(body, ctx.res));
    }
  } catch (e) {
    // The client must see a broken transfer, not a short or wrong blob.
    ctx.res.destroy();
    const about = { ...(layer ? { layer: layer.id } : {}), digest, error: (e as Error).message };
    if (e instanceof LayerVerifyError) ctx.log.error('layer did not verify: connection aborted', about);
    else if (made && !(stream instanceof KeptFile)) ctx.log.error('recompressed blob failed: connection aborted', about);
    else ctx.log.debug('blob transfer ended early', about);
  }
}
