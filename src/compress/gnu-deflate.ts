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
//    leaves), shared with the zlib encoder in zlib-trees.ts; no trailing empty block.
// Input is fed as a regular file would be read (every read fills the free space), so output
// never depends on how callers chunk it. gzip reading a pipe (`tar czf`) can get short reads;
// that changes nothing except in one corner: a short read can make gzip slide its window with
// the scan position at exactly WSIZE + MAX_DIST instead of one step later, and if the hash
// head there is the position that slides to 0, that one match candidate is lost. We follow
// the regular-file behaviour.

import { BitWriter } from './bit-writer.js';
import { LEN_CODE, NUM_OFF, OFF_CODE, OFF_EXTRA } from './deflate-tables.js';
import { ZlibTrees } from './zlib-trees.js';
import { LEVEL_CONFIG, matchInstance, S, slideHash, type MatchInstance } from './zlib-window.js';

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

export class GnuDeflateEncoder {
  private readonly level: number;
  private readonly goodMatch: number;
  private readonly maxLazy: number;
  private readonly niceMatch: number;
  private readonly maxChain: number;

  /** the loop in WebAssembly (wasm/zlib-match.c), if built: the same decisions as deflate() below */
  private readonly wasm?: MatchInstance;

  // matcher state (deflate.c)
  private readonly window: Uint8Array;
  private readonly prev: Uint16Array;
  private readonly head: Uint16Array;
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
  private readonly lBuf: Uint8Array;
  private readonly dBuf: Uint16Array;
  private lastLit = 0;
  private lastDist = 0;
  private readonly trees: ZlibTrees;
  private readonly lfreq: Int32Array;
  private readonly dfreq: Int32Array;

  private readonly bw = new BitWriter();

  constructor(level: number) {
    if (!Number.isInteger(level) || level < 1 || level > 9) throw new RangeError(`gnu-deflate: bad level ${level}`);
    this.level = level;
    [this.goodMatch, this.maxLazy, this.niceMatch, this.maxChain] = LEVEL_CONFIG[level];
    const m = (this.wasm = matchInstance(level, LIT_BUFSIZE));
    if (m) {
      ({ window: this.window, prev: this.prev, head: this.head, symLc: this.lBuf, symDist: this.dBuf } = m);
      this.trees = new ZlibTrees(m);
    } else {
      this.window = new Uint8Array(WINDOW_SIZE);
      this.prev = new Uint16Array(WSIZE);
      this.head = new Uint16Array(1 << HASH_BITS);
      this.lBuf = new Uint8Array(LIT_BUFSIZE);
      this.dBuf = new Uint16Array(LIT_BUFSIZE);
      this.trees = new ZlibTrees();
    }
    this.lfreq = this.trees.ltree.freq;
    this.dfreq = this.trees.dtree.freq;
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
      if (this.wasm) this.wasm.x.slide();
      else {
        this.window.copyWithin(0, WSIZE, WINDOW_SIZE);
        slideHash(this.head);
        slideHash(this.prev);
      }
      this.matchStart -= WSIZE;
      this.strstart -= WSIZE;
      this.blockStart -= WSIZE;
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
    const complete = this.deflate(out);
    if (complete) this.done = true;
  }

  // ---------------------------------------------------------------- matching

  /**
   * longest_match: best length found (at least bestLen), its start in this.matchStart. Not
   * zlib's: gzip does not cap nice_match at the lookahead, so the two stop searching apart.
   */
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

  /**
   * deflate_fast (levels 1-3: greedy) and deflate (4-9: lazy evaluation) in one loop, since they
   * share the window refill and the hash insertion; `fast` picks the branch. The scalar state
   * lives in locals, written back around fillWindow and when the loop stops for input. Returns
   * true once the final block is out.
   */
  private deflate(out: Uint8Array[]): boolean {
    if (this.wasm) return this.deflateWasm(this.wasm, out);
    const w = this.window;
    const prev = this.prev;
    const head = this.head;
    const fast = this.level <= 3;
    const maxLazy = this.maxLazy; // deflate_fast's max_insert_length
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
      // one search for both modes (deflate_fast keeps its last length when it does not search;
      // lazy evaluation only searches while the previous match is shorter than max_lazy)
      let prevLength = matchLength;
      const prevMatch = this.matchStart;
      if (!fast) matchLength = MIN_MATCH - 1;
      if (
        hashHead !== 0 &&
        (fast || prevLength < maxLazy) &&
        strstart - hashHead <= MAX_DIST &&
        strstart <= WINDOW_SIZE - MIN_LOOKAHEAD
      ) {
        matchLength = this.longestMatch(hashHead, strstart, fast ? MIN_MATCH - 1 : prevLength);
        if (matchLength > lookahead) matchLength = lookahead;
        // (when nothing better turned up, matchStart is still prevMatch; the test is moot then)
        if (!fast && matchLength === MIN_MATCH && strstart - this.matchStart > TOO_FAR) matchLength--;
      }

      if (fast) {
        let flush: boolean;
        if (matchLength >= MIN_MATCH) {
          flush = this.tally(strstart - this.matchStart, matchLength - MIN_MATCH, strstart);
          lookahead -= matchLength;
          if (matchLength <= maxLazy) {
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
        if (flush) this.endBlock(strstart, out);
        continue;
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
        if (flush) this.endBlock(strstart, out);
      } else if (matchAvailable) {
        // the previous byte goes out as a literal (its match, if any, was beaten)
        if (this.tally(0, w[strstart - 1], strstart)) this.endBlock(strstart, out);
        strstart++;
        lookahead--;
      } else {
        matchAvailable = true;
        strstart++;
        lookahead--;
      }
    }
    this.strstart = strstart;
    this.lookahead = lookahead;
    this.matchAvailable = matchAvailable;
    this.endStream();
    return true;
  }

  /**
   * deflate() with the loop in WebAssembly: the window is filled (and slid) here, the loop
   * runs there until it needs input or a block ends, the variables going in and out.
   */
  private deflateWasm({ x, st }: MatchInstance, out: Uint8Array[]): boolean {
    for (;;) {
      if (this.lookahead < MIN_LOOKAHEAD && !this.eofile) {
        if (!this.fillWindow()) return false;
        continue;
      }
      if (this.lookahead === 0) break;
      st[S.STRSTART] = this.strstart;
      st[S.LOOKAHEAD] = this.lookahead;
      st[S.INS_H] = this.insH;
      st[S.MATCH_LENGTH] = this.matchLength;
      st[S.MATCH_AVAILABLE] = +this.matchAvailable;
      st[S.MATCH_START] = this.matchStart;
      st[S.SYM_NEXT] = this.lastLit;
      st[S.LAST_DIST] = this.lastDist;
      st[S.BLOCK_START] = this.blockStart;
      st[S.EOFILE] = +this.eofile;
      const end = x.step_gnu() === 1;
      this.strstart = st[S.STRSTART];
      this.lookahead = st[S.LOOKAHEAD];
      this.insH = st[S.INS_H];
      this.matchLength = st[S.MATCH_LENGTH];
      this.matchAvailable = st[S.MATCH_AVAILABLE] === 1;
      this.matchStart = st[S.MATCH_START];
      this.lastLit = st[S.SYM_NEXT];
      this.lastDist = st[S.LAST_DIST];
      if (end) this.endBlock(st[S.EMIT], out);
    }
    this.endStream();
    return true;
  }

  /** The input is done: the byte whose match was never taken (lazy only), and the last block. */
  private endStream(): void {
    if (this.matchAvailable) this.tally(0, this.window[this.strstart - 1], this.strstart);
    this.flushBlock(this.strstart, true);
  }

  // ---------------------------------------------------------------- blocks (trees.c)

  /**
   * ct_tally: record a literal (dist 0, lc = byte) or a match (lc = length - 3). True when the
   * block should end here: gzip's own rule (zlib ends a block only when its buffer is full).
   */
  private tally(dist: number, lc: number, strstart: number): boolean {
    const i = this.lastLit++;
    this.lBuf[i] = lc;
    this.dBuf[i] = dist;
    if (dist === 0) {
      this.lfreq[lc]++;
    } else {
      this.lfreq[LEN_CODE[lc] + 257]++;
      this.dfreq[OFF_CODE[dist - 1]]++;
      this.lastDist++;
    }
    const lastLit = this.lastLit;
    if (this.level > 2 && (lastLit & 0xfff) === 0) {
      // a cheap upper bound on the block's size: 8 bits per token plus distance codes
      let outLength = lastLit * 8;
      const df = this.dfreq;
      for (let d = 0; d < NUM_OFF; d++) outLength += df[d] * (5 + OFF_EXTRA[d]);
      outLength = Math.floor(outLength / 8);
      const inLength = strstart - this.blockStart;
      if (this.lastDist < lastLit >>> 1 && outLength < Math.floor(inLength / 2)) return true;
    }
    return lastLit === LIT_BUFSIZE - 1 || this.lastDist === DIST_BUFSIZE;
  }

  /** End the block at strstart and start the next there; hand out what has piled up. */
  private endBlock(strstart: number, out: Uint8Array[]): void {
    this.flushBlock(strstart, false);
    this.blockStart = strstart;
    if (this.bw.pos >= TAKE_AT) out.push(this.bw.take());
  }

  /** flush_block: end the block [blockStart, strstart). */
  private flushBlock(strstart: number, eof: boolean): void {
    this.trees.writeBlock(this.bw, this.window, this.blockStart, strstart - this.blockStart, this.lBuf, this.dBuf, this.lastLit, eof);
    this.lastLit = 0;
    this.lastDist = 0;
  }
}
