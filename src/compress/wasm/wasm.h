// What the WebAssembly parts share: exporting a function by name, unaligned loads, and the
// end of a DEFLATE bit writer's run.
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(#name)))

static inline uint32_t load32_at(const uint8_t *p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

static inline uint64_t load64_at(const uint8_t *p) {
  uint64_t v;
  __builtin_memcpy(&v, p, 8);
  return v;
}

/** A DEFLATE bit writer (bits gather LSB first in acc) moves 32 of them to out when it has that many. */
static inline void flush32(uint8_t *out, uint64_t *acc, int *nb, int *pos) {
  if (*nb < 32) return;
  uint32_t v = (uint32_t)*acc;
  __builtin_memcpy(out + *pos, &v, 4);
  *pos += 4;
  *acc >>= 32;
  *nb -= 32;
}

/**
 * A bit writer's run ends: whole 16-bit units of the pending bits go to out[pos...], the rest
 * (< 16, as BitWriter keeps them) back to bits[0] (value) and bits[1] (count); returns out's length.
 */
static inline int end_bits(uint8_t *out, uint32_t *bits, uint64_t acc, int nb, int pos) {
  while (nb >= 16) {
    out[pos++] = (uint8_t)acc;
    out[pos++] = (uint8_t)(acc >> 8);
    acc >>= 16;
    nb -= 16;
  }
  bits[0] = (uint32_t)acc;
  bits[1] = (uint32_t)nb;
  return pos;
}
