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

import { appendWasmBits, BitWriter } from './bit-writer.js';
import {
  EOB as END_BLOCK,
  LEN_BASE,
  LEN_CODE,
  LEN_EXTRA,
  MATCH as MATCH_TYPE,
  NUM_LIT as LITERAL_COUNT,
  NUM_OFF as OFFSET_CODE_COUNT,
  OFF_BASE,
  OFF_CODE,
  OFF_EXTRA,
} from './deflate-tables.js';
import {
  CodeLengthCoder,
  extraBits,
  FIXED_LIT,
  FIXED_OFF,
  HUFF_OFF,
  HuffmanCode,
  NO_CODE,
  writeEOB,
  writeLiterals,
  writeStoredHeader,
  writeTokens,
} from './huffman-code.js';
import { wasmInstance } from './wasm.js';

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

const MAX_PREDEFINED_TOKENS = 250;
const LOG_NEW_TABLE_PENALTY = 7; // levels 1-6

const PRIME4 = 0x9e3779b1 | 0;
// prime7bytes = 0x00cf1bbc_dcbfa563, split for a 64-bit multiply done in 32-bit pieces.
const P7_HI = 0x00cf1bbc;
const P7_LO = 0xdcbfa563 | 0;
const P7_LO_H = 0xdcbf;
const P7_LO_L = 0xa563;

// ---------------------------------------------------------------------------------------
// Hashes (functions of the bytes at a position, so no 64-bit "current value" is carried)

// The history is read through a DataView: one little-endian 32-bit load where four byte loads
// and shifts were (V8 does not combine those), a fifth of the matcher's time.
function load32(v: DataView, i: number): number {
  return v.getInt32(i, true);
}

function hash4(v: DataView, i: number): number {
  return Math.imul(v.getInt32(i, true), PRIME4) >>> HASH_SHIFT;
}

/**
 * Slot of the 7-byte hash in the long table: the hash is the top 15 bits of
 * ((7 bytes at i) << 8) * prime7bytes mod 2^64 (computed without BigInt); the table
 * interleaves each hash's two entries (most recent, previous), so the slot is 2*hash.
 */
function hash7(v: DataView, i: number): number {
  return hash7w(v.getInt32(i, true), v, i);
}

/** hash7 when the first 4 bytes at i are already loaded as `w`. */
function hash7w(w: number, v: DataView, i: number): number {
  const xlo = w << 8; // low word of u<<8
  const xhi = v.getInt32(i + 3, true); // bytes 3..6
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
  n = 0;
  constructor(
    readonly tok = new Int32Array(MAX_STORE + 1),
    readonly litHist = new Int32Array(256),
    /** [0] counts EOB, [k] counts length code k-1 */
    readonly extraHist = new Int32Array(32),
    readonly offHist = new Int32Array(32),
  ) {}

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
          bits += LEN_EXTRA[(i - 1) & 31] * v;
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
          bits += OFF_EXTRA[i] * v;
        }
      }
    }
    return Math.trunc(shannon) + bits;
  }
}

// ---------------------------------------------------------------------------------------
// The matcher and token writer in WebAssembly (wasm/klauspost-match.c, built by
// scripts/build-wasm.sh): the same decisions as encode() and writeTokens(), 2x as fast; those
// are the fallback where it is missing.

interface MatchExports {
  memory: WebAssembly.Memory;
  encode(s0: number, end: number, cur: number, n: number): number;
  write_tokens(n: number): number;
  count_tokens(n: number): void;
  count_bytes(p: number, n: number): void;
  write_literals(p: number, n: number): number;
  go_lit_freq(): number;
  go_off_freq(): number;
  go_fast_encode(len: number, cur: number, prevLen: number): number;
  gf_src(): number;
  gf_prev(): number;
  gf_off(): number;
  gf_val(): number;
  hist(): number;
  table(): number;
  btable(): number;
  tok(): number;
  lit_hist(): number;
  extra_hist(): number;
  off_hist(): number;
  off_code(): number;
  len_code(): number;
  len_base(): number;
  off_base(): number;
  len_extra(): number;
  off_extra(): number;
  lit_codes(): number;
  lit_lens(): number;
  off_codes(): number;
  off_lens(): number;
  out(): number;
  bits(): number;
}

/**
 * The token writer of a matcher instance, for Go's block writer (go-huffman.ts): the tokens
 * it writes and counts are those in `tok`.
 */
export interface WasmTokenWriter {
  /** its token array (an encoder that fills this one spares a copy per block) */
  readonly tok: Int32Array;
  /** Go's symbol counts, which countTokens writes */
  readonly goLitFreq: Int32Array;
  readonly goOffFreq: Int32Array;
  countTokens(n: number): void;
  writeTokens(bw: BitWriter, n: number, lit: HuffmanCode, off: HuffmanCode): void;
  /** whether `a` lives in this memory (countBytes and writeLiterals take only such input) */
  owns(a: ArrayBufferView): boolean;
  /** Go's literal-only block: the bytes of `input` counted into goLitFreq (the rest zeroed) */
  countBytes(input: Uint8Array): void;
  /** writeLiterals (huffman-code.ts) of `input` */
  writeLiterals(bw: BitWriter, input: Uint8Array, lit: HuffmanCode): void;
  /** Go's level-1 matcher (go-flate.ts FastEngine.encode): its block, the block before, its table, and the matcher over them into `tok` */
  readonly goFast: { src: Uint8Array; prev: Uint8Array; off: Int32Array; val: Int32Array; encode(len: number, cur: number, prevLen: number): number };
}

/** A token writer, where the module is built and WebAssembly is on. */
export function wasmTokenWriter(): WasmTokenWriter | undefined {
  return Matcher.make();
}

/** A matcher instance: its own memory holding the history, tables, tokens and output. */
class Matcher implements WasmTokenWriter {
  readonly x: MatchExports;
  private readonly mem: ArrayBuffer; // (never grows: the C side allocates nothing)
  private readonly litCodes: Uint16Array;
  private readonly litLens: Uint8Array;
  private readonly offCodes: Uint16Array;
  private readonly offLens: Uint8Array;
  private readonly bits: Uint32Array;
  private readonly out: number;
  readonly tok: Int32Array;
  readonly goLitFreq: Int32Array;
  readonly goOffFreq: Int32Array;
  readonly goFast: WasmTokenWriter['goFast'];

  /** A matcher, where the module is built and WebAssembly is on. */
  static make(): Matcher | undefined {
    const x = wasmInstance<MatchExports>('klauspost-match');
    return x && new Matcher(x);
  }

  private constructor(x: MatchExports) {
    this.x = x;
    const mem = (this.mem = x.memory.buffer);
    this.litCodes = new Uint16Array(mem, x.lit_codes(), 288);
    this.litLens = new Uint8Array(mem, x.lit_lens(), 288);
    this.offCodes = new Uint16Array(mem, x.off_codes(), 32);
    this.offLens = new Uint8Array(mem, x.off_lens(), 32);
    this.bits = new Uint32Array(mem, x.bits(), 2);
    this.out = x.out();
    this.tok = new Int32Array(mem, x.tok(), MAX_STORE + 1);
    this.goLitFreq = new Int32Array(mem, x.go_lit_freq(), LITERAL_COUNT);
    this.goOffFreq = new Int32Array(mem, x.go_off_freq(), OFFSET_CODE_COUNT);
    this.goFast = {
      src: new Uint8Array(mem, x.gf_src(), MAX_STORE),
      prev: new Uint8Array(mem, x.gf_prev(), MAX_STORE),
      off: new Int32Array(mem, x.gf_off(), 1 << 14),
      val: new Int32Array(mem, x.gf_val(), 1 << 14),
      encode: (len, cur, prevLen) => x.go_fast_encode(len, cur, prevLen),
    };
    new Uint8Array(mem, x.off_code(), OFF_CODE.length).set(OFF_CODE);
    new Uint8Array(mem, x.len_code(), LEN_CODE.length).set(LEN_CODE);
    new Int32Array(mem, x.len_base(), 32).set(LEN_BASE);
    new Int32Array(mem, x.off_base(), 32).set(OFF_BASE);
    new Uint8Array(mem, x.len_extra(), LEN_EXTRA.length).set(LEN_EXTRA);
    new Uint8Array(mem, x.off_extra(), OFF_EXTRA.length).set(OFF_EXTRA);
  }

  i32(at: number, n: number): Int32Array<ArrayBuffer> {
    return new Int32Array(this.mem, at, n);
  }

  owns(a: ArrayBufferView): boolean {
    return a.buffer === this.mem;
  }

  countTokens(n: number): void {
    this.x.count_tokens(n);
  }

  countBytes(input: Uint8Array): void {
    this.x.count_bytes(input.byteOffset, input.length);
  }

  /** writeTokens (huffman-code.ts) of the first n tokens in this memory. */
  writeTokens(bw: BitWriter, n: number, lit: HuffmanCode, off: HuffmanCode): void {
    this.offCodes.set(off.codes);
    this.offLens.set(off.lens);
    this.write(bw, lit, () => this.x.write_tokens(n));
  }

  writeLiterals(bw: BitWriter, input: Uint8Array, lit: HuffmanCode): void {
    this.write(bw, lit, () => this.x.write_literals(input.byteOffset, input.length));
  }

  /** Runs a writer of the module with `lit` as the literal code. */
  private write(bw: BitWriter, lit: HuffmanCode, writer: () => number): void {
    this.litCodes.set(lit.codes);
    this.litLens.set(lit.lens);
    appendWasmBits(bw, this.mem, this.bits, this.out, writer);
  }
}

// ---------------------------------------------------------------------------------------
// Block writer: klauspost's block-type decisions. Codes, headers and token output are the
// ones shared with the Go encoder (huffman-code.ts); the decisions are not: klauspost keeps a
// dynamic table open across windows, estimates entropy to decide when to re-use it, and
// prefers fixed/stored with different thresholds, so this logic is its own.

class BlockWriter {
  readonly bw = new BitWriter(1 << 17);

  constructor(private readonly matcher?: Matcher) {}

  /** >0 while a dynamic block is open (its EOB not yet written): its estimated header size */
  private lastHeader = 0;
  /** the open table (if any) codes literals only */
  private lastHuffMan = false;
  private lit = new HuffmanCode(LITERAL_COUNT);
  private tmpLit = new HuffmanCode(LITERAL_COUNT);
  private readonly off = new HuffmanCode(OFFSET_CODE_COUNT);
  private readonly cg = new CodeLengthCoder();
  private readonly litFreq = new Int32Array(256 + 1 + 32);
  private readonly offFreq = new Int32Array(32);

  reset(): void {
    this.bw.pos = 0;
    this.bw.acc = 0;
    this.bw.nbits = 0;
    this.lastHeader = 0;
    this.lastHuffMan = false;
  }

  ensure(extra: number): void {
    this.bw.ensure(extra);
  }

  /** Output written so far; leaves pending bits in place. */
  take(): Uint8Array {
    return this.bw.take();
  }

  /** Close the open dynamic block, if any. */
  private closeBlock(): void {
    if (this.lastHeader > 0) {
      writeEOB(this.bw, this.lit);
      this.lastHeader = 0;
    }
  }

  /** Pad to a byte boundary, closing an open block first. */
  flush(): void {
    this.closeBlock();
    this.bw.align();
  }

  writeStoredHeader(length: number, eof: boolean): void {
    this.closeBlock();
    if (length === 0 && eof) {
      // An empty final block costs 10 bits as a fixed block instead of 5 stored bytes.
      this.writeFixedHeader(true);
      this.bw.writeBits(0, 7);
      this.bw.align();
      return;
    }
    writeStoredHeader(this.bw, length, eof);
  }

  private writeStored(input: Uint8Array, eof: boolean): void {
    this.writeStoredHeader(input.length, eof);
    this.bw.writeBytes(input);
  }

  writeStoredBlock(input: Uint8Array): void {
    this.ensure(input.length + 8);
    this.writeStored(input, false);
  }

  private writeFixedHeader(eof: boolean): void {
    this.closeBlock();
    this.bw.writeBits(eof ? 3 : 2, 3);
  }

  /** Stored if `stored`, else the tokens as a fixed block (either way the open table is closed). */
  private writeStoredOrFixed(t: Tokens, eof: boolean, input: Uint8Array, sync: boolean, stored: boolean): void {
    if (stored) {
      this.writeStored(input, eof);
      return;
    }
    this.writeFixedHeader(eof);
    if (!sync) t.addEOB();
    this.writeTokens(t, FIXED_LIT, FIXED_OFF);
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

  private fixedSize(extra: number): number {
    return (
      3 +
      FIXED_LIT.bitLength(this.litFreq, LITERAL_COUNT) +
      FIXED_OFF.bitLength(this.offFreq, OFFSET_CODE_COUNT) +
      extra
    );
  }

  /** Encode tokens; a trailing EOB token is written after the rest with the literal table. */
  private writeTokens(t: Tokens, le: HuffmanCode, oe: HuffmanCode): void {
    let n = t.n;
    if (n === 0) return;
    const deferEOB = t.tok[n - 1] === END_BLOCK;
    if (deferEOB) n--;
    if (this.matcher?.owns(t.tok)) this.matcher.writeTokens(this.bw, n, le, oe);
    else writeTokens(this.bw, t.tok, n, le, oe);
    if (deferEOB) writeEOB(this.bw, le);
  }

  /** Tokens with a dynamic (possibly re-used), fixed or stored block, whichever is estimated smallest. */
  writeBlockDynamic(t: Tokens, eof: boolean, input: Uint8Array, sync: boolean): void {
    this.ensure(2 * input.length + 1024);
    sync = sync || eof;
    if (sync) t.addEOB();
    // A literal-only table cannot carry matches, and the last block must be marked final.
    if ((this.lastHuffMan || eof) && this.lastHeader > 0) {
      this.closeBlock();
      this.lastHuffMan = false;
    }
    if (this.lastHeader > 0 && !this.canReuse(t)) this.closeBlock();
    const [numLit, numOff] = this.indexTokens(t, !sync);
    const storedBits = (input.length + 5) * 8; // input always fits one stored block here
    const extra = extraBits(this.litFreq, LITERAL_COUNT, this.offFreq, OFFSET_CODE_COUNT);
    let size = 0;

    if (this.lastHeader > 0) {
      // Re-use the open table unless a fresh one (estimated from entropy plus a penalty) wins.
      let newSize = this.lastHeader + t.estimatedBits();
      newSize += this.lit.lens[END_BLOCK] + (newSize >> LOG_NEW_TABLE_PENALTY);
      const reuseSize =
        this.lit.bitLength(this.litFreq, LITERAL_COUNT) + this.off.bitLength(this.offFreq, OFFSET_CODE_COUNT) + extra;
      if (newSize < reuseSize) {
        this.closeBlock();
        size = newSize;
      } else {
        size = reuseSize;
      }
      // Upstream compares stored with this size even when fixed wins (unlike below).
      const fixed = t.n < MAX_PREDEFINED_TOKENS && this.fixedSize(extra) + 7 < size;
      if (fixed || storedBits <= size) {
        this.writeStoredOrFixed(t, eof, input, sync, storedBits <= size);
        return;
      }
    }

    if (this.lastHeader === 0) {
      this.litFreq[END_BLOCK] = 1;
      this.lit.generate(this.litFreq, LITERAL_COUNT, 15);
      this.off.generate(this.offFreq, OFFSET_CODE_COUNT, 15);
      this.cg.build(numLit, numOff, this.lit, this.off);
      size =
        this.cg.headerBits() +
        this.lit.bitLength(this.litFreq, LITERAL_COUNT) +
        this.off.bitLength(this.offFreq, OFFSET_CODE_COUNT) +
        extra;
      const fixedSize = this.fixedSize(extra);
      const fixed = t.n < MAX_PREDEFINED_TOKENS && fixedSize <= size;
      if (fixed) size = fixedSize;
      if (fixed || storedBits <= size) {
        this.writeStoredOrFixed(t, eof, input, sync, storedBits <= size);
        return;
      }
      this.cg.writeHeader(this.bw, numLit, numOff, eof);
      if (!sync) this.lastHeader = this.cg.headerBits();
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
    if (estBits < NO_CODE) {
      estBits += this.lastHeader;
      if (this.lastHeader === 0) estBits += 70 * 8; // guessed header size
      estBits += estBits >> LOG_NEW_TABLE_PENALTY;
    }
    if (storedBits <= estBits) {
      this.writeStored(input, eof);
      return;
    }
    if (this.lastHeader > 0 && estBits < this.lit.canReuseBits(lf, 256)) this.closeBlock();
    if (this.lastHeader === 0) {
      const t = this.lit;
      this.lit = this.tmpLit;
      this.tmpLit = t;
      this.cg.build(END_BLOCK + 1, 1, this.lit, HUFF_OFF);
      this.cg.writeHeader(this.bw, END_BLOCK + 1, 1, eof);
      this.lastHuffMan = true;
      this.lastHeader = this.cg.headerBits();
    }
    writeLiterals(this.bw, input, this.lit);
    if (eof || sync) {
      writeEOB(this.bw, this.lit);
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
  private readonly tokens: Tokens;
  private readonly bw: BlockWriter;

  // Matcher state. Table entries are positions in `hist` plus `cur`, so sliding the
  // history only moves `cur`; entries further back than the window simply fail the
  // distance check.
  private readonly wasm = Matcher.make();
  private readonly hist: Uint8Array;
  private readonly view: DataView;
  private histLen = 0;
  private cur = MAX_STORE;
  private readonly table: Int32Array;
  /** long-hash table: [2h] most recent entry, [2h+1] the one before */
  private readonly bTable: Int32Array;

  constructor() {
    const m = this.wasm;
    this.bw = new BlockWriter(m);
    if (m) {
      const x = m.x;
      this.hist = new Uint8Array(x.memory.buffer, x.hist(), ALLOC_HISTORY);
      this.table = m.i32(x.table(), TABLE_SIZE);
      this.bTable = m.i32(x.btable(), 2 * TABLE_SIZE);
      this.tokens = new Tokens(m.i32(x.tok(), MAX_STORE + 1), m.i32(x.lit_hist(), 256), m.i32(x.extra_hist(), 32), m.i32(x.off_hist(), 32));
    } else {
      this.hist = new Uint8Array(ALLOC_HISTORY);
      this.table = new Int32Array(TABLE_SIZE);
      this.bTable = new Int32Array(2 * TABLE_SIZE);
      this.tokens = new Tokens();
    }
    this.view = new DataView(this.hist.buffer, this.hist.byteOffset, this.hist.byteLength);
  }

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
    return this.bw.take();
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
    if (this.wasm) {
      this.tokens.n = this.wasm.x.encode(s0, this.histLen, this.cur, this.tokens.n);
      return;
    }

    const src = this.hist;
    const v = this.view;
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
    let hS = hash4(v, s);
    let hL = hash7(v, s);

    main: for (;;) {
      let nextS = s;
      let l = 0;
      let tp = 0; // match source position
      let cv = load32(v, s);
      for (;;) {
        s = nextS;
        // Probe less densely the longer we go without a match.
        nextS = s + 1 + ((s - nextEmit) >> 6);
        if (nextS > sLimit) break main;
        const sCand = table[hS];
        const lCur = bt[hL];
        const lPrev = bt[hL + 1];
        const next = load32(v, nextS);
        table[hS] = s + cur;
        bt[hL + 1] = lCur;
        bt[hL] = s + cur;
        const nhS = Math.imul(next, PRIME4) >>> HASH_SHIFT;
        const nhL = hash7w(next, v, nextS);

        // Long (7-byte hash) candidates first, the most recent one, then the one before.
        tp = lCur - cur;
        if (s - tp < MAX_MATCH_OFFSET) {
          if (cv === load32(v, tp)) {
            table[nhS] = nextS + cur;
            bt[nhL + 1] = bt[nhL];
            bt[nhL] = nextS + cur;
            const t2 = lPrev - cur;
            if (s - t2 < MAX_MATCH_OFFSET && cv === load32(v, t2)) {
              l = matchLen(v, s + 4, tp + 4, Math.min(s + MAX_MATCH_LENGTH, end)) + 4;
              const ml = matchLen(v, s + 4, t2 + 4, Math.min(s + MAX_MATCH_LENGTH, end)) + 4;
              if (ml > l) {
                tp = t2;
                l = ml;
              }
            }
            break;
          }
          tp = lPrev - cur;
          if (s - tp < MAX_MATCH_OFFSET && cv === load32(v, tp)) {
            table[nhS] = nextS + cur;
            bt[nhL + 1] = bt[nhL];
            bt[nhL] = nextS + cur;
            break;
          }
        }

        // Short (4-byte hash) candidate; if it hits, see whether a long match at nextS beats it.
        tp = sCand - cur;
        if (s - tp < MAX_MATCH_OFFSET && cv === load32(v, tp)) {
          l = matchLen(v, s + 4, tp + 4, Math.min(s + MAX_MATCH_LENGTH, end)) + 4;
          const c2 = bt[nhL];
          const p2 = bt[nhL + 1];
          table[nhS] = nextS + cur;
          bt[nhL + 1] = c2;
          bt[nhL] = nextS + cur;
          let t2 = c2 - cur;
          if (nextS - t2 < MAX_MATCH_OFFSET) {
            // the older entry is only tried when the newer one does not beat l
            let ml = matchAt(v, nextS, t2, next, end);
            if (ml <= l) {
              t2 = p2 - cur;
              ml = matchAt(v, nextS, t2, next, end);
            }
            if (ml > l) {
              tp = t2;
              s = nextS;
              l = ml;
            }
          }
          break;
        }
        cv = next;
        hS = nhS;
        hL = nhL;
      }

      // Extend: lengths found above are capped at 258 unless measured without a cap.
      if (l === 0) l = matchLen(v, s + 4, tp + 4, end) + 4;
      else if (l === MAX_MATCH_LENGTH) l += matchLen(v, s + l, tp + l, end);

      // A short match may be beaten by one that ends where this one ends (allowing the
      // first two bytes to differ; backward extension below recovers them if they match).
      const sAt = s + l;
      if (l < 30 && sAt < sLimit) {
        const t2 = bt[hash7(v, sAt)] - cur - l + 2;
        const s2 = s + 2;
        const off = s2 - t2;
        if (t2 >= 0 && off < MAX_MATCH_OFFSET && off > 0) {
          const l2 = matchLen(v, s2, t2, end);
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
      const oc = OFF_CODE[xoff];
      const offBits = MATCH_TYPE | (oc << 16) | xoff;
      for (let rest = l; rest > 0; ) {
        let xl = rest;
        if (xl > MAX_MATCH_LENGTH) xl = xl > MAX_MATCH_LENGTH + 3 ? MAX_MATCH_LENGTH : MAX_MATCH_LENGTH - 3;
        rest -= xl;
        xl -= 3;
        t.extraHist[LEN_CODE[xl] + 1]++;
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
        table[hash4(v, i)] = i + cur;
        let h = hash7(v, i);
        bt[h + 1] = bt[h];
        bt[h] = i + cur;
        h = hash7(v, i + 1);
        bt[h + 1] = bt[h];
        bt[h] = i + 1 + cur;
        table[hash4(v, i + 2)] = i + 2 + cur;
        for (i += 4; i < s - 1; i += 3) {
          h = hash7(v, i);
          bt[h + 1] = bt[h];
          bt[h] = i + cur;
          table[hash4(v, i + 1)] = i + 1 + cur;
        }
      }
      // And the two positions just before the next probe.
      table[hash4(v, s - 1)] = s - 1 + cur;
      const h = hash7(v, s - 1);
      bt[h + 1] = bt[h];
      bt[h] = s - 1 + cur;
      hS = hash4(v, s);
      hL = hash7(v, s);
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

/** Length (capped at 258) of the match at s against t, whose first 4 bytes are `first4`; 0 if out of reach or they differ. */
function matchAt(v: DataView, s: number, t: number, first4: number, end: number): number {
  if (s - t >= MAX_MATCH_OFFSET || load32(v, t) !== first4) return 0;
  return matchLen(v, s + 4, t + 4, Math.min(s + MAX_MATCH_LENGTH, end)) + 4;
}

/** Number of equal bytes at a and b (a > b), not looking at or beyond `limit` (for a). */
function matchLen(v: DataView, a: number, b: number, limit: number): number {
  const start = a;
  while (a + 4 <= limit && v.getInt32(a, true) === v.getInt32(b, true)) {
    a += 4;
    b += 4;
  }
  while (a < limit && v.getUint8(a) === v.getUint8(b)) {
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
