// The Huffman side of zlib's trees.c, which GNU gzip 1.12's trees.c shares line for line in
// everything that shapes the bytes, so both encoders use this one copy:
//  - trees from a heap whose ties go to the shallower subtree (depth), lengths capped at 15
//    (7 for the code-length code) by the overflow fix-up that moves leaves under shorter ones;
//  - code lengths run-length coded by scan_tree/send_tree (codes 16-18), here one walk;
//  - each block written stored when that is no longer than the fixed/dynamic coding and its
//    bytes are still in the window, fixed when no longer than dynamic, else dynamic, all by
//    byte-rounded exact sizes (opt_len, static_len).
// When a block ends, and how matches are found, differ between the two and stay with each.

import type { BitWriter } from './bit-writer.js';
import type { MatchInstance } from './zlib-window.js';
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
  OFF_CODE,
  OFF_EXTRA,
  reverseBits,
} from './deflate-tables.js';

const MAX_BITS = 15;
const MAX_BL_BITS = 7;
const HEAP_SIZE = 2 * NUM_LIT + 1;
const REP_3_6 = 16;
const REPZ_3_10 = 17;
const REPZ_11_138 = 18;
const EXTRA_BL = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7);

/**
 * One Huffman tree as trees.c builds it: leaves 0..elems-1, internal nodes above. trees.c
 * overlays freq/code and dad/len in one struct; separate arrays behave the same here.
 */
class Tree {
  readonly freq: Int32Array;
  readonly len: Uint16Array;
  readonly code: Uint16Array;
  readonly dad: Int32Array;
  maxCode = 0;
  constructor(
    readonly elems: number,
    readonly maxLength: number,
    readonly extra: Uint8Array,
    readonly extraBase: number,
    /** the fixed-code lengths, for static_len; null for the code-length tree */
    readonly staticLen: Uint16Array | null,
    /** where the counts live (2 * elems + 1 of them), if not in an array of its own */
    freq?: Int32Array,
  ) {
    const size = 2 * elems + 1;
    this.freq = freq ?? new Int32Array(size);
    this.len = new Uint16Array(size);
    this.code = new Uint16Array(size);
    this.dad = new Int32Array(size);
  }
}

/** gen_codes: canonical codes (bit-reversed for the LSB-first stream) from lengths. */
function genCodes(len: Uint16Array, code: Uint16Array, maxCode: number, blCount: Int32Array): void {
  const next = new Int32Array(MAX_BITS + 1);
  let c = 0;
  for (let bits = 1; bits <= MAX_BITS; bits++) {
    c = ((c + blCount[bits - 1]) << 1) & 0xffff;
    next[bits] = c;
  }
  for (let n = 0; n <= maxCode; n++) {
    const l = len[n];
    if (l !== 0) code[n] = reverseBits(next[l]++, l);
  }
}

// The fixed codes (RFC 1951 3.2.6), built as gen_codes does over all 288 literal/length symbols.
const STATIC_LLEN = new Uint16Array(288);
const STATIC_LCODE = new Uint16Array(288);
const STATIC_DLEN = new Uint16Array(NUM_OFF).fill(5);
const STATIC_DCODE = new Uint16Array(NUM_OFF);
{
  const count = new Int32Array(MAX_BITS + 1);
  for (let n = 0; n < 288; n++) {
    const l = n <= 143 ? 8 : n <= 255 ? 9 : n <= 279 ? 7 : 8;
    STATIC_LLEN[n] = l;
    count[l]++;
  }
  genCodes(STATIC_LLEN, STATIC_LCODE, 287, count);
  for (let n = 0; n < NUM_OFF; n++) STATIC_DCODE[n] = reverseBits(n, 5);
}

/**
 * The per-block symbol statistics and tree building of trees.c. The encoder counts symbols
 * into ltree.freq/dtree.freq itself (in its hot loop) and keeps the symbols; writeBlock turns
 * them into a block and starts the next one.
 */
export class ZlibTrees {
  readonly ltree: Tree;
  readonly dtree: Tree;
  private readonly bltree = new Tree(NUM_CODEGEN, MAX_BL_BITS, EXTRA_BL, 0, null);
  private readonly heap = new Int32Array(HEAP_SIZE);
  private readonly depth = new Uint8Array(HEAP_SIZE);
  private readonly blCount = new Int32Array(MAX_BITS + 1);
  private heapLen = 0;
  private heapMax = 0;
  /** bit length of the block with dynamic trees (including the trees) */
  private optLen = 0;
  /** bit length of the block with the fixed trees */
  private staticLen = 0;

  /**
   * `wasm`: the encoder's WebAssembly matcher, where its symbols and their counts live; the
   * trees are then built on its counts and the symbols written there.
   */
  constructor(private readonly wasm?: MatchInstance) {
    this.ltree = new Tree(NUM_LIT, MAX_BITS, LEN_EXTRA, 257, STATIC_LLEN, wasm?.freqs.lit);
    this.dtree = new Tree(NUM_OFF, MAX_BITS, OFF_EXTRA, 0, STATIC_DLEN, wasm?.freqs.off);
    this.initBlock();
  }

  /** init_block: no symbols counted yet (but the end-of-block one). */
  private initBlock(): void {
    this.ltree.freq.fill(0, 0, NUM_LIT);
    this.dtree.freq.fill(0, 0, NUM_OFF);
    this.bltree.freq.fill(0, 0, NUM_CODEGEN);
    this.ltree.freq[EOB] = 1;
    this.optLen = 0;
    this.staticLen = 0;
  }

  /**
   * flush_block: write the block of the n symbols in lc/dist (dist 0: literal lc, else a match
   * of length lc + 3), whose input is window[blockStart, blockStart + storedLen) unless
   * blockStart < 0 (slid out, so it cannot be stored). `last` sets BFINAL and byte-aligns.
   */
  writeBlock(
    bw: BitWriter,
    window: Uint8Array,
    blockStart: number,
    storedLen: number,
    lc: Uint8Array,
    dist: Uint16Array,
    n: number,
    last: boolean,
  ): void {
    this.buildTree(this.ltree);
    this.buildTree(this.dtree);
    const maxBlindex = this.buildBlTree();
    let optLenb = (this.optLen + 3 + 7) >>> 3;
    const staticLenb = (this.staticLen + 3 + 7) >>> 3;
    if (staticLenb <= optLenb) optLenb = staticLenb;
    const lastBit = last ? 1 : 0;
    if (storedLen + 4 <= optLenb && blockStart >= 0) {
      bw.ensure(storedLen + 16);
      bw.writeBits(lastBit, 3);
      bw.align();
      bw.writeBits(storedLen & 0xffff, 16);
      bw.writeBits(~storedLen & 0xffff, 16);
      bw.writeBytes(window.subarray(blockStart, blockStart + storedLen));
    } else if (staticLenb === optLenb) {
      bw.ensure(staticLenb + 16);
      bw.writeBits(2 + lastBit, 3);
      this.compressBlock(bw, lc, dist, n, STATIC_LLEN, STATIC_LCODE, STATIC_DLEN, STATIC_DCODE);
    } else {
      bw.ensure(optLenb + 16);
      bw.writeBits(4 + lastBit, 3);
      const lcodes = this.ltree.maxCode + 1;
      const dcodes = this.dtree.maxCode + 1;
      const blcodes = maxBlindex + 1;
      bw.writeBits(lcodes - 257, 5);
      bw.writeBits(dcodes - 1, 5);
      bw.writeBits(blcodes - 4, 4);
      for (let rank = 0; rank < blcodes; rank++) bw.writeBits(this.bltree.len[CODEGEN_ORDER[rank]], 3);
      this.walkTree(this.ltree, bw);
      this.walkTree(this.dtree, bw);
      this.compressBlock(bw, lc, dist, n, this.ltree.len, this.ltree.code, this.dtree.len, this.dtree.code);
    }
    this.initBlock();
    if (last) bw.align();
  }

  /** compress_block, in WebAssembly when the symbols are in its memory */
  private compressBlock(bw: BitWriter, lc: Uint8Array, dist: Uint16Array, n: number, llen: Uint16Array, lcode: Uint16Array, dlen: Uint16Array, dcode: Uint16Array): void {
    if (this.wasm?.symLc === lc && this.wasm.symDist === dist) this.wasm.compressBlock(bw, n, llen, lcode, dlen, dcode);
    else compressBlock(bw, lc, dist, n, llen, lcode, dlen, dcode);
  }

  private pqdownheap(freq: Int32Array, k: number): void {
    const heap = this.heap;
    const depth = this.depth;
    const heapLen = this.heapLen;
    const v = heap[k];
    let j = k << 1;
    while (j <= heapLen) {
      // the smaller child; equal frequencies go to the shallower subtree
      if (j < heapLen) {
        const a = heap[j + 1];
        const b = heap[j];
        if (freq[a] < freq[b] || (freq[a] === freq[b] && depth[a] <= depth[b])) j++;
      }
      const h = heap[j];
      if (freq[v] < freq[h] || (freq[v] === freq[h] && depth[v] <= depth[h])) break;
      heap[k] = h;
      k = j;
      j <<= 1;
    }
    heap[k] = v;
  }

  /** gen_bitlen: code lengths from the built tree, capped at maxLength; updates optLen/staticLen. */
  private genBitlen(t: Tree): void {
    const { len, dad, freq, extra, extraBase, staticLen, maxLength, maxCode } = t;
    const heap = this.heap;
    const blCount = this.blCount;
    blCount.fill(0);
    let overflow = 0;
    len[heap[this.heapMax]] = 0; // root
    let h: number;
    for (h = this.heapMax + 1; h < HEAP_SIZE; h++) {
      const n = heap[h];
      let bits = len[dad[n]] + 1;
      if (bits > maxLength) {
        bits = maxLength;
        overflow++;
      }
      len[n] = bits;
      if (n > maxCode) continue; // internal node
      blCount[bits]++;
      const xbits = n >= extraBase ? extra[n - extraBase] : 0;
      const f = freq[n];
      this.optLen += f * (bits + xbits);
      if (staticLen) this.staticLen += f * (staticLen[n] + xbits);
    }
    if (overflow === 0) return;
    // Move overflowing leaves up under a shorter leaf, two at a time, then hand the lengths
    // out again in order of frequency.
    do {
      let bits = maxLength - 1;
      while (blCount[bits] === 0) bits--;
      blCount[bits]--;
      blCount[bits + 1] += 2;
      blCount[maxLength]--;
      overflow -= 2;
    } while (overflow > 0);
    for (let bits = maxLength; bits !== 0; bits--) {
      let n = blCount[bits];
      while (n !== 0) {
        const m = heap[--h];
        if (m > maxCode) continue;
        if (len[m] !== bits) {
          this.optLen += (bits - len[m]) * freq[m];
          len[m] = bits;
        }
        n--;
      }
    }
  }

  /** build_tree: Huffman code lengths and codes for t; adds its cost to optLen/staticLen. */
  private buildTree(t: Tree): void {
    const { freq, len, dad, elems, staticLen } = t;
    const heap = this.heap;
    const depth = this.depth;
    this.heapLen = 0;
    this.heapMax = HEAP_SIZE;
    let maxCode = -1;
    for (let n = 0; n < elems; n++) {
      if (freq[n] !== 0) {
        heap[++this.heapLen] = maxCode = n;
        depth[n] = 0;
      } else {
        len[n] = 0;
      }
    }
    // at least two codes, so that every code has at least one bit
    while (this.heapLen < 2) {
      const node = (heap[++this.heapLen] = maxCode < 2 ? ++maxCode : 0);
      freq[node] = 1;
      depth[node] = 0;
      this.optLen--;
      if (staticLen) this.staticLen -= staticLen[node];
    }
    t.maxCode = maxCode;
    for (let n = this.heapLen >> 1; n >= 1; n--) this.pqdownheap(freq, n);
    let node = elems;
    do {
      const n = heap[1];
      heap[1] = heap[this.heapLen--];
      this.pqdownheap(freq, 1);
      const m = heap[1];
      heap[--this.heapMax] = n;
      heap[--this.heapMax] = m;
      freq[node] = freq[n] + freq[m];
      depth[node] = (depth[n] >= depth[m] ? depth[n] : depth[m]) + 1;
      dad[n] = dad[m] = node;
      heap[1] = node++;
      this.pqdownheap(freq, 1);
    } while (this.heapLen >= 2);
    heap[--this.heapMax] = heap[1];
    this.genBitlen(t);
    genCodes(len, t.code, maxCode, this.blCount);
  }

  /**
   * scan_tree (bw null: count into bltree.freq the code-length symbols that sending t takes)
   * and send_tree (write them with the code-length code): the same run-length walk over t's
   * lengths, with repeat codes 16 (previous length 3-6 times) and 17/18 (zeros, 3-10/11-138).
   */
  private walkTree(t: Tree, bw: BitWriter | null): void {
    const len = t.len;
    const maxCode = t.maxCode;
    let prevlen = -1;
    let nextlen = len[0];
    let count = 0;
    let maxCount = 7;
    let minCount = 4;
    if (nextlen === 0) {
      maxCount = 138;
      minCount = 3;
    }
    len[maxCode + 1] = 0xffff; // guard
    for (let n = 0; n <= maxCode; n++) {
      const curlen = nextlen;
      nextlen = len[n + 1];
      if (++count < maxCount && curlen === nextlen) continue;
      if (count < minCount) {
        do this.blSymbol(bw, curlen);
        while (--count !== 0);
      } else if (curlen !== 0) {
        if (curlen !== prevlen) {
          this.blSymbol(bw, curlen);
          count--;
        }
        this.blSymbol(bw, REP_3_6);
        bw?.writeBits(count - 3, 2);
      } else if (count <= 10) {
        this.blSymbol(bw, REPZ_3_10);
        bw?.writeBits(count - 3, 3);
      } else {
        this.blSymbol(bw, REPZ_11_138);
        bw?.writeBits(count - 11, 7);
      }
      count = 0;
      prevlen = curlen;
      if (nextlen === 0) {
        maxCount = 138;
        minCount = 3;
      } else if (curlen === nextlen) {
        maxCount = 6;
        minCount = 3;
      } else {
        maxCount = 7;
        minCount = 4;
      }
    }
  }

  /** One code-length symbol: written (bw) or counted (null). */
  private blSymbol(bw: BitWriter | null, s: number): void {
    if (bw === null) this.bltree.freq[s]++;
    else bw.writeBits(this.bltree.code[s], this.bltree.len[s]);
  }

  /** build_bl_tree: the code-length tree; returns the index in CODEGEN_ORDER of the last length sent. */
  private buildBlTree(): number {
    this.walkTree(this.ltree, null);
    this.walkTree(this.dtree, null);
    this.buildTree(this.bltree);
    let maxBlindex: number;
    for (maxBlindex = NUM_CODEGEN - 1; maxBlindex >= 3; maxBlindex--) {
      if (this.bltree.len[CODEGEN_ORDER[maxBlindex]] !== 0) break;
    }
    this.optLen += 3 * (maxBlindex + 1) + 5 + 5 + 4;
    return maxBlindex;
  }
}

/** compress_block: the block's symbols with the given codes, then end-of-block. */
function compressBlock(
  bw: BitWriter,
  lcs: Uint8Array,
  dists: Uint16Array,
  n: number,
  llen: Uint16Array,
  lcode: Uint16Array,
  dlen: Uint16Array,
  dcode: Uint16Array,
): void {
  for (let i = 0; i < n; i++) {
    let dist = dists[i];
    const lc = lcs[i];
    if (dist === 0) {
      bw.writeBits(lcode[lc], llen[lc]);
      continue;
    }
    let code = LEN_CODE[lc];
    bw.writeBits(lcode[code + 257], llen[code + 257]);
    let extra = LEN_EXTRA[code];
    if (extra !== 0) bw.writeBits(lc - LEN_BASE[code], extra);
    dist--;
    code = OFF_CODE[dist];
    bw.writeBits(dcode[code], dlen[code]);
    extra = OFF_EXTRA[code];
    if (extra !== 0) bw.writeBits(dist - OFF_BASE[code], extra);
  }
  bw.writeBits(lcode[EOB], llen[EOB]);
}
