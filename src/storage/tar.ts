// A streaming tar reader with raw accounting, as tar-split's fork of archive/tar does: every
// byte of the stream comes out either as file content or as "raw" bytes (headers, PAX and
// GNU long-name records, padding, end blocks, trailing bytes), so a writer can extract the
// files and record a tar-split that rebuilds the exact stream. Header semantics follow Go's
// archive/tar reader (which containers/storage uses), and hostile input is refused with a
// TarError instead of being trusted.

export class TarError extends Error {
  override name = 'TarError';
}

export interface TarHeader {
  /** the entry name exactly as recorded (PAX path, GNU long name, or prefix/name) */
  name: Buffer;
  linkname: Buffer;
  /** Go typeflag character after normalisation ('\0' → '0' or '5') */
  type: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** seconds since the epoch, fractional from PAX */
  mtime: number;
  atime?: number;
  devmajor: number;
  devminor: number;
  /** SCHILY.xattr.* PAX records, values as raw bytes */
  xattrs: Map<string, Buffer>;
}

export type TarEvent =
  | { kind: 'raw'; bytes: Buffer }
  | { kind: 'entry'; header: TarHeader }
  | { kind: 'data'; bytes: Buffer };

/** Types that carry no data section whatever their size field says (archive/tar isHeaderOnlyType). */
const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);
/** The entry types a layer may contain; anything else (sparse, volume, multi-volume) is refused. */
const ENTRY_TYPES = new Set(['0', '1', '2', '3', '4', '5', '6', '7', 'g']);
/** archive/tar's limit for PAX and GNU long-name records. */
export const MAX_SPECIAL_FILE = 1 << 20;
const BLOCK = 512;

/** Pulls exact byte counts out of an async chunk source without copying more than needed. */
class ByteSource {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  private readonly it: AsyncIterator<Buffer | Uint8Array | string>;

  constructor(src: AsyncIterable<Buffer | Uint8Array | string>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    const c = typeof r.value === 'string' ? Buffer.from(r.value) : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
    return true;
  }

  /** Exactly n bytes, or fewer only at end of stream. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n && (await this.fill()));
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    return out;
  }

  /** Ends the source if it has not ended (a failure to end it is not the tar's: the tar's own stands). */
  async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await Promise.resolve(this.it.return?.()).catch(() => undefined);
  }

  /** Up to n bytes (at least one unless at end), for streaming file content. */
  async readSome(n: number): Promise<Buffer> {
    if (this.buf.length === 0 && !(await this.fill())) return Buffer.alloc(0);
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    return out;
  }
}

function cstring(b: Buffer): Buffer {
  const i = b.indexOf(0);
  return i < 0 ? b : b.subarray(0, i);
}

/** archive/tar parseNumeric: base-256 when the high bit is set, else octal trimmed of spaces and NULs. */
export function parseNumeric(b: Buffer, field: string): number {
  if (b.length > 0 && b[0] & 0x80) {
    const negative = (b[0] & 0x40) !== 0;
    let v = 0n;
    for (let i = 0; i < b.length; i++) {
      let c = i === 0 ? b[0] & 0x7f : b[i];
      if (negative) c ^= 0xff;
      v = (v << 8n) | BigInt(c);
    }
    if (negative) v = -(v + 1n);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw new TarError(`tar header: ${field} out of range`);
    return Number(v);
  }
  const s = b.toString('latin1').replace(/^[ \0]+|[ \0]+$/g, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarError(`tar header: invalid ${field} ${JSON.stringify(s)}`);
  const v = parseInt(s, 8);
  if (!Number.isSafeInteger(v)) throw new TarError(`tar header: ${field} out of range`);
  return v;
}

function checksumOk(block: Buffer): boolean {
  const stored = parseNumeric(block.subarray(148, 156), 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

const NUL_FREE_KEYS = new Set(['path', 'linkpath', 'uname', 'gname']);

/** PAX records "<len> <key>=<value>\n"; values kept as bytes (xattr values may be binary). */
export function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let off = 0;
  while (off < data.length) {
    const sp = data.indexOf(0x20, off);
    if (sp < 0) throw new TarError('tar: malformed PAX record');
    const lenStr = data.toString('latin1', off, sp);
    const len = Number(lenStr);
    if (!/^[1-9][0-9]*$/.test(lenStr) || off + len > data.length || len <= sp - off + 1) throw new TarError('tar: malformed PAX record length');
    const rec = data.subarray(sp + 1, off + len);
    if (rec[rec.length - 1] !== 0x0a) throw new TarError('tar: PAX record does not end in a newline');
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarError('tar: PAX record without key');
    const key = rec.toString('utf8', 0, eq);
    const value = rec.subarray(eq + 1, rec.length - 1);
    // archive/tar's validPAXRecord: no NUL in a key, nor in names (a NUL would cut the path short
    // in C and is refused by every file system call).
    if (key.includes('\0') || (NUL_FREE_KEYS.has(key) && value.includes(0))) throw new TarError(`tar: PAX record ${JSON.stringify(key)} contains a NUL`);
    out.set(key, value);
    off += len;
  }
  return out;
}

function paxInt(v: Buffer, key: string): number {
  const s = v.toString('latin1');
  if (!/^-?[0-9]+$/.test(s)) throw new TarError(`tar: invalid PAX ${key} ${JSON.stringify(s)}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new TarError(`tar: PAX ${key} out of range`);
  return n;
}

function paxTime(v: Buffer, key: string): number {
  const s = v.toString('latin1');
  if (!/^-?[0-9]+(\.[0-9]+)?$/.test(s)) throw new TarError(`tar: invalid PAX ${key} ${JSON.stringify(s)}`);
  // seconds beyond int64 are refused as archive/tar does (they would become Infinity here)
  if (!Number.isSafeInteger(Number(s.split('.')[0]))) throw new TarError(`tar: PAX ${key} out of range`);
  return Number(s);
}

function parseHeaderBlock(block: Buffer): TarHeader & { gnu: boolean } {
  if (!checksumOk(block)) throw new TarError('tar: header checksum mismatch (not a tar, or corrupt)');
  const magic = block.toString('latin1', 257, 265);
  const ustar = magic === 'ustar\x0000';
  const gnu = magic === 'ustar  \x00';
  let name = cstring(block.subarray(0, 100));
  if (ustar) {
    const prefix = cstring(block.subarray(345, 500));
    if (prefix.length) name = Buffer.concat([prefix, Buffer.from('/'), name]);
  }
  let type = String.fromCharCode(block[156]);
  const h = {
    name,
    linkname: cstring(block.subarray(157, 257)),
    type,
    size: parseNumeric(block.subarray(124, 136), 'size'),
    mode: parseNumeric(block.subarray(100, 108), 'mode'),
    uid: parseNumeric(block.subarray(108, 116), 'uid'),
    gid: parseNumeric(block.subarray(116, 124), 'gid'),
    mtime: parseNumeric(block.subarray(136, 148), 'mtime'),
    uname: ustar || gnu ? cstring(block.subarray(265, 297)).toString('utf8') : '',
    gname: ustar || gnu ? cstring(block.subarray(297, 329)).toString('utf8') : '',
    devmajor: ustar || gnu ? parseNumeric(block.subarray(329, 337), 'devmajor') : 0,
    devminor: ustar || gnu ? parseNumeric(block.subarray(337, 345), 'devminor') : 0,
    xattrs: new Map<string, Buffer>(),
    gnu,
  };
  if (type === '\0') type = name.length && name[name.length - 1] === 0x2f ? '5' : '0';
  h.type = type;
  if (h.size < 0) throw new TarError(`tar: negative size in header of ${name.toString()}`);
  return h;
}

/**
 * Parse a tar stream into raw/entry/data events. Raw bytes of one entry (previous padding plus
 * all its header blocks) come before its `entry` event, as tar-split segments do. A consumer
 * that stops early, or a tar that fails, ends the source too (a layer's rebuild: its files and
 * read lock).
 */
export async function* readTar(src: AsyncIterable<Buffer | Uint8Array | string>): AsyncGenerator<TarEvent> {
  const s = new ByteSource(src);
  try {
    yield* tarEvents(s);
  } finally {
    await s.close();
  }
}

async function* tarEvents(s: ByteSource): AsyncGenerator<TarEvent> {
  let pending: Buffer[] = [];
  const raw = (b: Buffer) => {
    if (b.length) pending.push(b);
  };
  const flush = (): TarEvent | undefined => {
    if (!pending.length) return undefined;
    const bytes = pending.length === 1 ? pending[0] : Buffer.concat(pending);
    pending = [];
    return { kind: 'raw', bytes };
  };
  let pax = new Map<string, Buffer>();
  let longName: Buffer | undefined;
  let longLink: Buffer | undefined;
  let padding = 0;
  for (;;) {
    if (padding) {
      const p = await s.read(padding);
      if (p.length < padding) throw new TarError('tar: unexpected end of stream in padding');
      raw(p);
      padding = 0;
    }
    const block = await s.read(BLOCK);
    if (block.length === 0) {
      if (pax.size || longName || longLink) throw new TarError('tar: stream ends after an extended header');
      break; // no end blocks: archive/tar accepts a clean EOF here
    }
    if (block.length < BLOCK) throw new TarError('tar: unexpected end of stream in a header');
    raw(block);
    if (block.every((b) => b === 0)) {
      const second = await s.read(BLOCK);
      raw(second);
      if (second.length === BLOCK && !second.every((b) => b === 0)) throw new TarError('tar: a zero block followed by a non-zero block');
      break;
    }
    const h = parseHeaderBlock(block);
    if (h.type === 'x' || h.type === 'g' || h.type === 'L' || h.type === 'K') {
      if (h.size > MAX_SPECIAL_FILE) throw new TarError(`tar: extended header of ${h.size} bytes is larger than the ${MAX_SPECIAL_FILE}-byte limit`);
      const data = await s.read(h.size);
      if (data.length < h.size) throw new TarError('tar: unexpected end of stream in an extended header');
      raw(data);
      padding = (BLOCK - (h.size % BLOCK)) % BLOCK;
      if (h.type === 'L') longName = cstring(data);
      else if (h.type === 'K') longLink = cstring(data);
      else if (h.type === 'x') for (const [k, v] of parsePax(data)) pax.set(k, v);
      else {
        // A global header is returned as an entry of its own, with no data (archive/tar does so).
        const ev = flush();
        if (ev) yield ev;
        yield { kind: 'entry', header: { ...h, size: 0, type: 'g', xattrs: new Map() } };
      }
      continue;
    }
    if (!ENTRY_TYPES.has(h.type)) throw new TarError(`tar: entry ${h.name.toString()} has unsupported type ${JSON.stringify(h.type)}`);
    for (const [k, v] of pax) {
      if (v.length === 0) continue; // an empty PAX value keeps the header's own
      if (k === 'path') h.name = v;
      else if (k === 'linkpath') h.linkname = v;
      else if (k === 'size') h.size = paxInt(v, k);
      else if (k === 'uid') h.uid = paxInt(v, k);
      else if (k === 'gid') h.gid = paxInt(v, k);
      else if (k === 'uname') h.uname = v.toString('utf8');
      else if (k === 'gname') h.gname = v.toString('utf8');
      else if (k === 'mtime') h.mtime = paxTime(v, k);
      else if (k === 'atime') h.atime = paxTime(v, k);
      else if (k.startsWith('GNU.sparse.')) throw new TarError('tar: sparse files are not supported (tar-split cannot round-trip them)');
      else if (k.startsWith('SCHILY.xattr.')) h.xattrs.set(k.slice('SCHILY.xattr.'.length), v);
    }
    if (longName) h.name = longName;
    if (longLink) h.linkname = longLink;
    pax = new Map();
    longName = longLink = undefined;
    if (h.size < 0) throw new TarError(`tar: negative size for ${h.name.toString()}`);
    if (HEADER_ONLY.has(h.type) && h.size !== 0) {
      // archive/tar would read no data but tar-split would record the size: refuse the ambiguity.
      throw new TarError(`tar: ${h.name.toString()} of type ${h.type} declares ${h.size} bytes of data`);
    }
    const ev = flush();
    if (ev) yield ev;
    const { gnu: _gnu, ...header } = h;
    yield { kind: 'entry', header };
    let left = h.size;
    while (left > 0) {
      const chunk = await s.readSome(Math.min(left, 1 << 20));
      if (chunk.length === 0) throw new TarError(`tar: unexpected end of stream in the data of ${h.name.toString()}`);
      left -= chunk.length;
      yield { kind: 'data', bytes: chunk };
    }
    padding = (BLOCK - (h.size % BLOCK)) % BLOCK;
  }
  // Everything after the end blocks is kept too: it is part of the layer's digest. Emitted in
  // pieces of at most 1 MiB, so hostile trailing data never accumulates in memory.
  for (;;) {
    const rest = await s.readSome(1 << 20);
    if (!rest.length) break;
    if (pending.reduce((n, b) => n + b.length, 0) + rest.length > 1 << 20) {
      const ev = flush();
      if (ev) yield ev;
    }
    raw(rest);
  }
  const ev = flush();
  if (ev) yield ev;
}
