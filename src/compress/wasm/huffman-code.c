// The Huffman code construction of huffman-code.ts (HuffmanCode.generate and bitCounts: Go's
// compress/flate, which klauspost's keeps), in C for WebAssembly: the same decisions, step for
// step, so the code lengths and codes are identical (the TypeScript one stays as the fallback
// and the reference; tests compare both). It runs once per alphabet per block of every
// encoder, and in TypeScript it was a sixth of a pgzip block thread's time.
#include "wasm.h"

#define MAX_SYMBOLS 320
#define FREQ_MAX 0x7fffffff
#define MAX_NODES (1 << 14)

static int32_t freq[MAX_SYMBOLS];
static uint8_t lens[MAX_SYMBOLS];
static uint16_t codes[MAX_SYMBOLS];

EXPORT(freq) int32_t *freq_at(void) { return freq; }
EXPORT(lens) uint8_t *lens_at(void) { return lens; }
EXPORT(codes) uint16_t *codes_at(void) { return codes; }

/** (freq << 9 | symbol) of the used symbols, sorted */
static int32_t order[MAX_SYMBOLS + 1];
static int32_t order_freq[MAX_SYMBOLS + 1];
static int32_t bit_count[17];
static int32_t next_code[17];
static int32_t last_freq[18], next_char[18], next_pair[18], needed[18], own[18], lower[18];
/** a row's snapshot: its leaf count, and the chain node of the row below */
static int32_t node_count[MAX_NODES], node_lower[MAX_NODES];

/** Go's length-limited construction (huffman-code.ts bitCounts); -1 if the leaves do not add up. */
static int bit_counts(int n, int max_bits) {
  const int32_t *f = order_freq;
  if (max_bits > n - 1) max_bits = n - 1;
  int nodes = 1; // node 0: all zero
  for (int level = 0; level <= max_bits + 1; level++) {
    last_freq[level] = next_char[level] = next_pair[level] = needed[level] = own[level] = lower[level] = 0;
  }
  for (int level = 1; level <= max_bits; level++) {
    last_freq[level] = f[1];
    next_char[level] = f[2];
    next_pair[level] = level == 1 ? FREQ_MAX : f[0] + f[1];
    own[level] = 2;
  }
  needed[max_bits] = 2 * n - 4;
  int level = max_bits;
  for (;;) {
    if (next_pair[level] == FREQ_MAX && next_char[level] == FREQ_MAX) {
      // out of leaves and pairs at this level: it is finished for good
      needed[level] = 0;
      next_pair[level + 1] = FREQ_MAX;
      level++;
      continue;
    }
    const int32_t prev_freq = last_freq[level];
    if (next_char[level] < next_pair[level]) {
      const int k = own[level] + 1;
      last_freq[level] = next_char[level];
      own[level] = k;
      next_char[level] = f[k];
    } else {
      last_freq[level] = next_pair[level];
      if (nodes == MAX_NODES) return -1;
      node_count[nodes] = own[level - 1];
      node_lower[nodes] = lower[level - 1];
      lower[level] = nodes++;
      needed[level - 1] = 2;
    }
    if (--needed[level] == 0) {
      if (level == max_bits) break;
      next_pair[level + 1] = prev_freq + last_freq[level];
      level++;
    } else {
      while (needed[level - 1] > 0) level--;
    }
  }
  if (own[max_bits] != n) return -1;
  // unroll the top row: counts[max_bits], counts[max_bits-1], ... down to 0
  for (int b = 0; b < 17; b++) bit_count[b] = 0;
  int above = own[max_bits];
  int node = lower[max_bits];
  for (int bits = 1; bits <= max_bits; bits++) {
    const int below = node == 0 ? 0 : node_count[node];
    bit_count[bits] = above - below;
    above = below;
    node = node == 0 ? 0 : node_lower[node];
  }
  return max_bits;
}

static uint16_t reverse_bits(int code, int len) {
  int r = 0;
  for (int i = 0; i < len; i++) {
    r = r << 1 | (code & 1);
    code >>= 1;
  }
  return (uint16_t)r;
}

/** The code of symbols [0, count) from freq[], lengths at most max_bits, into lens[] and codes[]; -1 on a broken construction. */
EXPORT(generate) int generate(int count, int max_bits) {
  int used = 0;
  for (int i = 0; i < count; i++) {
    if (freq[i] != 0) order[used++] = freq[i] << 9 | i;
    else lens[i] = 0, codes[i] = 0;
  }
  if (used <= 2) {
    // one or two symbols: one bit each, numbered in symbol order
    for (int k = 0; k < used; k++) {
      const int s = order[k] & 511;
      lens[s] = 1;
      codes[s] = (uint16_t)k;
    }
    return 0;
  }
  // Shell sort (Ciura's gaps): at most a few hundred keys, all distinct, so any sort gives the same order
  static const int gaps[] = {132, 57, 23, 10, 4, 1};
  for (int g = 0; g < 6; g++) {
    const int gap = gaps[g];
    for (int i = gap; i < used; i++) {
      const int32_t v = order[i];
      int j = i;
      while (j >= gap && order[j - gap] > v) {
        order[j] = order[j - gap];
        j -= gap;
      }
      order[j] = v;
    }
  }
  for (int k = 0; k < used; k++) order_freq[k] = (int32_t)((uint32_t)order[k] >> 9);
  order_freq[used] = FREQ_MAX;
  const int top = bit_counts(used, max_bits);
  if (top < 0) return -1;
  // hand out lengths from the most frequent end: bit_count[1] symbols get 1 bit, and so on
  int end = used;
  for (int bits = 1; bits <= top; bits++) {
    for (int k = end - bit_count[bits]; k < end; k++) lens[order[k] & 511] = (uint8_t)bits;
    end -= bit_count[bits];
  }
  // canonical codes: by length, then symbol
  int code = 0;
  for (int bits = 1; bits <= top; bits++) {
    code = (code + bit_count[bits - 1]) << 1;
    next_code[bits] = code;
  }
  for (int s = 0; s < count; s++) {
    const int l = lens[s];
    if (l != 0) codes[s] = reverse_bits(next_code[l]++, l);
  }
  return 0;
}
