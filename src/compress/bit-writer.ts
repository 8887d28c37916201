// LSB-first bit writer for DEFLATE, used by both encoders. Bits gather in a 32-bit number and
// leave two bytes at a time into a growable output buffer; take() hands the finished bytes out.
// The byte stream is the same whatever the accumulator width, so this matches Go's and
// klauspost's 64-bit writers exactly.

export class BitWriter {
  buf: Uint8Array;
  pos = 0;
  /** pending bits, the low `nbits` of them valid; nbits stays below 16 between calls */
  acc = 0;
  nbits = 0;

  constructor(capacity = 1 << 18) {
    this.buf = new Uint8Array(capacity);
  }

  /** Make room for `extra` more bytes. */
  ensure(extra: number): void {
    const need = this.pos + extra + 8;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  /** Append the low `n` bits of `value` (n <= 16). Caller ensured capacity. */
  writeBits(value: number, n: number): void {
    this.acc |= value << this.nbits;
    this.nbits += n;
    if (this.nbits >= 16) {
      const buf = this.buf;
      buf[this.pos++] = this.acc;
      buf[this.pos++] = this.acc >>> 8;
      this.acc >>>= 16;
      this.nbits -= 16;
    }
  }

  /** Pad with zero bits to a byte boundary. */
  align(): void {
    const buf = this.buf;
    while (this.nbits > 0) {
      buf[this.pos++] = this.acc;
      this.acc >>>= 8;
      this.nbits -= 8;
    }
    this.acc = 0;
    this.nbits = 0;
  }

  /** Copy raw bytes; must be byte aligned. */
  writeBytes(src: Uint8Array): void {
    if (this.nbits !== 0) throw new Error('BitWriter.writeBytes: not byte aligned');
    this.ensure(src.length);
    this.buf.set(src, this.pos);
    this.pos += src.length;
  }

  /** The complete bytes written since the last take() (pending bits stay). */
  take(): Uint8Array {
    const out = this.buf.slice(0, this.pos);
    this.pos = 0;
    return out;
  }
}

/**
 * Runs a WebAssembly bit writer (wasm.h end_bits) after bw's pending bits and appends what it
 * wrote: `bits` is its [value, count] of pending bits, `out` where in `mem` it writes, and
 * `writer` runs it and returns how many bytes it wrote.
 */
export function appendWasmBits(bw: BitWriter, mem: ArrayBufferLike, bits: Uint32Array, out: number, writer: () => number): void {
  bits[0] = bw.acc;
  bits[1] = bw.nbits;
  const len = writer();
  bw.ensure(len);
  bw.buf.set(new Uint8Array(mem, out, len), bw.pos);
  bw.pos += len;
  bw.acc = bits[0];
  bw.nbits = bits[1];
}
