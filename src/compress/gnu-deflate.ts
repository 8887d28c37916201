// A DEFLATE encoder whose output is bit-identical to GNU gzip 1.12's own deflate.c/trees.c
// (not zlib's, though they share an ancestor). GNU gzip's choices that shape the bytes:
//  - a 64 KiB window filled by reads of exactly the free space; when the scan position passes
//    WSIZE + MAX_DIST the upper half is copied down (the upper half keeps its stale bytes, and
//    longest_match may read them past the end of input, so we keep the very same buffer);
//  - 3-byte hash chains (15-bit rolling hash), position 0 doubles as "no entry";
//  - levels 1-3 greedy (deflate_fast), 4-9 lazy by one byte; length-3 matches farther than
//    4096 dropped in lazy mode; per-level good/lazy/nice/chain table;
//  - a block ends at 32767 tokens, or (level > 2) at every 4096th token when a rough estimate
//    says the block compresses better than 2:1 with few matches;
//  - each block is stored, fixed or dynamic by byte-rounded size estimates; stdin is never
//    "seekable", so the whole-file stored fallback never applies;
//  - zlib-style Huffman construction (heap with depth tie-break, overflow repair by moving
//    leaves); no trailing empty block.
// Input is fed as a regular file would be read (every read fills the free space), so output
// never depends on how callers chunk it. gzip reading a pipe (`tar czf`) can get short reads;
// that changes nothing except in one corner: a short read can make gzip slide its window with
// the scan position at exactly WSIZE + MAX_DIST instead of one step later, and if the hash
// head there is the position that slides to 0, that one match candidate is lost. We follow
// the regular-file behaviour.

import { BitWriter } from './bit-writer.js';
import {
  CODEGEN_ORDER,
  EOB,
  LEN_BASE,
  LEN_CODE,
  LEN_EXTRA,
  OFF_BASE,
  OFF_CODE,
  OFF_EXTRA,
  reverseBits,
} from './deflate-tables.js';

const WSIZE = 0x8000;
const WMASK = WSIZE - 1;
const WINDOW_SIZE = 2 * WSIZE;
const MIN_MATCH = 3;
const MAX_MATCH = 258;
const MIN_LOOKAHEAD = MAX_MATCH + MIN_MATCH + 1;
const MAX_DIST = WSIZE - MIN_LOOKAHEAD;
const HASH_BITS = 15;
const HASH_MASK = (1 << HASH_BITS) - 1;
const H_SHIFT = 5; // (HASH_BITS + MIN_MATCH - 1) / MIN_MATCH
const TOO_FAR = 4096;
const LIT_BUFSIZE = 0x8000;
const DIST_BUFSIZE = 0x8000;
const TAKE_AT = 64 * 1024;

// Huffman trees
const L_CODES = 286;
const D_CODES = 30;
const BL_CODES = 19;
const HEAP_SIZE = 2 * L_CODES + 1;
const MAX_BITS = 15;
const MAX_BL_BITS = 7;
const REP_3_6 = 16;
const REPZ_3_10 = 17;
const REPZ_11_138 = 18;
const BL_EXTRA = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7);

/** good, lazy, nice, chain per level (deflate.c's configuration_table) */
const CONFIG: ReadonlyArray<readonly [number, number, number, number]> = [
  [0, 0, 0, 0],
  [4, 4, 8, 4],
  [4, 5, 16, 8],
  [4, 6, 32, 32],
  [4, 4, 16, 16],
  [8, 16, 32, 32],
  [8, 16, 128, 128],
  [8, 32, 128, 256],
  [32, 128, 258, 1024],
  [32, 258, 258, 4096],
];

/** One Huffman tree in trees.c's shape: leaves 0..elems-1, internal nodes above. */
class Tree {
  readonly freq: Int32Array;
  readonly len: Int32Array;
  readonly code: Int32Array;
  readonly dad: Int32Array;
  maxCode = 0;
  constructor(
    size: number,
    readonly elems: number,
    readonly maxLength: number,
    readonly extra: Uint8Array,
    readonly extraBase: number,
    /** code lengths of the fixed tree, for the static-size estimate */
    readonly staticLen: Uint8Array | null,
  ) {
    this.freq = new Int32Array(size);
    this.len = new Int32Array(size);
    this.code = new Int32Array(size);
    this.dad = new Int32Array(size);
  }
}

// Fixed trees (RFC 1951 3.2.6), with codes built as gen_codes does over all 288 symbols.
const STATIC_LLEN = new Uint8Array(L_CODES + 2);
const STATIC_LCODE = new Int32Array(L_CODES + 2);
const STATIC_DLEN = new Uint8Array(D_CODES).fill(5);
const STATIC_DCODE = new Int32Array(D_CODES);
{
  const count = new Int32Array(MAX_BITS + 1);
  for (let n = 0; n < 288; n++) {
    const l = n <= 143 ? 8 : n <= 255 ? 9 : n <= 279 ? 7 : 8;
    STATIC_LLEN[n] = l;
    count[l]++;
  }
  genCodes(STATIC_LLEN, STATIC_LCODE, 287, count);
  for (let n = 0; n < D_CODES; n++) STATIC_DCODE[n] = reverseBits(n, 5);
}

/** Canonical codes (bit-reversed for the LSB-first stream) from lengths and their counts. */
function genCodes(len: ArrayLike<number>, code: Int32Array, maxCode: number, blCount: ArrayLike<number>): void {
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

export class GnuDeflateEncoder {
  private readonly level: number;
  private readonly goodMatch: number;
  private readonly maxLazy: number;
  private readonly niceMatch: number;
  private readonly maxChain: number;

  // matcher state (deflate.c)
  private readonly window = new Uint8Array(WINDOW_SIZE);
  private readonly prev = new Uint16Array(WSIZE);
  private readonly head = new Uint16Array(1 << HASH_BITS);
  private strstart = 0;
  private blockStart = 0;
  private lookahead = 0;
  private insH = 0;
  private matchStart = 0;
  private matchLength = MIN_MATCH - 1;
  private matchAvailable = false;
  private eofile = false;
  private started = false;
  private done = false;

  // input not yet in the window
  private pending: (Uint8Array | undefined)[] = [];
  private pendingHead = 0; // index of first unconsumed chunk
  private pendingOff = 0; // offset inside it
  private pendingLen = 0;
  private finishing = false;

  // block buffers (trees.c): per token the byte/length-3 and distance (0 = literal)
  private readonly lBuf = new Uint8Array(LIT_BUFSIZE);
  private readonly dBuf = new Uint16Array(LIT_BUFSIZE);
  private lastLit = 0;
  private lastDist = 0;
  private optLen = 0;
  private staticLen = 0;
  private readonly ltree = new Tree(HEAP_SIZE, L_CODES, MAX_BITS, LEN_EXTRA, 257, STATIC_LLEN);
  private readonly dtree = new Tree(2 * D_CODES + 1, D_CODES, MAX_BITS, OFF_EXTRA, 0, STATIC_DLEN);
  private readonly bltree = new Tree(2 * BL_CODES + 1, BL_CODES, MAX_BL_BITS, BL_EXTRA, 0, null);
  private readonly heap = new Int32Array(HEAP_SIZE);
  private readonly depth = new Uint8Array(HEAP_SIZE);
  private readonly blCount = new Int32Array(MAX_BITS + 1);
  private heapLen = 0;
  private heapMax = 0;

  private readonly bw = new BitWriter();

  constructor(level: number) {
    if (!Number.isInteger(level) || level < 1 || level > 9) throw new RangeError(`gnu-deflate: bad level ${level}`);
    this.level = level;
    [this.goodMatch, this.maxLazy, this.niceMatch, this.maxChain] = CONFIG[level];
    this.initBlock();
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finishing) throw new Error('gnu-deflate: push after finish');
    const out: Uint8Array[] = [];
    if (chunk.length === 0) return out;
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    this.run(out);
    if (this.bw.pos > 0) out.push(this.bw.take());
    return out;
  }

  finish(): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (this.finishing) return out;
    this.finishing = true;
    this.run(out);
    if (this.bw.pos > 0) out.push(this.bw.take());
    return out;
  }

  // ---------------------------------------------------------------- input

  /** Move up to n pending bytes into the window at `at`; returns how many. */
  private read(at: number, n: number): number {
    let got = 0;
    while (got < n && this.pendingLen > 0) {
      const c = this.pending[this.pendingHead]!;
      const take = Math.min(n - got, c.length - this.pendingOff);
      this.window.set(c.subarray(this.pendingOff, this.pendingOff + take), at + got);
      got += take;
      this.pendingLen -= take;
      this.pendingOff += take;
      if (this.pendingOff === c.length) {
        this.pending[this.pendingHead++] = undefined; // let the caller's chunk go
        this.pendingOff = 0;
      }
    }
    if (this.pendingHead > 64 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    return got;
  }

  /**
   * fill_window, but only when the read can be served as from a regular file (the whole free
   * space, or the rest of the input at the end). Returns false when more input is needed.
   */
  private fillWindow(): boolean {
    let more = WINDOW_SIZE - this.lookahead - this.strstart;
    const slide = this.strstart >= WSIZE + MAX_DIST;
    if (slide) more += WSIZE;
    if (this.pendingLen < more && !this.finishing) return false;
    if (slide) {
      const w = this.window;
      w.copyWithin(0, WSIZE, WINDOW_SIZE);
      this.matchStart -= WSIZE;
      this.strstart -= WSIZE;
      this.blockStart -= WSIZE;
      const head = this.head;
      // entries below WSIZE fall out of the window and become 0 ("none"); branch-free since
      // the outcome is data-dependent
      for (let n = 0; n < head.length; n++) {
        const t = head[n] - WSIZE;
        head[n] = t & ~(t >> 31);
      }
      const prev = this.prev;
      for (let n = 0; n < WSIZE; n++) {
        const t = prev[n] - WSIZE;
        prev[n] = t & ~(t >> 31);
      }
    }
    if (!this.eofile) {
      const at = this.strstart + this.lookahead;
      const n = this.read(at, more);
      if (n === 0) {
        this.eofile = true;
        // keep stale bytes out of the last hashes
        this.window[at] = 0;
        this.window[at + 1] = 0;
      } else {
        this.lookahead += n;
      }
    }
    return true;
  }

  /** lm_init's first read of a full window. Returns false when more input is needed. */
  private start(): boolean {
    if (this.pendingLen < WINDOW_SIZE && !this.finishing) return false;
    this.started = true;
    this.lookahead = this.read(0, WINDOW_SIZE);
    if (this.lookahead === 0) {
      this.eofile = true;
      return true;
    }
    // (with a full read the lookahead is ample; a short one means the input is complete)
    while (this.lookahead < MIN_LOOKAHEAD && !this.eofile) this.fillWindow();
    this.insH = ((this.window[0] << H_SHIFT) ^ this.window[1]) & HASH_MASK;
    return true;
  }

  private run(out: Uint8Array[]): void {
    if (this.done) return;
    if (!this.started && !this.start()) return;
    const complete = this.level <= 3 ? this.deflateFast(out) : this.deflateLazy(out);
    if (complete) this.done = true;
  }

  // ---------------------------------------------------------------- matching

  /** longest_match: best length found (at least bestLen), its start in this.matchStart. */
  private longestMatch(curMatch: number, strstart: number, bestLen: number): number {
    const w = this.window;
    const prev = this.prev;
    const nice = this.niceMatch;
    let chain = this.maxChain;
    const limit = strstart > MAX_DIST ? strstart - MAX_DIST : 0;
    const s0 = w[strstart];
    const s1 = w[strstart + 1];
    let scanEnd1 = w[strstart + bestLen - 1];
    let scanEnd = w[strstart + bestLen];
    const strend = strstart + MAX_MATCH;
    if (bestLen >= this.goodMatch) chain >>>= 2;
    do {
      const m = curMatch;
      if (w[m + bestLen] !== scanEnd || w[m + bestLen - 1] !== scanEnd1 || w[m] !== s0 || w[m + 1] !== s1) continue;
      // byte 2 is taken as equal (same hash); the match may run into stale bytes past the
      // input, which is why the caller clips it to the lookahead
      let scan = strstart + 3;
      let match = m + 3;
      while (scan < strend && w[scan] === w[match]) {
        scan++;
        match++;
      }
      // (gzip's unrolled loop yields the same: the first mismatch, at most MAX_MATCH)
      const len = scan - strstart;
      if (len > bestLen) {
        this.matchStart = m;
        bestLen = len;
        if (len >= nice) break;
        scanEnd1 = w[strstart + bestLen - 1];
        scanEnd = w[strstart + bestLen];
      }
    } while ((curMatch = prev[curMatch & WMASK]) > limit && --chain !== 0);
    return bestLen;
  }

  /** deflate_fast (levels 1-3). Returns true once the final block is out. */
  private deflateFast(out: Uint8Array[]): boolean {
    const w = this.window;
    const prev = this.prev;
    const head = this.head;
    const maxInsert = this.maxLazy;
    let strstart = this.strstart;
    let lookahead = this.lookahead;
    let insH = this.insH;
    let matchLength = this.matchLength;
    for (;;) {
      if (lookahead < MIN_LOOKAHEAD && !this.eofile) {
        this.strstart = strstart;
        this.lookahead = lookahead;
        this.insH = insH;
        this.matchLength = matchLength;
        if (!this.fillWindow()) return false;
        strstart = this.strstart;
        lookahead = this.lookahead;
        continue;
      }
      if (lookahead === 0) break;
      insH = ((insH << H_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
      const hashHead = head[insH];
      prev[strstart & WMASK] = hashHead;
      head[insH] = strstart;
      if (hashHead !== 0 && strstart - hashHead <= MAX_DIST && strstart <= WINDOW_SIZE - MIN_LOOKAHEAD) {
        matchLength = this.longestMatch(hashHead, strstart, MIN_MATCH - 1);
        if (matchLength > lookahead) matchLength = lookahead;
      }
      let flush: boolean;
      if (matchLength >= MIN_MATCH) {
        flush = this.tally(strstart - this.matchStart, matchLength - MIN_MATCH, strstart);
        lookahead -= matchLength;
        if (matchLength <= maxInsert) {
          matchLength--;
          do {
            strstart++;
            insH = ((insH << H_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
            prev[strstart & WMASK] = head[insH];
            head[insH] = strstart;
          } while (--matchLength !== 0);
          strstart++;
        } else {
          strstart += matchLength;
          matchLength = 0;
          insH = ((w[strstart] << H_SHIFT) ^ w[strstart + 1]) & HASH_MASK;
        }
      } else {
        flush = this.tally(0, w[strstart], strstart);
        lookahead--;
        strstart++;
      }
      if (flush) {
        this.flushBlock(strstart, false);
        this.blockStart = strstart;
        if (this.bw.pos >= TAKE_AT) out.push(this.bw.take());
      }
    }
    this.strstart = strstart;
    this.lookahead = lookahead;
    this.flushBlock(strstart, true);
    return true;
  }

  /** deflate (levels 4-9, lazy evaluation). Returns true once the final block is out. */
  private deflateLazy(out: Uint8Array[]): boolean {
    const w = this.window;
    const prev = this.prev;
    const head = this.head;
    const maxLazy = this.maxLazy;
    let strstart = this.strstart;
    let lookahead = this.lookahead;
    let insH = this.insH;
    let matchLength = this.matchLength;
    let matchAvailable = this.matchAvailable;
    for (;;) {
      if (lookahead < MIN_LOOKAHEAD && !this.eofile) {
        this.strstart = strstart;
        this.lookahead = lookahead;
        this.insH = insH;
        this.matchLength = matchLength;
        this.matchAvailable = matchAvailable;
        if (!this.fillWindow()) return false;
        strstart = this.strstart;
        lookahead = this.lookahead;
        continue;
      }
      if (lookahead === 0) break;
      insH = ((insH << H_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
      const hashHead = head[insH];
      prev[strstart & WMASK] = hashHead;
      head[insH] = strstart;

      let prevLength = matchLength;
      const prevMatch = this.matchStart;
      matchLength = MIN_MATCH - 1;
      if (
        hashHead !== 0 &&
        prevLength < maxLazy &&
        strstart - hashHead <= MAX_DIST &&
        strstart <= WINDOW_SIZE - MIN_LOOKAHEAD
      ) {
        matchLength = this.longestMatch(hashHead, strstart, prevLength);
        if (matchLength > lookahead) matchLength = lookahead;
        // (when nothing better turned up, matchStart is still prevMatch; the test is moot then)
        if (matchLength === MIN_MATCH && strstart - this.matchStart > TOO_FAR) matchLength--;
      }
      if (prevLength >= MIN_MATCH && matchLength <= prevLength) {
        // the match at the previous byte wins
        const flush = this.tally(strstart - 1 - prevMatch, prevLength - MIN_MATCH, strstart);
        lookahead -= prevLength - 1;
        prevLength -= 2;
        do {
          strstart++;
          insH = ((insH << H_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
          prev[strstart & WMASK] = head[insH];
          head[insH] = strstart;
        } while (--prevLength !== 0);
        matchAvailable = false;
        matchLength = MIN_MATCH - 1;
        strstart++;
        if (flush) {
          this.flushBlock(strstart, false);
          this.blockStart = strstart;
          if (this.bw.pos >= TAKE_AT) out.push(this.bw.take());
        }
      } else if (matchAvailable) {
        // the previous byte goes out as a literal (its match, if any, was beaten)
        if (this.tally(0, w[strstart - 1], strstart)) {
          this.flushBlock(strstart, false);
          this.blockStart = strstart;
          if (this.bw.pos >= TAKE_AT) out.push(this.bw.take());
        }
        strstart++;
        lookahead--;
      } else {
        matchAvailable = true;
        strstart++;
        lookahead--;
      }
    }
    if (matchAvailable) this.tally(0, w[strstart - 1], strstart);
    this.strstart = strstart;
    this.lookahead = lookahead;
    this.flushBlock(strstart, true);
    return true;
  }

  // ---------------------------------------------------------------- blocks (trees.c)

  private initBlock(): void {
    this.ltree.freq.fill(0, 0, L_CODES);
    this.dtree.freq.fill(0, 0, D_CODES);
    this.bltree.freq.fill(0, 0, BL_CODES);
    this.ltree.freq[EOB] = 1;
    this.optLen = 0;
    this.staticLen = 0;
    this.lastLit = 0;
    this.lastDist = 0;
  }

  /**
   * ct_tally: record a literal (dist 0, lc = byte) or a match (lc = length - 3). True when the
   * block should end here.
   */
  private tally(dist: number, lc: number, strstart: number): boolean {
    const i = this.lastLit++;
    this.lBuf[i] = lc;
    this.dBuf[i] = dist;
    if (dist === 0) {
      this.ltree.freq[lc]++;
    } else {
      this.ltree.freq[LEN_CODE[lc] + 257]++;
      this.dtree.freq[OFF_CODE[dist - 1]]++;
      this.lastDist++;
    }
    const lastLit = this.lastLit;
    if (this.level > 2 && (lastLit & 0xfff) === 0) {
      // a cheap upper bound on the block's size: 8 bits per token plus distance codes
      let outLength = lastLit * 8;
      const df = this.dtree.freq;
      for (let d = 0; d < D_CODES; d++) outLength += df[d] * (5 + OFF_EXTRA[d]);
      outLength = Math.floor(outLength / 8);
      const inLength = strstart - this.blockStart;
      if (this.lastDist < lastLit >>> 1 && outLength < Math.floor(inLength / 2)) return true;
    }
    return lastLit === LIT_BUFSIZE - 1 || this.lastDist === DIST_BUFSIZE;
  }

  private pqdownheap(freq: Int32Array, k: number): void {
    const heap = this.heap;
    const depth = this.depth;
    const heapLen = this.heapLen;
    const v = heap[k];
    let j = k << 1;
    while (j <= heapLen) {
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

  /** build_tree: Huffman code lengths and codes for t; adds its cost to optLen/staticLen. */
  private buildTree(t: Tree): void {
    const { freq, len, dad } = t;
    const heap = this.heap;
    const depth = this.depth;
    const stree = t.staticLen;
    let maxCode = -1;
    let node = t.elems;
    this.heapLen = 0;
    this.heapMax = HEAP_SIZE;
    for (let n = 0; n < t.elems; n++) {
      if (freq[n] !== 0) {
        heap[++this.heapLen] = maxCode = n;
        depth[n] = 0;
      } else {
        len[n] = 0;
      }
    }
    // at least two codes, so that every code has at least one bit
    while (this.heapLen < 2) {
      const nw = maxCode < 2 ? ++maxCode : 0;
      heap[++this.heapLen] = nw;
      freq[nw] = 1;
      depth[nw] = 0;
      this.optLen--;
      if (stree) this.staticLen -= stree[nw];
    }
    t.maxCode = maxCode;
    for (let n = this.heapLen >> 1; n >= 1; n--) this.pqdownheap(freq, n);
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

  /** gen_bitlen: lengths from the tree, capped at maxLength with gzip's repair. */
  private genBitlen(t: Tree): void {
    const { freq, len, dad, extra, extraBase, maxLength, maxCode } = t;
    const stree = t.staticLen;
    const heap = this.heap;
    const blCount = this.blCount;
    blCount.fill(0);
    let overflow = 0;
    len[heap[this.heapMax]] = 0;
    let h: number;
    for (h = this.heapMax + 1; h < HEAP_SIZE; h++) {
      const n = heap[h];
      let bits = len[dad[n]] + 1;
      if (bits > maxLength) {
        bits = maxLength;
        overflow++;
      }
      len[n] = bits;
      if (n > maxCode) continue;
      blCount[bits]++;
      const xbits = n >= extraBase ? extra[n - extraBase] : 0;
      const f = freq[n];
      this.optLen += f * (bits + xbits);
      if (stree) this.staticLen += f * (stree[n] + xbits);
    }
    if (overflow === 0) return;
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

  /** scan_tree: count the code-length codes needed to send t's lengths. */
  private scanTree(t: Tree): void {
    const len = t.len;
    const maxCode = t.maxCode;
    const blf = this.bltree.freq;
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
      else if (count < minCount) blf[curlen] += count;
      else if (curlen !== 0) {
        if (curlen !== prevlen) blf[curlen]++;
        blf[REP_3_6]++;
      } else if (count <= 10) blf[REPZ_3_10]++;
      else blf[REPZ_11_138]++;
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

  /** send_tree: write t's lengths with the code-length code (guard set by scanTree). */
  private sendTree(t: Tree, maxCode: number): void {
    const len = t.len;
    const bw = this.bw;
    const blLen = this.bltree.len;
    const blCode = this.bltree.code;
    let prevlen = -1;
    let nextlen = len[0];
    let count = 0;
    let maxCount = 7;
    let minCount = 4;
    if (nextlen === 0) {
      maxCount = 138;
      minCount = 3;
    }
    for (let n = 0; n <= maxCode; n++) {
      const curlen = nextlen;
      nextlen = len[n + 1];
      if (++count < maxCount && curlen === nextlen) continue;
      else if (count < minCount) {
        do bw.writeBits(blCode[curlen], blLen[curlen]);
        while (--count !== 0);
      } else if (curlen !== 0) {
        if (curlen !== prevlen) {
          bw.writeBits(blCode[curlen], blLen[curlen]);
          count--;
        }
        bw.writeBits(blCode[REP_3_6], blLen[REP_3_6]);
        bw.writeBits(count - 3, 2);
      } else if (count <= 10) {
        bw.writeBits(blCode[REPZ_3_10], blLen[REPZ_3_10]);
        bw.writeBits(count - 3, 3);
      } else {
        bw.writeBits(blCode[REPZ_11_138], blLen[REPZ_11_138]);
        bw.writeBits(count - 11, 7);
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

  /** flush_block: end the block [blockStart, strstart) as stored, fixed or dynamic. */
  private flushBlock(strstart: number, eof: boolean): void {
    const bw = this.bw;
    const last = eof ? 1 : 0;
    this.buildTree(this.ltree);
    this.buildTree(this.dtree);
    // build_bl_tree
    this.scanTree(this.ltree);
    this.scanTree(this.dtree);
    this.buildTree(this.bltree);
    let maxBlIndex: number;
    for (maxBlIndex = BL_CODES - 1; maxBlIndex >= 3; maxBlIndex--) {
      if (this.bltree.len[CODEGEN_ORDER[maxBlIndex]] !== 0) break;
    }
    this.optLen += 3 * (maxBlIndex + 1) + 5 + 5 + 4;

    let optLenb = Math.floor((this.optLen + 3 + 7) / 8);
    const staticLenb = Math.floor((this.staticLen + 3 + 7) / 8);
    if (staticLenb <= optLenb) optLenb = staticLenb;
    const storedLen = strstart - this.blockStart;
    bw.ensure(this.lastLit * 6 + 1024);
    if (storedLen + 4 <= optLenb && this.blockStart >= 0) {
      bw.writeBits(last, 3);
      bw.align();
      bw.writeBits(storedLen & 0xffff, 16);
      bw.writeBits(~storedLen & 0xffff, 16);
      bw.writeBytes(this.window.subarray(this.blockStart, this.blockStart + storedLen));
    } else if (staticLenb === optLenb) {
      bw.writeBits(2 + last, 3);
      this.compressBlock(STATIC_LLEN, STATIC_LCODE, STATIC_DLEN, STATIC_DCODE);
    } else {
      bw.writeBits(4 + last, 3);
      const lcodes = this.ltree.maxCode + 1;
      const dcodes = this.dtree.maxCode + 1;
      const blcodes = maxBlIndex + 1;
      bw.writeBits(lcodes - 257, 5);
      bw.writeBits(dcodes - 1, 5);
      bw.writeBits(blcodes - 4, 4);
      for (let r = 0; r < blcodes; r++) bw.writeBits(this.bltree.len[CODEGEN_ORDER[r]], 3);
      this.sendTree(this.ltree, lcodes - 1);
      this.sendTree(this.dtree, dcodes - 1);
      this.compressBlock(this.ltree.len, this.ltree.code, this.dtree.len, this.dtree.code);
    }
    this.initBlock();
    if (eof) bw.align();
  }

  /** compress_block: the block's tokens with the given codes, then end-of-block. */
  private compressBlock(llen: ArrayLike<number>, lcode: ArrayLike<number>, dlen: ArrayLike<number>, dcode: ArrayLike<number>): void {
    const bw = this.bw;
    const lBuf = this.lBuf;
    const dBuf = this.dBuf;
    const n = this.lastLit;
    for (let i = 0; i < n; i++) {
      const lc = lBuf[i];
      const dist = dBuf[i];
      if (dist === 0) {
        bw.writeBits(lcode[lc], llen[lc]);
      } else {
        const code = LEN_CODE[lc];
        bw.writeBits(lcode[code + 257], llen[code + 257]);
        const lx = LEN_EXTRA[code];
        if (lx !== 0) bw.writeBits(lc - LEN_BASE[code], lx);
        const d = dist - 1;
        const dc = OFF_CODE[d];
        bw.writeBits(dcode[dc], dlen[dc]);
        const dx = OFF_EXTRA[dc];
        if (dx !== 0) bw.writeBits(d - OFF_BASE[dc], dx);
      }
    }
    bw.writeBits(lcode[EOB], llen[EOB]);
  }
}
