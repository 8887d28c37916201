// tar-split files (<layer>.tar-split.gz): gzip of JSON lines, one per tar entry or raw
// segment (vbatts/tar-split tar/storage). Type 1 = file entry (name, size, CRC-64 payload),
// type 2 = raw segment (headers, padding, end blocks). Read as a stream: memory does not
// grow with the file.
import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { StringDecoder } from 'node:string_decoder';

/**
 * The longest line accepted. Lines hold one entry or raw segment (headers, a PAX record of at
 * most 1 MiB, padding; readTar emits trailing bytes in 1 MiB pieces), so this is generous; it
 * keeps a corrupt file from growing memory without bound.
 */
const MAX_LINE = 32 << 20;

export class TarSplitError extends Error {
  override name = 'TarSplitError';
}

export type TarSplitEntry =
  | { kind: 'segment'; payload: Buffer }
  | { kind: 'file'; name: string; nameBytes: Buffer; size: number; crc: Buffer | null };

function b64(v: unknown, what: string): Buffer {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw new Error(`${what} is not base64`);
  return Buffer.from(v, 'base64');
}

function parseLine(line: string): TarSplitEntry {
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
    const crc = o.payload == null ? null : b64(o.payload, 'payload');
    if (crc && crc.length !== 8) throw new Error('file checksum is not 8 bytes');
    if (size > 0 && !crc) throw new Error('file entry without a checksum');
    return { kind: 'file', name: nameBytes.toString('utf8'), nameBytes, size, crc };
  }
  throw new Error(`unknown entry type ${JSON.stringify(o.type)}`);
}

/** The entries of a tar-split file in order. Errors name the file and the line. */
export async function* readTarSplit(path: string): AsyncGenerator<TarSplitEntry> {
  const gunzip = createReadStream(path).pipe(createGunzip());
  let rest = '';
  let lineNo = 0;
  const parse = (line: string) => {
    lineNo++;
    try {
      return parseLine(line);
    } catch (e) {
      throw new TarSplitError(`${path}: line ${lineNo}: ${(e as Error).message}`);
    }
  };
  // A decoder keeps a UTF-8 sequence split across two chunks whole; only the new text is
  // searched for newlines (splitting `rest + chunk` each time is quadratic on a long line).
  const decoder = new StringDecoder('utf8');
  try {
    for await (const chunk of gunzip) {
      const text = decoder.write(chunk as Buffer);
      let start = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
        const line = rest + text.slice(start, nl);
        rest = '';
        start = nl + 1;
        if (line !== '') yield parse(line);
      }
      rest += text.slice(start);
      if (rest.length > MAX_LINE) throw new TarSplitError(`${path}: line ${lineNo + 1} is longer than ${MAX_LINE} characters (corrupt tar-split)`);
    }
    rest += decoder.end();
  } catch (e) {
    if (e instanceof TarSplitError) throw e;
    throw new TarSplitError(`${path}: ${(e as Error).message} (truncated or corrupt tar-split)`);
  } finally {
    gunzip.destroy();
  }
  if (rest.trim() !== '') yield parse(rest);
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
