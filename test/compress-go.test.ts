// The Go-compatible gzip encoder against Go itself: for every input and level, our bytes must
// be the bytes Go's compress/gzip writes (test/oracles/gogzip, built here with `go build`),
// whatever the chunking of our input, and must round-trip through zlib.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { GoGzipEncoder, createGoGzipStream } from '../src/compress/go-gzip.js';
import { crc32, crc32Combine, tableCrc32 } from '../src/compress/crc32.js';
import fc from 'fast-check';
import { useWasm, wasmInstancesMade, wasmModule } from '../src/compress/wasm.js';
import { HuffmanCode } from '../src/compress/huffman-code.js';
import { BlockPool } from '../src/compress/block-pool.js';
import { goGzipParallel, parseSegment, reparsed } from '../src/compress/go-parallel.js';
import { goSegment } from '../src/compress/go-flate.js';
import { encodeChunked, logLines, mixedInputs, randomBytes, sha, text, withAndWithoutWasm } from './compress-support.js';

// dist/test/x.js -> repo root
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const LEVELS = [1, 2, 3, 4, 5, 6, 7, 8, 9];

let tmp = '';
let oracle = '';
const inputs = new Map<string, Buffer>();

function ours(data: Uint8Array, level: number, chunk = 0): Buffer {
  return encodeChunked(new GoGzipEncoder({ level }), data, chunk);
}

function golang(data: Uint8Array, level: number): Buffer {
  return execFileSync(oracle, ['-level', String(level)], { input: data, maxBuffer: 1 << 30 });
}

function tarOf(dir: string, max: number): Buffer {
  const out = execFileSync('tar', ['-C', dir, '--sort=name', '-cf', '-', '.'], { maxBuffer: 1 << 30 });
  return out.subarray(0, Math.min(out.length, max));
}

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'csreg-gogzip-'));
  // Go is a hard requirement (scripts/setup.sh installs it): no go, no pass.
  execFileSync('go', ['version'], { stdio: 'pipe' });
  const gopath = join(tmp, 'gopath');
  mkdirSync(gopath);
  oracle = join(tmp, 'gogzip');
  execFileSync('go', ['build', '-o', oracle, '.'], {
    cwd: join(ROOT, 'test', 'oracles', 'gogzip'),
    env: { ...process.env, GO111MODULE: 'off', GOPATH: `${gopath}:/usr/share/gocode`, GOCACHE: join(tmp, 'gocache'), GOFLAGS: '' },
    stdio: 'pipe',
  });

  inputs.set('empty', Buffer.alloc(0));
  inputs.set('one byte', Buffer.from('x'));
  inputs.set('short text', Buffer.from('hello hello hello world, hello gzip\n'));
  for (const n of [16, 17, 127, 128, 300]) inputs.set(`text ${n}`, text(n, n));
  for (const n of [65535, 65536, 65537]) inputs.set(`text ${n}`, text(n, 7));
  inputs.set('random 65536', randomBytes(65536, 3));
  inputs.set('zeros 1M', Buffer.alloc(1 << 20));
  inputs.set('phrase 300K', Buffer.from('a phrase, repeated over and over; '.repeat(9000)));
  inputs.set('random 300K', randomBytes(300_000, 11));
  {
    const parts: Buffer[] = [];
    for (let i = 0; i < 12; i++) parts.push(i % 2 ? randomBytes(20_000 + i * 3000, i) : text(30_000 + i * 5000, i));
    inputs.set('text+random', Buffer.concat(parts));
  }
  const tree = ['/usr/share/zoneinfo', '/usr/share/doc'].find((d) => existsSync(d));
  assert.ok(tree, 'no directory to tar');
  inputs.set(`tar ${tree}`, tarOf(tree, 3 << 20));
  inputs.set('text 4M', text(4 << 20, 99));
});

let pool: BlockPool | undefined;
after(async () => {
  await pool?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** goGzipParallel's output on two pool threads, the input in chunks of `chunk` bytes. */
async function onPool(data: Uint8Array, level: number, segment?: number, overlap?: number, chunk = 65536): Promise<Buffer> {
  pool ??= new BlockPool(2);
  const tar = (async function* () {
    for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
  })();
  const out: Uint8Array[] = [];
  for await (const b of goGzipParallel(tar, level, pool, segment, overlap)) out.push(b);
  return Buffer.concat(out);
}

test('crc32 matches zlib (zlib\'s own where Node exports it, and the table version older Nodes use)', () => {
  const data = randomBytes(100_003, 5);
  // gzip trailer from zlib carries the CRC of the data
  const gz = execFileSync('gzip', ['-c', '-n'], { input: data });
  for (const f of [crc32, tableCrc32]) {
    assert.equal(f(data), gz.readUInt32LE(gz.length - 8));
    assert.equal(f(data.subarray(50), f(data.subarray(0, 50))), f(data));
    assert.equal(f(new Uint8Array(0)), 0);
  }
});

test('crc32Combine gives the CRC of two pieces joined, from their CRCs and the second one\'s length', () => {
  const data = randomBytes((3 << 20) + 77, 6);
  const whole = execFileSync('gzip', ['-c', '-n'], { input: data, maxBuffer: 1 << 26 });
  const want = whole.readUInt32LE(whole.length - 8);
  for (const cut of [0, 1, 7, 65_536, 1 << 20, (1 << 20) + 13, data.length - 1, data.length]) {
    const a = data.subarray(0, cut);
    const b = data.subarray(cut);
    assert.equal(crc32Combine(crc32(a), crc32(b), b.length), want, `cut at ${cut}`);
  }
  fc.assert(fc.property(fc.uint8Array({ maxLength: 3000 }), fc.uint8Array({ maxLength: 3000 }), (a, b) => {
    assert.equal(crc32Combine(crc32(a), crc32(b), b.length), crc32(Buffer.concat([a, b])));
  }));
});

test('the WebAssembly chain matcher (levels 2-9) is built and used, and writes exactly what the TypeScript one writes', () => {
  assert.ok(wasmModule('go-flate-chain'), 'dist/src/compress/wasm/go-flate-chain.wasm is built (npm run build, needs clang-14 and lld-14) and loads');
  fc.assert(fc.property(fc.integer({ min: 2, max: 9 }), mixedInputs, (level, data) => {
    const { w, t } = withAndWithoutWasm('go-flate-chain', () => ours(data, level));
    assert.equal(sha(w), sha(t), `level ${level}, ${data.length} bytes: WebAssembly and TypeScript matchers differ`);
  }), { seed: 20261206, numRuns: 40 });
});

test('the WebAssembly token counter and writer (every level) and level-1 matcher write exactly what the TypeScript ones write', () => {
  fc.assert(fc.property(mixedInputs, (data) => {
    const { w, t } = withAndWithoutWasm('klauspost-match', () => ours(data, 1));
    assert.equal(sha(w), sha(t), `level 1, ${data.length} bytes: WebAssembly and TypeScript token writers differ`);
  }), { seed: 20261207, numRuns: 40 });
});

test('the WebAssembly Huffman code builder gives every symbol the length and code the TypeScript one gives', () => {
  assert.ok(wasmModule('huffman-code'), 'dist/src/compress/wasm/huffman-code.wasm is built and loads');
  const both = (freq: Int32Array, count: number, maxBits: number) => {
    const make = () => {
      const h = new HuffmanCode(count);
      h.generate(freq, count, maxBits);
      return h;
    };
    try {
      useWasm(false);
      const t = make();
      useWasm(true);
      const w = make();
      assert.deepEqual([...w.lens], [...t.lens], `lengths, ${count} symbols, at most ${maxBits} bits`);
      assert.deepEqual([...w.codes], [...t.codes], `codes, ${count} symbols, at most ${maxBits} bits`);
    } finally {
      useWasm(true);
    }
  };
  // Fibonacci frequencies want codes longer than the limit: the length-limited part runs
  const fib = [1, 1];
  while (fib.length < 286) fib.push(Math.min(fib[fib.length - 1] + fib[fib.length - 2], 1 << 21));
  both(Int32Array.from(fib), 286, 15);
  both(Int32Array.from(fib.slice(0, 19)), 19, 7);
  const alphabets = fc.constantFrom([19, 7], [30, 15], [286, 15]);
  const freqs = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 1 << 21 })), { minLength: 286, maxLength: 286 });
  fc.assert(fc.property(alphabets, freqs, ([count, maxBits], f) => both(Int32Array.from(f), count, maxBits)), { seed: 20261209, numRuns: 300 });
});

test('rejects invalid levels', () => {
  for (const level of [0, 10, -1, 2.5]) assert.throws(() => new GoGzipEncoder({ level }), RangeError);
});

for (const level of LEVELS) {
  test(`bit-exact with Go compress/gzip at level ${level}`, () => {
    for (const [name, data] of inputs) {
      const want = golang(data, level);
      const got = ours(data, level);
      assert.equal(sha(got), sha(want), `${name} (${data.length} bytes) at level ${level}: ${got.length} vs Go ${want.length} bytes`);
      assert.ok(gunzipSync(got).equals(data), `${name} at level ${level}: does not round-trip`);
    }
  });
}

test('output does not depend on input chunking', () => {
  for (const level of [1, 6, 9]) {
    for (const [name, data] of inputs) {
      if (data.length > 1 << 20) continue;
      const want = sha(ours(data, level));
      for (const chunk of [1, 7, 4096, 100_000]) {
        if (chunk === 1 && data.length > 300_000) continue;
        assert.equal(sha(ours(data, level, chunk)), want, `${name} at level ${level} in chunks of ${chunk}`);
      }
    }
  }
});

test('large inputs in odd chunks match Go', () => {
  const data = [...inputs].find(([n]) => n.startsWith('tar '))![1];
  for (const level of [1, 6]) {
    const want = sha(golang(data, level));
    for (const chunk of [7, 4096, 100_000]) assert.equal(sha(ours(data, level, chunk)), want, `tar at level ${level} in chunks of ${chunk}`);
  }
});

test('inputs past 16 MiB (hash offsets rebased) match Go', () => {
  const pieces = [inputs.get('text 4M')!, inputs.get('text+random')!, inputs.get('random 300K')!];
  const parts: Buffer[] = [];
  let n = 0;
  for (let i = 0; n < 17 << 20; i++) {
    const p = pieces[i % pieces.length];
    parts.push(p);
    n += p.length;
  }
  const data = Buffer.concat(parts);
  for (const level of [2, 6]) assert.equal(sha(ours(data, level, 65536)), sha(golang(data, level)), `17 MiB at level ${level}`);
});

test('levels 4-9 on pool threads (segments parsed apart, joined where the parses meet) write Go\'s bytes', async () => {
  // segments far smaller than in use, so that many cuts fall in every kind of input; with no
  // overlap most segments' parses have not met the true one at their join and are parsed again
  // from the true state; random bytes make stored blocks, some of whose bytes slid out of Go's window
  const cases: [string, Buffer][] = [...inputs].filter(([n]) => ['empty', 'one byte', 'text+random', 'zeros 1M', 'phrase 300K', 'random 300K', 'text 4M'].includes(n) || n.startsWith('tar '));
  const before = reparsed.count;
  for (const [name, data] of cases) {
    for (const level of [4, 6, 9]) {
      const want = sha(golang(data, level));
      for (const [segment, overlap, chunk] of [[1 << 20, 8192, 65536], [70_001, 1000, 4099], [100_003, 0, 1 << 20]]) {
        assert.equal(sha(await onPool(data, level, segment, overlap, chunk)), want, `${name} (${data.length} bytes) at level ${level}, segments of ${segment} with ${overlap} before`);
      }
    }
  }
  assert.ok(reparsed.count > before, 'some segments were parsed again from the true state');
});

test('levels 4-9 in segments with the TypeScript matcher (no WebAssembly) write the single stream\'s bytes too', async () => {
  // the segments parsed on this thread (the pool's threads always have the WebAssembly)
  const here = { size: 2, segment: async (t: Parameters<typeof parseSegment>[0], crcFrom: number) => parseSegment(t, crcFrom) } as unknown as BlockPool;
  const data = Buffer.concat([inputs.get('text+random')!, inputs.get('phrase 300K')!]);
  const run = async (segment: number, overlap: number) => {
    const out: Uint8Array[] = [];
    for await (const b of goGzipParallel((async function* () { yield data; })(), 6, here, segment, overlap)) out.push(b);
    return sha(Buffer.concat(out));
  };
  const want = sha(ours(data, 6));
  try {
    useWasm(false);
    const made = wasmInstancesMade('go-flate-chain');
    assert.equal(await run(100_000, 2000), want);
    assert.equal(await run(100_003, 0), want, 'segments parsed again from the true state');
    assert.equal(wasmInstancesMade('go-flate-chain'), made, 'no WebAssembly matcher was made');
  } finally {
    useWasm(true);
  }
});

test('levels 4-9 on pool threads: any input, any cut, the single-stream bytes', async () => {
  const cases = fc.sample(fc.tuple(fc.integer({ min: 4, max: 9 }), mixedInputs, fc.integer({ min: 66_000, max: 200_000 }), fc.integer({ min: 0, max: 5000 })), { seed: 20261208, numRuns: 30 });
  for (const [level, data, segment, overlap] of cases) {
    assert.equal(sha(await onPool(data, level, segment, overlap, 30_000)), sha(ours(data, level)), `level ${level}, ${data.length} bytes, segments of ${segment} with ${overlap} before`);
  }
});

test('a segment whose data ends before its stop, or of a greedy level, is refused (on a pool thread: the task fails, the thread stays)', async () => {
  pool ??= new BlockPool(2);
  const data = text(100_000, 3);
  const task = { level: 6, start: 0, joinAt: 0, stopAt: 200_000, last: false };
  assert.throws(() => goSegment({ ...task, data: data.slice() }), /ends before its stop/);
  assert.throws(() => goSegment({ ...task, level: 3, data: data.slice() }), RangeError);
  await assert.rejects(pool.segment({ ...task, data: data.slice() }, 0), /ends before its stop/);
  assert.equal(sha(await onPool(data, 6)), sha(ours(data, 6)), 'the pool works on');
});

test('levels 4-9 on pool threads past 16 MiB, in the sizes used, match Go', async () => {
  const data = Buffer.concat([inputs.get('text 4M')!, inputs.get('text+random')!, inputs.get('text 4M')!, randomBytes(3 << 20, 9), inputs.get('text 4M')!, inputs.get('text 4M')!]);
  assert.ok(data.length > 16 << 20);
  assert.equal(sha(await onPool(data, 6)), sha(golang(data, 6)));
});

test('createGoGzipStream', async () => {
  const data = inputs.get('text+random')!;
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += 5000) chunks.push(data.subarray(i, i + 5000));
  const out = await buffer(Readable.from(chunks).pipe(createGoGzipStream({ level: 6 })));
  assert.equal(sha(out), sha(golang(data, 6)));
});
