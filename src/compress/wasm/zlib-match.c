// zlib's deflate_fast/deflate_slow loop and longest_match (zlib-deflate.ts: behind Java's
// GZIPOutputStream (Jib) and Python's gzip layers) and GNU gzip 1.12's deflate_fast/deflate
// (gnu-deflate.ts: `tar czf`), in C for WebAssembly. The two share the 1990s window layout
// and most of the matcher; they differ in where a block ends and in small rules noted below.
// The same decisions, position for position, as the TypeScript loops (which stay as the
// fallback and the reference; tests compare both with each other and with zlib's and GNU
// gzip's own output). Matches are compared 8 bytes at a time here.
//
// The window, hash chains, symbol buffer and symbol counts live in this instance's memory
// (TypeScript fills the window and builds each block's trees on views of them, and
// compress_block at the end writes the block's symbols in those codes); the loop's variables
// go in and out through `state`.
#include "wasm.h"

#define W_SIZE (1 << 15)
#define W_MASK (W_SIZE - 1)
#define WINDOW_SIZE (2 * W_SIZE)
#define MIN_MATCH 3
#define MAX_MATCH 258
#define MIN_LOOKAHEAD (MAX_MATCH + MIN_MATCH + 1)
#define MAX_DIST (W_SIZE - MIN_LOOKAHEAD)
#define HASH_BITS 15
#define HASH_MASK ((1 << HASH_BITS) - 1)
#define HASH_SHIFT 5
#define ZLIB_SYM_END ((1 << 14) - 1)
#define GNU_LIT_BUFSIZE (1 << 15)
#define GNU_DIST_BUFSIZE (1 << 15)
#define TOO_FAR 4096
#define NUM_LIT 286
#define NUM_OFF 30

// (16 bytes of slack: the 8-byte compares stop short of the end, as a search starts at
// most WINDOW_SIZE - MIN_LOOKAHEAD in; kept for safety)
static uint8_t window[WINDOW_SIZE + 16];
static uint16_t prev[W_SIZE];
static uint16_t head[1 << HASH_BITS];
// the block's symbols: distance (0 for a literal) and literal or length - 3 (zlib uses 16 Ki)
static uint16_t sym_dist[GNU_LIT_BUFSIZE];
static uint8_t sym_lc[GNU_LIT_BUFSIZE];
// the trees' freq arrays (2n+1 entries: internal nodes follow the symbols)
static int32_t lfreq[2 * NUM_LIT + 1];
static int32_t dfreq[2 * NUM_OFF + 1];
static uint8_t len_code[256];
static uint8_t off_code[32768];
static uint8_t off_extra[NUM_OFF];

/** the loop's variables, as the encoders keep them (booleans as 0/1; S_LAST_DIST, S_BLOCK_START, S_EOFILE and S_LEVEL: GNU only) */
enum {
  S_STRSTART, S_LOOKAHEAD, S_INS_H, S_MATCH_LENGTH, S_MATCH_AVAILABLE, S_MATCH_START, S_SYM_NEXT,
  S_LAST_DIST, S_BLOCK_START, S_EOFILE, S_EMIT, S_FAST, S_GOOD, S_LAZY, S_NICE, S_CHAIN, S_LEVEL, S_COUNT
};
static int32_t state[S_COUNT];

EXPORT(window) uint8_t *window_at(void) { return window; }
EXPORT(prev) uint16_t *prev_at(void) { return prev; }
EXPORT(head) uint16_t *head_at(void) { return head; }
EXPORT(sym_dist) uint16_t *sym_dist_at(void) { return sym_dist; }
EXPORT(sym_lc) uint8_t *sym_lc_at(void) { return sym_lc; }
EXPORT(lfreq) int32_t *lfreq_at(void) { return lfreq; }
EXPORT(dfreq) int32_t *dfreq_at(void) { return dfreq; }
EXPORT(len_code) uint8_t *len_code_at(void) { return len_code; }
EXPORT(off_code) uint8_t *off_code_at(void) { return off_code; }
EXPORT(off_extra) uint8_t *off_extra_at(void) { return off_extra; }
EXPORT(state) int32_t *state_at(void) { return state; }

/**
 * The window's upper half moves down, and the hash chains with it (positions that fall out
 * become 0, "no entry"): zlib's slide_hash, eight entries an instruction with -msimd128.
 */
EXPORT(slide) void slide(void) {
  __builtin_memcpy(window, window + W_SIZE, W_SIZE); // (memory.copy, with -mbulk-memory)
  for (int i = 0; i < (1 << HASH_BITS); i++) head[i] = head[i] >= W_SIZE ? head[i] - W_SIZE : 0;
  for (int i = 0; i < W_SIZE; i++) prev[i] = prev[i] >= W_SIZE ? prev[i] - W_SIZE : 0;
}

/** Bytes a and b have in common from n on, up to MAX_MATCH. */
static inline int common(int a, int b, int n) {
  for (;;) {
    uint64_t x = load64_at(window + a + n) ^ load64_at(window + b + n);
    if (x) {
      n += __builtin_ctzll(x) >> 3;
      break;
    }
    n += 8;
    if (n >= MAX_MATCH) break;
  }
  return n < MAX_MATCH ? n : MAX_MATCH;
}

/**
 * longest_match: the best match for `scan` along the chain from cur_match, longer than
 * prev_length, stopping at one of `nice` bytes; sets *match_start when it finds one. It may
 * run into stale bytes past the input: callers clip it to the lookahead.
 */
static int longest_match(int cur_match, int scan, int prev_length, int nice, int *match_start) {
  int chain = state[S_CHAIN];
  int best_len = prev_length;
  const int limit = scan > MAX_DIST ? scan - MAX_DIST : 0;
  uint8_t scan_end1 = window[scan + best_len - 1];
  uint8_t scan_end = window[scan + best_len];
  const uint8_t s0 = window[scan], s1 = window[scan + 1];
  if (prev_length >= state[S_GOOD]) chain >>= 2;
  int start = -1;
  do {
    const int m = cur_match;
    if (window[m + best_len] != scan_end || window[m + best_len - 1] != scan_end1 || window[m] != s0 || window[m + 1] != s1) continue;
    // byte 2 is not compared: equal hashes and equal bytes 0 and 1 imply it (zlib relies on this)
    const int len = common(scan, m, 3);
    if (len > best_len) {
      start = m;
      best_len = len;
      if (len >= nice) break;
      scan_end1 = window[scan + best_len - 1];
      scan_end = window[scan + best_len];
    }
  } while ((cur_match = prev[cur_match & W_MASK]) > limit && --chain != 0);
  if (start >= 0) *match_start = start;
  return best_len;
}

static inline int insert(int str, int *ins_h) {
  *ins_h = ((*ins_h << HASH_SHIFT) ^ window[str + MIN_MATCH - 1]) & HASH_MASK;
  const int h = head[*ins_h];
  prev[str & W_MASK] = h;
  head[*ins_h] = str;
  return h;
}

/** Both loops' variables back into state[] for the caller. */
static void save(int strstart, int lookahead, int ins_h, int match_length, int match_available, int match_start, int symbols) {
  state[S_STRSTART] = strstart;
  state[S_LOOKAHEAD] = lookahead;
  state[S_INS_H] = ins_h;
  state[S_MATCH_LENGTH] = match_length;
  state[S_MATCH_AVAILABLE] = match_available;
  state[S_MATCH_START] = match_start;
  state[S_SYM_NEXT] = symbols;
}

/**
 * zlib: processes the position at strstart (the caller filled the window: at least
 * MIN_LOOKAHEAD bytes ahead, or any when finishing), then every next one while MIN_LOOKAHEAD
 * bytes are ahead. Returns 0 when the window is to be filled, 1 when the symbol buffer is
 * full: write the block ending at state[S_EMIT], empty the buffer, fill if need be, call again.
 */
EXPORT(step_zlib) int step_zlib(void) {
  const int fast = state[S_FAST];
  const int lazy = state[S_LAZY]; // deflate_fast's max_insert_length
  int strstart = state[S_STRSTART];
  int lookahead = state[S_LOOKAHEAD];
  int ins_h = state[S_INS_H];
  int match_length = state[S_MATCH_LENGTH];
  int match_available = state[S_MATCH_AVAILABLE];
  int match_start = state[S_MATCH_START];
  int sym = state[S_SYM_NEXT];
  int result = 0;
  for (int first = 1; first || lookahead >= MIN_LOOKAHEAD; first = 0) {
    int hash_head = 0;
    if (lookahead >= MIN_MATCH) hash_head = insert(strstart, &ins_h);
    // one search for both: deflate_fast keeps its last length when it does not search;
    // deflate_slow searches only while the previous match is shorter than max_lazy_match
    const int prev_length = match_length;
    const int prev_match = match_start;
    if (!fast) match_length = MIN_MATCH - 1;
    if (hash_head != 0 && (fast || prev_length < lazy) && strstart - hash_head <= MAX_DIST) {
      // (zlib stops searching at a match as long as the lookahead: GNU gzip does not)
      const int nice = state[S_NICE] < lookahead ? state[S_NICE] : lookahead;
      match_length = longest_match(hash_head, strstart, fast ? MIN_MATCH - 1 : prev_length, nice, &match_start);
      if (match_length > lookahead) match_length = lookahead;
      // a 3-byte match far back costs more than its literals
      if (!fast && match_length == MIN_MATCH && strstart - match_start > TOO_FAR) match_length = MIN_MATCH - 1;
    }

    if (fast) {
      if (match_length >= MIN_MATCH) {
        const int dist = strstart - match_start;
        const int lc = match_length - MIN_MATCH;
        sym_dist[sym] = dist;
        sym_lc[sym++] = lc;
        lfreq[len_code[lc] + 257]++;
        dfreq[off_code[dist - 1]]++;
        lookahead -= match_length;
        if (match_length <= lazy && lookahead >= MIN_MATCH) {
          // short match: insert every string it covers
          for (int k = match_length - 1; k > 0; k--) insert(++strstart, &ins_h);
          strstart++;
        } else {
          strstart += match_length;
          ins_h = ((window[strstart] << HASH_SHIFT) ^ window[strstart + 1]) & HASH_MASK;
        }
        match_length = 0;
      } else {
        const int c = window[strstart];
        sym_dist[sym] = 0;
        sym_lc[sym++] = c;
        lfreq[c]++;
        lookahead--;
        strstart++;
      }
      if (sym == ZLIB_SYM_END) {
        state[S_EMIT] = strstart;
        result = 1;
        break;
      }
      continue;
    }

    if (prev_length >= MIN_MATCH && match_length <= prev_length) {
      // the match found one byte back is at least as good: take it
      const int max_insert = strstart + lookahead - MIN_MATCH;
      const int dist = strstart - 1 - prev_match;
      const int lc = prev_length - MIN_MATCH;
      sym_dist[sym] = dist;
      sym_lc[sym++] = lc;
      lfreq[len_code[lc] + 257]++;
      dfreq[off_code[dist - 1]]++;
      lookahead -= prev_length - 1;
      for (int k = prev_length - 2; k > 0; k--) {
        if (++strstart <= max_insert) insert(strstart, &ins_h);
      }
      match_available = 0;
      match_length = MIN_MATCH - 1;
      strstart++;
      if (sym == ZLIB_SYM_END) {
        state[S_EMIT] = strstart;
        result = 1;
        break;
      }
    } else if (match_available) {
      // the byte before is a literal (its match, if any, lost to the one here); a full buffer
      // ends the block before this byte
      const int c = window[strstart - 1];
      sym_dist[sym] = 0;
      sym_lc[sym++] = c;
      lfreq[c]++;
      const int full = sym == ZLIB_SYM_END;
      if (full) state[S_EMIT] = strstart;
      strstart++;
      lookahead--;
      if (full) {
        result = 1;
        break;
      }
    } else {
      match_available = 1;
      strstart++;
      lookahead--;
    }
  }
  save(strstart, lookahead, ins_h, match_length, match_available, match_start, sym);
  return result;
}

/**
 * GNU gzip's ct_tally: records a symbol; true when the block is to end here. Besides a full
 * buffer, every 4096th symbol (levels 3-9) a rough estimate ends a block that compresses
 * better than 2:1 with few matches.
 */
static int gnu_tally(int dist, int lc, int strstart, int *last_lit, int *last_dist) {
  const int i = (*last_lit)++;
  sym_lc[i] = lc;
  sym_dist[i] = dist;
  if (dist == 0) {
    lfreq[lc]++;
  } else {
    lfreq[len_code[lc] + 257]++;
    dfreq[off_code[dist - 1]]++;
    (*last_dist)++;
  }
  const int n = *last_lit;
  if (state[S_LEVEL] > 2 && (n & 0xfff) == 0) {
    // a cheap upper bound on the block's size: 8 bits per symbol plus distance codes
    int out_length = n * 8;
    for (int d = 0; d < NUM_OFF; d++) out_length += dfreq[d] * (5 + off_extra[d]);
    out_length /= 8;
    const int in_length = strstart - state[S_BLOCK_START];
    if (*last_dist < n >> 1 && out_length < in_length / 2) return 1;
  }
  return n == GNU_LIT_BUFSIZE - 1 || *last_dist == GNU_DIST_BUFSIZE;
}

/**
 * GNU gzip: processes positions while MIN_LOOKAHEAD bytes are ahead (all of them once the
 * input has ended). Returns 0 when the window is to be filled or the input is done, 1 when a
 * block is to end at state[S_EMIT]: write it, call again.
 */
EXPORT(step_gnu) int step_gnu(void) {
  const int fast = state[S_FAST];
  const int max_lazy = state[S_LAZY]; // deflate_fast's max_insert_length
  const int nice = state[S_NICE];
  const int eofile = state[S_EOFILE];
  int strstart = state[S_STRSTART];
  int lookahead = state[S_LOOKAHEAD];
  int ins_h = state[S_INS_H];
  int match_length = state[S_MATCH_LENGTH];
  int match_available = state[S_MATCH_AVAILABLE];
  int match_start = state[S_MATCH_START];
  int last_lit = state[S_SYM_NEXT];
  int last_dist = state[S_LAST_DIST];
  int result = 0;
  while ((lookahead >= MIN_LOOKAHEAD || eofile) && lookahead != 0) {
    // (no insertion limit at the end of input here, unlike zlib)
    const int hash_head = insert(strstart, &ins_h);
    int prev_length = match_length;
    const int prev_match = match_start;
    if (!fast) match_length = MIN_MATCH - 1;
    if (hash_head != 0 && (fast || prev_length < max_lazy) && strstart - hash_head <= MAX_DIST && strstart <= WINDOW_SIZE - MIN_LOOKAHEAD) {
      match_length = longest_match(hash_head, strstart, fast ? MIN_MATCH - 1 : prev_length, nice, &match_start);
      if (match_length > lookahead) match_length = lookahead;
      // (when nothing better turned up, match_start is still prev_match; the test is moot then)
      if (!fast && match_length == MIN_MATCH && strstart - match_start > TOO_FAR) match_length--;
    }

    if (fast) {
      int flush;
      if (match_length >= MIN_MATCH) {
        flush = gnu_tally(strstart - match_start, match_length - MIN_MATCH, strstart, &last_lit, &last_dist);
        lookahead -= match_length;
        if (match_length <= max_lazy) {
          match_length--;
          do insert(++strstart, &ins_h);
          while (--match_length != 0);
          strstart++;
        } else {
          strstart += match_length;
          match_length = 0;
          ins_h = ((window[strstart] << HASH_SHIFT) ^ window[strstart + 1]) & HASH_MASK;
        }
      } else {
        flush = gnu_tally(0, window[strstart], strstart, &last_lit, &last_dist);
        lookahead--;
        strstart++;
      }
      if (flush) {
        state[S_EMIT] = strstart;
        result = 1;
        break;
      }
      continue;
    }

    if (prev_length >= MIN_MATCH && match_length <= prev_length) {
      // the match at the previous byte wins
      const int flush = gnu_tally(strstart - 1 - prev_match, prev_length - MIN_MATCH, strstart, &last_lit, &last_dist);
      lookahead -= prev_length - 1;
      prev_length -= 2;
      do insert(++strstart, &ins_h);
      while (--prev_length != 0);
      match_available = 0;
      match_length = MIN_MATCH - 1;
      strstart++;
      if (flush) {
        state[S_EMIT] = strstart;
        result = 1;
        break;
      }
    } else if (match_available) {
      // the previous byte goes out as a literal (its match, if any, was beaten); a block
      // ends before this byte
      const int flush = gnu_tally(0, window[strstart - 1], strstart, &last_lit, &last_dist);
      if (flush) state[S_EMIT] = strstart;
      strstart++;
      lookahead--;
      if (flush) {
        result = 1;
        break;
      }
    } else {
      match_available = 1;
      strstart++;
      lookahead--;
    }
  }
  save(strstart, lookahead, ins_h, match_length, match_available, match_start, last_lit);
  state[S_LAST_DIST] = last_dist;
  return result;
}

// ---------------------------------------------------------------------------------------
// compress_block (zlib-trees.ts compressBlock): the block's symbols in the codes ZlibTrees
// built (copied in per block), after the pending bits, as whole bytes to `out`.
static uint16_t lcode[NUM_LIT];
static uint16_t llen[NUM_LIT];
static uint16_t dcode[NUM_OFF];
static uint16_t dlen[NUM_OFF];
static uint8_t len_extra[32];
static int32_t len_base[32];
static int32_t off_base[32];
static uint8_t out[6 * GNU_LIT_BUFSIZE + 64];
static uint32_t bits[2]; // pending bits (< 16) and their count, in and out
EXPORT(lcode) uint16_t *lcode_at(void) { return lcode; }
EXPORT(llen) uint16_t *llen_at(void) { return llen; }
EXPORT(dcode) uint16_t *dcode_at(void) { return dcode; }
EXPORT(dlen) uint16_t *dlen_at(void) { return dlen; }
EXPORT(len_extra) uint8_t *len_extra_at(void) { return len_extra; }
EXPORT(len_base) int32_t *len_base_at(void) { return len_base; }
EXPORT(off_base) int32_t *off_base_at(void) { return off_base; }
EXPORT(out) uint8_t *out_at(void) { return out; }
EXPORT(bits) uint32_t *bits_at(void) { return bits; }

#define PUT(v, n) (acc |= (uint64_t)(uint32_t)(v) << nb, nb += (n))

/** Symbols [0, n) of sym_lc/sym_dist, then end of block; returns the bytes in out (< 16 bits stay in bits[]). */
EXPORT(compress_block) int compress_block(int n) {
  uint64_t acc = bits[0];
  int nb = (int)bits[1];
  int pos = 0;
  for (int i = 0; i < n; i++) {
    int dist = sym_dist[i];
    int lc = sym_lc[i];
    if (dist == 0) {
      PUT(lcode[lc], llen[lc]);
    } else {
      // length (≤ 15 + 5 bits), flush, distance (≤ 15 + 13): each fits on < 32 pending
      int code = len_code[lc];
      PUT(lcode[code + 257], llen[code + 257]);
      PUT(lc - len_base[code], len_extra[code]);
      flush32(out, &acc, &nb, &pos);
      dist--;
      code = off_code[dist];
      PUT(dcode[code], dlen[code]);
      PUT(dist - off_base[code], off_extra[code]);
    }
    flush32(out, &acc, &nb, &pos);
  }
  PUT(lcode[256], llen[256]);
  return end_bits(out, bits, acc, nb, pos);
}
