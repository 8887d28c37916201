// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) for the gzip trailers of both encoders:
// zlib's own (node:zlib exports it from Node 20.15 and 22.2; 4x this table version, which was
// an eighth of a recompression's CPU), else a plain slicing-by-8 table version.
import * as zlib from 'node:zlib';

const native = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

const TABLES = (() => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  // t[k*256 + n] is the CRC of byte n followed by k zero bytes
  for (let k = 1; k < 8; k++) {
    for (let n = 0; n < 256; n++) {
      const p = t[(k - 1) * 256 + n];
      t[k * 256 + n] = t[p & 0xff] ^ (p >>> 8);
    }
  }
  return t;
})();

/** Continue a CRC-32 over `data`; start with crc = 0. Returns an unsigned 32-bit value. */
export function crc32(data: Uint8Array, crc = 0): number {
  return native ? native(data, crc) : tableCrc32(data, crc);
}

export function tableCrc32(data: Uint8Array, crc = 0): number {
  const t = TABLES;
  let c = ~crc;
  let i = 0;
  const n = data.length;
  const end8 = n - (n & 7);
  for (; i < end8; i += 8) {
    const a = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    const b = data[i + 4] | (data[i + 5] << 8) | (data[i + 6] << 16) | (data[i + 7] << 24);
    c =
      t[1792 + (a & 0xff)] ^
      t[1536 + ((a >>> 8) & 0xff)] ^
      t[1280 + ((a >>> 16) & 0xff)] ^
      t[1024 + (a >>> 24)] ^
      t[768 + (b & 0xff)] ^
      t[512 + ((b >>> 8) & 0xff)] ^
      t[256 + ((b >>> 16) & 0xff)] ^
      t[b >>> 24];
  }
  for (; i < n; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// Combining the CRCs of two pieces (zlib's crc32_combine), so that blocks compressed on other
// threads can each take their own input's CRC there. A CRC is a polynomial over GF(2), bit 31
// = x^0 in this reflected form: crc(A‖B) = crc(A)·x^(8·|B|) mod P xor crc(B).

/** a·b mod P */
function mulModP(a: number, b: number): number {
  let p = 0;
  for (let m = 0x80000000; m !== 0; m >>>= 1) {
    if (a & m) p ^= b;
    b = b & 1 ? (b >>> 1) ^ 0xedb88320 : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) mod P */
const X2N = (() => {
  const t = new Uint32Array(32);
  let p = 0x40000000; // x^1
  for (let k = 0; k < 32; k++, p = mulModP(p, p)) t[k] = p;
  return t;
})();

/** x^(8n) mod P: n bytes of zeros appended */
function zerosOperator(n: number): number {
  let p = 0x80000000; // x^0
  for (let k = 3; n > 0; n = Math.floor(n / 2), k++) if (n % 2) p = mulModP(X2N[k & 31], p);
  return p;
}

/** The CRC-32 of A followed by B, from crc(A), crc(B) and B's length. */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  return (mulModP(zerosOperator(lengthB), crcA) ^ crcB) >>> 0;
}
