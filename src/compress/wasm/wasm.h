// What the WebAssembly parts share: exporting a function by name, and unaligned loads.
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
