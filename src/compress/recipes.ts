// Which compressor reproduces each layer's original blob (its "recipe"), found lazily or by a
// scan, kept in csreg's state directory (recipes.json, keyed by the original compressed
// digest), and the producer that serves those blobs from the rebuilt tar on worker threads.
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Worker } from 'node:worker_threads';
import type { Store } from '../storage/store.js';
import type { Snapshot } from '../storage/snapshot.js';
import type { Image, Layer } from '../storage/records.js';
import type { BlobProducer, ProducedBlob } from '../oci/resolver.js';
import { StateFile } from '../oci/state-file.js';
import { BlobCache } from '../oci/blob-cache.js';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { orderProfiles, PROFILES } from './profiles.js';
import type { Reproduction } from './produce.js';
import type { Job, WorkerMessage } from './recipe-worker.js';

export interface Verdict extends Partial<Reproduction> {
  /** the profile that reproduces the blob, or null: none of those tried does */
  profile: string | null;
  diffDigest: string;
  size: number;
  tried: string[];
  at: string;
}

const GZIP = 2;
const WORKER = new URL('./recipe-worker.js', import.meta.url);

/** Layers whose original blob only a recipe can give: gzip, with a compressed digest other than the tar's, rebuildable. */
const candidateMaps = new WeakMap<Snapshot, Map<string, Layer>>();
export function recompressible(snap: Snapshot): Map<string, Layer> {
  let m = candidateMaps.get(snap);
  if (!m) {
    m = new Map();
    for (const l of snap.layers) {
      if (l.incomplete || l.compression !== GZIP || !l.compressedDigest || !l.compressedSize || !l.diffDigest) continue;
      if (l.compressedDigest !== l.diffDigest && !m.has(l.compressedDigest)) m.set(l.compressedDigest, l);
    }
    candidateMaps.set(snap, m);
  }
  return m;
}

function runWorker(job: Job, onMessage: (m: WorkerMessage, w: Worker) => void): Worker {
  const w = new Worker(WORKER, { workerData: job });
  w.on('message', (m: WorkerMessage) => onMessage(m, w));
  return w;
}

export class Recipes implements BlobProducer {
  private readonly file: StateFile<Record<string, Verdict>>;
  private readonly running = new Map<string, Promise<Verdict>>();
  /** detections run one at a time: each keeps a core busy */
  private queue: Promise<unknown> = Promise.resolve();

  /** produced blobs kept for repeat pulls (optional, size-limited, least recently used first) */
  private readonly produced?: BlobCache;

  constructor(stateDir: string, private readonly store: Store, opts: { cacheMaxBytes?: number } = {}) {
    this.file = new StateFile(join(stateDir, 'recipes.json'), () => ({}));
    if (opts.cacheMaxBytes) this.produced = new BlobCache(join(stateDir, 'produced'), { maxBytes: opts.cacheMaxBytes, graceMs: 0 });
  }

  verdict(digest: string): Verdict | undefined {
    return this.file.get()[digest];
  }

  /** Profiles a layer has not been tried with: all without a verdict, the newer ones after "not reproducible". */
  private untried(digest: string): string[] {
    const v = this.verdict(digest);
    if (v?.profile) return [];
    return PROFILES.map((p) => p.id).filter((id) => !v?.tried.includes(id));
  }

  /** BlobProducer: an original blob a known recipe reproduces from a layer of this snapshot. */
  find(digest: string, snap: Snapshot): ProducedBlob | undefined {
    const v = this.verdict(digest);
    const layer = v?.profile ? recompressible(snap).get(digest) : undefined;
    if (!v?.profile || !layer || layer.diffDigest !== v.diffDigest || v.trailer === undefined) return undefined;
    const rep: Reproduction = { blockOffsets: v.blockOffsets, trailer: v.trailer };
    const target = { digest, size: v.size };
    const cached = this.produced?.size(digest) === v.size;
    return {
      size: v.size,
      open: async (range) => {
        if (cached) return this.produced!.open(digest, range);
        const out = this.stream({ kind: 'produce', location: this.store.location, layerId: layer.id, tarSize: layer.diffSize ?? 0, target, profile: v.profile!, rep, range });
        return this.produced && !range ? this.keep(out, digest) : out;
      },
    };
  }

  /** Find recipes for those of the digests that are recompressible layers without a verdict yet. */
  async ensure(digests: Iterable<string>, snap: Snapshot, onProgress?: (bytes: number) => void): Promise<void> {
    const layers = recompressible(snap);
    const work: Promise<Verdict>[] = [];
    for (const d of digests) {
      const layer = layers.get(d);
      if (layer && this.untried(d).length) work.push(this.detect(d, layer, onProgress));
    }
    await Promise.all(work);
  }

  /** Find recipes for every recompressible layer of the snapshot that has no verdict yet, one after the other. */
  async scan(snap: Snapshot, on: { progress?: (bytes: number) => void; layer?: (i: number, n: number, digest: string, v: Verdict | undefined, ms: number) => void } = {}): Promise<void> {
    const pending = [...recompressible(snap).keys()].filter((d) => this.untried(d).length);
    for (const [i, digest] of pending.entries()) {
      const started = Date.now();
      await this.ensure([digest], snap, on.progress);
      on.layer?.(i + 1, pending.length, digest, this.verdict(digest), Date.now() - started);
    }
  }

  /** The same for every layer of these images (their original manifests need all of them). */
  ensureImages(images: Image[], snap: Snapshot): Promise<void> {
    const digests = images.flatMap((i) => snap.layerChain(i.topLayer).layers.map((l) => l.compressedDigest ?? ''));
    return this.ensure(digests, snap);
  }

  private detect(digest: string, layer: Layer, onProgress?: (bytes: number) => void): Promise<Verdict> {
    let p = this.running.get(digest);
    if (p) return p;
    const matches = new Map<string, number>();
    for (const v of Object.values(this.file.get())) if (v.profile) matches.set(v.profile, (matches.get(v.profile) ?? 0) + 1);
    const job: Job = {
      kind: 'detect', location: this.store.location, layerId: layer.id, tarSize: layer.diffSize ?? 0,
      target: { digest, size: layer.compressedSize! }, candidates: orderProfiles(matches).map((x) => x.id).filter((id) => this.untried(digest).includes(id)),
    };
    p = (this.queue = this.queue.catch(() => undefined).then(() => new Promise<Verdict>((resolve, reject) => {
      let settled = false;
      const w = runWorker(job, (m) => {
        if ('progress' in m) onProgress?.(m.progress);
        else if ('result' in m) {
          settled = true;
          const before = this.verdict(digest)?.tried ?? [];
          resolve({ ...m.result, tried: [...before, ...m.result.tried], diffDigest: layer.diffDigest!, size: layer.compressedSize!, at: new Date().toISOString() });
        } else if ('error' in m) {
          settled = true;
          reject(new Error(`recipe detection for ${digest} (layer ${layer.id}): ${m.error}`));
        }
      });
      w.on('error', reject);
      w.on('exit', () => settled || reject(new Error(`recipe worker for ${digest} exited early`)));
    }))) as Promise<Verdict>;
    p = p.then(async (v) => {
      await this.file.update((doc) => {
        doc[digest] = v;
      });
      return v;
    }).finally(() => this.running.delete(digest));
    this.running.set(digest, p);
    return p;
  }

  /** A whole produced blob passes through, copied into the cache, which adopts it only once verified. */
  private async keep(out: Readable, digest: string): Promise<Readable> {
    const cache = this.produced!;
    const file = await cache.scratch();
    const copy = createWriteStream(file, { mode: 0o600 });
    const tee = new Transform({
      transform(c: Buffer, _e, cb) {
        copy.write(c);
        cb(null, c);
      },
    });
    pipeline(out, tee).then(
      () => copy.end(async () => {
        try {
          if (await cache.adopt(file, digest)) await cache.enforceLimit();
          else await rm(file, { force: true });
        } catch { /* the cache is best effort */ }
      }),
      () => {
        copy.destroy();
        void rm(file, { force: true });
      },
    );
    return tee;
  }

  /** A produce job as a Readable: the worker sends chunks as the reader takes them (credit-based). */
  private stream(job: Job): Readable {
    let worker: Worker | undefined;
    let owed = 0;
    const grant = (n: number) => worker?.postMessage({ credit: n });
    const out = new Readable({
      highWaterMark: 4 << 20,
      read() {
        if (owed) {
          grant(owed);
          owed = 0;
        }
      },
      destroy(err, cb) {
        void worker?.terminate();
        cb(err);
      },
    });
    worker = runWorker(job, (m) => {
      if ('chunk' in m) {
        if (out.push(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength))) grant(1);
        else owed++;
      } else if ('done' in m) out.push(null);
      else if ('error' in m) out.destroy(new Error(m.error));
    });
    worker.on('error', (e) => out.destroy(e));
    grant(8);
    return out;
  }
}
