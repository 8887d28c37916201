// The zlib-compatible encoders against zlib itself: for every input and level, our raw deflate
// must be the bytes of Python's zlib.compressobj(level, DEFLATED, -15) (Debian's libz), our gzip
// the bytes of Python's gzip/zlib modules and of Java's GZIPOutputStream, whatever the chunking
// of our input, and all of it must round-trip through node:zlib.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, inflateRawSync } from 'node:zlib';
import { ZlibDeflateEncoder } from '../src/compress/zlib-deflate.js';
import { ZlibGzipEncoder, zlibGzipHeader, type ZlibGzipHeader } from '../src/compress/zlib-gzip.js';
import fc from 'fast-check';
import { wasmModule } from '../src/compress/wasm.js';
import { encodeChunked, mixedInputs, randomBytes, rng, sha, text, withAndWithoutWasm } from './compress-support.js';

const ALL_LEVELS = [1, 2, 3, 4, 5, 6, 7, 8, 9];
const BIG_LEVELS = [1, 6, 9];

let tmp = '';
let pythonGzipHeader: ZlibGzipHeader = 'python';
const inputs = new Map<string, { data: Buffer; levels: number[] }>();

/** Text and binary runs of varied sizes, with some far repeats (distances near 32 KiB). */
function mixed(n: number, seed: number): Buffer {
  const r = rng(seed);
  const out = Buffer.alloc(n);
  let pos = 0;
  while (pos < n) {
    const kind = r() % 4;
    const len = Math.min(n - pos, 500 + (r() % 40_000));
    if (kind === 0) text(len, r()).copy(out, pos);
    else if (kind === 1) randomBytes(len, r()).copy(out, pos);
    else if (kind === 2 && pos > 33_000) {
      // copy from 32506 +- a few bytes back: the longest distance zlib can use
      const from = pos - 32_500 - (r() % 12);
      out.copyWithin(pos, from, from + len);
    } else {
      // small-alphabet binary: many short matches, deep trees
      for (let i = 0; i < len; i++) out[pos + i] = (r() % 7) * (r() % 5);
    }
    pos += len;
  }
  return out;
}

/** Runs of literal-only data so that blocks end exactly on the 16383-symbol limit. */
function periodic(n: number, period: number, seed: number): Buffer {
  const unit = randomBytes(period, seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += period) unit.copy(b, i, 0, Math.min(period, n - i));
  return b;
}

/**
 * Low-entropy data with one 20-byte marker at 32768 repeated at 65274 = 64 KiB - 262: zlib,
 * given all input at once, reaches 65274 before sliding its window and matches the marker
 * 32506 bytes back; fed a byte at a time it slides first and the marker's first position drops
 * out (window index 0 means "none"), so its output differs.
 */
function slideEdge(): Buffer {
  const r = rng(1234);
  const b = Buffer.alloc(100_000);
  for (let i = 0; i < b.length; i++) b[i] = r() & 15;
  for (let i = 0; i < 20; i++) b[32768 + i] = b[65274 + i] = 0x90 + i;
  return b;
}

const PY_ORACLE = String.raw`
import sys, zlib, gzip, io, struct
data = sys.stdin.buffer.read()
out = sys.stdout.buffer
for item in sys.argv[1:]:
    kind, level = item.split(':'); level = int(level)
    if kind == 'raw':
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        b = c.compress(data) + c.flush()
    elif kind == 'raw1':
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        b = b''.join([c.compress(data[i:i+1]) for i in range(len(data))]) + c.flush()
    elif kind == 'gzc':
        b = gzip.compress(data, compresslevel=level, mtime=0)
    elif kind == 'gzf':
        f = io.BytesIO()
        with gzip.GzipFile(fileobj=f, mode='wb', compresslevel=level, mtime=0) as g:
            g.write(data)
        b = f.getvalue()
    else:
        raise SystemExit('bad item ' + item)
    out.write(struct.pack('<I', len(b))); out.write(b)
`;

/** Python's outputs for `items` ("raw:6", "gzc:9", ...) over one input, in one process. */
function python(data: Uint8Array, items: string[]): Buffer[] {
  const all = execFileSync('python3', ['-c', PY_ORACLE, ...items], { input: data, maxBuffer: 1 << 30 });
  const res: Buffer[] = [];
  let p = 0;
  for (let i = 0; i < items.length; i++) {
    const n = all.readUInt32LE(p);
    res.push(all.subarray(p + 4, p + 4 + n));
    p += 4 + n;
  }
  assert.equal(p, all.length);
  return res;
}

const JAVA_ORACLE = `
import java.io.*;
import java.nio.file.*;
import java.util.zip.*;
public class Oracle {
  public static void main(String[] a) throws Exception {
    byte[] data = Files.readAllBytes(Paths.get(a[0]));
    for (int i = 1; i < a.length; i++) {
      final int level = Integer.parseInt(a[i]);
      ByteArrayOutputStream bo = new ByteArrayOutputStream();
      // the usual way to pick a level: GZIPOutputStream's Deflater is protected
      GZIPOutputStream g = new GZIPOutputStream(bo) { { def.setLevel(level); } };
      g.write(data);
      g.close();
      Files.write(Paths.get(a[0] + "." + level + ".gz"), bo.toByteArray());
    }
  }
}
`;

/** zlib.compressobj(level, DEFLATED, -15) over many [level, data] cases, in one process. */
function pythonBatch(cases: { level: number; data: Buffer }[]): Buffer[] {
  const script = String.raw`
import sys, zlib, struct
d = sys.stdin.buffer.read(); p = 0
while p < len(d):
    lv, n = struct.unpack_from('<II', d, p); p += 8
    c = zlib.compressobj(lv, zlib.DEFLATED, -15)
    x = c.compress(d[p:p+n]) + c.flush(); p += n
    sys.stdout.buffer.write(struct.pack('<I', len(x)) + x)
`;
  const input = Buffer.concat(
    cases.flatMap(({ level, data }) => {
      const h = Buffer.alloc(8);
      h.writeUInt32LE(level, 0);
      h.writeUInt32LE(data.length, 4);
      return [h, data];
    }),
  );
  const all = execFileSync('python3', ['-c', script], { input, maxBuffer: 1 << 30 });
  const res: Buffer[] = [];
  for (let p = 0; p < all.length; ) {
    const n = all.readUInt32LE(p);
    res.push(all.subarray(p + 4, p + 4 + n));
    p += 4 + n;
  }
  assert.equal(res.length, cases.length);
  return res;
}

/** Small alphabets, runs and copies at random distances: skewed, deep Huffman trees. */
function generated(n: number, r: () => number): Buffer {
  const b = Buffer.alloc(n);
  const alpha = [2, 3, 5, 16, 64, 256][r() % 6];
  let i = 0;
  while (i < n) {
    const mode = r() % 3;
    const len = Math.min(n - i, 1 + (r() % 5000));
    if (mode === 0) for (let j = 0; j < len; j++) b[i + j] = r() % alpha;
    else if (mode === 1 && i > 0) {
      const d = 1 + (r() % Math.min(i, 40_000));
      for (let j = 0; j < len; j++) b[i + j] = b[i + j - d];
    } else b.fill(r() & 255, i, i + len);
    i += len;
  }
  return b;
}

function deflateOurs(data: Uint8Array, level: number, chunk = 0): Buffer {
  return encodeChunked(new ZlibDeflateEncoder(level), data, chunk);
}

function gzipOurs(data: Uint8Array, level: number, header: ZlibGzipHeader, chunk = 0): Buffer {
  return encodeChunked(new ZlibGzipEncoder({ level, header }), data, chunk);
}

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

function assertSame(got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) return;
  assert.fail(`${what}: ${got.length} bytes vs zlib's ${want.length}, first difference at ${firstDiff(got, want)}`);
}

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'csreg-zlib-'));
  // python3 is a hard requirement: no python, no pass
  const v = execFileSync('python3', ['-c', 'import sys,zlib; print(sys.version_info[0], sys.version_info[1], zlib.ZLIB_RUNTIME_VERSION)'])
    .toString()
    .trim()
    .split(' ');
  // Python 3.11 and 3.12 let zlib write gzip.compress's header when mtime is 0 (gh-112346)
  if (v[0] === '3' && (v[1] === '11' || v[1] === '12')) pythonGzipHeader = 'zlib';

  const add = (name: string, data: Buffer, levels = ALL_LEVELS) => inputs.set(name, { data, levels });
  add('empty', Buffer.alloc(0));
  add('one byte', Buffer.from('x'));
  add('two bytes', Buffer.from('xx'));
  add('short text', Buffer.from('hello hello hello world, hello deflate\n'));
  for (const n of [100, 1000]) add(`text ${n}`, text(n, n));
  for (const n of [32767, 32768, 32769, 65273, 65274, 65535, 65536, 65537, 98304]) add(`text ${n}`, text(n, n));
  // one literal per byte: blocks of 16383 symbols
  for (const n of [16382, 16383, 16384, 16385, 32766]) add(`random ${n}`, randomBytes(n, n));
  add('random 200K', randomBytes(200_000, 11));
  add('period 32506', periodic(300_000, 32506, 5));
  add('period 32507', periodic(300_000, 32507, 6));
  add('period 4097', periodic(100_000, 4097, 7));
  add('zeros 1M', Buffer.alloc(1 << 20));
  add('phrase 300K', Buffer.from('a phrase, repeated over and over; '.repeat(9000)));
  add('mixed 600K', mixed(600_000, 42));
  add('slide edge', slideEdge());
  const tree = '/usr/share/zoneinfo';
  assert.ok(existsSync(tree), `${tree} missing`);
  add('tar zoneinfo', execFileSync('tar', ['-C', tree, '--sort=name', '-cf', '-', '.'], { maxBuffer: 1 << 30 }), BIG_LEVELS);
  add('mixed 3M', mixed(3 << 20, 7), BIG_LEVELS);
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('rejects unsupported levels', () => {
  for (const level of [0, 10, -1, 2.5]) assert.throws(() => new ZlibDeflateEncoder(level));
});

test('raw deflate is bit-exact with zlib', () => {
  for (const [name, { data, levels }] of inputs) {
    const want = python(data, levels.map((l) => `raw:${l}`));
    levels.forEach((level, i) => {
      const got = deflateOurs(data, level);
      assertSame(got, want[i], `${name} (${data.length} bytes) at level ${level}`);
      if (data.length <= 1 << 20) assert.ok(inflateRawSync(got).equals(data), `${name} at level ${level}: round trip`);
    });
  }
});

test('generated inputs at random levels and chunkings are bit-exact with zlib', () => {
  const r = rng(2024);
  const cases: { level: number; data: Buffer; chunk: number }[] = [];
  for (let k = 0; k < 120; k++) {
    const n = r() % 4 === 0 ? r() % 300 : r() % 150_000;
    cases.push({ level: 1 + (r() % 9), data: generated(n, r), chunk: [0, 1, 13, 1000, 65536][r() % 5] });
  }
  const want = pythonBatch(cases);
  cases.forEach(({ level, data, chunk }, i) => {
    assertSame(deflateOurs(data, level, chunk), want[i], `case ${i}: ${data.length} bytes at level ${level}, ${chunk}-byte chunks`);
  });
});

test('output does not depend on input chunking', () => {
  const cases: [string, number, number[]][] = [
    ['mixed 600K', 6, [1, 7, 4096, 100_000]],
    ['text 65537', 9, [1, 7, 4096]],
    ['tar zoneinfo', 9, [4096, 100_000]],
    ['mixed 3M', 6, [7, 4096, 100_000]],
    ['mixed 3M', 1, [100_000]],
    ['random 200K', 4, [1, 7]],
  ];
  for (const [name, level, chunks] of cases) {
    const data = inputs.get(name)!.data;
    const whole = deflateOurs(data, level);
    for (const chunk of chunks) assertSame(deflateOurs(data, level, chunk), whole, `${name} at level ${level} in ${chunk}-byte chunks`);
  }
});

test('zlib depends on its input chunking at the window slide; we reproduce one-shot input', () => {
  const { data } = inputs.get('slide edge')!;
  for (const level of BIG_LEVELS) {
    const [whole, bytewise] = python(data, [`raw:${level}`, `raw1:${level}`]);
    assert.ok(!whole.equals(bytewise), `level ${level}: the slide edge no longer shows in zlib`);
    for (const chunk of [0, 1, 7, 4096]) assertSame(deflateOurs(data, level, chunk), whole, `level ${level}, ${chunk}-byte chunks`);
  }
});

test('gzip: Python headers', () => {
  for (const name of ['empty', 'short text', 'text 65537', 'mixed 600K']) {
    const { data } = inputs.get(name)!;
    const levels = ALL_LEVELS;
    const want = python(data, [...levels.map((l) => `gzc:${l}`), ...levels.map((l) => `gzf:${l}`)]);
    levels.forEach((level, i) => {
      const got = gzipOurs(data, level, pythonGzipHeader, name === 'mixed 600K' ? 4096 : 0);
      assertSame(got, want[i], `gzip.compress(${name}, ${level}, mtime=0) as '${pythonGzipHeader}'`);
      assert.ok(gunzipSync(got).equals(data));
      assertSame(gzipOurs(data, level, 'python'), want[levels.length + i], `GzipFile(${name}, ${level}, mtime=0) as 'python'`);
    });
  }
  // the headers alone
  assert.deepEqual([...zlibGzipHeader('python', 9)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
  assert.deepEqual([...zlibGzipHeader('zlib', 1)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 3]);
  assert.deepEqual([...zlibGzipHeader('java-legacy', 9)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0]);
});

test('gzip: Java GZIPOutputStream', (t) => {
  const hasJava = spawnSync('java', ['-version'], { stdio: 'pipe' }).status === 0;
  if (!hasJava) {
    t.skip('java is not on PATH: Java GZIPOutputStream not checked');
    return;
  }
  const version = spawnSync('java', ['-version'], { encoding: 'utf8' }).stderr;
  const major = Number(/version "(\d+)/.exec(version)?.[1] ?? '0');
  const header: ZlibGzipHeader = major >= 16 ? 'java' : 'java-legacy';
  const src = join(tmp, 'Oracle.java');
  writeFileSync(src, JAVA_ORACLE);
  execFileSync('javac', ['-d', tmp, src], { stdio: 'pipe' });
  for (const name of ['short text', 'text 65537', 'mixed 600K', 'tar zoneinfo']) {
    const { data } = inputs.get(name)!;
    const file = join(tmp, name.replace(/\W/g, '_'));
    writeFileSync(file, data);
    execFileSync('java', ['-cp', tmp, 'Oracle', file, ...BIG_LEVELS.map(String)], { stdio: 'pipe' });
    for (const level of BIG_LEVELS) {
      const want = readFileSync(`${file}.${level}.gz`);
      const got = gzipOurs(data, level, header, 100_000);
      assertSame(got, want, `GZIPOutputStream(${name}) at level ${level} as '${header}'`);
      assert.ok(gunzipSync(got).equals(data));
    }
  }
});

test('the WebAssembly loop (levels 1-9) and block writer are built and used, and write exactly what the TypeScript ones write', () => {
  assert.ok(wasmModule('zlib-match'), 'dist/src/compress/wasm/zlib-match.wasm is built (npm run build, needs clang-14 and lld-14) and loads');
  const both = (data: Uint8Array, level: number, chunk = 0) => withAndWithoutWasm('zlib-match', () => encodeChunked(new ZlibDeflateEncoder(level), data, chunk));
  fc.assert(fc.property(fc.integer({ min: 1, max: 9 }), mixedInputs, (level, data) => {
    const { w, t } = both(data, level);
    assert.equal(sha(w), sha(t), `level ${level}, ${data.length} bytes: WebAssembly and TypeScript differ`);
  }), { seed: 20261206, numRuns: 40 });
  // far repeats and deep trees, blocks ending on the symbol limit, the slide edge; fed in pieces
  for (const [data, chunk] of [[mixed(300_000, 8), 7_000], [periodic(100_000, 3_000, 9), 0], [slideEdge(), 65_536]] as const) {
    for (const level of [1, 3, 4, 6, 9]) {
      const { w, t } = both(data, level, chunk);
      assert.equal(sha(w), sha(t), `level ${level}, ${data.length} bytes in pieces of ${chunk}: WebAssembly and TypeScript differ`);
    }
  }
});
