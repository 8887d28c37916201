// `csreg serve`: the registry on a store, configured by flags and/or a YAML file whose keys
// follow distribution's config.yml where one exists (http.addr, log.level, log.formatter).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { createLogger, isLogLevel, type LogLevel } from '../log.js';
import { repositoryIndex, DEFAULT_PREFERRED_HOSTS } from '../oci/names.js';
import type { IndexPolicy } from '../oci/resolver.js';
import { startRegistry } from '../registry/server.js';
import { Store } from '../storage/store.js';
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
  --wire-gzip off|on|auto   gzip layer downloads for clients that accept it: off (default),
                            on, or auto = all but loopback clients (docs/wire-gzip.md)
`;

interface ServeConfig {
  http?: { addr?: string; wire_gzip?: string };
  storage?: { root?: string; runroot?: string; driver?: string; statedir?: string };
  log?: { level?: string; formatter?: string };
  names?: { preferred_hosts?: string[] };
  indexes?: string;
  push?: boolean;
  blobcache?: { maxsize?: string | number };
}

/** csreg's own state (design.md): /var/lib/csreg for root, $XDG_STATE_HOME/csreg otherwise. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if ((process.getuid?.() ?? 0) === 0) return '/var/lib/csreg';
  return join(env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state'), 'csreg');
}

/** "1048576", "512M", "20G", "1.5T" (powers of 1024) → bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$/i.exec(text.trim());
  if (!m) throw new UsageError(`invalid size ${JSON.stringify(text)}: expected e.g. 512M or 20G`);
  return Math.floor(Number(m[1]) * 1024 ** ' KMGT'.indexOf(m[2].toUpperCase() || ' '));
}

function readConfig(path: string): ServeConfig {
  try {
    return (parseYaml(readFileSync(path, 'utf8')) ?? {}) as ServeConfig;
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
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
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const conf = values.config ? readConfig(values.config) : {};
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
  const preferredHosts = conf.names?.preferred_hosts ?? DEFAULT_PREFERRED_HOSTS;
  const snap = await store.snapshot();
  const reg = await startRegistry({ store, log, addr: values.addr ?? conf.http?.addr ?? '127.0.0.1:5000', preferredHosts, indexes: indexes as IndexPolicy, wireGzip, stateDir, push, blobCacheMaxBytes });
  const host = reg.url.replace(/^http:\/\//, '');
  const repos = repositoryIndex(snap, preferredHosts);
  const example = repos.names().map((n) => ({ n, t: [...(repos.get(n)?.tags.keys() ?? [])][0] })).find((x) => x.t);
  process.stdout.write(
    `csreg serving ${store.location.graphRoot} (driver ${store.driver}): ${snap.images.length} images, ${repos.names().length} repositories\n`
    + `listening on ${reg.url} (${push ? 'push enabled' : 'read-only'}); csreg state in ${stateDir}\n`
    + (example
      ? `try:  skopeo inspect --tls-verify=false docker://${host}/${example.n}:${example.t}\n      podman pull --tls-verify=false ${host}/${example.n}:${example.t}\n`
      : ''),
  );
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info('shutting down: letting running downloads finish', { signal: sig });
      void reg.close().then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
