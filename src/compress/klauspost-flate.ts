// A bit-exact re-implementation of github.com/klauspost/compress/flate 1.15.12 at level 5
// (what flate.DefaultCompression maps to), the deflate encoder behind pgzip and therefore
// behind the layers podman, buildah and skopeo push.
//
// Written from a reading of the upstream algorithm, not translated from it. Every decision
// that changes output bytes is reproduced: the 65535-byte input window, the level-5 fast
// matcher (one 4-byte-hash table and one 7-byte-hash table keeping two candidates, skip
// heuristics, "check the end of the match" and backward extension), how history is kept and
// slid, the choice between stored / Huffman-only / fixed / dynamic blocks and re-using the
// previous dynamic table (including the float32 entropy estimate), Go's length-limited
// Huffman construction and its code-length run-length encoding, and the sync flush.
// Where the output is just a bit stream (accumulator width, flush granularity) we do
// whatever is fastest in JavaScript.

// ---------------------------------------------------------------------------------------
// Constants

const MAX_STORE = 65535; // window size of the fast levels and largest stored block
const MAX_MATCH_OFFSET = 1 << 15; // matches must be strictly closer than this
const MAX_MATCH_LENGTH = 258;
const TABLE_BITS = 15;
const TABLE_SIZE = 1 << TABLE_BITS;
const HASH_SHIFT = 32 - TABLE_BITS;
const ALLOC_HISTORY = MAX_STORE * 5;
const BUFFER_RESET = 2 ** 31 - ALLOC_HISTORY - MAX_STORE - 1;
const INPUT_MARGIN = 12 - 1;
const MIN_NON_LITERAL_BLOCK = 1 + 1 + INPUT_MARGIN;

const LITERAL_COUNT = 286;
const OFFSET_CODE_COUNT = 30;
const CODEGEN_COUNT = 19;
const END_BLOCK = 256;
const MAX_PREDEFINED_TOKENS = 250;
const LOG_NEW_TABLE_PENALTY = 7; // levels 1-6
const BAD_CODE = 255;
const MATCH_TYPE = 1 << 30;

const PRIME4 = 0x9e3779b1 | 0;
// prime7bytes = 0x00cf1bbc_dcbfa563, split for a 64-bit multiply done in 32-bit pieces.
const P7_HI = 0x00cf1bbc;
const P7_LO = 0xdcbfa563 | 0;
const P7_LO_H = 0xdcbf;
const P7_LO_L = 0xa563;

const LENGTH_EXTRA_BITS = Uint8Array.of(
  0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0, 0, 0, 0,
);
const LENGTH_BASE = Uint8Array.of(
  0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 255,
  0, 0, 0,
);
const OFFSET_EXTRA_BITS = Uint8Array.of(
  0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14,
);
const OFFSET_BASE = Int32Array.of(
  0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0006, 0x0008, 0x000c, 0x0010, 0x0018, 0x0020, 0x0030, 0x0040, 0x0060,
  0x0080, 0x00c0, 0x0100, 0x0180, 0x0200, 0x0300, 0x0400, 0x0600, 0x0800, 0x0c00, 0x1000, 0x1800, 0x2000, 0x3000,
  0x4000, 0x6000, 0x8000, 0xc000,
);
const CODEGEN_ORDER = Uint8Array.of(16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15);

/** LENGTH_CODE[length - 3] = length code index (0..28). */
const LENGTH_CODE = (() => {
  const t = new Uint8Array(256);
  for (let code = 0; code < 29; code++) {
    const lo = LENGTH_BASE[code];
    const hi = code === 28 ? 256 : code === 27 ? 255 : LENGTH_BASE[code + 1];
    for (let x = lo; x < hi; x++) t[x] = code;
  }
  return t;
})();

/** Distance code for xoff = distance - 1: OFFSET_CODE[xoff] below 256, else OFFSET_CODE[256 + (xoff >> 7)]. */
const OFFSET_CODE = (() => {
  const t = new Uint8Array(512);
  for (let code = 0; code < 30; code++) {
    const end = code === 29 ? MAX_MATCH_OFFSET : OFFSET_BASE[code + 1];
    for (let x = OFFSET_BASE[code]; x < end; x++) {
      if (x < 256) t[x] = code;
      else t[256 + (x >> 7)] = code;
    }
  }
  return t;
})();

function reverseBits(code: number, len: number): number {
  let r = 0;
  for (let i = 0; i < len; i++) {
    r = (r << 1) | (code & 1);
    code >>>= 1;
  }
  return r;
}

// ---------------------------------------------------------------------------------------
// Hashes (functions of the bytes at a position, so no 64-bit "current value" is carried)

function load32(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
}

function hash4(b: Uint8Array, i: number): number {
  return Math.imul(b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24), PRIME4) >>> HASH_SHIFT;
}

/**
 * Slot of the 7-byte hash in the long table: the hash is the top 15 bits of
 * ((7 bytes at i) << 8) * prime7bytes mod 2^64 (computed without BigInt); the table
 * interleaves each hash's two entries (most recent, previous), so the slot is 2*hash.
 */
function hash7(b: Uint8Array, i: number): number {
  return hash7w(b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24), b, i);
}

/** hash7 when the first 4 bytes at i are already loaded as `w`. */
function hash7w(w: number, b: Uint8Array, i: number): number {
  const xlo = w << 8; // low word of u<<8
  const xhi = (w >>> 24) | (b[i + 4] << 8) | (b[i + 5] << 16) | (b[i + 6] << 24);
  // High word of the 32x32 product xlo * P7_LO, from 16-bit halves (exact in doubles).
  const al = xlo & 0xffff;
  const ah = xlo >>> 16;
  const lh = al * P7_LO_H;
  const hl = ah * P7_LO_L;
  const mid = ((al * P7_LO_L) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  const carry = ah * P7_LO_H + (lh >>> 16) + (hl >>> 16) + (mid >>> 16);
  return ((carry + Math.imul(xlo, P7_HI) + Math.imul(xhi, P7_LO)) >>> (31 - TABLE_BITS)) & ~1;
}

// ---------------------------------------------------------------------------------------
// float32 entropy estimate (tokens.EstimatedBits upstream); every step rounds like Go's float32.
// This matches Go on amd64, where the compiler does not fuse multiply-adds. Go may fuse them
// on arm64/ppc64le/s390x, so binaries built there could in rare cases decide differently.

const f32 = Math.fround;
const F32 = new Float32Array(1);
const I32 = new Int32Array(F32.buffer);
const K1 = f32(-0.34484843);
const K2 = f32(2.02466578);
const K3 = f32(0.67487759);

function fastLog2(val: number): number {
  F32[0] = val;
  let ux = I32[0];
  let log2 = f32(((ux >> 23) & 255) - 128);
  ux &= -0x7f800001;
  ux = (ux + (127 << 23)) | 0;
  I32[0] = ux;
  const u = F32[0];
  return f32(log2 + f32(f32(f32(f32(K1 * u) + K2) * u) - K3));
}

function entropyBits(count: number, invTotal: number): number {
  const n = count; // exact in float32 (< 2^24)
  let v = -fastLog2(f32(n * invTotal));
  if (v < 1) v = 1;
  else if (v > 15) v = 15;
  return f32(v * n);
}

// ---------------------------------------------------------------------------------------
// Tokens of one window: literals (0..255), EOB (256) or matches
// (MATCH_TYPE | (length-3) << 22 | offsetCode << 16 | (distance-1)).

class Tokens {
  readonly tok = new Int32Array(MAX_STORE + 1);
  n = 0;
  readonly litHist = new Int32Array(256);
  /** [0] counts EOB, [k] counts length code k-1 */
  readonly extraHist = new Int32Array(32);
  readonly offHist = new Int32Array(32);

  reset(): void {
    if (this.n === 0) return;
    this.n = 0;
    this.litHist.fill(0);
    this.extraHist.fill(0);
    this.offHist.fill(0);
  }

  addEOB(): void {
    this.tok[this.n++] = END_BLOCK;
    this.extraHist[0]++;
  }

  estimatedBits(): number {
    let shannon = 0;
    let bits = 0;
    let nMatches = 0;
    const total = this.n;
    if (total > 0) {
      const invTotal = f32(1 / total);
      const lit = this.litHist;
      for (let i = 0; i < 256; i++) if (lit[i] > 0) shannon = f32(shannon + entropyBits(lit[i], invTotal));
      shannon = f32(shannon + 15); // EOB
      const ex = this.extraHist;
      for (let i = 1; i < LITERAL_COUNT - 256; i++) {
        const v = ex[i];
        if (v > 0) {
          shannon = f32(shannon + entropyBits(v, invTotal));
          bits += LENGTH_EXTRA_BITS[(i - 1) & 31] * v;
          nMatches += v;
        }
      }
    }
    if (nMatches > 0) {
      const invTotal = f32(1 / nMatches);
      const off = this.offHist;
      for (let i = 0; i < OFFSET_CODE_COUNT; i++) {
        const v = off[i];
        if (v > 0) {
          shannon = f32(shannon + entropyBits(v, invTotal));
          bits += OFFSET_EXTRA_BITS[i] * v;
        }
      }
    }
    return Math.trunc(shannon) + bits;
  }
}

// ---------------------------------------------------------------------------------------
// Huffman code construction, reproducing Go's length-limited algorithm (a package-merge
// variant over the frequency-sorted leaves) so equal-cost ties resolve identically.

const MAX_INT32 = 0x7fffffff;

/** Scratch for HuffEncoder.bitCounts (per tree level; leaf[level*17 + j] = leaves left of the
 * level-j ancestor of the rightmost node at `level`). Shared: everything here is synchronous. */
const LEVELS = {
  lastFreq: new Int32Array(17),
  nextChar: new Int32Array(17),
  nextPair: new Int32Array(17),
  needed: new Int32Array(17),
  leaf: new Int32Array(17 * 17),
};

class HuffEncoder {
  readonly lens: Uint8Array;
  readonly codes: Uint16Array;
  // scratch
  private readonly keys: Int32Array;
  private readonly listFreq: Int32Array;
  private readonly listLit: Int32Array;
  private readonly bitCount = new Int32Array(17);

  constructor(size: number) {
    this.lens = new Uint8Array(size);
    this.codes = new Uint16Array(size);
    this.keys = new Int32Array(size);
    this.listFreq = new Int32Array(size + 1);
    this.listLit = new Int32Array(size + 1);
  }

  /** Rebuild codes for symbols [0, count) from freq; other entries are left as they were. */
  generate(freq: Int32Array, count: number, maxBits: number): void {
    let m = 0;
    const keys = this.keys;
    for (let i = 0; i < count; i++) {
      const f = freq[i];
      if (f !== 0) keys[m++] = f * 512 + i; // sort by (freq, symbol): a total order
      else {
        this.lens[i] = 0;
        this.codes[i] = 0;
      }
    }
    if (m <= 2) {
      // One or two symbols: one bit each, in symbol order.
      for (let j = 0; j < m; j++) {
        const sym = keys[j] & 511;
        this.lens[sym] = 1;
        this.codes[sym] = j;
      }
      return;
    }
    const sorted = keys.subarray(0, m).sort();
    const lf = this.listFreq;
    const ll = this.listLit;
    for (let j = 0; j < m; j++) {
      lf[j] = sorted[j] >>> 9;
      ll[j] = sorted[j] & 511;
    }
    const used = this.bitCounts(m, maxBits);
    // Shortest codes go to the most frequent symbols; within a length, by symbol order.
    let code = 0;
    let end = m;
    for (let len = 0; len <= used; len++) {
      code <<= 1;
      const cnt = len === 0 ? 0 : this.bitCount[len];
      if (cnt === 0) continue;
      const chunk = ll.subarray(end - cnt, end).sort();
      for (let j = 0; j < cnt; j++) {
        const sym = chunk[j];
        this.lens[sym] = len;
        this.codes[sym] = reverseBits(code, len);
        code++;
      }
      end -= cnt;
    }
  }

  /** Number of symbols per code length (into this.bitCount[1..]); returns the maximum length. */
  private bitCounts(n: number, maxBits: number): number {
    if (maxBits > n - 1) maxBits = n - 1;
    const { lastFreq, nextChar, nextPair, needed, leaf } = LEVELS;
    lastFreq.fill(0);
    nextChar.fill(0);
    nextPair.fill(0);
    needed.fill(0);
    leaf.fill(0);
    const f0 = this.listFreq[0];
    const f1 = this.listFreq[1];
    const f2 = this.listFreq[2];
    for (let level = 1; level <= maxBits; level++) {
      lastFreq[level] = f1;
      nextChar[level] = f2;
      nextPair[level] = level === 1 ? MAX_INT32 : f0 + f1;
      leaf[level * 17 + level] = 2;
    }
    needed[maxBits] = 2 * n - 4;
    let level = maxBits;
    while (level < 16) {
      if (nextPair[level] === MAX_INT32 && nextChar[level] === MAX_INT32) {
        needed[level] = 0;
        nextPair[level + 1] = MAX_INT32;
        level++;
        continue;
      }
      const prevFreq = lastFreq[level];
      if (nextChar[level] < nextPair[level]) {
        const c = leaf[level * 17 + level] + 1;
        lastFreq[level] = nextChar[level];
        leaf[level * 17 + level] = c;
        nextChar[level] = c < n ? this.listFreq[c] : MAX_INT32;
      } else {
        lastFreq[level] = nextPair[level];
        const save = leaf[level * 17 + level];
        leaf.copyWithin(level * 17, (level - 1) * 17, level * 17);
        leaf[level * 17 + level] = save;
        needed[level - 1] = 2;
      }
      if (--needed[level] === 0) {
        if (level === maxBits) break;
        nextPair[level + 1] = prevFreq + lastFreq[level];
        level++;
      } else {
        while (needed[level - 1] > 0) level--;
      }
    }
    if (leaf[maxBits * 17 + maxBits] !== n) throw new Error('huffman: leaf count mismatch');
    let bits = 1;
    for (let lv = maxBits; lv > 0; lv--) {
      this.bitCount[bits++] = leaf[maxBits * 17 + lv] - leaf[maxBits * 17 + lv - 1];
    }
    return maxBits;
  }

  bitLength(freq: Int32Array, count: number): number {
    let total = 0;
    for (let i = 0; i < count; i++) if (freq[i] !== 0) total += freq[i] * this.lens[i];
    return total;
  }

  /** Bits to code freq with this table, or MAX_INT32 if a used symbol has no code. */
  canReuseBits(freq: Int32Array, count: number): number {
    let total = 0;
    for (let i = 0; i < count; i++) {
      const f = freq[i];
      if (f !== 0) {
        if (this.lens[i] === 0) return MAX_INT32;
        total += f * this.lens[i];
      }
    }
    return total;
  }
}

const FIXED_LIT = (() => {
  const h = new HuffEncoder(LITERAL_COUNT);
  for (let ch = 0; ch < LITERAL_COUNT; ch++) {
    let bits: number;
    let size: number;
    if (ch < 144) [bits, size] = [ch + 48, 8];
    else if (ch < 256) [bits, size] = [ch + 400 - 144, 9];
    else if (ch < 280) [bits, size] = [ch - 256, 7];
    else [bits, size] = [ch + 192 - 280, 8];
    h.lens[ch] = size;
    h.codes[ch] = reverseBits(bits, size);
  }
  return h;
})();

const FIXED_OFF = (() => {
  const h = new HuffEncoder(OFFSET_CODE_COUNT);
  for (let ch = 0; ch < OFFSET_CODE_COUNT; ch++) {
    h.lens[ch] = 5;
    h.codes[ch] = reverseBits(ch, 5);
  }
  return h;
})();

/** Offset table for Huffman-only blocks: a single 1-bit code for distance code 0. */
const HUFF_OFFSET = (() => {
  const h = new HuffEncoder(OFFSET_CODE_COUNT);
  const f = new Int32Array(32);
  f[0] = 1;
  h.generate(f, OFFSET_CODE_COUNT, 15);
  return h;
})();

// ---------------------------------------------------------------------------------------
// Block writer: bit output plus the block-type decisions.

class BlockWriter {
  out = new Uint8Array(1 << 17);
  pos = 0;
  private acc = 0;
  private nbits = 0;

  /** >0 while a dynamic block is open (its EOB not yet written): its estimated header size */
  private lastHeader = 0;
  /** the open table (if any) codes literals only */
  private lastHuffMan = false;
  private lit = new HuffEncoder(LITERAL_COUNT);
  private tmpLit = new HuffEncoder(LITERAL_COUNT);
  private readonly off = new HuffEncoder(OFFSET_CODE_COUNT);
  private readonly cg = new HuffEncoder(CODEGEN_COUNT);
  private readonly litFreq = new Int32Array(256 + 1 + 32);
  private readonly offFreq = new Int32Array(32);
  private readonly cgFreq = new Int32Array(CODEGEN_COUNT);
  private readonly codegen = new Uint8Array(LITERAL_COUNT + OFFSET_CODE_COUNT + 1);

  reset(): void {
    this.pos = 0;
    this.acc = 0;
    this.nbits = 0;
    this.lastHeader = 0;
    this.lastHuffMan = false;
  }

  /** Bytes written so far (a view; copy before the next write). */
  view(): Uint8Array {
    return this.out.subarray(0, this.pos);
  }

  ensure(extra: number): void {
    if (this.pos + extra + 16 <= this.out.length) return;
    let size = this.out.length * 2;
    while (size < this.pos + extra + 16) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.out.subarray(0, this.pos));
    this.out = next;
  }

  /** Append n ≤ 16 bits. Between calls fewer than 16 bits wait in the accumulator. */
  private bits(v: number, n: number): void {
    let acc = this.acc | (v << this.nbits);
    let nb = this.nbits + n;
    if (nb >= 16) {
      this.out[this.pos++] = acc;
      this.out[this.pos++] = acc >>> 8;
      acc >>>= 16;
      nb -= 16;
    }
    this.acc = acc;
    this.nbits = nb;
  }

  private eob(): void {
    this.bits(this.lit.codes[END_BLOCK], this.lit.lens[END_BLOCK]);
  }

  /** Pad to a byte boundary, closing an open block first. */
  flush(): void {
    if (this.lastHeader > 0) {
      this.eob();
      this.lastHeader = 0;
    }
    for (let nb = this.nbits; nb > 0; nb -= 8) {
      this.out[this.pos++] = this.acc;
      this.acc >>>= 8;
    }
    this.acc = 0;
    this.nbits = 0;
  }

  writeStoredHeader(length: number, eof: boolean): void {
    if (this.lastHeader > 0) {
      this.eob();
      this.lastHeader = 0;
    }
    if (length === 0 && eof) {
      // An empty final block costs 10 bits as a fixed block instead of 5 stored bytes.
      this.writeFixedHeader(true);
      this.bits(0, 7);
      this.flush();
      return;
    }
    this.bits(eof ? 1 : 0, 3);
    this.flush();
    this.bits(length, 16);
    this.bits(~length & 0xffff, 16);
  }

  private writeStored(input: Uint8Array, eof: boolean): void {
    this.writeStoredHeader(input.length, eof);
    this.out.set(input, this.pos); // byte aligned here
    this.pos += input.length;
  }

  writeStoredBlock(input: Uint8Array): void {
    this.ensure(input.length + 8);
    this.writeStored(input, false);
  }

  private writeFixedHeader(eof: boolean): void {
    if (this.lastHeader > 0) {
      this.eob();
      this.lastHeader = 0;
    }
    this.bits(eof ? 3 : 2, 3);
  }

  private indexTokens(t: Tokens, filled: boolean): [number, number] {
    const lf = this.litFreq;
    lf.set(t.litHist, 0);
    lf.set(t.extraHist, 256);
    this.offFreq.set(t.offHist);
    if (t.n === 0) return [0, 0];
    if (filled) return [LITERAL_COUNT, OFFSET_CODE_COUNT];
    let numLit = lf.length;
    while (lf[numLit - 1] === 0) numLit--;
    let numOff = 32;
    while (numOff > 0 && this.offFreq[numOff - 1] === 0) numOff--;
    if (numOff === 0) {
      // Dynamic blocks need at least one distance code to describe.
      this.offFreq[0] = 1;
      numOff = 1;
    }
    return [numLit, numOff];
  }

  private canReuse(t: Tokens): boolean {
    const offLens = this.off.lens;
    for (let i = 0; i < OFFSET_CODE_COUNT; i++) if (t.offHist[i] !== 0 && offLens[i] === 0) return false;
    const litLens = this.lit.lens;
    for (let i = 0; i < LITERAL_COUNT - 256; i++) if (t.extraHist[i] !== 0 && litLens[256 + i] === 0) return false;
    for (let i = 0; i < 256; i++) if (t.litHist[i] !== 0 && litLens[i] === 0) return false;
    return true;
  }

  private extraBitSize(): number {
    let total = 0;
    const lf = this.litFreq;
    for (let i = 0; i < LITERAL_COUNT - 257; i++) total += lf[257 + i] * LENGTH_EXTRA_BITS[i];
    const of = this.offFreq;
    for (let i = 0; i < OFFSET_CODE_COUNT; i++) total += of[i] * OFFSET_EXTRA_BITS[i];
    return total;
  }

  private fixedSize(extraBits: number): number {
    return (
      3 +
      FIXED_LIT.bitLength(this.litFreq, LITERAL_COUNT) +
      FIXED_OFF.bitLength(this.offFreq, OFFSET_CODE_COUNT) +
      extraBits
    );
  }

  /** Run-length code the concatenated code lengths (RFC 1951 3.2.7) into this.codegen. */
  private generateCodegen(numLit: number, numOff: number, litEnc: HuffEncoder, offEnc: HuffEncoder): void {
    const freq = this.cgFreq;
    freq.fill(0);
    const cg = this.codegen;
    cg.set(litEnc.lens.subarray(0, numLit), 0);
    cg.set(offEnc.lens.subarray(0, numOff), numLit);
    cg[numLit + numOff] = BAD_CODE;
    // In place: output never overtakes the input still to be read.
    let size = cg[0];
    let count = 1;
    let out = 0;
    for (let inIdx = 1; size !== BAD_CODE; inIdx++) {
      const next = cg[inIdx];
      if (next === size) {
        count++;
        continue;
      }
      if (size !== 0) {
        cg[out++] = size;
        freq[size]++;
        count--;
        while (count >= 3) {
          const n = count < 6 ? count : 6;
          cg[out++] = 16;
          cg[out++] = n - 3;
          freq[16]++;
          count -= n;
        }
      } else {
        while (count >= 11) {
          const n = count < 138 ? count : 138;
          cg[out++] = 18;
          cg[out++] = n - 11;
          freq[18]++;
          count -= n;
        }
        if (count >= 3) {
          cg[out++] = 17;
          cg[out++] = count - 3;
          freq[17]++;
          count = 0;
        }
      }
      for (; count > 0; count--) {
        cg[out++] = size;
        freq[size]++;
      }
      size = next;
      count = 1;
    }
    cg[out] = BAD_CODE;
  }

  private numCodegens(): number {
    let n = CODEGEN_COUNT;
    while (n > 4 && this.cgFreq[CODEGEN_ORDER[n - 1]] === 0) n--;
    return n;
  }

  private headerSize(): number {
    const f = this.cgFreq;
    return (
      3 + 5 + 5 + 4 + 3 * this.numCodegens() + this.cg.bitLength(f, CODEGEN_COUNT) + f[16] * 2 + f[17] * 3 + f[18] * 7
    );
  }

  private writeDynamicHeader(numLit: number, numOff: number, numCodegens: number, eof: boolean): void {
    this.bits(eof ? 5 : 4, 3);
    this.bits(numLit - 257, 5);
    this.bits(numOff - 1, 5);
    this.bits(numCodegens - 4, 4);
    const cg = this.cg;
    for (let i = 0; i < numCodegens; i++) this.bits(cg.lens[CODEGEN_ORDER[i]], 3);
    const codes = this.codegen;
    for (let i = 0; ; ) {
      const sym = codes[i++];
      if (sym === BAD_CODE) break;
      this.bits(cg.codes[sym], cg.lens[sym]);
      if (sym === 16) this.bits(codes[i++], 2);
      else if (sym === 17) this.bits(codes[i++], 3);
      else if (sym === 18) this.bits(codes[i++], 7);
    }
  }

  /** Encode tokens; a trailing EOB token is written after the rest with the literal table. */
  private writeTokens(t: Tokens, le: HuffEncoder, oe: HuffEncoder): void {
    let n = t.n;
    if (n === 0) return;
    const tok = t.tok;
    const deferEOB = tok[n - 1] === END_BLOCK;
    if (deferEOB) n--;
    const lLens = le.lens;
    const lCodes = le.codes;
    const oLens = oe.lens;
    const oCodes = oe.codes;
    const out = this.out;
    let pos = this.pos;
    let acc = this.acc;
    let nb = this.nbits;
    for (let i = 0; i < n; i++) {
      const v = tok[i];
      if (v < 256) {
        acc |= lCodes[v] << nb;
        nb += lLens[v];
      } else {
        const xl = (v >>> 22) & 255;
        const lc = LENGTH_CODE[xl];
        acc |= lCodes[257 + lc] << nb;
        nb += lLens[257 + lc];
        if (nb >= 16) {
          out[pos++] = acc;
          out[pos++] = acc >>> 8;
          acc >>>= 16;
          nb -= 16;
        }
        const leb = LENGTH_EXTRA_BITS[lc];
        if (leb !== 0) {
          acc |= (xl - LENGTH_BASE[lc]) << nb;
          nb += leb;
        }
        if (nb >= 16) {
          out[pos++] = acc;
          out[pos++] = acc >>> 8;
          acc >>>= 16;
          nb -= 16;
        }
        const oc = (v >>> 16) & 31;
        acc |= oCodes[oc] << nb;
        nb += oLens[oc];
        if (nb >= 16) {
          out[pos++] = acc;
          out[pos++] = acc >>> 8;
          acc >>>= 16;
          nb -= 16;
        }
        const oeb = OFFSET_EXTRA_BITS[oc];
        if (oeb !== 0) {
          acc |= ((v & 0xffff) - OFFSET_BASE[oc]) << nb;
          nb += oeb;
        }
      }
      if (nb >= 16) {
        out[pos++] = acc;
        out[pos++] = acc >>> 8;
        acc >>>= 16;
        nb -= 16;
      }
    }
    this.pos = pos;
    this.acc = acc;
    this.nbits = nb;
    if (deferEOB) this.bits(le.codes[END_BLOCK], le.lens[END_BLOCK]);
  }

  /** Tokens with a dynamic (possibly re-used), fixed or stored block, whichever is estimated smallest. */
  writeBlockDynamic(t: Tokens, eof: boolean, input: Uint8Array, sync: boolean): void {
    this.ensure(2 * input.length + 1024);
    sync = sync || eof;
    if (sync) t.addEOB();
    // A literal-only table cannot carry matches, and the last block must be marked final.
    if ((this.lastHuffMan || eof) && this.lastHeader > 0) {
      this.eob();
      this.lastHeader = 0;
      this.lastHuffMan = false;
    }
    if (this.lastHeader > 0 && !this.canReuse(t)) {
      this.eob();
      this.lastHeader = 0;
    }
    const [numLit, numOff] = this.indexTokens(t, !sync);
    const storedBits = (input.length + 5) * 8; // input always fits one stored block here
    const extraBits = this.extraBitSize();
    let size = 0;

    if (this.lastHeader > 0) {
      // Re-use the open table unless a fresh one (estimated from entropy plus a penalty) wins.
      let newSize = this.lastHeader + t.estimatedBits();
      newSize += this.lit.lens[END_BLOCK] + (newSize >> LOG_NEW_TABLE_PENALTY);
      const reuseSize =
        this.lit.bitLength(this.litFreq, LITERAL_COUNT) + this.off.bitLength(this.offFreq, OFFSET_CODE_COUNT) + extraBits;
      if (newSize < reuseSize) {
        this.eob();
        size = newSize;
        this.lastHeader = 0;
      } else {
        size = reuseSize;
      }
      if (t.n < MAX_PREDEFINED_TOKENS) {
        const preSize = this.fixedSize(extraBits) + 7;
        if (preSize < size) {
          if (storedBits <= size) {
            this.writeStored(input, eof);
            return;
          }
          this.writeFixedHeader(eof);
          if (!sync) t.addEOB();
          this.writeTokens(t, FIXED_LIT, FIXED_OFF);
          return;
        }
      }
      if (storedBits <= size) {
        this.writeStored(input, eof);
        return;
      }
    }

    if (this.lastHeader === 0) {
      this.litFreq[END_BLOCK] = 1;
      this.lit.generate(this.litFreq, LITERAL_COUNT, 15);
      this.off.generate(this.offFreq, OFFSET_CODE_COUNT, 15);
      this.generateCodegen(numLit, numOff, this.lit, this.off);
      this.cg.generate(this.cgFreq, CODEGEN_COUNT, 7);
      const numCodegens = this.numCodegens();
      size =
        this.headerSize() +
        this.lit.bitLength(this.litFreq, LITERAL_COUNT) +
        this.off.bitLength(this.offFreq, OFFSET_CODE_COUNT) +
        extraBits;
      if (t.n < MAX_PREDEFINED_TOKENS) {
        const preSize = this.fixedSize(extraBits);
        if (preSize <= size) {
          if (storedBits <= preSize) {
            this.writeStored(input, eof);
            return;
          }
          this.writeFixedHeader(eof);
          if (!sync) t.addEOB();
          this.writeTokens(t, FIXED_LIT, FIXED_OFF);
          return;
        }
      }
      if (storedBits <= size) {
        this.writeStored(input, eof);
        return;
      }
      this.writeDynamicHeader(numLit, numOff, numCodegens, eof);
      if (!sync) this.lastHeader = this.headerSize();
      this.lastHuffMan = false;
    }
    if (sync) this.lastHeader = 0;
    this.writeTokens(t, this.lit, this.off);
  }

  /** Literal-only block (the matcher found almost nothing), or stored if that looks hopeless. */
  writeBlockHuff(eof: boolean, input: Uint8Array, sync: boolean): void {
    this.ensure(2 * input.length + 1024);
    const lf = this.litFreq;
    lf.fill(0);
    if (!this.lastHuffMan) this.offFreq.fill(0);
    const len = input.length;
    for (let i = 0; i < len; i++) lf[input[i]]++;
    const storedBits = (len + 5) * 8;
    if (len > 1024) {
      // Near-uniform byte histogram: not worth a table.
      let abs = 0;
      const avg = len / 256;
      const max = len * 2;
      for (let i = 0; i < 256; i++) {
        const diff = lf[i] - avg;
        abs += diff * diff;
        if (abs > max) break;
      }
      if (abs < max) {
        this.writeStored(input, eof);
        return;
      }
    }
    lf[END_BLOCK] = 1;
    this.tmpLit.generate(lf, END_BLOCK + 1, 15);
    let estBits = this.tmpLit.canReuseBits(lf, END_BLOCK + 1);
    if (estBits < MAX_INT32) {
      estBits += this.lastHeader;
      if (this.lastHeader === 0) estBits += 70 * 8; // guessed header size
      estBits += estBits >> LOG_NEW_TABLE_PENALTY;
    }
    if (storedBits <= estBits) {
      this.writeStored(input, eof);
      return;
    }
    if (this.lastHeader > 0) {
      const reuseSize = this.lit.canReuseBits(lf, 256);
      if (estBits < reuseSize) {
        this.eob();
        this.lastHeader = 0;
      }
    }
    if (this.lastHeader === 0) {
      const t = this.lit;
      this.lit = this.tmpLit;
      this.tmpLit = t;
      this.generateCodegen(END_BLOCK + 1, 1, this.lit, HUFF_OFFSET);
      this.cg.generate(this.cgFreq, CODEGEN_COUNT, 7);
      this.writeDynamicHeader(END_BLOCK + 1, 1, this.numCodegens(), eof);
      this.lastHuffMan = true;
      this.lastHeader = this.headerSize();
    }
    const lens = this.lit.lens;
    const codes = this.lit.codes;
    const out = this.out;
    let pos = this.pos;
    let acc = this.acc;
    let nb = this.nbits;
    for (let i = 0; i < len; i++) {
      const v = input[i];
      acc |= codes[v] << nb;
      nb += lens[v];
      if (nb >= 16) {
        out[pos++] = acc;
        out[pos++] = acc >>> 8;
        acc >>>= 16;
        nb -= 16;
      }
    }
    this.pos = pos;
    this.acc = acc;
    this.nbits = nb;
    if (eof || sync) {
      this.eob();
      this.lastHeader = 0;
      this.lastHuffMan = false;
    }
  }
}

// ---------------------------------------------------------------------------------------
// The level-5 compressor: 65535-byte input window, fast matcher with its own history.

/**
 * klauspost/compress/flate at level 5 (DefaultCompression), with the semantics of its
 * Writer: write() buffers and encodes full 65535-byte windows, flush() is a sync flush
 * (ends with 00 00 ff ff), close() ends the stream. Output accumulates until takeOutput().
 */
export class KlauspostDeflater {
  private readonly window = new Uint8Array(MAX_STORE);
  private windowEnd = 0;
  private readonly tokens = new Tokens();
  private readonly bw = new BlockWriter();

  // Matcher state. Table entries are positions in `hist` plus `cur`, so sliding the
  // history only moves `cur`; entries further back than the window simply fail the
  // distance check.
  private readonly hist = new Uint8Array(ALLOC_HISTORY);
  private histLen = 0;
  private cur = MAX_STORE;
  private readonly table = new Int32Array(TABLE_SIZE);
  /** long-hash table: [2h] most recent entry, [2h+1] the one before */
  private readonly bTable = new Int32Array(2 * TABLE_SIZE);

  /**
   * Start a new stream primed with a preset dictionary (only its last 32 KiB matter).
   * pgzip reuses pooled writers whose reset leaves old table entries in place but out of
   * reach (the offset base jumps past them), which behaves exactly like zeroed tables.
   */
  resetDict(dict: Uint8Array): void {
    this.bw.reset();
    this.windowEnd = 0;
    this.tokens.reset();
    this.histLen = 0;
    this.cur = MAX_STORE;
    this.table.fill(0);
    this.bTable.fill(0);
    // Priming = encoding the dictionary and discarding the tokens.
    const d = dict.length > MAX_MATCH_OFFSET ? dict.subarray(dict.length - MAX_MATCH_OFFSET) : dict;
    this.encode(d);
    this.tokens.reset();
  }

  write(data: Uint8Array): void {
    let i = 0;
    while (i < data.length) {
      if (this.windowEnd === MAX_STORE) this.step(false);
      const n = Math.min(MAX_STORE - this.windowEnd, data.length - i);
      this.window.set(data.subarray(i, i + n), this.windowEnd);
      this.windowEnd += n;
      i += n;
    }
  }

  /** Sync flush: encode everything pending, then an empty stored block. */
  flush(): void {
    this.step(true);
    this.bw.ensure(16);
    this.bw.writeStoredHeader(0, false);
    this.bw.flush();
  }

  close(): void {
    this.step(true);
    this.bw.ensure(16);
    this.bw.writeStoredHeader(0, true);
    this.bw.flush();
  }

  /** Output produced since the last call (a copy). */
  takeOutput(): Uint8Array {
    const out = this.bw.view().slice();
    this.bw.pos = 0;
    return out;
  }

  /** Encode the window (when full, or when flushing) and write its block. */
  private step(sync: boolean): void {
    const len = this.windowEnd;
    if (len < MAX_STORE) {
      if (!sync) return;
      if (len < 128) {
        // Tiny tails: stored, or Huffman-only; the matcher is reset afterwards.
        if (len === 0) return;
        const input = this.window.subarray(0, len);
        if (len <= 32) this.bw.writeStoredBlock(input);
        else this.bw.writeBlockHuff(false, input, true);
        this.tokens.reset();
        this.windowEnd = 0;
        this.resetMatcher();
        return;
      }
    }
    const input = this.window.subarray(0, len);
    this.encode(input);
    const t = this.tokens;
    if (t.n === 0) this.bw.writeStoredBlock(input);
    else if (t.n > len - (len >> 4)) this.bw.writeBlockHuff(false, input, sync);
    else this.bw.writeBlockDynamic(t, false, input, sync);
    t.reset();
    this.windowEnd = 0;
  }

  private resetMatcher(): void {
    if (this.cur <= BUFFER_RESET) this.cur += MAX_MATCH_OFFSET + this.histLen;
    this.histLen = 0;
  }

  /** Append src to the history, sliding it down to its last 32 KiB when full. Returns src's start. */
  private addBlock(src: Uint8Array): number {
    if (this.histLen + src.length > ALLOC_HISTORY) {
      const offset = this.histLen - MAX_MATCH_OFFSET;
      this.hist.copyWithin(0, offset, this.histLen);
      this.cur += offset;
      this.histLen = MAX_MATCH_OFFSET;
    }
    const s = this.histLen;
    this.hist.set(src, s);
    this.histLen += src.length;
    return s;
  }

  /** Keep table offsets within int32 on very long streams (same rebasing as upstream). */
  private rebase(): void {
    const { table, bTable } = this;
    if (this.histLen === 0) {
      table.fill(0);
      bTable.fill(0);
      this.cur = MAX_MATCH_OFFSET;
      return;
    }
    const minOff = this.cur + this.histLen - MAX_MATCH_OFFSET;
    const shift = this.cur - MAX_MATCH_OFFSET;
    for (let i = 0; i < TABLE_SIZE; i++) {
      const v = table[i];
      table[i] = v <= minOff ? 0 : v - shift;
      const c = bTable[2 * i];
      if (c <= minOff) {
        bTable[2 * i] = 0;
        bTable[2 * i + 1] = 0;
      } else {
        bTable[2 * i] = c - shift;
        const p = bTable[2 * i + 1];
        bTable[2 * i + 1] = p <= minOff ? 0 : p - shift;
      }
    }
    this.cur = MAX_MATCH_OFFSET;
  }

  /** The level-5 matcher: tokens for src, using everything before it in the history. */
  private encode(input: Uint8Array): void {
    if (this.cur >= BUFFER_RESET) this.rebase();
    const s0 = this.addBlock(input);
    if (input.length < MIN_NON_LITERAL_BLOCK) return; // left to the caller as literals

    const src = this.hist;
    const end = this.histLen;
    const cur = this.cur;
    const table = this.table;
    const bt = this.bTable;
    const t = this.tokens;
    const tok = t.tok;
    const litHist = t.litHist;
    let n = t.n;

    const sLimit = end - INPUT_MARGIN;
    let nextEmit = s0;
    let s = s0;
    // Hashes of the bytes at s, carried from one probe to the next.
    let hS = hash4(src, s);
    let hL = hash7(src, s);

    main: for (;;) {
      let nextS = s;
      let l = 0;
      let tp = 0; // match source position
      let cv = load32(src, s);
      for (;;) {
        s = nextS;
        // Probe less densely the longer we go without a match.
        nextS = s + 1 + ((s - nextEmit) >> 6);
        if (nextS > sLimit) break main;
        const sCand = table[hS];
        const lCur = bt[hL];
        const lPrev = bt[hL + 1];
        const next = load32(src, nextS);
        table[hS] = s + cur;
        bt[hL + 1] = lCur;
        bt[hL] = s + cur;
        const nhS = Math.imul(next, PRIME4) >>> HASH_SHIFT;
        const nhL = hash7w(next, src, nextS);

        // Long (7-byte hash) candidates first, the most recent one, then the one before.
        tp = lCur - cur;
        if (s - tp < MAX_MATCH_OFFSET) {
          if (cv === load32(src, tp)) {
            table[nhS] = nextS + cur;
            bt[nhL + 1] = bt[nhL];
            bt[nhL] = nextS + cur;
            const t2 = lPrev - cur;
            if (s - t2 < MAX_MATCH_OFFSET && cv === load32(src, t2)) {
              l = matchLen(src, s + 4, tp + 4, Math.min(s + MAX_MATCH_LENGTH, end)) + 4;
              const ml = matchLen(src, s + 4, t2 + 4, Math.min(s + MAX_MATCH_LENGTH, end)) + 4;
              if (ml > l) {
                tp = t2;
                l = ml;
              }
            }
            break;
          }
          tp = lPrev - cur;
          if (s - tp < MAX_MATCH_OFFSET && cv === load32(src, tp)) {
            table[nhS] = nextS + cur;
            bt[nhL + 1] = bt[nhL];
            bt[nhL] = nextS + cur;
            break;
          }
        }

        // Short (4-byte hash) candidate; if it hits, see whether a long match at nextS beats it.
        tp = sCand - cur;
        if (s - tp < MAX_MATCH_OFFSET && cv === load32(src, tp)) {
          l = matchLen(src, s + 4, tp + 4, Math.min(s + MAX_MATCH_LENGTH, end)) + 4;
          const c2 = bt[nhL];
          const p2 = bt[nhL + 1];
          table[nhS] = nextS + cur;
          bt[nhL + 1] = c2;
          bt[nhL] = nextS + cur;
          let t2 = c2 - cur;
          if (nextS - t2 < MAX_MATCH_OFFSET) {
            if (load32(src, t2) === next) {
              const ml = matchLen(src, nextS + 4, t2 + 4, Math.min(nextS + MAX_MATCH_LENGTH, end)) + 4;
              if (ml > l) {
                tp = t2;
                s = nextS;
                l = ml;
                break;
              }
            }
            t2 = p2 - cur;
            if (nextS - t2 < MAX_MATCH_OFFSET && load32(src, t2) === next) {
              const ml = matchLen(src, nextS + 4, t2 + 4, Math.min(nextS + MAX_MATCH_LENGTH, end)) + 4;
              if (ml > l) {
                tp = t2;
                s = nextS;
                l = ml;
              }
            }
          }
          break;
        }
        cv = next;
        hS = nhS;
        hL = nhL;
      }

      // Extend: lengths found above are capped at 258 unless measured without a cap.
      if (l === 0) l = matchLen(src, s + 4, tp + 4, end) + 4;
      else if (l === MAX_MATCH_LENGTH) l += matchLen(src, s + l, tp + l, end);

      // A short match may be beaten by one that ends where this one ends (allowing the
      // first two bytes to differ; backward extension below recovers them if they match).
      const sAt = s + l;
      if (l < 30 && sAt < sLimit) {
        const t2 = bt[hash7(src, sAt)] - cur - l + 2;
        const s2 = s + 2;
        const off = s2 - t2;
        if (t2 >= 0 && off < MAX_MATCH_OFFSET && off > 0) {
          const l2 = matchLen(src, s2, t2, end);
          if (l2 > l) {
            tp = t2;
            l = l2;
            s = s2;
          }
        }
      }

      while (tp > 0 && s > nextEmit && src[tp - 1] === src[s - 1]) {
        s--;
        tp--;
        l++;
      }
      for (let i = nextEmit; i < s; i++) {
        const v = src[i];
        tok[n++] = v;
        litHist[v]++;
      }

      // The match, split into pieces of at most 258 that each keep ≥ 3 bytes.
      const xoff = s - tp - 1;
      const oc = xoff < 256 ? OFFSET_CODE[xoff] : OFFSET_CODE[256 + (xoff >> 7)];
      const offBits = MATCH_TYPE | (oc << 16) | xoff;
      for (let rest = l; rest > 0; ) {
        let xl = rest;
        if (xl > MAX_MATCH_LENGTH) xl = xl > MAX_MATCH_LENGTH + 3 ? MAX_MATCH_LENGTH : MAX_MATCH_LENGTH - 3;
        rest -= xl;
        xl -= 3;
        t.extraHist[LENGTH_CODE[xl] + 1]++;
        t.offHist[oc]++;
        tok[n++] = offBits | (xl << 22);
      }

      s += l;
      nextEmit = s;
      if (nextS >= s) s = nextS + 1;
      if (s >= sLimit) break main;

      // Index some positions inside the match (every third one after the first few).
      let i = s - l + 1;
      if (i < s - 1) {
        table[hash4(src, i)] = i + cur;
        let h = hash7(src, i);
        bt[h + 1] = bt[h];
        bt[h] = i + cur;
        h = hash7(src, i + 1);
        bt[h + 1] = bt[h];
        bt[h] = i + 1 + cur;
        table[hash4(src, i + 2)] = i + 2 + cur;
        for (i += 4; i < s - 1; i += 3) {
          h = hash7(src, i);
          bt[h + 1] = bt[h];
          bt[h] = i + cur;
          table[hash4(src, i + 1)] = i + 1 + cur;
        }
      }
      // And the two positions just before the next probe.
      table[hash4(src, s - 1)] = s - 1 + cur;
      const h = hash7(src, s - 1);
      bt[h + 1] = bt[h];
      bt[h] = s - 1 + cur;
      hS = hash4(src, s);
      hL = hash7(src, s);
    }

    // Trailing literals, unless no match was found at all (then the caller stores the window).
    if (nextEmit < end && n > 0) {
      for (let i = nextEmit; i < end; i++) {
        const v = src[i];
        tok[n++] = v;
        litHist[v]++;
      }
    }
    t.n = n;
  }
}

/** Number of equal bytes at a and b (a > b), not looking at or beyond `limit` (for a). */
function matchLen(src: Uint8Array, a: number, b: number, limit: number): number {
  const start = a;
  while (a + 4 <= limit && load32(src, a) === load32(src, b)) {
    a += 4;
    b += 4;
  }
  while (a < limit && src[a] === src[b]) {
    a++;
    b++;
  }
  return a - start;
}

/** A whole raw deflate stream at level 5, as flate.NewWriter(w, 5) + Write + Close would produce. */
export function klauspostDeflate(data: Uint8Array): Uint8Array {
  const d = new KlauspostDeflater();
  d.resetDict(new Uint8Array(0));
  const parts: Uint8Array[] = [];
  for (let i = 0; i < data.length; i += 1 << 20) {
    d.write(data.subarray(i, Math.min(data.length, i + (1 << 20))));
    parts.push(d.takeOutput());
  }
  d.close();
  parts.push(d.takeOutput());
  return concat(parts);
}

function concat(parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
