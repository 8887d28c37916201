// A containers-storage store opened for reading: records are loaded under the same fcntl
// read locks the Go library takes, and reloaded only when a lock file's last-writer token
// (or, for layers, a JSON file's mtime, as c/storage also checks) shows another process
// changed them.
import { readFileSync, readlinkSync, statSync, existsSync, mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { bigDataFileName } from './bigdata.js';
import { resolveStoreLocation, type StoreLocation, type StoreOverrides } from './config.js';
import { LockFile } from './lockfile.js';
import {
  parseContainer, parseImage, parseLayer, parseRecordArray,
  type Container, type Image, type Layer,
} from './records.js';
import { Snapshot } from './snapshot.js';
import type { LayerTarOptions as TarSource, TarCheck } from './layer-tar.js';

// loaded at the first rebuild: a CLI listing (every start of it) needs none of the rebuild's
// modules (measured: `storage images` 53 -> 48 ms)
const rebuilder = () => import('./layer-tar.js');

export class StoreError extends Error {
  override name = 'StoreError';
}

/** One root laid out like a graphroot: the primary store, or an additional (read-only) image store. */
interface Substore {
  root: string;
  readOnly: boolean;
  layersLock: LockFile;
  imagesLock: LockFile;
  layerFiles: string[];
  imageFiles: string[];
  layersSeen?: string;
  imagesSeen?: string;
  layers: Layer[];
  images: Image[];
}

function fileState(path: string): string {
  try {
    const st = statSync(path);
    return `${st.mtimeMs}:${st.size}:${st.ino}`;
  } catch {
    return '-';
  }
}

function readRecords(path: string): Record<string, unknown>[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return parseRecordArray(path, text);
}

export interface LayerTarOptions {
  start?: number;
  /** exclusive */
  end?: number;
  check?: TarCheck;
  /** the size of the pieces large files are read in (default: layer-tar's choice) */
  readPiece?: number;
}

export class Store {
  readonly location: StoreLocation;
  readonly driver: string;
  private readonly subs: Substore[];
  private readonly containersLock: LockFile;
  private readonly containerFiles: string[];
  private containersSeen?: string;
  private containers: Container[] = [];
  private current?: Snapshot;
  private layersOnly?: Snapshot;
  private refreshing?: Promise<Snapshot>;
  /** layer creations this process is running under the layers write lock (whileApplying) */
  private applying = 0;

  private constructor(location: StoreLocation) {
    this.location = location;
    this.driver = location.driver;
    const d = this.driver;
    const sub = (root: string, readOnly: boolean): Substore => ({
      root,
      readOnly,
      layersLock: new LockFile(join(root, `${d}-layers`, 'layers.lock'), readOnly),
      imagesLock: new LockFile(join(root, `${d}-images`, 'images.lock'), readOnly),
      layerFiles: [join(root, `${d}-layers`, 'layers.json'), join(root, `${d}-layers`, 'volatile-layers.json')],
      imageFiles: [join(root, `${d}-images`, 'images.json')],
      layers: [],
      images: [],
    });
    const primary = sub(location.graphRoot, false);
    // transient_store (1.45+): container layers and container records live in runroot.
    if (location.transientStore) primary.layerFiles[1] = join(location.runRoot, `${d}-layers`, 'volatile-layers.json');
    const extra = location.additionalImageStores
      .filter((r) => existsSync(join(r, `${d}-images`)) || existsSync(join(r, `${d}-layers`)))
      .map((r) => sub(r, true));
    this.subs = [primary, ...extra];
    const cdir = location.transientStore ? join(location.runRoot, `${d}-containers`) : join(location.graphRoot, `${d}-containers`);
    this.containersLock = new LockFile(join(cdir, 'containers.lock'));
    this.containerFiles = [join(cdir, 'containers.json'), join(cdir, 'volatile-containers.json')];
  }

  /** Open the store the Go tools would use (storage.conf, defaults), with overrides applied; `create` makes its root when missing (a writer, as c/storage does). */
  static open(overrides: StoreOverrides = {}, env: NodeJS.ProcessEnv = process.env, create = false): Store {
    const loc = resolveStoreLocation(overrides, env);
    if (create) mkdirSync(loc.graphRoot, { recursive: true, mode: 0o700 });
    if (!existsSync(loc.graphRoot)) throw new StoreError(`no store at ${loc.graphRoot}`);
    return new Store(loc);
  }

  static fromLocation(loc: StoreLocation): Store {
    return new Store(loc);
  }

  get graphRoot(): string {
    return this.location.graphRoot;
  }

  /** Read locks in containers/storage's order (layers, images, containers), minus `except`. */
  private lockOrder(except?: LockFile): LockFile[] {
    return [...this.subs.map((s) => s.layersLock), ...this.subs.map((s) => s.imagesLock), this.containersLock]
      .filter((l) => l !== except);
  }

  /** Take the given read locks in order, run fn, release in reverse. */
  private async withReadLocks<T>(locks: LockFile[], fn: () => T): Promise<T> {
    const held: LockFile[] = [];
    try {
      for (const l of locks) {
        await l.lockRead();
        held.push(l);
      }
      return fn();
    } finally {
      for (const l of held.reverse()) l.unlockRead();
    }
  }

  private layersState(s: Substore, peek = false): string {
    return (peek ? s.layersLock.peekToken() : s.layersLock.token()).toString('hex') + s.layerFiles.map(fileState).join('|');
  }

  private imagesState(s: Substore, peek = false): string {
    return (peek ? s.imagesLock.peekToken() : s.imagesLock.token()).toString('hex') + s.imageFiles.map(fileState).join('|');
  }

  private containersState(peek = false): string {
    return (peek ? this.containersLock.peekToken() : this.containersLock.token()).toString('hex') + this.containerFiles.map(fileState).join('|');
  }

  /** Nothing changed since the last load, by the lock files' tokens and the JSON files' stat. */
  private unchanged(): boolean {
    return this.subs.every((s) => this.layersState(s, true) === s.layersSeen && this.imagesState(s, true) === s.imagesSeen)
      && this.containersState(true) === this.containersSeen;
  }

  /** Reload the layer records that changed since the last load; must hold the layers read locks. */
  private reloadLayersLocked(): boolean {
    let changed = false;
    for (const s of this.subs) {
      const lstate = this.layersState(s);
      if (lstate === s.layersSeen) continue;
      const seen = new Set<string>();
      s.layers = [];
      for (const f of s.layerFiles) {
        for (const r of readRecords(f)) {
          // A duplicate ID in a later file is skipped, as c/storage does.
          if (seen.has(r.id as string)) continue;
          seen.add(r.id as string);
          s.layers.push(parseLayer(r, s.root, s.readOnly));
        }
      }
      s.layersSeen = lstate;
      changed = true;
    }
    if (changed) {
      // the full snapshot was built from the old records: the next snapshot() rebuilds it
      this.current = undefined;
      this.layersOnly = undefined;
    }
    return changed;
  }

  /** Lookups over the layers alone (no images or containers read), under the layers read locks. */
  private layersLocked(): Snapshot {
    this.reloadLayersLocked();
    this.layersOnly ??= new Snapshot(this.subs.flatMap((s) => s.layers), [], []);
    return this.layersOnly;
  }

  /** Reload whatever changed since the last load; must hold the read locks. */
  private reloadLocked(): Snapshot {
    let changed = this.reloadLayersLocked() || !this.current;
    for (const s of this.subs) {
      const istate = this.imagesState(s);
      if (istate !== s.imagesSeen) {
        s.images = s.imageFiles.flatMap((f) => readRecords(f).map((r) => parseImage(f, r, s.root, s.readOnly)));
        s.imagesSeen = istate;
        changed = true;
      }
    }
    const cstate = this.containersState();
    if (cstate !== this.containersSeen) {
      const root = this.location.graphRoot;
      this.containers = this.containerFiles.flatMap((f) => readRecords(f).map((r) => parseContainer(r, root)));
      this.containersSeen = cstate;
      changed = true;
    }
    if (changed || !this.current) {
      this.current = new Snapshot(
        this.subs.flatMap((s) => s.layers),
        this.subs.flatMap((s) => s.images),
        this.containers,
      );
    }
    return this.current;
  }

  /**
   * The store's records as they are now. The lock files' tokens (and the JSON files' stat) are
   * compared without locking; only when another process changed something are the read locks
   * taken and the changed files reloaded. Concurrent callers share one reload.
   */
  snapshot(): Promise<Snapshot> {
    // While this process applies a layer it holds the layer store's write lock for the whole
    // extraction (as c/storage does: its readers wait); the records as they were before still
    // hold for everything but that incomplete layer, so requests are answered from them.
    if (this.current && this.applying > 0) return Promise.resolve(this.current);
    if (this.current && !this.refreshing && this.unchanged()) return Promise.resolve(this.current);
    if (!this.refreshing) {
      this.refreshing = this.withReadLocks(this.lockOrder(), () => this.reloadLocked()).finally(() => {
        this.refreshing = undefined;
      });
    }
    return this.refreshing;
  }

  /**
   * Run fn, the creation or filling of a layer by this process, once it holds the layers write
   * lock (StoreWriter): meanwhile snapshot() answers from the records as they were (see there).
   */
  async whileApplying<T>(fn: () => Promise<T>): Promise<T> {
    this.applying++;
    try {
      return await fn();
    } finally {
      this.applying--;
    }
  }

  /**
   * One layer by ID, name or unique ID prefix, reading only the layer stores (what `diff` needs:
   * a store's images.json can be far larger than its layers.json).
   */
  layer(ref: string): Promise<Layer | undefined> {
    return this.withReadLocks(this.subs.map((s) => s.layersLock), () => this.layersLocked().layer(ref));
  }

  /** The primary store's lock files, for the writer (which takes them for writing). */
  writeLocks(): { layers: LockFile; images: LockFile; containers: LockFile } {
    const p = this.subs[0];
    return { layers: p.layersLock, images: p.imagesLock, containers: this.containersLock };
  }

  private subFor(root: string): Substore {
    const s = this.subs.find((x) => x.root === root);
    if (!s) throw new StoreError(`no store at ${root}`);
    return s;
  }

  private bigDataPath(kind: 'layers' | 'images' | 'containers', root: string, id: string, key: string): string {
    return join(root, `${this.driver}-${kind}`, id, bigDataFileName(key));
  }

  /** An image's big data item (manifest, config, signatures...), read under the images lock. */
  async imageBigData(image: Image, key: string): Promise<Buffer> {
    if (!image.bigDataNames.includes(key)) throw new StoreError(`image ${image.id} has no big data ${JSON.stringify(key)}`);
    const s = this.subFor(image.storeRoot);
    return s.imagesLock.withRead(() => readFile(this.bigDataPath('images', image.storeRoot, image.id, key)));
  }

  /**
   * Every big-data item of these images, each image store's read lock held once for all of them
   * (a lock taken again waits its fairness gap: one hold per item made a 10,000-image store's
   * check take minutes); an item that cannot be read comes with its error.
   */
  async imagesBigData(images: Image[]): Promise<{ image: Image; key: string; data?: Buffer; error?: Error }[]> {
    const out: { image: Image; key: string; data?: Buffer; error?: Error }[] = [];
    for (const root of new Set(images.map((i) => i.storeRoot))) {
      await this.subFor(root).imagesLock.withRead(async () => {
        for (const image of images.filter((i) => i.storeRoot === root)) {
          for (const key of image.bigDataNames) {
            try {
              out.push({ image, key, data: await readFile(this.bigDataPath('images', root, image.id, key)) });
            } catch (e) {
              out.push({ image, key, error: e as Error });
            }
          }
        }
      });
    }
    return out;
  }

  async layerBigData(layer: Layer, key: string): Promise<Buffer> {
    if (!layer.bigDataNames.includes(key)) throw new StoreError(`layer ${layer.id} has no big data ${JSON.stringify(key)}`);
    const s = this.subFor(layer.storeRoot);
    return s.layersLock.withRead(() => readFile(this.bigDataPath('layers', layer.storeRoot, layer.id, key)));
  }

  async containerBigData(container: Container, key: string): Promise<Buffer> {
    if (!container.bigDataNames.includes(key)) throw new StoreError(`container ${container.id} has no big data ${JSON.stringify(key)}`);
    return this.containersLock.withRead(() => readFile(this.bigDataPath('containers', container.storeRoot, container.id, key)));
  }

  tarSplitPath(layer: Layer): string {
    return join(layer.storeRoot, `${this.driver}-layers`, `${layer.id}.tar-split.gz`);
  }

  /** Directories a layer's tar-split names resolve in, nearest first (drivers' DiffGetter). */
  contentRoots(layer: Layer): string[] {
    const root = layer.storeRoot;
    if (this.driver === 'vfs') return [join(root, 'vfs', 'dir', layer.id)];
    if (this.driver !== 'overlay') throw new StoreError(`driver ${this.driver} is not supported (overlay and vfs are)`);
    const dir = join(root, 'overlay', layer.id);
    const roots = [join(dir, 'diff')];
    let lower = '';
    try {
      lower = readFileSync(join(dir, 'lower'), 'utf8').trim();
    } catch { /* base layer */ }
    for (const l of lower ? lower.split(':') : []) {
      // "l/<LID>" is a symlink "../<id>/diff" under overlay/l.
      const link = join(root, 'overlay', l);
      try {
        roots.push(resolve(join(root, 'overlay', 'l'), readlinkSync(link)));
      } catch {
        roots.push(link);
      }
    }
    return roots;
  }

  /**
   * The layer's exact uncompressed tar, rebuilt from its tar-split and files. The layer
   * store's read lock is held until the stream ends, fails or is destroyed (as c/storage's
   * Diff does), so podman cannot delete the layer underneath it.
   */
  async layerTar(layerId: string, opts: LayerTarOptions = {}): Promise<Readable> {
    const { layerTarStream } = await rebuilder();
    return layerTarStream(await this.tarSource(layerId, opts));
  }

  /**
   * The same bytes in chunks each valid only until the next is asked for (their memory is read
   * into again): for a consumer that writes or copies every chunk before going on. The lock is
   * taken at the first chunk asked for and held until the generator ends or is returned.
   */
  async *layerTarChunks(layerId: string, opts: LayerTarOptions = {}): AsyncGenerator<Buffer, void, undefined> {
    const { layerTarChunks } = await rebuilder();
    yield* layerTarChunks(await this.tarSource(layerId, opts));
  }

  /** What rebuilding the layer's tar needs, with the read locks taken (onClose gives them back). */
  private async tarSource(layerId: string, opts: LayerTarOptions): Promise<TarSource> {
    const primary = this.subs[0];
    await primary.layersLock.lockRead();
    let owner: Substore | undefined;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (owner && owner !== primary) owner.layersLock.unlockRead();
      primary.layersLock.unlockRead();
    };
    try {
      // Re-read the record under the lock: the snapshot the caller used may be stale. Only the
      // layer stores are read, as c/storage's Diff locks only the layer store.
      const snap = await this.withReadLocks(this.subs.slice(1).map((s) => s.layersLock), () => this.layersLocked());
      const layer = snap.layer(layerId);
      if (!layer) throw new StoreError(`layer ${layerId} is not in the store`);
      if (layer.incomplete) throw new StoreError(`layer ${layer.id} is incomplete (being created or deleted)`);
      owner = this.subFor(layer.storeRoot);
      if (owner !== primary) await owner.layersLock.lockRead();
      return {
        layerId: layer.id,
        tarSplitPath: this.tarSplitPath(layer),
        contentRoots: this.contentRoots(layer),
        diffDigest: layer.diffDigest,
        diffSize: layer.diffSize,
        start: opts.start,
        end: opts.end,
        check: opts.check,
        readPiece: opts.readPiece,
        onClose: release,
      };
    } catch (e) {
      release();
      throw e;
    }
  }
}
