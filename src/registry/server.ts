// The HTTP server: routing of the OCI Distribution API, per-request logs, graceful shutdown.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Store } from '../storage/store.js';
import { StoreWriter } from '../storage/writer.js';
import type { Logger } from '../log.js';
import { isValidRepository, repositoryIndex, DEFAULT_PREFERRED_HOSTS } from '../oci/names.js';
import { Resolver, type IndexPolicy } from '../oci/resolver.js';
import { RegistryError, sendError } from './errors.js';
import { getManifest, putManifest, deleteManifest } from './manifests.js';
import { handleUpload, Uploads } from './uploads.js';
import { BlobCache, referencedBlobs } from '../oci/blob-cache.js';
import { TagManifests } from '../oci/tag-manifests.js';
import { Artifacts } from '../oci/artifacts.js';
import { getBlob } from './blobs.js';
import { catalog, tagsList } from './listing.js';
import { referrers } from './referrers.js';
import type { Context, WireGzip } from './context.js';

export interface RegistryOptions {
  store: Store;
  log: Logger;
  /** host:port; port 0 picks a free one */
  addr?: string;
  preferredHosts?: string[];
  indexes?: IndexPolicy;
  wireGzip?: WireGzip;
  /** csreg's own state: blob cache, upload staging */
  stateDir?: string;
  /** accept pushes and deletes (off by default) */
  push?: boolean;
  /** size limit of the blob cache (pushed compressed blobs), in bytes; none by default */
  blobCacheMaxBytes?: number;
}

export interface RunningRegistry {
  url: string;
  server: Server;
  /** stop accepting, let running downloads finish (up to graceMs), then close */
  close(graceMs?: number): Promise<void>;
}

const ROUTE = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/;
const TAGS = /^\/v2\/(.+)\/tags\/list$/;
const UPLOADS = /^\/v2\/(.+)\/blobs\/uploads\/?([^/]*)$/;

async function route(ctx: Context, path: string): Promise<void> {
  const { req } = ctx;
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') {
    if (!ctx.uploads) throw new RegistryError('UNSUPPORTED', `${method} is not supported: this registry is read-only (push is not enabled)`);
    const up = UPLOADS.exec(path);
    if (up) return handleUpload(ctx, checkName(up[1]), up[2] || undefined);
    const m = ROUTE.exec(path);
    if (m && m[2] === 'manifests' && method === 'PUT') return putManifest(ctx, checkName(m[1]), decodeURIComponent(m[3]));
    if (m && m[2] === 'manifests' && method === 'DELETE') return deleteManifest(ctx, checkName(m[1]), decodeURIComponent(m[3]));
    throw new RegistryError('UNSUPPORTED', `${method} ${path} is not supported`);
  }
  if (path === '/v2/' || path === '/v2') {
    ctx.res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2, 'Docker-Distribution-API-Version': 'registry/2.0' });
    ctx.res.end(method === 'HEAD' ? undefined : '{}');
    return;
  }
  if (path === '/v2/_catalog') return catalog(ctx);
  const up = UPLOADS.exec(path);
  if (up) {
    if (!ctx.uploads) throw new RegistryError('UNSUPPORTED', 'uploads are not supported: push is not enabled');
    return handleUpload(ctx, checkName(up[1]), up[2] || undefined);
  }
  const tags = TAGS.exec(path);
  if (tags) return tagsList(ctx, checkName(tags[1]));
  const m = ROUTE.exec(path);
  if (!m) throw new RegistryError('NAME_INVALID', `not a registry API path: ${path}`, undefined, 404);
  const name = checkName(m[1]);
  const ref = decodeURIComponent(m[3]);
  if (m[2] === 'manifests') return getManifest(ctx, name, ref);
  if (m[2] === 'blobs') return getBlob(ctx, name, ref);
  return referrers(ctx, name, ref);
}

function checkName(raw: string): string {
  const name = decodeURIComponent(raw);
  if (!isValidRepository(name)) throw new RegistryError('NAME_INVALID', `invalid repository name: ${JSON.stringify(name)}`);
  return name;
}

export async function startRegistry(opts: RegistryOptions): Promise<RunningRegistry> {
  const { store, log } = opts;
  const cache = opts.stateDir ? new BlobCache(opts.stateDir, { maxBytes: opts.blobCacheMaxBytes }) : undefined;
  if (opts.push && !cache) throw new Error('push needs a state directory');
  const uploads = opts.push && cache ? new Uploads(cache) : undefined;
  const tagManifests = opts.stateDir ? new TagManifests(opts.stateDir) : undefined;
  const artifacts = opts.stateDir && cache ? new Artifacts(opts.stateDir, cache) : undefined;
  await uploads?.cleanStale();
  if (opts.push) {
    // As c/storage does when it opens a store for writing: layers a crashed writer left incomplete go.
    const gone = await new StoreWriter(store).deleteIncompleteLayers();
    if (gone.length) log.warn('deleted incomplete layers', { layers: gone });
    await tidyBlobCache(store, cache!, artifacts!, log);
    setInterval(() => void tidyBlobCache(store, cache!, artifacts!, log).catch((e: Error) => log.error('blob cache', { error: e.message })), 3600_000).unref();
  }
  const active = new Set<ServerResponse>();
  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000 }, (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    active.add(res);
    // Body bytes actually sent: the socket's count minus what it had sent before this response.
    const before = req.socket.bytesWritten;
    const url = new URL(req.url ?? '/', 'http://registry');
    res.on('close', () => {
      active.delete(res);
      log.info('request', {
        method: req.method, path: url.pathname, status: res.statusCode, bytes: req.socket.bytesWritten - before,
        ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000, complete: res.writableFinished,
        remote: req.socket.remoteAddress,
      });
    });
    (async () => {
      const snapshot = await store.snapshot();
      const ctx: Context = {
        req, res, url, store, log, snapshot,
        repos: repositoryIndex(snapshot, opts.preferredHosts ?? DEFAULT_PREFERRED_HOSTS),
        resolver: new Resolver(store, snapshot, opts.indexes ?? 'any-child', cache),
        cache,
        uploads,
        tagManifests,
        artifacts,
        head: req.method === 'HEAD',
        wireGzip: opts.wireGzip ?? 'off',
      };
      await route(ctx, url.pathname);
    })().catch((e: unknown) => {
      if (res.headersSent) {
        res.destroy(e as Error);
        return;
      }
      if (e instanceof RegistryError) return sendError(res, e, req.method === 'HEAD');
      log.error('request failed', { path: url.pathname, error: (e as Error).message });
      sendError(res, new RegistryError('UNSUPPORTED', 'internal error: ' + (e as Error).message, undefined, 500), req.method === 'HEAD');
    });
  });

  const [host, portStr] = splitAddr(opts.addr ?? '127.0.0.1:5000');
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(portStr), host, () => {
      const a = server.address() as AddressInfo;
      const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({
        url: `http://${shown}:${a.port}`,
        server,
        close: (graceMs = 30_000) => new Promise<void>((done) => {
          server.close(() => done());
          server.closeIdleConnections();
          const deadline = setTimeout(() => {
            for (const r of active) r.destroy();
            server.closeAllConnections();
          }, graceMs);
          deadline.unref();
        }),
      });
    });
  });
}

/** Prune blobs no manifest references, evict beyond the size limit, and account for it in the log. */
export async function tidyBlobCache(store: Store, cache: BlobCache, artifacts: Artifacts, log: Logger): Promise<void> {
  const pruned = await cache.prune(new Set([...(await referencedBlobs(store, await store.snapshot())), ...artifacts.referenced()]));
  const evicted = await cache.enforceLimit();
  for (const b of pruned) log.info('blob cache: removed unreferenced blob', { digest: b.digest, size: b.size });
  for (const b of evicted) log.warn('blob cache: evicted (its pushed digest is no longer servable)', { digest: b.digest, size: b.size });
  log.info('blob cache', { dir: cache.dir, ...(await cache.usage()) });
}

/** "host:port", "[v6]:port" or ":port". */
export function splitAddr(addr: string): [string, string] {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr);
  if (!m) throw new Error(`invalid address ${JSON.stringify(addr)}: expected HOST:PORT`);
  return [m[1] ?? (m[2] || '0.0.0.0'), m[3]];
}
