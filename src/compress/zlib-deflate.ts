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
//    (7 for the code-length code) by zlib's overflow fix-up, code lengths run-length coded
//    (zlib-trees.ts, which GNU gzip's encoder shares);
//  - Z_FINISH: the last block carries BFINAL, then the stream is byte-aligned.
// zlib's own output can depend on how the caller splits its input (the window may slide one
// step earlier when less input is at hand). We reproduce the case of all input being given at
// once (Python's zlib.compress/gzip.compress, one write to Java's DeflaterOutputStream): input
// is held back until a window refill can be as full as zlib would make it.

import { BitWriter } from './bit-writer.js';
import { LEN_CODE, OFF_CODE } from './deflate-tables.js';
import { ZlibTrees } from './zlib-trees.js';
import { LEVEL_CONFIG, matchInstance, S, slideHash, type MatchInstance } from './zlib-window.js';

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
/** output bytes gathered before they are handed out */
const TAKE_AT = 64 * 1024;

export class ZlibDeflateEncoder {
  private readonly good: number;
  private readonly lazy: number;
  private readonly nice: number;
  private readonly chain: number;
  private readonly fast: boolean;

  /** the loop in WebAssembly (wasm/zlib-match.c), if built: the same decisions as deflate() below */
  private readonly wasm?: MatchInstance;
  private readonly window: Uint8Array;
  private readonly prev: Uint16Array;
  private readonly head: Uint16Array;
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
  private readonly symDist: Uint16Array;
  private readonly symLc: Uint8Array;
  private symNext = 0;

  private readonly trees: ZlibTrees;

  private readonly out = new BitWriter(TAKE_AT * 2);
  private readonly parts: Uint8Array[] = [];

  constructor(level: number) {
    if (!Number.isInteger(level) || level < 1 || level > 9) {
      throw new Error(`zlib-deflate: level ${level} not supported (1..9)`);
    }
    [this.good, this.lazy, this.nice, this.chain] = LEVEL_CONFIG[level];
    this.fast = level <= 3;
    const m = (this.wasm = matchInstance(level, LIT_BUFSIZE));
    if (m) {
      ({ window: this.window, prev: this.prev, head: this.head, symDist: this.symDist, symLc: this.symLc } = m);
      this.trees = new ZlibTrees(m);
    } else {
      this.window = new Uint8Array(WINDOW_SIZE);
      this.prev = new Uint16Array(W_SIZE);
      this.head = new Uint16Array(HASH_SIZE);
      this.symDist = new Uint16Array(LIT_BUFSIZE);
      this.symLc = new Uint8Array(LIT_BUFSIZE);
      this.trees = new ZlibTrees();
    }
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finishing) throw new Error('zlib-deflate: push after finish');
    if (chunk.length === 0) return this.takeParts();
    this.chunk = chunk;
    this.chunkPos = 0;
    this.deflate();
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
    this.deflate();
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
      if (this.wasm) this.wasm.x.slide();
      else {
        this.window.copyWithin(0, W_SIZE, WINDOW_SIZE);
        slideHash(this.head);
        slideHash(this.prev);
      }
      this.matchStart -= W_SIZE;
      this.strstart -= W_SIZE;
      this.blockStart -= W_SIZE;
      if (this.insert > this.strstart) this.insert = this.strstart;
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

  /**
   * zlib's longest_match: the best match for `scan` along the chain from curMatch, longer than
   * prevLength; sets matchStart when it finds one. Never longer than the bytes ahead. Not GNU
   * gzip's: zlib caps nice_match at the lookahead, so the two stop searching apart.
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

  /**
   * zlib's deflate_fast (levels 1-3: greedy) and deflate_slow (4-9: a match is taken only if
   * the next byte has no better one) in one loop, since they share the window refill and the
   * hash insertion; `fast` picks the branch. zlib's scalar state lives in locals, written back
   * around the calls that use it (fillWindow, flushBlock) and when the loop stops for input.
   */
  private deflate(): void {
    if (this.wasm) return this.deflateWasm(this.wasm);
    const w = this.window;
    const prev = this.prev;
    const head = this.head;
    const symDist = this.symDist;
    const symLc = this.symLc;
    const lfreq = this.trees.ltree.freq;
    const dfreq = this.trees.dtree.freq;
    const fast = this.fast;
    const lazy = this.lazy; // deflate_fast's max_insert_length
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
      // one search for both: deflate_fast keeps its last length when it does not search;
      // deflate_slow searches only while the previous match is shorter than max_lazy_match
      const prevLength = matchLength;
      const prevMatch = this.matchStart;
      if (!fast) matchLength = MIN_MATCH - 1;
      if (hashHead !== 0 && (fast || prevLength < lazy) && strstart - hashHead <= MAX_DIST) {
        matchLength = this.longestMatch(hashHead, strstart, fast ? MIN_MATCH - 1 : prevLength, lookahead);
        // a 3-byte match far back costs more than its literals
        if (!fast && matchLength === MIN_MATCH && strstart - this.matchStart > TOO_FAR) matchLength = MIN_MATCH - 1;
      }

      if (fast) {
        let sym = this.symNext;
        if (matchLength >= MIN_MATCH) {
          const dist = strstart - this.matchStart;
          const lc = matchLength - MIN_MATCH;
          symDist[sym] = dist;
          symLc[sym++] = lc;
          lfreq[LEN_CODE[lc] + 257]++;
          dfreq[OFF_CODE[dist - 1]]++;
          lookahead -= matchLength;
          if (matchLength <= lazy && lookahead >= MIN_MATCH) {
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
        continue;
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
    this.matchAvailable = matchAvailable;
    this.endStream();
  }

  /**
   * deflate() with the loop in WebAssembly: the window is filled (and slid) here, the loop
   * runs there until it needs input or a block is full, the variables going in and out.
   */
  private deflateWasm({ x, st }: MatchInstance): void {
    for (;;) {
      if (this.lookahead < MIN_LOOKAHEAD) {
        const filled = this.fillWindow();
        if (!filled || (this.lookahead < MIN_LOOKAHEAD && !this.finishing)) return;
        if (this.lookahead === 0) break;
      }
      st[S.STRSTART] = this.strstart;
      st[S.LOOKAHEAD] = this.lookahead;
      st[S.INS_H] = this.insH;
      st[S.MATCH_LENGTH] = this.matchLength;
      st[S.MATCH_AVAILABLE] = +this.matchAvailable;
      st[S.MATCH_START] = this.matchStart;
      st[S.SYM_NEXT] = this.symNext;
      const full = x.step_zlib() === 1;
      this.strstart = st[S.STRSTART];
      this.lookahead = st[S.LOOKAHEAD];
      this.insH = st[S.INS_H];
      this.matchLength = st[S.MATCH_LENGTH];
      this.matchAvailable = st[S.MATCH_AVAILABLE] === 1;
      this.matchStart = st[S.MATCH_START];
      this.symNext = st[S.SYM_NEXT];
      if (full) this.flushBlock(false, st[S.EMIT]);
    }
    this.endStream();
  }

  /** Input exhausted under Z_FINISH: the byte whose match was never taken (deflate_slow), and the last block. */
  private endStream(): void {
    if (this.matchAvailable) {
      this.tallyLit(this.window[this.strstart - 1]);
      this.matchAvailable = false;
    }
    this.insert = this.strstart < MIN_MATCH - 1 ? this.strstart : MIN_MATCH - 1;
    this.flushBlock(true);
  }

  private tallyLit(c: number): boolean {
    const i = this.symNext++;
    this.symDist[i] = 0;
    this.symLc[i] = c;
    this.trees.ltree.freq[c]++;
    return this.symNext === SYM_END;
  }

  /** zlib's FLUSH_BLOCK_ONLY: the block from blockStart to `end` (strstart, but where a literal's byte was counted before it). */
  private flushBlock(last: boolean, end = this.strstart): void {
    const out = this.out;
    const storedLen = end - this.blockStart;
    this.trees.writeBlock(out, this.window, this.blockStart, storedLen, this.symLc, this.symDist, this.symNext, last);
    this.symNext = 0;
    this.blockStart = end;
    if (out.pos >= TAKE_AT) this.parts.push(out.take());
  }
}
