// A BlockPool thread: compresses the pgzip blocks it is sent.
import { parentPort } from 'node:worker_threads';
import { compressBlock } from './pgzip.js';

parentPort!.on('message', (m: { data: Uint8Array; dict: Uint8Array; crc: boolean }) => {
  const out = compressBlock(m.data, m.dict, m.crc);
  parentPort!.postMessage(out, [out.bytes.buffer as ArrayBuffer]);
});
