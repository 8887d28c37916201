// Huffman machinery that Go's compress/flate and klauspost/compress/flate share (klauspost's
// huffman_code.go is Go's with speed-ups that do not change the result), so both encoders use
// this one copy. Every tie-break decides output bits, so the decisions follow Go's exactly:
//  - symbols are ordered by (frequency, symbol); the longest codes go to the front of that order;
//  - code lengths come from Go's level-by-level length-limited construction (bitCounts), which is
//    not the only optimal answer, so a textbook Huffman/package-merge would differ on ties;
//  - codes are canonical (RFC 1951 3.2.2) and written bit-reversed (LSB first);
//  - code lengths are run-length coded with Go's run splitting (RFC 1951 3.2.7).
// Which kind of block to write is where the two libraries differ; that stays with each encoder.

import { BitWriter } from './bit-writer.js';
import {
  CODEGEN_ORDER,
  EOB,
  LEN_BASE,
  LEN_CODE,
  LEN_EXTRA,
  NUM_CODEGEN,
  NUM_LIT,
  NUM_OFF,
  OFF_BASE,
  OFF_EXTRA,
  reverseBits,
} from './deflate-tables.js';
import { wasmInstance, wasmModule } from './wasm.js';

const FREQ_MAX = 0x7fffffff; // sentinel frequency past the last leaf
export const NO_CODE = FREQ_MAX;

// Scratch of generate()/bitCounts(), shared by every code: all of it runs synchronously.
/** (freq << 9 | symbol) of the used symbols, sorted; frequencies stay far below 2^22 */
const order = new Int32Array(NUM_LIT + 1);
const orderFreq = new Int32Array(NUM_LIT + 1);
const bitCount = new Int32Array(17);
const nextCode = new Int32Array(17);
// per-level state of the length-limited construction
const lastFreq = new Int32Array(18);
const nextCharFreq = new Int32Array(18);
const nextPairFreq = new Int32Array(18);
const needed = new Int32Array(18);
/** leaves left of the last node of each level's row */
const ownCount = new Int32Array(18);
/** chain node holding the rest of that row (the level below's count when the pair was taken) */
const lowerRef = new Int32Array(18);
let nodeCount = new Int32Array(1 << 14);
let nodeLower = new Int32Array(1 << 14);

/** One Huffman code over an alphabet of `size` symbols: per-symbol length and reversed code. */
export class HuffmanCode {
  readonly lens: Uint8Array;
  readonly codes: Uint16Array;

  constructor(readonly size: number) {
    this.lens = new Uint8Array(size);
    this.codes = new Uint16Array(size);
  }

  /** Total bits to encode symbols [0, count) with these frequencies (extra bits not included). */
  bitLength(freq: Int32Array, count: number): number {
    const lens = this.lens;
    let total = 0;
    for (let i = 0; i < count; i++) total += freq[i] * lens[i];
    return total;
  }

  /** Like bitLength, or NO_CODE if a used symbol has no code. */
  canReuseBits(freq: Int32Array, count: number): number {
    const lens = this.lens;
    let total = 0;
    for (let i = 0; i < count; i++) {
      const f = freq[i];
      if (f !== 0) {
        if (lens[i] === 0) return NO_CODE;
        total += f * lens[i];
      }
    }
    return total;
  }

  /** Build the code of symbols [0, count) from `freq`, lengths at most maxBits; the rest stay as they were. */
  generate(freq: Int32Array, count: number, maxBits: number): void {
    const w = builder();
    if (w) {
      w.freq.set(freq.subarray(0, count));
      if (w.x.generate(count, maxBits) < 0) throw new Error('huffman: leaf count mismatch');
      this.lens.set(w.lens.subarray(0, count));
      this.codes.set(w.codes.subarray(0, count));
      return;
    }
    const lens = this.lens, codes = this.codes;
    let used = 0;
    for (let i = 0; i < count; i++) {
      const f = freq[i];
      if (f !== 0) order[used++] = (f << 9) | i;
      else {
        lens[i] = 0;
        codes[i] = 0;
      }
    }
    if (used <= 2) {
      // one or two symbols: one bit each, numbered in symbol order
      for (let k = 0; k < used; k++) {
        const s = order[k] & 511;
        lens[s] = 1;
        codes[s] = k;
      }
      return;
    }
    order.subarray(0, used).sort();
    for (let k = 0; k < used; k++) orderFreq[k] = order[k] >>> 9;
    orderFreq[used] = FREQ_MAX;
    const top = bitCounts(used, maxBits);
    // hand out lengths from the most frequent end: bitCount[1] symbols get 1 bit, and so on
    let end = used;
    for (let bits = 1; bits <= top; bits++) {
      for (let k = end - bitCount[bits]; k < end; k++) lens[order[k] & 511] = bits;
      end -= bitCount[bits];
    }
    // canonical codes: by length, then symbol
    let code = 0;
    for (let bits = 1; bits <= top; bits++) {
      code = (code + bitCount[bits - 1]) << 1;
      nextCode[bits] = code;
    }
    for (let s = 0; s < count; s++) {
      const l = lens[s];
      if (l !== 0) codes[s] = reverseBits(nextCode[l]++, l);
    }
  }
}

/** generate() in WebAssembly (wasm/huffman-code.c): one instance per thread, like the scratch above. */
interface BuilderExports {
  generate(count: number, maxBits: number): number;
  freq(): number;
  lens(): number;
  codes(): number;
}
let built: { x: BuilderExports; freq: Int32Array; lens: Uint8Array; codes: Uint16Array } | undefined;

/** The WebAssembly builder, where built and WebAssembly is on (tests turn it off to compare). */
function builder(): typeof built {
  if (!wasmModule('huffman-code')) return undefined;
  if (!built) {
    const x = wasmInstance<BuilderExports>('huffman-code')!;
    const mem = x.memory.buffer;
    built = { x, freq: new Int32Array(mem, x.freq(), 320), lens: new Uint8Array(mem, x.lens(), 320), codes: new Uint16Array(mem, x.codes(), 320) };
  }
  return built;
}

/**
 * Go's length-limited construction: level L builds the chains of the tree's row L from leaves
 * and pairs of level L-1 nodes, lazily, replenishing lower levels on demand. Fills bitCount[1..]
 * and returns the deepest level used. `orderFreq` holds the n sorted frequencies + sentinel.
 *
 * Go keeps, per level, a row "leaves left of each ancestor" and copies the lower row when a
 * pair is taken. Here a row is its own count plus an immutable snapshot of the row below
 * (a chain node), so taking a pair is O(1); the resulting counts are the same.
 */
function bitCounts(n: number, maxBits: number): number {
  const f = orderFreq;
  if (maxBits > n - 1) maxBits = n - 1;
  const last = lastFreq, nextChar = nextCharFreq, nextPair = nextPairFreq;
  const own = ownCount, lower = lowerRef;
  let nodes = 1; // node 0: all zero
  for (let level = 0; level <= maxBits + 1; level++) {
    last[level] = 0;
    nextChar[level] = 0;
    nextPair[level] = 0;
    needed[level] = 0;
    own[level] = 0;
    lower[level] = 0;
  }
  for (let level = 1; level <= maxBits; level++) {
    last[level] = f[1];
    nextChar[level] = f[2];
    nextPair[level] = level === 1 ? FREQ_MAX : f[0] + f[1];
    own[level] = 2;
  }
  needed[maxBits] = 2 * n - 4;
  let level = maxBits;
  for (;;) {
    if (nextPair[level] === FREQ_MAX && nextChar[level] === FREQ_MAX) {
      // out of leaves and pairs at this level: it is finished for good
      needed[level] = 0;
      nextPair[level + 1] = FREQ_MAX;
      level++;
      continue;
    }
    const prevFreq = last[level];
    if (nextChar[level] < nextPair[level]) {
      const k = own[level] + 1;
      last[level] = nextChar[level];
      own[level] = k;
      nextChar[level] = f[k];
    } else {
      last[level] = nextPair[level];
      if (nodes === nodeCount.length) growNodes();
      nodeCount[nodes] = own[level - 1];
      nodeLower[nodes] = lower[level - 1];
      lower[level] = nodes++;
      needed[level - 1] = 2;
    }
    if (--needed[level] === 0) {
      if (level === maxBits) break;
      nextPair[level + 1] = prevFreq + last[level];
      level++;
    } else {
      while (needed[level - 1] > 0) level--;
    }
  }
  if (own[maxBits] !== n) throw new Error('huffman: leaf count mismatch');
  // unroll the top row: counts[maxBits], counts[maxBits-1], ... down to 0
  bitCount.fill(0);
  let above = own[maxBits];
  let node = lower[maxBits];
  for (let bits = 1; bits <= maxBits; bits++) {
    const below = node === 0 ? 0 : nodeCount[node];
    bitCount[bits] = above - below;
    above = below;
    node = node === 0 ? 0 : nodeLower[node];
  }
  return maxBits;
}

function growNodes(): void {
  const count = new Int32Array(nodeCount.length * 2);
  const low = new Int32Array(nodeLower.length * 2);
  count.set(nodeCount);
  low.set(nodeLower);
  nodeCount = count;
  nodeLower = low;
}

export const FIXED_LIT = (() => {
  const h = new HuffmanCode(NUM_LIT);
  for (let s = 0; s < NUM_LIT; s++) {
    let code: number, len: number;
    if (s < 144) [code, len] = [s + 48, 8];
    else if (s < 256) [code, len] = [s - 144 + 400, 9];
    else if (s < 280) [code, len] = [s - 256, 7];
    else [code, len] = [s - 280 + 192, 8];
    h.lens[s] = len;
    h.codes[s] = reverseBits(code, len);
  }
  return h;
})();

export const FIXED_OFF = (() => {
  const h = new HuffmanCode(NUM_OFF);
  for (let s = 0; s < NUM_OFF; s++) {
    h.lens[s] = 5;
    h.codes[s] = reverseBits(s, 5);
  }
  return h;
})();

/** Offset code of literal-only blocks: a single used symbol (a dynamic header must describe one). */
export const HUFF_OFF = (() => {
  const h = new HuffmanCode(NUM_OFF);
  const f = new Int32Array(NUM_OFF);
  f[0] = 1;
  h.generate(f, NUM_OFF, 15);
  return h;
})();

/** Extra bits of the matches counted in `litFreq` / `offFreq` (the same under any code). */
export function extraBits(litFreq: Int32Array, numLit: number, offFreq: Int32Array, numOff: number): number {
  let total = 0;
  for (let c = 257 + 8; c < numLit; c++) total += litFreq[c] * LEN_EXTRA[c - 257];
  for (let c = 4; c < numOff; c++) total += offFreq[c] * OFF_EXTRA[c];
  return total;
}

/** The code-length part of a dynamic block header: run-length coded lengths and their own code. */
export class CodeLengthCoder {
  readonly freq = new Int32Array(NUM_CODEGEN);
  readonly enc = new HuffmanCode(NUM_CODEGEN);
  private readonly sizes = new Uint8Array(NUM_LIT + NUM_OFF);
  /** run-length coded lengths: symbol, then its repeat argument for 16/17/18 */
  private readonly out = new Uint8Array(2 * (NUM_LIT + NUM_OFF));
  private len = 0;
  /** code-length code lengths sent (4..19, trailing unused ones in CODEGEN_ORDER dropped) */
  count = 0;

  /** Run-length code lit.lens[0, numLit) ++ off.lens[0, numOff) and build their code. */
  build(numLit: number, numOff: number, lit: HuffmanCode, off: HuffmanCode): void {
    const sizes = this.sizes, out = this.out, freq = this.freq;
    freq.fill(0);
    sizes.set(lit.lens.subarray(0, numLit), 0);
    sizes.set(off.lens.subarray(0, numOff), numLit);
    const total = numLit + numOff;
    let n = 0;
    let i = 0;
    while (i < total) {
      const size = sizes[i];
      let run = 1;
      while (i + run < total && sizes[i + run] === size) run++;
      i += run;
      if (size !== 0) {
        out[n++] = size;
        freq[size]++;
        run--;
        while (run >= 3) {
          const k = run < 6 ? run : 6;
          out[n++] = 16;
          out[n++] = k - 3;
          freq[16]++;
          run -= k;
        }
      } else {
        while (run >= 11) {
          const k = run < 138 ? run : 138;
          out[n++] = 18;
          out[n++] = k - 11;
          freq[18]++;
          run -= k;
        }
        if (run >= 3) {
          out[n++] = 17;
          out[n++] = run - 3;
          freq[17]++;
          run = 0;
        }
      }
      for (; run > 0; run--) {
        out[n++] = size;
        freq[size]++;
      }
    }
    this.len = n;
    this.enc.generate(freq, NUM_CODEGEN, 7);
    let c = NUM_CODEGEN;
    while (c > 4 && freq[CODEGEN_ORDER[c - 1]] === 0) c--;
    this.count = c;
  }

  /** Bits of the whole dynamic block header (block type and counts included). */
  headerBits(): number {
    const f = this.freq;
    return 3 + 5 + 5 + 4 + 3 * this.count + this.enc.bitLength(f, NUM_CODEGEN) + f[16] * 2 + f[17] * 3 + f[18] * 7;
  }

  writeHeader(bw: BitWriter, numLit: number, numOff: number, eof: boolean): void {
    bw.ensure(2 * this.len + 64);
    bw.writeBits(eof ? 5 : 4, 3);
    bw.writeBits(numLit - 257, 5);
    bw.writeBits(numOff - 1, 5);
    bw.writeBits(this.count - 4, 4);
    const lens = this.enc.lens, codes = this.enc.codes;
    for (let i = 0; i < this.count; i++) bw.writeBits(lens[CODEGEN_ORDER[i]], 3);
    const out = this.out;
    for (let i = 0; i < this.len; i++) {
      const sym = out[i];
      bw.writeBits(codes[sym], lens[sym]);
      if (sym === 16) bw.writeBits(out[++i], 2);
      else if (sym === 17) bw.writeBits(out[++i], 3);
      else if (sym === 18) bw.writeBits(out[++i], 7);
    }
  }
}

/** Block type bits of a stored block, padding, LEN and NLEN; the caller copies the bytes. */
export function writeStoredHeader(bw: BitWriter, length: number, eof: boolean): void {
  bw.ensure(16);
  bw.writeBits(eof ? 1 : 0, 3);
  bw.align();
  bw.writeBits(length, 16);
  bw.writeBits(~length & 0xffff, 16);
}

/**
 * Tokens [0, n) (no end of block) with the given codes. The bit accumulator lives in locals and
 * its 16-bit flush is written out at each use (here and in writeLiterals) rather than called:
 * this loop runs once per symbol of every block, the encoders' hottest path.
 */
export function writeTokens(bw: BitWriter, tokens: Int32Array, n: number, lit: HuffmanCode, off: HuffmanCode): void {
  bw.ensure(6 * n + 8);
  const buf = bw.buf;
  const llens = lit.lens, lcodes = lit.codes, olens = off.lens, ocodes = off.codes;
  let acc = bw.acc, nbits = bw.nbits, pos = bw.pos;
  // The accumulator holds 32 bits and up to 15 wait between symbols, so it is emptied after
  // every code and every extra-bits field that could overflow it; the flush is written out
  // each time because it updates three locals a helper could not return cheaply.
  for (let i = 0; i < n; i++) {
    const t = tokens[i];
    if (t < 256) {
      acc |= lcodes[t] << nbits;
      nbits += llens[t];
    } else {
      const xlen = (t >>> 22) & 0xff;
      const lc = LEN_CODE[xlen];
      acc |= lcodes[257 + lc] << nbits;
      nbits += llens[257 + lc];
      if (nbits >= 16) {
        buf[pos++] = acc;
        buf[pos++] = acc >>> 8;
        acc >>>= 16;
        nbits -= 16;
      }
      // no branch on zero extra bits: then the value is 0 too
      acc |= (xlen - LEN_BASE[lc]) << nbits;
      nbits += LEN_EXTRA[lc];
      if (nbits >= 16) {
        buf[pos++] = acc;
        buf[pos++] = acc >>> 8;
        acc >>>= 16;
        nbits -= 16;
      }
      const oc = (t >>> 16) & 31;
      acc |= ocodes[oc] << nbits;
      nbits += olens[oc];
      if (nbits >= 16) {
        buf[pos++] = acc;
        buf[pos++] = acc >>> 8;
        acc >>>= 16;
        nbits -= 16;
      }
      acc |= ((t & 0xffff) - OFF_BASE[oc]) << nbits;
      nbits += OFF_EXTRA[oc];
    }
    if (nbits >= 16) {
      buf[pos++] = acc;
      buf[pos++] = acc >>> 8;
      acc >>>= 16;
      nbits -= 16;
    }
  }
  bw.acc = acc;
  bw.nbits = nbits;
  bw.pos = pos;
}

/** Every byte of `input` as a literal (no end of block). */
export function writeLiterals(bw: BitWriter, input: Uint8Array, lit: HuffmanCode): void {
  bw.ensure(2 * input.length + 8);
  const lens = lit.lens, codes = lit.codes;
  const buf = bw.buf;
  let acc = bw.acc, nbits = bw.nbits, pos = bw.pos;
  for (let i = 0; i < input.length; i++) {
    const s = input[i];
    acc |= codes[s] << nbits;
    nbits += lens[s];
    if (nbits >= 16) {
      buf[pos++] = acc;
      buf[pos++] = acc >>> 8;
      acc >>>= 16;
      nbits -= 16;
    }
  }
  bw.acc = acc;
  bw.nbits = nbits;
  bw.pos = pos;
}

/** The end-of-block symbol of `lit`. */
export function writeEOB(bw: BitWriter, lit: HuffmanCode): void {
  bw.writeBits(lit.codes[EOB], lit.lens[EOB]);
}
