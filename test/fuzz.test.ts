// Hostile input, everywhere: property-based fuzzing (fast-check, fixed seeds, bounded runs) and
// a corpus of malformed inputs for every parser that sees data from outside. Properties: the
// parser returns a well-formed result or throws its own error class (never a TypeError,
// RangeError or stack overflow), never hangs, and extraction never touches anything outside
// its target directory. The whole file runs in well under a minute.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, linkSync, writeFileSync, lstatSync, readdirSync, readlinkSync, existsSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { readTar, TarError, parseNumeric, parsePax } from '../src/storage/tar.js';
import { readTarSplit, TarSplitError, tarSplitLine } from '../src/storage/tarsplit.js';
import { layerTarChunks, layerTarStream, LayerVerifyError, opensBeneath } from '../src/storage/layer-tar.js';
import { Crc64 } from '../src/storage/crc64.js';
import { applyDiff } from '../src/storage/apply-diff.js';
import { ExtractError } from '../src/storage/extract.js';
import { closeFd, openBeneath, SyscallError } from '../src/storage/syscalls.js';
import { parseRecordArray, parseLayer, parseImage, parseContainer, StoreFormatError } from '../src/storage/records.js';
import { resolveStoreLocation, StorageConfigError } from '../src/storage/config.js';
import { parseManifest, ManifestError, type Descriptor } from '../src/oci/manifest.js';
import { isValidRepository, isValidTag } from '../src/oci/names.js';
import { isValidDigest, looksLikeDigest } from '../src/oci/digest.js';
import { parseRange } from '../src/registry/blobs.js';
import { startRegistry, type RunningRegistry } from '../src/registry/server.js';
import { Store } from '../src/storage/store.js';
import { createLogger } from '../src/log.js';
import { paxRecord, sha } from './fixtures.js';

const SEED = 0x5eed;
const work = mkdtempSync(join(tmpdir(), 'csreg-fuzz-'));
// rm -rf, not rmSync: rmSync recurses on the stack and overflows on the deep trees made below
const rmTree = (p: string) => execFileSync('rm', ['-rf', '--', p]);
after(() => rmTree(work));

// ---------------------------------------------------------------------------------------------
// helpers

/** Reject with "hang" when p does not settle within ms. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

type ErrorClass = abstract new (...args: never[]) => Error;

/** A system error from the kernel (ENOENT, ENAMETOOLONG…), not a Node argument check (ERR_…). */
function isSystemError(e: unknown): boolean {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' && /^E[A-Z0-9]+$/.test((e as NodeJS.ErrnoException).code!)
    && !(e instanceof TypeError) && !(e instanceof RangeError);
}

function assertOwnError(e: unknown, classes: ErrorClass[], what: string, allowSystem = false): void {
  if (classes.some((c) => e instanceof c)) return;
  if (allowSystem && isSystemError(e)) return;
  const err = e as Error;
  assert.fail(`${what}: expected ${classes.map((c) => c.name).join('/')}, got ${err?.constructor?.name}: ${err?.message}\n${err?.stack}`);
}

async function* chunked(bytes: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** Parse a whole tar; checks the raw accounting (every byte comes out exactly once). */
async function parseTar(bytes: Buffer, chunk = 4096): Promise<number> {
  const parts: Buffer[] = [];
  let entries = 0;
  for await (const ev of readTar(chunked(bytes, chunk))) {
    if (ev.kind === 'entry') {
      entries++;
      const h = ev.header;
      assert.ok(Buffer.isBuffer(h.name) && Buffer.isBuffer(h.linkname));
      assert.ok(Number.isSafeInteger(h.size) && h.size >= 0, `size ${h.size}`);
      assert.ok(Number.isFinite(h.mtime), `mtime ${h.mtime}`);
    } else parts.push(ev.bytes);
  }
  assert.ok(Buffer.concat(parts).equals(bytes), 'the events give back every byte of the stream');
  return entries;
}

/** Expect a TarError or success, never anything else, never a hang. */
async function tarOutcome(bytes: Buffer, what: string, chunk = 4096): Promise<'ok' | 'refused'> {
  try {
    await within(10_000, what, parseTar(bytes, chunk));
    return 'ok';
  } catch (e) {
    assertOwnError(e, [TarError], what);
    return 'refused';
  }
}

interface H {
  name: string | Buffer;
  type?: string;
  size?: number;
  /** raw 12-byte size field (overrides size) */
  sizeField?: Buffer;
  link?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  prefix?: string;
  magic?: 'ustar' | 'gnu' | 'v7';
}

function fixChecksum(block: Buffer): Buffer {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i];
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return block;
}

function header(o: H): Buffer {
  const h = Buffer.alloc(512);
  (Buffer.isBuffer(o.name) ? o.name : Buffer.from(o.name)).copy(h, 0, 0, 100);
  h.write((o.mode ?? 0o644).toString(8).padStart(7, '0') + '\0', 100, 'latin1');
  h.write((o.uid ?? 0).toString(8).padStart(7, '0') + '\0', 108, 'latin1');
  h.write((o.gid ?? 0).toString(8).padStart(7, '0') + '\0', 116, 'latin1');
  if (o.sizeField) o.sizeField.copy(h, 124, 0, 12);
  else h.write((o.size ?? 0).toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  h.write('14000000000\0', 136, 'latin1');
  h.write(o.type ?? '0', 156, 'latin1');
  if (o.link) (Buffer.isBuffer(o.link) ? o.link : Buffer.from(o.link)).copy(h, 157, 0, 100);
  const magic = o.magic ?? 'ustar';
  if (magic === 'ustar') h.write('ustar\x0000', 257, 'latin1');
  if (magic === 'gnu') h.write('ustar  \x00', 257, 'latin1');
  if (o.prefix) h.write(o.prefix, 345, 'latin1');
  return fixChecksum(h);
}

const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
function entry(o: H, body: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([header({ size: body.length, ...o }), body, pad(body.length)]);
}
function pax(records: [string, string | Buffer][], type = 'x'): Buffer {
  const data = Buffer.concat(records.map(([k, v]) => paxRecord(k, v)));
  return entry({ name: 'PaxHeaders/x', type }, data);
}
const END = Buffer.alloc(1024);
const tarOf = (...parts: Buffer[]) => Buffer.concat([...parts, END]);

/** base-256 field of 12 bytes holding v (two's complement when negative). */
function base256(v: bigint): Buffer {
  const b = Buffer.alloc(12);
  let x = v < 0n ? (1n << 95n) + v : v;
  for (let i = 11; i >= 1; i--) {
    b[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  b[0] = 0x80 | (v < 0n ? 0x7f & 0xff : Number(x & 0x7fn));
  if (v < 0n) b[0] = 0xff;
  return b;
}

function gnuTar(format: string): Buffer {
  const dir = mkdtempSync(join(work, 'gnutar-'));
  try {
    mkdirSync(join(dir, 'd'.repeat(60), 'e'.repeat(60)), { recursive: true });
    writeFileSync(join(dir, 'd'.repeat(60), 'e'.repeat(60), 'f'.repeat(120)), 'long name\n');
    writeFileSync(join(dir, 'héllo'), Buffer.alloc(3000, 7));
    writeFileSync(join(dir, 'empty'), '');
    symlinkSync('héllo', join(dir, 'link'));
    linkSync(join(dir, 'empty'), join(dir, 'hard'));
    return execFileSync('tar', ['-C', dir, `--format=${format}`, '--sort=name', '--owner=0', '--group=0', '-cf', '-', '.'], { maxBuffer: 1 << 26 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Byte-level mutations of a valid input: flip, overwrite, truncate, extend, splice. */
function mutated(base: Buffer): fc.Arbitrary<Buffer> {
  const edit = fc.oneof(
    fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ op: fc.constant('set' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
    fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ maxLength: 2048 }) }),
    fc.record({ op: fc.constant('splice' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 1024 }) }),
  );
  return fc.array(edit, { minLength: 1, maxLength: 4 }).map((edits) => {
    let b = Buffer.from(base);
    for (const e of edits) {
      const at = b.length ? ('at' in e ? e.at % b.length : 0) : 0;
      if (e.op === 'flip' && b.length) b[at] ^= 1 << e.bit;
      else if (e.op === 'set') Buffer.from(e.bytes).copy(b, at);
      else if (e.op === 'truncate') b = b.subarray(0, at);
      else if (e.op === 'extend') b = Buffer.concat([b, Buffer.from(e.bytes)]);
      else if (e.op === 'splice') b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.len)]);
    }
    return b;
  });
}

/** Mutations that keep header checksums right, so the parser goes past the checksum check. */
function mutatedFields(base: Buffer): fc.Arbitrary<Buffer> {
  const headerBlocks: number[] = [];
  // header offsets of the base tar (found by walking it once)
  for (let off = 0; off + 512 <= base.length;) {
    const block = base.subarray(off, off + 512);
    if (block.every((x) => x === 0)) break;
    headerBlocks.push(off);
    const size = parseNumeric(block.subarray(124, 136), 'size');
    const t = String.fromCharCode(block[156]);
    off += 512 + (['1', '2', '3', '4', '5', '6'].includes(t) ? 0 : size + pad(size).length);
  }
  return fc.array(fc.record({ block: fc.nat(), at: fc.integer({ min: 0, max: 511 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }), { minLength: 1, maxLength: 3 })
    .map((edits) => {
      const b = Buffer.from(base);
      for (const e of edits) {
        const off = headerBlocks[e.block % headerBlocks.length];
        Buffer.from(e.bytes).copy(b, off + e.at, 0, Math.min(e.bytes.length, 512 - e.at));
        fixChecksum(b.subarray(off, off + 512));
      }
      return b;
    });
}

// ---------------------------------------------------------------------------------------------
// the tar reader

test('tar reader: a corpus of hostile tars is refused with a TarError (or read exactly), never a crash or a hang', async () => {
  const big = Buffer.alloc(700, 1);
  const refused: [string, Buffer][] = [
    ['huge PAX record length (100 MB declared)', tarOf(entry({ name: 'PaxHeaders/x', type: 'x', sizeField: Buffer.from('00764000000\0') }))],
    ['PAX record declaring more than its header', tarOf(entry({ name: 'PaxHeaders/x', type: 'x' }, Buffer.from('100000000 path=a\n')), entry({ name: 'a' }))],
    ['PAX record length 0', tarOf(entry({ name: 'PaxHeaders/x', type: 'x' }, Buffer.from('0 path=a\n')), entry({ name: 'a' }))],
    ['PAX record length negative', tarOf(entry({ name: 'PaxHeaders/x', type: 'x' }, Buffer.from('-5 path=a\n')), entry({ name: 'a' }))],
    ['PAX record length with exponent', tarOf(entry({ name: 'PaxHeaders/x', type: 'x' }, Buffer.from('1e1 a=b\n')), entry({ name: 'a' }))],
    ['PAX record without newline', tarOf(entry({ name: 'PaxHeaders/x', type: 'x' }, Buffer.from('9 path=ab')), entry({ name: 'a' }))],
    ['PAX path with a NUL', tarOf(pax([['path', 'a\0b']]), entry({ name: 'x' }))],
    ['PAX linkpath with a NUL', tarOf(pax([['linkpath', 'a\0/etc']]), entry({ name: 'x', type: '2', link: 'y' }))],
    ['PAX key with a NUL', tarOf(pax([['SCHILY.xattr.user.a\0b', 'v']]), entry({ name: 'x' }))],
    ['PAX size negative', tarOf(pax([['size', '-1']]), entry({ name: 'x' }))],
    ['PAX size overflowing', tarOf(pax([['size', '99999999999999999999999']]), entry({ name: 'x' }))],
    ['PAX size not a number', tarOf(pax([['size', '0x10']]), entry({ name: 'x' }))],
    ['PAX uid overflowing', tarOf(pax([['uid', '9'.repeat(400)]]), entry({ name: 'x' }))],
    ['PAX mtime overflowing', tarOf(pax([['mtime', '9'.repeat(400)]]), entry({ name: 'x' }))],
    ['PAX mtime not a number', tarOf(pax([['mtime', 'NaN']]), entry({ name: 'x' }))],
    ['PAX sparse map', tarOf(pax([['GNU.sparse.map', '0,10'], ['GNU.sparse.size', '10']]), entry({ name: 'x', size: 0 }))],
    ['GNU sparse type S', tarOf(entry({ name: 'sparse', type: 'S', magic: 'gnu' }, Buffer.alloc(10)))],
    ['multi-volume type M', tarOf(entry({ name: 'mv', type: 'M', magic: 'gnu' }))],
    ['volume header V', tarOf(entry({ name: 'vol', type: 'V', magic: 'gnu' }))],
    ['negative base-256 size', tarOf(entry({ name: 'neg', sizeField: base256(-1n) }))],
    ['negative base-256 size (large)', tarOf(entry({ name: 'neg', sizeField: base256(-(1n << 70n)) }))],
    ['overflowing base-256 size', tarOf(entry({ name: 'huge', sizeField: base256(1n << 80n) }))],
    ['overflowing octal size', tarOf(entry({ name: 'huge', sizeField: Buffer.from('777777777777') }))],
    ['size 8 GiB, stream ends', tarOf(entry({ name: 'big', sizeField: Buffer.from('77777777777\0') }))],
    ['octal size with a non-octal digit', tarOf(entry({ name: 'bad', sizeField: Buffer.from('0000000009\0\0') }))],
    ['octal size with a sign', tarOf(entry({ name: 'bad', sizeField: Buffer.from('-0000000001\0') }))],
    ['symlink with data', tarOf(entry({ name: 'l', type: '2', link: 'x' }, Buffer.from('data')))],
    ['hard link with data', tarOf(entry({ name: 'h', type: '1', link: 'x' }, Buffer.from('data')))],
    ['directory with data', tarOf(entry({ name: 'd/', type: '5' }, big))],
    ['GNU long name of 2 MiB', tarOf(entry({ name: '././@LongLink', type: 'L', magic: 'gnu' }, Buffer.alloc(2 << 20, 0x61)), entry({ name: 'x' }))],
    ['GNU long name then end of stream', entry({ name: '././@LongLink', type: 'L', magic: 'gnu' }, Buffer.from('abc'))],
    ['PAX header then end of stream', pax([['path', 'abc']])],
    ['truncated header', Buffer.concat([entry({ name: 'a' }, big)]).subarray(0, 300)],
    ['truncated data', entry({ name: 'a' }, big).subarray(0, 900)],
    ['truncated padding', entry({ name: 'a' }, big).subarray(0, 1100)],
    ['bad checksum', (() => { const b = tarOf(entry({ name: 'a' })); b[0] ^= 1; return b; })()],
    ['zero block then garbage', Buffer.concat([entry({ name: 'a' }), Buffer.alloc(512), Buffer.alloc(512, 0x41)])],
    ['not a tar', Buffer.from('{"not":"a tar"}'.padEnd(2048, ' '))],
    ['checksum field not octal', (() => { const h = header({ name: 'a' }); h.write('zzzzzz\0 ', 148, 'latin1'); return tarOf(h); })()],
  ];
  for (const [what, bytes] of refused) {
    for (const chunk of [1 << 16, 511]) {
      assert.equal(await tarOutcome(bytes, `${what} (chunks of ${chunk})`, chunk), 'refused', what);
    }
  }
  // Read exactly (their names are the extractor's business, tested below).
  const readable: [string, Buffer][] = [
    ['name with ..', tarOf(entry({ name: '../../etc/passwd' }, Buffer.from('x')))],
    ['absolute name', tarOf(entry({ name: '/etc/passwd' }, Buffer.from('x')))],
    ['symlink escaping', tarOf(entry({ name: 'l', type: '2', link: '../../../../etc' }))],
    ['hard link escaping', tarOf(entry({ name: 'h', type: '1', link: '../../etc/passwd' }))],
    ['deep directories (PAX path of 1 MiB)', tarOf(pax([['path', 'a/'.repeat(400_000)]]), entry({ name: 'x', type: '5' }))],
    ['prefix and name', tarOf(entry({ name: 'n', prefix: 'p/q' }))],
    ['v7 header', tarOf(entry({ name: 'old', magic: 'v7' }, Buffer.from('v7')))],
    ['empty stream', Buffer.alloc(0)],
    ['end blocks only', END],
    ['trailing garbage after the end', Buffer.concat([tarOf(entry({ name: 'a' })), Buffer.alloc(5000, 0x42)])],
    ['max safe base-256 size, no data', tarOf(entry({ name: 'l', type: '5', sizeField: base256(0n) }))],
  ];
  for (const [what, bytes] of readable) assert.equal(await tarOutcome(bytes, what), 'ok', what);
});

test('tar reader: random and mutated tars (GNU tar, hand-built) give exact bytes or a TarError', async () => {
  const bases = [gnuTar('gnu'), gnuTar('pax'),
    tarOf(pax([['path', 'p/' + 'x'.repeat(200)], ['SCHILY.xattr.user.k', Buffer.from([0, 1, 255])]]), entry({ name: 'short' }, Buffer.from('hello')),
      entry({ name: 'dir/', type: '5' }), entry({ name: 'l', type: '2', link: 'short' }))];
  for (const [i, base] of bases.entries()) {
    assert.equal(await tarOutcome(base, `base ${i}`), 'ok');
    await fc.assert(fc.asyncProperty(mutated(base), fc.constantFrom(7, 512, 4096), async (b, chunk) => {
      await tarOutcome(b, 'mutated tar', chunk);
    }), { seed: SEED + i, numRuns: 150 });
    await fc.assert(fc.asyncProperty(mutatedFields(base), async (b) => {
      await tarOutcome(b, 'field-mutated tar');
    }), { seed: SEED + 10 + i, numRuns: 250 });
  }
  // headers built from random fields, with right checksums
  const field = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a));
  const randomHeader = fc.record({ name: field(100), mode: field(8), size: fc.oneof(field(12), fc.nat({ max: 3000 }).map((n) => Buffer.from(n.toString(8).padStart(11, '0') + '\0'))),
    type: fc.constantFrom(...'0123456789xgLKSMVDN\0A'.split('')), link: field(100), magic: fc.constantFrom('ustar\x0000', 'ustar  \x00', 'garbage!'), prefix: field(155), body: fc.uint8Array({ maxLength: 3000 }) });
  await fc.assert(fc.asyncProperty(fc.array(randomHeader, { minLength: 1, maxLength: 4 }), async (hs) => {
    const parts = hs.map((r) => {
      const h = Buffer.alloc(512);
      r.name.copy(h, 0); r.mode.copy(h, 100); r.size.copy(h, 124); h.write(r.type, 156, 'latin1'); r.link.copy(h, 157);
      h.write(r.magic, 257, 'latin1'); r.prefix.copy(h, 345);
      fixChecksum(h);
      return Buffer.concat([h, Buffer.from(r.body), pad(r.body.length)]);
    });
    await tarOutcome(tarOf(...parts), 'random headers');
  }), { seed: SEED + 20, numRuns: 400 });
  // and PAX data made of random records
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (data) => {
    try {
      const m = parsePax(Buffer.from(data));
      for (const [k, v] of m) assert.ok(typeof k === 'string' && Buffer.isBuffer(v));
    } catch (e) {
      assertOwnError(e, [TarError], 'parsePax');
    }
  }), { seed: SEED + 21, numRuns: 1000 });
});

// ---------------------------------------------------------------------------------------------
// extraction (apply-diff + extract): nothing outside the layer directory, ever

interface Sandbox { base: string; sentinel: string; layer: string; ts: string }

function sandbox(): Sandbox {
  const base = mkdtempSync(join(work, 'x-'));
  const sentinel = join(base, 'sentinel');
  mkdirSync(join(sentinel, 'dir', 'sub'), { recursive: true });
  writeFileSync(join(sentinel, 'secret'), 'secret');
  writeFileSync(join(sentinel, 'dir', 'inner'), 'inner');
  symlinkSync('../sentinel', join(sentinel, 'selflink'));
  mkdirSync(join(base, 'ts'));
  mkdirSync(join(base, 'layer'));
  return { base, sentinel, layer: join(base, 'layer'), ts: join(base, 'ts') };
}

/** Everything under base except the layer and tar-split directories' contents, by lstat. */
function snapshotTree(box: Sandbox): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const n of readdirSync(dir, { encoding: 'latin1' })) {
      const p = join(dir, n);
      if (p === box.layer || p === box.ts) continue;
      const st = lstatSync(p, { bigint: true });
      out.set(p, `${st.mode}:${st.size}:${st.mtimeNs}:${st.ino}:${st.nlink}:${st.uid}:${st.gid}:${st.isSymbolicLink() ? readlinkSync(p) : ''}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(box.base);
  const layerSt = lstatSync(box.layer, { bigint: true });
  out.set(box.layer, `exists:${layerSt.isDirectory()}`);
  return out;
}

let applyCount = 0;
/** Apply a tar into the sandbox's layer dir; only our error classes or kernel errors may come out. */
async function applyOutcome(box: Sandbox, tar: Buffer, whiteouts: 'overlay' | 'delete', what: string): Promise<'ok' | 'refused'> {
  const before = snapshotTree(box);
  let outcome: 'ok' | 'refused' = 'ok';
  try {
    await within(15_000, what, applyDiff(Readable.from(chunked(tar, 4096)), { root: box.layer, whiteouts, tarSplitPath: join(box.ts, `${applyCount++}.tar-split.gz`) }));
  } catch (e) {
    assertOwnError(e, [TarError, ExtractError, SyscallError], what, true);
    outcome = 'refused';
  }
  assert.deepEqual(snapshotTree(box), before, `${what}: nothing outside the layer directory changed`);
  return outcome;
}

function resetLayer(box: Sandbox): void {
  rmTree(box.layer);
  mkdirSync(box.layer);
}

test('extraction: hostile layers never write outside the layer directory', async () => {
  const box = sandbox();
  const S = box.sentinel;
  const cases: [string, Buffer, 'refused' | 'any'][] = [
    ['.. in a name', tarOf(entry({ name: '../sentinel/pwned' }, Buffer.from('x'))), 'refused'],
    ['.. in the middle', tarOf(entry({ name: 'a/../../sentinel/pwned' }, Buffer.from('x'))), 'refused'],
    ['absolute name', tarOf(entry({ name: `${S}/pwned` }, Buffer.from('x'))), 'refused'],
    ['PAX absolute path', tarOf(pax([['path', `${S}/pwned`]]), entry({ name: 'x' }, Buffer.from('x'))), 'refused'],
    ['file through an absolute symlink', tarOf(entry({ name: 'evil', type: '2', link: S }), entry({ name: 'evil/pwned' }, Buffer.from('x'))), 'refused'],
    ['dir through an absolute symlink', tarOf(entry({ name: 'evil', type: '2', link: S }), entry({ name: 'evil/newdir/', type: '5' })), 'refused'],
    ['file through a relative symlink', tarOf(entry({ name: 'a/', type: '5' }), entry({ name: 'a/up', type: '2', link: '../../sentinel' }), entry({ name: 'a/up/pwned' }, Buffer.from('x'))), 'refused'],
    ['symlink to .. of the root', tarOf(entry({ name: 'up', type: '2', link: '..' })), 'refused'],
    ['hard link to ..', tarOf(entry({ name: 'h', type: '1', link: '../sentinel/secret' })), 'refused'],
    ['hard link to an absolute path', tarOf(entry({ name: 'h', type: '1', link: `${S}/secret` })), 'refused'],
    ['hard link through an absolute symlink', tarOf(entry({ name: 'evil', type: '2', link: S }), entry({ name: 'h', type: '1', link: 'evil/secret' })), 'refused'],
    ['hard link through a symlinked dir', tarOf(entry({ name: 'evil', type: '2', link: `${S}/dir` }), entry({ name: 'h', type: '1', link: 'evil/inner' })), 'refused'],
    ['symlink then whiteout of a dir through it', tarOf(entry({ name: 'evil', type: '2', link: S }), entry({ name: 'evil/.wh.secret' })), 'refused'],
    ['opaque whiteout through a symlink', tarOf(entry({ name: 'evil', type: '2', link: S }), entry({ name: 'evil/.wh..wh..opq' })), 'refused'],
    ['whiteout of ..', tarOf(entry({ name: '.wh...' })), 'refused'],
    ['whiteout of .. in a dir', tarOf(entry({ name: 'a/', type: '5' }), entry({ name: 'a/.wh...' })), 'refused'],
    ['whiteout of .', tarOf(entry({ name: '.wh..' })), 'refused'],
    ['whiteout of nothing', tarOf(entry({ name: '.wh.' })), 'refused'],
    ['dir replaced by a symlink, then a file under it', tarOf(entry({ name: 'a/b/f' }, Buffer.from('1')), entry({ name: 'a', type: '2', link: S }), entry({ name: 'a/b/g' }, Buffer.from('2'))), 'refused'],
    ['whiteout of a dir, symlink in its place, then a file under it', tarOf(entry({ name: 'a/f' }, Buffer.from('1')), entry({ name: '.wh.a' }), entry({ name: 'a', type: '2', link: S }), entry({ name: 'a/pwned' }, Buffer.from('2'))), 'refused'],
    ['dir entry replaced by a symlink: its times are not set through it', tarOf(entry({ name: 'a/b/', type: '5' }), entry({ name: 'a', type: '2', link: S.slice(0, -'sentinel'.length) }), entry({ name: 'z' })), 'any'],
    ['dir entry under an implicit dir replaced by a symlink', tarOf(entry({ name: 'a/dir/', type: '5' }), entry({ name: 'a', type: '2', link: S })), 'any'],
    ['NUL in a PAX name', tarOf(pax([['path', 'a\0/../../x']]), entry({ name: 'x' }, Buffer.from('x'))), 'refused'],
    ['uid out of range', tarOf(pax([['uid', String(2 ** 40)]]), entry({ name: 'x' }, Buffer.from('x'))), 'refused'],
    ['negative uid', tarOf(pax([['uid', '-7']]), entry({ name: 'x' }, Buffer.from('x'))), 'refused'],
    ['negative gid', tarOf(entry({ name: 'x', sizeField: Buffer.from('00000000000\0') }), pax([['gid', '-2']]), entry({ name: 'y' })), 'refused'],
    ['huge mtime', tarOf(pax([['mtime', '99999999999999999']]), entry({ name: 'x' }, Buffer.from('x'))), 'any'],
    ['deep directories beyond PATH_MAX', tarOf(pax([['path', ('d'.repeat(100) + '/').repeat(60) + 'f']]), entry({ name: 'x' }, Buffer.from('x'))), 'refused'],
    ['deep directories (300 levels)', tarOf(pax([['path', 'a/'.repeat(300) + 'f']]), entry({ name: 'x' }, Buffer.from('x'))), 'any'],
    ['duplicate names', tarOf(entry({ name: 'x' }), entry({ name: './x' })), 'refused'],
    ['device with huge major', tarOf(entry({ name: 'dev', type: '3' })), 'any'],
    ['sparse file', tarOf(entry({ name: 'sparse', type: 'S', magic: 'gnu' }, Buffer.alloc(10))), 'refused'],
  ];
  for (const [what, tar, expect] of cases) {
    for (const wh of ['overlay', 'delete'] as const) {
      resetLayer(box);
      const outcome = await applyOutcome(box, tar, wh, `${what} (${wh})`);
      if (expect === 'refused') assert.equal(outcome, 'refused', `${what} (${wh}) is refused`);
    }
  }
  rmTree(box.base);
});

test('extraction: random layers (names with .., /, whiteouts, links in and out) stay inside the layer', async () => {
  const box = sandbox();
  const piece = fc.constantFrom('a', 'b', 'c', '..', '.', '', '.wh.a', '.wh.b', '.wh..wh..opq', '.wh...', '.wh.', 'evil', 'sentinel');
  const path = fc.tuple(fc.boolean(), fc.array(piece, { minLength: 1, maxLength: 4 })).map(([abs, ps]) => (abs ? '/' : '') + ps.join('/'));
  const link = fc.oneof(path, fc.constantFrom(box.sentinel, `${box.sentinel}/dir`, `${box.sentinel}/secret`, '../sentinel', '../../..', box.base));
  const ent = fc.record({ name: path, type: fc.constantFrom('0', '0', '5', '2', '2', '1', '6', '3'), link, data: fc.uint8Array({ maxLength: 40 }), mode: fc.constantFrom(0o644, 0o755, 0o4755, 0o000) });
  await fc.assert(fc.asyncProperty(fc.array(ent, { minLength: 1, maxLength: 8 }), fc.constantFrom('overlay' as const, 'delete' as const), async (ents, wh) => {
    resetLayer(box);
    const tar = tarOf(...ents.map((e) => entry({ name: e.name, type: e.type, link: e.type === '1' || e.type === '2' ? e.link : undefined, mode: e.mode }, e.type === '0' ? Buffer.from(e.data) : Buffer.alloc(0))));
    await applyOutcome(box, tar, wh, `random layer ${JSON.stringify(ents.map((e) => [e.name, e.type, e.link]))}`);
  }), { seed: SEED + 30, numRuns: 200 });
  rmTree(box.base);
});

// ---------------------------------------------------------------------------------------------
// tar-split files and the layer rebuild

function writeTarSplit(dir: string, name: string, lines: string[] | Buffer): string {
  const p = join(dir, name);
  writeFileSync(p, Buffer.isBuffer(lines) ? lines : gzipSync(lines.join('')));
  return p;
}

async function readAllTarSplit(path: string, what: string): Promise<'ok' | 'refused'> {
  try {
    await within(10_000, what, (async () => {
      for await (const e of readTarSplit(path)) {
        if (e.kind === 'segment') assert.ok(Buffer.isBuffer(e.payload));
        else assert.ok(Number.isSafeInteger(e.size) && e.size >= 0 && Buffer.isBuffer(e.nameBytes) && (e.crc === null || e.crc.length === 8));
      }
    })());
    return 'ok';
  } catch (e) {
    assertOwnError(e, [TarSplitError], what);
    return 'refused';
  }
}

/**
 * Rebuild a layer from a tar-split over a content root: bytes, or an error on the stream; the
 * same outcome both as a stream and in reused chunks (layerTarChunks), which share the rebuild.
 */
async function rebuildOutcome(tarSplitPath: string, roots: string[], what: string, checkedOpens = false): Promise<'ok' | 'refused'> {
  const opts = { layerId: 'fuzz', tarSplitPath, contentRoots: roots, checkedOpens };
  const outcome = async (rebuild: () => Promise<void>, how: string): Promise<'ok' | 'refused'> => {
    try {
      await within(10_000, `${what} (${how})`, rebuild());
      return 'ok';
    } catch (e) {
      assertOwnError(e, [TarSplitError, LayerVerifyError], `${what} (${how})`, true);
      return 'refused';
    }
  };
  const streamed = await outcome(() => new Promise<void>((resolve, reject) => {
    const s = layerTarStream(opts);
    s.on('error', reject);
    s.pipe(new Writable({ write(_c, _e, cb) { cb(); } })).on('finish', resolve);
  }), 'stream');
  const chunked = await outcome(async () => {
    for await (const c of layerTarChunks(opts)) void c;
  }, 'chunks');
  assert.equal(chunked, streamed, `${what}: chunks and stream agree`);
  return streamed;
}

test('tar-split: malformed files are refused with a TarSplitError; hostile names never resolve outside the layer', async () => {
  const dir = mkdtempSync(join(work, 'ts-'));
  const box = sandbox();
  const root = join(box.base, 'content');
  mkdirSync(join(root, 'sub'), { recursive: true });
  writeFileSync(join(root, 'ok'), 'hello');
  symlinkSync(box.sentinel, join(root, 'up'));
  symlinkSync('../sentinel/secret', join(root, 'sl'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  const seg = (b: Buffer | string) => tarSplitLine({ type: 2, payload: Buffer.from(b), position: 0 });
  const file = (name: string, size = 6, crc: Buffer | null = Buffer.alloc(8)) => tarSplitLine({ type: 1, name: Buffer.from(name), size, payload: crc, position: 0 });
  const malformed: [string, string[] | Buffer][] = [
    ['not gzip', Buffer.from('{"type":2,"payload":""}\n')],
    ['truncated gzip', gzipSync(seg('x'.repeat(5000))).subarray(0, 40)],
    ['not JSON', ['{type:2}\n']],
    ['JSON null', ['null\n']],
    ['JSON array', ['[1,2]\n']],
    ['JSON string', ['"abc"\n']],
    ['unknown type', ['{"type":3,"payload":null}\n']],
    ['type as string', ['{"type":"1","name":"ok","size":5}\n']],
    ['negative size', ['{"type":1,"name":"ok","size":-5,"payload":"AAAAAAAAAAA="}\n']],
    ['fractional size', ['{"type":1,"name":"ok","size":1.5,"payload":"AAAAAAAAAAA="}\n']],
    ['huge size', ['{"type":1,"name":"ok","size":1e300,"payload":"AAAAAAAAAAA="}\n']],
    ['size as string', ['{"type":1,"name":"ok","size":"5","payload":"AAAAAAAAAAA="}\n']],
    ['payload not base64', ['{"type":2,"payload":"!!!"}\n']],
    ['payload a number', ['{"type":2,"payload":5}\n']],
    ['checksum of 3 bytes', ['{"type":1,"name":"ok","size":5,"payload":"AAAA"}\n']],
    ['file without a name', ['{"type":1,"size":5,"payload":"AAAAAAAAAAA="}\n']],
    ['name as a number', ['{"type":1,"name":5,"size":0,"payload":null}\n']],
    ['name_raw not base64', ['{"type":1,"name_raw":"%%","size":0,"payload":null}\n']],
    ['deep nesting', ['['.repeat(100_000) + '\n']],
    ['a line of 40 MiB without a newline', gzipSync(Buffer.alloc(40 << 20, 0x20))],
  ];
  for (const [what, lines] of malformed) {
    const p = writeTarSplit(dir, 'm.gz', lines);
    assert.equal(await readAllTarSplit(p, what), 'refused', what);
    assert.equal(await rebuildOutcome(p, [root], what), 'refused', `${what}: the rebuild fails`);
  }
  // a tar-split that is missing, or a FIFO no one writes to: refused, never a crash or a hang
  // (the FIFO bounded in store.test too)
  const fifo = join(dir, 'fifo.gz');
  execFileSync('mkfifo', [fifo]);
  for (const [what, p] of [['a missing tar-split', join(dir, 'none.gz')], ['a FIFO as the tar-split', fifo]]) {
    assert.equal(await readAllTarSplit(p, what), 'refused', what);
    assert.equal(await rebuildOutcome(p, [root], what), 'refused', `${what}: the rebuild fails`);
  }
  const hostile: [string, string[]][] = [
    ['.. in a name', [file('../sentinel/secret')]],
    ['.. deeper', [file('sub/../../sentinel/secret')]],
    ['absolute name', [file(`${box.sentinel}/secret`)]],
    ['through a symlinked dir', [file('up/secret')]],
    ['a symlink as the file', [file('sl')]],
    ['NUL in the name', [file('ok\0/../../sentinel/secret')]],
    ['the root itself', [file('.')]],
    ['a directory', [file('sub')]],
    ['a missing file', [file('nothere')]],
    ['a size larger than the file', [file('ok', 1 << 30)]],
    // (with the CRC-64 of the bytes it names: only the size can refuse them)
    ['a size smaller than the file', [file('ok', 2, new Crc64().update(Buffer.from('he')).digest())]],
    ['a size one smaller than the file', [file('ok', 4, new Crc64().update(Buffer.from('hell')).digest())]],
    ['a size one larger than the file', [file('ok', 6)]],
    ['a wrong CRC', [file('ok', 5)]],
    // (a FIFO no one writes to: opened and read, it would wait forever, and this file's test
    // process with it; store.test checks the same in a bounded child process)
    ['a FIFO as a small file', [file('fifo', 5)]],
    ['a FIFO as a large file', [file('fifo', 1 << 20)]],
  ];
  // both ways of opening: openat2 beneath the root (where the kernel has it), and the realpath checks
  // does this kernel (and its seccomp filter, if any) take openat2? asked directly, once
  const rootFd = openSync(root, 'r');
  const probe = openBeneath(rootFd, Buffer.from('ok\0'), 0);
  if (probe >= 0) closeFd(probe);
  closeSync(rootFd);
  const big = Buffer.alloc(300_000, 'big');
  writeFileSync(join(root, 'big'), big);
  for (const checked of [false, true]) {
    for (const [what, lines] of hostile) {
      // (with the tar going on after the file, and with the file last: read another way)
      for (const after of [[seg(Buffer.alloc(1024))], []]) {
        const p = writeTarSplit(dir, 'h.gz', [seg(Buffer.alloc(512)), ...lines, ...after]);
        assert.equal(await rebuildOutcome(p, [root], what, checked), 'refused', `${what} (${checked ? 'realpath checks' : 'openat2'}${after.length ? '' : ', last'})`);
      }
    }
    // and the same files under plain and unusual names read back (a small one, read by the
    // reader thread, and one large enough to be read by this thread)
    for (const name of ['ok', './ok', '/ok', 'sub/../ok', 'sub//../ok', 'ok/', 'big', './big', 'sub/../big']) {
      const data = name.endsWith('big') ? big : Buffer.from('hello');
      const p = writeTarSplit(dir, 'n.gz', [seg(Buffer.alloc(512)), file(name, data.length, new Crc64().update(data).digest()), seg(Buffer.alloc(1024))]);
      const want = name.split('/').includes('..') ? 'refused' : 'ok';
      assert.equal(await rebuildOutcome(p, [root], name, checked), want, `${name} (${checked ? 'realpath checks' : 'openat2'})`);
    }
    if (!checked) {
      // Linux has openat2 since 5.6: refused there, the binding is broken or a seccomp filter blocks it
      const [major, minor] = release().split('.').map(Number);
      if (major > 5 || (major === 5 && minor >= 6)) assert.ok(probe >= 0, `openat2 failed with errno ${-probe} on Linux ${release()}: a broken binding, or a seccomp filter refusing it`);
      if (probe >= 0) assert.equal(opensBeneath(), true, `Linux ${release()} takes openat2: the rebuild must use it`);
    }
  }
  // a name that is valid UTF-8 spanning the gunzip output's chunk boundaries reads back exactly
  const names = Array.from({ length: 2000 }, (_, i) => `dir/é${'ü'.repeat(i % 50)}-${i}`);
  const p = writeTarSplit(dir, 'utf8.gz', names.map((n) => tarSplitLine({ type: 1, name: Buffer.from(n), size: 0, payload: null, position: 0 })));
  const got: string[] = [];
  for await (const e of readTarSplit(p)) if (e.kind === 'file') got.push(e.name);
  assert.deepEqual(got, names, 'multi-byte names survive chunk boundaries');

  // random lines and mutations of a valid file
  const valid = [seg(Buffer.alloc(512, 1)), file('ok', 5, Buffer.from('0123456789abcdef', 'hex')), seg(Buffer.alloc(1024))];
  const validGz = gzipSync(valid.join(''));
  const jsonLine = fc.oneof(
    fc.record({ type: fc.constantFrom(1, 2, 3, '1', null), name: fc.oneof(fc.constantFrom('ok', '../x', 'up/secret', '/etc/passwd', 'sub', '', 'sl'), fc.string()), size: fc.oneof(fc.integer({ min: -10, max: 20 }), fc.double(), fc.string()),
      payload: fc.oneof(fc.constant(null), fc.base64String(), fc.string(), fc.integer()), name_raw: fc.oneof(fc.base64String(), fc.string()) }, { requiredKeys: ['type'] }).map((o) => JSON.stringify(o) + '\n'),
    fc.jsonValue().map((v) => JSON.stringify(v) + '\n'),
    fc.string().map((s) => s + '\n'),
  );
  await fc.assert(fc.asyncProperty(fc.array(jsonLine, { maxLength: 6 }), async (lines) => {
    const f = writeTarSplit(dir, 'r.gz', lines);
    await readAllTarSplit(f, 'random tar-split');
    await rebuildOutcome(f, [root], 'random tar-split rebuild');
  }), { seed: SEED + 40, numRuns: 300 });
  await fc.assert(fc.asyncProperty(fc.oneof(mutated(validGz), mutated(Buffer.from(valid.join(''))).map((b) => gzipSync(b))), async (gz) => {
    const f = writeTarSplit(dir, 'mu.gz', gz);
    await readAllTarSplit(f, 'mutated tar-split');
    await rebuildOutcome(f, [root], 'mutated tar-split rebuild');
  }), { seed: SEED + 41, numRuns: 300 });
  assert.ok(existsSync(join(box.sentinel, 'secret')));
  rmSync(dir, { recursive: true, force: true });
  rmTree(box.base);
});

test('tar-split: lines of Go\'s shape (parsed on their bytes) read exactly as JSON.parse reads them', async () => {
  const dir = mkdtempSync(join(work, 'tsp-'));
  type Out = { kind: string; name?: string; size?: number; crc?: string | null; payload?: string };
  const read = async (lines: string[]): Promise<Out[]> => {
    const p = writeTarSplit(dir, 'p.gz', lines);
    const out: Out[] = [];
    for await (const e of readTarSplit(p)) {
      out.push(e.kind === 'file' ? { kind: e.kind, name: e.nameBytes.toString('hex'), size: e.size, crc: e.crc?.toString('hex') ?? null } : { kind: e.kind, payload: e.payload.toString('hex') });
    }
    return out;
  };
  const name = fc.oneof(fc.string({ minLength: 1, maxLength: 60 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }), fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => Buffer.from(b).toString('latin1')));
  const entry = fc.oneof(
    fc.record({ name, size: fc.oneof(fc.constant(0), fc.nat(), fc.integer({ min: 0, max: 2 ** 45 })), crc: fc.uint8Array({ minLength: 8, maxLength: 8 }), lowBits: fc.nat(3) })
      .map(({ name, size, crc, lowBits }) => {
        let line = tarSplitLine({ type: 1, name: Buffer.from(name, 'latin1'), size, payload: size ? Buffer.from(crc) : null, position: 7 });
        // the 2 bits past a CRC's 64 in its 11th digit: Go's decoder (and Node's) ignores them
        if (size && lowBits) line = line.replace(/("payload":"[A-Za-z0-9+/]{10})([A-Za-z0-9+/])=/, (_, a: string, c: string) => a + B64[(B64.indexOf(c) & ~3) | lowBits] + '=');
        return line;
      }),
    fc.uint8Array({ maxLength: 3000 }).map((b) => tarSplitLine({ type: 2, payload: b.length ? Buffer.from(b) : null, position: 3 })),
  );
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  await fc.assert(fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 40 }), async (lines) => {
    // a space after the brace is not Go's shape: those lines go through JSON.parse
    const general = lines.map((l) => '{ ' + l.slice(1));
    assert.deepEqual(await read(lines), await read(general));
  }), { seed: SEED + 42, numRuns: 200 });
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// manifests

function checkParsed(bytes: Buffer, what: string): 'ok' | 'refused' {
  try {
    const m = parseManifest(bytes);
    const desc = (d: Descriptor | undefined, w: string) => {
      if (!d) return;
      assert.equal(typeof d.mediaType, 'string', `${w}.mediaType`);
      assert.ok(typeof d.digest === 'string' && /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(d.digest), `${w}.digest ${d.digest}`);
      assert.ok(Number.isSafeInteger(d.size) && d.size >= 0, `${w}.size ${d.size}`);
    };
    assert.equal(typeof m.mediaType, 'string');
    assert.ok(Array.isArray(m.layers) && Array.isArray(m.manifests));
    if (m.kind === 'image') assert.ok(m.config, `${what}: an image manifest has a config`);
    desc(m.config, 'config');
    desc(m.subject, 'subject');
    m.layers.forEach((d, i) => desc(d, `layers[${i}]`));
    m.manifests.forEach((d, i) => desc(d, `manifests[${i}]`));
    if (m.annotations) for (const v of Object.values(m.annotations)) assert.equal(typeof v, 'string', 'annotation values are strings');
    return 'ok';
  } catch (e) {
    if (e instanceof assert.AssertionError) throw new assert.AssertionError({ message: `${what}: ${e.message}` });
    assertOwnError(e, [ManifestError], what);
    return 'refused';
  }
}

const D = { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${'a'.repeat(64)}`, size: 3 };
const OCI = 'application/vnd.oci.image.manifest.v1+json';
const manifestJson = (o: unknown) => Buffer.from(JSON.stringify(o));

test('manifest parser: malformed manifests are refused with a ManifestError', () => {
  const refused: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['not JSON', Buffer.from('{"schemaVersion":2,')],
    ['JSON null', Buffer.from('null')],
    ['JSON array', Buffer.from('[]')],
    ['JSON number', Buffer.from('2')],
    ['deep nesting (100k levels of arrays)', Buffer.from('['.repeat(100_000) + ']'.repeat(100_000))],
    ['image without config', manifestJson({ schemaVersion: 2, mediaType: OCI, layers: [] })],
    ['config null', manifestJson({ schemaVersion: 2, mediaType: OCI, config: null, layers: [] })],
    ['config a string', manifestJson({ schemaVersion: 2, mediaType: OCI, config: 'sha256:x', layers: [] })],
    ['layers an object', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: { 0: D } })],
    ['layers a string', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: 'abc' })],
    ['a layer null', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [null] })],
    ['size a string', manifestJson({ schemaVersion: 2, mediaType: OCI, config: { ...D, size: '3' }, layers: [] })],
    ['size negative', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [{ ...D, size: -1 }] })],
    ['size fractional', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [{ ...D, size: 1.5 }] })],
    ['size huge', Buffer.from(`{"schemaVersion":2,"mediaType":"${OCI}","config":${JSON.stringify(D)},"layers":[{"mediaType":"x","digest":"${D.digest}","size":1e400}]}`)],
    ['digest a number', manifestJson({ schemaVersion: 2, mediaType: OCI, config: { ...D, digest: 5 }, layers: [] })],
    ['digest with a path', manifestJson({ schemaVersion: 2, mediaType: OCI, config: { ...D, digest: 'sha256:../../etc/passwd' }, layers: [] })],
    ['digest empty', manifestJson({ schemaVersion: 2, mediaType: OCI, config: { ...D, digest: '' }, layers: [] })],
    ['mediaType a number', manifestJson({ schemaVersion: 2, mediaType: OCI, config: { ...D, mediaType: 1 }, layers: [] })],
    ['index manifests a string', manifestJson({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: 'x' })],
    ['subject a string', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [], subject: 'x' })],
    ['annotations an array', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [], annotations: ['a'] })],
    ['annotation value a number', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [], annotations: { a: 1 } })],
    ['descriptor annotations wrong', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [{ ...D, annotations: { a: {} } }] })],
    ['platform a string', manifestJson({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ ...D, platform: 'linux' }] })],
    ['platform os a number', manifestJson({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ ...D, platform: { os: 1 } }] })],
  ];
  for (const [what, bytes] of refused) assert.equal(checkParsed(bytes, what), 'refused', what);
  const fine: [string, Buffer][] = [
    ['minimal image', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: [D] })],
    ['huge array of layers (200k)', manifestJson({ schemaVersion: 2, mediaType: OCI, config: D, layers: Array.from({ length: 200_000 }, () => D) })],
    ['non-UTF-8 bytes in a string', Buffer.concat([Buffer.from(`{"schemaVersion":2,"mediaType":"${OCI}","config":${JSON.stringify(D)},"layers":[],"annotations":{"a":"`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}}')])],
    ['deep nesting (100k levels of objects)', Buffer.from('{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000))],
    ['unknown media type', manifestJson({ schemaVersion: 2, mediaType: 'text/plain', whatever: [1, 2, 3] })],
    ['__proto__ key', Buffer.from(`{"schemaVersion":2,"mediaType":"${OCI}","config":${JSON.stringify(D)},"layers":[],"__proto__":{"config":1}}`)],
  ];
  for (const [what, bytes] of fine) assert.equal(checkParsed(bytes, what), 'ok', what);
});

test('manifest parser: random JSON and random manifest shapes', () => {
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => {
    checkParsed(Buffer.from(JSON.stringify(v) ?? ''), 'random JSON');
  }), { seed: SEED + 50, numRuns: 1000 });
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
    checkParsed(Buffer.from(b), 'random bytes');
  }), { seed: SEED + 51, numRuns: 1000 });
  const anyValue = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined));
  const descriptor = fc.oneof(
    fc.record({ mediaType: fc.oneof(fc.string(), anyValue), digest: fc.oneof(fc.constant(D.digest), fc.string(), anyValue), size: fc.oneof(fc.integer(), fc.double(), anyValue),
      platform: anyValue, annotations: anyValue }, { requiredKeys: [] }),
    anyValue,
  );
  const shape = fc.record({
    schemaVersion: fc.oneof(fc.constant(2), anyValue),
    mediaType: fc.oneof(fc.constantFrom(OCI, 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'), anyValue),
    config: descriptor,
    layers: fc.oneof(fc.array(descriptor, { maxLength: 4 }), anyValue),
    manifests: fc.oneof(fc.array(descriptor, { maxLength: 4 }), anyValue),
    subject: descriptor,
    artifactType: anyValue,
    annotations: fc.oneof(fc.dictionary(fc.string(), fc.string()), anyValue),
  }, { requiredKeys: [] });
  fc.assert(fc.property(shape, (o) => {
    checkParsed(Buffer.from(JSON.stringify(o)), `shape ${JSON.stringify(o)}`);
  }), { seed: SEED + 52, numRuns: 3000 });
});

// ---------------------------------------------------------------------------------------------
// names, tags, digests, Range

const strings = fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 100 }), fc.stringMatching(/^[a-z0-9._\-/:@%]{0,300}$/));

test('names, tags and digests: any string gives a boolean, fast, never an exception', () => {
  const corpus = ['', ':', 'constructor:abc', '__proto__:abc', 'toString:' + 'a'.repeat(64), 'hasOwnProperty:x', 'valueOf:', `sha256:${'a'.repeat(64)}`, `sha256:${'A'.repeat(64)}`,
    `sha256:${'a'.repeat(63)}`, `sha256:${'a'.repeat(65)}`, `sha512:${'a'.repeat(128)}`, `md5:${'a'.repeat(32)}`, `sha256:${'a'.repeat(64)}\n`, 'sha256:', 'a'.repeat(100_000),
    'a' + '-'.repeat(100_000) + '!', 'a' + '__'.repeat(50_000) + 'A', ('a.'.repeat(120) + '/').repeat(2) + '!', '../x', 'a/../b', 'A', 'a//b', '/a', 'a/', '\0', 'é', 'a'.repeat(256), 'a'.repeat(128), 'a'.repeat(129)];
  const check = (s: string) => {
    const t0 = performance.now();
    const r = [isValidRepository(s), isValidTag(s), isValidDigest(s), looksLikeDigest(s)];
    assert.ok(r.every((x) => typeof x === 'boolean'));
    assert.ok(performance.now() - t0 < 250, `slow on ${JSON.stringify(s.slice(0, 50))}… (${s.length} chars)`);
    if (r[0]) assert.ok(s.length <= 255 && /^[a-z0-9][a-z0-9._\-/]*$/.test(s) && !s.includes('..') && !s.includes('//'), `valid name ${JSON.stringify(s)}`);
    if (r[1]) assert.ok(/^[\w][\w.-]{0,127}$/.test(s), `valid tag ${JSON.stringify(s)}`);
    if (r[2]) assert.ok(/^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/.test(s), `valid digest ${JSON.stringify(s)}`);
  };
  for (const s of corpus) check(s);
  fc.assert(fc.property(strings, (s) => check(s)), { seed: SEED + 60, numRuns: 3000 });
  fc.assert(fc.property(fc.constantFrom(...Object.getOwnPropertyNames(Object.prototype), 'sha256', 'sha512'), fc.string(), (alg, enc) => check(`${alg}:${enc}`)), { seed: SEED + 61, numRuns: 300 });
});

test('Range parser: any header and size gives undefined, unsatisfiable or a range inside the blob', () => {
  const check = (h: string | undefined, size: number) => {
    const r = parseRange(h, size);
    if (r === undefined || r === 'unsatisfiable') return;
    assert.ok(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end), `${h} on ${size}: ${JSON.stringify(r)}`);
    assert.ok(r.start >= 0 && r.start < r.end && r.end <= size, `${h} on ${size}: ${JSON.stringify(r)}`);
  };
  const corpus = ['bytes=0-', 'bytes=-0', 'bytes=-1', 'bytes=-99999999999999999999999', 'bytes=99999999999999999999-', 'bytes=0-99999999999999999999999', 'bytes=5-3', 'bytes=-', 'bytes=0-0,2-3',
    'bytes=1e3-', 'bytes=0x10-', 'bytes= 0-1', 'items=0-1', 'bytes=٣-٤', 'bytes=-9007199254740993', '', ' ', 'bytes=0-' + '9'.repeat(10_000)];
  for (const size of [0, 1, 10, 2 ** 40, Number.MAX_SAFE_INTEGER]) for (const h of corpus) check(h, size);
  assert.equal(parseRange('bytes=-5', 0), 'unsatisfiable', 'a suffix range of an empty blob');
  const header = fc.oneof(strings, fc.tuple(fc.oneof(fc.constant(''), fc.bigInt({ min: 0n, max: 10n ** 25n }).map(String)), fc.oneof(fc.constant(''), fc.bigInt({ min: 0n, max: 10n ** 25n }).map(String))).map(([a, b]) => `bytes=${a}-${b}`));
  fc.assert(fc.property(header, fc.oneof(fc.nat({ max: 5000 }), fc.constantFrom(0, 1, Number.MAX_SAFE_INTEGER)), (h, size) => check(h, size)), { seed: SEED + 70, numRuns: 3000 });
});

// ---------------------------------------------------------------------------------------------
// store JSON and storage.conf

test('store JSON: random records give records or a StoreFormatError; IDs never name a path', () => {
  const check = (text: string, what: string) => {
    try {
      for (const r of parseRecordArray('layers.json', text)) {
        assert.ok(typeof r.id === 'string' && r.id !== '' && !r.id.includes('/') && r.id !== '.' && r.id !== '..', `${what}: id ${JSON.stringify(r.id)}`);
        const l = parseLayer(r, '/store', false);
        assert.ok(Array.isArray(l.names) && Array.isArray(l.uidset) && typeof l.compression === 'number');
        const i = parseImage('images.json', r, '/store', false);
        assert.ok(Array.isArray(i.digests) && i.digests.every((d) => typeof d === 'string'));
        parseContainer(r, '/store');
      }
    } catch (e) {
      assertOwnError(e, [StoreFormatError], what);
    }
  };
  const corpus = ['', 'null', '{}', '[null]', '[1]', '[[]]', '[{}]', '[{"id":5}]', '[{"id":""}]', '[{"id":"../../etc"}]', '[{"id":"a/b"}]', '[{"id":".."}]', '[{"id":"a\\u0000b"}]',
    '[{"id":"x","digest":"../x"}]', '[{"id":"x","names":"abc","uidset":{"a":1},"big-data-names":[1,{}],"big-data-digests":[],"flags":[]}]',
    '[{"id":"x","big-data-names":["manifest"],"big-data-digests":{"manifest":"not a digest"}}]', '['.repeat(100_000), '['.repeat(100_000) + ']'.repeat(100_000), '[{"id":"x","__proto__":{"incomplete":true}}]'];
  for (const t of corpus) check(t, `corpus ${t.slice(0, 60)}`);
  assert.throws(() => parseRecordArray('layers.json', '[{"id":"../../../tmp/x"}]'), StoreFormatError);
  const rec = fc.dictionary(fc.constantFrom('id', 'names', 'parent', 'digest', 'layer', 'big-data-names', 'big-data-digests', 'big-data-sizes', 'flags', 'uidset', 'diff-size', 'compression', 'uidmap', 'image'),
    fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom('abc', '../x', `sha256:${'a'.repeat(64)}`)));
  fc.assert(fc.property(fc.oneof(fc.array(rec, { maxLength: 4 }), fc.jsonValue({ maxDepth: 4 })), (v) => check(JSON.stringify(v), 'random records')), { seed: SEED + 80, numRuns: 2000 });
});

test('storage.conf: random TOML gives a location or a StorageConfigError', () => {
  const dir = mkdtempSync(join(work, 'conf-'));
  const file = join(dir, 'storage.conf');
  const check = (text: string | Buffer, what: string) => {
    writeFileSync(file, text);
    try {
      const loc = resolveStoreLocation({}, { CONTAINERS_STORAGE_CONF: file, HOME: dir });
      assert.ok(typeof loc.graphRoot === 'string' && typeof loc.runRoot === 'string' && typeof loc.driver === 'string' && Array.isArray(loc.additionalImageStores));
    } catch (e) {
      assertOwnError(e, [StorageConfigError], what);
    }
  };
  const corpus = ['', '[storage', '[storage]\ndriver = 5\ngraphroot = []\nrunroot = {a=1}\n', 'storage = 5', 'storage = "x"', '[storage]\ndriver_priority = [1, {}, "vfs"]',
    '[storage.options]\nadditionalimagestores = "x"', '[storage.options]\nadditionalimagestores = [1, "/a/$HOME/${NOPE}"]', 'a = ' + '['.repeat(100_000) + ']'.repeat(100_000),
    'a = ' + '{b='.repeat(50_000) + '1' + '}'.repeat(50_000), '[' + 'a.'.repeat(50_000) + 'b]', Buffer.from([0xff, 0xfe, 0x00, 0x5b]), 'x = """' + 'a'.repeat(1 << 20)];
  for (const t of corpus) check(t, `corpus ${String(t).slice(0, 40)}`);
  const toml = fc.array(fc.oneof(fc.constantFrom('[storage]', '[storage.options]', 'driver = "vfs"', 'graphroot = 1', 'runroot = "/x"', 'driver_priority = ["overlay", 2]', 'imagestore = true', 'transient_store = "yes"', '[[storage]]'),
    fc.string({ maxLength: 40 })), { maxLength: 8 }).map((ls) => ls.join('\n'));
  fc.assert(fc.property(toml, (t) => check(t, `random TOML ${JSON.stringify(t)}`)), { seed: SEED + 90, numRuns: 500 });
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// HTTP: a registry with push enabled on a temporary store

let reg: RunningRegistry;
const httpDir = join(work, 'http');
const logs: string[] = [];
before(async () => {
  mkdirSync(join(httpDir, 'root'), { recursive: true });
  const out = new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } });
  reg = await startRegistry({ store: Store.open({ root: join(httpDir, 'root'), runroot: join(httpDir, 'run'), driver: 'vfs' }), log: createLogger({ out }), addr: '127.0.0.1:0', stateDir: join(httpDir, 'state'), push: true });
});
after(async () => reg?.close(100));

async function req(method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}): Promise<{ status: number; code?: string; body: Buffer }> {
  const r = await within(15_000, `${method} ${path}`, fetch(`${reg.url}${path}`, { method, body: Buffer.isBuffer(body) ? new Uint8Array(body) : body, headers }));
  const b = Buffer.from(await r.arrayBuffer());
  let code: string | undefined;
  try {
    code = (JSON.parse(b.toString()) as { errors?: { code: string }[] }).errors?.[0]?.code;
  } catch { /* not an error body */ }
  return { status: r.status, code, body: b };
}

test('HTTP: malformed manifests, digests, names, ranges and Content-Range get 4xx, never a 500 or a crash', async () => {
  const put = (body: Buffer | string, ref = 'v1', type = OCI) => req('PUT', `/v2/fuzz/app/manifests/${ref}`, body, { 'Content-Type': type });
  const badManifests: (Buffer | string)[] = ['', 'null', '[]', '{', '["a"]', '{"schemaVersion":2}', JSON.stringify({ schemaVersion: 2, mediaType: OCI, layers: [] }),
    JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: null, layers: [] }), JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: { ...D, size: -1 }, layers: [] }),
    JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: { ...D, digest: 'sha256:../../x' }, layers: [] }), JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: D, layers: 'x' }),
    '['.repeat(100_000), '{"a":'.repeat(50_000), Buffer.from([0xff, 0xfe, 0xfd]), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ ...D, platform: 7 }] })];
  for (const m of badManifests) {
    const r = await put(m);
    assert.equal(r.status, 400, `PUT ${String(m).slice(0, 60)}: ${r.body}`);
    assert.equal(r.code, 'MANIFEST_INVALID', `PUT ${String(m).slice(0, 60)}`);
  }
  for (const ref of ['sha256:abc', 'sha256:' + 'a'.repeat(65), 'constructor:abc', '__proto__:x', 'md5:' + 'a'.repeat(32), 'sha256:' + 'A'.repeat(64)]) {
    for (const [method, path] of [['GET', `/v2/fuzz/app/manifests/${ref}`], ['GET', `/v2/fuzz/app/blobs/${ref}`], ['HEAD', `/v2/fuzz/app/blobs/${ref}`], ['PUT', `/v2/fuzz/app/manifests/${ref}`],
      ['DELETE', `/v2/fuzz/app/manifests/${ref}`], ['GET', `/v2/fuzz/app/referrers/${ref}`], ['POST', `/v2/fuzz/app/blobs/uploads/?mount=${encodeURIComponent(ref)}`]]) {
      const r = await req(method, path, method === 'PUT' ? '{}' : undefined);
      assert.equal(r.status, 400, `${method} ${path}: ${r.body}`);
      if (method !== 'HEAD') assert.equal(r.code, 'DIGEST_INVALID', `${method} ${path}`);
    }
  }
  for (const name of ['Fuzz/App', 'a..b', 'a/-b', '%', '%zz', 'a%00b', 'a%2F..', 'a'.repeat(300), 'a/%2F/b', 'é']) {
    for (const [method, path] of [['GET', `/v2/${name}/manifests/latest`], ['GET', `/v2/${name}/tags/list`], ['POST', `/v2/${name}/blobs/uploads/`], ['PUT', `/v2/${name}/manifests/latest`]]) {
      const r = await req(method, path, method === 'PUT' ? '{}' : undefined);
      assert.ok(r.status === 400 || r.status === 404, `${method} ${path}: ${r.status} ${r.body}`);
      assert.equal(r.code, 'NAME_INVALID', `${method} ${path}: ${r.body}`);
    }
  }
  for (const ref of ['%', '%zz', 'a%00']) {
    const r = await req('GET', `/v2/fuzz/app/manifests/${ref}`);
    assert.equal(r.status, 400, `manifest ref ${ref}: ${r.body}`);
  }
  // a blob to range over
  const blob = Buffer.from('0123456789abcdef'.repeat(64));
  const digest = sha(blob);
  const up = await req('POST', `/v2/fuzz/app/blobs/uploads/?digest=${digest}`, blob, { 'Content-Type': 'application/octet-stream' });
  assert.equal(up.status, 201, String(up.body));
  for (const range of ['bytes=0-', 'bytes=-0', 'bytes=5-3', 'bytes=99999999999999999999-', 'bytes=0-99999999999999999999999', 'bytes=-99999999999999999999999', 'bytes=1024-', 'bytes=1023-1023',
    'bytes=0-0,5-9', 'items=1-2', 'bytes=abc', 'bytes=' + '9'.repeat(5000) + '-']) {
    const r = await req('GET', `/v2/fuzz/app/blobs/${digest}`, undefined, { Range: range });
    assert.ok([200, 206, 416].includes(r.status), `Range ${range.slice(0, 40)}: ${r.status}`);
    if (r.status === 200) assert.ok(r.body.equals(blob));
    if (r.status === 206) assert.ok(r.body.length > 0 && blob.includes(r.body));
  }
  // Content-Range on chunked uploads
  const open = async () => {
    const r = await fetch(`${reg.url}/v2/fuzz/app/blobs/uploads/`, { method: 'POST' });
    assert.equal(r.status, 202);
    return r.headers.get('location')!;
  };
  for (const cr of ['0-9', 'bytes 0-9', '5-9', '9-0', '0-99999999999999999999999', '99999999999999999999-99999999999999999999', 'abc', '0-', '-5', '0-4', '0-0']) {
    const loc = await open();
    const r = await req('PATCH', loc, Buffer.alloc(10, 1), { 'Content-Range': cr, 'Content-Type': 'application/octet-stream' });
    assert.ok(r.status === 202 || r.status === 416, `Content-Range ${cr}: ${r.status} ${r.body}`);
    if (cr === '0-9' || cr === 'bytes 0-9') assert.equal(r.status, 202, `Content-Range ${cr} matches the body`);
    if (cr === '0-4' || cr === '0-0' || cr === '9-0' || cr === '5-9') assert.equal(r.status, 416, `Content-Range ${cr} does not match the 10-byte body at offset 0`);
    await req('DELETE', loc);
  }
  const random = fc.tuple(fc.constantFrom('GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE'), fc.stringMatching(/^[a-zA-Z0-9._\-/:%@]{0,40}$/), fc.constantFrom('manifests', 'blobs', 'tags', 'referrers', 'blobs/uploads'),
    fc.stringMatching(/^[a-zA-Z0-9._\-:%@]{0,70}$/), fc.option(fc.string({ maxLength: 30 })));
  await fc.assert(fc.asyncProperty(random, async ([method, name, kind, ref, range]) => {
    const path = `/v2/${name}/${kind}/${ref}`;
    let headers: Record<string, string> = {};
    if (range !== null && /^[\x20-\x7e]*$/.test(range)) headers = { Range: range, 'Content-Range': range };
    const r = await req(method, path, ['PUT', 'PATCH', 'POST'].includes(method) ? '{}' : undefined, headers);
    assert.ok(r.status < 500, `${method} ${path} ${JSON.stringify(headers)}: ${r.status} ${r.body}`);
  }), { seed: SEED + 100, numRuns: 300 });
  const ok = await req('GET', '/v2/');
  assert.equal(ok.status, 200, 'the server still answers');
  assert.ok(!logs.some((l) => /request failed/.test(l)), `no internal errors logged:\n${logs.filter((l) => /request failed/.test(l)).join('')}`);
});
