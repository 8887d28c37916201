// What the registry can serve from one snapshot of the store (design.md "What a manifest
// request returns", "What a blob request returns"). The rule that keeps mirrors safe: a
// manifest is only ever served when every blob it references can be produced and verified.
import { existsSync } from 'node:fs';
import type { Image, Layer } from '../storage/records.js';
import type { Snapshot } from '../storage/snapshot.js';
import type { Store } from '../storage/store.js';
import { sha256 } from './digest.js';
import { isSigned } from '../storage/signatures.js';
import { MT } from './media.js';
import { configKey, parseManifest, synthesizeManifest, ManifestError, type ParsedManifest } from './manifest.js';
import type { Repository } from './names.js';
import type { BlobCache } from './blob-cache.js';
import type { Readable } from 'node:stream';

export type BlobSource =
  | { kind: 'bigdata'; digest: string; size: number; image: Image; key: string }
  | { kind: 'layer'; digest: string; size: number; layer: Layer }
  /** a pushed blob kept in csreg's blob cache */
  | { kind: 'cache'; digest: string; size: number }
  /** made on request from the store (an original compressed layer reproduced by a recipe) */
  | { kind: 'produced'; digest: string; size: number; blob: ProducedBlob };

export interface ProducedBlob {
  size: number;
  /** the bytes, or bytes [start, end); a whole blob fails (errors) rather than end with wrong bytes */
  open(range?: { start: number; end: number }): Promise<Readable>;
}

/** Blobs a higher layer can make (compress/: recompression recipes). */
export interface BlobProducer {
  find(digest: string, snap: Snapshot): ProducedBlob | undefined;
  /** the compressed form of a layer tar that synthesized manifests list, when they list compressed layers and it is known */
  synthesizedLayer?(diffDigest: string): { digest: string; size: number } | undefined;
  /** the layer a blob it can make comes from, when no layer record names that blob (a reused layer's other compression) */
  sourceLayer?(digest: string, snap: Snapshot): Layer | undefined;
}

export interface ServedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

/** `any-child`: an index is served when one platform's child is; `complete-only`: only when all are. */
export type IndexPolicy = 'any-child' | 'complete-only';

interface BlobMaps {
  configs: Map<string, { image: Image; key: string; size: number }>;
  layers: Map<string, Layer>;
  /** manifest digest → images holding a manifest* item with that digest */
  manifests: Map<string, { image: Image; key: string }[]>;
}

const blobMaps = new WeakMap<Snapshot, BlobMaps>();
/** what the stored indexes of an image record list (see Resolver.childrenOf) */
const listedChildren = new WeakMap<Image, Promise<string[]>>();

function mapsFor(store: Store, snap: Snapshot): BlobMaps {
  let m = blobMaps.get(snap);
  if (m) return m;
  m = { configs: new Map(), layers: new Map(), manifests: new Map() };
  for (const img of snap.images) {
    const key = configKey(img);
    const cd = key && img.bigDataDigests[key];
    if (key && cd) m.configs.set(cd, { image: img, key, size: img.bigDataSizes[key] ?? 0 });
    for (const k of img.bigDataNames) {
      const d = img.bigDataDigests[k];
      if (!k.startsWith('manifest') || !d) continue;
      const list = m.manifests.get(d) ?? [];
      list.push({ image: img, key: k });
      m.manifests.set(d, list);
    }
  }
  for (const l of snap.layers) {
    // Servable only when whole and rebuildable: complete, with a diff digest and a tar-split.
    if (l.incomplete || !l.diffDigest || l.diffSize === undefined || m.layers.has(l.diffDigest)) continue;
    if (!existsSync(store.tarSplitPath(l))) continue;
    m.layers.set(l.diffDigest, l);
  }
  blobMaps.set(snap, m);
  return m;
}

/** Does an Accept header take this media type? No header at all takes anything. */
export function accepts(accept: string | undefined, mediaType: string): boolean {
  if (!accept) return true;
  return accept.split(',').some((part) => {
    const t = part.split(';')[0].trim();
    return t === mediaType || t === '*/*';
  });
}

/** how deep indexes may nest (an index of indexes of images: 2) */
const MAX_INDEX_DEPTH = 4;

export class Resolver {
  private readonly maps: BlobMaps;

  constructor(
    private readonly store: Store,
    readonly snap: Snapshot,
    private readonly indexPolicy: IndexPolicy = 'any-child',
    private readonly cache?: BlobCache,
    private readonly producer?: BlobProducer,
    private readonly artifacts?: { has(digest: string): boolean },
  ) {
    this.maps = mapsFor(store, snap);
  }

  /** Where a blob's bytes come from, or undefined when csreg cannot produce them. */
  blob(digest: string): BlobSource | undefined {
    const c = this.maps.configs.get(digest);
    if (c) return { kind: 'bigdata', digest, size: c.size, image: c.image, key: c.key };
    // A layer's compressed digest equals its diff digest when it was stored uncompressed.
    const l = this.maps.layers.get(digest);
    if (l) return { kind: 'layer', digest, size: l.diffSize!, layer: l };
    const size = this.cache?.size(digest);
    if (size !== undefined) return { kind: 'cache', digest, size };
    const made = this.producer?.find(digest, this.snap);
    if (made) return { kind: 'produced', digest, size: made.size, blob: made };
    return undefined;
  }

  private async servableImageManifest(m: ParsedManifest): Promise<boolean> {
    if (!m.config || !this.blob(m.config.digest)) return false;
    return m.layers.every((d) => this.blob(d.digest));
  }

  /**
   * A stored manifest is servable when every blob it references is; an index per the policy,
   * its children being images, indexes (nested up to MAX_INDEX_DEPTH) or artifacts csreg
   * keeps; an empty index references nothing and is.
   */
  private async servable(m: ParsedManifest, depth = 0): Promise<boolean> {
    if (m.kind === 'image') return this.servableImageManifest(m);
    if (m.kind !== 'index' || depth > MAX_INDEX_DEPTH) return false;
    if (!m.manifests.length) return true;
    let any = false;
    for (const child of m.manifests) {
      const ok = this.artifacts?.has(child.digest) || !!(await this.storedManifest(child.digest, depth + 1));
      if (ok) any = true;
      else if (this.indexPolicy === 'complete-only') return false;
    }
    return any;
  }

  /** Stored manifest bytes with this digest, if some image holds them and they are servable. */
  private async storedManifest(digest: string, depth = 0, within?: Set<Image>): Promise<ServedManifest | undefined> {
    for (const { image, key } of this.maps.manifests.get(digest) ?? []) {
      if (within && !within.has(image)) continue;
      const served = await this.loadStored(image, key, depth);
      if (served && served.digest === digest) return served;
    }
    return undefined;
  }

  /** A manifest the image holds (big-data key), when every blob it names can be served. */
  servableStored(image: Image, key: string): Promise<ServedManifest | undefined> {
    return this.loadStored(image, key);
  }

  private async loadStored(image: Image, key: string, depth = 0): Promise<ServedManifest | undefined> {
    let bytes: Buffer;
    try {
      bytes = await this.store.imageBigData(image, key);
    } catch {
      return undefined; // removed since the snapshot
    }
    let parsed: ParsedManifest;
    try {
      parsed = parseManifest(bytes);
    } catch (e) {
      if (e instanceof ManifestError) return undefined;
      throw e;
    }
    if (!(await this.servable(parsed, depth))) return undefined;
    return { bytes, mediaType: parsed.mediaType, digest: sha256(bytes) };
  }

  /**
   * The synthesized manifest of an image, when its config and every layer can be produced:
   * with `gzip`, the layers compressed as a push would (only when the producer knows every
   * one's compressed form: `--synthesize gzip`), else the tars.
   */
  synthesized(image: Image, form: 'oci' | 'docker', layers: 'tar' | 'gzip' = 'tar'): ServedManifest | undefined {
    const key = configKey(image);
    if (!key || !image.topLayer) return undefined;
    const config = { digest: image.bigDataDigests[key], size: image.bigDataSizes[key] };
    if (!config.digest || config.size === undefined) return undefined;
    const chain = this.snap.layerChain(image.topLayer);
    if (chain.problem || !chain.layers.every((l) => l.diffDigest && this.maps.layers.get(l.diffDigest))) return undefined;
    const descs = layers === 'gzip'
      ? chain.layers.map((l) => this.producer?.synthesizedLayer?.(l.diffDigest!))
      : chain.layers.map((l) => ({ digest: l.diffDigest!, size: l.diffSize! }));
    if (!descs.every((d) => d !== undefined)) return undefined;
    const { bytes, mediaType } = synthesizeManifest(config, descs as { digest: string; size: number }[], form, layers === 'gzip');
    return { bytes, mediaType, digest: sha256(bytes) };
  }

  /** The synthesized form the client takes: OCI, or the Docker schema2 twin for clients without OCI; compressed layers when known. */
  private synthesizedFor(image: Image, accept: string | undefined, layers: ('tar' | 'gzip')[] = ['gzip', 'tar']): ServedManifest | undefined {
    const form = accepts(accept, MT.ociManifest) || !accepts(accept, MT.dockerManifest) ? 'oci' : 'docker';
    for (const l of layers) {
      const s = this.synthesized(image, form, l);
      if (s) return s;
    }
    return undefined;
  }

  /** By tag: the original manifest when servable and acceptable, else the synthesized one. */
  async forTag(repo: Repository, tag: string, accept?: string, pushedDigest?: (image: Image) => string | undefined): Promise<ServedManifest | undefined> {
    const image = repo.tags.get(tag);
    if (!image) return undefined;
    const pushed = pushedDigest?.(image);
    if (pushed && image.bigDataNames.includes(`manifest-${pushed}`)) {
      const stored = await this.loadStored(image, `manifest-${pushed}`);
      if (stored && accepts(accept, stored.mediaType)) return stored;
    }
    if (image.bigDataNames.includes('manifest')) {
      const stored = await this.loadStored(image, 'manifest');
      if (stored && accepts(accept, stored.mediaType)) {
        // a local manifest of uncompressed layers (buildah commit's) is what a push would
        // compress: with --synthesize gzip, the tag serves that pushed form instead, unless
        // it is signed (a signature covers this manifest only)
        const tars = parseManifest(stored.bytes).layers.every((d) => d.mediaType === MT.ociLayerTar || d.mediaType === MT.dockerLayerTar);
        return (tars && !isSigned(image, stored.digest) && this.synthesizedFor(image, accept, ['gzip'])) || stored;
      }
    }
    return this.synthesizedFor(image, accept);
  }

  /**
   * By digest: stored manifest bytes with that digest, or a synthesized form with that digest,
   * among the repository's images and the store's untagged ones.
   */
  async byDigest(repo: Repository | undefined, digest: string): Promise<ServedManifest | undefined> {
    const untagged = this.snap.images.filter((i) => i.names.length === 0);
    const candidates = new Set<Image>([...(repo?.images ?? []), ...untagged]);
    // An index's children belong to the index's repository, wherever the store keeps them.
    const inIndex = repo && (await this.indexChildren(repo.images)).has(digest);
    const stored = await this.storedManifest(digest, 0, inIndex ? undefined : candidates);
    if (stored) return stored;
    for (const image of candidates) {
      const s = this.synthesizedWithDigest(image, digest);
      if (s) return s;
    }
    return undefined;
  }

  /** The image's synthesized form (any media type and layer form) with this digest. */
  private synthesizedWithDigest(image: Image, digest: string): ServedManifest | undefined {
    for (const form of ['oci', 'docker'] as const) {
      for (const layers of ['gzip', 'tar'] as const) {
        const s = this.synthesized(image, form, layers);
        if (s?.digest === digest) return s;
      }
    }
    return undefined;
  }

  /** The repository's images that serve this manifest digest, stored or synthesized (what a DELETE by digest takes out of it). */
  imagesServing(repo: Repository, digest: string): Image[] {
    return [...repo.images].filter((i) => i.digests.includes(digest) || this.synthesizedWithDigest(i, digest));
  }

  /**
   * Whether a blob belongs to the repository, as distribution links blobs per repository: the
   * config or a layer (by diff or compressed digest) of one of its images, or of an image an
   * index of it lists. Access rules per repository would mean nothing otherwise.
   */
  async belongsTo(digest: string, repo: Repository): Promise<boolean> {
    if (this.usedBy(digest, repo.images)) return true;
    // (only then the images its indexes list: reading those costs a file per manifest)
    const listed: Image[] = [];
    for (const child of await this.indexChildren(repo.images)) listed.push(...this.snap.imagesWithDigest(child));
    return this.usedBy(digest, listed);
  }

  /** Whether the blob is the config or a layer (by diff, compressed, synthesized or reused-layer digest) of one of the images. */
  private usedBy(digest: string, images: Iterable<Image>): boolean {
    const made = (l: Layer) => !!l.diffDigest && this.producer?.synthesizedLayer?.(l.diffDigest)?.digest === digest;
    const source = this.producer?.sourceLayer?.(digest, this.snap);
    for (const img of images) {
      const key = configKey(img);
      if (key && img.bigDataDigests[key] === digest) return true;
      if (this.snap.layerChain(img.topLayer).layers.some((l) => l.diffDigest === digest || l.compressedDigest === digest || made(l) || l.id === source?.id)) return true;
    }
    return false;
  }

  /** Digests listed as children by the stored indexes of these images. */
  private async indexChildren(images: Iterable<Image>): Promise<Set<string>> {
    const out = new Set<string>();
    for (const image of images) for (const c of await this.childrenOf(image)) out.add(c);
    return out;
  }

  /**
   * The children its stored indexes list, once per image record: a record is replaced when
   * images.json changes, and its big data cannot change without that.
   */
  private childrenOf(image: Image): Promise<string[]> {
    let p = listedChildren.get(image);
    if (!p) {
      p = (async () => {
        const out: string[] = [];
        for (const key of image.bigDataNames) {
          if (!key.startsWith('manifest')) continue;
          try {
            out.push(...parseManifest(await this.store.imageBigData(image, key)).manifests.map((c) => c.digest));
          } catch {
            continue; // unreadable or removed: no children from it
          }
        }
        return out;
      })();
      listedChildren.set(image, p);
    }
    return p;
  }

  /** Stored manifests whose subject is this digest (the referrers API), within the given images. */
  async referrers(digest: string, images: Iterable<Image>): Promise<{ mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }[]> {
    const out = new Map<string, { mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }>();
    for (const image of images) {
      for (const key of image.bigDataNames) {
        if (!key.startsWith('manifest')) continue;
        const d = image.bigDataDigests[key];
        if (!d || out.has(d)) continue;
        let bytes: Buffer;
        try {
          bytes = await this.store.imageBigData(image, key);
        } catch {
          continue;
        }
        let m: ParsedManifest;
        try {
          m = parseManifest(bytes);
        } catch {
          continue;
        }
        if (m.subject?.digest !== digest) continue;
        out.set(d, { mediaType: m.mediaType, digest: d, size: bytes.length, artifactType: m.artifactType ?? m.config?.mediaType, annotations: m.annotations });
      }
    }
    return [...out.values()];
  }
}
