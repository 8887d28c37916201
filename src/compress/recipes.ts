// Which compressor reproduces each layer's original blob (its "recipe"), found lazily or by a
// scan, kept in csreg's state directory (recipes.json, keyed by the original compressed
// digest), and the producer that serves those blobs from the rebuilt tar on worker threads.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import type { Store } from '../storage/store.js';
import type { Snapshot } from '../storage/snapshot.js';
import type { Image, Layer } from '../storage/records.js';
import type { BlobProducer, ProducedBlob } from '../oci/resolver.js';
import { StateFile } from '../oci/state-file.js';
import { configKey, parseManifest } from '../oci/manifest.js';
import { MT } from '../oci/media.js';
import { hintedProfiles } from './hints.js';
import { orderProfiles, PROFILES } from './profiles.js';
import type { Reproduction } from './produce.js';
import type { Job, ParentMessage, WorkerMessage } from './recipe-worker.js';

export interface Verdict extends Partial<Reproduction> {
  /** the profile that reproduces the blob, or null: none of those tried does */
  profile: string | null;
  /** a compressed form csreg made itself for synthesized manifests (`--synthesize gzip`), not an original */
  made?: true;
  diffDigest: string;
  size: number;
  tried: string[];
  at: string;
}

const GZIP = 2;
/** How synthesized manifests compress layers with `--synthesize gzip`: as containers/image pushes them. */
export const SYNTHESIZE_PROFILE = PROFILES[0].id;

/** Keeps blobs made while measuring: the served-blob cache (oci/served.ts). */
export interface BlobKeeper {
  reserve(size: number): string | undefined;
  adopt(file: string, digest: string): Promise<void>;
}

/** What synthesized manifests list as layers: the tars, or the tars compressed as a push would. */
export type SynthesizeForm = 'tar' | 'gzip';
const WORKER = new URL('./recipe-worker.js', import.meta.url);

/** Complete layers by diff digest. */
const diffMaps = new WeakMap<Snapshot, Map<string, Layer>>();
function byDiff(snap: Snapshot): Map<string, Layer> {
  let m = diffMaps.get(snap);
  if (!m) {
    m = new Map();
    for (const l of snap.layers) if (!l.incomplete && l.diffDigest && !m.has(l.diffDigest)) m.set(l.diffDigest, l);
    diffMaps.set(snap, m);
  }
  return m;
}

/**
 * For each layer, the image most likely to have brought it into the store: of the images whose
 * chain holds it, the one with the fewest layers (a base image pulled from a registry, rather
 * than an image built on it here); with the layer's place in its chain (0 = bottom) and the
 * chain's length.
 */
const imageMaps = new WeakMap<Snapshot, Map<string, { image: Image; index: number; layers: number }>>();
export function imageOfLayer(snap: Snapshot): Map<string, { image: Image; index: number; layers: number }> {
  let m = imageMaps.get(snap);
  if (!m) {
    m = new Map();
    for (const image of snap.images) {
      const chain = snap.layerChain(image.topLayer);
      if (chain.problem) continue;
      chain.layers.forEach((l, index) => {
        const known = m!.get(l.id);
        if (!known || known.layers > chain.layers.length) m!.set(l.id, { image, index, layers: chain.layers.length });
      });
    }
    imageMaps.set(snap, m);
  }
  return m;
}

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

/**
 * Layers an image's manifest names by a compressed digest their record does not keep: the store
 * had the tar already (pulled with another compression) and containers/image reused the layer,
 * which keeps its first digest. Digest → layer and blob size, per snapshot, noted as manifests
 * are read (noteReusedLayers); a layer is paired with the manifest's entry of the same index in
 * its image's chain (which follows the config's diff_ids), and detection checks the pairing.
 */
const reusedMaps = new WeakMap<Snapshot, Map<string, Reused>>();
/** a reused layer's original blob: the layer, the blob's size, and where the image that names it has it (its hints) */
interface Reused {
  layer: Layer;
  size: number;
  at: { image: Image; index: number; layers: number };
}
/** the digests each image record's manifests name by reuse (a record's manifests never change) */
const reusedByImage = new WeakMap<Image, Promise<{ digest: string; index: number; size: number }[]>>();

function reusedIn(snap: Snapshot): Map<string, Reused> {
  let m = reusedMaps.get(snap);
  if (!m) reusedMaps.set(snap, (m = new Map()));
  return m;
}

/** A layer whose original blob a recipe can give, by that blob's digest: recorded on the layer, or named by a manifest that reused it. */
export function recompressibleLayer(snap: Snapshot, digest: string): { layer: Layer; size: number } | undefined {
  const l = recompressible(snap).get(digest);
  return l ? { layer: l, size: l.compressedSize! } : reusedIn(snap).get(digest);
}

/** Every layer whose original blob a recipe can give, by blob digest: those recorded, and the reused ones noted so far. */
export function recompressibleLayers(snap: Snapshot): [string, { layer: Layer; size: number }][] {
  const recorded = recompressible(snap);
  return [...[...recorded].map(([d, l]): [string, { layer: Layer; size: number }] => [d, { layer: l, size: l.compressedSize! }]), ...[...reusedIn(snap)].filter(([d]) => !recorded.has(d))];
}

/** The reused layers' digests (see reusedMaps) of these images, noted for the snapshot and returned. */
export async function noteReusedLayers(store: Store, images: Iterable<Image>, snap: Snapshot): Promise<string[]> {
  const found: string[] = [];
  for (const image of images) {
    const chain = snap.layerChain(image.topLayer);
    if (chain.problem) continue;
    let named = reusedByImage.get(image);
    if (!named) reusedByImage.set(image, (named = manifestGzipLayers(store, image)));
    for (const { digest, index, size } of await named) {
      const l = chain.layers[index];
      if (!l || l.incomplete || !l.diffDigest || digest === l.compressedDigest || digest === l.diffDigest) continue;
      // another layer records the blob (a push of it made one): made from that one, but this
      // image's manifest names it all the same, so it is this image's blob too (if the tars agree)
      const recorded = recompressible(snap).get(digest);
      if (recorded && recorded.diffDigest !== l.diffDigest) continue;
      if (!reusedIn(snap).has(digest)) reusedIn(snap).set(digest, { layer: l, size, at: { image, index, layers: chain.layers.length } });
      found.push(digest);
    }
  }
  return found;
}

/** The gzip layers of the image's own stored manifests (those of its config), by index (none when a manifest cannot be read). */
async function manifestGzipLayers(store: Store, image: Image): Promise<{ digest: string; index: number; size: number }[]> {
  const out: { digest: string; index: number; size: number }[] = [];
  const configName = configKey(image);
  const config = configName && image.bigDataDigests[configName];
  for (const key of image.bigDataNames.filter((k) => k.startsWith('manifest'))) {
    try {
      const m = parseManifest(await store.imageBigData(image, key));
      if (m.kind !== 'image' || !config || m.config?.digest !== config) continue;
      m.layers.forEach((d, index) => {
        if (d.mediaType === MT.ociLayerGzip || d.mediaType === MT.dockerLayerGzip) out.push({ digest: d.digest, index, size: d.size });
      });
    } catch {
      // unreadable or malformed: no pairing from it
    }
  }
  return out;
}

/**
 * Recompression threads that finished a job, kept for the next one: a fresh job costs ~0.3 s
 * more (starting its threads, JIT of the tar path; before the WebAssembly encoders, 3-4x over
 * the first 10 MB), which made most of a first pull's time.
 * A few are kept, for a while; one whose produce job was given up is kept once the job has
 * stopped, one whose other job was given up (at shutdown) is ended.
 */
const KEEP_WORKERS = 2; // (each has a block pool of one thread per core: more would cost memory on big machines)
const KEEP_WORKERS_MS = 60_000;
/** a produce job asked to stop that has not within this long has its thread ended */
const STOP_GRACE_MS = 10_000;
const idleWorkers: { w: Worker; timer: NodeJS.Timeout }[] = [];
/** Jobs run on new threads and on kept ones, jobs given up (a produce job stopped, its thread kept; any other ended with its thread), produce jobs that waited for a slot or gave theirs up to a reader that stopped (tests check each). */
const threadUse = { started: 0, reused: 0, stopped: 0, waited: 0, stalled: 0 };

/**
 * Blobs produced at once, at most: a client pulls its layers side by side, and five produce
 * jobs on 2 cores took longer than one after another (each beyond the kept threads starts
 * cold, and they share the cores). A job whose reader stops taking bytes (a slow or stalled
 * client) gives its slot up while it waits, so no client can hold the others back.
 */
export const PRODUCE_SLOTS = KEEP_WORKERS; // (each slot has a warm thread)
let producing = 0;
const slotQueue: (() => void)[] = [];

/** A slot for a produce job: `start` runs once one is free (at once if one is). Returns the job's handle on it. */
function produceSlot(start: () => void): { release(): void; resume(): void; cancel(): void } {
  let holding = false;
  let started = false;
  let ended = false;
  const take = () => {
    holding = true;
    producing++;
  };
  const go = () => {
    if (ended) return;
    take();
    started = true;
    start();
  };
  const release = () => {
    if (!holding) return;
    holding = false;
    producing--;
    while (producing < PRODUCE_SLOTS && slotQueue.length) slotQueue.shift()!();
  };
  if (producing < PRODUCE_SLOTS) go();
  else {
    threadUse.waited++;
    slotQueue.push(go);
  }
  return {
    /** the reader stopped taking bytes, or the job ended */
    release,
    /** the reader takes bytes again (a stalled job resumes even over the limit: it was let in before) */
    resume: () => {
      if (started && !ended && !holding) take();
    },
    /** the job ended (or was given up before it started) */
    cancel: () => {
      ended = true;
      release();
      const i = slotQueue.indexOf(go);
      if (i >= 0) slotQueue.splice(i, 1);
    },
  };
}
/** …and, now, how many produce slots are taken. */
export const recompressionThreads = (): Readonly<typeof threadUse & { producing: number }> => ({ ...threadUse, producing });

interface JobRun {
  /** the job's thread, for credit */
  post(m: ParentMessage): void;
  /** give the job up: its thread is ended */
  stop(): void;
}

/** End the kept threads now (at shutdown: their timers would hold them for a minute). */
function endIdleWorkers(): void {
  for (const { w, timer } of idleWorkers.splice(0)) {
    clearTimeout(timer);
    void w.terminate();
  }
}

function newWorker(): Worker {
  const w = new Worker(WORKER);
  // (a job listens for its own failures; these outlast jobs, for a thread that ends while kept)
  w.on('error', () => undefined);
  w.on('exit', () => {
    const i = idleWorkers.findIndex((x) => x.w === w);
    if (i >= 0) clearTimeout(idleWorkers.splice(i, 1)[0].timer);
  });
  return w;
}

/** Runs a job on a kept thread or a new one; onMessage sees its messages until its last. */
function runWorker(job: Job, onMessage: (m: WorkerMessage) => void, onFail: (e: Error) => void): JobRun {
  const kept = idleWorkers.pop();
  if (kept) clearTimeout(kept.timer);
  threadUse[kept ? 'reused' : 'started']++;
  const w = kept?.w ?? newWorker();
  let finished = false;
  const fail = (e: Error) => {
    if (finished) return;
    finished = true;
    onFail(e);
  };
  const onExit = (code: number) => fail(new Error(`${job.kind} worker for layer ${job.layerId} exited early (${code})`));
  const message = (m: WorkerMessage) => {
    if (finished) return;
    const last = 'done' in m || 'result' in m || 'measured' in m || 'error' in m;
    if (last) {
      finished = true;
      release();
    }
    onMessage(m);
  };
  const release = () => {
    w.off('message', message).off('error', fail).off('exit', onExit);
    if (idleWorkers.length >= KEEP_WORKERS) return void w.terminate();
    const timer = setTimeout(() => void w.terminate(), KEEP_WORKERS_MS).unref();
    w.unref();
    idleWorkers.push({ w, timer });
  };
  w.on('message', message).on('error', fail).on('exit', onExit);
  w.ref();
  w.postMessage({ job } satisfies ParentMessage);
  return {
    post: (m) => finished || w.postMessage(m),
    stop: () => {
      if (finished) return;
      finished = true;
      threadUse.stopped++;
      w.off('message', message).off('error', fail).off('exit', onExit);
      if (job.kind !== 'produce') return void w.terminate();
      // A produce job (its client left) is asked to stop rather than its thread ended: the
      // layer files its rebuild has open were opened outside Node's tracking, and would stay
      // open for good. Its last chunks are dropped; the thread is kept once the job has ended.
      const timer = setTimeout(() => void w.terminate(), STOP_GRACE_MS);
      const ended = (m: WorkerMessage) => {
        if (!('done' in m || 'error' in m)) return;
        clearTimeout(timer);
        w.off('message', ended).off('exit', gone);
        release();
      };
      const gone = () => {
        clearTimeout(timer);
        w.off('message', ended);
      };
      w.on('message', ended).on('exit', gone);
      w.postMessage({ stop: true } satisfies ParentMessage);
    },
  };
}

const CLOSED = 'stopped: csreg is shutting down';

export interface ScanProgress {
  progress?: (bytes: number) => void;
  /** a layer's recipe search is done (i of n; its verdict) */
  layer?: (i: number, n: number, digest: string, v: Verdict | undefined, ms: number) => void;
  /** a layer's `--synthesize gzip` form is known (i of n, by its diff digest) */
  made?: (i: number, n: number, diffDigest: string, ms: number) => void;
}

export class Recipes implements BlobProducer {
  private readonly file: StateFile<Record<string, Verdict>>;
  private readonly running = new Map<string, Promise<Verdict>>();
  /** detections run one at a time: each keeps a core busy */
  private queue: Promise<unknown> = Promise.resolve();
  /** detect and measure jobs running now, each with what fails it (close() stops them) */
  private readonly jobs = new Map<JobRun, (e: Error) => void>();
  private closed = false;

  /** diff digest → the SYNTHESIZE_PROFILE form of that tar (from any verdict, original or made) */
  private synthesizedForms?: Map<string, { digest: string; size: number }>;

  /**
   * @param keeper where a blob compressed for `--synthesize gzip` is kept as it is measured,
   * and an original blob as a recipe is found for it (the served-blob cache), so that its first
   * pull reads it instead of compressing it again
   */
  constructor(stateDir: string, private readonly store: Store, readonly synthesize: SynthesizeForm = 'tar', private readonly keeper?: BlobKeeper) {
    this.file = new StateFile(join(stateDir, 'recipes.json'), () => ({}));
  }

  /** The compressed form of a tar that synthesized manifests list with `--synthesize gzip`, once known. */
  synthesizedLayer(diffDigest: string): { digest: string; size: number } | undefined {
    if (this.synthesize !== 'gzip') return undefined;
    if (!this.synthesizedForms) {
      this.synthesizedForms = new Map();
      for (const [digest, v] of Object.entries(this.file.get())) {
        if (v.profile === SYNTHESIZE_PROFILE && v.trailer !== undefined) this.synthesizedForms.set(v.diffDigest, { digest, size: v.size });
      }
    }
    return this.synthesizedForms.get(diffDigest);
  }

  private async record(digest: string, v: Verdict): Promise<void> {
    await this.file.update((doc) => {
      doc[digest] = v;
    });
    this.synthesizedForms = undefined;
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
    // an original blob: the layer that records it; a form csreg made: any layer with that tar
    const layer = v?.profile ? (v.made ? byDiff(snap).get(v.diffDigest) : recompressibleLayer(snap, digest)?.layer) : undefined;
    if (!v?.profile || !layer || layer.diffDigest !== v.diffDigest || v.trailer === undefined) return undefined;
    const rep: Reproduction = { blockOffsets: v.blockOffsets, trailer: v.trailer };
    const target = { digest, size: v.size };
    return {
      size: v.size,
      open: async (range) => this.stream({ kind: 'produce', location: this.store.location, layerId: layer.id, tarSize: layer.diffSize ?? 0, target, profile: v.profile!, rep, range }),
    };
  }

  /** Find recipes for those of the digests that are recompressible layers without a verdict yet. */
  async ensure(digests: Iterable<string>, snap: Snapshot, onProgress?: (bytes: number) => void): Promise<void> {
    const work: Promise<unknown>[] = [];
    for (const d of digests) {
      const c = recompressibleLayer(snap, d);
      if (c && this.untried(d).length) work.push(this.unlessGone(c.layer, this.detect(d, c.layer, c.size, snap, onProgress)));
    }
    await Promise.all(work);
  }

  /**
   * A detection or compression of a layer that failed because the layer was deleted meanwhile
   * (an image deleted just after its push or pull, or during a scan) is no failure: there is
   * nothing left to do.
   */
  private async unlessGone(layer: Layer, work: Promise<unknown>): Promise<void> {
    try {
      await work;
    } catch (e) {
      if ((await this.store.snapshot()).layer(layer.id)) throw e;
    }
  }

  /** BlobProducer: the layer a reused layer's original blob is made from. */
  sourceLayer(digest: string, snap: Snapshot): Layer | undefined {
    return reusedIn(snap).get(digest)?.layer;
  }

  /** Notes the layers these images' manifests name by reuse (see reusedMaps); their digests. */
  noteReused(images: Iterable<Image>, snap: Snapshot): Promise<string[]> {
    return noteReusedLayers(this.store, images, snap);
  }

  /**
   * Find recipes for every recompressible layer of the snapshot that has no verdict yet, one
   * after the other; then, with `--synthesize gzip`, compress every layer that synthesized
   * manifests list compressed and whose form is not known yet, so that no first pull waits
   * for it (a tag waits 15 s at most, then gets the tar form). `held`: as for ensureImages.
   */
  async scan(snap: Snapshot, on: ScanProgress = {}, held: (digest: string) => boolean = () => false): Promise<void> {
    const reused = await this.noteReused(snap.images, snap);
    const pending = [...new Set([...recompressible(snap).keys(), ...reused])].filter((d) => this.untried(d).length);
    try {
      for (const [i, digest] of pending.entries()) {
        const started = Date.now();
        await this.ensure([digest], snap, on.progress);
        on.layer?.(i + 1, pending.length, digest, this.verdict(digest), Date.now() - started);
      }
      // (after the recipes: a layer whose original blob is servable needs no form of csreg's)
      const making = this.unmade(snap.images.flatMap((i) => snap.layerChain(i.topLayer).layers), held);
      for (const [i, layer] of making.entries()) {
        const started = Date.now();
        await this.unlessGone(layer, this.make(layer));
        on.made?.(i + 1, making.length, layer.diffDigest!, Date.now() - started);
      }
    } catch (e) {
      if (this.closed) return;
      throw e;
    }
  }

  /**
   * The same for every layer of these images (their original manifests need all of them); then,
   * with `--synthesize gzip`, the compressed form of every layer whose original is not servable.
   * `held`: blobs servable without a recipe (see below); `onError`: a background detection failed.
   */
  async ensureImages(images: Image[], snap: Snapshot, held: (digest: string) => boolean = () => false, onError?: (e: Error) => void): Promise<void> {
    const layers = images.flatMap((i) => snap.layerChain(i.topLayer).layers);
    const digests = [...layers.map((l) => l.compressedDigest ?? ''), ...(await this.noteReused(images, snap))];
    // Blobs held already (pushed: the blob cache has them) are servable now; their recipes, which
    // let the cache drop them later, are found in the background rather than awaited.
    void this.ensure(digests.filter(held), snap).catch((e: Error) => this.closed || onError?.(e));
    await this.ensure(digests.filter((d) => !held(d)), snap);
    await Promise.all(this.unmade(layers, held).map((l) => this.unlessGone(l, this.make(l))));
  }

  /** With `--synthesize gzip`: the layers (once each) synthesized manifests list compressed whose compressed form is not known yet. */
  private unmade(layers: Layer[], held: (digest: string) => boolean): Layer[] {
    if (this.synthesize !== 'gzip') return [];
    const original = (l: Layer) => l.compressedDigest !== undefined && l.compressedDigest !== l.diffDigest && (held(l.compressedDigest) || !!this.verdict(l.compressedDigest)?.profile);
    const once = new Map(layers.filter((l) => l.diffDigest && !original(l) && !this.synthesizedLayer(l.diffDigest)).map((l) => [l.diffDigest!, l]));
    return [...once.values()];
  }

  /** Compress a layer's tar as synthesized manifests list it, and record what that gives. */
  private make(layer: Layer): Promise<Verdict> {
    const key = `made:${layer.diffDigest}`;
    let p = this.running.get(key);
    if (p) return p;
    const keepTo = this.keeper?.reserve(layer.diffSize ?? 0); // (gzip output is rarely larger than the tar)
    const job: Job = { kind: 'measure', location: this.store.location, layerId: layer.id, tarSize: layer.diffSize ?? 0, profile: SYNTHESIZE_PROFILE, keepTo };
    p = this.enqueue(job, (m) => ('measured' in m ? m.measured : undefined)).then(async (m) => {
      const v: Verdict = { profile: SYNTHESIZE_PROFILE, made: true, diffDigest: layer.diffDigest!, size: m.size, blockOffsets: m.blockOffsets, trailer: m.trailer, tried: [SYNTHESIZE_PROFILE], at: new Date().toISOString() };
      if (keepTo && m.kept) await this.keeper!.adopt(keepTo, m.digest);
      await this.record(m.digest, v);
      return v;
    }).finally(() => {
      this.running.delete(key);
      if (keepTo) rmSync(keepTo, { force: true }); // (not kept: gone already if adopted)
    });
    this.running.set(key, p);
    return p;
  }

  private detect(digest: string, layer: Layer, size: number, snap: Snapshot, onProgress?: (bytes: number) => void): Promise<Verdict> {
    let p = this.running.get(digest);
    if (p) return p;
    // (the blob a profile reproduces is kept in the served-blob cache, as a made one is)
    const keepTo = this.keeper?.reserve(size);
    p = this.candidates(digest, layer, snap).then((candidates) => {
      const job: Job = { kind: 'detect', location: this.store.location, layerId: layer.id, tarSize: layer.diffSize ?? 0, target: { digest, size }, candidates, keepTo };
      return this.enqueue(job, (m) => ('result' in m ? m.result : undefined), onProgress);
    }).then(async ({ kept, ...r }) => {
      const before = this.verdict(digest)?.tried ?? [];
      const v: Verdict = { ...r, tried: [...before, ...r.tried], diffDigest: layer.diffDigest!, size, at: new Date().toISOString() };
      if (keepTo && kept && v.profile) await this.keeper!.adopt(keepTo, digest);
      await this.record(digest, v);
      return v;
    }).finally(() => {
      this.running.delete(digest);
      if (keepTo) rmSync(keepTo, { force: true }); // (not kept: gone already if adopted)
    });
    this.running.set(digest, p);
    return p;
  }

  /**
   * The profiles not yet tried on a layer, most likely first: those its image's config points
   * to (hints.ts), then those that reproduced other layers (most often first), then the rest.
   */
  private async candidates(digest: string, layer: Layer, snap: Snapshot): Promise<string[]> {
    const matches = new Map<string, number>();
    for (const v of Object.values(this.file.get())) if (v.profile) matches.set(v.profile, (matches.get(v.profile) ?? 0) + 1);
    let hinted: string[] = [];
    // (a reused layer's blob: from the image whose manifest names it, not the one that brought the tar)
    const at = reusedIn(snap).get(digest)?.at ?? imageOfLayer(snap).get(layer.id);
    const key = at && configKey(at.image);
    if (at && key) {
      try {
        hinted = hintedProfiles(JSON.parse((await this.store.imageBigData(at.image, key)).toString('utf8')), at.index, at.layers);
      } catch {
        // an unreadable or malformed config gives no hint: the usual order
      }
    }
    const untried = this.untried(digest);
    return [...new Set([...hinted, ...orderProfiles(matches).map((x) => x.id)])].filter((id) => untried.includes(id));
  }

  /** Run a detect or measure job after those queued before it (each keeps a core busy); its answer. */
  private enqueue<T>(job: Job, answer: (m: WorkerMessage) => T | undefined, onProgress?: (bytes: number) => void): Promise<T> {
    const p = this.queue.catch(() => undefined).then(() => new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new Error(CLOSED));
      const settle = <A>(f: (a: A) => void) => (a: A) => {
        this.jobs.delete(run);
        f(a);
      };
      const run = runWorker(job, (m) => {
        const a = answer(m);
        if ('progress' in m) onProgress?.(m.progress);
        else if (a !== undefined) settle(resolve)(a);
        else if ('error' in m) settle(reject)(new Error(`${job.kind} job for layer ${job.layerId}: ${m.error}`));
        else settle(reject)(new Error(`${job.kind} job for layer ${job.layerId}: unexpected answer`));
      }, settle(reject));
      this.jobs.set(run, settle(reject));
    }));
    this.queue = p;
    return p;
  }

  /**
   * Stop the background work (a scan, detections, blobs measured for `--synthesize gzip`):
   * their threads end and no job starts again; resolves once the state file is written. At
   * shutdown: those threads keep the process alive, and a scan of a large store would hold a
   * stopped `csreg serve` for minutes. Blobs being produced for a download end with it.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const [run, fail] of [...this.jobs]) {
      run.stop();
      fail(new Error(CLOSED));
    }
    endIdleWorkers();
    await this.file.written();
  }

  /**
   * A produce job as a Readable: the worker sends chunks as the reader takes them
   * (credit-based). It starts once a produce slot is free, and gives its slot up while the
   * reader is not taking bytes.
   */
  private stream(job: Job): Readable {
    let run: JobRun | undefined;
    let owed = 0;
    const grant = (n: number) => run?.post({ credit: n });
    const out = new Readable({
      highWaterMark: 4 << 20,
      read() {
        if (owed) {
          slot.resume();
          grant(owed);
          owed = 0;
        }
      },
      destroy(err, cb) {
        slot.cancel();
        run?.stop();
        cb(err);
      },
    });
    const slot = produceSlot(() => {
      // (a slot may free up long after this call: a thread that cannot start fails the stream,
      // on the next tick, as `slot` may not be assigned yet)
      try {
        run = runWorker(job, onMessage, (e) => out.destroy(e));
      } catch (e) {
        process.nextTick(() => out.destroy(e as Error));
        return;
      }
      grant(8);
    });
    function onMessage(m: WorkerMessage): void {
      if ('chunk' in m) {
        if (out.push(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength))) grant(1);
        else if (owed++ === 0) {
          threadUse.stalled++;
          slot.release();
        }
      } else if ('done' in m) {
        slot.cancel();
        out.push(null);
      } else if ('error' in m) out.destroy(new Error(m.error));
    }
    return out;
  }
}
