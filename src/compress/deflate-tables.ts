// RFC 1951 constants shared by both DEFLATE encoders (Go's compress/flate and klauspost's),
// plus the token layout both matchers emit. Nothing here is a per-library decision.

export const NUM_LIT = 286; // literal/length symbols in use (286 and 287 never occur)
export const NUM_OFF = 30;
export const NUM_CODEGEN = 19;
export const EOB = 256;
export const MAX_STORED = 65535; // largest stored block

/**
 * Token layout: a literal is its byte value (< 256); a match is
 * MATCH | (length - 3) << 22 | distanceCode << 16 | (distance - 1).
 * Carrying the distance code saves looking it up again when counting and writing.
 */
export const MATCH = 1 << 30;

// 32 entries (the last ones unused) so that any 5-bit index stays inside the typed array.
export const LEN_EXTRA = Uint8Array.of(
  0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0, 0, 0, 0,
);
export const OFF_EXTRA = Uint8Array.of(
  0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14,
);
export const CODEGEN_ORDER = Uint8Array.of(16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15);

/** first (length - 3) of each length code */
export const LEN_BASE = new Int32Array(32);
/** first (distance - 1) of each distance code */
export const OFF_BASE = new Int32Array(32);
/** length code (0..28) of (length - 3) */
export const LEN_CODE = new Uint8Array(256);
/** distance code (0..29) of (distance - 1) */
export const OFF_CODE = new Uint8Array(32768);
{
  let v = 0;
  for (let c = 0; c < 28; c++) {
    LEN_BASE[c] = v;
    for (let k = 0; k < 1 << LEN_EXTRA[c]; k++) LEN_CODE[v++] = c;
  }
  // length 258 has its own code (285) rather than the last value of code 284
  LEN_BASE[28] = 255;
  LEN_CODE[255] = 28;
  v = 0;
  for (let c = 0; c < 32; c++) {
    OFF_BASE[c] = v;
    for (let k = 0; k < 1 << OFF_EXTRA[c] && v < 32768; k++) OFF_CODE[v++] = c;
  }
}

/** The low `len` bits of `code`, reversed (DEFLATE sends Huffman codes MSB first into an LSB-first stream). */
export function reverseBits(code: number, len: number): number {
  let r = 0;
  for (let i = 0; i < len; i++) {
    r = (r << 1) | (code & 1);
    code >>>= 1;
  }
  return r;
}
