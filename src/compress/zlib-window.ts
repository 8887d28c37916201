// What zlib's deflate.c and GNU gzip 1.12's deflate.c share about the sliding window, since
// both keep the 1990s layout: the per-level search limits, how the hash tables slide, and
// the WebAssembly module that runs either loop (wasm/zlib-match.c). Window geometry and hash
// constants stay in each encoder, where V8 folds them into the hot loops.
import { appendWasmBits, type BitWriter } from './bit-writer.js';
import { LEN_BASE, LEN_CODE, LEN_EXTRA, NUM_LIT, NUM_OFF, OFF_BASE, OFF_CODE, OFF_EXTRA } from './deflate-tables.js';
import { wasmInstance } from './wasm.js';

/** configuration_table: good_length, max_lazy (max_insert_length at levels 1-3), nice_length, max_chain. */
export const LEVEL_CONFIG: ReadonlyArray<readonly [number, number, number, number]> = [
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

const W_SIZE = 1 << 15;

/**
 * slide_hash: positions in a head/prev table move down by the 32 KiB the window slid; those
 * that fall out become 0, which both libraries read as "no entry".
 */
export function slideHash(t: Uint16Array): void {
  for (let i = 0, n = t.length; i < n; i++) {
    const v = t[i] - W_SIZE;
    t[i] = v & ~(v >> 31); // max(v, 0) without a branch: the outcome is data-dependent
  }
}

interface MatchExports {
  step_zlib(): number;
  step_gnu(): number;
  slide(): void;
  window(): number;
  prev(): number;
  head(): number;
  sym_dist(): number;
  sym_lc(): number;
  lfreq(): number;
  dfreq(): number;
  len_code(): number;
  off_code(): number;
  off_extra(): number;
  state(): number;
  compress_block(n: number): number;
  lcode(): number;
  llen(): number;
  dcode(): number;
  dlen(): number;
  len_extra(): number;
  len_base(): number;
  off_base(): number;
  out(): number;
  bits(): number;
}

/** The loop's variables (state[]), in zlib-match.c's order; LAST_DIST, BLOCK_START, EOFILE and LEVEL are GNU gzip's only. */
export const enum S { STRSTART, LOOKAHEAD, INS_H, MATCH_LENGTH, MATCH_AVAILABLE, MATCH_START, SYM_NEXT, LAST_DIST, BLOCK_START, EOFILE, EMIT, FAST, GOOD, LAZY, NICE, CHAIN, LEVEL, COUNT }

/** An instance of wasm/zlib-match.c with views of what the encoder shares with it. */
export interface MatchInstance {
  x: MatchExports;
  st: Int32Array;
  window: Uint8Array;
  prev: Uint16Array;
  head: Uint16Array;
  symDist: Uint16Array;
  symLc: Uint8Array;
  freqs: { lit: Int32Array; off: Int32Array };
  /** zlib-trees.ts compressBlock of the first n symbols in symLc/symDist, end of block included */
  compressBlock(bw: BitWriter, n: number, llen: Uint16Array, lcode: Uint16Array, dlen: Uint16Array, dcode: Uint16Array): void;
}

/** A new instance set for `level`'s limits, if WebAssembly is available (else the encoder runs its TypeScript loop). */
export function matchInstance(level: number, symbols: number): MatchInstance | undefined {
  const x = wasmInstance<MatchExports>('zlib-match');
  if (!x) return undefined;
  const mem = x.memory.buffer; // (never grows: the C side allocates nothing)
  new Uint8Array(mem, x.len_code(), LEN_CODE.length).set(LEN_CODE);
  new Uint8Array(mem, x.off_code(), OFF_CODE.length).set(OFF_CODE);
  new Uint8Array(mem, x.off_extra(), NUM_OFF).set(OFF_EXTRA.subarray(0, NUM_OFF));
  new Uint8Array(mem, x.len_extra(), LEN_EXTRA.length).set(LEN_EXTRA);
  new Int32Array(mem, x.len_base(), 32).set(LEN_BASE);
  new Int32Array(mem, x.off_base(), 32).set(OFF_BASE);
  const codes = { llen: new Uint16Array(mem, x.llen(), NUM_LIT), lcode: new Uint16Array(mem, x.lcode(), NUM_LIT), dlen: new Uint16Array(mem, x.dlen(), NUM_OFF), dcode: new Uint16Array(mem, x.dcode(), NUM_OFF) };
  const bits = new Uint32Array(mem, x.bits(), 2);
  const out = x.out();
  const st = new Int32Array(mem, x.state(), S.COUNT);
  [st[S.GOOD], st[S.LAZY], st[S.NICE], st[S.CHAIN]] = LEVEL_CONFIG[level];
  st[S.FAST] = +(level <= 3);
  st[S.LEVEL] = level;
  return {
    x,
    st,
    window: new Uint8Array(mem, x.window(), 2 * W_SIZE),
    prev: new Uint16Array(mem, x.prev(), W_SIZE),
    head: new Uint16Array(mem, x.head(), 1 << 15),
    symDist: new Uint16Array(mem, x.sym_dist(), symbols),
    symLc: new Uint8Array(mem, x.sym_lc(), symbols),
    freqs: { lit: new Int32Array(mem, x.lfreq(), 2 * NUM_LIT + 1), off: new Int32Array(mem, x.dfreq(), 2 * NUM_OFF + 1) },
    compressBlock(bw, n, llen, lcode, dlen, dcode) {
      codes.llen.set(llen.subarray(0, NUM_LIT));
      codes.lcode.set(lcode.subarray(0, NUM_LIT));
      codes.dlen.set(dlen.subarray(0, NUM_OFF));
      codes.dcode.set(dcode.subarray(0, NUM_OFF));
      appendWasmBits(bw, mem, bits, out, () => x.compress_block(n));
    },
  };
}
