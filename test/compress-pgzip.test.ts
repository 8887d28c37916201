// src/compress/pgzip.ts must write exactly the bytes klauspost/pgzip 1.2.5 (over
// klauspost/compress 1.15.12 flate, level 5) writes with its defaults — what podman, buildah
// and skopeo push. The oracle is test/oracles/pgzip, built here with `go build` against the
// Debian klauspost sources; scripts/setup.sh installs Go and them. Missing: the tests fail.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import {
  PGZIP_BLOCK_SIZE,
  PgzipEncoder,
  createPgzipStream,
  pgzipBlock,
  pgzipHeader,
  pgzipTrailer,
} from '../src/compress/pgzip.js';
import { KlauspostDeflater, klauspostDeflate } from '../src/compress/klauspost-flate.js';
import { useWasm, wasmModule } from '../src/compress/wasm.js';
import { logLines, withAndWithoutWasm } from './compress-support.js';
import fc from 'fast-check';
import { crc32 as pgzipCrc32 } from '../src/compress/crc32.js';
import { poolFor, produce, tryProfile } from '../src/compress/produce.js';
import { PROFILES } from '../src/compress/profiles.js';

const HERE = dirname(fileURLToPath(import.meta.url));
// Compiled to dist/test/, sources in test/: find the repository root either way.
const ROOT = existsSync(join(HERE, '..', 'package.json')) ? resolve(HERE, '..') : resolve(HERE, '..', '..');
const GOCODE = '/usr/share/gocode';
const KLAUSPOST = ['github.com/klauspost/pgzip', 'github.com/klauspost/compress/flate'];

let tmp = '';
let oracle = '';
const inputs = new Map<string, Buffer>();

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
function prng(n: number, seed: number, alphabet = 256, skew = false): Buffer {
  const b = Buffer.alloc(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    let v = x % alphabet;
    if (skew) v = Math.min(v, (x >>> 8) % alphabet); // favour small values: Huffman-friendly, match-poor
    b[i] = skew ? 0x20 + v : v;
  }
  return b;
}

function words(n: number, seed: number): Buffer {
  const vocab = ['layer', 'blob', 'manifest', 'digest', 'sha256', 'image', 'podman', 'storage', 'overlay', 'the', 'a',
    'registry', 'config', 'tar', 'gzip', 'index', '\n', 'of', 'and', 'json', '{', '}', '"', ':', ','];
  const r = prng(n, seed);
  const parts: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const w = vocab[r[i % n] % vocab.length] + (r[(i * 7) % n] & 1 ? ' ' : '');
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function goPgzip(data: Uint8Array, mode: 'pgzip' | 'flate' = 'pgzip'): Buffer {
  return execFileSync(oracle, [`-mode=${mode}`], { input: data, maxBuffer: 1 << 30 });
}

function encodeChunked(data: Uint8Array, chunk: number): { bytes: Buffer; offsets: number[] } {
  const enc = new PgzipEncoder();
  const parts: Uint8Array[] = [];
  for (let i = 0; i < data.length; i += chunk) parts.push(...enc.push(data.subarray(i, i + chunk)));
  parts.push(...enc.finish());
  return { bytes: Buffer.concat(parts), offsets: [...enc.blockOffsets] };
}

/** header + blocks compressed one by one through the public block API + trailer. */
function assembleByHand(data: Uint8Array): { bytes: Buffer; offsets: number[] } {
  const parts: Uint8Array[] = [pgzipHeader()];
  const offsets: number[] = [];
  let at = parts[0].length;
  // pgzip cuts only full blocks while writing; Close adds the rest, even if empty.
  const blocks = Math.floor(data.length / PGZIP_BLOCK_SIZE) + 1;
  for (let i = 0; i < blocks; i++) {
    const start = i * PGZIP_BLOCK_SIZE;
    const block = data.subarray(start, Math.min(data.length, start + PGZIP_BLOCK_SIZE));
    const dict = data.subarray(Math.max(0, start - 32768), start);
    const bytes = pgzipBlock(block, dict);
    offsets.push(at);
    at += bytes.length;
    parts.push(bytes);
  }
  parts.push(pgzipTrailer(pgzipCrc32(data), data.length));
  return { bytes: Buffer.concat(parts), offsets };
}

before(() => {
  // Go and the klauspost sources are hard requirements (scripts/setup.sh installs them).
  try {
    execFileSync('go', ['version'], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`pgzip oracle: the Go toolchain is required (run scripts/setup.sh): ${(err as Error).message}`);
  }
  for (const pkg of KLAUSPOST) {
    const dir = join(GOCODE, 'src', pkg);
    if (!existsSync(dir)) {
      throw new Error(`pgzip oracle: ${dir} is missing; install golang-github-klauspost-pgzip-dev and golang-github-klauspost-compress-dev (scripts/setup.sh)`);
    }
  }
  tmp = mkdtempSync(join(tmpdir(), 'csreg-pgzip-'));
  const gopath = join(tmp, 'gopath');
  mkdirSync(gopath);
  oracle = join(tmp, 'pgzip-oracle');
  execFileSync('go', ['build', '-o', oracle, '.'], {
    cwd: join(ROOT, 'test', 'oracles', 'pgzip'),
    env: { ...process.env, GO111MODULE: 'off', GOPATH: `${gopath}:${GOCODE}`, GOCACHE: join(tmp, 'gocache'), GOFLAGS: '' },
    stdio: 'pipe',
  });

  const MiB = PGZIP_BLOCK_SIZE;
  const text = words(3 * MiB, 1);
  inputs.set('empty', Buffer.alloc(0));
  inputs.set('one byte', Buffer.from('x'));
  inputs.set('short text', Buffer.from('hello hello hello world, hello pgzip\n'));
  inputs.set('text 100', text.subarray(0, 100));
  for (const n of [32767, 32768, 32769]) inputs.set(`text ${n}`, text.subarray(0, n));
  inputs.set('text 3 windows (196605)', text.subarray(0, 3 * 65535));
  for (const n of [MiB - 1, MiB, MiB + 1]) inputs.set(`text ${n}`, text.subarray(0, n));
  inputs.set('text 2 MiB + 100', text.subarray(0, 2 * MiB + 100));
  inputs.set('repetitive', Buffer.concat([Buffer.from('0123456789abcdef\n'.repeat(100_000)), Buffer.alloc(1_500_000)]));
  inputs.set('random 2.5 MB', prng(2_500_000, 7));
  inputs.set('skewed random text', prng(1_300_000, 9, 48, true));
  {
    const parts: Buffer[] = [];
    for (let i = 0; i < 14; i++) {
      parts.push(i % 2 ? prng(40_000 + i * 9_000, i) : text.subarray(i * 100_000, i * 100_000 + 70_000 + i * 11_000));
    }
    inputs.set('text+random', Buffer.concat(parts));
  }
  const tar = execFileSync('tar', ['-C', '/usr/share', '--sort=name', '-cf', '-', 'zoneinfo',
    'gocode/src/github.com/klauspost/compress/flate', 'gocode/src/github.com/klauspost/pgzip'], { maxBuffer: 1 << 30 });
  inputs.set(`tar (${tar.length} bytes)`, tar);
  // Small windows and window sequences that reach the rarer block decisions: fixed-Huffman
  // blocks, re-using the previous window's table (or not) for a short last window,
  // Huffman-only blocks following dynamic ones.
  inputs.set('fixed block 130', Buffer.from('0123456789'.repeat(13)));
  inputs.set('fixed block 204', Buffer.from('hello world '.repeat(17)));
  inputs.set('source 300', tar.subarray(0, 300));
  inputs.set('source 1000', tar.subarray(0, 1000));
  inputs.set('window + repeated tail', Buffer.concat([tar.subarray(0, 65535), Buffer.from('0123456789'.repeat(20))]));
  inputs.set('window + 100-byte tail', tar.subarray(0, 65535 + 100)); // tiny last window after an open table
  inputs.set('window + copied 127-byte tail', Buffer.concat([tar.subarray(0, 65535), tar.subarray(100, 227)]));
  inputs.set('window + copied tail', Buffer.concat([tar.subarray(0, 65535), tar.subarray(50_000, 50_150), tar.subarray(60_000, 60_100)]));
  {
    // Fibonacci byte frequencies: the optimal Huffman tree is ~21 deep, so the 15-bit length
    // limit has to kick in (Huffman-only window; then with matches, a dynamic one).
    const syms: number[] = [];
    for (let k = 0, a = 1, b = 1; k < 22; k++, [a, b] = [b, a + b]) for (let i = 0; i < a; i++) syms.push(k * 11 + 3);
    const r = prng(syms.length * 4, 5);
    for (let i = syms.length - 1; i > 0; i--) {
      const j = r.readUInt32LE(i * 4) % (i + 1);
      [syms[i], syms[j]] = [syms[j], syms[i]];
    }
    const fib = Buffer.from(syms);
    inputs.set('fibonacci frequencies', fib);
    inputs.set('fibonacci + copies', Buffer.concat([fib, fib.subarray(0, 15_000), fib.subarray(20_000, 30_000), fib]));
  }
  inputs.set('skewed + source + skewed', Buffer.concat([prng(200_000, 3, 48, true), tar.subarray(0, 900_000), prng(100_000, 4, 40, true)]));
  {
    // ~20 MB: tar, text, random and zero runs, cut at odd sizes so blocks straddle them.
    const parts: Buffer[] = [];
    let total = 0;
    for (let i = 0; total < 20_000_000; i++) {
      const pick = i % 4;
      const part =
        pick === 0 ? tar.subarray((i * 777_777) % (tar.length - 1_500_000), (i * 777_777) % (tar.length - 1_500_000) + 1_234_567)
        : pick === 1 ? text.subarray(i * 1000, i * 1000 + 987_654)
        : pick === 2 ? prng(345_678, 100 + i)
        : Buffer.alloc(123_457, i);
      parts.push(part);
      total += part.length;
    }
    inputs.set('mixed ~20 MB', Buffer.concat(parts));
  }
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('header and trailer match what pgzip writes', () => {
  assert.deepEqual([...pgzipHeader()], [0x1f, 0x8b, 8, 0, 0x00, 0x09, 0x6e, 0x88, 0, 0xff]);
  const empty = goPgzip(new Uint8Array(0));
  // Empty input: one empty block (sync flush only), the final empty block, CRC 0, ISIZE 0.
  assert.deepEqual([...empty.subarray(10, 15)], [0, 0, 0, 0xff, 0xff]);
  assert.deepEqual([...empty.subarray(15)], [...pgzipTrailer(0, 0)]);
  assert.deepEqual([...pgzipTrailer(0xdeadbeef, 2 ** 32 + 5)], [3, 0, 0xef, 0xbe, 0xad, 0xde, 5, 0, 0, 0]);
});

test('raw klauspost flate level 5 matches flate.NewWriter(w, 5)', () => {
  for (const name of ['short text', 'text 32769', 'text 3 windows (196605)', 'text 1048577', 'repetitive',
    'random 2.5 MB', 'skewed random text', 'text+random', 'fixed block 204', 'window + copied tail',
    'fibonacci + copies', 'skewed + source + skewed']) {
    const data = inputs.get(name)!;
    assert.equal(sha(klauspostDeflate(data)), sha(goPgzip(data, 'flate')), name);
  }
});

// One test per input: whole-buffer encoder, odd chunkings, hand-assembled blocks, gunzip.
const NAMES = [
  'empty', 'one byte', 'short text', 'text 100', 'text 32767', 'text 32768', 'text 32769', 'text 3 windows (196605)',
  'text 1048575', 'text 1048576', 'text 1048577', 'text 2 MiB + 100', 'repetitive', 'random 2.5 MB',
  'skewed random text', 'text+random', 'fixed block 130', 'fixed block 204', 'source 300', 'source 1000',
  'window + 100-byte tail', 'window + copied 127-byte tail', 'window + repeated tail', 'window + copied tail',
  'fibonacci frequencies', 'fibonacci + copies', 'skewed + source + skewed', 'tar', 'mixed ~20 MB',
];

for (const name of NAMES) {
  test(`pgzip output equals Go's: ${name}`, () => {
    const key = [...inputs.keys()].find((k) => k === name || k.startsWith(name + ' ('));
    assert.ok(key, `input ${name}`);
    const data = inputs.get(key)!;
    const want = sha(goPgzip(data));

    const whole = encodeChunked(data, Math.max(1, data.length));
    assert.equal(sha(whole.bytes), want, 'one push');
    // Byte-at-a-time is slow in any language; keep it to inputs up to a couple of blocks.
    const chunkings = data.length <= 2_200_000 ? [1, 7, 4096, 100_000] : [7, 4096, 100_000];
    for (const c of chunkings) {
      const got = encodeChunked(data, c);
      assert.equal(sha(got.bytes), want, `chunks of ${c}`);
      assert.deepEqual(got.offsets, whole.offsets, `block offsets, chunks of ${c}`);
    }

    const hand = assembleByHand(data);
    assert.equal(sha(hand.bytes), want, 'header + pgzipBlock()… + trailer');
    assert.deepEqual(hand.offsets, whole.offsets, 'blockOffsets');
    assert.equal(whole.offsets[0], 10);
    assert.equal(whole.offsets.length, Math.floor(data.length / PGZIP_BLOCK_SIZE) + 1);

    assert.ok(gunzipSync(whole.bytes).equals(data), 'gunzip round trip');
  });
}

test('the WebAssembly matcher is built and used, and writes exactly what the TypeScript matcher writes (generated inputs and dictionaries, history slides)', () => {
  assert.ok(wasmModule('klauspost-match'), 'dist/src/compress/wasm/klauspost-match.wasm is built (npm run build, needs clang-14 and lld-14) and loads');
  /** A pgzip-style block (dictionary, data, sync flush) then the stream's end, by a deflater made now. */
  const deflate = (data: Uint8Array, dict: Uint8Array) => {
    const d = new KlauspostDeflater();
    d.resetDict(dict);
    d.write(data);
    d.flush();
    const block = d.takeOutput();
    d.close();
    return Buffer.concat([block, d.takeOutput()]);
  };
  const both = (data: Uint8Array, dict: Uint8Array) => withAndWithoutWasm('klauspost-match', () => deflate(data, dict));
  // pieces that exercise every path: repeats (long matches, > 258), text (short matches,
  // end-of-match checks), skewed and plain random bytes (Huffman-only and stored blocks)
  const piece = fc.oneof(
    fc.record({ kind: fc.constant('words' as const), n: fc.integer({ min: 0, max: 70_000 }), seed: fc.nat() }),
    fc.record({ kind: fc.constant('random' as const), n: fc.integer({ min: 0, max: 40_000 }), seed: fc.nat(), alphabet: fc.integer({ min: 2, max: 256 }), skew: fc.boolean() }),
    fc.record({ kind: fc.constant('repeat' as const), n: fc.integer({ min: 0, max: 5_000 }), seed: fc.nat(), period: fc.integer({ min: 1, max: 300 }) }),
    fc.record({ kind: fc.constant('log' as const), n: fc.integer({ min: 0, max: 60_000 }), seed: fc.nat() }),
  );
  const make = (ps: { kind: string; n: number; seed: number; alphabet?: number; skew?: boolean; period?: number }[]) => Buffer.concat(ps.map((p) => {
    if (p.kind === 'words') return words(p.n, p.seed);
    if (p.kind === 'random') return prng(p.n, p.seed, p.alphabet, p.skew);
    if (p.kind === 'log') return logLines(p.n, p.seed);
    const unit = prng(p.period!, p.seed, 8);
    return Buffer.alloc(p.n, unit);
  }));
  fc.assert(fc.property(fc.array(piece, { maxLength: 6 }), fc.array(piece, { maxLength: 2 }), (data, dict) => {
    const { w, t } = both(make(data), make(dict));
    assert.ok(w.equals(t), `WebAssembly and TypeScript matchers differ (${w.length} vs ${t.length} bytes)`);
  }), { seed: 20261206, numRuns: 60 });
  // a stream of many windows: the history slides down several times (addBlock)
  const long = Buffer.concat([words(600_000, 1), prng(200_000, 2, 16, true), words(900_000, 3)]);
  useWasm(false);
  const t = klauspostDeflate(long);
  useWasm(true);
  const w = klauspostDeflate(long);
  assert.equal(sha(w), sha(t), 'a 1.7 MB stream');
  assert.equal(sha(w), sha(goPgzip(long, 'flate')), 'and both are what Go writes');
});

test('createPgzipStream gives the same bytes', async () => {
  const data = inputs.get('text+random')!;
  const chunks: Buffer[] = [];
  const src = Readable.from((function* () {
    for (let i = 0; i < data.length; i += 65_000) yield data.subarray(i, i + 65_000);
  })());
  for await (const c of src.pipe(createPgzipStream())) chunks.push(c as Buffer);
  assert.equal(sha(Buffer.concat(chunks)), sha(goPgzip(data)));
});

test('pgzipBlock only uses the last 16 KiB of the dictionary', () => {
  const data = inputs.get('text 2 MiB + 100')!;
  const block = data.subarray(PGZIP_BLOCK_SIZE, 2 * PGZIP_BLOCK_SIZE);
  const a = pgzipBlock(block, data.subarray(PGZIP_BLOCK_SIZE - 16384, PGZIP_BLOCK_SIZE));
  const b = pgzipBlock(block, data.subarray(0, PGZIP_BLOCK_SIZE));
  assert.equal(sha(a), sha(b));
});

test('recompression on a thread pool (tars over 32 MiB): detection, whole blob and a range from a later block equal Go’s pgzip', async () => {
  // 40 MiB: past poolFor's threshold, so the BlockPool and its worker threads do the work
  const data = Buffer.concat([words(16 << 20, 11), prng(8 << 20, 12), words(16 << 20, 13)]);
  const go = goPgzip(data);
  const target = { digest: 'sha256:' + sha(go), size: go.length };
  const p = PROFILES.find((x) => x.blockSize)!;
  const pool = poolFor(p, data.length);
  assert.ok(pool, 'a pool is used for a tar this large');
  const chunks = async function* (from = 0) {
    for (let i = from; i < data.length; i += 1 << 16) yield data.subarray(i, Math.min(i + (1 << 16), data.length));
  };
  try {
    const rep = await tryProfile(chunks(), p, target, pool);
    assert.ok(rep, 'the pool-compressed output has the Go digest');
    const parts: Uint8Array[] = [];
    for await (const b of produce(async (o) => chunks(o), p, target, rep, undefined, pool)) parts.push(b);
    assert.equal(sha(Buffer.concat(parts)), sha(go));
    const start = rep.blockOffsets![20] + 5;
    const range = { start, end: start + 3_000_000 };
    const got: Uint8Array[] = [];
    for await (const b of produce(async (o) => chunks(o), p, target, rep, range, pool)) got.push(b);
    assert.ok(Buffer.concat(got).equals(go.subarray(range.start, range.end)), 'a range from block 20 on');
    // a block's input comes back with it (the blocks above were read into those): its buffer, its bytes
    const block = new Uint8Array(data.subarray(0, PGZIP_BLOCK_SIZE)); // (a copy: its buffer is handed over)
    const back = await pool!.compress(block, new Uint8Array(0), false);
    assert.equal(block.length, 0, 'handed over');
    assert.ok(Buffer.from(back.input).equals(data.subarray(0, PGZIP_BLOCK_SIZE)), 'and back');
  } finally {
    await pool!.close();
  }
});
