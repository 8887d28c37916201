// Worker thread for recompression (CPU-heavy; the registry's event loop must stay free): it
// opens the store itself, rebuilds the layer's tar, and either finds the profile that
// reproduces the original blob, or produces the blob, sending chunks as the parent grants credit.
// Jobs come one at a time as messages: a thread that finished one is kept for the next, its
// code compiled (a cold job took ~0.3 s more: starting threads, JIT; see recipes.ts).
import { open } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import { Store } from '../storage/store.js';
import type { StoreLocation } from '../storage/config.js';
import type { TarCheck } from '../storage/layer-tar.js';
import { busyNow, collectWhenIdle } from './idle-gc.js';
import { profileById } from './profiles.js';
import { copiesTar, measure, ownsMemory, poolFor, produce, tryProfile, type Measured, type Reproduction, type Tar, type Target } from './produce.js';

export type Job =
  /** find the profile that reproduces the target; with keepTo, the reproduced blob is written there too */
  | { kind: 'detect'; location: StoreLocation; layerId: string; tarSize: number; target: Target; candidates: string[]; keepTo?: string }
  | { kind: 'produce'; location: StoreLocation; layerId: string; tarSize: number; target: Target; profile: string; rep: Reproduction; range?: { start: number; end: number } }
  /** compress the tar with a profile and say what that gives (a form csreg makes, not an original) */
  | { kind: 'measure'; location: StoreLocation; layerId: string; tarSize: number; profile: string; keepTo?: string };

export type WorkerMessage =
  | { progress: number }
  /** kept: the reproduced blob was written whole to the job's keepTo */
  | { result: { profile: string | null; tried: string[]; kept?: boolean } & Partial<Reproduction> }
  /** kept: the blob was written whole to the job's keepTo */
  | { measured: Measured & { kept: boolean } }
  | { chunk: Uint8Array }
  | { done: true }
  | { error: string };

/** What the parent sends: a job (when the last one has answered), or credit for produced chunks. */
export type ParentMessage = { job: Job } | { credit: number } | { stop: true };

const port = parentPort!;
const stores = new Map<string, Store>();
let job: Job;
/** The layer's tar from `start`; `reused`: in chunks valid until the next (for a consumer that copies each, copiesTar). */
const tarFrom = async (start: number, check?: TarCheck, reused = false): Promise<Tar> => {
  const key = JSON.stringify(job.location);
  let store = stores.get(key);
  if (!store) stores.set(key, (store = Store.fromLocation(job.location)));
  return reused ? store.layerTarChunks(job.layerId, { start, check }) : store.layerTar(job.layerId, { start, check });
};

let credit = 0;
let wake: (() => void) | undefined;
/** the parent gave the produce job up (its client left) */
let stopping = false;

async function detect(j: Extract<Job, { kind: 'detect' }>): Promise<void> {
  const tried: string[] = [];
  let seen = 0;
  let reported = 0;
  const onBytes = (n: number) => {
    seen += n;
    if (seen - reported < 16 << 20) return;
    port.postMessage({ progress: seen - reported } satisfies WorkerMessage);
    reported = seen;
  };
  for (const id of j.candidates) {
    const p = profileById(id);
    if (!p) continue;
    tried.push(id);
    // the blob a profile reproduces is kept too, so the first pull after the detection does not
    // compress it again
    const keep = await keepFile(j.keepTo);
    // (the tar is not hashed on its own: a blob that matches the target's digest vouches for it)
    const rep = await tryProfile(await tarFrom(0, 'caller', copiesTar(p)), p, j.target, poolFor(p, j.tarSize), onBytes, keep.out).finally(keep.close);
    if (rep) {
      port.postMessage({ result: { profile: id, tried, kept: keep.kept(), ...rep } } satisfies WorkerMessage);
      return;
    }
  }
  // none did: "not reproducible" only if the tar is the layer's (a file changed on disk fails here)
  for await (const _ of await tarFrom(0, undefined, true)) void _;
  port.postMessage({ result: { profile: null, tried } } satisfies WorkerMessage);
}

/**
 * A blob written to `file` as it is made (anew: a previous attempt's bytes are dropped), if
 * there is one; a write that fails (a full disk) only stops the writing. kept(): written whole.
 */
async function keepFile(file: string | undefined): Promise<{ out: (b: Uint8Array) => Promise<void>; close: () => Promise<void>; kept: () => boolean }> {
  const fh = file ? await open(file, 'w', 0o600).catch(() => undefined) : undefined;
  let ok = !!fh;
  let pos = 0;
  return {
    out: async (b) => {
      if (ok) await fh!.write(b, 0, b.length, pos).then(() => (pos += b.length), () => (ok = false));
    },
    close: async () => fh?.close(),
    kept: () => ok,
  };
}

async function measureJob(j: Extract<Job, { kind: 'measure' }>): Promise<void> {
  const p = profileById(j.profile);
  if (!p) throw new Error(`unknown compressor profile ${j.profile}`);
  const pool = poolFor(p, j.tarSize);
  // the blob is also written to keepTo, so its first pull need not compress it again
  const keep = await keepFile(j.keepTo);
  const m = await measure(await tarFrom(0, undefined, copiesTar(p)), p, pool, undefined, Infinity, keep.out).finally(keep.close);
  port.postMessage({ measured: { ...m!, kept: keep.kept() } } satisfies WorkerMessage);
}

async function send(j: Extract<Job, { kind: 'produce' }>): Promise<void> {
  const p = profileById(j.profile);
  if (!p) throw new Error(`unknown compressor profile ${j.profile}`);
  for await (const b of produce((at, check) => tarFrom(at, check, copiesTar(p)), p, j.target, j.rep, j.range, poolFor(p, j.tarSize))) {
    while (credit <= 0 && !stopping) await new Promise<void>((r) => (wake = r));
    // (leaving the loop ends the rebuild: its files are closed, its read lock given back)
    if (stopping) break;
    credit--;
    // transferred as it is where nothing here uses its memory again (pgzip's blocks: a copy of
    // each in fresh memory was a sixth of this thread's time); else a copy, not a view into a
    // reused buffer
    const own = ownsMemory(b) ? b : new Uint8Array(b);
    port.postMessage({ chunk: own } satisfies WorkerMessage, [own.buffer as ArrayBuffer]);
  }
  port.postMessage({ done: true } satisfies WorkerMessage);
}

port.on('message', (m: ParentMessage) => {
  if ('stop' in m) {
    stopping = true;
    wake?.();
    return;
  }
  if ('credit' in m) {
    credit += m.credit;
    wake?.();
    return;
  }
  job = m.job;
  credit = 0;
  stopping = false;
  busyNow();
  (job.kind === 'detect' ? detect(job) : job.kind === 'measure' ? measureJob(job) : send(job))
    .catch((e: Error) => {
      port.postMessage({ error: e.message } satisfies WorkerMessage);
    })
    .finally(() => collectWhenIdle(50)); // (kept for the next job: drop what this one left)
});
