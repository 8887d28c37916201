// tar-split files (<layer>.tar-split.gz): gzip of JSON lines, one per tar entry or raw
// segment (vbatts/tar-split tar/storage). Type 1 = file entry (name, size, CRC-64 payload),
// type 2 = raw segment (headers, padding, end blocks). Read as a stream: memory does not
// grow with the file.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';

/**
 * The longest line accepted. Lines hold one entry or raw segment (headers, a PAX record of at
 * most 1 MiB, padding; readTar emits trailing bytes in 1 MiB pieces), so this is generous; it
 * keeps a corrupt file from growing memory without bound.
 */
const MAX_LINE = 32 << 20;
/** Gunzip output pieces: each is parsed as one batch (fewer thread-pool round trips than 16 KiB). */
const GUNZIP_CHUNK = 256 << 10;

export class TarSplitError extends Error {
  override name = 'TarSplitError';
}

export type TarSplitEntry =
  | { kind: 'segment'; payload: Buffer }
  | { kind: 'file'; name: string; nameBytes: Buffer; size: number; crc: Buffer | null };

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function b64(v: unknown, what: string): Buffer {
  if (typeof v !== 'string' || !BASE64.test(v)) throw new Error(`${what} is not base64`);
  return Buffer.from(v, 'base64');
}

/** A file entry; its name as a string only when asked (messages): most never are. */
class FileEntry {
  readonly kind = 'file';
  constructor(readonly nameBytes: Buffer, readonly size: number, readonly crc: Buffer | null) {}
  get name(): string {
    return this.nameBytes.toString('utf8');
  }
}

function fileEntry(nameBytes: Buffer, size: number, crc: Buffer | null): TarSplitEntry {
  if (crc && crc.length !== 8) throw new Error('file checksum is not 8 bytes');
  if (size > 0 && !crc) throw new Error('file entry without a checksum');
  return new FileEntry(nameBytes, size, crc);
}

/** Any line, through JSON.parse. */
function parseJson(line: string): TarSplitEntry {
  const o = JSON.parse(line) as Record<string, unknown>;
  if (!o || typeof o !== 'object') throw new Error('not an object');
  if (o.type === 2) {
    return { kind: 'segment', payload: o.payload == null ? Buffer.alloc(0) : b64(o.payload, 'payload') };
  }
  if (o.type === 1) {
    const size = o.size === undefined ? 0 : o.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new Error(`invalid size ${JSON.stringify(o.size)}`);
    let nameBytes: Buffer;
    if (typeof o.name === 'string' && o.name !== '') nameBytes = Buffer.from(o.name, 'utf8');
    else if (o.name_raw !== undefined) nameBytes = b64(o.name_raw, 'name_raw');
    else throw new Error('file entry without a name');
    return fileEntry(nameBytes, size, o.payload == null ? null : b64(o.payload, 'payload'));
  }
  throw new Error(`unknown entry type ${JSON.stringify(o.type)}`);
}

// The two shapes Go's json.Encoder writes for storage.Entry (key order type, name, size,
// payload, position; size omitted when 0) are taken apart on the bytes: JSON.parse, its
// objects and a string per line were most of the CPU of a small-file layer. A name with an
// escape or a control character, and any other shape, goes through JSON.parse.
const lit = (s: string) => Buffer.from(s, 'latin1');
const SEGMENT = lit('{"type":2,"payload":');
const FILE = lit('{"type":1,"name":"');
const SIZE = lit(',"size":');
const PAYLOAD = lit(',"payload":');
const NULL = lit('null');
const POSITION = lit(',"position":');
const QUOTE = 0x22;

/** Does buf hold the bytes of s at i (before `to`)? */
function at(buf: Buffer, i: number, to: number, s: Buffer): boolean {
  if (i + s.length > to) return false;
  for (let k = 0; k < s.length; k++) if (buf[i + k] !== s[k]) return false;
  return true;
}

/** The end of a run of decimal digits starting at i (i itself when there is none). */
function digitsEnd(buf: Buffer, i: number, to: number): number {
  while (i < to && buf[i] >= 0x30 && buf[i] <= 0x39) i++;
  return i;
}

/** Standard base64 digit values by byte (-1: not in the alphabet; '-' and '_' are not). */
const B64 = new Int8Array(256).fill(-1);
for (let i = 0; i < 64; i++) B64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;

/** A CRC-64 payload (8 bytes: 12 characters ending in one '=') decoded without strings; undefined for anything else. */
function crcAt(buf: Buffer, from: number, to: number): Buffer | undefined {
  if (to - from !== 12 || buf[to - 1] !== 0x3d) return undefined;
  const out = Buffer.allocUnsafe(8);
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = from; i < to - 1; i++) {
    const v = B64[buf[i]];
    if (v < 0) return undefined;
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  // (11 digits are 66 bits: the last 2 are ignored, as Go's and Node's decoders do)
  return out;
}

/**
 * Standard padded base64 in buf[from, to), or undefined. Node's decoder skips characters outside
 * the alphabet, so a decoded length short of what the text's length promises means there were
 * some; it also takes the URL-safe alphabet, refused here as JSON.parse's path does.
 */
function base64At(buf: Buffer, from: number, to: number, arena?: Arena): Buffer | undefined {
  const len = to - from;
  if (len % 4) return undefined;
  const text = buf.toString('latin1', from, to);
  const pad = len && buf[to - 1] === 0x3d ? (buf[to - 2] === 0x3d ? 2 : 1) : 0;
  const want = (len / 4) * 3 - pad;
  let out: Buffer;
  if (arena && arena.pos + want <= arena.buf.length) {
    out = arena.buf.subarray(arena.pos, arena.pos + arena.buf.write(text, arena.pos, want, 'base64'));
    arena.pos += out.length;
  } else {
    out = Buffer.from(text, 'base64');
  }
  if (out.length !== want || text.includes('-') || text.includes('_')) return undefined;
  return out;
}

/** Where a batch's segment payloads are decoded, one after the other: one allocation per batch, not per segment. */
interface Arena { buf: Buffer; pos: number }

/** A line of one of Go's two shapes, from its bytes buf[from, to); undefined for any other line. */
function parseGoLine(buf: Buffer, from: number, to: number, arena?: Arena): TarSplitEntry | undefined {
  let i: number;
  let nameBytes: Buffer | undefined;
  let size = 0;
  if (at(buf, from, to, SEGMENT)) {
    i = from + SEGMENT.length;
  } else if (at(buf, from, to, FILE)) {
    const start = from + FILE.length;
    const end = buf.indexOf(QUOTE, start);
    if (end <= start || end >= to) return undefined;
    let high = false;
    for (let k = start; k < end; k++) {
      const c = buf[k];
      if (c < 0x20 || c === 0x5c) return undefined;
      if (c >= 0x80) high = true;
    }
    // as JSON.parse would: bytes that are not UTF-8 become U+FFFD (ASCII stays as it is: a
    // view of the line, which the batch keeps alive anyway)
    nameBytes = high ? Buffer.from(buf.toString('utf8', start, end), 'utf8') : buf.subarray(start, end);
    i = end + 1;
    if (at(buf, i, to, SIZE)) {
      const d = i + SIZE.length;
      i = digitsEnd(buf, d, to);
      if (i === d || i - d > 15 || (buf[d] === 0x30 && i - d > 1)) return undefined;
      for (let k = d; k < i; k++) size = size * 10 + buf[k] - 0x30;
    }
    if (!at(buf, i, to, PAYLOAD)) return undefined;
    i += PAYLOAD.length;
    if (buf[i] === QUOTE) {
      const end = buf.indexOf(QUOTE, i + 1);
      const crc = end > 0 && end < to ? crcAt(buf, i + 1, end) : undefined;
      if (crc && at(buf, end + 1, to, POSITION)) {
        const p = digitsEnd(buf, end + 1 + POSITION.length, to);
        if (p === to - 1 && buf[p] === 0x7d && buf[p - 1] !== 0x3a) return fileEntry(nameBytes, size, crc);
      }
    }
  } else {
    return undefined;
  }
  let payload: Buffer | null = null;
  if (at(buf, i, to, NULL)) {
    i += NULL.length;
  } else {
    if (buf[i] !== QUOTE) return undefined;
    const end = buf.indexOf(QUOTE, i + 1);
    if (end < 0 || end >= to) return undefined;
    const p = base64At(buf, i + 1, end, arena);
    if (!p) return undefined;
    payload = p;
    i = end + 1;
  }
  if (!at(buf, i, to, POSITION)) return undefined;
  i = digitsEnd(buf, i + POSITION.length, to);
  if (i !== to - 1 || buf[i] !== 0x7d || buf[i - 1] === 0x3a) return undefined;
  if (!nameBytes) return { kind: 'segment', payload: payload ?? Buffer.alloc(0) };
  return fileEntry(nameBytes, size, payload);
}

/** One line, given as the bytes [from, to) of buf. */
function parseLine(buf: Buffer, from: number, to: number, arena?: Arena): TarSplitEntry {
  return parseGoLine(buf, from, to, arena) ?? parseJson(buf.toString('utf8', from, to));
}

/**
 * The entries of a tar-split file in order, in batches (one per piece of gunzip output), so a
 * consumer pays one await per batch rather than per entry. Errors name the file and the line.
 */
export async function* readTarSplitBatches(path: string): AsyncGenerator<TarSplitEntry[]> {
  // O_NONBLOCK: a FIFO in its place reads as empty instead of waiting for a writer
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK).catch((e: Error) => {
    throw new TarSplitError(`${path}: ${e.message}`);
  });
  const file = handle.createReadStream({ highWaterMark: 64 << 10 });
  const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK });
  // either one failing or closing ends both: a file that cannot be read fails the loop below,
  // and a consumer that stops early closes the file (a pipe() kept it open, paused, for good)
  pipeline(file, gunzip, () => undefined);
  let lineNo = 0;
  const parse = (buf: Buffer, from: number, to: number, arena?: Arena) => {
    lineNo++;
    try {
      return parseLine(buf, from, to, arena);
    } catch (e) {
      throw new TarSplitError(`${path}: line ${lineNo}: ${(e as Error).message}`);
    }
  };
  // Lines are split on the bytes: a UTF-8 sequence cut by a chunk boundary stays whole.
  let rest: Buffer[] = []; // the start of a line the previous chunks did not finish
  let restLen = 0;
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      const batch: TarSplitEntry[] = [];
      // base64 decodes to 3/4 of its length: room for every payload of this chunk
      const arena = { buf: Buffer.allocUnsafeSlow(((chunk.length + 3) >> 2) * 3), pos: 0 };
      let start = 0;
      for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
        if (restLen) {
          rest.push(chunk.subarray(start, nl));
          const line = Buffer.concat(rest);
          rest = [];
          restLen = 0;
          batch.push(parse(line, 0, line.length));
        } else if (nl > start) {
          batch.push(parse(chunk, start, nl, arena));
        }
        start = nl + 1;
      }
      if (start < chunk.length) {
        rest.push(chunk.subarray(start));
        restLen += chunk.length - start;
        if (restLen > MAX_LINE) throw new TarSplitError(`${path}: line ${lineNo + 1} is longer than ${MAX_LINE} bytes (corrupt tar-split)`);
      }
      if (batch.length) yield batch;
    }
  } catch (e) {
    if (e instanceof TarSplitError) throw e;
    throw new TarSplitError(`${path}: ${(e as Error).message} (truncated or corrupt tar-split)`);
  } finally {
    gunzip.destroy();
  }
  const last = Buffer.concat(rest);
  if (last.toString('utf8').trim() !== '') yield [parse(last, 0, last.length)];
}

/** The entries of a tar-split file in order. Errors name the file and the line. */
export async function* readTarSplit(path: string): AsyncGenerator<TarSplitEntry> {
  for await (const batch of readTarSplitBatches(path)) yield* batch;
}
/** One JSON line as Go's json.Encoder writes storage.Entry (key order type, name|name_raw, size, payload, position). */
export function tarSplitLine(e: { type: 1 | 2; name?: Buffer; size?: number; payload: Buffer | null; position: number }): string {
  let s = `{"type":${e.type}`;
  if (e.name) {
    const utf8 = e.name.toString('utf8');
    s += Buffer.from(utf8, 'utf8').equals(e.name) ? `,"name":${JSON.stringify(utf8)}` : `,"name_raw":"${e.name.toString('base64')}"`;
  }
  if (e.size) s += `,"size":${e.size}`;
  s += `,"payload":${e.payload ? `"${e.payload.toString('base64')}"` : 'null'},"position":${e.position}}\n`;
  return s;
}
