// `csreg cache`: what csreg's blob cache holds (pushed compressed layers the store cannot
// reproduce), how much space it takes, and which blobs a stored manifest still references;
// and what the served-blob cache keeps (blobs made from the store, docs/serve-cache.md).
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { BlobCache, referencedBlobs } from '../oci/blob-cache.js';
import { Artifacts } from '../oci/artifacts.js';
import { Store } from '../storage/store.js';
import { defaultStateDir } from './serve.js';
import { humanBytes, printJson, printTable } from './output.js';

export async function cacheCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { root: { type: 'string' }, runroot: { type: 'string' }, 'storage-driver': { type: 'string' }, 'state-dir': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: csreg [--root DIR --runroot DIR --storage-driver NAME] cache [--state-dir DIR] [--json]\n');
    return 0;
  }
  const stateDir = values['state-dir'] ?? defaultStateDir();
  const cache = new BlobCache(stateDir);
  const store = Store.open({ root: values.root, runroot: values.runroot, driver: values['storage-driver'] });
  const inUse = new Set([...(await referencedBlobs(store, await store.snapshot())), ...new Artifacts(stateDir, cache).referenced()]);
  const blobs = (await cache.list()).map((b) => ({ ...b, referenced: inUse.has(b.digest) }));
  const bytes = blobs.reduce((n, b) => n + b.size, 0);
  const served = new BlobCache(join(stateDir, 'served'));
  const kept = await served.list();
  const keptBytes = kept.reduce((n, b) => n + b.size, 0);
  if (values.json) {
    printJson({
      dir: cache.dir, blobs: blobs.length, bytes, referencedBytes: blobs.filter((b) => b.referenced).reduce((n, b) => n + b.size, 0), items: blobs,
      served: { dir: served.dir, blobs: kept.length, bytes: keptBytes, items: kept },
    });
    return 0;
  }
  printTable(['DIGEST', 'SIZE', 'LAST USED', 'REFERENCED'], blobs.map((b) => [b.digest, humanBytes(b.size), b.lastUsed.toISOString(), b.referenced ? 'yes' : 'no']));
  process.stdout.write(`${blobs.length} blobs, ${humanBytes(bytes)} in ${cache.dir}\n`);
  process.stdout.write(`served-blob cache (made from the store, kept for repeat pulls): ${kept.length} blobs, ${humanBytes(keptBytes)} in ${served.dir}\n`);
  return 0;
}
