#!/usr/bin/env node
// csreg: serve a containers-storage store as an OCI registry, and inspect the store.
import { parseArgs } from 'node:util';
import { Store } from '../storage/store.js';
import { storageCommand, UsageError } from './storage.js';

const USAGE = `usage: csreg [--root DIR] [--runroot DIR] [--storage-driver NAME] COMMAND

commands:
  serve                       serve the store as an OCI registry (csreg serve --help)
  cache [--state-dir DIR]     the blob cache of pushed compressed layers: size, last use, references
  recipes scan|list           find which compressor reproduces each layer's original blob (csreg recipes --help)
  storage status              which store: roots, driver, storage.conf, rootless, its user namespace
  storage images              list images            (--json for JSON)
  storage layers              list layers
  storage containers          list containers
  storage image REF           show one image (ID, unique ID prefix, name or digest)
  storage layer ID            show one layer
  storage container REF       show one container
  storage names REF           the names of an image, layer or container
  storage check               rebuild every layer against its diff digest, check images' big data
                              and containers' images and layers (exit status 1 on a problem)
  storage exists REF...       whether layers, images or containers exist (exit status 1 if one does not)
  storage metadata REF...     their metadata
  storage big-data IMAGE [KEY]  list an image's big data, or write one item
  storage diff LAYER [-o FILE] [--offset N]  write the layer's exact uncompressed tar

writing (under the same locks podman takes; -n may repeat):
  storage create-layer [-i ID] [-n NAME] [-f BLOB] [PARENT]   a layer, empty or from a tar (gzip, zstd, none)
  storage apply-diff -f BLOB LAYER                             fill an empty layer
  storage create-image [-i ID] [-n NAME] [-m META] [LAYER]     an image whose top layer is LAYER
  storage set-image-data -f FILE IMAGE KEY                     store a big-data item (manifest, config...)
  storage add-names -n NAME IMAGE | set-names -n NAME IMAGE
  storage set-metadata -m META | -f FILE REF                   a layer's, image's or container's metadata
  storage delete-image IMAGE | delete-layer LAYER
  storage create-container [-i ID] [-n NAME] [-m META] IMAGE | delete-container CONTAINER
`;

export const globalOptions = {
  root: { type: 'string' },
  runroot: { type: 'string' },
  'storage-driver': { type: 'string' },
  json: { type: 'boolean', default: false },
  output: { type: 'string', short: 'o' },
  offset: { type: 'string' },
  progress: { type: 'boolean', default: false },
  name: { type: 'string', short: 'n', multiple: true },
  id: { type: 'string', short: 'i' },
  file: { type: 'string', short: 'f' },
  metadata: { type: 'string', short: 'm' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** The first word that is neither a flag nor the value of a global flag taking one. */
function commandWord(argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    if (['--root', '--runroot', '--storage-driver'].includes(argv[i])) i++;
    else if (!argv[i].startsWith('-')) return i;
  }
  return -1;
}

async function main(argv: string[]): Promise<number> {
  const w = commandWord(argv);
  if (w >= 0 && argv[w] === 'serve') {
    const { serveCommand } = await import('./serve.js');
    return serveCommand([...argv.slice(0, w), ...argv.slice(w + 1)]);
  }
  // A reader of the output that went away (`| head`) ends the command quietly, as SIGPIPE ends
  // the Go tools (Node ignores the signal: the write fails, and stdout's 'error' event was
  // unhandled: a stack trace). The OS lets go of the locks held.
  process.stdout.on('error', (e: Error & { code?: string }) => {
    if (e.code !== 'EPIPE') throw e;
    process.exit();
  });
  if (w >= 0 && argv[w] === 'recipes') {
    const { recipesCommand } = await import('./recipes.js');
    return recipesCommand([...argv.slice(0, w), ...argv.slice(w + 1)]);
  }
  if (w >= 0 && argv[w] === 'cache') {
    const { cacheCommand } = await import('./cache.js');
    return cacheCommand([...argv.slice(0, w), ...argv.slice(w + 1)]);
  }
  const { values, positionals } = parseArgs({ args: argv, options: globalOptions, allowPositionals: true, strict: true });
  const [cmd, verb, ...rest] = positionals;
  if (values.help || !cmd) {
    process.stdout.write(USAGE);
    return cmd || values.help ? 0 : 2;
  }
  if (cmd !== 'storage') throw new UsageError(`unknown command ${cmd}\n\n${USAGE}`);
  const offset = values.offset === undefined ? undefined : Number(values.offset);
  if (offset !== undefined && !(Number.isSafeInteger(offset) && offset >= 0)) throw new UsageError('--offset takes a byte offset');
  const store = Store.open({ root: values.root, runroot: values.runroot, driver: values['storage-driver'] });
  const status = await storageCommand(store, verb, rest, {
    json: values.json, output: values.output, offset, progress: values.progress,
    names: values.name ?? [], id: values.id, file: values.file, metadata: values.metadata,
  });
  return status ?? 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: Error & { code?: string }) => {
    if (e.code === 'EPIPE') return;
    process.stderr.write(`csreg: ${e.message}\n`);
    process.exitCode = e instanceof UsageError || e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1;
  },
);
