// The GNU-gzip-compatible encoder against GNU gzip itself: for every input and level, our bytes
// must be the bytes `/bin/gzip -n -<level> < file` writes (GNU gzip 1.12, as Debian 12 ships),
// whatever the chunking of our input, and must round-trip through zlib.
// stdin is a regular file rather than a pipe: gzip's reads then always fill its window, which is
// what our encoder models. (From a pipe, a short read can in rare cases move gzip's window slide
// by one byte; see gnu-deflate.ts.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { GnuGzipEncoder, createGnuGzipStream } from '../src/compress/gnu-gzip.js';
import fc from 'fast-check';
import { wasmModule } from '../src/compress/wasm.js';
import { encodeChunked, mixedInputs, randomBytes, rng, sha, text, withAndWithoutWasm } from './compress-support.js';

const GZIP = '/bin/gzip';
const inputs = new Map<string, Buffer>();
let tmp = '';

/** Bytes from a small alphabet: many short, near matches, lots of literals (skewed trees). */
function skewed(n: number, seed: number, alphabet: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    const v = r();
    b[i] = (v & 7) === 0 ? v >>> 24 : 97 + ((v >>> 8) % alphabet);
  }
  return b;
}

function ours(data: Uint8Array, level: number, chunk = 0): Buffer {
  return encodeChunked(new GnuGzipEncoder({ level }), data, chunk);
}

function gnu(data: Uint8Array, level: number): Buffer {
  const file = join(tmp, 'input');
  writeFileSync(file, data);
  const fd = openSync(file, 'r');
  try {
    return execFileSync(GZIP, ['-n', `-${level}`], { stdio: [fd, 'pipe', 'pipe'], maxBuffer: 1 << 30 });
  } finally {
    closeSync(fd);
  }
}

function check(name: string, data: Buffer, level: number, chunk = 0): void {
  const want = gnu(data, level);
  const got = ours(data, level, chunk);
  assert.equal(sha(got), sha(want), `${name} (${data.length} bytes) at -${level}: ${got.length} vs gzip's ${want.length} bytes`);
  assert.ok(gunzipSync(got).equals(data), `${name} at -${level}: does not round-trip`);
}

before(() => {
  // GNU gzip is the oracle: missing, or another version, is a failure, not a skip.
  const version = execFileSync(GZIP, ['--version'], { encoding: 'utf8' }).split('\n')[0];
  console.log(`oracle: ${GZIP}: ${version}`);
  assert.match(version, /^gzip 1\.12\b/, `${GZIP} is not GNU gzip 1.12`);
  tmp = mkdtempSync(join(tmpdir(), 'csreg-gnugzip-'));

  inputs.set('empty', Buffer.alloc(0));
  inputs.set('one byte', Buffer.from('x'));
  inputs.set('two bytes', Buffer.from('xy'));
  inputs.set('short text', Buffer.from('hello hello hello world, hello gzip\n'));
  for (const n of [3, 16, 261, 262, 263, 300]) inputs.set(`text ${n}`, text(n, n));
  // window edges: first read, slides at WSIZE + MAX_DIST, lookahead refills
  for (const n of [32767, 32768, 32769, 65273, 65274, 65275, 65535, 65536, 65537, 65536 + 262, 98304]) {
    inputs.set(`text ${n}`, text(n, 7));
  }
  // 32767-token blocks of literals (and stored blocks): random data is all literals
  for (const n of [32766, 32767, 32768, 65534, 65535, 65536, 3 * 32767 + 1]) inputs.set(`random ${n}`, randomBytes(n, n));
  inputs.set('skewed 200K', skewed(200_000, 5, 4));
  inputs.set('skewed 150K wide', skewed(150_000, 6, 40));
  inputs.set('zeros 1M', Buffer.alloc(1 << 20));
  inputs.set('phrase 300K', Buffer.from('a phrase, repeated over and over; '.repeat(9000)));
  inputs.set('random 300K', randomBytes(300_000, 11));
  {
    // the same 40 KiB twice, then a tail: matches that run into the stale window past the input
    const a = text(40_000, 12);
    inputs.set('repeat+tail', Buffer.concat([a, a, a.subarray(0, 777)]));
    const b = randomBytes(32768, 13);
    inputs.set('random period 32768', Buffer.concat([b, b, b, b.subarray(0, 5000)]));
  }
  {
    const parts: Buffer[] = [];
    for (let i = 0; i < 12; i++) parts.push(i % 2 ? randomBytes(20_000 + i * 3000, i) : text(30_000 + i * 5000, i));
    inputs.set('text+random', Buffer.concat(parts));
  }
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function tarOf(dir: string): Buffer {
  return execFileSync('tar', ['-C', dir, '--sort=name', '-cf', '-', '.'], { maxBuffer: 1 << 30 });
}

test('rejects invalid levels', () => {
  for (const level of [0, 10, -1, 2.5]) assert.throws(() => new GnuGzipEncoder({ level }), RangeError);
});

test('header as gzip -n writes it', () => {
  for (const [level, xfl] of [[1, 4], [6, 0], [9, 2], [3, 0]]) {
    const got = ours(Buffer.from('abc'), level);
    assert.deepEqual([...got.subarray(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]);
  }
});

for (const level of [1, 2, 3, 4, 5, 6, 7, 8, 9]) {
  test(`bit-exact with GNU gzip -${level}`, () => {
    for (const [name, data] of inputs) {
      // the slowest levels skip the biggest redundant inputs to keep the suite quick
      if (level >= 7 && level !== 9 && data.length > 400_000) continue;
      check(name, data, level);
    }
  });
}

test('a tar of /usr/share/zoneinfo and a few MB of mixed data at -1, -6, -9', () => {
  const dir = '/usr/share/zoneinfo';
  assert.ok(existsSync(dir), `${dir} missing`);
  const tar = tarOf(dir);
  const mixed = Buffer.concat([text(1_500_000, 21), randomBytes(400_000, 22), tar.subarray(0, 600_000), text(500_000, 23)]);
  for (const level of [1, 6, 9]) {
    check('zoneinfo tar', tar, level);
    check('mixed 3 MB', mixed, level);
  }
});

test('output does not depend on input chunking', () => {
  const big = inputs.get('text+random')!;
  for (const level of [1, 6, 9]) {
    for (const [name, data] of inputs) {
      if (data.length > 400_000) continue;
      const want = sha(ours(data, level));
      for (const chunk of [1, 7, 4096, 100_000]) {
        if (chunk === 1 && data.length > 70_000) continue;
        assert.equal(sha(ours(data, level, chunk)), want, `${name} at -${level} in chunks of ${chunk}`);
      }
    }
    assert.equal(sha(ours(big, level, 1)), sha(gnu(big, level)), `text+random at -${level} in chunks of 1`);
  }
});

test('random inputs against gzip (all levels)', () => {
  const r = rng(77);
  for (let i = 0; i < 18; i++) {
    const parts: Buffer[] = [];
    const pieces = 1 + (r() % 6);
    for (let p = 0; p < pieces; p++) {
      const n = r() % 50_000;
      const kind = r() % 4;
      parts.push(kind === 0 ? randomBytes(n, r()) : kind === 1 ? text(n, r()) : kind === 2 ? skewed(n, r(), 2 + (r() % 30)) : Buffer.alloc(n, r() & 0xff));
    }
    const data = Buffer.concat(parts);
    check(`random mix #${i}`, data, 1 + (i % 9), 1 + (r() % 70_000));
  }
});

test('createGnuGzipStream', async () => {
  const data = inputs.get('text+random')!;
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += 5000) chunks.push(data.subarray(i, i + 5000));
  const out = await buffer(Readable.from(chunks).pipe(createGnuGzipStream({ level: 6 })));
  assert.equal(sha(out), sha(gnu(data, 6)));
});

test('the WebAssembly loop (levels 1-9) and block writer are built and used, and write exactly what the TypeScript ones write', () => {
  assert.ok(wasmModule('zlib-match'), 'dist/src/compress/wasm/zlib-match.wasm is built (npm run build, needs clang-14 and lld-14) and loads');
  const both = (data: Uint8Array, level: number, chunk = 0) => withAndWithoutWasm('zlib-match', () => ours(data, level, chunk));
  fc.assert(fc.property(fc.integer({ min: 1, max: 9 }), mixedInputs, (level, data) => {
    const { w, t } = both(data, level);
    assert.equal(sha(w), sha(t), `level ${level}, ${data.length} bytes: WebAssembly and TypeScript differ`);
  }), { seed: 20261206, numRuns: 40 });
  // skewed bytes: many short matches, blocks cut by the every-4096-symbols estimate; fed in
  // pieces. Input ending near the window's top (3 × 32 KiB - 100 bytes: searches near the end
  // stop there) and repeats whose period does not divide 32 KiB (the last bytes match far
  // back, and past the end of input the stale window bytes decide between candidates).
  const unit = randomBytes(1000, 3);
  const repeats = Buffer.alloc(3 * 32_768 - 100, unit);
  // the last 50 bytes twice before, the older copy followed by the zeros past the end of input:
  // with fewer bytes ahead than nice_match, gzip searches on and takes the older one
  const tail = randomBytes(50, 4);
  const tailed = Buffer.concat([randomBytes(10_000, 5), tail, Buffer.alloc(4), randomBytes(10_000, 6), tail, Buffer.of(0x55), randomBytes(10_000, 7), tail]);
  for (const level of [1, 3, 4, 6, 9]) {
    for (const [name, data] of [['skewed bytes', skewed(200_000, level, 5 + level)], ['text', text(3 * 32_768 - 100, level)], ['repeats', repeats], ['tail repeated', tailed]] as const) {
      const { w, t } = both(data, level, 10_000);
      assert.equal(sha(w), sha(t), `level ${level}, ${name} in pieces: WebAssembly and TypeScript differ`);
    }
  }
});
