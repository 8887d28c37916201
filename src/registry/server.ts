// The HTTP server: routing of the OCI Distribution API, per-request logs, graceful shutdown.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
import { Recipes, type SynthesizeForm } from '../compress/recipes.js';
import { ServedBlobs } from '../oci/served.js';
import { getBlob } from './blobs.js';
import { catalog, tagsList } from './listing.js';
import { referrers } from './referrers.js';
import type { Context, WireGzip } from './context.js';
import { Authenticator, type AuthConfig } from './auth.js';
import { AccessPolicy, Gate, type AccessRule, type Grant, type Need } from './access.js';
import { DEFAULT_LIMITS, DownloadSlots, watchBodyIdle, watchSendIdle, type Limits } from './limits.js';
import { Metrics, startMetricsServer } from './metrics.js';
import { advertiseSignatures, getSignatures, putSignature, SIGNATURES, SIGNATURES_HEADER } from './signatures.js';

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
  /** keep blobs made from the store (rebuilt layers, recompressed originals) for concurrent and repeat pulls, up to this many bytes (default 0: made for every request) */
  servedCacheMaxBytes?: number;
  /** what synthesized manifests list as layers: the tars (default), or the tars compressed as a push by containers/image would */
  synthesize?: SynthesizeForm;
  /** find recompression recipes for the whole store in the background after start */
  scanRecipes?: boolean;
  /** serve HTTPS with this certificate chain and key (PEM files: distribution's http.tls.certificate/key) */
  tls?: { certificate: string; key: string };
  /** allow plain HTTP on an address other than loopback (refused by default) */
  insecureListen?: boolean;
  /** htpasswd or token authentication; none by default */
  auth?: AuthConfig;
  /** access rules per repository glob, first match wins */
  access?: AccessRule[];
  limits?: Partial<Limits>;
  /** Prometheus metrics on an address of their own (distribution's http.debug.addr with prometheus) */
  metrics?: { addr: string; path?: string };
}

export interface RunningRegistry {
  url: string;
  /** where the metrics are scraped, when they are served */
  metricsUrl?: string;
  server: Server | HttpsServer;
  /** stop accepting, let running downloads finish (up to graceMs), then close */
  close(graceMs?: number): Promise<void>;
}

const ROUTE = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/;
const TAGS = /^\/v2\/(.+)\/tags\/list$/;
const UPLOADS = /^\/v2\/(.+)\/blobs\/uploads\/?([^/]*)$/;

/** The API a path belongs to, as route() dispatches it (a metrics label: no names or digests). */
export function apiRoute(path: string): string {
  if (path === '/v2/' || path === '/v2') return 'base';
  if (path === '/v2/_catalog') return 'catalog';
  if (UPLOADS.test(path)) return 'blob_upload';
  if (TAGS.test(path)) return 'tags';
  if (SIGNATURES.test(path)) return 'signatures';
  const kind = ROUTE.exec(path)?.[2];
  return kind === 'manifests' ? 'manifest' : kind === 'blobs' ? 'blob' : kind ?? 'other';
}

/** What a request needs to be allowed: pull for GET/HEAD, push for uploads and manifest PUT, delete for DELETE. */
export function needOf(method: string, path: string, url: URL): Need {
  const name = (raw: string) => {
    try {
      return decodeURIComponent(raw);
    } catch {
      return raw;
    }
  };
  if (path === '/v2/_catalog') return { kind: 'catalog' };
  const up = UPLOADS.exec(path);
  if (up) return { kind: 'repo', name: name(up[1]), action: 'push', from: url.searchParams.get('mount') ? url.searchParams.get('from') ?? undefined : undefined };
  const tags = TAGS.exec(path);
  if (tags) return { kind: 'repo', name: name(tags[1]), action: 'pull' };
  const m = ROUTE.exec(path) ?? SIGNATURES.exec(path);
  if (m) {
    const action = method === 'GET' || method === 'HEAD' ? 'pull' : method === 'DELETE' ? 'delete' : 'push';
    return { kind: 'repo', name: name(m[1]), action };
  }
  return { kind: 'base' };
}

async function route(ctx: Context, path: string, hooks: Hooks): Promise<void> {
  const { req } = ctx;
  const method = req.method ?? 'GET';
  const need = needOf(method, path, ctx.url);
  const grant = await hooks.gate.check(req, ctx.res, need, ctx.repos);
  ctx.identity = grant.identity;
  ctx.canPull = grant.canPull;
  hooks.onGrant(need, grant);
  if (need.kind === 'repo' && need.action === 'push' && method === 'POST' && UPLOADS.exec(path)?.[2] === '' && ctx.uploads) {
    const max = hooks.limits.maxUploadSessions;
    if (max > 0 && ctx.uploads.count >= max) throw new RegistryError('TOOMANYREQUESTS', `too many upload sessions open (${max}): try again later`);
  }
  if (need.kind === 'repo' && need.action === 'pull' && method === 'GET' && ROUTE.exec(path)?.[2] === 'blobs') {
    const release = hooks.downloads.acquire(req.socket.remoteAddress ?? '', req.socket);
    if (!release) throw new RegistryError('TOOMANYREQUESTS', `too many downloads from ${req.socket.remoteAddress} at once (${hooks.downloads.perClient}): try again later`);
    ctx.res.once('close', release);
    watchSendIdle(ctx.res, hooks.limits.bodyIdleTimeoutMs, hooks.limits.minBodyRate);
  }
  if (method !== 'GET' && method !== 'HEAD') {
    if (!ctx.uploads) throw new RegistryError('UNSUPPORTED', `${method} is not supported: this registry is read-only (push is not enabled)`);
    const up = UPLOADS.exec(path);
    if (up) return handleUpload(ctx, checkName(up[1]), up[2] || undefined);
    const sig = SIGNATURES.exec(path);
    if (sig && method === 'PUT') return putSignature(ctx, checkName(sig[1]), decodeRef(sig[2]));
    const m = ROUTE.exec(path);
    if (m && m[2] === 'manifests' && method === 'PUT') return putManifest(ctx, checkName(m[1]), decodeRef(m[3]));
    if (m && m[2] === 'manifests' && method === 'DELETE') return deleteManifest(ctx, checkName(m[1]), decodeRef(m[3]));
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
  const sig = SIGNATURES.exec(path);
  if (sig) return getSignatures(ctx, checkName(sig[1]), decodeRef(sig[2]));
  const m = ROUTE.exec(path);
  if (!m) throw new RegistryError('NAME_INVALID', `not a registry API path: ${path}`, undefined, 404);
  const name = checkName(m[1]);
  const ref = decodeRef(m[3]);
  if (m[2] === 'manifests') return getManifest(ctx, name, ref);
  if (m[2] === 'blobs') return getBlob(ctx, name, ref);
  return referrers(ctx, name, ref);
}

// A malformed %-escape ("%zz") would make decodeURIComponent throw a URIError (a 500): it stays
// undecoded, which the name grammar refuses.
function checkName(raw: string): string {
  const name = safeDecode(raw);
  if (!isValidRepository(name)) throw new RegistryError('NAME_INVALID', `invalid repository name: ${JSON.stringify(name)}`);
  return name;
}

interface Hooks {
  gate: Gate;
  limits: Limits;
  downloads: DownloadSlots;
  onGrant(need: Need, grant: Grant): void;
}

const LOOPBACK_HOST = /^(127(\.\d{1,3}){3}|::1|localhost|::ffff:127(\.\d{1,3}){3})$/i;

/** Whether a listen host is loopback only (0.0.0.0, ::, names other than localhost are not). */
export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_HOST.test(host);
}

export async function startRegistry(opts: RegistryOptions): Promise<RunningRegistry> {
  const { store, log } = opts;
  const [host, portStr] = splitAddr(opts.addr ?? '127.0.0.1:5000');
  if (!opts.tls && !isLoopbackHost(host) && !opts.insecureListen) {
    throw new Error(`refusing to listen on ${host} without TLS: credentials and images would cross the network in clear text, `
      + 'and any host could reach the registry. Give a certificate (--tls-cert/--tls-key, config http.tls.certificate/key), '
      + 'listen on 127.0.0.1, or accept the risk with --insecure-listen (config http.insecure: true)');
  }
  const limits: Limits = { ...DEFAULT_LIMITS, ...Object.fromEntries(Object.entries(opts.limits ?? {}).filter(([, v]) => v !== undefined)) };
  const authenticator = opts.auth ? new Authenticator(opts.auth) : undefined;
  for (const w of authenticator?.htpasswd?.warnings ?? []) log.warn('htpasswd', { warning: w });
  const gate = new Gate(authenticator, new AccessPolicy(opts.access ?? [], !!authenticator, authenticator?.anonymousPull ?? false));
  const downloads = new DownloadSlots(limits.maxDownloadsPerClient);
  if (!authenticator && opts.push && !isLoopbackHost(host)) log.warn('push is enabled without authentication on a non-loopback address: anyone who can reach it can write to the store');
  const cache = opts.stateDir ? new BlobCache(opts.stateDir, { maxBytes: opts.blobCacheMaxBytes }) : undefined;
  if (opts.push && !cache) throw new Error('push needs a state directory');
  if (opts.synthesize === 'gzip' && !opts.stateDir) throw new Error('--synthesize gzip needs a state directory');
  const uploads = opts.push && cache ? new Uploads(cache) : undefined;
  if (uploads) uploads.stagingMaxBytes = limits.stagingMaxBytes;
  const tagManifests = opts.stateDir ? new TagManifests(opts.stateDir) : undefined;
  const artifacts = opts.stateDir && cache ? new Artifacts(opts.stateDir, cache) : undefined;
  const served = opts.stateDir && opts.servedCacheMaxBytes
    ? new ServedBlobs(join(opts.stateDir, 'served'), { maxBytes: opts.servedCacheMaxBytes, onError: (msg, fields) => log.error(msg, fields) })
    : undefined;
  const recipes = opts.stateDir ? new Recipes(opts.stateDir, store, opts.synthesize, served) : undefined;
  if (opts.scanRecipes && recipes) {
    void store.snapshot().then((snap) => recipes.scan(snap, {
      layer: (i, n, digest, v, ms) => log.info('recipe scan', { layer: `${i}/${n}`, digest, recipe: v?.profile ?? null, ms }),
      made: (i, n, diffDigest, ms) => log.info('recipe scan: compressed form made', { layer: `${i}/${n}`, diffDigest, ms }),
    }, (digest) => !!cache?.file(digest))).catch((e: Error) => log.error('recipe scan failed', { error: e.message }));
  }
  await uploads?.cleanStale();
  if (opts.push) {
    // As c/storage does when it opens a store for writing: layers a crashed writer left incomplete go.
    const gone = await new StoreWriter(store).deleteIncompleteLayers();
    if (gone.length) log.warn('deleted incomplete layers', { layers: gone });
    await tidyBlobCache(store, cache!, artifacts!, log);
    setInterval(() => void tidyBlobCache(store, cache!, artifacts!, log).catch((e: Error) => log.error('blob cache', { error: e.message })), 3600_000).unref();
  }
  const active = new Set<ServerResponse>();
  const metrics = opts.metrics ? new Metrics() : undefined;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    active.add(res);
    if (metrics) metrics.inFlight++;
    // Body bytes actually sent: the socket's count minus what it had sent before this response.
    const sock = req.socket; // req.socket is null once a closed connection lets go of it
    const before = sock.bytesWritten;
    const url = new URL(req.url ?? '/', 'http://registry');
    if (req.method !== 'GET' && req.method !== 'HEAD') watchBodyIdle(req, limits.bodyIdleTimeoutMs, limits.minBodyRate);
    let granted: { need: Need; identity?: string } | undefined;
    // handlers pass headers to writeHead, where getHeader cannot see them: keep the digest for the audit line
    let digestSent: string | undefined;
    const writeHead = res.writeHead;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      const h = args.find((a) => a && typeof a === 'object' && !Array.isArray(a)) as Record<string, unknown> | undefined;
      const d = h && Object.entries(h).find(([k]) => k.toLowerCase() === 'docker-content-digest')?.[1];
      if (typeof d === 'string') digestSent = d;
      return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
    } as typeof res.writeHead;
    res.on('close', () => {
      active.delete(res);
      const ms = Number((process.hrtime.bigint() - started) / 1000n) / 1000;
      if (metrics) {
        metrics.inFlight--;
        metrics.observe(req.method, apiRoute(url.pathname), res.statusCode, ms / 1000, sock.bytesWritten - before);
      }
      log.info('request', {
        method: req.method, path: url.pathname, status: res.statusCode, bytes: sock.bytesWritten - before,
        ms, complete: res.writableFinished,
        remote: sock.remoteAddress, ...(granted?.identity !== undefined ? { identity: granted.identity } : {}),
      });
      audit(req, res, url, granted, log, sock.remoteAddress, digestSent);
    });
    const hooks: Hooks = { gate, limits, downloads, onGrant: (need, grant) => { granted = { need, identity: grant.identity }; } };
    (async () => {
      const snapshot = await store.snapshot();
      // (on every answer, as OpenShift's registry: containers/image reads it from its ping, 200 or 401)
      if (advertiseSignatures(snapshot, !!uploads)) res.setHeader(SIGNATURES_HEADER, '1');
      const ctx: Context = {
        req, res, url, store, log, snapshot,
        repos: repositoryIndex(snapshot, opts.preferredHosts ?? DEFAULT_PREFERRED_HOSTS),
        resolver: new Resolver(store, snapshot, opts.indexes ?? 'any-child', cache, recipes, artifacts),
        cache,
        uploads,
        tagManifests,
        artifacts,
        recipes,
        served,
        head: req.method === 'HEAD',
        wireGzip: opts.wireGzip ?? 'off',
      };
      await route(ctx, url.pathname, hooks);
    })().catch((e: unknown) => {
      if (res.headersSent) {
        res.destroy(e as Error);
        return;
      }
      if (e instanceof RegistryError) return sendError(res, e, req.method === 'HEAD');
      log.error('request failed', { path: url.pathname, error: (e as Error).message });
      sendError(res, new RegistryError('UNSUPPORTED', 'internal error: ' + (e as Error).message, undefined, 500), req.method === 'HEAD');
    });
  };
  // Slow clients: the whole head within headerTimeoutMs (checked often enough to matter),
  // bodies and downloads watched for progress (limits.ts); no overall limit on long transfers.
  const serverOpts = {
    requestTimeout: 0,
    headersTimeout: limits.headerTimeoutMs,
    connectionsCheckingInterval: Math.max(100, Math.min(5_000, Math.floor(limits.headerTimeoutMs / 4))),
  };
  const server = opts.tls
    // a TLS handshake that never finishes is a slow header too
    ? createHttpsServer({ ...serverOpts, handshakeTimeout: limits.headerTimeoutMs, cert: readFileSync(opts.tls.certificate), key: readFileSync(opts.tls.key) }, handler)
    : createServer(serverOpts, handler);

  const scraped = metrics && await startMetricsServer(splitAddr(opts.metrics!.addr), opts.metrics!.path ?? '/metrics', metrics, async () => {
    const snap = await store.snapshot();
    return {
      csreg_store_images: ['Images in the store.', snap.images.length],
      csreg_store_layers: ['Layers in the store.', snap.layers.length],
      csreg_blob_cache_bytes: ['Bytes in the blob cache of pushed compressed layers.', cache ? (await cache.usage()).bytes : undefined],
      csreg_served_cache_bytes: ['Bytes in the served-blob cache (blobs made from the store, kept).', served ? (await served.cache.usage()).bytes : undefined],
    };
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => {
      scraped?.server.close();
      reject(e);
    });
    server.listen(Number(portStr), host, () => {
      const a = server.address() as AddressInfo;
      const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({
        url: `${opts.tls ? 'https' : 'http'}://${shown}:${a.port}`,
        metricsUrl: scraped?.url,
        server,
        close: (graceMs = 30_000) => new Promise<void>((done) => {
          scraped?.server.close();
          // then the background recompression work: its threads would keep the process alive
          server.close(() => void (recipes?.close() ?? Promise.resolve()).then(() => done()));
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

/** One `audit` line per finished write: who, which repository, what, from where. */
function audit(req: IncomingMessage, res: ServerResponse, url: URL, granted: { need: Need; identity?: string } | undefined, log: Logger, remote?: string, sentDigest?: string): void {
  if (!granted || granted.need.kind !== 'repo' || granted.need.action === 'pull' || !res.writableFinished) return;
  const method = req.method;
  const m = ROUTE.exec(url.pathname);
  const digest = sentDigest ?? res.getHeader('docker-content-digest');
  let what: Record<string, unknown> | undefined;
  if (m && m[2] === 'manifests' && method === 'PUT' && res.statusCode === 201) what = { action: 'manifest push', reference: safeDecode(m[3]), digest };
  else if (m && method === 'DELETE' && res.statusCode === 202) what = { action: `${m[2] === 'manifests' ? 'manifest' : m[2]} delete`, reference: safeDecode(m[3]) };
  else if (SIGNATURES.test(url.pathname) && method === 'PUT' && res.statusCode === 201) what = { action: 'signature push', reference: safeDecode(SIGNATURES.exec(url.pathname)![2]) };
  else if (UPLOADS.test(url.pathname) && (method === 'PUT' || method === 'POST') && res.statusCode === 201) {
    what = { action: url.searchParams.get('mount') && method === 'POST' && !url.searchParams.get('digest') ? 'blob mount' : 'blob upload', digest };
  }
  if (!what) return;
  log.info('audit', { identity: granted.identity ?? null, repository: granted.need.name, ...what, remote });
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function decodeRef(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new RegistryError(raw.includes(':') ? 'DIGEST_INVALID' : 'TAG_INVALID', `invalid reference ${JSON.stringify(raw)}`);
  }
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
