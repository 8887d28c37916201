// Writing a store as containers/storage does, safely beside running podman processes
// (containers-storage-format.md 7.5): every change is made under the Go library's write
// locks (layers → images → containers), on records re-read under that lock, announced
// with a fresh lock-file token *before* the JSON is atomically replaced, and a new layer
// stays flagged `incomplete` until it is whole, so a crash never leaves a layer that looks
// complete (podman, and our own start-up, delete incomplete layers).
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promises as fsp, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';
import { applyDiff, type DiffResult } from './apply-diff.js';
import { bigDataFileName } from './bigdata.js';
import type { LockFile } from './lockfile.js';
import { parseRecordArray, parseLayer, parseImage, parseContainer, type Layer, type Image, type Container } from './records.js';
import type { Store } from './store.js';
import { isRootless } from './rootless.js';
import type { WhiteoutFormat } from './extract.js';
import { metadataObject, setSlotSizes, signatureSlots, splitSignatures } from './signatures.js';

export { BLOB_READ_CHUNK } from './apply-diff.js';

const run = promisify(execFile);

export class WriteError extends Error {
  override name = 'WriteError';
  /** a record this change builds on vanished meanwhile (another process deleted it): retrying may succeed */
  constructor(message: string, readonly vanished = false) {
    super(message);
  }
}

type Raw = Record<string, unknown>;

/** c/storage's ioutils.AtomicWriteFile: temp file in the same directory, fdatasync, chmod, rename. */
export async function atomicWrite(path: string, data: Buffer | string, mode = 0o600): Promise<void> {
  const dir = join(path, '..');
  const tmp = join(dir, `.tmp-${path.split('/').pop()}${randomBytes(6).toString('hex')}`);
  const fh = await fsp.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await fh.writeFile(data);
    await fh.datasync();
    await fh.chmod(mode);
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

/** The 26-character base32 link name the overlay driver gives each layer (randomid.go). */
function overlayLinkId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const b = randomBytes(26);
  let s = '';
  for (const x of b) s += alphabet[x & 31];
  return s;
}

const sha256 = (data: Buffer) => 'sha256:' + createHash('sha256').update(data).digest('hex');

/** The image/layer ID scheme of containers/image: base = DiffID hex, next = sha256("<parent>+<DiffID hex>"). */
export function chainLayerId(parentId: string | undefined, diffId: string): string {
  const hex = diffId.replace(/^sha256:/, '');
  return parentId ? createHash('sha256').update(`${parentId}+${hex}`).digest('hex') : hex;
}

export interface CreateLayerOptions {
  id?: string;
  parent?: string;
  names?: string[];
  /** refuse the blob unless the uncompressed tar has this digest */
  expectedDiffDigest?: string;
  /** refuse the blob unless it (as given, compressed or not) has this digest */
  expectedCompressedDigest?: string;
  /** when a complete layer with this ID exists already (another process made it), return it instead of failing */
  reuse?: boolean;
}

export interface ImageBigData {
  key: string;
  data: Buffer;
  /** c/image records the manifest digest for `manifest*` keys; sha256 of the bytes otherwise */
  digest?: string;
}

export interface CreateImageOptions {
  id: string;
  topLayer?: string;
  names?: string[];
  bigData?: ImageBigData[];
  metadata?: string;
  created?: string;
  /**
   * An image the store already has keeps its `manifest` item (the default manifest of all its
   * names); only a new image gets this one (it is stored as `manifest-<digest>` either way).
   */
  keepDefaultManifest?: boolean;
}

/** The record with this ID, else the one with this name (c/storage's lookup). */
function findRecord(records: Raw[], ref: string): Raw | undefined {
  return records.find((r) => r.id === ref) ?? records.find((r) => Array.isArray(r.names) && (r.names as string[]).includes(ref));
}

/** The Go library's JSON: compact, no trailing newline, keys in record order. */
const encode = (records: Raw[]) => JSON.stringify(records);

export class StoreWriter {
  private readonly d: string;
  private readonly root: string;

  constructor(readonly store: Store) {
    this.d = store.driver;
    this.root = store.graphRoot;
    if (!['overlay', 'vfs'].includes(this.d)) throw new WriteError(`writing with driver ${this.d} is not supported (overlay and vfs are)`);
  }

  /** Take locks in the given order (c/storage's: layers, images, containers), run fn, release in reverse. */
  private async locked<T>(spec: [LockFile, 'r' | 'w'][], fn: () => Promise<T>): Promise<T> {
    const held: [LockFile, 'r' | 'w'][] = [];
    try {
      for (const [lock, mode] of spec) {
        if (mode === 'w') await lock.lockWrite();
        else await lock.lockRead();
        held.push([lock, mode]);
      }
      return await fn();
    } finally {
      for (const [lock, mode] of held.reverse()) {
        if (mode === 'w') lock.unlockWrite();
        else lock.unlockRead();
      }
    }
  }

  private get locks(): { layers: LockFile; images: LockFile; containers: LockFile } {
    return this.store.writeLocks();
  }

  private file(kind: 'layers' | 'images' | 'containers'): string {
    return join(this.root, `${this.d}-${kind}`, `${kind}.json`);
  }

  private read(kind: 'layers' | 'images' | 'containers'): Raw[] {
    const f = this.file(kind);
    try {
      return parseRecordArray(f, readFileSync(f, 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  /** Token first, then the JSON (c/storage's newer order: a crash in between still makes readers reload). */
  private async save(kind: 'layers' | 'images' | 'containers', lock: LockFile, records: Raw[]): Promise<void> {
    lock.touch();
    await fsp.mkdir(join(this.root, `${this.d}-${kind}`), { recursive: true, mode: 0o700 });
    await atomicWrite(this.file(kind), encode(records));
  }

  private layerDir(id: string): string {
    return this.d === 'overlay' ? join(this.root, 'overlay', id) : join(this.root, 'vfs', 'dir', id);
  }

  private tarSplit(id: string): string {
    return join(this.root, `${this.d}-layers`, `${id}.tar-split.gz`);
  }

  /** Create the driver's directories for a new layer (overlay: diff, work, merged, link, lower). */
  private async createDriverDir(id: string, parent: string | undefined): Promise<void> {
    if (this.d === 'vfs') {
      const dir = this.layerDir(id);
      await fsp.mkdir(join(this.root, 'vfs', 'dir'), { recursive: true, mode: 0o700 });
      if (parent) await run('cp', ['-a', '--reflink=auto', this.layerDir(parent), dir]);
      else await fsp.mkdir(dir, { mode: 0o555 });
      if (!parent) await fsp.chmod(dir, 0o555);
      return;
    }
    const base = join(this.root, 'overlay');
    await fsp.mkdir(join(base, 'l'), { recursive: true, mode: 0o755 });
    const dir = join(base, id);
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { mode: 0o700 });
    let perms = 0o555;
    let owner = { uid: 0, gid: 0 };
    if (parent) {
      const st = await fsp.stat(join(base, parent, 'diff'));
      perms = st.mode & 0o7777;
      owner = { uid: st.uid, gid: st.gid };
    }
    const diff = join(dir, 'diff');
    await fsp.mkdir(diff);
    await fsp.chmod(diff, perms);
    await fsp.chown(diff, owner.uid, owner.gid);
    const lid = overlayLinkId();
    await fsp.symlink(join('..', id, 'diff'), join(base, 'l', lid));
    await fsp.writeFile(join(dir, 'link'), lid, { mode: 0o644 });
    await fsp.mkdir(join(dir, 'work'), { mode: 0o700 });
    await fsp.mkdir(join(dir, 'merged'), { mode: 0o700 });
    if (!parent) {
      await fsp.mkdir(join(dir, 'empty'), { mode: 0o700 });
    } else {
      const parentLink = (await fsp.readFile(join(base, parent, 'link'), 'utf8')).trim();
      const parentLower = await fsp.readFile(join(base, parent, 'lower'), 'utf8').catch(() => '');
      await fsp.writeFile(join(dir, 'lower'), [`l/${parentLink}`, ...(parentLower ? parentLower.split(':') : [])].join(':'), { mode: 0o644 });
    }
  }

  private async removeDriverDir(id: string): Promise<void> {
    if (this.d === 'overlay') {
      const link = await fsp.readFile(join(this.layerDir(id), 'link'), 'utf8').catch(() => '');
      if (link && /^[A-Z2-7]+$/.test(link.trim())) await fsp.rm(join(this.root, 'overlay', 'l', link.trim()), { force: true });
    }
    await fsp.rm(this.layerDir(id), { recursive: true, force: true });
  }

  /**
   * Whiteouts: overlay's own form, unless the store was made for a mount program (its
   * .has-mount-program says "true"): then, as c/storage does there, the tar's AUFS whiteout
   * files as they are, which fuse-overlayfs reads.
   */
  private whiteoutFormat(): WhiteoutFormat {
    if (this.d === 'vfs') return 'delete';
    let flag = '';
    try {
      flag = readFileSync(join(this.root, 'overlay', '.has-mount-program'), 'utf8').trim();
    } catch { /* none: a store made without one */ }
    return flag === 'true' ? 'keep' : 'overlay';
  }

  /**
   * Create a layer, from a blob (gzip, zstd or an uncompressed tar) or empty. Held under
   * layers.lock for its whole extraction, as c/storage 1.43 does, with the record flagged
   * incomplete meanwhile.
   */
  async createLayer(blob: AsyncIterable<Buffer> | Readable | undefined, opts: CreateLayerOptions = {}): Promise<Layer> {
    const lock = this.locks.layers;
    return this.locked([[lock, 'w']], () => this.store.whileApplying(async () => {
      const layers = this.read('layers');
      const id = opts.id ?? randomBytes(32).toString('hex');
      if (!/^[0-9a-f]{64}$/.test(id)) throw new WriteError(`invalid layer ID ${id}`);
      const existing = layers.find((l) => l.id === id);
      if (existing && opts.reuse && !(existing.flags as Raw | undefined)?.incomplete) return parseLayer(existing, this.root, false);
      if (existing) throw new WriteError(`layer ${id} already exists`);
      if (opts.parent && !layers.some((l) => l.id === opts.parent && !(l.flags as Raw | undefined)?.incomplete)) {
        throw new WriteError(`parent layer ${opts.parent} is not in the store`, true);
      }
      if (opts.parent && this.read('containers').some((c) => c.layer === opts.parent)) {
        throw new WriteError(`parent layer ${opts.parent} is a container's read-write layer`);
      }
      this.takeNames(layers, opts.names ?? []);
      const record: Raw = { id };
      if (opts.names?.length) record.names = opts.names;
      if (opts.parent) record.parent = opts.parent;
      record.created = new Date().toISOString();
      record.flags = { incomplete: true };
      layers.push(record);
      await this.save('layers', lock, layers);
      try {
        await this.createDriverDir(id, opts.parent);
      } catch (e) {
        await this.discardLayer(id, lock);
        throw e;
      }
      if (blob) return await this.applyLocked(id, blob, opts, lock);
      return await this.finishLayer(id, undefined, lock);
    }));
  }

  /** Apply a blob to an existing layer that has no content yet (the Go tool's apply-diff). */
  async applyDiff(id: string, blob: AsyncIterable<Buffer> | Readable, opts: CreateLayerOptions = {}): Promise<Layer> {
    const lock = this.locks.layers;
    return this.locked([[lock, 'w']], () => this.store.whileApplying(async () => {
      const layers = this.read('layers');
      const rec = layers.find((l) => l.id === id) ?? layers.find((l) => Array.isArray(l.names) && (l.names as string[]).includes(id));
      if (!rec) throw new WriteError(`layer ${id} is not in the store`);
      if (rec['diff-digest'] || existsSync(this.tarSplit(rec.id as string))) throw new WriteError(`layer ${rec.id} already has content`);
      rec.flags = { ...((rec.flags as Raw) ?? {}), incomplete: true };
      await this.save('layers', lock, layers);
      return await this.applyLocked(rec.id as string, blob, opts, lock);
    }));
  }

  /** Extract into the layer's directory; on any failure the layer is removed entirely. */
  private async applyLocked(id: string, blob: AsyncIterable<Buffer> | Readable, opts: CreateLayerOptions, lock: LockFile): Promise<Layer> {
    let result: DiffResult;
    try {
      await fsp.mkdir(join(this.root, `${this.d}-layers`), { recursive: true, mode: 0o700 });
      result = await applyDiff(blob, { root: this.contentDir(id), whiteouts: this.whiteoutFormat(), userNS: isRootless(), tarSplitPath: this.tarSplit(id) });
      if (opts.expectedDiffDigest && result.diffDigest !== opts.expectedDiffDigest) {
        throw new WriteError(`layer content has digest ${result.diffDigest}, expected ${opts.expectedDiffDigest}`);
      }
      if (opts.expectedCompressedDigest && result.compressedDigest !== opts.expectedCompressedDigest) {
        throw new WriteError(`layer blob has digest ${result.compressedDigest}, expected ${opts.expectedCompressedDigest}`);
      }
    } catch (e) {
      await this.discardLayer(id, lock);
      throw e;
    }
    return this.finishLayer(id, result, lock);
  }

  private async discardLayer(id: string, lock: LockFile): Promise<void> {
    await this.removeLayerData(id);
    await this.save('layers', lock, this.read('layers').filter((l) => l.id !== id));
  }

  /** Fill in the record in c/storage's key order and clear the incomplete flag. */
  private async finishLayer(id: string, result: DiffResult | undefined, lock: LockFile): Promise<Layer> {
    const layers = this.read('layers');
    const rec = layers.find((l) => l.id === id)!;
    const done: Raw = {};
    for (const k of ['id', 'names', 'parent', 'metadata', 'mountlabel', 'created']) if (rec[k] !== undefined) done[k] = rec[k];
    if (result) {
      done['compressed-diff-digest'] = result.compressedDigest;
      done['compressed-size'] = result.compressedSize;
      done['diff-digest'] = result.diffDigest;
      done['diff-size'] = result.diffSize;
      if (result.compression) done.compression = result.compression;
      if (result.uidset.length) done.uidset = result.uidset;
      if (result.gidset.length) done.gidset = result.gidset;
    }
    const flags = { ...((rec.flags as Raw) ?? {}) };
    delete flags.incomplete;
    if (Object.keys(flags).length) done.flags = flags;
    for (const k of Object.keys(rec)) if (!(k in done) && k !== 'flags') done[k] = rec[k];
    await this.save('layers', lock, layers.map((l) => (l === rec ? done : l)));
    return parseLayer(done, this.root, false);
  }

  private contentDir(id: string): string {
    return this.d === 'overlay' ? join(this.layerDir(id), 'diff') : this.layerDir(id);
  }

  private async removeLayerData(id: string): Promise<void> {
    await this.removeDriverDir(id);
    await fsp.rm(this.tarSplit(id), { force: true });
    await fsp.rm(join(this.root, `${this.d}-layers`, id), { recursive: true, force: true });
  }

  /** Names are unique per kind: a name given to one record is taken from any other (as AddNames does). */
  private takeNames(records: Raw[], names: string[], except?: string): void {
    if (!names.length) return;
    for (const r of records) {
      if (r.id === except || !Array.isArray(r.names)) continue;
      const kept = (r.names as string[]).filter((n) => !names.includes(n));
      if (kept.length !== (r.names as string[]).length) {
        if (kept.length) r.names = kept;
        else delete r.names;
      }
    }
  }

  /** Delete a layer: flagged incomplete and saved first, then its data, then its record. */
  async deleteLayer(id: string): Promise<void> {
    const lock = this.locks.layers;
    return this.locked([[lock, 'w']], async () => {
      await this.deleteLayerLocked(id, lock);
    });
  }

  private async deleteLayerLocked(id: string, lock: LockFile): Promise<void> {
    const layers = this.read('layers');
    const rec = layers.find((l) => l.id === id);
    if (!rec) throw new WriteError(`layer ${id} is not in the store`);
    if (layers.some((l) => l.parent === id)) throw new WriteError(`layer ${id} is the parent of another layer`);
    if (this.read('images').some((i) => i.layer === id || (Array.isArray(i['mapped-layers']) && (i['mapped-layers'] as string[]).includes(id)))) {
      throw new WriteError(`layer ${id} is used by an image`);
    }
    if (this.read('containers').some((c) => c.layer === id)) throw new WriteError(`layer ${id} is used by a container`);
    if (this.mounted(id)) throw new WriteError(`layer ${id} is mounted`);
    rec.flags = { ...((rec.flags as Raw) ?? {}), incomplete: true };
    await this.save('layers', lock, layers);
    await this.discardLayer(id, lock);
  }

  private mounted(id: string): boolean {
    try {
      const m = JSON.parse(readFileSync(join(this.store.location.runRoot, `${this.d}-layers`, 'mountpoints.json'), 'utf8')) as { id: string; count: number }[];
      return Array.isArray(m) && m.some((x) => x.id === id && x.count > 0);
    } catch {
      return false;
    }
  }

  /** c/storage's start-up repair: delete every layer left incomplete by a crashed writer. */
  async deleteIncompleteLayers(): Promise<string[]> {
    const lock = this.locks.layers;
    return this.locked([[lock, 'w']], async () => {
      const layers = this.read('layers');
      const bad = layers.filter((l) => (l.flags as Raw | undefined)?.incomplete).map((l) => l.id as string);
      if (!bad.length) return [];
      for (const id of bad) await this.removeLayerData(id);
      await this.save('layers', lock, this.read('layers').filter((l) => !bad.includes(l.id as string)));
      return bad;
    });
  }

  private imageDir(id: string): string {
    return join(this.root, `${this.d}-images`, id);
  }

  /** Write big-data items into an image record (raw), files first. */
  private async putImageBigData(rec: Raw, items: ImageBigData[]): Promise<void> {
    const id = rec.id as string;
    await fsp.mkdir(this.imageDir(id), { recursive: true, mode: 0o700 });
    const names = Array.isArray(rec['big-data-names']) ? [...(rec['big-data-names'] as string[])] : [];
    const sizes = { ...((rec['big-data-sizes'] as Record<string, number>) ?? {}) };
    const digests = { ...((rec['big-data-digests'] as Record<string, string>) ?? {}) };
    for (const item of items) {
      if (!item.key) throw new WriteError('big-data key is empty');
      await atomicWrite(join(this.imageDir(id), bigDataFileName(item.key)), item.data);
      if (!names.includes(item.key)) names.push(item.key);
      sizes[item.key] = item.data.length;
      digests[item.key] = item.digest ?? sha256(item.data);
      // The record's digest is the first manifest ever added (c/storage's SetBigData).
      if (item.key.startsWith('manifest') && !rec.digest) rec.digest = digests[item.key];
    }
    rec['big-data-names'] = names;
    rec['big-data-sizes'] = sizes;
    rec['big-data-digests'] = digests;
  }

  /** Put fields of an image record into c/storage's key order. */
  private orderImage(r: Raw): Raw {
    const order = ['id', 'digest', 'names', 'names-history', 'layer', 'mapped-layers', 'metadata', 'big-data-names', 'big-data-sizes', 'big-data-digests', 'created', 'flags'];
    const out: Raw = {};
    for (const k of order) if (r[k] !== undefined) out[k] = r[k];
    for (const k of Object.keys(r)) if (!(k in out)) out[k] = r[k];
    return out;
  }

  /** Create an image, or add names and big data to an existing one with the same ID. */
  async createImage(opts: CreateImageOptions): Promise<Image> {
    if (!/^[0-9a-f]{64}$/.test(opts.id)) throw new WriteError(`invalid image ID ${opts.id}`);
    const { layers: llock, images: ilock } = this.locks;
    return this.locked([[llock, 'r'], [ilock, 'w']], async () => {
      if (opts.topLayer) {
        const top = this.read('layers').find((l) => l.id === opts.topLayer);
        if (!top || (top.flags as Raw | undefined)?.incomplete) throw new WriteError(`layer ${opts.topLayer} is not in the store`, true);
      }
      const images = this.read('images');
      let rec = images.find((i) => i.id === opts.id);
      let bigData = opts.bigData ?? [];
      if (rec && opts.keepDefaultManifest && ((rec['big-data-names'] as string[] | undefined) ?? []).includes('manifest')) bigData = bigData.filter((b) => b.key !== 'manifest');
      if (!rec) {
        rec = { id: opts.id };
        if (opts.topLayer) rec.layer = opts.topLayer;
        if (opts.metadata) rec.metadata = opts.metadata;
        rec.created = opts.created ?? new Date().toISOString();
        images.push(rec);
      } else if (opts.topLayer && rec.layer !== opts.topLayer) {
        throw new WriteError(`image ${opts.id} exists with another top layer`);
      }
      this.addNamesTo(images, rec, opts.names ?? []);
      await this.putImageBigData(rec, bigData);
      const ordered = images.map((i) => (i === rec ? this.orderImage(i) : i));
      await this.save('images', ilock, ordered);
      return parseImage(this.file('images'), ordered.find((i) => i.id === opts.id)!, this.root, false);
    });
  }

  private addNamesTo(images: Raw[], rec: Raw, names: string[]): void {
    if (!names.length) return;
    this.takeNames(images, names, rec.id as string);
    const cur = Array.isArray(rec.names) ? (rec.names as string[]) : [];
    rec.names = [...cur, ...names.filter((n) => !cur.includes(n))];
    const history = Array.isArray(rec['names-history']) ? (rec['names-history'] as string[]) : [];
    rec['names-history'] = [...names.slice().reverse(), ...history.filter((n) => !names.includes(n))];
  }

  private async updateImage(ref: string, fn: (images: Raw[], rec: Raw) => void | Promise<void>): Promise<Image> {
    const ilock = this.locks.images;
    return this.locked([[ilock, 'w']], async () => {
      const images = this.read('images');
      const rec = findRecord(images, ref);
      if (!rec) throw new WriteError(`image ${ref} is not in the store`);
      await fn(images, rec);
      const ordered = images.map((i) => (i === rec ? this.orderImage(i) : i));
      await this.save('images', ilock, ordered);
      return parseImage(this.file('images'), this.orderImage(rec), this.root, false);
    });
  }

  addImageNames(ref: string, names: string[]): Promise<Image> {
    return this.updateImage(ref, (images, rec) => this.addNamesTo(images, rec, names));
  }

  setImageNames(ref: string, names: string[]): Promise<Image> {
    return this.updateImage(ref, (images, rec) => {
      delete rec.names;
      this.addNamesTo(images, rec, names);
      if (!names.length) delete rec.names;
    });
  }

  removeImageNames(ref: string, names: string[]): Promise<Image> {
    return this.updateImage(ref, (_images, rec) => {
      const kept = ((rec.names as string[] | undefined) ?? []).filter((n) => !names.includes(n));
      if (kept.length) rec.names = kept;
      else delete rec.names;
    });
  }

  /** Take a name off whichever image has it; nothing changes when none has. */
  async dropImageName(name: string): Promise<void> {
    const ilock = this.locks.images;
    await this.locked([[ilock, 'w']], async () => {
      const images = this.read('images');
      const rec = images.find((i) => Array.isArray(i.names) && (i.names as string[]).includes(name));
      if (!rec) return;
      const kept = (rec.names as string[]).filter((n) => n !== name);
      if (kept.length) rec.names = kept;
      else delete rec.names;
      await this.save('images', ilock, images);
    });
  }

  setImageBigData(ref: string, items: ImageBigData[]): Promise<Image> {
    return this.updateImage(ref, (_images, rec) => this.putImageBigData(rec, items));
  }

  /**
   * Add a signature of manifest `digest` to an image, where containers/image keeps it
   * (signatures.ts), after those it has; false when it has that very signature already.
   */
  async addImageSignature(ref: string, digest: string, sig: Buffer): Promise<boolean> {
    let added = false;
    await this.updateImage(ref, async (_images, rec) => {
      const image = parseImage(this.file('images'), rec, this.root, false);
      let meta: Record<string, unknown>;
      try {
        meta = metadataObject(image);
      } catch (e) {
        throw new WriteError(`image ${image.id}: ${(e as Error).message}, not changed`);
      }
      const items: ImageBigData[] = [];
      for (const slot of signatureSlots(image, meta, digest)) {
        const have = slot.sizes.length ? await fsp.readFile(join(this.imageDir(image.id), bigDataFileName(slot.key))).catch(() => Buffer.alloc(0)) : Buffer.alloc(0);
        let sigs: Buffer[];
        try {
          sigs = splitSignatures(have, slot.sizes, `image ${image.id} ${slot.key}`);
        } catch (e) {
          throw new WriteError(`${(e as Error).message}: not changed`);
        }
        if (sigs.some((s) => s.equals(sig))) continue;
        items.push({ key: slot.key, data: Buffer.concat([...sigs, sig]) });
        setSlotSizes(meta, digest, { key: slot.key, sizes: [...slot.sizes, sig.length] });
      }
      if (!items.length) return;
      await this.putImageBigData(rec, items);
      rec.metadata = JSON.stringify(meta);
      added = true;
    });
    return added;
  }

  /**
   * Delete an image and then, when asked, every layer of its chain that nothing else uses
   * (no other image's top layer, no container's layer, no child of another layer).
   */
  async deleteImage(ref: string, deleteLayers = true): Promise<{ image: string; layers: string[] }> {
    const { layers: llock, images: ilock, containers: clock } = this.locks;
    return this.locked([[llock, 'w'], [ilock, 'w'], [clock, 'r']], async () => {
      const images = this.read('images');
      const rec = findRecord(images, ref);
      if (!rec) throw new WriteError(`image ${ref} is not in the store`);
      return { image: rec.id as string, layers: await this.deleteImageLocked(images, rec, deleteLayers) };
    });
  }

  /**
   * Take these names off the image, and delete the image (and its layers nothing else uses)
   * only if that leaves it no name: its other names keep it. Both under one lock, so a name
   * another tool adds meanwhile keeps the image too.
   */
  async deleteImageNames(id: string, names: string[]): Promise<{ deleted: boolean; layers: string[] }> {
    const { layers: llock, images: ilock, containers: clock } = this.locks;
    return this.locked([[llock, 'w'], [ilock, 'w'], [clock, 'r']], async () => {
      const images = this.read('images');
      const rec = images.find((i) => i.id === id);
      if (!rec) throw new WriteError(`image ${id} is not in the store`);
      const kept = ((rec.names as string[] | undefined) ?? []).filter((n) => !names.includes(n));
      if (!kept.length) return { deleted: true, layers: await this.deleteImageLocked(images, rec, true) };
      rec.names = kept;
      await this.save('images', ilock, images);
      return { deleted: false, layers: [] };
    });
  }

  /** deleteImage's work, its locks held: the record, its directory and (when asked) the layers only it used. */
  private async deleteImageLocked(images: Raw[], rec: Raw, deleteLayers: boolean): Promise<string[]> {
    const { layers: llock, images: ilock } = this.locks;
    const id = rec.id as string;
    if (this.read('containers').some((c) => c.image === id)) throw new WriteError(`image ${id} is used by a container`);
    const remaining = images.filter((i) => i !== rec);
    await this.save('images', ilock, remaining);
    await fsp.rm(this.imageDir(id), { recursive: true, force: true });
    const removed: string[] = [];
    if (!deleteLayers) return removed;
    const containers = this.read('containers');
    for (let layer = rec.layer as string | undefined; layer; ) {
      const all = this.read('layers');
      const l = all.find((x) => x.id === layer);
      if (!l) break;
      const used = all.some((x) => x.parent === layer) || remaining.some((i) => i.layer === layer) || containers.some((c) => c.layer === layer) || this.mounted(layer);
      if (used) break;
      await this.deleteLayerLocked(layer, llock);
      removed.push(layer);
      layer = l.parent as string | undefined;
    }
    return removed;
  }

  /** A container: a read-write layer on the image's top layer (no tar-split), and its record. */
  async createContainer(opts: { image: string; id?: string; names?: string[]; metadata?: string }): Promise<Container> {
    const { layers: llock, images: ilock, containers: clock } = this.locks;
    const id = opts.id ?? randomBytes(32).toString('hex');
    const layerId = randomBytes(32).toString('hex');
    return this.locked([[llock, 'w'], [ilock, 'r'], [clock, 'w']], async () => {
      const images = this.read('images');
      const img = images.find((i) => i.id === opts.image) ?? images.find((i) => Array.isArray(i.names) && (i.names as string[]).includes(opts.image));
      if (!img) throw new WriteError(`image ${opts.image} is not in the store`);
      const containers = this.read('containers');
      if (containers.some((c) => c.id === id)) throw new WriteError(`container ${id} already exists`);
      this.takeNames(containers, opts.names ?? []);
      const layers = this.read('layers');
      const created = new Date().toISOString();
      const layerRec: Raw = { id: layerId };
      if (opts.names?.length) layerRec.names = [`${opts.names[0]}-layer`];
      if (img.layer) layerRec.parent = img.layer;
      layerRec.created = created;
      layerRec.flags = { incomplete: true };
      layers.push(layerRec);
      await this.save('layers', llock, layers);
      try {
        await this.createDriverDir(layerId, img.layer as string | undefined);
      } catch (e) {
        await this.discardLayer(layerId, llock);
        throw e;
      }
      delete layerRec.flags;
      await this.save('layers', llock, this.read('layers').map((l) => (l.id === layerId ? layerRec : l)));
      const rec: Raw = { id };
      if (opts.names?.length) rec.names = opts.names;
      rec.image = img.id;
      rec.layer = layerId;
      if (opts.metadata) rec.metadata = opts.metadata;
      rec.created = created;
      containers.push(rec);
      await fsp.mkdir(join(this.root, `${this.d}-containers`, id, 'userdata'), { recursive: true, mode: 0o700 });
      await this.save('containers', clock, containers);
      return parseContainer(rec, this.root);
    });
  }

  /**
   * Set the metadata of the layer, image or container with this ID or name, looked for in that
   * order as c/storage's SetMetadata does (empty: none); which kind it was.
   */
  async setMetadata(ref: string, metadata: string): Promise<'layer' | 'image' | 'container'> {
    for (const kind of ['layers', 'images', 'containers'] as const) {
      const lock = this.locks[kind];
      const found = await this.locked([[lock, 'w']], async () => {
        const records = this.read(kind);
        const rec = findRecord(records, ref);
        if (!rec) return false;
        if (metadata) rec.metadata = metadata;
        else delete rec.metadata;
        // (an image's keys in the Go struct's order, as every other image update writes them)
        await this.save(kind, lock, kind === 'images' ? records.map((r) => (r === rec ? this.orderImage(r) : r)) : records);
        return true;
      });
      if (found) return kind === 'layers' ? 'layer' : kind === 'images' ? 'image' : 'container';
    }
    throw new WriteError(`nothing in the store is known as ${ref}`);
  }

  async deleteContainer(ref: string): Promise<void> {
    const { layers: llock, containers: clock } = this.locks;
    return this.locked([[llock, 'w'], [clock, 'w']], async () => {
      const containers = this.read('containers');
      const rec = findRecord(containers, ref);
      if (!rec) throw new WriteError(`container ${ref} is not in the store`);
      const rest = containers.filter((c) => c !== rec);
      await this.save('containers', clock, rest);
      await fsp.rm(join(this.root, `${this.d}-containers`, rec.id as string), { recursive: true, force: true });
      await fsp.rm(join(this.store.location.runRoot, `${this.d}-containers`, rec.id as string), { recursive: true, force: true });
      if (rec.layer && this.read('layers').some((l) => l.id === rec.layer)) await this.deleteLayerLocked(rec.layer as string, llock);
    });
  }
}
