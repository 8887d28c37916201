// `csreg recipes scan|list`: find, ahead of any pull, which compressor reproduces each
// layer's original blob, and report how many layers and images became servable by their
// original (upstream) digests.
import { parseArgs } from 'node:util';
import { Recipes, recompressibleLayers } from '../compress/recipes.js';
import { Resolver } from '../oci/resolver.js';
import { Store } from '../storage/store.js';
import { defaultStateDir } from './serve.js';
import { humanBytes, printJson, printTable, Progress } from './output.js';
import { UsageError } from './storage.js';

const USAGE = `usage: csreg [--root DIR --runroot DIR --storage-driver NAME] recipes scan|list [--state-dir DIR] [--json]

  scan   try the known compressors on every gzip layer whose original blob is not known yet
  list   the verdicts kept in the state directory
`;

export async function recipesCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { root: { type: 'string' }, runroot: { type: 'string' }, 'storage-driver': { type: 'string' }, 'state-dir': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: true,
  });
  const verb = positionals[0];
  if (values.help || !verb) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  if (verb !== 'scan' && verb !== 'list') throw new UsageError(`unknown recipes command ${verb}\n\n${USAGE}`);
  const store = Store.open({ root: values.root, runroot: values.runroot, driver: values['storage-driver'] });
  const recipes = new Recipes(values['state-dir'] ?? defaultStateDir(), store);
  const snap = await store.snapshot();
  await recipes.noteReused(snap.images, snap);
  const layers = recompressibleLayers(snap);
  if (verb === 'scan') {
    const progress = new Progress('recompressing', layers.filter(([d]) => !recipes.verdict(d)).reduce((n, [, c]) => n + (c.layer.diffSize ?? 0), 0));
    let done = 0;
    await recipes.scan(snap, {
      progress: (n) => progress.update((done += n)),
      layer: (i, n, digest, v, ms) => process.stderr.write(`${progress.enabled ? '\n' : ''}[${i}/${n}] ${digest}: ${v?.profile ?? 'not reproducible'} in ${(ms / 1000).toFixed(1)} s\n`),
    });
    progress.finish(done);
  }
  const verdicts = layers.map(([digest, c]) => ({ digest, layer: c.layer.id, size: c.size, profile: recipes.verdict(digest)?.profile }));
  const resolver = new Resolver(store, snap, 'any-child', undefined, recipes);
  let images = 0;
  let servable = 0;
  // images with a layer a recipe gives an original blob of (recorded on the layer, or named by a manifest that reused it)
  const byRecipe = new Set(layers.map(([, c]) => c.layer.id));
  for (const image of snap.images) {
    const keys = image.bigDataNames.filter((k) => k.startsWith('manifest'));
    if (!keys.length || !snap.layerChain(image.topLayer).layers.some((l) => byRecipe.has(l.id))) continue;
    images++;
    for (const k of keys) {
      if (await resolver.servableStored(image, k)) {
        servable++;
        break;
      }
    }
  }
  const summary = {
    layers: verdicts.length,
    reproduced: verdicts.filter((v) => v.profile).length,
    notReproducible: verdicts.filter((v) => v.profile === null).length,
    unknown: verdicts.filter((v) => v.profile === undefined).length,
    images,
    imagesServableByOriginalDigest: servable,
  };
  if (values.json) {
    printJson({ summary, layers: verdicts });
    return 0;
  }
  if (verb === 'list') printTable(['DIGEST', 'SIZE', 'RECIPE'], verdicts.map((v) => [v.digest, humanBytes(v.size), v.profile === undefined ? '(not scanned)' : v.profile ?? 'not reproducible']));
  process.stdout.write(
    `${summary.reproduced} of ${summary.layers} compressed layers reproduced bit for bit (${summary.notReproducible} not reproducible, ${summary.unknown} not scanned); `
    + `${servable} of ${images} images servable by their original manifest digests\n`,
  );
  return 0;
}
