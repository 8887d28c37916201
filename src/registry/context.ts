// What every request handler gets: the request, one consistent snapshot of the store, and
// the views of it the registry needs.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { RepositoryIndex, Repository } from '../oci/names.js';
import type { Resolver } from '../oci/resolver.js';
import type { Snapshot } from '../storage/snapshot.js';
import type { Store } from '../storage/store.js';
import { RegistryError } from './errors.js';
import type { BlobCache } from '../oci/blob-cache.js';
import type { Uploads } from './uploads.js';
import type { TagManifests } from '../oci/tag-manifests.js';
import type { Artifacts } from '../oci/artifacts.js';
import type { Recipes } from '../compress/recipes.js';
import type { ServedBlobs } from '../oci/served.js';

export interface Context {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  store: Store;
  log: Logger;
  snapshot: Snapshot;
  repos: RepositoryIndex;
  resolver: Resolver;
  head: boolean;
  /** transport gzip of layer blobs: always, never, or only for clients not on loopback */
  wireGzip: WireGzip;
  /** set when push is enabled: csreg's blob cache and upload staging */
  cache?: BlobCache;
  uploads?: Uploads;
  tagManifests?: TagManifests;
  artifacts?: Artifacts;
  /** recompression recipes: original compressed layers served from the store */
  recipes?: Recipes;
  /** blobs made from the store, made once for concurrent requests and kept for later ones */
  served?: ServedBlobs;
  /** the authenticated identity (undefined: anonymous, or auth is off) */
  identity?: string;
  /** whether this client may pull a repository (the catalog lists only those) */
  canPull?: (name: string) => boolean;
}

export type WireGzip = 'on' | 'off' | 'auto';

export function repository(ctx: Context, name: string): Repository {
  const repo = ctx.repos.get(name);
  if (!repo) throw new RegistryError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name });
  return repo;
}

export const API_HEADERS = { 'Docker-Distribution-API-Version': 'registry/2.0' };

/** `n` and `last` of the spec's pagination; the Link header for the next page. */
export function paginate(ctx: Context, all: string[], path: string): { page: string[]; link?: string } {
  const nRaw = ctx.url.searchParams.get('n');
  const last = ctx.url.searchParams.get('last');
  let items = last ? all.filter((x) => x > last) : all;
  if (nRaw === null) return { page: items };
  const n = Number(nRaw);
  if (!Number.isSafeInteger(n) || n < 0) throw new RegistryError('UNSUPPORTED', `invalid page size n=${nRaw}`, undefined, 400);
  const more = items.length > n;
  items = items.slice(0, n);
  if (!more || n === 0) return { page: items };
  const next = `${path}?n=${n}&last=${encodeURIComponent(items[items.length - 1])}`;
  return { page: items, link: `<${next}>; rel="next"` };
}

export function sendJson(ctx: Context, status: number, body: unknown, headers: Record<string, string | number> = {}): void {
  const bytes = Buffer.from(JSON.stringify(body));
  ctx.res.writeHead(status, { ...API_HEADERS, 'Content-Type': 'application/json', 'Content-Length': bytes.length, ...headers });
  ctx.res.end(ctx.head ? undefined : bytes);
}
