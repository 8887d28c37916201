// Go's compress/flate at its lazy levels (4-9; 6 is docker's and BuildKit's gzip) on several
// threads, byte for byte as one Go stream writes it. What makes this possible:
//  - every position enters the hash chains, in order, whatever the parse, so the chains at a
//    position depend on the bytes before it alone (and the window's start on the position);
//  - a parse started anywhere, on those chains, soon meets the true parse: same iteration, same
//    pending match; from there it emits the same tokens (measured: within 234 bytes of the start
//    at every cut tried on a layer's tar).
// So each segment of the input is parsed on a pool thread from a little before its start, and
// its tokens are taken from the iteration where the previous segment's parse stopped, once the
// two states there agree (if not, the segment is parsed again here, from the true state). This
// thread cuts the tokens into Go's blocks (16384 tokens each) and writes them.

import { BitWriter } from './bit-writer.js';
import type { BlockPool } from './block-pool.js';
import { crc32, crc32Combine } from './crc32.js';
import { MAX_STORED } from './deflate-tables.js';
import { goSegment, MAX_BLOCK_TOKENS, sameParse, windowStart, type ParseState, type SegmentResult, type SegmentTask } from './go-flate.js';
import { HuffmanBlockWriter } from './go-huffman.js';
import { gzipHeader, gzipTrailer, levelXfl } from './gzip-frame.js';
import { wasmTokenWriter } from './klauspost-flate.js';

/** input bytes per segment */
export const SEGMENT = 1 << 20;
/** how far before its start a segment's parse begins (its tokens before the join are dropped) */
export const OVERLAP = 8 << 10;
/** bytes beyond a segment's stop its parse may read (Go fills its 64 KiB window ahead) */
const LOOKAHEAD = 64 << 10;

/** Segments parsed again on the stream's thread because their parse had not met the true one (tests read it). */
export const reparsed = { count: 0 };

/** The input from the oldest byte still needed on: contiguous, grown and compacted as it goes. */
class InputBuffer {
  private buf = new Uint8Array(4 << 20);
  private at = 0;
  private len = 0;

  get end(): number {
    return this.at + this.len;
  }

  /** appends b, dropping what lies before keepFrom if room is needed */
  append(b: Uint8Array, keepFrom: number): void {
    if (this.len + b.length > this.buf.length) {
      const drop = Math.min(Math.max(0, keepFrom - this.at), this.len);
      const keep = this.len - drop;
      if (keep + b.length <= this.buf.length) this.buf.copyWithin(0, drop, this.len);
      else {
        const next = new Uint8Array(Math.max(2 * this.buf.length, keep + b.length));
        next.set(this.buf.subarray(drop, this.len));
        this.buf = next;
      }
      this.at += drop;
      this.len = keep;
    }
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  view(from: number, to: number): Uint8Array {
    return this.buf.subarray(from - this.at, to - this.at);
  }

  copy(from: number, to: number): Uint8Array {
    return this.buf.slice(from - this.at, to - this.at);
  }
}

/** Cuts the token stream into Go's blocks and writes them as Go's huffmanBitWriter would. */
class BlockCutter {
  private readonly bw = new BitWriter();
  private readonly hw = new HuffmanBlockWriter(this.bw, wasmTokenWriter());
  private readonly tokens = this.hw.tw?.tok ?? new Int32Array(MAX_BLOCK_TOKENS + 1);
  private ntok = 0;
  /** input position the tokens so far cover up to */
  private pos = 0;
  blockStart = 0;
  /** Close's last step: from where, with which window start */
  private syncStart = Infinity;
  private syncBase = 0;

  constructor(private readonly input: InputBuffer) {}

  add(r: ParsedSegment): void {
    if (r.syncStart !== undefined) {
      this.syncStart = r.syncStart;
      this.syncBase = r.syncBase!;
    }
    const t = r.tokens;
    const at = this.pos; // where the segment's tokens start
    for (let i = 0; i < t.length; ) {
      const n = Math.min(MAX_BLOCK_TOKENS - this.ntok, t.length - i);
      this.tokens.set(t.subarray(i, i + n), this.ntok);
      this.ntok += n;
      i += n;
      if (this.ntok === MAX_BLOCK_TOKENS) {
        // Go writes the block in the iteration that emitted its last token, one past its start
        this.pos = at + coveredBy(t, r.marks, i);
        const lastStart = this.pos - tokenLength(t[i - 1]);
        this.write(this.ntok, lastStart + 1 >= this.syncStart ? this.syncBase : windowStart(lastStart + 1));
        this.ntok = 0;
      }
    }
    this.pos = at + coveredBy(t, r.marks, t.length);
  }

  /** the block of the tokens so far; stored is an option only while its bytes are all still in Go's window (starting at `base`) */
  private write(ntok: number, base: number): void {
    const input = this.blockStart >= base && this.pos - this.blockStart <= MAX_STORED ? this.input.view(this.blockStart, this.pos) : null;
    this.hw.writeBlock(this.tokens, ntok, false, input);
    this.blockStart = this.pos;
  }

  /** Close: the last block, then the final empty stored block */
  finish(): void {
    if (this.ntok > 0 && this.pos > 0) this.write(this.ntok, this.syncBase);
    this.ntok = 0;
    this.hw.writeStoredHeader(0, true);
    this.bw.align();
  }

  take(): Uint8Array[] {
    return this.bw.pos > 0 ? [this.bw.take()] : [];
  }
}

/** Input bytes a token covers: a literal 1, a match its length (MATCH is bit 30, the length - 3 above bit 22). */
const tokenLength = (x: number): number => 1 + (x >>> 30) * (((x >>> 22) & 0xff) + 2);

const MARK_EVERY = 64;

/**
 * A segment's parse (go-flate.ts goSegment, run on a pool thread), with marks (the input its
 * first 64, 128, ... tokens cover) and the CRC-32 of its share of the input, [crcFrom, stopAt)
 * (to the end of its data if last), which the gzip trailer combines.
 */
export interface ParsedSegment extends SegmentResult {
  marks: Int32Array;
  crc: number;
}

export function parseSegment(task: SegmentTask, crcFrom: number): ParsedSegment {
  const dataAt = windowStart(task.start);
  const crc = crc32(task.data.subarray(crcFrom - dataAt, task.last ? task.data.length : task.stopAt - dataAt));
  const r = goSegment(task);
  const t = r.tokens;
  const marks = new Int32Array(Math.floor(t.length / MARK_EVERY));
  let pos = 0;
  for (let q = 0, i = 0; q < marks.length; q++) {
    for (const end = i + MARK_EVERY; i < end; i++) pos += tokenLength(t[i]);
    marks[q] = pos;
  }
  return { ...r, marks, crc };
}

/** The input the first n of a segment's tokens cover. */
function coveredBy(t: Int32Array, marks: Int32Array, n: number): number {
  const q = Math.floor(n / MARK_EVERY);
  let pos = q > 0 ? marks[q - 1] : 0;
  for (let i = q * MARK_EVERY; i < n; i++) pos += tokenLength(t[i]);
  return pos;
}

interface Pending {
  task: Omit<SegmentTask, 'data' | 'level'>;
  dataEnd: number;
  result: Promise<ParsedSegment>;
}

/**
 * The tar as Go's gzip.NewWriterLevel(w, level) writes it (levels 4-9), its segments parsed on
 * the pool's threads. `segment` and `overlap` are for tests.
 */
export async function* goGzipParallel(tar: AsyncIterable<Uint8Array>, level: number, pool: BlockPool, segment = SEGMENT, overlap = OVERLAP): AsyncGenerator<Uint8Array> {
  yield gzipHeader(levelXfl(level), 255);
  const input = new InputBuffer();
  const cutter = new BlockCutter(input);
  const pending: Pending[] = [];
  const depth = pool.size * 2;
  let crc = 0;
  let k = 0;
  let truth: ParseState = { pos: 0, length: 3, offset: 0, byteAvailable: false };
  const startOf = (i: number) => (i === 0 ? 0 : i * segment - overlap);
  const dispatch = (last: boolean) => {
    const task = { start: startOf(k), joinAt: k * segment, stopAt: last ? input.end : (k + 1) * segment, last };
    const dataEnd = last ? input.end : task.stopAt + LOOKAHEAD;
    pending.push({ task, dataEnd, result: pool.segment({ ...task, level, data: input.copy(windowStart(task.start), dataEnd) }, task.joinAt) });
    k++;
  };
  // (a segment parsed again needs the window before the true state, which is past its start)
  const keepFrom = () => Math.min(cutter.blockStart, windowStart(pending.length ? pending[0].task.start : startOf(k)));
  const adopt = async () => {
    const p = pending.shift()!;
    let r = await p.result;
    if (!sameParse(r.join, truth)) {
      reparsed.count++;
      const t = { ...p.task, start: truth.pos, joinAt: truth.pos, from: truth };
      r = parseSegment({ ...t, level, data: input.copy(windowStart(t.start), p.dataEnd) }, p.task.joinAt);
    }
    crc = crc32Combine(crc, r.crc, (p.task.last ? p.dataEnd : p.task.stopAt) - p.task.joinAt);
    cutter.add(r);
    truth = r.end;
  };
  for await (const chunk of tar) {
    input.append(chunk, keepFrom());
    while ((k + 1) * segment + LOOKAHEAD <= input.end) dispatch(false);
    while (pending.length > depth) {
      await adopt();
      yield* cutter.take();
    }
  }
  dispatch(true);
  while (pending.length) {
    await adopt();
    yield* cutter.take();
  }
  cutter.finish();
  yield* cutter.take();
  yield gzipTrailer(crc, input.end);
}
