// What the compressor tests share: deterministic inputs and feeding an encoder in chunks. Each
// test file keeps its own oracle and assertions.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { useWasm, wasmInstancesMade } from '../src/compress/wasm.js';
import type { ChunkEncoder } from '../src/compress/encoder-stream.js';

/** Deterministic PRNG (xorshift32) so failures reproduce. */
export function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

export function randomBytes(n: number, seed: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = r() & 0xff;
  return b;
}

const WORDS = ('the quick brown fox jumps over lazy dog registry layer digest manifest blob tar gzip ' +
  'deflate huffman window match literal offset length block stored dynamic fixed container image ' +
  'storage overlay config index annotation platform linux amd64 arm64 sha256 content').split(' ');

/** n bytes of word salad with the odd line break: many matches of all lengths. */
export function text(n: number, seed: number): Buffer {
  const r = rng(seed);
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const w = WORDS[r() % WORDS.length] + (r() % 11 === 0 ? '.\n' : ' ');
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

/** Access-log-like lines: repeated structure with varying numbers, the short and mid-length matches of real logs. */
export function logLines(n: number, seed: number): Buffer {
  const r = rng(seed);
  const paths = ['/v2/', '/v2/library/alpine/manifests/latest', '/v2/library/alpine/blobs/sha256:', '/healthz', '/v2/_catalog'];
  const lines: string[] = [];
  for (let len = 0; len < n; ) {
    const k = () => r() & 0xff;
    const line = `10.0.${k()}.${k()} - - [06/Dec/2026:12:${k() % 60}:${k() % 60} +0000] "GET ${paths[k() % paths.length]}${k().toString(16)}${k()} HTTP/1.1" ${k() & 1 ? 200 : 404} ${k() * k()}\n`;
    lines.push(line);
    len += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, n);
}

export function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** All of `enc`'s output for `data`, pushed whole (chunk <= 0) or in chunks of `chunk` bytes. */
export function encodeChunked(enc: ChunkEncoder, data: Uint8Array, chunk = 0): Buffer {
  const parts: Uint8Array[] = [];
  if (chunk <= 0) parts.push(...enc.push(data));
  else for (let i = 0; i < data.length; i += chunk) parts.push(...enc.push(data.subarray(i, i + chunk)));
  parts.push(...enc.finish());
  return Buffer.concat(parts);
}

/**
 * `encode` run with the WebAssembly part `name` on, then off: both results, after checking that
 * the first run made an instance of it and the second none (the encoder really switches).
 */
export function withAndWithoutWasm<T>(name: string, encode: () => T): { w: T; t: T } {
  try {
    useWasm(true);
    const made = wasmInstancesMade(name);
    const w = encode();
    assert.equal(wasmInstancesMade(name), made + 1, `the encoder uses ${name} in WebAssembly`);
    useWasm(false);
    const t = encode();
    assert.equal(wasmInstancesMade(name), made + 1, 'with it off, TypeScript');
    return { w, t };
  } finally {
    useWasm(true);
  }
}

/**
 * Inputs for comparing two encoders: up to five pieces of text, log lines, random bytes, base64
 * (few matches but a skewed histogram: literal-only Huffman blocks) and short-period repeats.
 */
export const mixedInputs = fc
  .array(fc.record({ kind: fc.constantFrom('text', 'log', 'random', 'base64', 'repeat'), n: fc.integer({ min: 0, max: 90_000 }), seed: fc.nat() }), { maxLength: 5 })
  .map((ps) => Buffer.concat(ps.map((p) => {
    switch (p.kind) {
      case 'text': return text(p.n, p.seed);
      case 'log': return logLines(p.n, p.seed);
      case 'random': return randomBytes(p.n >> 2, p.seed);
      case 'base64': return Buffer.from(randomBytes(p.n >> 1, p.seed).toString('base64'));
      default: return Buffer.alloc(p.n >> 4, randomBytes(1 + (p.seed % 300), p.seed));
    }
  })));
