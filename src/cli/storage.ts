// `csreg storage ...`: inspect a store like the Go `containers-storage` tool does.
import { randomBytes } from 'node:crypto';
import { closeSync, createWriteStream, openSync, readFileSync, writeSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { COMPRESSION_NAMES, type Container, type Image, type Layer } from '../storage/records.js';
import type { Snapshot } from '../storage/snapshot.js';
import type { StoreWriter } from '../storage/writer.js';
import { Store } from '../storage/store.js';
import { isRootless, outsideUserNamespace } from '../storage/rootless.js';
import { fileChunks } from '../storage/file-chunks.js';
import { checkStore } from '../storage/check.js';
import { signatureCounts } from '../storage/signatures.js';
import { humanBytes, printJson, printTable, Progress } from './output.js';

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface StorageFlags {
  json: boolean;
  output?: string;
  offset?: number;
  progress: boolean;
  names: string[];
  id?: string;
  file?: string;
  metadata?: string;
}

const short = (id: string | undefined) => (id ? id.slice(0, 12) : '');

export function layerView(l: Layer) {
  return {
    id: l.id,
    names: l.names,
    parent: l.parent,
    created: l.created,
    compressedDigest: l.compressedDigest,
    compressedSize: l.compressedSize,
    diffDigest: l.diffDigest,
    diffSize: l.diffSize,
    compression: COMPRESSION_NAMES[l.compression] ?? String(l.compression),
    tocDigest: l.tocDigest,
    uidset: l.uidset,
    gidset: l.gidset,
    flags: l.flags,
    incomplete: l.incomplete,
    readOnly: l.readOnly,
    bigDataNames: l.bigDataNames,
  };
}

export function imageView(i: Image, snap: Snapshot) {
  const chain = snap.layerChain(i.topLayer);
  return {
    id: i.id,
    names: i.names,
    digest: i.digest,
    digests: i.digests,
    topLayer: i.topLayer,
    layers: chain.layers.map((l) => l.id),
    problem: chain.problem,
    created: i.created,
    size: chain.layers.reduce((n, l) => n + (l.diffSize ?? 0), 0),
    namesHistory: i.namesHistory,
    bigData: i.bigDataNames.map((k) => ({ key: k, size: i.bigDataSizes[k], digest: i.bigDataDigests[k] })),
    metadata: i.metadata,
    signatures: signatureCounts(i),
    flags: i.flags,
    readOnly: i.readOnly,
  };
}

export function containerView(c: Container) {
  return { id: c.id, names: c.names, image: c.image, layer: c.layer, created: c.created, metadata: c.metadata, flags: c.flags, bigDataNames: c.bigDataNames };
}

/**
 * A file or standard input; `chunk`: the read size for a file (layer blobs: BLOB_READ_CHUNK).
 * The file is opened here, before anything is written: one that cannot be read is a plain
 * error at once (a stream opening it later had no listener for its error yet).
 */
function input(file: string, chunk?: number): NodeJS.ReadableStream & AsyncIterable<Buffer> {
  return (file === '-' ? process.stdin : fileChunks(openSync(file, 'r'), chunk ?? 64 << 10)) as NodeJS.ReadableStream & AsyncIterable<Buffer>;
}

async function readAll(src: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of src) parts.push(c);
  return Buffer.concat(parts);
}

function printFields(v: Record<string, unknown>): void {
  printTable(['FIELD', 'VALUE'], Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, typeof x === 'string' ? x : JSON.stringify(x)]));
}

/** This process's user namespace's ID map, unless it is the initial one (all IDs as they are). */
function uidMap(): string | undefined {
  const lines = readFileSync('/proc/self/uid_map', 'utf8').trim().split('\n').map((x) => x.trim().split(/\s+/).join(' '));
  return lines.length === 1 && lines[0] === '0 0 4294967295' ? undefined : lines.join(', ');
}

function need(args: string[], n: number, usage: string): void {
  if (args.length < n) throw new UsageError(`usage: csreg storage ${usage}`);
}

function findImage(snap: Snapshot, ref: string): Image {
  const img = snap.image(ref);
  if (!img) throw new UsageError(`image not known: ${ref}`);
  return img;
}

/** Write all of chunk with plain write(2) calls: the CLI has nothing else to do meanwhile, and a thread-pool round trip per chunk cost more than the write. */
function writeAll(fd: number, chunk: Buffer): void {
  for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
}

/** Write chunk to a stream, resolving once the stream is done with it (it may be reused after). */
function written(out: Writable, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => out.write(chunk, (e) => (e ? reject(e) : resolve())));
}

/** `csreg storage diff`: only the layer stores are read, not images or containers. */
async function diffCommand(store: Store, args: string[], flags: StorageFlags): Promise<void> {
  need(args, 1, 'diff LAYER [-o FILE] [--offset N]');
  const l = await store.layer(args[0]);
  if (!l) throw new UsageError(`layer not known: ${args[0]}`);
  if (!flags.output && process.stdout.isTTY) throw new UsageError('refusing to write a tar to a terminal: use -o FILE or a pipe');
  const total = l.diffSize === undefined ? undefined : l.diffSize - (flags.offset ?? 0);
  const progress = new Progress(`layer ${short(l.id)}`, total, flags.progress);
  const fd = flags.output ? openSync(flags.output, 'w', 0o666) : undefined;
  let done = 0;
  try {
    // each chunk is written before the next is asked for: its memory is then read into again;
    // large files in 1 MiB pieces: this process's one pass runs code not yet optimized, where
    // fewer pieces pay (the 315 MB bench layer on an AMD EPYC 222 -> 200 ms; on an Intel Xeon
    // the same as 256 KiB pieces, which a warm server reads faster there)
    for await (const chunk of store.layerTarChunks(l.id, { start: flags.offset, readPiece: 1 << 20 })) {
      if (fd === undefined) await written(process.stdout, chunk);
      else writeAll(fd, chunk);
      done += chunk.length;
      progress.update(done);
    }
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (flags.output) progress.finish(done);
}

/** Runs one storage command; its exit status where it has one of its own (exists, metadata). */
export async function storageCommand(store: Store, verb: string | undefined, args: string[], flags: StorageFlags): Promise<number | void> {
  if (verb === 'diff') return diffCommand(store, args, flags);
  const snap = await store.snapshot();
  // loaded only by the commands that write: its imports (decompressors, extraction) are large
  const writing = () => import('../storage/writer.js');
  const writer = async (): Promise<StoreWriter> => new (await writing()).StoreWriter(store);
  const blobInput = async (file: string) => input(file, (await writing()).BLOB_READ_CHUNK);
  /** a layer, image or container by ID or name, in c/storage's order of looking */
  const lookup = (ref: string) => snap.layer(ref) ?? snap.image(ref) ?? snap.container(ref);
  switch (verb) {
    case 'status': {
      // which store this is, as podman info's store section says it (and how it is reached)
      const l = store.location;
      const v = {
        graphRoot: l.graphRoot, runRoot: l.runRoot, driver: l.driver, configFile: l.configFile,
        additionalImageStores: l.additionalImageStores.length ? l.additionalImageStores : undefined, imageStore: l.imageStore,
        transientStore: l.transientStore, rootless: isRootless(),
        // (inside, from outside, count: bin/csreg's namespace maps the user and the subordinate IDs)
        uidMap: outsideUserNamespace() ? 'none: files of the images\' other users cannot be read' : uidMap(),
        images: snap.images.length, layers: snap.layers.length, containers: snap.containers.length,
      };
      return flags.json ? printJson(v) : printFields(v);
    }
    case 'check': {
      const progress = flags.progress || process.stderr.isTTY === true;
      let bar: Progress | undefined;
      let done = 0;
      const r = await checkStore(store, snap, {
        layer: (i, n, id, bytes) => {
          bar?.finish(done);
          bar = new Progress(`[${i}/${n}] layer ${short(id)}`, bytes, progress);
          done = 0;
        },
        bytes: (n) => bar?.update((done = n)),
      });
      bar?.finish(done);
      if (flags.json) printJson(r);
      else {
        for (const p of r.problems) process.stdout.write(`${p.kind} ${p.id}: ${p.message}\n`);
        process.stdout.write(`checked ${r.layers} layers (${humanBytes(r.layerBytes)} rebuilt), ${r.images} images, ${r.containers} containers: `
          + `${r.problems.length ? `${r.problems.length} problem${r.problems.length > 1 ? 's' : ''}` : 'no problems'}\n`);
      }
      return r.problems.length ? 1 : 0;
    }
    case 'images': {
      if (flags.json) return printJson(snap.images.map((i) => imageView(i, snap)));
      return printTable(['ID', 'NAMES', 'DIGEST', 'SIZE', 'CREATED'], snap.images.map((i) => {
        const v = imageView(i, snap);
        return [short(i.id), i.names.join(',') || '<none>', i.digest ?? '', v.problem ? `broken: ${v.problem}` : humanBytes(v.size), i.created ?? ''];
      }));
    }
    case 'layers': {
      if (flags.json) return printJson(snap.layers.map(layerView));
      return printTable(['ID', 'PARENT', 'DIFF DIGEST', 'SIZE', 'COMPRESSION', 'NAMES'], snap.layers.map((l) => [
        short(l.id), short(l.parent), l.diffDigest ?? '', humanBytes(l.diffSize),
        (COMPRESSION_NAMES[l.compression] ?? String(l.compression)) + (l.incomplete ? ' (incomplete)' : ''), l.names.join(','),
      ]));
    }
    case 'containers': {
      if (flags.json) return printJson(snap.containers.map(containerView));
      return printTable(['ID', 'NAMES', 'IMAGE', 'LAYER'], snap.containers.map((c) => [short(c.id), c.names.join(','), short(c.image), short(c.layer)]));
    }
    case 'image': {
      need(args, 1, 'image REF');
      const v = imageView(findImage(snap, args[0]), snap);
      return flags.json ? printJson(v) : printFields(v);
    }
    case 'layer': {
      need(args, 1, 'layer ID');
      const l = snap.layer(args[0]);
      if (!l) throw new UsageError(`layer not known: ${args[0]}`);
      const v = layerView(l);
      return flags.json ? printJson(v) : printFields(v);
    }
    case 'container': {
      need(args, 1, 'container REF');
      const c = snap.container(args[0]);
      if (!c) throw new UsageError(`container not known: ${args[0]}`);
      return printJson(containerView(c));
    }
    case 'names': {
      need(args, 1, 'names REF');
      const rec = lookup(args[0]);
      if (!rec) throw new UsageError(`nothing in the store is known as ${args[0]}`);
      if (flags.json) return printJson(rec.names);
      for (const n of rec.names) process.stdout.write(n + '\n');
      return;
    }
    case 'big-data': {
      need(args, 1, 'big-data IMAGE [KEY]');
      const img = findImage(snap, args[0]);
      if (args.length < 2) {
        if (flags.json) return printJson(imageView(img, snap).bigData);
        return printTable(['KEY', 'SIZE', 'DIGEST'], img.bigDataNames.map((k) => [k, String(img.bigDataSizes[k] ?? ''), img.bigDataDigests[k] ?? '']));
      }
      const data = await store.imageBigData(img, args[1]);
      if (flags.output) await pipeline([data], createWriteStream(flags.output));
      else process.stdout.write(data);
      return;
    }
    case 'create-layer': {
      const w = await writer();
      const parent = args[0] ? snap.layer(args[0])?.id ?? args[0] : undefined;
      const blob = flags.file ? await blobInput(flags.file) : undefined;
      const l = await w.createLayer(blob, { id: flags.id, parent, names: flags.names });
      return flags.json ? printJson(layerView(l)) : void process.stdout.write(l.id + '\n');
    }
    case 'apply-diff': {
      need(args, 1, 'apply-diff -f BLOB LAYER');
      const l = await (await writer()).applyDiff(snap.layer(args[0])?.id ?? args[0], await blobInput(flags.file ?? '-'));
      return flags.json ? printJson(layerView(l)) : void process.stdout.write(`${l.id} ${l.diffDigest} ${l.diffSize}\n`);
    }
    case 'create-image': {
      const id = flags.id ?? randomBytes(32).toString('hex');
      const top = args[0] ? snap.layer(args[0])?.id ?? args[0] : undefined;
      const img = await (await writer()).createImage({ id, topLayer: top, names: flags.names, metadata: flags.metadata });
      return flags.json ? printJson(imageView(img, await store.snapshot())) : void process.stdout.write(img.id + '\n');
    }
    case 'set-image-data': {
      need(args, 2, 'set-image-data -f FILE IMAGE KEY');
      const data = await readAll(input(flags.file ?? '-'));
      await (await writer()).setImageBigData(findImage(snap, args[0]).id, [{ key: args[1], data }]);
      return;
    }
    case 'exists': {
      need(args, 1, 'exists REF...');
      const exists = Object.fromEntries(args.map((r) => [r, lookup(r) !== undefined]));
      if (flags.json) printJson(exists);
      else for (const r of args) process.stdout.write(`${r}: ${exists[r]}\n`);
      return args.every((r) => exists[r]) ? 0 : 1;
    }
    case 'metadata': {
      need(args, 1, 'metadata REF...');
      const meta = Object.fromEntries(args.flatMap((r) => { const rec = lookup(r); return rec ? [[r, (rec.metadata ?? '').replace(/\n$/, '')]] : []; }));
      if (flags.json) printJson(meta);
      else for (const r of args) process.stdout.write(`${r}: ${meta[r] ?? ''}\n`);
      return args.every((r) => r in meta) ? 0 : 1;
    }
    case 'set-metadata': {
      need(args, 1, 'set-metadata -m META | -f FILE REF');
      if (flags.metadata === undefined && !flags.file) throw new UsageError('set-metadata: give the metadata with -m META or -f FILE');
      const meta = flags.metadata ?? (await readAll(input(flags.file!))).toString('utf8');
      await (await writer()).setMetadata(args[0], meta);
      return;
    }
    case 'add-names':
    case 'set-names': {
      need(args, 1, `${verb} -n NAME IMAGE`);
      const w = await writer();
      const id = findImage(snap, args[0]).id;
      const img = verb === 'add-names' ? await w.addImageNames(id, flags.names) : await w.setImageNames(id, flags.names);
      return flags.json ? printJson(img.names) : void process.stdout.write(img.names.join('\n') + (img.names.length ? '\n' : ''));
    }
    case 'delete-image': {
      need(args, 1, 'delete-image IMAGE');
      const r = await (await writer()).deleteImage(findImage(snap, args[0]).id);
      return flags.json ? printJson(r) : void process.stdout.write(`deleted image ${r.image}${r.layers.length ? ` and layers ${r.layers.join(' ')}` : ''}\n`);
    }
    case 'delete-layer': {
      need(args, 1, 'delete-layer LAYER');
      await (await writer()).deleteLayer(snap.layer(args[0])?.id ?? args[0]);
      return;
    }
    case 'create-container': {
      need(args, 1, 'create-container [-n NAME] IMAGE');
      const c = await (await writer()).createContainer({ image: findImage(snap, args[0]).id, id: flags.id, names: flags.names, metadata: flags.metadata });
      return flags.json ? printJson(containerView(c)) : void process.stdout.write(c.id + '\n');
    }
    case 'delete-container': {
      need(args, 1, 'delete-container CONTAINER');
      await (await writer()).deleteContainer(snap.container(args[0])?.id ?? args[0]);
      return;
    }
    default:
      throw new UsageError(`unknown storage command ${verb ?? ''}; see csreg --help`);
  }
}
