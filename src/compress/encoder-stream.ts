import { Transform, type TransformCallback } from 'node:stream';

/** A push/finish encoder (GoGzipEncoder, PgzipEncoder): push() returns output ready so far. */
export interface ChunkEncoder {
  push(chunk: Uint8Array): Uint8Array[];
  finish(): Uint8Array[];
}

/** A Transform stream around `enc`: uncompressed bytes in, its output out. */
export function encoderStream(enc: ChunkEncoder): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback) {
      try {
        for (const part of enc.push(chunk)) this.push(part);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        for (const part of enc.finish()) this.push(part);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}
