// Store image names → registry repositories and tags (design.md "Names"):
// `HOST/PATH:TAG` is repository `HOST/PATH` (":port" written "_port") with tag TAG; the same
// repository is also reachable as `PATH` when no other host has that path or HOST comes
// first in the preferred-hosts list; docker.io's `library/x` is also `x`. A name recorded
// with a digest (`repo@sha256:…`) makes that digest reachable in the repository.
import type { Image } from '../storage/records.js';
import type { Snapshot } from '../storage/snapshot.js';
import { hasDomain, splitReference } from '../storage/snapshot.js';

export const DEFAULT_PREFERRED_HOSTS = ['localhost', 'docker.io'];

/** The distribution spec's repository name grammar. */
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[\w][\w.-]{0,127}$/;

export function isValidRepository(name: string): boolean {
  return name.length <= 255 && NAME_RE.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export interface Repository {
  name: string;
  tags: Map<string, Image>;
  /** every image named in this repository, tagged or by digest */
  images: Set<Image>;
}

/** Store host part → URL-safe form: "127.0.0.1:5001" → "127.0.0.1_5001". */
export function hostToRepo(host: string): string {
  return host.replace(/:(\d+)$/, '_$1');
}

/**
 * The repository a store name belongs to (`full`, as clients write it) and its tag or digest;
 * undefined for a name no repository serves (no domain, or not the spec's grammar).
 */
export function nameInRepository(name: string): { full: string; host: string; path: string; tag?: string; digest?: string } | undefined {
  const { repo, tag, digest } = splitReference(name);
  if (!hasDomain(repo)) return undefined; // c/image always stores fully qualified names
  const slash = repo.indexOf('/');
  const host = repo.slice(0, slash);
  const path = repo.slice(slash + 1);
  const full = `${hostToRepo(host)}/${path}`;
  return isValidRepository(full) ? { full, host, path, tag, digest } : undefined;
}

/** The image's names that belong to the repository `full`. */
export function namesInRepository(image: Pick<Image, 'names'>, full: string): string[] {
  return image.names.filter((n) => nameInRepository(n)?.full === full);
}

export class RepositoryIndex {
  readonly repos = new Map<string, Repository>();
  private readonly aliases = new Map<string, string>();

  constructor(snapshot: Snapshot, preferredHosts: string[] = DEFAULT_PREFERRED_HOSTS) {
    const aliasCandidates = new Map<string, Set<string>>(); // alias → full repository names
    const hostOf = new Map<string, string>();
    for (const img of snapshot.images) {
      for (const name of img.names) {
        const n = nameInRepository(name);
        if (!n) continue;
        const { full, host, path, tag, digest } = n;
        let r = this.repos.get(full);
        if (!r) this.repos.set(full, (r = { name: full, tags: new Map(), images: new Set() }));
        r.images.add(img);
        // (the primary store comes first and wins a tag an additional store's image also has, as in c/storage)
        if (tag && !digest && isValidTag(tag) && !r.tags.has(tag)) r.tags.set(tag, img);
        hostOf.set(full, host);
        const short = [path];
        if (host === 'docker.io' && path.startsWith('library/')) short.push(path.slice('library/'.length));
        for (const a of short) {
          if (!aliasCandidates.has(a)) aliasCandidates.set(a, new Set());
          aliasCandidates.get(a)!.add(full);
        }
      }
    }
    for (const [alias, fulls] of aliasCandidates) {
      if (this.repos.has(alias)) continue; // a full name always wins over an alias
      let chosen: string | undefined;
      if (fulls.size === 1) chosen = [...fulls][0];
      else {
        for (const h of preferredHosts) {
          chosen = [...fulls].find((f) => hostOf.get(f) === h);
          if (chosen) break;
        }
      }
      if (chosen) this.aliases.set(alias, chosen);
    }
  }

  /** The repository a URL name refers to (full name or alias). */
  get(name: string): Repository | undefined {
    return this.repos.get(name) ?? this.repos.get(this.aliases.get(name) ?? '');
  }

  /** Every name a client can use: full names and aliases, sorted. */
  names(): string[] {
    return [...new Set([...this.repos.keys(), ...this.aliases.keys()])].sort();
  }
}

const indexes = new WeakMap<Snapshot, RepositoryIndex>();

/** One index per snapshot: snapshots are immutable, so it is built once per store change. */
export function repositoryIndex(snapshot: Snapshot, preferredHosts?: string[]): RepositoryIndex {
  let idx = indexes.get(snapshot);
  if (!idx) indexes.set(snapshot, (idx = new RepositoryIndex(snapshot, preferredHosts)));
  return idx;
}
