// A BlockPool thread: compresses the pgzip blocks it is sent.
import { parentPort } from 'node:worker_threads';
import { pgzipBlock } from './pgzip.js';

parentPort!.on('message', (m: { data: Uint8Array; dict: Uint8Array }) => {
  const out = pgzipBlock(m.data, m.dict);
  parentPort!.postMessage(out, [out.buffer as ArrayBuffer]);
});
