// The hash-chain matcher of go-flate.ts (ChainEngine.step and findMatch: Go compress/flate at
// levels 2-9, behind docker's and BuildKit's gzip layers), in C for WebAssembly: the same
// decisions, step for step, so the tokens are identical (the TypeScript one stays as the
// fallback and the reference; tests compare both with each other and with Go's output).
// Matches are compared 8 bytes at a time here; that walk is most of a level-6 compression.
//
// The window, hash tables and tokens live in this instance's memory (TypeScript slides the
// window and writes the blocks on views of them); the matcher's variables go in and out
// through `state`, and step() returns whenever a block of tokens is to be written.
#include "wasm.h"

#define WINDOW (1 << 15)
#define WINDOW_MASK (WINDOW - 1)
#define MIN_MATCH 4
#define MAX_MATCH 258
#define MIN_LOOKAHEAD (MIN_MATCH + MAX_MATCH)
#define MAX_BLOCK_TOKENS (1 << 14)
#define HASH_BITS 17
#define HASH_SHIFT (32 - HASH_BITS)
#define HASH_MUL 0x1e35a7bdu
#define MATCH_TYPE (1 << 30)

// (16 bytes of slack: 8-byte loads near the end read past the window, never use it)
static uint8_t win[2 * WINDOW + 16];
static int32_t head[1 << HASH_BITS];
static int32_t prev[WINDOW];
static int32_t tok[MAX_BLOCK_TOKENS + 1];
static uint8_t off_code[32768];

/** the matcher's variables, as ChainEngine keeps them (booleans as 0/1) */
enum {
  S_INDEX, S_CHAIN_HEAD, S_LENGTH, S_OFFSET, S_BYTE_AVAILABLE, S_NTOK, S_HASH_OFFSET,
  S_WINDOW_END, S_SYNC, S_GREEDY, S_LAZY, S_FAST_SKIP, S_NICE, S_TRIES, S_EMIT_INDEX, S_STOP, S_COUNT
};
static int32_t state[S_COUNT];

EXPORT(win) uint8_t *win_at(void) { return win; }
EXPORT(head) int32_t *head_at(void) { return head; }
EXPORT(prev) int32_t *prev_at(void) { return prev; }
EXPORT(tok) int32_t *tok_at(void) { return tok; }
EXPORT(off_code) uint8_t *off_code_at(void) { return off_code; }
EXPORT(state) int32_t *state_at(void) { return state; }

static inline uint64_t load64(int i) { return load64_at(win + i); }

/** Longest match (over 3 bytes) along the chain from candidate, as length << 16 | distance, or 0. */
static int find_match(int pos, int candidate, int max_len, int nice, int tries, int hash_offset) {
  int length = MIN_MATCH - 1;
  uint8_t w_end = win[pos + length];
  const int min_index = pos - WINDOW;
  int result = 0;
  for (int i = candidate; tries > 0; tries--) {
    if (win[i + length] == w_end) {
      int n = 0;
      for (;;) {
        if (n + 8 > max_len) {
          while (n < max_len && win[i + n] == win[pos + n]) n++;
          break;
        }
        uint64_t x = load64(i + n) ^ load64(pos + n);
        if (x) {
          n += __builtin_ctzll(x) >> 3;
          break;
        }
        n += 8;
      }
      if (n > length && (n > MIN_MATCH || pos - i <= 4096)) {
        length = n;
        result = (n << 16) | (pos - i);
        if (n >= nice) break;
        w_end = win[pos + n];
      }
    }
    // the slot of the oldest reachable position may already hold a newer one
    if (i == min_index) break;
    i = prev[i & WINDOW_MASK] - hash_offset;
    if (i < min_index || i < 0) break;
  }
  return result;
}

static inline uint32_t hash4(uint32_t key) { return (key * HASH_MUL) >> HASH_SHIFT; }

/** Enters positions [from, to) in the hash chains, in order, as the matcher would have (a segment's start). */
EXPORT(enter) void enter(int from, int to, int hash_offset) {
  for (int i = from; i < to; i++) {
    uint32_t h = hash4((uint32_t)win[i] << 24 | (uint32_t)win[i + 1] << 16 | (uint32_t)win[i + 2] << 8 | win[i + 3]);
    prev[i & WINDOW_MASK] = head[h];
    head[h] = i + hash_offset;
  }
}

/**
 * Tokenizes while at least MIN_LOOKAHEAD bytes are ahead (all of them when syncing), stopping
 * before the first iteration at or past state[S_STOP] (a segment's end). Returns 0
 * when done, 1 when tok holds a full block ending at state[S_EMIT_INDEX] (write it, empty tok,
 * call again), 2 when the last block is to be written and the step is done.
 */
EXPORT(step) int step(void) {
  const int window_end = state[S_WINDOW_END];
  const int sync = state[S_SYNC];
  if (window_end - state[S_INDEX] < MIN_LOOKAHEAD && !sync) return 0;
  const int greedy = state[S_GREEDY];
  const int lazy_limit = state[S_LAZY];
  const int fast_skip = state[S_FAST_SKIP];
  const int nice = state[S_NICE];
  const int tries = state[S_TRIES];
  const int hash_offset = state[S_HASH_OFFSET];
  const int max_insert = window_end - (MIN_MATCH - 1);
  const int stop_at = state[S_STOP];
  int index = state[S_INDEX];
  int chain_head = state[S_CHAIN_HEAD];
  int length = state[S_LENGTH];
  int offset = state[S_OFFSET];
  int byte_available = state[S_BYTE_AVAILABLE];
  int ntok = state[S_NTOK];
  int result = 0;

  for (;;) {
    if (index >= stop_at) break;
    const int lookahead = window_end - index;
    if (lookahead < MIN_LOOKAHEAD) {
      if (!sync) break;
      if (lookahead == 0) {
        if (byte_available) {
          tok[ntok++] = win[index - 1];
          byte_available = 0;
        }
        if (ntok > 0) {
          state[S_EMIT_INDEX] = index;
          result = 2;
        }
        break;
      }
    }
    if (index < max_insert) {
      uint32_t h = hash4((uint32_t)win[index] << 24 | (uint32_t)win[index + 1] << 16 | (uint32_t)win[index + 2] << 8 | win[index + 3]);
      chain_head = head[h];
      prev[index & WINDOW_MASK] = chain_head;
      head[h] = index + hash_offset;
    }
    const int prev_length = length;
    const int prev_offset = offset;
    length = MIN_MATCH - 1;
    offset = 0;
    const int min_index = index > WINDOW ? index - WINDOW : 0;
    if (chain_head - hash_offset >= min_index &&
        (greedy ? lookahead > MIN_MATCH - 1 : lookahead > prev_length && prev_length < lazy_limit)) {
      const int max_len = lookahead < MAX_MATCH ? lookahead : MAX_MATCH;
      const int m = find_match(index, chain_head - hash_offset, max_len, nice < max_len ? nice : max_len, tries, hash_offset);
      if (m != 0) {
        length = (int)((uint32_t)m >> 16);
        offset = m & 0xffff;
      }
    }
    if (greedy ? length >= MIN_MATCH : prev_length >= MIN_MATCH && length <= prev_length) {
      // greedy: take this match; lazy: the previous byte's match was at least as good
      if (greedy) tok[ntok++] = MATCH_TYPE | ((length - 3) << 22) | (off_code[offset - 1] << 16) | (offset - 1);
      else tok[ntok++] = MATCH_TYPE | ((prev_length - 3) << 22) | (off_code[prev_offset - 1] << 16) | (prev_offset - 1);
      if (length <= fast_skip) {
        const int new_index = greedy ? index + length : index + prev_length - 1;
        // insert the matched positions (those with 4 bytes ahead); the 4-byte key rolls along
        const int stop = new_index < max_insert ? new_index : max_insert;
        index++;
        if (index < stop) {
          uint32_t key = (uint32_t)win[index] << 16 | (uint32_t)win[index + 1] << 8 | win[index + 2];
          for (; index < stop; index++) {
            key = key << 8 | win[index + 3];
            uint32_t h = hash4(key);
            prev[index & WINDOW_MASK] = head[h];
            head[h] = index + hash_offset;
          }
        }
        if (index < new_index) index = new_index;
        if (!greedy) {
          byte_available = 0;
          length = MIN_MATCH - 1;
        }
      } else {
        index += length;
      }
      if (ntok == MAX_BLOCK_TOKENS) {
        state[S_EMIT_INDEX] = index;
        result = 1;
        break;
      }
    } else {
      int full = 0;
      if (greedy || byte_available) {
        const int i = greedy ? index : index - 1;
        tok[ntok++] = win[i];
        if (ntok == MAX_BLOCK_TOKENS) {
          state[S_EMIT_INDEX] = i + 1;
          full = 1;
        }
      }
      index++;
      if (!greedy) byte_available = 1;
      if (full) {
        result = 1;
        break;
      }
    }
  }

  state[S_INDEX] = index;
  state[S_CHAIN_HEAD] = chain_head;
  state[S_LENGTH] = length;
  state[S_OFFSET] = offset;
  state[S_BYTE_AVAILABLE] = byte_available;
  state[S_NTOK] = ntok;
  return result;
}
