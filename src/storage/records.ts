// The three record kinds of a containers-storage store (layers.json, images.json,
// containers.json), parsed tolerantly: unknown keys are kept in `raw` so a writer can
// round-trip them, missing keys get neutral defaults.

export const COMPRESSION = { none: 0, bzip2: 1, gzip: 2, xz: 3, zstd: 4 } as const;
export const COMPRESSION_NAMES = ['none', 'bzip2', 'gzip', 'xz', 'zstd'] as const;

export class StoreFormatError extends Error {
  constructor(readonly file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'StoreFormatError';
  }
}

export interface IDMap { container_id: number; host_id: number; size: number }

export interface Layer {
  id: string;
  names: string[];
  parent?: string;
  metadata?: string;
  mountLabel?: string;
  created?: string;
  compressedDigest?: string;
  compressedSize?: number;
  diffDigest?: string;
  tocDigest?: string;
  diffSize?: number;
  /** 0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd */
  compression: number;
  uidset: number[];
  gidset: number[];
  flags: Record<string, unknown>;
  uidmap: IDMap[];
  gidmap: IDMap[];
  bigDataNames: string[];
  /** record flagged `incomplete`: being created or deleted, never served */
  incomplete: boolean;
  /** from an additional (read-only) image store */
  readOnly: boolean;
  /** graphroot of the store holding this layer's data */
  storeRoot: string;
  raw: Record<string, unknown>;
}

export interface Image {
  id: string;
  digest?: string;
  /** `digest` plus the digests of every big-data key starting with `manifest` (recomputed like c/storage) */
  digests: string[];
  names: string[];
  namesHistory: string[];
  topLayer?: string;
  mappedLayers: string[];
  metadata?: string;
  bigDataNames: string[];
  bigDataSizes: Record<string, number>;
  bigDataDigests: Record<string, string>;
  created?: string;
  flags: Record<string, unknown>;
  readOnly: boolean;
  storeRoot: string;
  raw: Record<string, unknown>;
}

export interface Container {
  id: string;
  names: string[];
  image: string;
  layer: string;
  metadata?: string;
  bigDataNames: string[];
  bigDataSizes: Record<string, number>;
  bigDataDigests: Record<string, string>;
  created?: string;
  uidmap: IDMap[];
  gidmap: IDMap[];
  flags: Record<string, unknown>;
  storeRoot: string;
  raw: Record<string, unknown>;
}

const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}
function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
// The helpers below return the parsed value itself when it already has the right shape (the
// common case: files written by c/storage) and a filtered copy only when it does not; records
// are read-only once parsed, and a 10,000-image images.json made a copy of every array and map
// cost a sixth of csreg's start-up.
function strs(v: unknown): string[] {
  if (!Array.isArray(v)) return [];
  for (const x of v) if (typeof x !== 'string') return v.filter((y): y is string => typeof y === 'string');
  return v as string[];
}
function nums(v: unknown): number[] {
  if (!Array.isArray(v)) return [];
  for (const x of v) if (typeof x !== 'number') return v.filter((y): y is number => typeof y === 'number');
  return v as number[];
}
function obj(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
/** An object whose values are all of one type (by typeof), or the subset that is. */
function typedMap<T>(v: unknown, type: 'number' | 'string'): Record<string, T> {
  const o = obj(v);
  for (const k in o) {
    if (typeof o[k] !== type) {
      const out: Record<string, T> = {};
      for (const [key, x] of Object.entries(o)) if (typeof x === type) out[key] = x as T;
      return out;
    }
  }
  return o as Record<string, T>;
}
function numMap(v: unknown): Record<string, number> {
  return typedMap<number>(v, 'number');
}
function strMap(v: unknown): Record<string, string> {
  return typedMap<string>(v, 'string');
}
function idmaps(v: unknown): IDMap[] {
  return Array.isArray(v) ? v.map(obj).map((m) => ({
    container_id: num(m.container_id) ?? 0, host_id: num(m.host_id) ?? 0, size: num(m.size) ?? 0,
  })) : [];
}

/** Parse a store JSON file's text into its array of raw records. Empty file and `null` mean none. */
export function parseRecordArray(file: string, text: string): Record<string, unknown>[] {
  if (text.trim() === '') return [];
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new StoreFormatError(file, `malformed JSON: ${(e as Error).message}`);
  }
  if (v === null) return [];
  if (!Array.isArray(v)) throw new StoreFormatError(file, 'expected a JSON array of records');
  return v.map((r, i) => {
    if (!r || typeof r !== 'object' || Array.isArray(r)) throw new StoreFormatError(file, `record ${i} is not an object`);
    const id = (r as Record<string, unknown>).id;
    if (typeof id !== 'string' || id === '') throw new StoreFormatError(file, `record ${i} has no id`);
    // IDs become directory names (overlay/<id>, <driver>-images/<id>, removed recursively on
    // delete): one that is not a plain file name would reach outside the store.
    if (id.includes('/') || id.includes('\0') || id === '.' || id === '..') throw new StoreFormatError(file, `record ${i} has an invalid id ${JSON.stringify(id)}`);
    return r as Record<string, unknown>;
  });
}

export function parseLayer(r: Record<string, unknown>, storeRoot: string, readOnly: boolean): Layer {
  const flags = obj(r.flags);
  return {
    id: r.id as string,
    names: strs(r.names),
    parent: str(r.parent),
    metadata: str(r.metadata),
    mountLabel: str(r.mountlabel),
    created: str(r.created),
    compressedDigest: str(r['compressed-diff-digest']),
    compressedSize: num(r['compressed-size']),
    diffDigest: str(r['diff-digest']),
    tocDigest: str(r['toc-digest']),
    diffSize: num(r['diff-size']),
    compression: num(r.compression) ?? 0,
    uidset: nums(r.uidset),
    gidset: nums(r.gidset),
    flags,
    uidmap: idmaps(r.uidmap),
    gidmap: idmaps(r.gidmap),
    bigDataNames: strs(r['big-data-names']),
    incomplete: flags.incomplete === true,
    readOnly,
    storeRoot,
    raw: r,
  };
}

export function parseImage(file: string, r: Record<string, unknown>, storeRoot: string, readOnly: boolean): Image {
  const bigDataNames = strs(r['big-data-names']);
  const bigDataDigests = strMap(r['big-data-digests']);
  // c/storage validates image digests on every load; a bad one makes podman refuse the store.
  let digest = str(r.digest);
  if (digest && !DIGEST_RE.test(digest)) throw new StoreFormatError(file, `image ${r.id}: invalid digest ${JSON.stringify(digest)}`);
  const digests: string[] = [];
  if (digest) digests.push(digest);
  for (const key of bigDataNames) {
    if (!key.startsWith('manifest')) continue;
    const d = bigDataDigests[key];
    if (!d) continue;
    if (!DIGEST_RE.test(d)) throw new StoreFormatError(file, `image ${r.id}: invalid digest of ${key}`);
    if (!digests.includes(d)) digests.push(d);
  }
  if (!digest && digests.length) digest = digests[0];
  return {
    id: r.id as string,
    digest,
    digests,
    names: strs(r.names),
    namesHistory: strs(r['names-history']),
    topLayer: str(r.layer),
    mappedLayers: strs(r['mapped-layers']),
    metadata: str(r.metadata),
    bigDataNames,
    bigDataSizes: numMap(r['big-data-sizes']),
    bigDataDigests,
    created: str(r.created),
    flags: obj(r.flags),
    readOnly,
    storeRoot,
    raw: r,
  };
}

export function parseContainer(r: Record<string, unknown>, storeRoot: string): Container {
  return {
    id: r.id as string,
    names: strs(r.names),
    image: typeof r.image === 'string' ? r.image : '',
    layer: typeof r.layer === 'string' ? r.layer : '',
    metadata: str(r.metadata),
    bigDataNames: strs(r['big-data-names']),
    bigDataSizes: numMap(r['big-data-sizes']),
    bigDataDigests: strMap(r['big-data-digests']),
    created: str(r.created),
    uidmap: idmaps(r.uidmap),
    gidmap: idmaps(r.gidmap),
    flags: obj(r.flags),
    storeRoot,
    raw: r,
  };
}
