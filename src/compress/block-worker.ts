// A BlockPool thread: compresses the pgzip blocks, and runs the Go deflate segments, it is sent.
import { parentPort } from 'node:worker_threads';
import type { PoolTask } from './block-pool.js';
import { parseSegment } from './go-parallel.js';
import { compressBlock } from './pgzip.js';
import { collectWhenIdle } from './idle-gc.js';

/** a block thread with no block for this long is idle: its garbage is collected */
const IDLE_MS = 200;

parentPort!.on('message', (m: PoolTask) => {
  try {
    if (m.kind === 'pgzip') {
      const out = compressBlock(m.data, m.dict, m.crc);
      // the input goes back too, for the next block to be read into
      parentPort!.postMessage({ ...out, input: m.data }, [out.bytes.buffer as ArrayBuffer, m.data.buffer as ArrayBuffer]);
    } else {
      const out = parseSegment(m.task, m.crcFrom);
      parentPort!.postMessage(out, [out.tokens.buffer as ArrayBuffer, out.marks.buffer as ArrayBuffer]);
    }
  } catch (e) {
    parentPort!.postMessage({ error: (e as Error).message });
  }
  collectWhenIdle(IDLE_MS); // (the wait starts when a block is done)
});
