// A whole-store check: that every layer rebuilds to its recorded diff digest from its
// tar-split and files; that every image's layers and big data are there and match their
// recorded sizes and digests, its metadata is readable and holds its signatures' recorded
// sizes; and that every container's image and layer exist. What a registry serving the store
// needs to be true, checked before a client finds out; read-only, under the same read locks
// as any other read.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Snapshot } from './snapshot.js';
import type { Store } from './store.js';
import { metadataObject, recordedSlots } from './signatures.js';

export interface Problem {
  kind: 'layer' | 'image' | 'container';
  id: string;
  message: string;
}

export interface CheckProgress {
  /** a layer is about to be rebuilt (i of n) */
  layer?(i: number, n: number, id: string, bytes: number | undefined): void;
  /** bytes of the current layer rebuilt so far */
  bytes?(done: number): void;
}

export interface CheckResult {
  layers: number;
  layerBytes: number;
  images: number;
  containers: number;
  problems: Problem[];
}

const IMAGES_PER_LOCK = 200;

/** c/storage records a schema 1 signed manifest's digest without its signatures: not the sha256 of the bytes. */
function isSchema1(data: Buffer): boolean {
  try {
    return (JSON.parse(data.toString('utf8')) as { schemaVersion?: unknown }).schemaVersion === 1;
  } catch {
    return false;
  }
}

export async function checkStore(store: Store, snap: Snapshot, on: CheckProgress = {}): Promise<CheckResult> {
  const problems: Problem[] = [];
  const problem = (kind: Problem['kind'], id: string, message: string) => problems.push({ kind, id, message });
  // layers only containers use (their writable layers) have no diff to check
  const containerLayers = new Set(snap.containers.map((c) => c.layer));
  let layerBytes = 0;
  const layers = snap.layers.filter((l) => !containerLayers.has(l.id));
  for (const [i, l] of layers.entries()) {
    if (l.parent && !snap.layer(l.parent)) problem('layer', l.id, `its parent ${l.parent} is not in the store`);
    if (l.incomplete) {
      problem('layer', l.id, 'incomplete: a writer stopped before it was whole (deleted at the next write by podman or csreg serve --allow-push)');
      continue;
    }
    if (!l.diffDigest) {
      problem('layer', l.id, 'no diff digest recorded: its content cannot be checked');
      continue;
    }
    if (!existsSync(store.tarSplitPath(l))) {
      // (an empty layer made without a diff has none, and nothing to rebuild)
      if (l.diffSize) problem('layer', l.id, `no tar-split (${store.tarSplitPath(l)}): its tar cannot be rebuilt`);
      continue;
    }
    on.layer?.(i + 1, layers.length, l.id, l.diffSize);
    let done = 0;
    try {
      for await (const chunk of store.layerTarChunks(l.id)) {
        done += chunk.length;
        on.bytes?.(done);
      }
      layerBytes += done;
    } catch (e) {
      problem('layer', l.id, (e as Error).message);
    }
  }
  for (const img of snap.images) {
    const chain = snap.layerChain(img.topLayer);
    if (chain.problem) problem('image', img.id, `its layers: ${chain.problem}`);
    let meta: Record<string, unknown>;
    try {
      meta = metadataObject(img);
    } catch (e) {
      // (containers/image decodes it to read the image at all)
      problem('image', img.id, `${(e as Error).message}: containers/image cannot read this image`);
      continue;
    }
    for (const slot of recordedSlots(img, meta)) {
      const total = slot.sizes.reduce((a, b) => a + b, 0);
      const have = img.bigDataSizes[slot.key];
      if (total && (have ?? 0) < total) problem('image', img.id, `signatures of ${slot.digest}: ${total} bytes recorded, big data ${JSON.stringify(slot.key)} has ${have ?? 'none'}`);
    }
  }
  // big data in batches: each batch under one hold of the images lock, which writers wait for
  for (let at = 0; at < snap.images.length; at += IMAGES_PER_LOCK) {
    for (const { image: img, key, data, error } of await store.imagesBigData(snap.images.slice(at, at + IMAGES_PER_LOCK))) {
      if (!data) {
        problem('image', img.id, `big data ${JSON.stringify(key)}: ${error?.message}`);
        continue;
      }
      const size = img.bigDataSizes[key];
      if (size !== undefined && size !== data.length) problem('image', img.id, `big data ${JSON.stringify(key)} has ${data.length} bytes, recorded ${size}`);
      const digest = img.bigDataDigests[key];
      const actual = 'sha256:' + createHash('sha256').update(data).digest('hex');
      if (digest && digest !== actual && !(key.startsWith('manifest') && isSchema1(data))) {
        problem('image', img.id, `big data ${JSON.stringify(key)} has digest ${actual}, recorded ${digest}`);
      }
    }
  }
  for (const c of snap.containers) {
    if (c.image && !snap.images.some((i) => i.id === c.image)) problem('container', c.id, `its image ${c.image} is not in the store`);
    if (!snap.layer(c.layer)) problem('container', c.id, `its layer ${c.layer} is not in the store`);
  }
  return { layers: layers.length, layerBytes, images: snap.images.length, containers: snap.containers.length, problems };
}
