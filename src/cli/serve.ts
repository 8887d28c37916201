// `csreg serve`: the registry on a store, configured by flags and/or a YAML file whose keys
// follow distribution's config.yml where one exists (http.addr, log.level, log.formatter).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger, isLogLevel, type LogLevel } from '../log.js';
import { repositoryIndex, DEFAULT_PREFERRED_HOSTS } from '../oci/names.js';
import type { IndexPolicy } from '../oci/resolver.js';
import { startRegistry, type RegistryOptions } from '../registry/server.js';
import type { AuthConfig } from '../registry/auth.js';
import { parseAccessRules } from '../registry/access.js';
import { parseDuration, type Limits } from '../registry/limits.js';
import { Store } from '../storage/store.js';
import { isRootless, outsideUserNamespace } from '../storage/rootless.js';
import { returnFreedBuffers } from '../storage/syscalls.js';
import { UsageError } from './storage.js';

const USAGE = `usage: csreg serve [options]

  --addr HOST:PORT          listen address (default 127.0.0.1:5000)
  --root DIR --runroot DIR --storage-driver NAME
                            the store (default: the one podman uses, from storage.conf)
  --config FILE             YAML config (http.addr, storage.root/runroot/driver, log.level,
                            log.formatter, names.preferred_hosts, indexes: any-child|complete-only)
  --state-dir DIR           csreg's own state (default /var/lib/csreg, or ~/.local/state/csreg)
  --log-level LEVEL         debug, info, warn, error (default info)
  --log-format json|text    JSON lines (default) or human-readable
  --allow-push              accept pushes and deletes into the store (config: push: true)
  --blob-cache-max SIZE     size limit of the blob cache of pushed compressed layers, e.g. 20G
                            (config: blobcache.maxsize; default no limit); least recently used
                            blobs go first, and their images are then served synthesized
  --scan-recipes            find in the background which compressor reproduces each layer's
                            original blob (config: recipes.scan: true; else found on first use);
                            with --synthesize gzip, then compress each layer once to learn the
                            digests synthesized manifests list (else the first pull waits for it)
  --serve-cache-max SIZE    blobs made from the store (rebuilt layer tars, recompressed original
                            blobs) are made once for all concurrent requests and kept for later
                            ones, up to SIZE, least recently used first (config:
                            servecache.maxsize; default 1G; 0 = make them for every request;
                            --recipe-cache-max is an old name of it; docs/serve-cache.md)
  --synthesize tar|gzip     what the synthesized manifest (images without a servable original)
                            lists as layers: the uncompressed tars (default), or the tars
                            compressed as podman/skopeo push them, the digests a push of the
                            image would upload (config: synthesize; docs/synthesized-manifest.md)
  --wire-gzip off|on|auto   gzip layer downloads for clients that accept it: off (default),
                            on, or auto = all but loopback clients (docs/wire-gzip.md)
  --metrics-addr HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics (config:
                            http.debug.addr with http.debug.prometheus.enabled: true, and
                            .path, as distribution): requests by route, method and status,
                            their durations and bytes, the store's and caches' sizes, CPU, memory

Security (config keys as distribution's config.yml where it has them):
  --tls-cert FILE --tls-key FILE
                            serve HTTPS (config: http.tls.certificate, http.tls.key; PEM)
  --insecure-listen         allow plain HTTP on a non-loopback address (config: http.insecure:
                            true); without it csreg refuses to listen there without TLS
  --htpasswd FILE           Basic auth against an htpasswd file of bcrypt entries (htpasswd -B)
                            (config: auth.htpasswd.path)
  --auth-realm REALM        the Basic realm (config: auth.htpasswd.realm; default csreg)
  config auth.token.{realm,service,issuer,rootcertbundle}
                            bearer tokens (JWT, RS256/ES256/...) from a token service, as
                            distribution; a token without the needed scope gets 401 with
                            error="insufficient_scope"
  config auth.anonymous_pull: true
                            with auth on, clients without credentials may pull (where the
                            access rules let "*" pull); push and delete always need a login
  config access: [{repository: GLOB, pull: [IDS], push: [IDS], delete: [IDS]}, ...]
                            first matching rule wins; "*" = anyone admitted; no rule matching
                            = denied. GLOB: * within a path segment, ** across, ? one char.
                            Without rules: auth off = all may pull (push if enabled); auth on
                            = logged-in users may do everything.
  config limits:            header_timeout (30s): the request head must arrive within it
                            body_idle_timeout (60s) and body_min_rate (1K bytes/s): request
                              bodies and downloads slower than that are cut off
                            max_upload_sessions (100), staging_max (32G): upload sessions and
                              staged bytes at once (beyond: 429 TOOMANYREQUESTS)
                            max_downloads_per_client (32): blob downloads at once per client
                              address (beyond: 429; 0 = no limit)
                            Manifests larger than 4 MiB are refused (413 MANIFEST_INVALID).
`;

interface ServeConfig {
  http?: {
    addr?: string; wire_gzip?: string; tls?: { certificate?: string; key?: string }; insecure?: boolean;
    debug?: { addr?: string; prometheus?: { enabled?: boolean; path?: string } };
  };
  auth?: {
    htpasswd?: { realm?: string; path?: string };
    token?: { realm?: string; service?: string; issuer?: string; rootcertbundle?: string };
    anonymous_pull?: boolean;
  };
  access?: unknown;
  limits?: Record<string, unknown>;
  storage?: { root?: string; runroot?: string; driver?: string; statedir?: string };
  log?: { level?: string; formatter?: string };
  names?: { preferred_hosts?: string[] };
  indexes?: string;
  push?: boolean;
  blobcache?: { maxsize?: string | number };
  servecache?: { maxsize?: string | number };
  synthesize?: string;
  recipes?: { scan?: boolean; cache_maxsize?: string | number };
}

/** csreg's own state (design.md): /var/lib/csreg for root, $XDG_STATE_HOME/csreg otherwise. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (!isRootless(env)) return '/var/lib/csreg';
  return join(env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state'), 'csreg');
}

/** "1048576", "512M", "20G", "1.5T" (powers of 1024) → bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$/i.exec(text.trim());
  if (!m) throw new UsageError(`invalid size ${JSON.stringify(text)}: expected e.g. 512M or 20G`);
  return Math.floor(Number(m[1]) * 1024 ** ' KMGT'.indexOf(m[2].toUpperCase() || ' '));
}

/** The YAML parser loads only with a config file (60 ms of a start without one). */
async function readConfig(path: string): Promise<ServeConfig> {
  const { parse: parseYaml } = await import('yaml');
  try {
    return (parseYaml(readFileSync(path, 'utf8')) ?? {}) as ServeConfig;
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
}

/** TLS, auth, access rules and limits from flags and the config file. */
export function securityOptions(
  values: { 'tls-cert'?: string; 'tls-key'?: string; 'insecure-listen'?: boolean; htpasswd?: string; 'auth-realm'?: string },
  conf: ServeConfig,
): Pick<RegistryOptions, 'tls' | 'insecureListen' | 'auth' | 'access' | 'limits'> {
  const cert = values['tls-cert'] ?? conf.http?.tls?.certificate;
  const key = values['tls-key'] ?? conf.http?.tls?.key;
  if (!cert !== !key) throw new UsageError('TLS needs both a certificate and a key (--tls-cert and --tls-key)');
  let auth: AuthConfig | undefined;
  const htpasswd = values.htpasswd ?? conf.auth?.htpasswd?.path;
  const token = conf.auth?.token;
  if (htpasswd && token) throw new UsageError('configure either htpasswd or token authentication, not both');
  if (htpasswd) auth = { htpasswd: { path: htpasswd, realm: values['auth-realm'] ?? conf.auth?.htpasswd?.realm ?? 'csreg' } };
  else if (token) {
    for (const k of ['realm', 'service', 'issuer', 'rootcertbundle'] as const) if (!token[k]) throw new UsageError(`auth.token.${k} must be set`);
    auth = { token: token as Required<typeof token> };
  } else if (values['auth-realm']) throw new UsageError('--auth-realm goes with --htpasswd');
  if (auth) auth.anonymousPull = conf.auth?.anonymous_pull === true;
  else if (conf.auth?.anonymous_pull !== undefined) throw new UsageError('auth.anonymous_pull needs htpasswd or token authentication');
  let access;
  try {
    access = parseAccessRules(conf.access);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const l = conf.limits ?? {};
  const known = ['header_timeout', 'body_idle_timeout', 'body_min_rate', 'max_upload_sessions', 'staging_max', 'max_downloads_per_client'];
  for (const k of Object.keys(l)) if (!known.includes(k)) throw new UsageError(`limits.${k}: unknown (known: ${known.join(', ')})`);
  const count = (k: string): number | undefined => {
    const v = l[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new UsageError(`limits.${k} must be a whole number`);
    return v;
  };
  const size = (k: string) => (l[k] === undefined ? undefined : parseSize(String(l[k])));
  const duration = (k: string) => {
    try {
      return l[k] === undefined ? undefined : parseDuration(l[k], `limits.${k}`);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  const limits: Partial<Limits> = {
    headerTimeoutMs: duration('header_timeout'),
    bodyIdleTimeoutMs: duration('body_idle_timeout'),
    minBodyRate: size('body_min_rate'),
    maxUploadSessions: count('max_upload_sessions'),
    stagingMaxBytes: size('staging_max'),
    maxDownloadsPerClient: count('max_downloads_per_client'),
  };
  return {
    tls: cert && key ? { certificate: cert, key } : undefined,
    insecureListen: values['insecure-listen'] ?? conf.http?.insecure === true,
    auth,
    access,
    limits,
  };
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      addr: { type: 'string' }, root: { type: 'string' }, runroot: { type: 'string' }, 'storage-driver': { type: 'string' },
      config: { type: 'string' }, 'state-dir': { type: 'string' }, 'log-level': { type: 'string' }, 'log-format': { type: 'string' },
      'wire-gzip': { type: 'string' },
      'allow-push': { type: 'boolean' },
      'blob-cache-max': { type: 'string' },
      'serve-cache-max': { type: 'string' },
      synthesize: { type: 'string' },
      'recipe-cache-max': { type: 'string' },
      'scan-recipes': { type: 'boolean' },
      'metrics-addr': { type: 'string' },
      'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'insecure-listen': { type: 'boolean' },
      htpasswd: { type: 'string' }, 'auth-realm': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const conf = values.config ? await readConfig(values.config) : {};
  const level = values['log-level'] ?? conf.log?.level ?? 'info';
  if (!isLogLevel(level)) throw new UsageError(`unknown log level ${level}`);
  const format = values['log-format'] ?? conf.log?.formatter ?? 'json';
  if (format !== 'json' && format !== 'text') throw new UsageError(`unknown log format ${format}`);
  const indexes = conf.indexes ?? 'any-child';
  if (indexes !== 'any-child' && indexes !== 'complete-only') throw new UsageError(`indexes must be any-child or complete-only`);
  const wireGzip = values['wire-gzip'] ?? conf.http?.wire_gzip ?? 'off';
  if (wireGzip !== 'on' && wireGzip !== 'off' && wireGzip !== 'auto') throw new UsageError('--wire-gzip takes on, off or auto');
  const log = createLogger({ level: level as LogLevel, format });
  const stateDir = values['state-dir'] ?? conf.storage?.statedir ?? defaultStateDir();
  const push = values['allow-push'] ?? conf.push === true;
  const store = Store.open({
    root: values.root ?? conf.storage?.root,
    runroot: values.runroot ?? conf.storage?.runroot,
    driver: values['storage-driver'] ?? conf.storage?.driver,
  }, process.env, push);
  const cacheMax = values['blob-cache-max'] ?? conf.blobcache?.maxsize;
  const blobCacheMaxBytes = cacheMax === undefined ? undefined : parseSize(String(cacheMax));
  const servedMax = values['serve-cache-max'] ?? values['recipe-cache-max'] ?? conf.servecache?.maxsize ?? conf.recipes?.cache_maxsize ?? '1G';
  const servedCacheMaxBytes = parseSize(String(servedMax));
  const synthesize = values.synthesize ?? conf.synthesize ?? 'tar';
  if (synthesize !== 'tar' && synthesize !== 'gzip') throw new UsageError('--synthesize takes tar or gzip');
  const scanRecipes = values['scan-recipes'] ?? conf.recipes?.scan === true;
  const preferredHosts = conf.names?.preferred_hosts ?? DEFAULT_PREFERRED_HOSTS;
  const snap = await store.snapshot();
  const security = securityOptions(values, conf);
  if (outsideUserNamespace()) {
    log.warn('not root and not in a user namespace: layers holding files of the images\' own users (other than root) cannot be served; bin/csreg enters one where /etc/subuid gives this user a range (or run: podman unshare csreg serve …)', { uid: process.geteuid?.() });
  }
  returnFreedBuffers(); // a long-running server: memory freed after a burst of pulls goes back to the OS
  // (as distribution: metrics on the debug address when prometheus is enabled there)
  const debug = conf.http?.debug;
  const metricsAddr = values['metrics-addr'] ?? (debug?.prometheus?.enabled === true ? debug.addr : undefined);
  const metrics = metricsAddr ? { addr: metricsAddr, path: debug?.prometheus?.path } : undefined;
  const reg = await startRegistry({ store, log, addr: values.addr ?? conf.http?.addr ?? '127.0.0.1:5000', preferredHosts, indexes: indexes as IndexPolicy, wireGzip, stateDir, push, blobCacheMaxBytes, servedCacheMaxBytes, synthesize, scanRecipes, metrics, ...security });
  // (the handlers are in place before "listening on" is printed: a signal sent on seeing it is
  // never met by Node's default, which ends the process at once with scan jobs half-done)
  const stopped = new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info('shutting down: letting running downloads finish', { signal: sig });
      void reg.close().then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  const host = reg.url.replace(/^https?:\/\//, '');
  const tlsFlag = security.tls ? '' : '--tls-verify=false ';
  const repos = repositoryIndex(snap, preferredHosts);
  const example = repos.names().map((n) => ({ n, t: [...(repos.get(n)?.tags.keys() ?? [])][0] })).find((x) => x.t);
  process.stdout.write(
    `csreg serving ${store.location.graphRoot} (driver ${store.driver}): ${snap.images.length} images, ${repos.names().length} repositories\n`
    + `listening on ${reg.url} (${push ? 'push enabled' : 'read-only'}${security.auth ? `, ${security.auth.token ? 'token' : 'htpasswd'} auth` : ''}); csreg state in ${stateDir}\n`
    + (reg.metricsUrl ? `metrics at ${reg.metricsUrl}\n` : '')
    + (example
      ? `try:  skopeo inspect ${tlsFlag}docker://${host}/${example.n}:${example.t}\n      podman pull ${tlsFlag}${host}/${example.n}:${example.t}\n`
      : ''),
  );
  await stopped;
  return 0;
}
