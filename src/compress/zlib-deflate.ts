// A raw DEFLATE encoder whose output is bit-identical to zlib's deflate (madler/zlib 1.2.x, as
// Debian 12's zlib1g 1.2.13; Python's zlib/gzip and Java's Deflater/GZIPOutputStream use it)
// at levels 1-9 with windowBits 15, memLevel 8 and the default strategy. zlib's choices that
// shape the bytes, and which this follows:
//  - a 64 KiB window holding 32 KiB of history; it slides by 32 KiB once fewer than
//    MIN_LOOKAHEAD (262) bytes are left ahead and strstart has reached 64 KiB - 262, so
//    matches reach back at most 32 KiB - 262 and never to window index 0 (0 means "empty");
//  - hash chains over 3-byte prefixes, a rolling 15-bit hash (memLevel + 7), shift 5;
//  - levels 1-3 greedy (deflate_fast: short matches are inserted into the hash, long ones not),
//    4-9 lazy by one byte (deflate_slow: a 3-byte match further than 4096 back is dropped);
//  - match search limited by the level's chain/good/nice, and by the bytes ahead;
//  - a block every lit_bufsize - 1 = 16383 symbols (1.2.12 re-laid the symbol buffer out, but
//    the limit is the same as 1.2.11's last_lit == lit_bufsize - 1), written stored when that
//    is no longer than the fixed/dynamic coding (and its bytes are still in the window), fixed
//    when no longer than dynamic, else dynamic;
//  - Huffman trees from a heap whose ties go to the shallower subtree, lengths capped at 15
//    (7 for the code-length code) by zlib's overflow fix-up, code lengths run-length coded;
//  - Z_FINISH: the last block carries BFINAL, then the stream is byte-aligned.
// zlib's own output can depend on how the caller splits its input (the window may slide one
// step earlier when less input is at hand). We reproduce the case of all input being given at
// once (Python's zlib.compress/gzip.compress, one write to Java's DeflaterOutputStream): input
// is held back until a window refill can be as full as zlib would make it.

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
  OFF_CODE,
  OFF_EXTRA,
  reverseBits,
} from './deflate-tables.js';

const W_SIZE = 1 << 15;
const W_MASK = W_SIZE - 1;
const WINDOW_SIZE = 2 * W_SIZE;
const MIN_MATCH = 3;
const MAX_MATCH = 258;
const MIN_LOOKAHEAD = MAX_MATCH + MIN_MATCH + 1;
const MAX_DIST = W_SIZE - MIN_LOOKAHEAD;
const HASH_BITS = 8 + 7; // memLevel 8
const HASH_SIZE = 1 << HASH_BITS;
const HASH_MASK = HASH_SIZE - 1;
const HASH_SHIFT = ((HASH_BITS + MIN_MATCH - 1) / MIN_MATCH) | 0;
const LIT_BUFSIZE = 1 << (8 + 6);
const SYM_END = LIT_BUFSIZE - 1;
const TOO_FAR = 4096;
const MAX_BITS = 15;
const MAX_BL_BITS = 7;
const HEAP_SIZE = 2 * NUM_LIT + 1;
const REP_3_6 = 16;
const REPZ_3_10 = 17;
const REPZ_11_138 = 18;
/** output bytes gathered before they are handed out */
const TAKE_AT = 64 * 1024;

/** zlib's configuration_table: good, lazy (max_insert_length for 1-3), nice, chain. */
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

const EXTRA_BL = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7);

/**
 * One Huffman tree as zlib's trees.c builds it: leaves 0..elems-1, internal nodes above.
 * zlib overlays freq/code and dad/len in one struct; separate arrays behave the same here.
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
  ) {
    const size = 2 * elems + 1;
    this.freq = new Int32Array(size);
    this.len = new Uint16Array(size);
    this.code = new Uint16Array(size);
    this.dad = new Int32Array(size);
  }
}

/** Assign canonical codes (bit-reversed for the LSB-first stream) from lengths. */
function genCodes(len: Uint16Array, code: Uint16Array, maxCode: number, blCount: Int32Array): void {
  const next = new Int32Array(MAX_BITS + 1);
  let c = 0;
  for (let bits = 1; bits <= MAX_BITS; bits++) {
    c = (c + blCount[bits - 1]) << 1;
    next[bits] = c;
  }
  for (let n = 0; n <= maxCode; n++) {
    const l = len[n];
    if (l !== 0) code[n] = reverseBits(next[l]++, l);
  }
}

// The fixed codes (RFC 1951 3.2.6), built as zlib does, 288 literal/length entries.
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

export class ZlibDeflateEncoder {
  private readonly good: number;
  private readonly lazy: number;
  private readonly nice: number;
  private readonly chain: number;
  private readonly fast: boolean;

  private readonly window = new Uint8Array(WINDOW_SIZE);
  private readonly prev = new Uint16Array(W_SIZE);
  private readonly head = new Uint16Array(HASH_SIZE);
  private insH = 0;
  private strstart = 0;
  private blockStart = 0;
  private lookahead = 0;
  private insert = 0;
  private matchStart = 0;
  private matchLength = MIN_MATCH - 1;
  private matchAvailable = false;

  /** input not yet in the window: the rest of the caller's chunk, or our copy of it */
  private readonly stage = new Uint8Array(WINDOW_SIZE);
  private stageLen = 0;
  private stagePos = 0;
  private chunk: Uint8Array = new Uint8Array(0);
  private chunkPos = 0;
  private finishing = false;
  private finished = false;

  // block under construction: distance (0 for a literal) and literal or length - 3
  private readonly symDist = new Uint16Array(LIT_BUFSIZE);
  private readonly symLc = new Uint8Array(LIT_BUFSIZE);
  private symNext = 0;

  private readonly ltree = new Tree(NUM_LIT, MAX_BITS, LEN_EXTRA, 257, STATIC_LLEN);
  private readonly dtree = new Tree(NUM_OFF, MAX_BITS, OFF_EXTRA, 0, STATIC_DLEN);
  private readonly bltree = new Tree(NUM_CODEGEN, MAX_BL_BITS, EXTRA_BL, 0, null);
  private readonly heap = new Int32Array(HEAP_SIZE);
  private readonly depth = new Uint8Array(HEAP_SIZE);
  private readonly blCount = new Int32Array(MAX_BITS + 1);
  private heapLen = 0;
  private heapMax = 0;
  private optLen = 0;
  private staticLen = 0;

  private readonly out = new BitWriter(TAKE_AT * 2);
  private readonly parts: Uint8Array[] = [];

  constructor(level: number) {
    if (!Number.isInteger(level) || level < 1 || level > 9) {
      throw new Error(`zlib-deflate: level ${level} not supported (1..9)`);
    }
    [this.good, this.lazy, this.nice, this.chain] = CONFIG[level];
    this.fast = level <= 3;
    this.initBlock();
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finishing) throw new Error('zlib-deflate: push after finish');
    if (chunk.length === 0) return this.takeParts();
    this.chunk = chunk;
    this.chunkPos = 0;
    this.run();
    // keep what the window could not take yet (less than one refill) in our own buffer
    const rest = chunk.length - this.chunkPos;
    if (rest > 0) {
      if (this.stagePos > 0) {
        this.stage.copyWithin(0, this.stagePos, this.stageLen);
        this.stageLen -= this.stagePos;
        this.stagePos = 0;
      }
      this.stage.set(chunk.subarray(this.chunkPos), this.stageLen);
      this.stageLen += rest;
    }
    this.chunk = new Uint8Array(0);
    this.chunkPos = 0;
    return this.takeParts();
  }

  finish(): Uint8Array[] {
    if (this.finished) return [];
    this.finishing = true;
    this.run();
    this.finished = true;
    const rest = this.out.take();
    if (rest.length > 0) this.parts.push(rest);
    return this.takeParts();
  }

  private takeParts(): Uint8Array[] {
    if (this.out.pos >= TAKE_AT) this.parts.push(this.out.take());
    return this.parts.splice(0);
  }

  private available(): number {
    return this.stageLen - this.stagePos + (this.chunk.length - this.chunkPos);
  }

  /** Copy n queued input bytes into the window at `to`. */
  private readInput(to: number, n: number): void {
    const w = this.window;
    const fromStage = Math.min(n, this.stageLen - this.stagePos);
    if (fromStage > 0) {
      w.set(this.stage.subarray(this.stagePos, this.stagePos + fromStage), to);
      this.stagePos += fromStage;
      if (this.stagePos === this.stageLen) this.stagePos = this.stageLen = 0;
    }
    const rest = n - fromStage;
    if (rest > 0) {
      w.set(this.chunk.subarray(this.chunkPos, this.chunkPos + rest), to + fromStage);
      this.chunkPos += rest;
    }
  }

  /**
   * zlib's fill_window, when it would run with all the input at hand. Returns false (changing
   * nothing) if more input must come first: zlib given the whole input would read more here.
   */
  private fillWindow(): boolean {
    let more = WINDOW_SIZE - this.lookahead - this.strstart;
    const slide = this.strstart >= W_SIZE + MAX_DIST;
    const avail = this.available();
    if (!this.finishing && avail < more + (slide ? W_SIZE : 0)) return false;
    if (slide) {
      this.window.copyWithin(0, W_SIZE, WINDOW_SIZE);
      this.matchStart -= W_SIZE;
      this.strstart -= W_SIZE;
      this.blockStart -= W_SIZE;
      if (this.insert > this.strstart) this.insert = this.strstart;
      slideTable(this.head);
      slideTable(this.prev);
      more += W_SIZE;
    }
    if (avail === 0) return true;
    const n = Math.min(more, avail);
    this.readInput(this.strstart + this.lookahead, n);
    this.lookahead += n;
    // restart the rolling hash (and insert strings held back at a flush)
    if (this.lookahead + this.insert >= MIN_MATCH) {
      const w = this.window;
      let str = this.strstart - this.insert;
      let h = w[str];
      h = ((h << HASH_SHIFT) ^ w[str + 1]) & HASH_MASK;
      while (this.insert > 0) {
        h = ((h << HASH_SHIFT) ^ w[str + MIN_MATCH - 1]) & HASH_MASK;
        this.prev[str & W_MASK] = this.head[h];
        this.head[h] = str;
        str++;
        this.insert--;
        if (this.lookahead + this.insert < MIN_MATCH) break;
      }
      this.insH = h;
    }
    return true;
  }

  /** Run the matcher over what the window holds; stops when input must come first. */
  private run(): void {
    if (this.fast) this.deflateFast();
    else this.deflateSlow();
  }

  /**
   * zlib's longest_match: the best match for `scan` along the chain from curMatch, longer than
   * prevLength; sets matchStart when it finds one. Never longer than the bytes ahead.
   */
  private longestMatch(curMatch: number, scan: number, prevLength: number, lookahead: number): number {
    const w = this.window;
    const prev = this.prev;
    let chain = this.chain;
    let bestLen = prevLength;
    let nice = this.nice;
    const limit = scan > MAX_DIST ? scan - MAX_DIST : 0;
    let scanEnd1 = w[scan + bestLen - 1];
    let scanEnd = w[scan + bestLen];
    const s0 = w[scan];
    const s1 = w[scan + 1];
    if (prevLength >= this.good) chain >>= 2;
    if (nice > lookahead) nice = lookahead;
    let start = -1;
    do {
      const m = curMatch;
      if (w[m + bestLen] !== scanEnd || w[m + bestLen - 1] !== scanEnd1 || w[m] !== s0 || w[m + 1] !== s1) {
        continue;
      }
      // byte 2 is not compared: equal hashes and equal bytes 0 and 1 imply it (zlib relies on this)
      let len = 3;
      while (len < MAX_MATCH && w[scan + len] === w[m + len]) len++;
      if (len > bestLen) {
        start = m;
        bestLen = len;
        if (len >= nice) break;
        scanEnd1 = w[scan + bestLen - 1];
        scanEnd = w[scan + bestLen];
      }
    } while ((curMatch = prev[curMatch & W_MASK]) > limit && --chain !== 0);
    if (start >= 0) this.matchStart = start;
    return bestLen <= lookahead ? bestLen : lookahead;
  }

  // The two matchers keep zlib's scalar state in locals and write it back around the calls that
  // use it (fillWindow, flushBlock) and when they stop for input.

  /** zlib's deflate_fast (levels 1-3): greedy matching. */
  private deflateFast(): void {
    const w = this.window;
    const prev = this.prev;
    const head = this.head;
    const symDist = this.symDist;
    const symLc = this.symLc;
    const lfreq = this.ltree.freq;
    const dfreq = this.dtree.freq;
    const maxInsert = this.lazy;
    let strstart = this.strstart;
    let lookahead = this.lookahead;
    let insH = this.insH;
    let matchLength = this.matchLength;
    for (;;) {
      if (lookahead < MIN_LOOKAHEAD) {
        this.strstart = strstart;
        this.lookahead = lookahead;
        this.insH = insH;
        const filled = this.fillWindow();
        strstart = this.strstart;
        lookahead = this.lookahead;
        insH = this.insH;
        if (!filled || (lookahead < MIN_LOOKAHEAD && !this.finishing)) {
          this.matchLength = matchLength;
          return;
        }
        if (lookahead === 0) break;
      }
      let hashHead = 0;
      if (lookahead >= MIN_MATCH) {
        insH = ((insH << HASH_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
        hashHead = prev[strstart & W_MASK] = head[insH];
        head[insH] = strstart;
      }
      if (hashHead !== 0 && strstart - hashHead <= MAX_DIST) {
        matchLength = this.longestMatch(hashHead, strstart, MIN_MATCH - 1, lookahead);
      }
      let sym = this.symNext;
      if (matchLength >= MIN_MATCH) {
        const dist = strstart - this.matchStart;
        const lc = matchLength - MIN_MATCH;
        symDist[sym] = dist;
        symLc[sym++] = lc;
        lfreq[LEN_CODE[lc] + 257]++;
        dfreq[OFF_CODE[dist - 1]]++;
        lookahead -= matchLength;
        if (matchLength <= maxInsert && lookahead >= MIN_MATCH) {
          // short match: insert every string it covers
          for (let k = matchLength - 1; k > 0; k--) {
            strstart++;
            insH = ((insH << HASH_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
            prev[strstart & W_MASK] = head[insH];
            head[insH] = strstart;
          }
          strstart++;
        } else {
          strstart += matchLength;
          insH = ((w[strstart] << HASH_SHIFT) ^ w[strstart + 1]) & HASH_MASK;
        }
        matchLength = 0;
      } else {
        const c = w[strstart];
        symDist[sym] = 0;
        symLc[sym++] = c;
        lfreq[c]++;
        lookahead--;
        strstart++;
      }
      this.symNext = sym;
      if (sym === SYM_END) {
        this.strstart = strstart;
        this.flushBlock(false);
      }
    }
    this.matchLength = matchLength;
    this.endStream();
  }

  /** zlib's deflate_slow (levels 4-9): a match is taken only if the next byte has no better one. */
  private deflateSlow(): void {
    const w = this.window;
    const prev = this.prev;
    const head = this.head;
    const symDist = this.symDist;
    const symLc = this.symLc;
    const lfreq = this.ltree.freq;
    const dfreq = this.dtree.freq;
    const lazy = this.lazy;
    let strstart = this.strstart;
    let lookahead = this.lookahead;
    let insH = this.insH;
    let matchLength = this.matchLength;
    let matchAvailable = this.matchAvailable;
    for (;;) {
      if (lookahead < MIN_LOOKAHEAD) {
        this.strstart = strstart;
        this.lookahead = lookahead;
        this.insH = insH;
        const filled = this.fillWindow();
        strstart = this.strstart;
        lookahead = this.lookahead;
        insH = this.insH;
        if (!filled || (lookahead < MIN_LOOKAHEAD && !this.finishing)) {
          this.matchLength = matchLength;
          this.matchAvailable = matchAvailable;
          return;
        }
        if (lookahead === 0) break;
      }
      let hashHead = 0;
      if (lookahead >= MIN_MATCH) {
        insH = ((insH << HASH_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
        hashHead = prev[strstart & W_MASK] = head[insH];
        head[insH] = strstart;
      }
      const prevLength = matchLength;
      const prevMatch = this.matchStart;
      matchLength = MIN_MATCH - 1;
      if (hashHead !== 0 && prevLength < lazy && strstart - hashHead <= MAX_DIST) {
        matchLength = this.longestMatch(hashHead, strstart, prevLength, lookahead);
        // a 3-byte match far back costs more than its literals
        if (matchLength === MIN_MATCH && strstart - this.matchStart > TOO_FAR) matchLength = MIN_MATCH - 1;
      }
      if (prevLength >= MIN_MATCH && matchLength <= prevLength) {
        // the match found one byte back is at least as good: take it
        const maxInsert = strstart + lookahead - MIN_MATCH;
        const dist = strstart - 1 - prevMatch;
        const lc = prevLength - MIN_MATCH;
        let sym = this.symNext;
        symDist[sym] = dist;
        symLc[sym++] = lc;
        this.symNext = sym;
        lfreq[LEN_CODE[lc] + 257]++;
        dfreq[OFF_CODE[dist - 1]]++;
        lookahead -= prevLength - 1;
        for (let k = prevLength - 2; k > 0; k--) {
          if (++strstart <= maxInsert) {
            insH = ((insH << HASH_SHIFT) ^ w[strstart + 2]) & HASH_MASK;
            prev[strstart & W_MASK] = head[insH];
            head[insH] = strstart;
          }
        }
        matchAvailable = false;
        matchLength = MIN_MATCH - 1;
        strstart++;
        if (sym === SYM_END) {
          this.strstart = strstart;
          this.flushBlock(false);
        }
      } else if (matchAvailable) {
        // the byte before is a literal (its match, if any, lost to the one here)
        const c = w[strstart - 1];
        let sym = this.symNext;
        symDist[sym] = 0;
        symLc[sym++] = c;
        this.symNext = sym;
        lfreq[c]++;
        if (sym === SYM_END) {
          this.strstart = strstart;
          this.flushBlock(false);
        }
        strstart++;
        lookahead--;
      } else {
        matchAvailable = true;
        strstart++;
        lookahead--;
      }
    }
    this.strstart = strstart;
    this.matchLength = matchLength;
    if (matchAvailable) {
      this.tallyLit(w[strstart - 1]);
      this.matchAvailable = false;
    }
    this.endStream();
  }

  /** Input exhausted under Z_FINISH: the last block. */
  private endStream(): void {
    this.insert = this.strstart < MIN_MATCH - 1 ? this.strstart : MIN_MATCH - 1;
    this.flushBlock(true);
  }

  private tallyLit(c: number): boolean {
    const i = this.symNext++;
    this.symDist[i] = 0;
    this.symLc[i] = c;
    this.ltree.freq[c]++;
    return this.symNext === SYM_END;
  }

  private initBlock(): void {
    this.ltree.freq.fill(0, 0, NUM_LIT);
    this.dtree.freq.fill(0, 0, NUM_OFF);
    this.bltree.freq.fill(0, 0, NUM_CODEGEN);
    this.ltree.freq[EOB] = 1;
    this.optLen = 0;
    this.staticLen = 0;
    this.symNext = 0;
  }

  // ---- trees.c ----

  private smaller(freq: Int32Array, n: number, m: number): boolean {
    return freq[n] < freq[m] || (freq[n] === freq[m] && this.depth[n] <= this.depth[m]);
  }

  private pqdownheap(freq: Int32Array, k: number): void {
    const heap = this.heap;
    const v = heap[k];
    let j = k << 1;
    while (j <= this.heapLen) {
      if (j < this.heapLen && this.smaller(freq, heap[j + 1], heap[j])) j++;
      if (this.smaller(freq, v, heap[j])) break;
      heap[k] = heap[j];
      k = j;
      j <<= 1;
    }
    heap[k] = v;
  }

  /** Code lengths from the built tree, capped at maxLength; updates optLen/staticLen. */
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

  /** Count the code-length symbols (with run-length codes 16-18) sending `t` would use. */
  private scanTree(t: Tree): void {
    const len = t.len;
    const blFreq = this.bltree.freq;
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
      if (count < minCount) blFreq[curlen] += count;
      else if (curlen !== 0) {
        if (curlen !== prevlen) blFreq[curlen]++;
        blFreq[REP_3_6]++;
      } else if (count <= 10) blFreq[REPZ_3_10]++;
      else blFreq[REPZ_11_138]++;
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

  private sendTree(t: Tree, maxCode: number): void {
    const len = t.len;
    const blLen = this.bltree.len;
    const blCode = this.bltree.code;
    const out = this.out;
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
      if (count < minCount) {
        do out.writeBits(blCode[curlen], blLen[curlen]);
        while (--count !== 0);
      } else if (curlen !== 0) {
        if (curlen !== prevlen) {
          out.writeBits(blCode[curlen], blLen[curlen]);
          count--;
        }
        out.writeBits(blCode[REP_3_6], blLen[REP_3_6]);
        out.writeBits(count - 3, 2);
      } else if (count <= 10) {
        out.writeBits(blCode[REPZ_3_10], blLen[REPZ_3_10]);
        out.writeBits(count - 3, 3);
      } else {
        out.writeBits(blCode[REPZ_11_138], blLen[REPZ_11_138]);
        out.writeBits(count - 11, 7);
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

  /** Build the code-length tree; returns the index in CODEGEN_ORDER of the last length sent. */
  private buildBlTree(): number {
    this.scanTree(this.ltree);
    this.scanTree(this.dtree);
    this.buildTree(this.bltree);
    let maxBlindex: number;
    for (maxBlindex = NUM_CODEGEN - 1; maxBlindex >= 3; maxBlindex--) {
      if (this.bltree.len[CODEGEN_ORDER[maxBlindex]] !== 0) break;
    }
    this.optLen += 3 * (maxBlindex + 1) + 5 + 5 + 4;
    return maxBlindex;
  }

  /** zlib's FLUSH_BLOCK_ONLY: the block from blockStart to strstart. */
  private flushBlock(last: boolean): void {
    const storedLen = this.strstart - this.blockStart;
    this.buildTree(this.ltree);
    this.buildTree(this.dtree);
    const maxBlindex = this.buildBlTree();
    let optLenb = (this.optLen + 3 + 7) >>> 3;
    const staticLenb = (this.staticLen + 3 + 7) >>> 3;
    if (staticLenb <= optLenb) optLenb = staticLenb;
    const out = this.out;
    const lastBit = last ? 1 : 0;
    // a block whose start slid out of the window can no longer be stored
    if (storedLen + 4 <= optLenb && this.blockStart >= 0) {
      out.ensure(storedLen + 16);
      out.writeBits(lastBit, 3);
      out.align();
      out.writeBits(storedLen & 0xffff, 16);
      out.writeBits(~storedLen & 0xffff, 16);
      out.writeBytes(this.window.subarray(this.blockStart, this.blockStart + storedLen));
    } else if (staticLenb === optLenb) {
      out.ensure(staticLenb + 16);
      out.writeBits(2 + lastBit, 3);
      this.compressBlock(STATIC_LLEN, STATIC_LCODE, STATIC_DLEN, STATIC_DCODE);
    } else {
      out.ensure(optLenb + 16);
      out.writeBits(4 + lastBit, 3);
      const lcodes = this.ltree.maxCode + 1;
      const dcodes = this.dtree.maxCode + 1;
      const blcodes = maxBlindex + 1;
      out.writeBits(lcodes - 257, 5);
      out.writeBits(dcodes - 1, 5);
      out.writeBits(blcodes - 4, 4);
      for (let rank = 0; rank < blcodes; rank++) out.writeBits(this.bltree.len[CODEGEN_ORDER[rank]], 3);
      this.sendTree(this.ltree, lcodes - 1);
      this.sendTree(this.dtree, dcodes - 1);
      this.compressBlock(this.ltree.len, this.ltree.code, this.dtree.len, this.dtree.code);
    }
    this.initBlock();
    if (last) out.align();
    this.blockStart = this.strstart;
    if (out.pos >= TAKE_AT) this.parts.push(out.take());
  }

  private compressBlock(llen: Uint16Array, lcode: Uint16Array, dlen: Uint16Array, dcode: Uint16Array): void {
    const out = this.out;
    const symDist = this.symDist;
    const symLc = this.symLc;
    for (let i = 0, n = this.symNext; i < n; i++) {
      let dist = symDist[i];
      let lc = symLc[i];
      if (dist === 0) {
        out.writeBits(lcode[lc], llen[lc]);
        continue;
      }
      let code = LEN_CODE[lc];
      out.writeBits(lcode[code + 257], llen[code + 257]);
      let extra = LEN_EXTRA[code];
      if (extra !== 0) out.writeBits(lc - LEN_BASE[code], extra);
      dist--;
      code = OFF_CODE[dist];
      out.writeBits(dcode[code], dlen[code]);
      extra = OFF_EXTRA[code];
      if (extra !== 0) out.writeBits(dist - OFF_BASE[code], extra);
    }
    out.writeBits(lcode[EOB], llen[EOB]);
  }
}

/** zlib's slide_hash: positions move down by 32 KiB; those that fall out become 0 (empty). */
function slideTable(t: Uint16Array): void {
  for (let i = 0, n = t.length; i < n; i++) {
    const v = t[i] - W_SIZE;
    t[i] = v & ~(v >> 31); // max(v, 0) without a branch
  }
}
