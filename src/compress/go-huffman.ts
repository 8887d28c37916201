// Huffman side of Go's compress/flate (huffman_code.go, huffman_bit_writer.go): how Go builds
// length-limited codes and how it picks stored, fixed or dynamic encoding for each block. Every
// tie-break here decides output bits, so the decisions follow Go's exactly:
//  - symbols are ordered by (frequency, symbol); the longest codes go to the front of that order;
//  - code lengths come from Go's level-by-level length-limited construction (bitCounts), which is
//    not the only optimal answer, so a textbook Huffman/package-merge would differ on ties;
//  - codes are canonical (RFC 1951 3.2.2) and written bit-reversed (LSB first);
//  - fixed beats dynamic on equal size, Huffman beats stored on equal size.

import { BitWriter } from './bit-writer.js';

export const NUM_LIT = 286; // literal/length alphabet used by Go (no codes 286/287)
export const NUM_OFF = 30;
const NUM_CODEGEN = 19;
const EOB = 256;
const MAX_STORED = 65535;

/** Token layout: literal = byte value (< 256); match = MATCH | (length-3) << 15 | (distance-1). */
export const MATCH = 1 << 30;

const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const OFF_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
const CODEGEN_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

// Derived from the RFC's extra-bit counts: base value of each code and the code of each value.
const LEN_BASE = new Int32Array(29); // in (length - 3)
const OFF_BASE = new Int32Array(30); // in (distance - 1)
/** length code (0..28) of (length - 3) */
export const LEN_CODE = new Uint8Array(256);
/** distance code (0..29) of (distance - 1) */
export const OFF_CODE = new Uint8Array(32768);
{
  let v = 0;
  for (let c = 0; c < 28; c++) {
    LEN_BASE[c] = v;
    for (let k = 0; k < 1 << LEN_EXTRA[c]; k++) LEN_CODE[v++] = c;
  }
  // length 258 has its own code (285) rather than the last value of code 284
  LEN_BASE[28] = 255;
  LEN_CODE[255] = 28;
  v = 0;
  for (let c = 0; c < 30; c++) {
    OFF_BASE[c] = v;
    for (let k = 0; k < 1 << OFF_EXTRA[c]; k++) OFF_CODE[v++] = c;
  }
}

function reverseBits(code: number, len: number): number {
  let r = 0;
  for (let i = 0; i < len; i++) {
    r = (r << 1) | (code & 1);
    code >>>= 1;
  }
  return r;
}

const FREQ_MAX = 0x7fffffff; // sentinel frequency past the last leaf

/** One Huffman code over an alphabet of `size` symbols: per-symbol length and reversed code. */
export class HuffmanCode {
  readonly lens: Uint8Array;
  readonly codes: Uint16Array;
  /** (freq << 9 | symbol) of the used symbols, sorted; frequencies stay far below 2^22 */
  private readonly order: Int32Array;
  private readonly orderFreq: Int32Array;
  private readonly bitCount = new Int32Array(17);
  // per-level state of the length-limited construction
  private readonly lastFreq = new Int32Array(18);
  private readonly nextCharFreq = new Int32Array(18);
  private readonly nextPairFreq = new Int32Array(18);
  private readonly needed = new Int32Array(18);
  /** leaves left of the last node of each level's row */
  private readonly ownCount = new Int32Array(18);
  /** chain node holding the rest of that row (the level below's count when the pair was taken) */
  private readonly lowerRef = new Int32Array(18);
  private nodeCount = new Int32Array(1 << 14);
  private nodeLower = new Int32Array(1 << 14);
  private readonly nextCode = new Int32Array(17);

  constructor(readonly size: number) {
    this.lens = new Uint8Array(size);
    this.codes = new Uint16Array(size);
    this.order = new Int32Array(size + 1);
    this.orderFreq = new Int32Array(size + 1);
  }

  static fixedLiteral(): HuffmanCode {
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
  }

  static fixedOffset(): HuffmanCode {
    const h = new HuffmanCode(NUM_OFF);
    for (let s = 0; s < NUM_OFF; s++) {
      h.lens[s] = 5;
      h.codes[s] = reverseBits(s, 5);
    }
    return h;
  }

  /** Total bits to encode symbols with these frequencies (extra bits not included). */
  bitLength(freq: Int32Array): number {
    const lens = this.lens;
    let total = 0;
    for (let i = 0; i < this.size; i++) total += freq[i] * lens[i];
    return total;
  }

  /** Build the code for `freq` (length this.size) with lengths at most maxBits. */
  generate(freq: Int32Array, maxBits: number): void {
    const lens = this.lens;
    const order = this.order;
    let count = 0;
    for (let i = 0; i < this.size; i++) {
      const f = freq[i];
      if (f !== 0) order[count++] = (f << 9) | i;
      else lens[i] = 0;
    }
    if (count <= 2) {
      // one or two symbols: one bit each, numbered in symbol order
      for (let k = 0; k < count; k++) {
        const s = order[k] & 511;
        lens[s] = 1;
        this.codes[s] = k;
      }
      return;
    }
    order.subarray(0, count).sort();
    const of = this.orderFreq;
    for (let k = 0; k < count; k++) of[k] = order[k] >>> 9;
    of[count] = FREQ_MAX;
    const top = this.bitCounts(count, maxBits);
    // hand out lengths from the most frequent end: bitCount[1] symbols get 1 bit, and so on
    const bc = this.bitCount;
    let end = count;
    for (let bits = 1; bits <= top; bits++) {
      for (let k = end - bc[bits]; k < end; k++) lens[order[k] & 511] = bits;
      end -= bc[bits];
    }
    // canonical codes: by length, then symbol
    const next = this.nextCode;
    let code = 0;
    for (let bits = 1; bits <= top; bits++) {
      code = (code + bc[bits - 1]) << 1;
      next[bits] = code;
    }
    for (let s = 0; s < this.size; s++) {
      const l = lens[s];
      if (l !== 0) this.codes[s] = reverseBits(next[l]++, l);
    }
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
  private bitCounts(n: number, maxBits: number): number {
    const f = this.orderFreq;
    if (maxBits > n - 1) maxBits = n - 1;
    const last = this.lastFreq, nextChar = this.nextCharFreq, nextPair = this.nextPairFreq;
    const needed = this.needed, own = this.ownCount, lower = this.lowerRef;
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
        if (nodes === this.nodeCount.length) this.growNodes();
        this.nodeCount[nodes] = own[level - 1];
        this.nodeLower[nodes] = lower[level - 1];
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
    const bc = this.bitCount;
    bc.fill(0);
    let above = own[maxBits];
    let node = lower[maxBits];
    for (let bits = 1; bits <= maxBits; bits++) {
      const below = node === 0 ? 0 : this.nodeCount[node];
      bc[bits] = above - below;
      above = below;
      node = node === 0 ? 0 : this.nodeLower[node];
    }
    return maxBits;
  }

  private growNodes(): void {
    const count = new Int32Array(this.nodeCount.length * 2);
    const low = new Int32Array(this.nodeLower.length * 2);
    count.set(this.nodeCount);
    low.set(this.nodeLower);
    this.nodeCount = count;
    this.nodeLower = low;
  }
}

const FIXED_LIT = HuffmanCode.fixedLiteral();
const FIXED_OFF = HuffmanCode.fixedOffset();
/** offset code for literal-only blocks: a single used symbol */
const HUFF_OFF = (() => {
  const h = new HuffmanCode(NUM_OFF);
  const f = new Int32Array(NUM_OFF);
  f[0] = 1;
  h.generate(f, 15);
  return h;
})();

/** Chooses and writes DEFLATE blocks the way Go's huffmanBitWriter does. */
export class HuffmanBlockWriter {
  readonly bw: BitWriter;
  private readonly litFreq = new Int32Array(NUM_LIT);
  private readonly offFreq = new Int32Array(NUM_OFF);
  private readonly cgFreq = new Int32Array(NUM_CODEGEN);
  private readonly cgSizes = new Uint8Array(NUM_LIT + NUM_OFF);
  /** run-length coded code lengths: symbol, then its repeat argument for 16/17/18 */
  private readonly codegen = new Uint8Array(2 * (NUM_LIT + NUM_OFF));
  private codegenLen = 0;
  private readonly litEnc = new HuffmanCode(NUM_LIT);
  private readonly offEnc = new HuffmanCode(NUM_OFF);
  private readonly cgEnc = new HuffmanCode(NUM_CODEGEN);

  constructor(bw: BitWriter) {
    this.bw = bw;
  }

  writeStoredHeader(length: number, eof: boolean): void {
    const bw = this.bw;
    bw.ensure(16);
    bw.writeBits(eof ? 1 : 0, 3);
    bw.align();
    bw.writeBits(length, 16);
    bw.writeBits(~length & 0xffff, 16);
  }

  writeStored(input: Uint8Array, eof: boolean): void {
    this.writeStoredHeader(input.length, eof);
    this.bw.writeBytes(input);
  }

  /**
   * Levels 2-9: cheapest of fixed, dynamic and (when the block's input is known and small enough)
   * stored. `input` is null when the block's bytes already left the window.
   */
  writeBlock(tokens: Int32Array, ntok: number, eof: boolean, input: Uint8Array | null): void {
    const [numLit, numOff] = this.indexTokens(tokens, ntok);
    const litFreq = this.litFreq, offFreq = this.offFreq;
    const storable = input !== null && input.length <= MAX_STORED;
    // extra bits cost the same for fixed and dynamic; Go only counts them to compare with stored
    let extra = 0;
    if (storable) {
      for (let c = 257 + 8; c < numLit; c++) extra += litFreq[c] * LEN_EXTRA[c - 257];
      for (let c = 4; c < numOff; c++) extra += offFreq[c] * OFF_EXTRA[c];
    }
    let size = 3 + FIXED_LIT.bitLength(litFreq) + FIXED_OFF.bitLength(offFreq) + extra;
    let dynamic = false;
    this.generateCodegen(numLit, numOff, this.litEnc, this.offEnc);
    this.cgEnc.generate(this.cgFreq, 7);
    const numCodegens = this.numCodegens();
    const dynSize = this.dynamicSize(this.litEnc, this.offEnc, extra, numCodegens);
    if (dynSize < size) {
      size = dynSize;
      dynamic = true;
    }
    if (storable && (input.length + 5) * 8 < size) {
      this.writeStored(input, eof);
      return;
    }
    if (dynamic) {
      this.writeDynamicHeader(numLit, numOff, numCodegens, eof);
      this.writeTokens(tokens, ntok, this.litEnc, this.offEnc);
    } else {
      this.bw.ensure(1);
      this.bw.writeBits(eof ? 3 : 2, 3);
      this.writeTokens(tokens, ntok, FIXED_LIT, FIXED_OFF);
    }
  }

  /** Level 1: dynamic, unless stored is not clearly (1/16) worse. */
  writeBlockDynamic(tokens: Int32Array, ntok: number, eof: boolean, input: Uint8Array): void {
    const [numLit, numOff] = this.indexTokens(tokens, ntok);
    this.generateCodegen(numLit, numOff, this.litEnc, this.offEnc);
    this.cgEnc.generate(this.cgFreq, 7);
    const numCodegens = this.numCodegens();
    const size = this.dynamicSize(this.litEnc, this.offEnc, 0, numCodegens);
    if (input.length <= MAX_STORED && (input.length + 5) * 8 < size + (size >> 4)) {
      this.writeStored(input, eof);
      return;
    }
    this.writeDynamicHeader(numLit, numOff, numCodegens, eof);
    this.writeTokens(tokens, ntok, this.litEnc, this.offEnc);
  }

  /** Level 1 on barely compressible input: literals only, dynamic code or stored. */
  writeBlockHuff(eof: boolean, input: Uint8Array): void {
    const litFreq = this.litFreq;
    litFreq.fill(0);
    for (let i = 0; i < input.length; i++) litFreq[input[i]]++;
    litFreq[EOB] = 1;
    // Go leaves offFreq[1..] as they were; they cost nothing under the one-symbol offset code
    this.offFreq[0] = 1;
    const numLit = EOB + 1, numOff = 1;
    this.litEnc.generate(litFreq, 15);
    this.generateCodegen(numLit, numOff, this.litEnc, HUFF_OFF);
    this.cgEnc.generate(this.cgFreq, 7);
    const numCodegens = this.numCodegens();
    const size = this.dynamicSize(this.litEnc, HUFF_OFF, 0, numCodegens);
    if (input.length <= MAX_STORED && (input.length + 5) * 8 < size + (size >> 4)) {
      this.writeStored(input, eof);
      return;
    }
    this.writeDynamicHeader(numLit, numOff, numCodegens, eof);
    const bw = this.bw;
    bw.ensure(2 * input.length + 8);
    const lens = this.litEnc.lens, codes = this.litEnc.codes;
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
    bw.writeBits(codes[EOB], lens[EOB]);
  }

  /** Count symbol frequencies (plus end of block), trim the alphabets, build both codes. */
  private indexTokens(tokens: Int32Array, ntok: number): [number, number] {
    const litFreq = this.litFreq, offFreq = this.offFreq;
    litFreq.fill(0);
    offFreq.fill(0);
    for (let i = 0; i < ntok; i++) {
      const t = tokens[i];
      if (t < 256) {
        litFreq[t]++;
      } else {
        litFreq[257 + LEN_CODE[(t >>> 15) & 0xff]]++;
        offFreq[OFF_CODE[t & 0x7fff]]++;
      }
    }
    litFreq[EOB]++;
    let numLit = NUM_LIT;
    while (litFreq[numLit - 1] === 0) numLit--;
    let numOff = NUM_OFF;
    while (numOff > 0 && offFreq[numOff - 1] === 0) numOff--;
    if (numOff === 0) {
      // a dynamic header needs at least one distance code
      offFreq[0] = 1;
      numOff = 1;
    }
    this.litEnc.generate(litFreq, 15);
    this.offEnc.generate(offFreq, 15);
    return [numLit, numOff];
  }

  /** RFC 1951 3.2.7 run-length coding of the concatenated code lengths, Go's run splitting. */
  private generateCodegen(numLit: number, numOff: number, lit: HuffmanCode, off: HuffmanCode): void {
    const sizes = this.cgSizes, out = this.codegen, freq = this.cgFreq;
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
    this.codegenLen = n;
  }

  private numCodegens(): number {
    let n = NUM_CODEGEN;
    while (n > 4 && this.cgFreq[CODEGEN_ORDER[n - 1]] === 0) n--;
    return n;
  }

  private dynamicSize(lit: HuffmanCode, off: HuffmanCode, extra: number, numCodegens: number): number {
    const cf = this.cgFreq;
    const header = 3 + 5 + 5 + 4 + 3 * numCodegens + this.cgEnc.bitLength(cf) + cf[16] * 2 + cf[17] * 3 + cf[18] * 7;
    return header + lit.bitLength(this.litFreq) + off.bitLength(this.offFreq) + extra;
  }

  private writeDynamicHeader(numLit: number, numOff: number, numCodegens: number, eof: boolean): void {
    const bw = this.bw;
    bw.ensure(2 * this.codegenLen + 64);
    bw.writeBits(eof ? 5 : 4, 3);
    bw.writeBits(numLit - 257, 5);
    bw.writeBits(numOff - 1, 5);
    bw.writeBits(numCodegens - 4, 4);
    const cg = this.cgEnc;
    for (let i = 0; i < numCodegens; i++) bw.writeBits(cg.lens[CODEGEN_ORDER[i]], 3);
    const out = this.codegen;
    for (let i = 0; i < this.codegenLen; i++) {
      const sym = out[i];
      bw.writeBits(cg.codes[sym], cg.lens[sym]);
      if (sym === 16) bw.writeBits(out[++i], 2);
      else if (sym === 17) bw.writeBits(out[++i], 3);
      else if (sym === 18) bw.writeBits(out[++i], 7);
    }
  }

  private writeTokens(tokens: Int32Array, ntok: number, lit: HuffmanCode, off: HuffmanCode): void {
    const bw = this.bw;
    bw.ensure(6 * ntok + 8);
    const buf = bw.buf;
    const llens = lit.lens, lcodes = lit.codes, olens = off.lens, ocodes = off.codes;
    let acc = bw.acc, nbits = bw.nbits, pos = bw.pos;
    for (let i = 0; i < ntok; i++) {
      const t = tokens[i];
      if (t < 256) {
        acc |= lcodes[t] << nbits;
        nbits += llens[t];
      } else {
        const xlen = (t >>> 15) & 0xff;
        const lc = LEN_CODE[xlen];
        acc |= lcodes[257 + lc] << nbits;
        nbits += llens[257 + lc];
        if (nbits >= 16) {
          buf[pos++] = acc;
          buf[pos++] = acc >>> 8;
          acc >>>= 16;
          nbits -= 16;
        }
        const le = LEN_EXTRA[lc];
        if (le > 0) {
          acc |= (xlen - LEN_BASE[lc]) << nbits;
          nbits += le;
          if (nbits >= 16) {
            buf[pos++] = acc;
            buf[pos++] = acc >>> 8;
            acc >>>= 16;
            nbits -= 16;
          }
        }
        const xoff = t & 0x7fff;
        const oc = OFF_CODE[xoff];
        acc |= ocodes[oc] << nbits;
        nbits += olens[oc];
        if (nbits >= 16) {
          buf[pos++] = acc;
          buf[pos++] = acc >>> 8;
          acc >>>= 16;
          nbits -= 16;
        }
        const oe = OFF_EXTRA[oc];
        if (oe > 0) {
          acc |= (xoff - OFF_BASE[oc]) << nbits;
          nbits += oe;
        }
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
    bw.writeBits(lcodes[EOB], llens[EOB]);
  }
}
