// An immutable view of the store's records at one moment, with the lookups c/storage and
// podman offer: by ID, by name, by unique ID prefix, and (images) by digest or short name.
import type { Container, Image, Layer } from './records.js';

export class LookupError extends Error {
  override name = 'LookupError';
  constructor(message: string, readonly code: 'not-found' | 'ambiguous') {
    super(message);
  }
}

interface Indexed { id: string; names: string[] }

/** c/storage's order: exact ID, then name, then a unique ID prefix. */
function lookup<T extends Indexed>(kind: string, byId: Map<string, T>, byName: Map<string, T>, ref: string): T | undefined {
  const exact = byId.get(ref) ?? byName.get(ref);
  if (exact) return exact;
  if (!/^[0-9a-f]+$/.test(ref)) return undefined;
  let found: T | undefined;
  for (const [id, rec] of byId) {
    if (!id.startsWith(ref)) continue;
    if (found) throw new LookupError(`${kind} ID prefix ${ref} is ambiguous`, 'ambiguous');
    found = rec;
  }
  return found;
}

function index<T extends Indexed>(records: T[]): { byId: Map<string, T>; byName: Map<string, T> } {
  const byId = new Map<string, T>();
  const byName = new Map<string, T>();
  for (const r of records) {
    if (byId.has(r.id)) continue; // primary store first; later duplicates are shadowed
    byId.set(r.id, r);
    for (const n of r.names) if (!byName.has(n)) byName.set(n, r);
  }
  return { byId, byName };
}

/** Does `name` have a registry host as its first component (as docker/podman decide)? */
export function hasDomain(name: string): boolean {
  const i = name.indexOf('/');
  if (i < 0) return false;
  const first = name.slice(0, i);
  return first.includes('.') || first.includes(':') || first === 'localhost';
}

/** Split `repo:tag` / `repo@digest`; the tag colon is the one after the last slash. */
export function splitReference(ref: string): { repo: string; tag?: string; digest?: string } {
  const at = ref.indexOf('@');
  if (at >= 0) return { repo: ref.slice(0, at), digest: ref.slice(at + 1) };
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > slash) return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repo: ref };
}

export class Snapshot {
  private readonly layerIdx;
  private readonly imageIdx;
  private readonly containerIdx;
  private readonly imagesByDigest = new Map<string, Image[]>();

  constructor(readonly layers: Layer[], readonly images: Image[], readonly containers: Container[]) {
    this.layerIdx = index(layers);
    this.imageIdx = index(images);
    this.containerIdx = index(containers);
    for (const img of images) {
      for (const d of img.digests) {
        const list = this.imagesByDigest.get(d) ?? [];
        list.push(img);
        this.imagesByDigest.set(d, list);
      }
    }
  }

  layer(ref: string): Layer | undefined {
    return lookup('layer', this.layerIdx.byId, this.layerIdx.byName, ref);
  }

  container(ref: string): Container | undefined {
    return lookup('container', this.containerIdx.byId, this.containerIdx.byName, ref);
  }

  imagesWithDigest(digest: string): Image[] {
    return this.imagesByDigest.get(digest) ?? [];
  }

  /**
   * Resolve an image reference like podman: ID, name, unique ID prefix, `sha256:` digest, then
   * the normalized forms of a short name (`:latest`, `localhost/`, `docker.io/library/`) and
   * finally a unique image whose name ends with `/<ref>`.
   */
  image(ref: string): Image | undefined {
    const r = ref.startsWith('sha256:') && ref.length === 71 ? ref.slice(7) : ref;
    const direct = lookup('image', this.imageIdx.byId, this.imageIdx.byName, r);
    if (direct) return direct;
    if (ref.startsWith('sha256:')) return this.imagesWithDigest(ref)[0];
    const { repo, tag, digest } = splitReference(ref);
    if (digest) {
      const imgs = this.imagesWithDigest(digest).filter((i) => i.names.some((n) => splitReference(n).repo === repo)
        || i.names.some((n) => splitReference(n).repo.endsWith('/' + repo)));
      return imgs[0];
    }
    const full = `${repo}:${tag ?? 'latest'}`;
    const candidates = hasDomain(repo) ? [full] : [full, `localhost/${full}`, `docker.io/library/${full}`, `docker.io/${full}`];
    for (const c of candidates) {
      const img = this.imageIdx.byName.get(c);
      if (img) return img;
    }
    if (hasDomain(repo)) return undefined;
    const matches = new Set<Image>();
    for (const [n, img] of this.imageIdx.byName) if (n.endsWith('/' + full)) matches.add(img);
    if (matches.size > 1) throw new LookupError(`short name ${ref} matches several images: use a full name`, 'ambiguous');
    return [...matches][0];
  }

  /** The image's layers, base first; undefined entries where the chain is broken. */
  layerChain(top: string | undefined): { layers: Layer[]; problem?: string } {
    const layers: Layer[] = [];
    const seen = new Set<string>();
    for (let id = top; id; ) {
      const l = this.layerIdx.byId.get(id);
      if (!l) return { layers, problem: `layer ${id} is missing` };
      if (l.incomplete) return { layers, problem: `layer ${id} is incomplete` };
      if (seen.has(id)) return { layers, problem: `layer ${id} is its own ancestor` };
      seen.add(id);
      layers.unshift(l);
      id = l.parent;
    }
    return { layers };
  }

  /** An image whose layer chain is whole: every layer present and complete. */
  isComplete(image: Image): boolean {
    return !this.layerChain(image.topLayer).problem;
  }
}
