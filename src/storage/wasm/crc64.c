// CRC-64 as crc64.ts computes it (Go's hash/crc64, ISO polynomial: tar-split's file checksums),
// in C for WebAssembly: slicing-by-16 on 64-bit words, ~3.5x the TypeScript version's
// throughput (which stays as the fallback and the tests' reference). The caller copies at most
// input_size bytes in per call: short calls also let V8 move it to its optimized tier soon (a
// call that ran over 1 MiB stayed in the baseline tier, at 60% of the speed, for ~800 calls).
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define POLY 0xd800000000000000ull
#define BUF_SIZE (64 << 10)

/** table[k][b]: byte b followed by k zero bytes */
static uint64_t table[16][256];
static uint8_t input[BUF_SIZE];

EXPORT(input) uint8_t *input_at(void) { return input; }
EXPORT(input_size) uint32_t input_size(void) { return BUF_SIZE; }

EXPORT(init) void init(void) {
  for (int b = 0; b < 256; b++) {
    uint64_t c = b;
    for (int i = 0; i < 8; i++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
    table[0][b] = c;
  }
  for (int k = 1; k < 16; k++)
    for (int b = 0; b < 256; b++) table[k][b] = table[0][table[k - 1][b] & 0xff] ^ (table[k - 1][b] >> 8);
}

static inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  __builtin_memcpy(&v, p, 8);
  return v;
}

/** The running (inverted) CRC after input[0, n); crc is the inverted CRC so far. */
EXPORT(update) uint64_t update(uint64_t crc, uint32_t n) {
  const uint8_t *p = input;
  for (; n >= 16; n -= 16, p += 16) {
    uint64_t a = load64(p) ^ crc, b = load64(p + 8);
    crc = table[15][a & 0xff] ^ table[14][(a >> 8) & 0xff] ^ table[13][(a >> 16) & 0xff] ^ table[12][(a >> 24) & 0xff] ^
          table[11][(a >> 32) & 0xff] ^ table[10][(a >> 40) & 0xff] ^ table[9][(a >> 48) & 0xff] ^ table[8][a >> 56] ^
          table[7][b & 0xff] ^ table[6][(b >> 8) & 0xff] ^ table[5][(b >> 16) & 0xff] ^ table[4][(b >> 24) & 0xff] ^
          table[3][(b >> 32) & 0xff] ^ table[2][(b >> 40) & 0xff] ^ table[1][(b >> 48) & 0xff] ^ table[0][b >> 56];
  }
  for (; n; n--, p++) crc = table[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return crc;
}
