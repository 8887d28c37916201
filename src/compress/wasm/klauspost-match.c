// The level-5 matcher of klauspost-flate.ts (KlauspostDeflater.encode) and the Huffman token
// writer (huffman-code.ts writeTokens), in C for WebAssembly: the same decisions, step for
// step, so the bytes are identical (the TypeScript ones stay as the fallback and the
// reference; tests compare both with each other and with Go's output). In WebAssembly the
// 7-byte hash is one 64-bit multiply (TypeScript needs a dozen 32-bit operations), matches are
// compared 8 bytes at a time and bits gather in 64 bits: most of a recompression's time.
//
// Each instance has its own memory: the history, the two hash tables and the tokens of one
// window live here, and the TypeScript side works on views of the same arrays. Go's encoder
// (go-flate.ts, go-huffman.ts) uses an instance of its own for the token writer, Go's token
// counting, its literal-only blocks (count_bytes, write_literals) and its level-1 matcher (at
// the end of this file), which share the tokens and the level-1 block.
#include "wasm.h"

#define MAX_STORE 65535
#define MAX_MATCH_OFFSET (1 << 15)
#define MAX_MATCH_LENGTH 258
#define TABLE_BITS 15
#define TABLE_SIZE (1 << TABLE_BITS)
#define HASH_SHIFT (32 - TABLE_BITS)
#define ALLOC_HISTORY (MAX_STORE * 5)
#define INPUT_MARGIN (12 - 1)
#define MATCH_TYPE (1 << 30)
#define PRIME4 0x9e3779b1u
#define PRIME7 0x00cf1bbcdcbfa563ull

// (16 bytes of slack: the 8-byte loads near the end read past the history, never use it)
static uint8_t hist[ALLOC_HISTORY + 16];
static int32_t table[TABLE_SIZE];
static int32_t btable[2 * TABLE_SIZE]; // [2h] most recent entry, [2h+1] the one before
static int32_t tok[MAX_STORE + 1];
static int32_t lit_hist[256];
static int32_t extra_hist[32];
static int32_t off_hist[32];
static uint8_t off_code[32768];
static uint8_t len_code[256];
// the token writer's tables (deflate-tables.ts), codes of the block (copied in per block), output
static int32_t len_base[32];
static int32_t off_base[32];
static uint8_t len_extra[32];
static uint8_t off_extra[32];
static uint16_t lit_codes[288];
static uint8_t lit_lens[288];
static uint16_t off_codes[32];
static uint8_t off_lens[32];
static uint8_t out[6 * (MAX_STORE + 1) + 64];
static uint32_t bits[2]; // pending bits (< 16) and their count, in and out
// Go's block writer (go-huffman.ts) writes its tokens here too, and counts them as Go does
static int32_t go_lit_freq[286]; // literals, end of block (not counted here), length codes from 257
static int32_t go_off_freq[30];
EXPORT(go_lit_freq) int32_t *go_lit_freq_at(void) { return go_lit_freq; }
EXPORT(go_off_freq) int32_t *go_off_freq_at(void) { return go_off_freq; }

/** Go's indexTokens, the counting: tok[0, n) into go_lit_freq and go_off_freq. */
EXPORT(count_tokens) void count_tokens(int n) {
  for (int i = 0; i < 286; i++) go_lit_freq[i] = 0;
  for (int i = 0; i < 30; i++) go_off_freq[i] = 0;
  for (int i = 0; i < n; i++) {
    const int32_t t = tok[i];
    if (t < 256) {
      go_lit_freq[t]++;
    } else {
      go_lit_freq[257 + len_code[(t >> 22) & 0xff]]++;
      go_off_freq[(t >> 16) & 31]++;
    }
  }
}

EXPORT(hist) uint8_t *hist_at(void) { return hist; }
EXPORT(table) int32_t *table_at(void) { return table; }
EXPORT(btable) int32_t *btable_at(void) { return btable; }
EXPORT(tok) int32_t *tok_at(void) { return tok; }
EXPORT(lit_hist) int32_t *lit_hist_at(void) { return lit_hist; }
EXPORT(extra_hist) int32_t *extra_hist_at(void) { return extra_hist; }
EXPORT(off_hist) int32_t *off_hist_at(void) { return off_hist; }
EXPORT(off_code) uint8_t *off_code_at(void) { return off_code; }
EXPORT(len_code) uint8_t *len_code_at(void) { return len_code; }
EXPORT(len_base) int32_t *len_base_at(void) { return len_base; }
EXPORT(off_base) int32_t *off_base_at(void) { return off_base; }
EXPORT(len_extra) uint8_t *len_extra_at(void) { return len_extra; }
EXPORT(off_extra) uint8_t *off_extra_at(void) { return off_extra; }
EXPORT(lit_codes) uint16_t *lit_codes_at(void) { return lit_codes; }
EXPORT(lit_lens) uint8_t *lit_lens_at(void) { return lit_lens; }
EXPORT(off_codes) uint16_t *off_codes_at(void) { return off_codes; }
EXPORT(off_lens) uint8_t *off_lens_at(void) { return off_lens; }
EXPORT(out) uint8_t *out_at(void) { return out; }
EXPORT(bits) uint32_t *bits_at(void) { return bits; }

static inline uint32_t load32(int i) { return load32_at(hist + i); }
static inline uint64_t load64(int i) { return load64_at(hist + i); }

static inline uint32_t hash4(uint32_t w) { return (w * PRIME4) >> HASH_SHIFT; }

/** slot of the 7-byte hash in btable (2 * hash) */
static inline uint32_t hash7(int i) { return (uint32_t)(((load64(i) << 8) * PRIME7) >> (64 - TABLE_BITS)) << 1; }

/** Number of equal bytes at a and b (a > b), not looking at or beyond `limit` (for a). */
static inline int match_len(int a, int b, int limit) {
  int start = a;
  while (a + 8 <= limit) {
    uint64_t x = load64(a) ^ load64(b);
    if (x) return a - start + (__builtin_ctzll(x) >> 3);
    a += 8;
    b += 8;
  }
  while (a < limit && hist[a] == hist[b]) {
    a++;
    b++;
  }
  return a - start;
}

static inline int min(int a, int b) { return a < b ? a : b; }

static inline int match_at(int s, int t, uint32_t first4, int end) {
  if (s - t >= MAX_MATCH_OFFSET || load32(t) != first4) return 0;
  return match_len(s + 4, t + 4, min(s + MAX_MATCH_LENGTH, end)) + 4;
}

static inline void add_long(uint32_t h, int32_t v) {
  btable[h + 1] = btable[h];
  btable[h] = v;
}

/** Tokens for hist[s0, end) after the n already in tok; returns the new count. */
EXPORT(encode) int encode(int s0, int end, int cur, int n) {
  const int s_limit = end - INPUT_MARGIN;
  int next_emit = s0;
  int s = s0;
  uint32_t hs = hash4(load32(s));
  uint32_t hl = hash7(s);

  for (;;) {
    int next_s = s;
    int l = 0;
    int tp = 0;
    uint32_t cv = load32(s);
    for (;;) {
      s = next_s;
      next_s = s + 1 + ((s - next_emit) >> 6);
      if (next_s > s_limit) goto done;
      int32_t s_cand = table[hs];
      int32_t l_cur = btable[hl];
      int32_t l_prev = btable[hl + 1];
      uint32_t next = load32(next_s);
      table[hs] = s + cur;
      btable[hl + 1] = l_cur;
      btable[hl] = s + cur;
      uint32_t nhs = hash4(next);
      uint32_t nhl = hash7(next_s);

      tp = l_cur - cur;
      if (s - tp < MAX_MATCH_OFFSET) {
        if (cv == load32(tp)) {
          table[nhs] = next_s + cur;
          add_long(nhl, next_s + cur);
          int t2 = l_prev - cur;
          if (s - t2 < MAX_MATCH_OFFSET && cv == load32(t2)) {
            l = match_len(s + 4, tp + 4, min(s + MAX_MATCH_LENGTH, end)) + 4;
            int ml = match_len(s + 4, t2 + 4, min(s + MAX_MATCH_LENGTH, end)) + 4;
            if (ml > l) {
              tp = t2;
              l = ml;
            }
          }
          break;
        }
        tp = l_prev - cur;
        if (s - tp < MAX_MATCH_OFFSET && cv == load32(tp)) {
          table[nhs] = next_s + cur;
          add_long(nhl, next_s + cur);
          break;
        }
      }

      tp = s_cand - cur;
      if (s - tp < MAX_MATCH_OFFSET && cv == load32(tp)) {
        l = match_len(s + 4, tp + 4, min(s + MAX_MATCH_LENGTH, end)) + 4;
        int32_t c2 = btable[nhl];
        int32_t p2 = btable[nhl + 1];
        table[nhs] = next_s + cur;
        btable[nhl + 1] = c2;
        btable[nhl] = next_s + cur;
        int t2 = c2 - cur;
        if (next_s - t2 < MAX_MATCH_OFFSET) {
          int ml = match_at(next_s, t2, next, end);
          if (ml <= l) {
            t2 = p2 - cur;
            ml = match_at(next_s, t2, next, end);
          }
          if (ml > l) {
            tp = t2;
            s = next_s;
            l = ml;
          }
        }
        break;
      }
      cv = next;
      hs = nhs;
      hl = nhl;
    }

    if (l == 0) l = match_len(s + 4, tp + 4, end) + 4;
    else if (l == MAX_MATCH_LENGTH) l += match_len(s + l, tp + l, end);

    int s_at = s + l;
    if (l < 30 && s_at < s_limit) {
      int t2 = btable[hash7(s_at)] - cur - l + 2;
      int s2 = s + 2;
      int off = s2 - t2;
      if (t2 >= 0 && off < MAX_MATCH_OFFSET && off > 0) {
        int l2 = match_len(s2, t2, end);
        if (l2 > l) {
          tp = t2;
          l = l2;
          s = s2;
        }
      }
    }

    while (tp > 0 && s > next_emit && hist[tp - 1] == hist[s - 1]) {
      s--;
      tp--;
      l++;
    }
    for (int i = next_emit; i < s; i++) {
      uint8_t v = hist[i];
      tok[n++] = v;
      lit_hist[v]++;
    }

    int xoff = s - tp - 1;
    int oc = off_code[xoff];
    int32_t off_bits = MATCH_TYPE | (oc << 16) | xoff;
    for (int rest = l; rest > 0;) {
      int xl = rest;
      if (xl > MAX_MATCH_LENGTH) xl = xl > MAX_MATCH_LENGTH + 3 ? MAX_MATCH_LENGTH : MAX_MATCH_LENGTH - 3;
      rest -= xl;
      xl -= 3;
      extra_hist[len_code[xl] + 1]++;
      off_hist[oc]++;
      tok[n++] = off_bits | (xl << 22);
    }

    s += l;
    next_emit = s;
    if (next_s >= s) s = next_s + 1;
    if (s >= s_limit) goto done;

    int i = s - l + 1;
    if (i < s - 1) {
      table[hash4(load32(i))] = i + cur;
      add_long(hash7(i), i + cur);
      add_long(hash7(i + 1), i + 1 + cur);
      table[hash4(load32(i + 2))] = i + 2 + cur;
      for (i += 4; i < s - 1; i += 3) {
        add_long(hash7(i), i + cur);
        table[hash4(load32(i + 1))] = i + 1 + cur;
      }
    }
    table[hash4(load32(s - 1))] = s - 1 + cur;
    add_long(hash7(s - 1), s - 1 + cur);
    hs = hash4(load32(s));
    hl = hash7(s);
  }

done:
  if (next_emit < end && n > 0) {
    for (int i = next_emit; i < end; i++) {
      uint8_t v = hist[i];
      tok[n++] = v;
      lit_hist[v]++;
    }
  }
  return n;
}

/**
 * tok[0, n) (literals and matches, no EOB) in the block's codes, after the pending bits; writes
 * whole bytes to out and returns their count, leaving fewer than 16 bits pending.
 */
EXPORT(write_tokens) int write_tokens(int n) {
  uint64_t acc = bits[0];
  int nb = (int)bits[1];
  int pos = 0;
  for (int i = 0; i < n; i++) {
    int32_t t = tok[i];
    if (t < 256) {
      acc |= (uint64_t)lit_codes[t] << nb;
      nb += lit_lens[t];
    } else {
      // a length (code ≤ 15 bits + 5 extra) and an offset (≤ 15 + 13): the accumulator is
      // emptied to under 32 bits before each, so 64 always hold them
      int xlen = (t >> 22) & 0xff;
      int lc = len_code[xlen];
      acc |= (uint64_t)lit_codes[257 + lc] << nb;
      nb += lit_lens[257 + lc];
      acc |= (uint64_t)(uint32_t)(xlen - len_base[lc]) << nb;
      nb += len_extra[lc];
      flush32(out, &acc, &nb, &pos);
      int oc = (t >> 16) & 31;
      acc |= (uint64_t)off_codes[oc] << nb;
      nb += off_lens[oc];
      acc |= (uint64_t)(uint32_t)((t & 0xffff) - off_base[oc]) << nb;
      nb += off_extra[oc];
    }
    flush32(out, &acc, &nb, &pos);
  }
  return end_bits(out, bits, acc, nb, pos);
}

/**
 * Go's literal-only block (writeBlockHuff), for input already in this memory (Go's level-1 block,
 * gf_src): the bytes of p[0, n) counted into go_lit_freq (the rest of it zeroed), ...
 */
EXPORT(count_bytes) void count_bytes(const uint8_t *p, int n) {
  for (int i = 0; i < 286; i++) go_lit_freq[i] = 0;
  for (int i = 0; i < n; i++) go_lit_freq[p[i]]++;
}

/** ... then written in the block's literal code, as write_tokens writes tokens. */
EXPORT(write_literals) int write_literals(const uint8_t *p, int n) {
  uint64_t acc = bits[0];
  int nb = (int)bits[1];
  int pos = 0;
  int i = 0;
  // two codes of ≤ 15 bits on top of < 32 pending fit 64
  for (; i + 1 < n; i += 2) {
    acc |= (uint64_t)lit_codes[p[i]] << nb;
    nb += lit_lens[p[i]];
    acc |= (uint64_t)lit_codes[p[i + 1]] << nb;
    nb += lit_lens[p[i + 1]];
    flush32(out, &acc, &nb, &pos);
  }
  if (i < n) {
    acc |= (uint64_t)lit_codes[p[i]] << nb;
    nb += lit_lens[p[i]];
    flush32(out, &acc, &nb, &pos);
  }
  return end_bits(out, bits, acc, nb, pos);
}

// ---------------------------------------------------------------------------------------
// Go compress/flate's level 1 (deflatefast.go), for go-flate.ts's FastEngine, here beside the
// token memory the writer reads: its block (gf_src), the block before (gf_prev) and its hash
// table (positions offset by `cur`, and the 4 bytes found there). The same decisions as
// FastEngine.encode, which stays as the fallback and the reference.
#define GF_TABLE_BITS 14
#define GF_INPUT_MARGIN 15
#define GF_WINDOW (1 << 15)
#define GF_MAX_MATCH 258
static uint8_t gf_src[MAX_STORE + 16];
static uint8_t gf_prev[MAX_STORE];
static int32_t gf_off[1 << GF_TABLE_BITS];
static int32_t gf_val[1 << GF_TABLE_BITS];
EXPORT(gf_src) uint8_t *gf_src_at(void) { return gf_src; }
EXPORT(gf_prev) uint8_t *gf_prev_at(void) { return gf_prev; }
EXPORT(gf_off) int32_t *gf_off_at(void) { return gf_off; }
EXPORT(gf_val) int32_t *gf_val_at(void) { return gf_val; }

static inline uint32_t gf_hash(uint32_t u) { return (u * 0x1e35a7bdu) >> (32 - GF_TABLE_BITS); }

/** Match length at gf_src[s:] against gf_src[t:] (t < 0: starting in the previous block), at most 254. */
static int gf_match_len(int s, int t, int len, int prev_len) {
  const int s1 = s + GF_MAX_MATCH - 4 < len ? s + GF_MAX_MATCH - 4 : len;
  if (t >= 0) {
    int n = 0;
    while (s + n + 8 <= s1) {
      uint64_t x = load64_at(gf_src + t + n) ^ load64_at(gf_src + s + n);
      if (x) return n + (__builtin_ctzll(x) >> 3);
      n += 8;
    }
    while (s + n < s1 && gf_src[t + n] == gf_src[s + n]) n++;
    return n;
  }
  const int tp = prev_len + t;
  if (tp < 0) return 0;
  const int in_prev = prev_len - tp < s1 - s ? prev_len - tp : s1 - s;
  int n = 0;
  while (n < in_prev && gf_prev[tp + n] == gf_src[s + n]) n++;
  if (n < in_prev || s + n == s1) return n;
  // ran off the end of the previous block: continue at the start of this one
  int k = 0;
  while (s + n + k < s1 && gf_src[k] == gf_src[s + n + k]) k++;
  return n + k;
}

/** Tokenizes gf_src[0, len) (len at least 17) into tok; returns the token count. */
EXPORT(go_fast_encode) int go_fast_encode(int len, int cur, int prev_len) {
  const int s_limit = len - GF_INPUT_MARGIN;
  int ntok = 0;
  int next_emit = 0;
  int s = 0;
  uint32_t cv = load32_at(gf_src);
  uint32_t next_hash = gf_hash(cv);
  for (;;) {
    // Snappy's skipping: after 32 misses look at every 2nd byte, then every 3rd, ...
    int skip = 32;
    int next_s = s;
    int cand_off = 0;
    for (;;) {
      s = next_s;
      const int stride = skip >> 5;
      next_s = s + stride;
      skip += stride;
      if (next_s > s_limit) goto done;
      cand_off = gf_off[next_hash];
      const uint32_t cand_val = (uint32_t)gf_val[next_hash];
      const uint32_t now = load32_at(gf_src + next_s);
      gf_off[next_hash] = s + cur;
      gf_val[next_hash] = (int32_t)cv;
      next_hash = gf_hash(now);
      if (s - (cand_off - cur) > GF_WINDOW || cv != cand_val) {
        cv = now;
        continue;
      }
      break;
    }
    for (int i = next_emit; i < s; i++) tok[ntok++] = gf_src[i];
    for (;;) {
      // 4 bytes match at s; extend, emit, and try again right after the match
      s += 4;
      const int t = cand_off - cur + 4;
      const int l = gf_match_len(s, t, len, prev_len);
      const int xoff = s - t - 1;
      tok[ntok++] = MATCH_TYPE | ((l + 4 - 3) << 22) | (off_code[xoff] << 16) | xoff;
      s += l;
      next_emit = s;
      if (s >= s_limit) goto done;
      const uint32_t x0 = load32_at(gf_src + s - 1);
      const uint32_t h0 = gf_hash(x0);
      gf_off[h0] = cur + s - 1;
      gf_val[h0] = (int32_t)x0;
      const uint32_t x1 = load32_at(gf_src + s);
      const uint32_t h1 = gf_hash(x1);
      cand_off = gf_off[h1];
      const uint32_t cand_val = (uint32_t)gf_val[h1];
      gf_off[h1] = cur + s;
      gf_val[h1] = (int32_t)x1;
      if (s - (cand_off - cur) > GF_WINDOW || x1 != cand_val) {
        cv = load32_at(gf_src + s + 1);
        next_hash = gf_hash(cv);
        s++;
        break;
      }
    }
  }
done:
  for (int i = next_emit; i < len; i++) tok[ntok++] = gf_src[i];
  return ntok;
}
