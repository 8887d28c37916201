// A pushed manifest becomes an image in the store, as if podman had pulled it: layers with
// containers/image's chain IDs (reused when present), each checked against the config's
// DiffID; the image ID is the config digest; the manifest is kept as big data under
// `manifest-<digest>` and `manifest`. Compressed blobs stay in the blob cache, since the store
// cannot reproduce them bit for bit. Indexes and artifacts become layer-less records.
import { createReadStream, createWriteStream, openSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Store } from '../storage/store.js';
import { BLOB_READ_CHUNK, StoreWriter, WriteError, chainLayerId } from '../storage/writer.js';
import { fileChunks } from '../storage/file-chunks.js';
import { hasDomain } from '../storage/snapshot.js';
import type { BlobCache } from './blob-cache.js';
import type { Artifacts } from './artifacts.js';
import { sha256 } from './digest.js';
import { MT } from './media.js';
import { parseManifest, ManifestError, type ParsedManifest } from './manifest.js';
import type { Resolver } from './resolver.js';
import type { RepositoryIndex } from './names.js';

export class CommitError extends Error {
  override name = 'CommitError';
  constructor(readonly code: 'MANIFEST_INVALID' | 'MANIFEST_BLOB_UNKNOWN' | 'DIGEST_INVALID', message: string) {
    super(message);
  }
}

/**
 * The store name of a push of tag T (or digest D) to repository R: `R:T` (`R@D`) when R
 * starts with a host, else `localhost/R:T`, as podman names local images and digested pulls.
 */
export function storeNameFor(repo: string, ref: string): string {
  const sep = ref.includes(':') ? '@' : ':';
  const slash = repo.indexOf('/');
  if (slash > 0) {
    const host = repo.slice(0, slash).replace(/_(\d+)$/, ':$1');
    const rest = repo.slice(slash + 1);
    if (hasDomain(`${host}/${rest}`)) return `${host}/${rest}${sep}${ref}`;
  }
  return `localhost/${repo}${sep}${ref}`;
}

export interface CommitOptions {
  store: Store;
  resolver: Resolver;
  cache: BlobCache;
  artifacts: Artifacts;
  repos: RepositoryIndex;
  repo: string;
  /** a tag, or the manifest's digest */
  reference: string;
  bytes: Buffer;
}

export interface CommitResult {
  digest: string;
  /** the store image it became (none for an artifact) */
  imageId?: string;
  subject?: string;
}

const IMAGE_CONFIGS = new Set<string>([MT.ociConfig, MT.dockerConfig]);

async function blobBytes(o: CommitOptions, digest: string): Promise<Buffer | undefined> {
  const file = o.cache.file(digest);
  if (file) {
    const parts: Buffer[] = [];
    for await (const c of createReadStream(file)) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }
  const src = o.resolver.blob(digest);
  if (src?.kind === 'bigdata') return o.store.imageBigData(src.image, src.key);
  return undefined;
}

/** Every blob the manifest names must be in the repository (pushed to it, or used by its images) before it is accepted. */
async function requireBlobs(o: CommitOptions, m: ParsedManifest): Promise<void> {
  const repo = o.repos.get(o.repo);
  for (const d of [...(m.config ? [m.config] : []), ...m.layers]) {
    const here = o.resolver.blob(d.digest) !== undefined && (o.cache.linkedTo(d.digest, o.repo) || (repo !== undefined && (await o.resolver.belongsTo(d.digest, repo))));
    if (!here) throw new CommitError('MANIFEST_BLOB_UNKNOWN', `blob ${d.digest} referenced by the manifest was not pushed to ${o.repo}`);
  }
}

/** The layer chain in the store, each layer reused when present, else created from its pushed blob; the top layer's ID. */
async function commitLayers(o: CommitOptions, writer: StoreWriter, layers: ParsedManifest['layers'], diffIds: string[]): Promise<string | undefined> {
  let parent: string | undefined;
  for (const [i, desc] of layers.entries()) {
    const diffId = diffIds[i];
    const id = chainLayerId(parent, diffId);
    const have = (await o.store.snapshot()).layer(id);
    if (!have || have.incomplete) {
      let file = o.cache.file(desc.digest);
      let spooled: string | undefined;
      const src = o.resolver.blob(desc.digest);
      if (!file && (src?.kind === 'layer' || src?.kind === 'produced')) {
        // The same tar in another chain (as stored, or its original blob made again: a blob
        // mounted from a store image's repository): copied aside first, since making it holds
        // the layers read lock that creating the new layer must take for writing.
        file = spooled = await o.cache.scratch();
        await pipeline(src.kind === 'layer' ? await o.store.layerTar(src.layer.id) : await src.blob.open(), createWriteStream(spooled, { mode: 0o600 }));
      }
      if (!file) throw new CommitError('MANIFEST_BLOB_UNKNOWN', `layer ${desc.digest} is not available`);
      const blob = fileChunks(openSync(file, 'r'), BLOB_READ_CHUNK);
      try {
        await writer.createLayer(blob, { id, parent, expectedDiffDigest: diffId, expectedCompressedDigest: desc.digest, reuse: true });
      } catch (e) {
        if (e instanceof WriteError && e.vanished) throw e;
        throw new CommitError('MANIFEST_INVALID', `layer ${i} (${desc.digest}): ${(e as Error).message}`);
      } finally {
        blob.destroy(); // unread when an existing layer was reused
        if (spooled) await rm(spooled, { force: true });
      }
    }
    // An uncompressed blob is rebuilt from the store from now on; a compressed one stays cached.
    if (desc.digest === diffId) await o.cache.remove(desc.digest);
    parent = id;
  }
  return parent;
}

export async function commitManifest(o: CommitOptions): Promise<CommitResult> {
  let m: ParsedManifest;
  try {
    m = parseManifest(o.bytes);
  } catch (e) {
    if (e instanceof ManifestError) throw new CommitError('MANIFEST_INVALID', e.message);
    throw e;
  }
  const digest = sha256(o.bytes);
  const byDigest = o.reference.includes(':');
  if (byDigest && o.reference !== digest) throw new CommitError('DIGEST_INVALID', `manifest has digest ${digest}, not ${o.reference}`);
  // by digest: no tag, but the digested name podman records too, so the repository reaches it
  const names = [storeNameFor(o.repo, o.reference)];
  const writer = new StoreWriter(o.store);
  const manifestData = [
    { key: `manifest-${digest}`, data: o.bytes, digest },
    { key: 'manifest', data: o.bytes, digest },
  ];

  if (m.kind === 'index') {
    // children must have been pushed to this repository (an index makes its children's
    // blobs part of the repository, so another repository's must not come in through it)
    const own = [...(o.repos.get(o.repo)?.images ?? [])];
    for (const child of m.manifests) {
      if (!own.some((i) => i.digests.includes(child.digest)) && !o.artifacts.get(o.repo, child.digest)) {
        throw new CommitError('MANIFEST_BLOB_UNKNOWN', `manifest ${child.digest} listed by the index was not pushed to ${o.repo}`);
      }
    }
    const id = digest.slice('sha256:'.length);
    await writer.createImage({ id, names, bigData: manifestData });
    return { digest, imageId: id, subject: m.subject?.digest };
  }
  if (m.kind !== 'image') throw new CommitError('MANIFEST_INVALID', `unsupported manifest type ${JSON.stringify(m.mediaType)}`);
  await requireBlobs(o, m);
  const configBytes = await blobBytes(o, m.config!.digest);
  if (!configBytes || sha256(configBytes) !== m.config!.digest) throw new CommitError('MANIFEST_BLOB_UNKNOWN', `config ${m.config!.digest} is not available`);

  // An artifact (its config is not an image config) stays with csreg, out of podman's way.
  if (!IMAGE_CONFIGS.has(m.config!.mediaType)) {
    await o.artifacts.put(o.repo, byDigest ? undefined : o.reference, o.bytes, digest, m);
    return { digest, subject: m.subject?.digest };
  }

  let config: { rootfs?: { diff_ids?: unknown } };
  try {
    config = JSON.parse(configBytes.toString('utf8')) as typeof config;
  } catch (e) {
    throw new CommitError('MANIFEST_INVALID', `config is not JSON: ${(e as Error).message}`);
  }
  const diffIds = config.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== m.layers.length || !diffIds.every((d) => typeof d === 'string' && /^sha256:[a-f0-9]{64}$/.test(d))) {
    throw new CommitError('MANIFEST_INVALID', 'config rootfs.diff_ids does not match the manifest layers');
  }
  const imageId = m.config!.digest.slice('sha256:'.length);
  // podman may delete layers we build on (its `rmi`) while we commit: start over when it did.
  for (let attempt = 1; ; attempt++) {
    try {
      const top = await commitLayers(o, writer, m.layers, diffIds as string[]);
      await writer.createImage({
        id: imageId,
        topLayer: top,
        names,
        bigData: [{ key: m.config!.digest, data: configBytes }, ...manifestData],
        keepDefaultManifest: true, // (a push to one repository changes no other name's manifest; the pushed tag serves this one through TagManifests)
      });
      break;
    } catch (e) {
      if (!(e instanceof WriteError && e.vanished && attempt < 4)) throw e;
    }
  }
  return { digest, imageId, subject: m.subject?.digest };
}
