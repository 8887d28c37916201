// A DEFLATE encoder whose output is bit-identical to Go's compress/flate (as of Go 1.19) at
// levels 1-9. Go's choices that shape the bytes, and which this follows:
//  - levels 2-9: 32 KiB of history in a 64 KiB buffer, hash chains over 4-byte prefixes in a
//    2^17-entry table; levels 2-3 take the first acceptable match (greedy), 4-9 defer by one byte
//    (lazy); per-level limits on chain walks and "good enough" lengths; a block every 16384 tokens;
//  - level 1: a separate Snappy-style matcher over 65535-byte blocks with a 2^14-entry table and
//    cross-block history, written as literal-only or dynamic blocks;
//  - every stream ends with an empty final stored block (Go's Close).
// Go's deflater can in principle react to how its Write calls are sized: the window slides
// between writes, and a block whose start slid out can no longer be stored (it takes a long,
// poorly compressible block for that to change a byte). To be independent of our callers'
// chunking we replay the input as io.Copy from a file does: writes of exactly 32 KiB.

import { BitWriter } from './bit-writer.js';
import { MATCH, MAX_STORED, OFF_CODE } from './deflate-tables.js';
import { HuffmanBlockWriter } from './go-huffman.js';
import { wasmTokenWriter } from './klauspost-flate.js';
import { wasmInstance, wasmModule } from './wasm.js';

const WINDOW = 1 << 15;
const WINDOW_MASK = WINDOW - 1;
const MIN_MATCH = 4; // Go never emits length-3 matches
const MAX_MATCH = 258;
const MIN_LOOKAHEAD = MIN_MATCH + MAX_MATCH;
export const MAX_BLOCK_TOKENS = 1 << 14;
const HASH_BITS = 17;
const HASH_SHIFT = 32 - HASH_BITS;
const MAX_HASH_OFFSET = 1 << 24;
const SKIP_NEVER = 0x7fffffff;
const INT32_MAX = 0x7fffffff;
const HASH_MUL = 0x1e35a7bd;
/** the write size io.Copy uses */
const FEED = 32 * 1024;
/** output bytes gathered before push() sets them aside */
const TAKE_AT = 64 * 1024;

/** Per-level search parameters (Go's levels table; level 1 has its own encoder). */
interface LevelParams {
  good: number; // a match this long quarters the chain walk
  lazy: number; // no lazy search once the pending match is this long
  nice: number; // stop searching at this length
  chain: number; // candidates examined
  fastSkip: number; // greedy levels: matches longer than this skip hash insertion
}
const LEVELS: Record<number, LevelParams> = {
  2: { good: 4, lazy: 0, nice: 16, chain: 8, fastSkip: 5 },
  3: { good: 4, lazy: 0, nice: 32, chain: 32, fastSkip: 6 },
  4: { good: 4, lazy: 4, nice: 16, chain: 16, fastSkip: SKIP_NEVER },
  5: { good: 8, lazy: 16, nice: 32, chain: 32, fastSkip: SKIP_NEVER },
  6: { good: 8, lazy: 16, nice: 128, chain: 128, fastSkip: SKIP_NEVER },
  7: { good: 8, lazy: 32, nice: 128, chain: 256, fastSkip: SKIP_NEVER },
  8: { good: 32, lazy: 128, nice: 258, chain: 1024, fastSkip: SKIP_NEVER },
  9: { good: 32, lazy: 258, nice: 258, chain: 4096, fastSkip: SKIP_NEVER },
};

interface Engine {
  /** One Go Write call: consumes all of b. */
  write(b: Uint8Array): void;
  /** Go Close: flush everything, then the final empty stored block. */
  close(): void;
}

/** The chain matcher in WebAssembly (wasm/go-flate-chain.c): the same decisions as step() below. */
interface ChainExports {
  step(): number;
  win(): number;
  head(): number;
  prev(): number;
  tok(): number;
  off_code(): number;
  state(): number;
  enter(from: number, to: number, hashOffset: number): void;
}
/** its variables (state[]), in go-flate-chain.c's order */
const enum S { INDEX, CHAIN_HEAD, LENGTH, OFFSET, BYTE_AVAILABLE, NTOK, HASH_OFFSET, WINDOW_END, SYNC, GREEDY, LAZY, FAST_SKIP, NICE, TRIES, EMIT_INDEX, STOP, COUNT }

/**
 * Where the lazy parse (levels 4-9) stands at the top of an iteration: with the hash chains,
 * which every position enters in order whatever the parse, this decides all that follows. A
 * parse started anywhere with the chains of the bytes before it soon meets the true one (same
 * position, same state), and from there on emits the same tokens (go-parallel.ts).
 */
export interface ParseState {
  pos: number;
  length: number;
  offset: number;
  byteAvailable: boolean;
}

/**
 * Whether two parses stand at the same point. The position and the pending byte decide it: no
 * byte pending means a match just ended (nothing else pending); a byte pending means the last
 * iteration searched (it would have emitted its pending match otherwise), and a search's answer
 * depends on the position alone.
 */
export const sameParse = (a: ParseState, b: ParseState): boolean => a.pos === b.pos && a.byteAvailable === b.byteAvailable;

/**
 * The absolute position of the window's first byte during the iteration at `pos`, with the
 * input written in 32 KiB pieces as GoDeflateEncoder writes it: the window slides by 32 KiB
 * when a step stops past 65274, which it does at the first iteration past that point.
 * (Not during Close's last step, which never slides.)
 */
export function windowStart(pos: number): number {
  return pos <= 2 * WINDOW - MIN_LOOKAHEAD ? 0 : Math.ceil((pos - (2 * WINDOW - MIN_LOOKAHEAD)) / WINDOW) * WINDOW;
}

/** A lazy level's segment of the input: its parse from `start` (fresh, or `from`) and the tokens it emits from its first iteration at or past `joinAt` to its first at or past `stopAt` (or to the end, with Close, if `last`). */
export interface SegmentTask {
  level: number;
  /** the input from windowStart(start) up to at least stopAt + 64 KiB, or to its end if `last` */
  data: Uint8Array;
  start: number;
  joinAt: number;
  stopAt: number;
  last: boolean;
  from?: ParseState;
}

export interface SegmentResult {
  /** the state at the first iteration at or past joinAt (the tokens start there) */
  join: ParseState;
  tokens: Int32Array;
  /** the state at the first iteration at or past stopAt (not `last`) */
  end: ParseState;
  /** `last`: where Close's final step began, and the window's start then */
  syncStart?: number;
  syncBase?: number;
}

/** Levels 2-9: hash-chain matcher (deflate.go). */
class ChainEngine implements Engine {
  /** absolute position of window[0] */
  private base = 0;
  /** absolute position before whose first iteration at or past it step() stops (segments) */
  private stopAt = INT32_MAX;
  private readonly wasm = wasmInstance<ChainExports>('go-flate-chain');
  private readonly state?: Int32Array;
  private readonly window: Uint8Array;
  private readonly view: DataView;
  private readonly hashHead: Int32Array;
  private readonly hashPrev: Int32Array;
  private readonly tokens: Int32Array;
  private ntok = 0;
  private windowEnd = 0;
  private index = 0;
  private blockStart = 0;
  private byteAvailable = false;
  private chainHead = -1;
  /** hash entries hold window index + hashOffset, so sliding the window needs no table rewrite */
  private hashOffset = 1;
  private length = MIN_MATCH - 1;
  private offset = 0;
  private sync = false;
  private readonly greedy: boolean;
  /** candidates to examine; Go quarters the walk when the match to beat is already "good",
   * which with its fixed starting length (3) never happens at any level */
  private readonly tries: number;

  /** `hw` writes the blocks; a segment engine has none: segment() collects its tokens */
  constructor(private readonly p: LevelParams, private readonly hw?: HuffmanBlockWriter) {
    this.greedy = p.fastSkip !== SKIP_NEVER;
    this.tries = MIN_MATCH - 1 >= p.good ? p.chain >> 2 : p.chain;
    const x = this.wasm;
    if (x) {
      const mem = x.memory.buffer; // (never grows: the C side allocates nothing)
      this.window = new Uint8Array(mem, x.win(), 2 * WINDOW);
      this.hashHead = new Int32Array(mem, x.head(), 1 << HASH_BITS);
      this.hashPrev = new Int32Array(mem, x.prev(), WINDOW);
      this.tokens = new Int32Array(mem, x.tok(), MAX_BLOCK_TOKENS + 1);
      new Uint8Array(mem, x.off_code(), OFF_CODE.length).set(OFF_CODE);
      const st = (this.state = new Int32Array(mem, x.state(), S.COUNT));
      st[S.GREEDY] = +this.greedy;
      st[S.LAZY] = p.lazy;
      st[S.FAST_SKIP] = p.fastSkip;
      st[S.NICE] = p.nice;
      st[S.TRIES] = this.tries;
    } else {
      this.window = new Uint8Array(2 * WINDOW);
      this.hashHead = new Int32Array(1 << HASH_BITS);
      this.hashPrev = new Int32Array(WINDOW);
      this.tokens = new Int32Array(MAX_BLOCK_TOKENS + 1);
    }
    this.view = new DataView(this.window.buffer, this.window.byteOffset, this.window.byteLength);
  }

  /** step() in WebAssembly: the variables go in, blocks are written as it asks, the variables come back. */
  private stepWasm(x: ChainExports, st: Int32Array): void {
    st[S.INDEX] = this.index;
    st[S.CHAIN_HEAD] = this.chainHead;
    st[S.LENGTH] = this.length;
    st[S.OFFSET] = this.offset;
    st[S.BYTE_AVAILABLE] = +this.byteAvailable;
    st[S.NTOK] = this.ntok;
    st[S.HASH_OFFSET] = this.hashOffset;
    st[S.WINDOW_END] = this.windowEnd;
    st[S.SYNC] = +this.sync;
    st[S.STOP] = Math.min(this.stopAt - this.base, INT32_MAX);
    for (;;) {
      const r = x.step();
      if (r === 0) break;
      this.emitBlock(st[S.NTOK], st[S.EMIT_INDEX]);
      st[S.NTOK] = 0;
      if (r === 2) break;
    }
    this.index = st[S.INDEX];
    this.chainHead = st[S.CHAIN_HEAD];
    this.length = st[S.LENGTH];
    this.offset = st[S.OFFSET];
    this.byteAvailable = st[S.BYTE_AVAILABLE] === 1;
    this.ntok = st[S.NTOK];
  }

  write(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) {
      this.step();
      off += this.fill(b, off);
    }
  }

  close(): void {
    this.sync = true;
    this.step();
    this.hw!.writeStoredHeader(0, true);
    this.hw!.bw.align();
  }

  /** A segment (see SegmentTask) on this engine, which need not be fresh. */
  segment(t: SegmentTask): SegmentResult {
    const data = t.data;
    const dataAt = windowStart(t.start);
    // as the true stream stands between two steps at `start`: the window full from its start,
    // every position before `start` in the chains
    this.base = dataAt;
    this.hashOffset = 1;
    this.hashHead.fill(0);
    let fed = Math.min(2 * WINDOW, data.length);
    this.window.set(data.subarray(0, fed));
    this.windowEnd = fed;
    this.index = t.start - dataAt;
    const enter = Math.min(this.index, this.windowEnd - (MIN_MATCH - 1));
    if (this.wasm) this.wasm.enter(0, enter, this.hashOffset);
    else {
      const win = this.window, head = this.hashHead, prev = this.hashPrev;
      for (let i = 0; i < enter; i++) {
        const h = Math.imul((win[i] << 24) | (win[i + 1] << 16) | (win[i + 2] << 8) | win[i + 3], HASH_MUL) >>> HASH_SHIFT;
        prev[i & WINDOW_MASK] = head[h];
        head[h] = i + this.hashOffset;
      }
    }
    this.length = t.from?.length ?? MIN_MATCH - 1;
    this.offset = t.from?.offset ?? 0;
    this.byteAvailable = t.from?.byteAvailable ?? false;
    this.ntok = 0;
    this.sync = false;
    // the tokens, gathered in this engine's scratch array (grown as needed), copied out at the end
    let got = this.gathered;
    let count = 0;
    const take = () => {
      if (this.ntok) this.emitBlock(this.ntok, 0);
      this.ntok = 0;
    };
    const state = (): ParseState => ({ pos: this.base + this.index, length: this.length, offset: this.offset, byteAvailable: this.byteAvailable });
    // where the last write ended (Close's step starts there, with no slide after it)
    let lastFill = t.start;
    // Go's write loop (a step, then a 32 KiB fill) until the first iteration at or past stopAt
    const runTo = (stopAt: number): ParseState => {
      this.stopAt = stopAt;
      for (;;) {
        this.step();
        if (this.base + this.index >= stopAt) break;
        if (fed >= data.length) {
          if (stopAt === INT32_MAX) break;
          throw new Error("go-flate: a segment's input ends before its stop");
        }
        fed += this.fill(data.subarray(0, Math.min(fed + FEED, data.length)), fed);
        lastFill = this.base + this.index;
      }
      take();
      return state();
    };
    this.collect = (tokens, ntok) => {
      if (count + ntok > got.length) {
        const more = new Int32Array(Math.max(2 * got.length, count + ntok));
        more.set(got.subarray(0, count));
        got = this.gathered = more;
      }
      got.set(tokens.subarray(0, ntok), count);
      count += ntok;
    };
    const join = runTo(t.joinAt);
    count = 0;
    let end: ParseState;
    let syncStart: number | undefined, syncBase: number | undefined;
    if (t.last) {
      runTo(INT32_MAX);
      syncStart = lastFill;
      syncBase = this.base;
      this.sync = true;
      this.step();
      take();
      end = state();
    } else end = runTo(t.stopAt);
    this.collect = undefined;
    this.stopAt = INT32_MAX;
    return { join, tokens: got.slice(0, count), end, syncStart, syncBase };
  }

  private collect?: (tokens: Int32Array, ntok: number) => void;
  private gathered = new Int32Array(1 << 16);

  private fill(b: Uint8Array, off: number): number {
    if (this.index >= 2 * WINDOW - MIN_LOOKAHEAD) this.slide();
    const n = Math.min(2 * WINDOW - this.windowEnd, b.length - off);
    this.window.set(b.subarray(off, off + n), this.windowEnd);
    this.windowEnd += n;
    return n;
  }

  private slide(): void {
    this.window.copyWithin(0, WINDOW, 2 * WINDOW);
    this.base += WINDOW;
    this.index -= WINDOW;
    this.windowEnd -= WINDOW;
    // a block starting in the dropped half can no longer be emitted as stored
    this.blockStart = this.blockStart >= WINDOW ? this.blockStart - WINDOW : INT32_MAX;
    this.hashOffset += WINDOW;
    if (this.hashOffset > MAX_HASH_OFFSET) {
      const delta = this.hashOffset - 1;
      this.hashOffset -= delta;
      this.chainHead -= delta;
      for (const t of [this.hashPrev, this.hashHead]) {
        for (let i = 0; i < t.length; i++) t[i] = t[i] > delta ? t[i] - delta : 0;
      }
    }
  }

  private emitBlock(ntok: number, index: number): void {
    if (this.collect) return this.collect(this.tokens, ntok);
    if (index <= 0) return;
    const input = this.blockStart <= index ? this.window.subarray(this.blockStart, index) : null;
    this.blockStart = index;
    this.hw!.writeBlock(this.tokens, ntok, false, input);
  }

  /** Tokenize while at least MIN_LOOKAHEAD bytes are ahead (or everything, when closing). */
  private step(): void {
    if (this.wasm) return this.stepWasm(this.wasm, this.state!);
    const windowEnd = this.windowEnd;
    const sync = this.sync;
    if (windowEnd - this.index < MIN_LOOKAHEAD && !sync) return;
    const win = this.window, head = this.hashHead, prev = this.hashPrev, tokens = this.tokens;
    const hashOffset = this.hashOffset;
    const greedy = this.greedy;
    const lazyLimit = this.p.lazy;
    const fastSkip = this.p.fastSkip;
    const nice = this.p.nice;
    const tries = this.tries;
    const maxInsert = windowEnd - (MIN_MATCH - 1);
    const stopAt = Math.min(this.stopAt - this.base, INT32_MAX);
    let index = this.index;
    let chainHead = this.chainHead;
    let length = this.length;
    let offset = this.offset;
    let byteAvailable = this.byteAvailable;
    let ntok = this.ntok;

    for (;;) {
      if (index >= stopAt) break;
      const lookahead = windowEnd - index;
      if (lookahead < MIN_LOOKAHEAD) {
        if (!sync) break;
        if (lookahead === 0) {
          if (byteAvailable) {
            tokens[ntok++] = win[index - 1];
            byteAvailable = false;
          }
          if (ntok > 0) {
            this.emitBlock(ntok, index);
            ntok = 0;
          }
          break;
        }
      }
      if (index < maxInsert) {
        const h = Math.imul((win[index] << 24) | (win[index + 1] << 16) | (win[index + 2] << 8) | win[index + 3], HASH_MUL) >>> HASH_SHIFT;
        chainHead = head[h];
        prev[index & WINDOW_MASK] = chainHead;
        head[h] = index + hashOffset;
      }
      const prevLength = length;
      const prevOffset = offset;
      length = MIN_MATCH - 1;
      offset = 0;
      const minIndex = index > WINDOW ? index - WINDOW : 0;
      if (
        chainHead - hashOffset >= minIndex &&
        (greedy ? lookahead > MIN_MATCH - 1 : lookahead > prevLength && prevLength < lazyLimit)
      ) {
        const maxLen = lookahead < MAX_MATCH ? lookahead : MAX_MATCH;
        const m = findMatch(win, this.view, prev, index, chainHead - hashOffset, maxLen, nice < maxLen ? nice : maxLen, tries, hashOffset);
        if (m !== 0) {
          length = m >>> 16;
          offset = m & 0xffff;
        }
      }
      if (greedy ? length >= MIN_MATCH : prevLength >= MIN_MATCH && length <= prevLength) {
        // greedy: take this match; lazy: the previous byte's match was at least as good
        if (greedy) tokens[ntok++] = MATCH | ((length - 3) << 22) | (OFF_CODE[offset - 1] << 16) | (offset - 1);
        else tokens[ntok++] = MATCH | ((prevLength - 3) << 22) | (OFF_CODE[prevOffset - 1] << 16) | (prevOffset - 1);
        if (length <= fastSkip) {
          const newIndex = greedy ? index + length : index + prevLength - 1;
          // insert the matched positions (those with 4 bytes ahead); the 4-byte key rolls along
          const stop = newIndex < maxInsert ? newIndex : maxInsert;
          index++;
          if (index < stop) {
            let key = (win[index] << 16) | (win[index + 1] << 8) | win[index + 2];
            for (; index < stop; index++) {
              key = (key << 8) | win[index + 3];
              const h = Math.imul(key, HASH_MUL) >>> HASH_SHIFT;
              prev[index & WINDOW_MASK] = head[h];
              head[h] = index + hashOffset;
            }
          }
          if (index < newIndex) index = newIndex;
          if (!greedy) {
            byteAvailable = false;
            length = MIN_MATCH - 1;
          }
        } else {
          index += length;
        }
        if (ntok === MAX_BLOCK_TOKENS) {
          this.emitBlock(ntok, index);
          ntok = 0;
        }
      } else {
        if (greedy || byteAvailable) {
          const i = greedy ? index : index - 1;
          tokens[ntok++] = win[i];
          if (ntok === MAX_BLOCK_TOKENS) {
            this.emitBlock(ntok, i + 1);
            ntok = 0;
          }
        }
        index++;
        if (!greedy) byteAvailable = true;
      }
    }

    this.index = index;
    this.chainHead = chainHead;
    this.length = length;
    this.offset = offset;
    this.byteAvailable = byteAvailable;
    this.ntok = ntok;
  }
}

/** this thread's segment engines, by level and by whether they run in WebAssembly (tests turn it off) */
const segmentEngines = new Map<string, ChainEngine>();

/** Runs a segment of a lazy level (4-9) on this thread's engine for that level. */
export function goSegment(t: SegmentTask): SegmentResult {
  const p = LEVELS[t.level];
  if (!p || p.fastSkip !== SKIP_NEVER) throw new RangeError(`go-flate: segments need a lazy level (4-9), got ${t.level}`);
  const key = `${t.level}${wasmModule('go-flate-chain') ? '' : ' ts'}`;
  let e = segmentEngines.get(key);
  if (!e) segmentEngines.set(key, (e = new ChainEngine(p)));
  return e.segment(t);
}

/**
 * Longest match (over 3 bytes) for `pos` along the hash chain from `candidate`, examining at most
 * `tries` candidates, as length << 16 | distance, or 0. Length-4 matches farther than 4096 bytes
 * are not worth it. `maxLen` is min(lookahead, 258); `nice` ends the search early.
 */
function findMatch(
  win: Uint8Array,
  dv: DataView,
  prev: Int32Array,
  pos: number,
  candidate: number,
  maxLen: number,
  nice: number,
  tries: number,
  hashOffset: number,
): number {
  let length = MIN_MATCH - 1;
  let wEnd = win[pos + length];
  const minIndex = pos - WINDOW;
  const maxLen4 = maxLen - 3;
  let result = 0;
  for (let i = candidate; tries > 0; tries--) {
    if (win[i + length] === wEnd) {
      // compare 4 bytes at a time while 4 remain, then bytewise
      let n = 0;
      while (n < maxLen4 && dv.getInt32(i + n) === dv.getInt32(pos + n)) n += 4;
      while (n < maxLen && win[i + n] === win[pos + n]) n++;
      if (n > length && (n > MIN_MATCH || pos - i <= 4096)) {
        length = n;
        result = (n << 16) | (pos - i);
        if (n >= nice) break;
        wEnd = win[pos + n];
      }
    }
    // the slot of the oldest reachable position may already hold a newer one
    if (i === minIndex) break;
    i = prev[i & WINDOW_MASK] - hashOffset;
    if (i < minIndex || i < 0) break;
  }
  return result;
}

const FAST_TABLE_BITS = 14;
const FAST_TABLE_SHIFT = 32 - FAST_TABLE_BITS;
const FAST_INPUT_MARGIN = 16 - 1;
const FAST_MIN_BLOCK = 1 + 1 + FAST_INPUT_MARGIN;
/** rebase table offsets before they could overflow an int32 */
const FAST_BUFFER_RESET = INT32_MAX - MAX_STORED * 2;

function load32(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
}

function fastHash(u: number): number {
  return Math.imul(u, HASH_MUL) >>> FAST_TABLE_SHIFT;
}

/** Level 1: Go's BestSpeed encoder (deflatefast.go) over blocks of 65535 bytes. */
class FastEngine implements Engine {
  /** the block, the block before and the table live in the WebAssembly matcher's memory where there is one */
  private readonly window: Uint8Array;
  private windowEnd = 0;
  private sync = false;
  /** in the WebAssembly token writer's memory where there is one (no copy per block) */
  private readonly tokens: Int32Array;
  // hash table: position (+ cur) and the 4 bytes found there
  private readonly tableOff: Int32Array;
  private readonly tableVal: Int32Array;
  /** the previous block, for matches reaching back across the block boundary */
  private readonly prev: Uint8Array;
  private prevLen = 0;
  /** offset of the current block in table positions */
  private cur = MAX_STORED;

  constructor(private readonly hw: HuffmanBlockWriter) {
    const g = hw.tw?.goFast;
    this.tokens = hw.tw?.tok ?? new Int32Array(MAX_STORED + 1);
    this.window = g?.src ?? new Uint8Array(MAX_STORED);
    this.prev = g?.prev ?? new Uint8Array(MAX_STORED);
    this.tableOff = g?.off ?? new Int32Array(1 << FAST_TABLE_BITS);
    this.tableVal = g?.val ?? new Int32Array(1 << FAST_TABLE_BITS);
  }

  write(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) {
      this.step();
      const n = Math.min(MAX_STORED - this.windowEnd, b.length - off);
      this.window.set(b.subarray(off, off + n), this.windowEnd);
      this.windowEnd += n;
      off += n;
    }
  }

  close(): void {
    this.sync = true;
    this.step();
    this.hw.writeStoredHeader(0, true);
    this.hw.bw.align();
  }

  private step(): void {
    const end = this.windowEnd;
    if (end < MAX_STORED) {
      if (!this.sync) return;
      if (end < 128) {
        // a short tail: stored or literal-only, and forget the history
        if (end === 0) return;
        const input = this.window.subarray(0, end);
        if (end <= 16) this.hw.writeStored(input, false);
        else this.hw.writeBlockHuff(false, input);
        this.windowEnd = 0;
        this.resetHistory();
        return;
      }
    }
    const input = this.window.subarray(0, end);
    const ntok = this.encode(input);
    // if matching removed less than 1/16 of the tokens, Huffman-code the bytes instead
    if (ntok > end - (end >> 4)) this.hw.writeBlockHuff(false, input);
    else this.hw.writeBlockDynamic(this.tokens, ntok, false, input);
    this.windowEnd = 0;
  }

  private resetHistory(): void {
    this.prevLen = 0;
    this.cur += WINDOW; // every table entry is now out of reach
    if (this.cur >= FAST_BUFFER_RESET) this.shiftOffsets();
  }

  private shiftOffsets(): void {
    if (this.prevLen === 0) {
      this.tableOff.fill(0);
      this.tableVal.fill(0);
    } else {
      const t = this.tableOff;
      const d = this.cur - (WINDOW + 1);
      for (let i = 0; i < t.length; i++) {
        const v = t[i] - d;
        t[i] = v < 0 ? 0 : v;
      }
    }
    this.cur = WINDOW + 1;
  }

  /** Tokenize one block; returns the token count. */
  private encode(src: Uint8Array): number {
    if (this.cur >= FAST_BUFFER_RESET) this.shiftOffsets();
    const tokens = this.tokens;
    const len = src.length;
    let ntok = 0;
    if (len < FAST_MIN_BLOCK) {
      this.cur += MAX_STORED;
      this.prevLen = 0;
      for (let i = 0; i < len; i++) tokens[ntok++] = src[i];
      return ntok;
    }
    const cur = this.cur;
    if (this.hw.tw) {
      // (src is the matcher's own block: this.window)
      ntok = this.hw.tw.goFast.encode(len, cur, this.prevLen);
      this.cur = cur + len;
      this.prev.set(src);
      this.prevLen = len;
      return ntok;
    }
    const tOff = this.tableOff, tVal = this.tableVal;
    const sLimit = len - FAST_INPUT_MARGIN;
    let nextEmit = 0;
    let s = 0;
    let cv = load32(src, 0);
    let nextHash = fastHash(cv);

    outer: for (;;) {
      // Snappy's skipping: after 32 misses look at every 2nd byte, then every 3rd, ...
      let skip = 32;
      let nextS = s;
      let candOff = 0;
      for (;;) {
        s = nextS;
        const stride = skip >> 5;
        nextS = s + stride;
        skip += stride;
        if (nextS > sLimit) break outer;
        candOff = tOff[nextHash];
        const candVal = tVal[nextHash];
        const now = load32(src, nextS);
        tOff[nextHash] = s + cur;
        tVal[nextHash] = cv;
        nextHash = fastHash(now);
        if (s - (candOff - cur) > WINDOW || cv !== candVal) {
          cv = now;
          continue;
        }
        break;
      }
      for (let i = nextEmit; i < s; i++) tokens[ntok++] = src[i];
      for (;;) {
        // 4 bytes match at s; extend, emit, and try again right after the match
        s += 4;
        const t = candOff - cur + 4;
        const l = this.matchLen(s, t, src);
        const xoff = s - t - 1;
        tokens[ntok++] = MATCH | ((l + 4 - 3) << 22) | (OFF_CODE[xoff] << 16) | xoff;
        s += l;
        nextEmit = s;
        if (s >= sLimit) break outer;
        const x0 = load32(src, s - 1);
        const h0 = fastHash(x0);
        tOff[h0] = cur + s - 1;
        tVal[h0] = x0;
        const x1 = load32(src, s);
        const h1 = fastHash(x1);
        candOff = tOff[h1];
        const candVal = tVal[h1];
        tOff[h1] = cur + s;
        tVal[h1] = x1;
        if (s - (candOff - cur) > WINDOW || x1 !== candVal) {
          cv = load32(src, s + 1);
          nextHash = fastHash(cv);
          s++;
          break;
        }
      }
    }
    for (let i = nextEmit; i < len; i++) tokens[ntok++] = src[i];
    this.cur = cur + len;
    this.prev.set(src);
    this.prevLen = len;
    return ntok;
  }

  /** Match length at src[s:] against src[t:] (t < 0: starting in the previous block), max 254. */
  private matchLen(s: number, t: number, src: Uint8Array): number {
    const s1 = Math.min(s + MAX_MATCH - 4, src.length);
    if (t >= 0) {
      let n = 0;
      while (s + n < s1 && src[t + n] === src[s + n]) n++;
      return n;
    }
    const tp = this.prevLen + t;
    if (tp < 0) return 0;
    const prev = this.prev;
    const inPrev = Math.min(this.prevLen - tp, s1 - s);
    let n = 0;
    while (n < inPrev && prev[tp + n] === src[s + n]) n++;
    if (n < inPrev || s + n === s1) return n;
    // ran off the end of the previous block: continue at the start of this one
    let k = 0;
    while (s + n + k < s1 && src[k] === src[s + n + k]) k++;
    return n + k;
  }
}

/** Streaming raw DEFLATE (RFC 1951) encoder matching Go's flate.NewWriter(w, level). */
export class GoDeflateEncoder {
  readonly level: number;
  private readonly bw = new BitWriter();
  private readonly engine: Engine;
  private readonly pending = new Uint8Array(FEED);
  private pendingLen = 0;
  private finished = false;

  constructor(level: number) {
    if (!Number.isInteger(level) || level < 1 || level > 9) {
      throw new RangeError(`go-flate: level must be an integer 1..9, got ${level}`);
    }
    this.level = level;
    const hw = new HuffmanBlockWriter(this.bw, wasmTokenWriter());
    this.engine = level === 1 ? new FastEngine(hw) : new ChainEngine(LEVELS[level], hw);
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.finished) throw new Error('go-flate: push after finish');
    const out: Uint8Array[] = [];
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.pendingLen === 0 && n - i >= FEED) {
        this.engine.write(chunk.subarray(i, i + FEED));
        i += FEED;
      } else {
        const k = Math.min(FEED - this.pendingLen, n - i);
        this.pending.set(chunk.subarray(i, i + k), this.pendingLen);
        this.pendingLen += k;
        i += k;
        if (this.pendingLen < FEED) continue;
        this.engine.write(this.pending);
        this.pendingLen = 0;
      }
      // hand out finished output as we go so a huge chunk never needs a huge output buffer
      if (this.bw.pos >= TAKE_AT) out.push(this.bw.take());
    }
    if (this.bw.pos > 0) out.push(this.bw.take());
    return out;
  }

  finish(): Uint8Array[] {
    if (this.finished) return [];
    this.finished = true;
    if (this.pendingLen > 0) this.engine.write(this.pending.subarray(0, this.pendingLen));
    this.pendingLen = 0;
    this.engine.close();
    return this.drain();
  }

  private drain(): Uint8Array[] {
    return this.bw.pos > 0 ? [this.bw.take()] : [];
  }
}
