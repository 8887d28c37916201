// Adds COUNT images to a store in one write of images.json (StoreWriter.createImage rewrites
// the file per image, which is quadratic at 10,000): each a copy of the image FROM whose config
// carries one more label (so each has its own config digest and image ID), sharing FROM's
// layers. Names: localhost/bench/many/rNNNN:tK, five tags per repository.
// Written as containers-storage-format.md 7.5 says: images.lock held for writing, fresh token,
// big-data files written first, then images.json replaced atomically.
//   node dist/bench/make-many.js --root DIR --runroot DIR --count N --from NAME
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { bigDataFileName } from '../src/storage/bigdata.js';
import { LockFile } from '../src/storage/lockfile.js';
import { atomicWrite } from '../src/storage/writer.js';

export const TAGS_PER_REPO = 5;

export function manyName(i: number): string {
  return `localhost/bench/many/r${String(Math.floor(i / TAGS_PER_REPO)).padStart(4, '0')}:t${i % TAGS_PER_REPO}`;
}

const sha256 = (b: Buffer | string) => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { root: { type: 'string' }, runroot: { type: 'string' }, count: { type: 'string' }, from: { type: 'string' } },
  });
  const root = values.root!;
  const count = Number(values.count ?? '10000');
  if (!root || !values.from || !Number.isSafeInteger(count) || count < 1 || count > 100_000) {
    throw new Error('usage: make-many --root DIR --runroot DIR --count N (1..100000) --from NAME');
  }
  const dir = join(root, 'overlay-images');
  const lock = new LockFile(join(dir, 'images.lock'));
  await lock.lockWrite();
  try {
    const records = JSON.parse(await readFile(join(dir, 'images.json'), 'utf8')) as Record<string, unknown>[];
    const from = records.find((r) => (r.names as string[] | undefined)?.includes(values.from!));
    if (!from) throw new Error(`no image named ${values.from}`);
    const fromId = from.id as string;
    const config = JSON.parse((await readFile(join(dir, fromId, bigDataFileName(`sha256:${fromId}`)))).toString('utf8'));
    const manifest = JSON.parse((await readFile(join(dir, fromId, 'manifest'))).toString('utf8'));
    const kept = records.filter((r) => !((r.names as string[] | undefined) ?? []).some((n) => n.startsWith('localhost/bench/many/')));
    const added: Record<string, unknown>[] = [];
    const created = new Date().toISOString();
    for (let i = 0; i < count; i++) {
      const cfg = structuredClone(config);
      cfg.config = cfg.config ?? {};
      cfg.config.Labels = { ...(cfg.config.Labels ?? {}), 'org.csreg.bench.index': String(i) };
      const cfgBytes = Buffer.from(JSON.stringify(cfg));
      const cfgDigest = sha256(cfgBytes);
      const m = structuredClone(manifest);
      m.config = { ...m.config, digest: cfgDigest, size: cfgBytes.length };
      const mBytes = Buffer.from(JSON.stringify(m));
      const mDigest = sha256(mBytes);
      const id = cfgDigest.slice(7);
      const items: [string, Buffer, string][] = [
        [cfgDigest, cfgBytes, cfgDigest],
        [`manifest-${mDigest}`, mBytes, mDigest],
        ['manifest', mBytes, mDigest],
      ];
      await mkdir(join(dir, id), { recursive: true, mode: 0o700 });
      for (const [key, data] of items) await writeFile(join(dir, id, bigDataFileName(key)), data, { mode: 0o600 });
      added.push({
        id,
        digest: mDigest,
        names: [manyName(i)],
        layer: from.layer,
        metadata: '{}',
        'big-data-names': items.map(([k]) => k),
        'big-data-sizes': Object.fromEntries(items.map(([k, d]) => [k, d.length])),
        'big-data-digests': Object.fromEntries(items.map(([k, , d]) => [k, d])),
        created,
      });
    }
    lock.touch();
    await atomicWrite(join(dir, 'images.json'), JSON.stringify([...kept, ...added]));
    process.stderr.write(`make-many: ${added.length} images added (${kept.length} kept)\n`);
  } finally {
    lock.unlockWrite();
  }
}

if (process.argv[1]?.endsWith('make-many.js')) {
  main().catch((e: Error) => {
    process.stderr.write(`make-many: ${e.message}\n`);
    process.exitCode = 1;
  });
}
