// Block choice of Go's compress/flate (huffman_bit_writer.go): for each block, stored, fixed or
// dynamic, decided the way Go decides. The codes themselves come from huffman-code.ts, shared
// with the klauspost encoder; Go's choice differs from klauspost's (no table re-use, no entropy
// estimate), so it stays here. Fixed beats dynamic on equal size, Huffman beats stored on equal size.

import { BitWriter } from './bit-writer.js';
import { EOB, LEN_CODE, MAX_STORED, NUM_LIT, NUM_OFF } from './deflate-tables.js';
import {
  CodeLengthCoder,
  extraBits,
  FIXED_LIT,
  FIXED_OFF,
  HUFF_OFF,
  HuffmanCode,
  writeEOB,
  writeLiterals,
  writeStoredHeader,
  writeTokens,
} from './huffman-code.js';
import type { WasmTokenWriter } from './klauspost-flate.js';

/** Chooses and writes DEFLATE blocks the way Go's huffmanBitWriter does. */
export class HuffmanBlockWriter {
  readonly bw: BitWriter;
  private readonly litFreq: Int32Array;
  private readonly offFreq: Int32Array;
  private readonly litEnc = new HuffmanCode(NUM_LIT);
  private readonly offEnc = new HuffmanCode(NUM_OFF);
  private readonly cg = new CodeLengthCoder();

  /** `tw`: tokens are counted and written in WebAssembly (klauspost-match.c's writer; at level 1 that was 45% of the time in TypeScript) */
  constructor(bw: BitWriter, readonly tw?: WasmTokenWriter) {
    this.bw = bw;
    this.litFreq = tw?.goLitFreq ?? new Int32Array(NUM_LIT);
    this.offFreq = tw?.goOffFreq ?? new Int32Array(NUM_OFF);
  }

  writeStoredHeader(length: number, eof: boolean): void {
    writeStoredHeader(this.bw, length, eof);
  }

  writeStored(input: Uint8Array, eof: boolean): void {
    writeStoredHeader(this.bw, input.length, eof);
    this.bw.writeBytes(input);
  }

  /**
   * Levels 2-9: cheapest of fixed, dynamic and (when the block's input is known and small enough)
   * stored. `input` is null when the block's bytes already left the window.
   */
  writeBlock(tokens: Int32Array, ntok: number, eof: boolean, input: Uint8Array | null): void {
    const [numLit, numOff] = this.indexTokens(tokens, ntok);
    const litFreq = this.litFreq, offFreq = this.offFreq;
    const storable = input !== null && input.length <= MAX_STORED;
    // extra bits cost the same for fixed and dynamic; Go only counts them to compare with stored
    const extra = storable ? extraBits(litFreq, numLit, offFreq, numOff) : 0;
    let size = 3 + FIXED_LIT.bitLength(litFreq, NUM_LIT) + FIXED_OFF.bitLength(offFreq, NUM_OFF) + extra;
    let dynamic = false;
    this.cg.build(numLit, numOff, this.litEnc, this.offEnc);
    const dynSize = this.dynamicSize(this.litEnc, this.offEnc, extra);
    if (dynSize < size) {
      size = dynSize;
      dynamic = true;
    }
    if (storable && (input.length + 5) * 8 < size) {
      this.writeStored(input, eof);
      return;
    }
    if (dynamic) {
      this.cg.writeHeader(this.bw, numLit, numOff, eof);
      this.writeTokens(tokens, ntok, this.litEnc, this.offEnc);
    } else {
      this.bw.ensure(1);
      this.bw.writeBits(eof ? 3 : 2, 3);
      this.writeTokens(tokens, ntok, FIXED_LIT, FIXED_OFF);
    }
  }

  /** Level 1: dynamic, unless stored is not clearly (1/16) worse. */
  writeBlockDynamic(tokens: Int32Array, ntok: number, eof: boolean, input: Uint8Array): void {
    const [numLit, numOff] = this.indexTokens(tokens, ntok);
    this.cg.build(numLit, numOff, this.litEnc, this.offEnc);
    const size = this.dynamicSize(this.litEnc, this.offEnc, 0);
    if (input.length <= MAX_STORED && (input.length + 5) * 8 < size + (size >> 4)) {
      this.writeStored(input, eof);
      return;
    }
    this.cg.writeHeader(this.bw, numLit, numOff, eof);
    this.writeTokens(tokens, ntok, this.litEnc, this.offEnc);
  }

  /** Level 1 on barely compressible input: literals only, dynamic code or stored. */
  writeBlockHuff(eof: boolean, input: Uint8Array): void {
    const litFreq = this.litFreq;
    // (level 1's block is in the WebAssembly memory where there is one; a short tail too)
    const tw = this.tw?.owns(input) ? this.tw : undefined;
    if (tw) {
      tw.countBytes(input);
    } else {
      litFreq.fill(0);
      for (let i = 0; i < input.length; i++) litFreq[input[i]]++;
    }
    litFreq[EOB] = 1;
    // Go leaves offFreq[1..] as they were; they cost nothing under the one-symbol offset code
    this.offFreq[0] = 1;
    const numLit = EOB + 1, numOff = 1;
    this.litEnc.generate(litFreq, NUM_LIT, 15);
    this.cg.build(numLit, numOff, this.litEnc, HUFF_OFF);
    const size = this.dynamicSize(this.litEnc, HUFF_OFF, 0);
    if (input.length <= MAX_STORED && (input.length + 5) * 8 < size + (size >> 4)) {
      this.writeStored(input, eof);
      return;
    }
    this.cg.writeHeader(this.bw, numLit, numOff, eof);
    if (tw) tw.writeLiterals(this.bw, input, this.litEnc);
    else writeLiterals(this.bw, input, this.litEnc);
    writeEOB(this.bw, this.litEnc);
  }

  /** Count symbol frequencies (plus end of block), trim the alphabets, build both codes. */
  private indexTokens(tokens: Int32Array, ntok: number): [number, number] {
    const litFreq = this.litFreq, offFreq = this.offFreq;
    if (this.tw) {
      if (tokens !== this.tw.tok) this.tw.tok.set(tokens.subarray(0, ntok));
      this.tw.countTokens(ntok);
    } else {
      litFreq.fill(0);
      offFreq.fill(0);
      for (let i = 0; i < ntok; i++) {
        const t = tokens[i];
        if (t < 256) {
          litFreq[t]++;
        } else {
          litFreq[257 + LEN_CODE[(t >>> 22) & 0xff]]++;
          offFreq[(t >>> 16) & 31]++;
        }
      }
    }
    litFreq[EOB]++;
    let numLit = NUM_LIT;
    while (litFreq[numLit - 1] === 0) numLit--;
    let numOff = NUM_OFF;
    while (numOff > 0 && offFreq[numOff - 1] === 0) numOff--;
    if (numOff === 0) {
      // a dynamic header needs at least one distance code
      offFreq[0] = 1;
      numOff = 1;
    }
    this.litEnc.generate(litFreq, NUM_LIT, 15);
    this.offEnc.generate(offFreq, NUM_OFF, 15);
    return [numLit, numOff];
  }

  private dynamicSize(lit: HuffmanCode, off: HuffmanCode, extra: number): number {
    return this.cg.headerBits() + lit.bitLength(this.litFreq, NUM_LIT) + off.bitLength(this.offFreq, NUM_OFF) + extra;
  }

  /** (with `tw`, the tokens are already in its memory: indexTokens put them there) */
  private writeTokens(tokens: Int32Array, ntok: number, lit: HuffmanCode, off: HuffmanCode): void {
    if (this.tw) this.tw.writeTokens(this.bw, ntok, lit, off);
    else writeTokens(this.bw, tokens, ntok, lit, off);
    writeEOB(this.bw, lit);
  }
}
