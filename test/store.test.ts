// The store reader against stores written by buildah, skopeo and podman (test/fixtures/build.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import { Store } from '../src/storage/store.js';
import { bigDataFileName } from '../src/storage/bigdata.js';
import { resolveStoreLocation } from '../src/storage/config.js';
import { layerReads } from '../src/storage/layer-tar.js';
import { readTarSplit } from '../src/storage/tarsplit.js';
import { Crc64 } from '../src/storage/crc64.js';
import { useWasm, wasmInstancesMade } from '../src/storage/wasm.js';
import { collect, copyStore, loadFixtures, openDescriptors, storeArgs, csRef, writerCouldLock, type FixtureStore } from './fixtures.js';

const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
const fx = loadFixtures();
const storeNames = Object.keys(fx.stores) as (keyof typeof fx.stores)[];
const open = (s: FixtureStore) => Store.open({ root: s.root, runroot: s.runroot, driver: s.driver });

async function drain(r: Readable): Promise<{ sha: string; size: number; bytes?: Buffer }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of r) {
    h.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { sha: 'sha256:' + h.digest('hex'), size };
}

function fileSha(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path).on('data', (c) => h.update(c)).on('end', () => res('sha256:' + h.digest('hex'))).on('error', rej);
  });
}

test('every layer of every fixture store rebuilds to its diff-digest and diff-size', async () => {
  let checked = 0;
  for (const name of storeNames) {
    const store = open(fx.stores[name]);
    const snap = await store.snapshot();
    for (const layer of snap.layers) {
      if (!layer.diffDigest || !existsSync(store.tarSplitPath(layer))) continue; // container layers have none
      const got = await drain(await store.layerTar(layer.id));
      assert.equal(got.sha, layer.diffDigest, `${name} layer ${layer.id}`);
      assert.equal(got.size, layer.diffSize, `${name} layer ${layer.id}`);
      checked++;
    }
  }
  assert.ok(checked >= 10, `expected many layers, checked ${checked}`);
});

test('CRC-64: WebAssembly and TypeScript agree, and match the CRC-64s Go wrote into every fixture layer\'s tar-split', async (t) => {
  t.after(() => useWasm(true));
  // Go's hash/crc64 ISO check value, then random data cut at random points (the WebAssembly
  // part takes 64 KiB per call; short updates stay in TypeScript)
  assert.equal(new Crc64().update(Buffer.from('123456789')).digest().toString('hex'), 'b90956c775a41001');
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
  const data = Buffer.alloc(300_000);
  for (let i = 0; i < data.length; i++) data[i] = rand(256);
  for (let k = 0; k < 40; k++) {
    const len = k < 4 ? [255, 256, 65536, 65537 + 256][k] : rand(data.length);
    const b = data.subarray(rand(16), len);
    const cuts = [0, rand(b.length + 1), rand(b.length + 1), b.length].sort((x, y) => x - y);
    const pieces = new Crc64();
    for (let i = 1; i < cuts.length; i++) pieces.update(b.subarray(cuts[i - 1], cuts[i]));
    useWasm(false);
    const reference = new Crc64().update(b).digest().toString('hex');
    useWasm(true);
    assert.equal(pieces.digest().toString('hex'), reference, `${b.length} bytes cut at ${cuts}`);
  }
  assert.ok(wasmInstancesMade('crc64') > 0, 'the WebAssembly CRC-64 is built and used');
  // each file of each layer against the CRC-64 Go's tar-split recorded (check 'crc'), both ways
  for (const wasm of [true, false]) {
    useWasm(wasm);
    let files = 0;
    for (const name of storeNames) {
      const store = open(fx.stores[name]);
      for (const layer of (await store.snapshot()).layers) {
        if (!layer.diffDigest || !existsSync(store.tarSplitPath(layer))) continue;
        const got = await drain(await store.layerTar(layer.id, { check: 'crc' }));
        assert.equal(got.sha, layer.diffDigest, `${name} layer ${layer.id}`);
        files++;
      }
    }
    assert.ok(files >= 10);
  }
});

test('small files read on the calling thread and by the reader thread give the same verified bytes', async () => {
  // A process reads its first few thousand small files itself, then hands them to the reader
  // thread: rebuild the fixture's many-small-files layer until both ways have done some.
  const store = open(fx.stores.overlay);
  const snap = await store.snapshot();
  const layer = snap.layers.filter((l) => l.diffDigest && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  for (let i = 0; i < 40 && (layerReads().here === 0 || layerReads().thread === 0); i++) {
    const got = await drain(await store.layerTar(layer.id));
    assert.equal(got.sha, layer.diffDigest, `rebuild ${i}`);
    await new Promise((r) => setTimeout(r, 25)); // the thread comes up meanwhile
  }
  const reads = layerReads();
  assert.ok(reads.here > 0 && reads.thread > 0, `stretches read here ${reads.here}, by the thread ${reads.thread}`);
});

test('small files not in the page cache are asked for a wave at a time, by two reader threads, and give the same verified bytes', async (t) => {
  // (after the test above: this process's reader thread is up, so the stretches go to the threads)
  const store = open(fx.stores.overlay);
  const snap = await store.snapshot();
  const layer = snap.layers.filter((l) => l.diffDigest && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  const dir = join(fx.stores.overlay.root, 'overlay', layer.id, 'diff');
  // out of the page cache (POSIX_FADV_DONTNEED on each file); fincore shows whether it worked
  const evict = () => execFileSync('python3', ['-c', `import os
for d, _, fs in os.walk(${JSON.stringify(dir)}):
  for f in fs:
    p = os.path.join(d, f)
    if os.path.isfile(p) and not os.path.islink(p):
      fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)`]);
  const cachedPages = () => {
    const files = execFileSync('find', [dir, '-type', 'f', '-size', '+0'], { encoding: 'utf8' }).trim().split('\n').slice(0, 200);
    return execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'PAGES', ...files], { encoding: 'utf8' }).trim().split('\n').reduce((n, l) => n + Number(l), 0);
  };
  evict();
  if (cachedPages() > 0) return t.skip('this file system keeps the files in memory (tmpfs?): they cannot be evicted from the page cache');
  const before = layerReads();
  for (let i = 0; i < 40; i++) {
    const r = layerReads();
    if (r.threadMissed > before.threadMissed && r.threads === 2) break;
    evict();
    const got = await drain(await store.layerTar(layer.id));
    assert.equal(got.sha, layer.diffDigest, `rebuild ${i} after the files were evicted`);
    assert.equal(got.size, layer.diffSize);
    await new Promise((r) => setTimeout(r, 25)); // the threads come up meanwhile
  }
  const reads = layerReads();
  assert.ok(reads.threadMissed > before.threadMissed, `stretches read with files not in the page cache: ${reads.threadMissed - before.threadMissed}`);
  assert.equal(reads.threads, 2, 'a second reader thread once files had to be waited for');
});

test('rebuilt layers equal what skopeo copies out of containers-storage', async () => {
  for (const name of storeNames) {
    const s = fx.stores[name];
    const store = open(s);
    const snap = await store.snapshot();
    // Local manifest lists (podman manifest create) have no layers; skopeo cannot copy them out.
    for (const img of fx.images.filter((i) => i.store === name && snap.image(i.name)?.topLayer).slice(0, 3)) {
      const dir = mkdtempSync(join(tmpdir(), 'csreg-skopeo-'));
      try {
        execFileSync('skopeo', ['copy', '--quiet', csRef(s, img.name), `dir:${dir}`], { stdio: ['ignore', 'ignore', 'pipe'] });
        const image = snap.image(img.name);
        assert.ok(image, `${img.name} found by name`);
        const chain = snap.layerChain(image.topLayer);
        assert.equal(chain.problem, undefined);
        for (const layer of chain.layers) {
          const file = join(dir, layer.diffDigest!.slice(7));
          assert.ok(existsSync(file), `skopeo wrote ${file}`);
          const ours = await drain(await store.layerTar(layer.id));
          assert.equal(ours.sha, await fileSha(file), `${name} ${img.name} layer ${layer.id}`);
          assert.equal(ours.size, statSync(file).size);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
});

test('a rebuild started at an offset equals the tail of the full one', async () => {
  const store = open(fx.stores.overlay);
  const snap = await store.snapshot();
  // The largest layer has the big file: offsets inside it, at a header and near the end.
  const layer = [...snap.layers].filter((l) => l.diffSize && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  const full = await collect(await store.layerTar(layer.id));
  assert.equal(full.length, layer.diffSize);
  for (const start of [0, 1, 512, 513, Math.floor(full.length / 2), full.length - 1024, full.length - 1]) {
    const tail = await collect(await store.layerTar(layer.id, { start }));
    assert.ok(tail.equals(full.subarray(start)), `offset ${start}`);
  }
  const mid = Math.floor(full.length / 3);
  const slice = await collect(await store.layerTar(layer.id, { start: mid, end: mid + 100_000 }));
  assert.ok(slice.equals(full.subarray(mid, mid + 100_000)), 'range in the middle');
});

test('layerTarChunks: the verified bytes of every layer, whole and from offsets, in memory read into again once the next chunk is asked for', async () => {
  let checked = 0;
  for (const name of storeNames) {
    const store = open(fx.stores[name]);
    for (const layer of (await store.snapshot()).layers) {
      if (!layer.diffDigest || !existsSync(store.tarSplitPath(layer))) continue;
      const h = createHash('sha256');
      let size = 0;
      for await (const c of store.layerTarChunks(layer.id)) {
        h.update(c);
        size += c.length;
      }
      assert.equal('sha256:' + h.digest('hex'), layer.diffDigest, `${name} layer ${layer.id}`);
      assert.equal(size, layer.diffSize);
      checked++;
    }
  }
  assert.ok(checked >= 10, `checked ${checked} layers`);

  // the layer with the 24 MiB file: its pieces come in a few buffers used again and again
  const store = open(fx.stores.overlay);
  const layer = (await store.snapshot()).layers.filter((l) => l.diffSize && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  const memory = new Set<ArrayBufferLike>();
  let chunks = 0;
  const copies: Buffer[] = [];
  // each chunk's memory is placed for the kernel's copy (alignedView): a tar offset that is a
  // multiple of 64 (file data starts at multiples of 512) at a 64-byte boundary
  const misplaced: number[] = [];
  let offset = 0;
  for await (const c of store.layerTarChunks(layer.id)) {
    if (Number(koffi.address(c) % 64n) !== offset % 64) misplaced.push(offset);
    offset += c.length;
    memory.add(c.buffer);
    chunks++;
    await new Promise((r) => setTimeout(r, 1)); // (a chunk stays the consumer's until it asks for the next)
    copies.push(Buffer.from(c));
  }
  const full = Buffer.concat(copies);
  assert.equal('sha256:' + createHash('sha256').update(full).digest('hex'), layer.diffDigest);
  assert.ok(chunks >= 24 && memory.size <= chunks / 3, `${chunks} chunks in ${memory.size} buffers`);
  assert.deepEqual(misplaced, [], 'chunks whose tar offsets are not where their addresses are modulo 64');
  for (const start of [1, 513, Math.floor(full.length / 2), full.length - 1]) {
    const tail: Buffer[] = [];
    for await (const c of store.layerTarChunks(layer.id, { start })) tail.push(Buffer.from(c));
    assert.ok(Buffer.concat(tail).equals(full.subarray(start)), `offset ${start}`);
  }
});

test('layerTarChunks holds the layer store\'s read lock until it ends or is left early', async () => {
  const s = fx.stores.vfs;
  const store = open(s);
  const layer = (await store.snapshot()).layers.filter((l) => l.diffSize && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  const writerCould = () => writerCouldLock(join(s.root, 'vfs-layers', 'layers.lock'));
  assert.equal(writerCould(), true, 'unlocked before');
  const it = store.layerTarChunks(layer.id);
  assert.equal((await it.next()).done, false);
  assert.equal(writerCould(), false, 'a writer must wait while chunks are taken');
  await it.return();
  assert.equal(writerCould(), true, 'unlocked once the consumer left');
});

test('csreg storage diff: the verified tar to a file, from an offset to stdout, and a quiet stop when the reader goes', async (t) => {
  const s = fx.stores.overlay;
  const store = open(s);
  const layer = (await store.snapshot()).layers.filter((l) => l.diffSize && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  const dir = mkdtempSync(join(tmpdir(), 'csreg-diff-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'layer.tar');
  execFileSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', 'diff', layer.id, '-o', file]);
  assert.equal(await fileSha(file), layer.diffDigest);
  const offset = 1_000_001;
  const tail = execFileSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', 'diff', layer.id, '--offset', String(offset)], { maxBuffer: 1 << 27 });
  assert.ok(tail.equals(readFileSync(file).subarray(offset)), 'the tail from the offset');
  // a reader that stops after 100 bytes (as `| head -c 100`): exit 0, nothing on stderr
  const child = spawn('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', 'diff', layer.id], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  await new Promise<void>((res) => child.stdout.once('data', () => res()));
  child.stdout.destroy();
  const code = await new Promise<number | null>((res) => child.on('exit', res));
  assert.equal(stderr, '');
  assert.equal(code, 0);
});

test('csreg storage images --json agrees with podman images', () => {
  for (const name of storeNames) {
    const s = fx.stores[name];
    const ours = JSON.parse(execFileSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', 'images', '--json'], { encoding: 'utf8' })) as
      { id: string; names: string[]; digest?: string; digests: string[] }[];
    const theirs = JSON.parse(execFileSync('podman', [...storeArgs(s), 'images', '-a', '--format', 'json'], { encoding: 'utf8' })) as
      { Id: string; Names?: string[]; Digest: string; RepoDigests?: string[] }[];
    // podman repeats an image once per tag
    assert.deepEqual(ours.map((i) => i.id).sort(), [...new Set(theirs.map((i) => i.Id))].sort(), `${name}: image IDs`);
    for (const p of theirs) {
      const o = ours.find((i) => i.id === p.Id)!;
      assert.deepEqual([...o.names].sort(), [...(p.Names ?? [])].sort(), `${name} ${p.Id}: names`);
      assert.equal(o.digest, p.Digest, `${name} ${p.Id}: digest`);
      // podman's RepoDigests pair every repository name with each of c/storage's digests
      const repoDigests = new Set((p.RepoDigests ?? []).map((r) => r.slice(r.indexOf('@') + 1)));
      if (repoDigests.size) assert.deepEqual([...o.digests].sort(), [...repoDigests].sort(), `${name} ${p.Id}: digests`);
    }
  }
});

test('the csreg command (bin/csreg) starts Node without NODE_EXTRA_CA_CERTS and passes everything else on', () => {
  const s = fx.stores.overlay;
  const args = [...storeArgs(s), 'storage', 'images', '--json'];
  // Node loads the bundle at start, before any script, and warns when it cannot: the check can fail
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: '/nonexistent/csreg-test-ca.pem' };
  const direct = spawnSync('node', ['dist/src/cli/main.js', ...args], { env, encoding: 'utf8' });
  assert.match(direct.stderr, /extra certs/, 'node itself reads NODE_EXTRA_CA_CERTS');
  // run as npm links it: through a symlink from another directory
  const dir = mkdtempSync(join(tmpdir(), 'csreg-bin-'));
  try {
    symlinkSync(join(process.cwd(), 'bin', 'csreg'), join(dir, 'csreg'));
    const viaBin = spawnSync(join(dir, 'csreg'), args, { env, encoding: 'utf8', cwd: dir });
    assert.equal(viaBin.status, 0, viaBin.stderr);
    assert.doesNotMatch(viaBin.stderr, /extra certs/);
    assert.deepEqual(JSON.parse(viaBin.stdout), JSON.parse(direct.stdout));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('layers and containers listings agree with the Go containers-storage tool', () => {
  for (const name of storeNames) {
    const s = fx.stores[name];
    const go = (what: string) => JSON.parse(execFileSync('containers-storage',
      ['--graph', s.root, '--run', s.runroot, '--storage-driver', s.driver, what, '--json'], { encoding: 'utf8' })) as { id: string }[] | null;
    const ours = (what: string) => JSON.parse(execFileSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', what, '--json'], { encoding: 'utf8' })) as { id: string }[];
    for (const what of ['layers', 'containers']) {
      assert.deepEqual(ours(what).map((x) => x.id).sort(), (go(what) ?? []).map((x) => x.id).sort(), `${name} ${what}`);
    }
  }
});

test('every big-data item of every image is found under its encoded file name', async () => {
  let n = 0;
  for (const name of storeNames) {
    const store = open(fx.stores[name]);
    for (const img of (await store.snapshot()).images) {
      for (const key of img.bigDataNames) {
        const data = await store.imageBigData(img, key);
        assert.equal(data.length, img.bigDataSizes[key], `${img.id} ${key} size`);
        const digest = img.bigDataDigests[key];
        // manifest digests are c/image's manifest.Digest, i.e. sha256 of the bytes for schema2/OCI
        if (digest) assert.equal('sha256:' + createHash('sha256').update(data).digest('hex'), digest, `${img.id} ${key} digest`);
        n++;
      }
    }
  }
  assert.ok(n > 10);
});

test('big-data file names follow makeBigDataBaseName, quirks included', () => {
  assert.equal(bigDataFileName('manifest'), 'manifest');
  assert.equal(bigDataFileName('instances.json'), 'instances.json');
  assert.equal(bigDataFileName('abc:'), 'abc:'); // last character is never checked
  assert.equal(bigDataFileName('X'), 'X');
  assert.equal(bigDataFileName('Xy'), '=' + Buffer.from('Xy').toString('base64'));
  assert.equal(bigDataFileName('abé'), 'abé'); // a multi-byte last rune is consumed too
  assert.equal(bigDataFileName('éa'), '=' + Buffer.from('éa').toString('base64'));
  const k = 'sha256:' + 'e4'.repeat(32);
  assert.equal(bigDataFileName(k), '=' + Buffer.from(k).toString('base64'));
});

test('names: ID, unique ID prefix, full name, short name and digest resolve like podman', async () => {
  const s = fx.stores.overlay;
  const store = open(s);
  const snap = await store.snapshot();
  // podman resolves a manifest list's name to the list's instance for this platform; c/storage
  // (and csreg) resolve it to the list's own record, so lists are left out here.
  for (const img of fx.images.filter((i) => i.store === 'overlay' && snap.image(i.name)?.topLayer)) {
    const podmanId = execFileSync('podman', [...storeArgs(s), 'image', 'inspect', '--format', '{{.Id}}', img.name], { encoding: 'utf8' }).trim();
    assert.equal(snap.image(img.name)?.id, podmanId, img.name);
    assert.equal(snap.image(podmanId)?.id, podmanId);
    assert.equal(snap.image(podmanId.slice(0, 12))?.id, podmanId);
    const shortName = img.name.replace(/^localhost\//, '');
    assert.equal(snap.image(shortName)?.id, podmanId, `short ${shortName}`);
    const byDigest = snap.image(snap.image(podmanId)!.digest!);
    assert.ok(byDigest && byDigest.digests.includes(snap.image(podmanId)!.digest!));
  }
  assert.equal(snap.image('localhost/csreg/nonexistent:1'), undefined);
});

test('storage.conf is found and read like the Go tools do (compared with podman info)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-conf-'));
  try {
    const conf = join(dir, 'storage.conf');
    writeFileSync(conf, `[storage]\ndriver = "vfs"\ngraphroot = "${dir}/g-$UID"\nrunroot = "\${CSREG_TEST_RUN}/r"\n[storage.options]\nadditionalimagestores = ["${dir}/ais"]\n`);
    const env = { ...process.env, CONTAINERS_STORAGE_CONF: conf, CSREG_TEST_RUN: join(dir, 'run') };
    const loc = resolveStoreLocation({}, env);
    const info = JSON.parse(execFileSync('podman', ['info', '--format', 'json'], { env, encoding: 'utf8' })).store;
    assert.equal(loc.graphRoot, info.graphRoot);
    assert.equal(loc.runRoot, info.runRoot);
    assert.equal(loc.driver, info.graphDriverName);
    assert.equal(loc.configFile, info.configFile);
    assert.deepEqual(loc.additionalImageStores, [`${dir}/ais`]);
    // flags override the file, as --root/--runroot/--storage-driver do for podman
    const over = resolveStoreLocation({ root: '/x', runroot: '/y', driver: 'overlay2' }, env);
    assert.deepEqual([over.graphRoot, over.runRoot, over.driver], ['/x', '/y', 'overlay']);
    const def = resolveStoreLocation({}, { ...process.env, CONTAINERS_STORAGE_CONF: undefined });
    const defInfo = JSON.parse(execFileSync('podman', ['info', '--format', 'json'], { encoding: 'utf8' })).store;
    assert.deepEqual([def.graphRoot, def.runRoot, def.driver], [defInfo.graphRoot, defInfo.runRoot, defInfo.graphDriverName]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a damaged store gives clear errors that name the layer or file', async (t) => {
  const c = copyStore(fx.stores.vfs);
  t.after(() => rmSync(c.dir, { recursive: true, force: true }));
  const store = open(c);
  const snap = await store.snapshot();
  const layer = snap.layers.filter((l) => l.diffSize && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];

  // One byte of a layer file changed: the stream fails, never ends cleanly.
  const root = store.contentRoots(layer)[0];
  const big = findLargestFile(root);
  const buf = readFileSync(big);
  buf[Math.floor(buf.length / 2)] ^= 0xff;
  writeFileSync(big, buf);
  await assert.rejects(drain(await store.layerTar(layer.id)), (e: Error) => e.message.includes(layer.id));
  let before = 0; // (the chunks before the failure: never the whole tar)
  await assert.rejects(async () => {
    for await (const c of store.layerTarChunks(layer.id)) before += c.length;
  }, (e: Error) => e.message.includes(layer.id));
  assert.ok(before < layer.diffSize!, `${before} of ${layer.diffSize} bytes before the error`);

  // A truncated tar-split.
  const other = snap.layers.find((l) => l.id !== layer.id && l.diffSize && existsSync(store.tarSplitPath(l)))!;
  const ts = readFileSync(store.tarSplitPath(other));
  writeFileSync(store.tarSplitPath(other), ts.subarray(0, Math.floor(ts.length / 2)));
  await assert.rejects(async () => drain(await store.layerTar(other.id)), (e: Error) => e.message.includes(other.id) || e.message.includes('tar-split'));

  // A malformed images.json.
  const imagesJson = join(c.root, 'vfs-images', 'images.json');
  writeFileSync(imagesJson, readFileSync(imagesJson, 'utf8').slice(0, 40));
  const fresh = open(c);
  await assert.rejects(fresh.snapshot(), (e: Error) => e.message.includes(imagesJson) && /malformed JSON/.test(e.message));
});

test('csreg storage check: every store the Go tools wrote passes; a changed layer file, a lost tar-split, a changed big-data item, unreadable metadata, missing signatures are each found', async (t) => {
  const check = (s: FixtureStore) => spawnSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', 'check', '--json'], { encoding: 'utf8' });
  for (const name of storeNames) {
    const r = check(fx.stores[name]);
    assert.equal(r.status, 0, `${name}: ${r.stdout}${r.stderr}`);
    const out = JSON.parse(r.stdout) as { layers: number; layerBytes: number; images: number; problems: unknown[] };
    const snap = await open(fx.stores[name]).snapshot();
    assert.deepEqual(out.problems, []);
    assert.equal(out.images, snap.images.length);
    assert.ok(out.layerBytes > 0 && out.layers > 0, name);
  }
  const c = copyStore(fx.stores.vfs);
  t.after(() => rmSync(c.dir, { recursive: true, force: true }));
  const store = open(c);
  const snap = await store.snapshot();
  const [changed, lost] = snap.layers.filter((l) => l.diffSize && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!);
  const big = findLargestFile(store.contentRoots(changed)[0]);
  const buf = readFileSync(big);
  buf[Math.floor(buf.length / 2)] ^= 0xff;
  writeFileSync(big, buf);
  rmSync(store.tarSplitPath(lost));
  const image = snap.images.find((i) => i.bigDataNames.includes('manifest'))!;
  const item = join(c.root, 'vfs-images', image.id, bigDataFileName('manifest'));
  writeFileSync(item, readFileSync(item, 'utf8').replace('schemaVersion', 'schemaversion'));
  // metadata that is not JSON, and signature sizes the big data does not hold: containers/image
  // refuses to read either image (checked with skopeo)
  const [notJson, unsigned] = snap.images.filter((i) => i.id !== image.id && i.names.length);
  const cli = (...args: string[]) => execFileSync('node', ['dist/src/cli/main.js', ...storeArgs(c), 'storage', ...args]);
  cli('set-metadata', '-m', 'not json', notJson.id);
  cli('set-metadata', '-m', JSON.stringify({ 'signature-sizes': [700] }), unsigned.id);
  for (const [i, why] of [[notJson, /decoding metadata/], [unsigned, /reading signatures/]] as const) {
    const go = spawnSync('skopeo', ['copy', '-q', csRef(c, `@${i.id}`), `dir:${join(c.dir, `out-${i.id}`)}`], { encoding: 'utf8' });
    assert.match(go.stderr, why, `skopeo copies ${i.names[0]}`);
  }
  const r = check(c);
  assert.equal(r.status, 1, r.stderr);
  const problems = (JSON.parse(r.stdout) as { problems: { kind: string; id: string; message: string }[] }).problems;
  const about = (id: string) => problems.filter((p) => p.id === id).map((p) => p.message).join('; ');
  assert.match(about(changed.id), /checksum|digest|does not match/, JSON.stringify(problems));
  assert.match(about(lost.id), /no tar-split/);
  assert.match(about(image.id), /big data "manifest" has digest sha256:[0-9a-f]{64}, recorded sha256:/);
  assert.match(about(notJson.id), /metadata is not JSON: containers\/image cannot read this image/);
  assert.match(about(unsigned.id), /signatures of sha256:[0-9a-f]{64}: 700 bytes recorded, big data "signatures" has none/);
  assert.equal(problems.length, 5, JSON.stringify(problems));
});

test('a FIFO where a layer file or the tar-split should be fails csreg storage diff at once, with an error naming it', async (t) => {
  // (in a process of its own, bounded: the rebuild used to wait forever for a writer, and the
  // fuzz test's FIFO cases then hold their whole test file)
  const c = copyStore(fx.stores.vfs);
  t.after(() => rmSync(c.dir, { recursive: true, force: true }));
  const store = open(c);
  const layer = (await store.snapshot()).layers.filter((l) => l.diffSize && existsSync(store.tarSplitPath(l))).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  const root = store.contentRoots(layer)[0];
  const diff = () => spawnSync('node', ['dist/src/cli/main.js', ...storeArgs(c), 'storage', 'diff', layer.id, '-o', '/dev/null'], { encoding: 'utf8', timeout: 30_000 });
  const asFifo = (path: string) => {
    rmSync(path);
    execFileSync('mkfifo', [path]);
  };
  // (of this layer's own files: a vfs layer directory holds its parents' files too)
  let small = '';
  for await (const e of readTarSplit(store.tarSplitPath(layer))) if (!small && e.kind === 'file' && e.size > 0 && e.size < 8192) small = join(root, e.name);
  for (const [what, path] of [['a small file', small], ['the largest file', findLargestFile(root)]]) {
    const kept = readFileSync(path);
    asFifo(path);
    const r = diff();
    assert.equal(r.signal, null, `${what} as a FIFO: csreg storage diff still running after 30 s`);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /is not a regular file/, `${what}: ${r.stderr}`);
    rmSync(path);
    writeFileSync(path, kept);
  }
  assert.equal(diff().status, 0, 'the files back: the layer rebuilds');
  asFifo(store.tarSplitPath(layer));
  const r = diff();
  assert.equal(r.signal, null, 'the tar-split as a FIFO: csreg storage diff still running after 30 s');
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(store.tarSplitPath(layer)), r.stderr);
});

function findLargestFile(dir: string): string {
  let best = { path: '', size: -1 };
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const size = statSync(p).size;
        if (size > best.size) best = { path: p, size };
      }
    }
  };
  walk(dir);
  return best.path;
}

test('reads stay consistent while podman pulls and removes images in another process', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-race-'));
  const reg = spawn('docker-registry', ['serve', fx.registry.config], { stdio: 'ignore' });
  t.after(() => {
    reg.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  await waitForRegistry(fx.registry.addr);
  const s: FixtureStore = { root: join(dir, 'root'), runroot: join(dir, 'run'), driver: 'overlay' };
  const refs = fx.pushed.filter((p) => p.format !== 'list').slice(0, 2).map((p) => p.ref);
  // podman's loop: pull, remove, repeat, in a separate process.
  const script = `for i in 1 2 3 4; do for r in ${refs.join(' ')}; do podman ${storeArgs(s).join(' ')} pull -q --tls-verify=false "$r" >/dev/null; done; podman ${storeArgs(s).join(' ')} rmi -a -f >/dev/null; done`;
  execFileSync('mkdir', ['-p', s.root]);
  const loop = spawn('bash', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  loop.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<number>((res) => loop.on('exit', (code) => res(code ?? -1)));
  const store = open(s);
  let reads = 0;
  let sawImage = 0;
  let finished = false;
  void done.then(() => (finished = true));
  while (!finished) {
    const snap = await store.snapshot();
    for (const img of snap.images) {
      const chain = snap.layerChain(img.topLayer);
      assert.equal(chain.problem, undefined, `image ${img.id} listed with a broken layer chain`);
      // c/image records a pulled image first and adds its big data items one write at a time
      // after: a record without its manifest yet is a state podman's pull goes through.
      if (!img.bigDataNames.includes('manifest')) continue;
      await store.imageBigData(img, 'manifest').catch((e: NodeJS.ErrnoException) => {
        // The image may be removed between our snapshot and this read; anything else is a bug.
        if (e.code !== 'ENOENT') throw e;
      });
      sawImage++;
    }
    reads++;
    // let the child's exit event in: a loop of resolved promises never yields to the event loop
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(await done, 0, `podman loop failed: ${stderr}`);
  assert.ok(reads > 5 && sawImage > 0, `reads ${reads}, images seen ${sawImage}`);
});

async function waitForRegistry(addr: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://${addr}/v2/`);
      if (r.ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`docker-registry did not start on ${addr}`);
}

test('rebuilds stopped early (a range, a consumer that goes) leave no descriptor open', async () => {
  const store = open(fx.stores.overlay);
  const snap = await store.snapshot();
  // the layer with the largest tar-split: more than one read of it, so stopping early leaves some unread
  const layer = snap.layers.filter((l) => existsSync(store.tarSplitPath(l))).sort((a, b) => statSync(store.tarSplitPath(b)).size - statSync(store.tarSplitPath(a)).size)[0];
  assert.ok(statSync(store.tarSplitPath(layer)).size > 64 << 10, 'a tar-split larger than one read');
  const fds = openDescriptors;
  const before = fds();
  for (let i = 0; i < 40; i++) {
    let n = 0;
    for await (const c of store.layerTarChunks(layer.id, { end: 1000 })) n += c.length;
    assert.equal(n, 1000);
    for await (const c of store.layerTarChunks(layer.id)) if (c.length) break;
  }
  await new Promise((r) => setTimeout(r, 100)); // (closes complete on the thread pool)
  assert.ok(fds() - before < 5, `descriptors open before ${before}, after 80 rebuilds stopped early ${fds()}`);
});
