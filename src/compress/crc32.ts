// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as used by the gzip trailer. node:zlib
// only exports crc32 from Node 22 on, so this is a plain slicing-by-4 table implementation.

const TABLES = (() => {
  const t = new Int32Array(4 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 4; k++) {
      const p = t[(k - 1) * 256 + n];
      t[k * 256 + n] = t[p & 0xff] ^ (p >>> 8);
    }
  }
  return t;
})();

/** Continue a CRC-32 over `data`; start with crc = 0. Returns an unsigned 32-bit value. */
export function crc32(data: Uint8Array, crc = 0): number {
  const t = TABLES;
  let c = ~crc;
  let i = 0;
  const n = data.length;
  const end4 = n - (n & 3);
  for (; i < end4; i += 4) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c = t[768 + (c & 0xff)] ^ t[512 + ((c >>> 8) & 0xff)] ^ t[256 + ((c >>> 16) & 0xff)] ^ t[c >>> 24];
  }
  for (; i < n; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
