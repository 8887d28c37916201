// CRC-64 as Go's hash/crc64 with the ISO table (tar-split's file checksums): reflected
// polynomial 0xD800000000000000, initial value and final XOR all ones, stored big-endian.
// Computed in WebAssembly (wasm/crc64.c) where built, else here on two 32-bit halves with
// slicing-by-8 tables (BigInt per byte is far too slow), which stays as the reference.
import { wasmInstance, wasmModule } from './wasm.js';

interface Crc64Wasm {
  init(): void;
  input(): number;
  input_size(): number;
  /** the inverted CRC after the first n bytes of input, from the inverted CRC crc */
  update(crc: bigint, n: number): bigint;
}
const WASM_URL = new URL('./wasm/crc64.wasm', import.meta.url);
/** below this, a call into WebAssembly (a copy and two BigInts) costs more than it saves */
const WASM_MIN = 256;
/** this thread's instance, and the module it came from (a test may turn WebAssembly off) */
let kernel: { from: WebAssembly.Module; exports: Crc64Wasm; input: Uint8Array } | undefined;

function wasmKernel(): typeof kernel {
  const m = wasmModule(WASM_URL);
  if (!m) return undefined;
  if (kernel?.from !== m) {
    const e = wasmInstance<Crc64Wasm>(WASM_URL)!;
    e.init();
    kernel = { from: m, exports: e, input: new Uint8Array(e.memory.buffer, e.input(), e.input_size()) };
  }
  return kernel;
}

const POLY_HI = 0xd8000000;
const POLY_LO = 0x00000000;

// tables[k][b] for slicing-by-8, as hi/lo 32-bit halves.
const HI = new Uint32Array(8 * 256);
const LO = new Uint32Array(8 * 256);
for (let b = 0; b < 256; b++) {
  let hi = 0;
  let lo = b;
  for (let i = 0; i < 8; i++) {
    const carry = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (carry) {
      hi = (hi ^ POLY_HI) >>> 0;
      lo = (lo ^ POLY_LO) >>> 0;
    }
  }
  HI[b] = hi;
  LO[b] = lo;
}
for (let k = 1; k < 8; k++) {
  for (let b = 0; b < 256; b++) {
    const phi = HI[(k - 1) * 256 + b];
    const plo = LO[(k - 1) * 256 + b];
    // one more byte of zeros through the table: crc = table[crc & 0xff] ^ (crc >> 8)
    const idx = plo & 0xff;
    HI[k * 256 + b] = (HI[idx] ^ (phi >>> 8)) >>> 0;
    LO[k * 256 + b] = (LO[idx] ^ ((plo >>> 8) | ((phi & 0xff) << 24))) >>> 0;
  }
}

export class Crc64 {
  private hi = 0xffffffff;
  private lo = 0xffffffff;

  update(buf: Uint8Array): this {
    const k = buf.length >= WASM_MIN ? wasmKernel() : undefined;
    if (!k) return this.updateJs(buf);
    let crc = (BigInt(this.hi) << 32n) | BigInt(this.lo);
    for (let i = 0; i < buf.length; i += k.input.length) {
      const part = buf.subarray(i, i + k.input.length);
      k.input.set(part);
      crc = k.exports.update(crc, part.length);
    }
    this.hi = Number(BigInt.asUintN(32, crc >> 32n));
    this.lo = Number(BigInt.asUintN(32, crc));
    return this;
  }

  private updateJs(buf: Uint8Array): this {
    let hi = this.hi;
    let lo = this.lo;
    let i = 0;
    const n = buf.length;
    for (; i + 8 <= n; i += 8) {
      const l = (lo ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24))) >>> 0;
      const h = (hi ^ (buf[i + 4] | (buf[i + 5] << 8) | (buf[i + 6] << 16) | (buf[i + 7] << 24))) >>> 0;
      const i7 = 7 * 256 + (l & 0xff), i6 = 6 * 256 + ((l >>> 8) & 0xff), i5 = 5 * 256 + ((l >>> 16) & 0xff), i4 = 4 * 256 + (l >>> 24);
      const i3 = 3 * 256 + (h & 0xff), i2 = 2 * 256 + ((h >>> 8) & 0xff), i1 = 256 + ((h >>> 16) & 0xff), i0 = h >>> 24;
      hi = HI[i7] ^ HI[i6] ^ HI[i5] ^ HI[i4] ^ HI[i3] ^ HI[i2] ^ HI[i1] ^ HI[i0];
      lo = LO[i7] ^ LO[i6] ^ LO[i5] ^ LO[i4] ^ LO[i3] ^ LO[i2] ^ LO[i1] ^ LO[i0];
    }
    for (; i < n; i++) {
      const idx = (lo ^ buf[i]) & 0xff;
      lo = (LO[idx] ^ ((lo >>> 8) | ((hi & 0xff) << 24))) >>> 0;
      hi = (HI[idx] ^ (hi >>> 8)) >>> 0;
    }
    this.hi = hi >>> 0;
    this.lo = lo >>> 0;
    return this;
  }

  /** The checksum as Go's Sum(): 8 bytes, big-endian. */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((this.hi ^ 0xffffffff) >>> 0, 0);
    out.writeUInt32BE((this.lo ^ 0xffffffff) >>> 0, 4);
    return out;
  }
}
