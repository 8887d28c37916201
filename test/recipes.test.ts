// Original upstream digests, served by bit-exact recompression: stores whose layers were
// compressed by skopeo (pgzip), by Go's compress/gzip at levels 6 and 1, and by GNU gzip,
// each pulled by podman; skopeo and podman pull from csreg by the original digests.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, readFileSync, readdirSync, existsSync, openSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Store } from '../src/storage/store.js';
import { Snapshot } from '../src/storage/snapshot.js';
import { startRegistry, type RunningRegistry } from '../src/registry/server.js';
import { imageOfLayer, PRODUCE_SLOTS, Recipes, recompressionThreads } from '../src/compress/recipes.js';
import { hintedProfiles } from '../src/compress/hints.js';
import { busyNow, collectWhenIdle, idleCollections } from '../src/compress/idle-gc.js';
import { createLogger } from '../src/log.js';
import { loadFixtures, storeArgs, run, sha, repoRoot, freshStore, removeStore, roomToKeep, openPaths, writerCouldLock, repoOf, type FixtureStore } from './fixtures.js';

const fx = loadFixtures();
const main = join(repoRoot(), 'dist', 'src', 'cli', 'main.js');
const work = mkdtempSync(join(tmpdir(), 'csreg-recipes-'));
const servers: RunningRegistry[] = [];
after(async () => {
  for (const s of servers) await s.close(100);
  rmSync(work, { recursive: true, force: true });
});

interface Served { url: string; host: string; state: string; logs: string[] }
async function serve(s: FixtureStore, name: string): Promise<Served> {
  const logs: string[] = [];
  const out = new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } });
  const state = join(work, `state-${name}`);
  const reg = await startRegistry({ store: Store.open(s), log: createLogger({ out }), addr: '127.0.0.1:0', stateDir: state });
  servers.push(reg);
  return { url: reg.url, host: reg.url.slice('http://'.length), state, logs };
}

/** The files in the store's layer directories this process has open. */
const layerFilesOpen = (s: FixtureStore): string[] => openPaths().filter((p) => p.startsWith(join(s.root, 'overlay') + '/'));

/** Whether something holds a lock on the store's layers.lock (podman's writes would wait). */
const layersLockHeld = (s: FixtureStore): boolean => !writerCouldLock(join(s.root, 'overlay-layers', 'layers.lock'));

/** Waits (up to 5 s) until no layer file is open and the layers lock is free, then says what is left. */
async function layerReadsEnded(s: FixtureStore): Promise<{ files: string[]; locked: boolean }> {
  for (let i = 0; i < 250 && (layerFilesOpen(s).length || layersLockHeld(s)); i++) await new Promise((r) => setTimeout(r, 20));
  return { files: layerFilesOpen(s), locked: layersLockHeld(s) };
}

async function bytes(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Headers }> {
  const r = await fetch(url, { headers });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()), headers: r.headers };
}

function verdicts(state: string): Record<string, { profile: string | null; blockOffsets?: number[]; tried: string[] }> {
  return JSON.parse(readFileSync(join(state, 'recipes.json'), 'utf8'));
}

/** The layers of the image skopeo pushed as OCI with pgzip, from its original manifest as srv serves it. */
async function pgzipImage(srv: Served): Promise<{ layers: { digest: string; size: number }[]; blobUrl: (digest: string) => string }> {
  const p = fx.pushed.find((x) => x.format === 'oci' && x.compression === 'gzip')!;
  const m = JSON.parse((await bytes(`${srv.url}/v2/${repoOf(p.ref)}/manifests/${p.manifestDigest}`)).body.toString()) as { layers: { digest: string; size: number }[] };
  return { layers: m.layers, blobUrl: (d) => `${srv.url}/v2/${repoOf(p.ref)}/blobs/${d}` };
}

/** Pull by the original digest with skopeo (it verifies every blob's digest) and check the blobs it wrote. */
async function skopeoByDigest(srv: Served, repo: string, digest: string): Promise<void> {
  const dir = join(work, `pull-${digest.slice(7, 19)}`);
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${srv.host}/${repo}@${digest}`, `dir:${dir}`]);
  const manifest = readFileSync(join(dir, 'manifest.json'));
  assert.equal(sha(manifest), digest, 'skopeo received the original manifest');
  const m = JSON.parse(manifest.toString()) as { layers: { digest: string }[] };
  for (const l of m.layers) assert.equal(sha(readFileSync(join(dir, l.digest.slice(7)))), l.digest);
}

test('layers skopeo compressed (pgzip) are reproduced: original manifests served, skopeo and podman pull by the upstream digest', async () => {
  const srv = await serve(fx.stores.pulled, 'pulled');
  const gzipPushes = fx.pushed.filter((p) => p.compression === 'gzip' && p.format !== 'list');
  for (const p of gzipPushes) {
    const repo = repoOf(p.ref);
    const r = await bytes(`${srv.url}/v2/${repo}/manifests/${p.manifestDigest}`);
    assert.equal(r.status, 200, `${p.ref} by its original digest`);
    assert.equal(sha(r.body), p.manifestDigest);
    await skopeoByDigest(srv, repo, p.manifestDigest);
  }
  const v = verdicts(srv.state);
  assert.ok(Object.keys(v).length >= 2);
  for (const [d, x] of Object.entries(v)) assert.equal(x.profile, 'pgzip-1.2.5/flate-1.15.12/default', `${d} is pgzip's`);
  // podman, from an empty store, by the original digest
  const empty = freshStore('overlay');
  try {
    const p = gzipPushes[0];
    await run('podman', [...storeArgs(empty), 'pull', '-q', '--tls-verify=false', `${srv.host}/${repoOf(p.ref)}@${p.manifestDigest}`]);
    const digests = await run('podman', [...storeArgs(empty), 'images', '--digests', '--format', '{{.Digest}}']);
    assert.ok(digests.includes(p.manifestDigest), 'podman recorded the original digest');
  } finally {
    removeStore(empty);
  }
});

const VARIANTS = { go6: ['Go compress/gzip, default level', 'go1.19-gzip/6'], go1: ['Go compress/gzip, BestSpeed', 'go1.19-gzip/1'], gnu6: ['GNU gzip -n -6', 'gnu-gzip-1.12/6'], py9: ["Python's gzip.compress (zlib, level 9)", 'zlib-1.2/9+zlib'] } as const;
for (const variant of ['go6', 'go1', 'gnu6', 'py9'] as const) {
  test(`layers from ${VARIANTS[variant][0]} are reproduced and served by their original digests`, async () => {
    const f = fx.recipes.find((r) => r.variant === variant)!;
    const srv = await serve(f.store, variant);
    const r = await bytes(`${srv.url}/v2/${repoOf(f.ref)}/manifests/1`);
    assert.equal(r.status, 200);
    assert.equal(sha(r.body), f.manifestDigest, 'the tag serves the original manifest');
    await skopeoByDigest(srv, repoOf(f.ref), f.manifestDigest);
    const profiles = Object.values(verdicts(srv.state)).map((x) => x.profile);
    assert.ok(profiles.length >= 1);
    // on a small input GNU gzip -9 and zlib -9 (with the same OS byte) emit the same bytes: either reproduces it
    const same = variant === 'py9' ? ['gnu-gzip-1.12/9'] : [];
    assert.ok(profiles.every((p) => p === VARIANTS[variant][1] || same.includes(p!)), `${profiles.join(', ')}`);
    // the guesses' order: go6's config is as BuildKit writes one, so Go's gzip is tried first and
    // nothing else; the others carry buildah's label, so containers/image's pgzip comes first
    const tried = Object.values(verdicts(srv.state)).map((x) => x.tried);
    if (variant === 'go6') assert.ok(tried.every((t) => t.join() === 'go1.19-gzip/6'), JSON.stringify(tried));
    else if (variant !== 'py9') assert.ok(tried.every((t) => t[0] === 'pgzip-1.2.5/flate-1.15.12/default' && t.length > 1), JSON.stringify(tried));
  });
}

test('an image whose layers the store had from another compression\'s pull is served by its original digests (its manifest\'s layers paired with its chain)', async () => {
  const f = fx.recipes.find((r) => r.variant === 'reused')!;
  const store = Store.open(f.store);
  const snap = await store.snapshot();
  const srv = await serve(f.store, 'reused');
  const r = await bytes(`${srv.url}/v2/${repoOf(f.ref)}/manifests/${f.manifestDigest}`);
  assert.equal(r.status, 200, 'by its original digest');
  assert.equal(sha(r.body), f.manifestDigest);
  // the premise: podman reused the layers the store had uncompressed, so no layer records Go's digests
  const layers = (JSON.parse(r.body.toString()) as { layers: { digest: string }[] }).layers;
  for (const l of layers) assert.ok(!snap.layers.some((x) => x.compressedDigest === l.digest), `no layer record names ${l.digest}`);
  // every blob comes from the reused layers, verified end to end by skopeo
  await skopeoByDigest(srv, repoOf(f.ref), f.manifestDigest);
  // found at the first guess: the hints come from the Go image's (BuildKit's) config, not from GNU gzip's image's
  for (const l of layers) assert.deepEqual([verdicts(srv.state)[l.digest]?.profile, verdicts(srv.state)[l.digest]?.tried], ['go1.19-gzip/6', ['go1.19-gzip/6']], l.digest);
  // a blob request with no manifest request before it (a fresh server knowing the recipes) finds the pairing itself
  mkdirSync(join(work, 'state-reused-blob'), { recursive: true });
  writeFileSync(join(work, 'state-reused-blob', 'recipes.json'), readFileSync(join(srv.state, 'recipes.json')));
  const again = await serve(f.store, 'reused-blob');
  const blob = await bytes(`${again.url}/v2/${repoOf(f.ref)}/blobs/${layers[0].digest}`);
  assert.equal(blob.status, 200);
  assert.equal(sha(blob.body), layers[0].digest);
  // the GNU gzip image, pulled into the same store before it, is served by its own digests too
  const gnu = fx.recipes.find((x) => x.variant === 'gnu6')!;
  const gnuServed = await bytes(`${srv.url}/v2/${repoOf(gnu.ref)}/manifests/${gnu.manifestDigest}`);
  assert.equal(sha(gnuServed.body), gnu.manifestDigest);
  for (const l of (JSON.parse(gnuServed.body.toString()) as { layers: { digest: string }[] }).layers) {
    assert.ok(!snap.layers.some((x) => x.compressedDigest === l.digest), `no layer record names ${l.digest} either (the store had the tars uncompressed)`);
  }
  // and `csreg recipes list` counts both images and lists the reused layers' blobs
  const list = JSON.parse(await run(process.execPath, [main, ...storeArgs(f.store), 'recipes', 'list', '--state-dir', srv.state, '--json'])) as { summary: { imagesServableByOriginalDigest: number }; layers: { digest: string; profile: string }[] };
  assert.equal(list.summary.imagesServableByOriginalDigest, 2);
  for (const l of layers) assert.equal(list.layers.find((x) => x.digest === l.digest)?.profile, 'go1.19-gzip/6');
});

test('image configs order the guesses: buildah\'s label, BuildKit\'s, ko\'s and Jib\'s history entries, matched to layers only when they are as many', () => {
  const PGZIP = 'pgzip-1.2.5/flate-1.15.12/default';
  const JAVA = ['zlib-1.2/6+java', 'zlib-1.2/6+java-legacy'];
  const buildkit = { comment: 'buildkit.dockerfile.v0', created_by: 'RUN /bin/sh -c make # buildkit' };
  const docker = {
    config: { Labels: { maintainer: 'x' } },
    history: [{ created_by: '/bin/sh -c #(nop) ADD file:abc in / ' }, { created_by: '/bin/sh -c #(nop)  CMD ["bash"]', empty_layer: true }, buildkit, { ...buildkit, empty_layer: true }, buildkit],
  };
  assert.deepEqual(hintedProfiles(docker, 0, 3), [], 'a base layer no tool marked');
  assert.deepEqual(hintedProfiles(docker, 1, 3), ['go1.19-gzip/6'], 'empty-layer entries are skipped');
  assert.deepEqual(hintedProfiles(docker, 2, 3), ['go1.19-gzip/6']);
  assert.deepEqual(hintedProfiles(docker, 1, 4), [], 'history entries and layers that do not pair up say nothing per layer');
  const buildah = { config: { Labels: { 'io.buildah.version': '1.28.2' } }, history: docker.history };
  assert.deepEqual(hintedProfiles(buildah, 2, 3), [PGZIP, 'go1.19-gzip/6'], 'pushed by containers/image first, then who made the layer');
  assert.deepEqual(hintedProfiles(buildah, 0, 3), [PGZIP]);
  const jib = { history: [{ created_by: 'bazel build ...' }, { author: 'Jib', created_by: 'jib-maven-plugin:3.4.0', comment: 'dependencies' }, { created_by: 'jib-gradle-plugin:3.4.0' }] };
  assert.deepEqual(hintedProfiles(jib, 1, 3), JAVA);
  assert.deepEqual(hintedProfiles(jib, 2, 3), JAVA);
  assert.deepEqual(hintedProfiles(jib, 0, 3), []);
  const ko = { history: [{ created_by: 'bazel build //base' }, { author: 'ko', created_by: 'ko build ko://example.com/cmd/app', comment: 'go build output, at /ko-app/app' }] };
  assert.deepEqual(hintedProfiles(ko, 1, 2), ['go1.19-gzip/1']);
  for (const bad of [null, 'x', 3, [], { history: 'x' }, { history: [null, 7] }, { config: { Labels: null } }]) assert.deepEqual(hintedProfiles(bad, 0, 2), [], JSON.stringify(bad));
});

test('a layer several images share takes its hints from the image with the fewest layers (a base image pulled, not one built on it)', async () => {
  const stored = await Store.open(fx.stores.overlay).snapshot();
  // the store lists base images first; the same records listed the other way round must give the same choice
  for (const snap of [stored, new Snapshot(stored.layers, [...stored.images].reverse(), stored.containers)]) {
    const chains = snap.images.map((image) => ({ image, layers: snap.layerChain(image.topLayer) })).filter((c) => !c.layers.problem);
    let shared = 0;
    for (const [id, at] of imageOfLayer(snap)) {
      const holders = chains.filter((c) => c.layers.layers.some((l) => l.id === id));
      if (holders.length > 1) shared++;
      assert.equal(at.layers, Math.min(...holders.map((c) => c.layers.layers.length)), `layer ${id}`);
      assert.equal(at.image.id && snap.layerChain(at.image.topLayer).layers[at.index].id, id);
    }
    assert.ok(shared > 0, 'the fixture store has layers several images share');
  }
});

test('a layer GNU gzip -1 made (with a file name) is reported not reproducible; the image is served synthesized', async () => {
  const f = fx.recipes.find((r) => r.variant === 'gnu1')!;
  const state = join(work, 'state-gnu-scan');
  const scan = JSON.parse(await run(process.execPath, [main, ...storeArgs(f.store), 'recipes', 'scan', '--state-dir', state, '--json'])) as { summary: { layers: number; reproduced: number; notReproducible: number; imagesServableByOriginalDigest: number } };
  assert.deepEqual([scan.summary.reproduced, scan.summary.notReproducible, scan.summary.imagesServableByOriginalDigest], [0, scan.summary.layers, 0]);
  assert.ok(scan.summary.layers >= 1);
  const srv = await serve(f.store, 'gnu1');
  assert.equal((await bytes(`${srv.url}/v2/${repoOf(f.ref)}/manifests/${f.manifestDigest}`)).status, 404, 'no manifest whose blobs cannot be produced');
  const tag = await bytes(`${srv.url}/v2/${repoOf(f.ref)}/manifests/1`);
  assert.equal(tag.status, 200);
  assert.notEqual(sha(tag.body), f.manifestDigest, 'the synthesized manifest');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${srv.host}/${repoOf(f.ref)}:1`, `oci:${join(work, 'gnu-oci')}`]);
});

test('range reads of a reproduced pgzip blob (start, block boundary, middle, end) equal the same bytes of a full download', async () => {
  const srv = await serve(fx.stores.pulled, 'ranges');
  const { layers, blobUrl } = await pgzipImage(srv);
  const big = layers.reduce((a, b) => (b.size > a.size ? b : a));
  const url = blobUrl(big.digest);
  const full = (await bytes(url)).body;
  assert.equal(sha(full), big.digest);
  const offsets = verdicts(srv.state)[big.digest].blockOffsets!;
  assert.ok(offsets.length > 3, 'a multi-block blob');
  const size = full.length;
  const mid = Math.floor(size / 2);
  const cases: [number, number][] = [[0, 99], [offsets[1] - 50, offsets[1] + 49], [offsets[2], offsets[3] - 1], [mid, mid + 100_000], [size - 100, size - 1], [offsets[offsets.length - 1] - 3, size - 1]];
  for (const [start, end] of cases) {
    const r = await bytes(url, { Range: `bytes=${start}-${end}` });
    assert.equal(r.status, 206);
    assert.equal(r.headers.get('content-range'), `bytes ${start}-${end}/${size}`);
    assert.ok(r.body.equals(full.subarray(start, end + 1)), `bytes ${start}-${end}`);
  }
  const tail = await bytes(url, { Range: `bytes=${mid}-` });
  assert.ok(tail.body.equals(full.subarray(mid)), 'an open-ended range');
  // a range ends before the layer's tar: its rebuild is ended, not left holding files and the lock
  assert.deepEqual(await layerReadsEnded(fx.stores.pulled), { files: [], locked: false });
});

test('recompression threads are kept warm between downloads; one whose download was given up stops its job, leaves no layer file open and is kept, and the next download still verifies', async () => {
  const srv = await serve(fx.stores.pulled, 'threads');
  const { layers, blobUrl } = await pgzipImage(srv);
  const big = layers.reduce((a, b) => (b.size > a.size ? b : a));
  const url = blobUrl(big.digest);
  assert.equal(sha((await bytes(url)).body), big.digest);
  const before = recompressionThreads();
  assert.equal(sha((await bytes(url)).body), big.digest);
  const after1 = recompressionThreads();
  assert.equal(after1.started, before.started, 'no new thread for the second download');
  assert.ok(after1.reused > before.reused, 'the second download ran on a kept thread');
  // a download given up after its first bytes, while its rebuild reads the layer's files
  const ac = new AbortController();
  const r = await fetch(url, { signal: ac.signal });
  await r.body!.getReader().read();
  const openWhileRead = layerFilesOpen(fx.stores.pulled).length;
  ac.abort();
  for (let i = 0; i < 100 && recompressionThreads().stopped === after1.stopped; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(recompressionThreads().stopped, after1.stopped + 1, 'the given-up job was stopped');
  // (its thread is asked to stop, not ended: the files its rebuild opened would stay open)
  assert.deepEqual(await layerReadsEnded(fx.stores.pulled), { files: [], locked: false }, `${openWhileRead} layer files open while it was read`);
  assert.equal(sha((await bytes(url)).body), big.digest, 'a download after it verifies');
  assert.equal(recompressionThreads().started, before.started, 'on the kept thread');
});

test('a kept thread collects its garbage once idle (what its last job left), not while it is busy', async () => {
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  let garbage: number[][] | undefined = Array.from({ length: 200 }, () => Array.from({ length: 20_000 }, (_, i) => i * 1.5));
  const before = idleCollections();
  collectWhenIdle(50);
  busyNow(); // a job came: no collection
  await pause(150);
  assert.equal(idleCollections(), before, 'no collection while busy');
  const full = process.memoryUsage().heapUsed;
  assert.ok(garbage.length === 200);
  garbage = undefined;
  collectWhenIdle(50);
  await pause(150);
  assert.equal(idleCollections(), before + 1, 'one collection once idle');
  const after = process.memoryUsage().heapUsed;
  assert.ok(full - after > 20e6, `the heap gave back what the job left: ${((full - after) / 1e6).toFixed(1)} MB`);
});

test('produce jobs beyond the slots wait for one; a download whose client stops reading gives its slot up, so others go on', { timeout: 120_000 }, async () => {
  const srv = await serve(fx.stores.pulled, 'slots');
  const { layers, blobUrl } = await pgzipImage(srv);
  const big = layers.reduce((a, b) => (b.size > a.size ? b : a));
  const url = blobUrl(big.digest);
  const n = PRODUCE_SLOTS;
  const before = recompressionThreads();
  const all = await Promise.all(Array.from({ length: n + 1 }, () => bytes(url)));
  for (const r of all) assert.equal(sha(r.body), big.digest);
  assert.ok(recompressionThreads().waited > before.waited, `the last of ${n + 1} downloads at once waited for a slot`);
  // as many clients as slots read their first bytes and then nothing (the blob is larger than the buffers between)
  const stalledBefore = recompressionThreads().stalled;
  const held = await Promise.all(Array.from({ length: n }, async () => {
    const reader = (await fetch(url)).body!.getReader();
    const first = await reader.read();
    return { reader, parts: [Buffer.from(first.value!)] };
  }));
  for (let i = 0; i < 250 && recompressionThreads().stalled < stalledBefore + n; i++) await new Promise((res) => setTimeout(res, 20));
  assert.ok(recompressionThreads().stalled >= stalledBefore + n, 'every such job stopped for want of a reader');
  const other = await Promise.race([bytes(url), new Promise<never>((_, fail) => setTimeout(() => fail(new Error('a download beside the stalled ones did not finish in 30 s')), 30_000))]);
  assert.equal(sha(other.body), big.digest, 'a download beside the stalled ones completes');
  for (const h of held) {
    for (let r = await h.reader.read(); !r.done; r = await h.reader.read()) h.parts.push(Buffer.from(r.value));
    assert.equal(sha(Buffer.concat(h.parts)), big.digest, 'a stalled download, read on, verifies');
  }
  // a download given up while it waits for a slot takes none, and every slot comes back
  const busy = Array.from({ length: n }, () => bytes(url));
  const ac = new AbortController();
  const queued = fetch(url, { signal: ac.signal }).catch(() => undefined);
  await new Promise((res) => setTimeout(res, 50));
  ac.abort();
  await queued;
  for (const r of await Promise.all(busy)) assert.equal(sha(r.body), big.digest);
  for (let i = 0; i < 100 && recompressionThreads().producing > 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(recompressionThreads().producing, 0, 'no slot is still taken once every download ended');
});

test('a layer file changed on disk: neither a whole recompressed blob nor a range from its first block past that file is served, and a detection fails instead of calling it not reproducible', async () => {
  const d = join(work, 'tampered');
  mkdirSync(d);
  execFileSync('cp', ['-a', fx.stores.pulled.root, join(d, 'root')]);
  const s: FixtureStore = { root: join(d, 'root'), runroot: join(d, 'run'), driver: 'overlay' };
  const srv = await serve(s, 'tampered');
  const { layers, blobUrl } = await pgzipImage(srv);
  const store = Store.open(s);
  const snap = await store.snapshot();
  const base = snap.layers.find((l) => l.compressedDigest === layers[0].digest)!;
  const url = blobUrl(layers[0].digest);
  const original = (await bytes(url)).body; // (the recipe is found while the layer is intact)
  assert.equal(sha(original), layers[0].digest);
  // /bin/busybox is the first file of the base layer: its bytes are in the blob's first block
  const victim = join(store.contentRoots(base)[0], 'bin', 'busybox');
  const buf = readFileSync(victim);
  buf[100] ^= 1;
  writeFileSync(victim, buf);
  /** 'cut off' (the body fails), 'refused' (an error status) or the bytes received */
  const outcome = async (headers: Record<string, string>) => {
    try {
      const r = await fetch(url, { headers });
      const b = Buffer.from(await r.arrayBuffer());
      return r.status >= 400 ? 'refused' : b;
    } catch {
      return 'cut off';
    }
  };
  const whole = await outcome({});
  assert.ok(typeof whole === 'string', `the whole blob is not served (its digest does not match): got ${whole.length} bytes`);
  // a range that starts in the first block and ends past busybox (read whole, its CRC-64 checked)
  const range = await outcome({ Range: `bytes=0-${original.length >> 1}` });
  assert.ok(typeof range === 'string', `a range from the first block past the changed file is not served (busybox does not match its tar-split CRC-64): got ${range.length} bytes`);
  // a detection now fails instead of recording the layer as "not reproducible"
  const fresh = new Recipes(join(work, 'state-tampered-fresh'), store);
  await assert.rejects(fresh.ensure([layers[0].digest], snap), /does not match|digest/);
  assert.equal(fresh.verdict(layers[0].digest), undefined, 'no verdict for a layer whose files changed');
});

test('--scan-recipes finds recipes in the background and keeps the blobs it reproduced; the served-blob cache serves pulls, and a tampered copy is never served', { skip: roomToKeep(work) }, async () => {
  const f = fx.recipes.find((r) => r.variant === 'go6')!;
  const state = join(work, 'state-cached');
  const reg = await startRegistry({ store: Store.open(f.store), log: createLogger({ out: new Writable({ write(_c, _e, cb) { cb(); } }) }), addr: '127.0.0.1:0', stateDir: state, servedCacheMaxBytes: 1 << 30, scanRecipes: true });
  servers.push(reg);
  const layers = (await Store.open(f.store).snapshot()).layers.filter((l) => l.compressedDigest && l.compressedDigest !== l.diffDigest);
  const scanned = () => { try { return layers.every((l) => verdicts(state)[l.compressedDigest!]?.profile); } catch { return false; } };
  for (let i = 0; i < 600 && !scanned(); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(scanned(), 'every layer has a recipe without any request');
  const repo = repoOf(f.ref);
  const m = JSON.parse((await bytes(`${reg.url}/v2/${repo}/manifests/${f.manifestDigest}`)).body.toString()) as { layers: { digest: string }[] };
  const big = m.layers[0].digest;
  const url = `${reg.url}/v2/${repo}/blobs/${big}`;
  const cached = join(state, 'served', 'blobs', 'sha256', big.slice(7));
  // the blobs the scan reproduced were kept as it found their recipes: no blob request made them
  for (const l of m.layers) assert.equal(sha(readFileSync(join(state, 'served', 'blobs', 'sha256', l.digest.slice(7)))), l.digest, 'kept by the scan');
  assert.equal(sha((await bytes(url)).body), big);
  assert.equal(sha((await bytes(url)).body), big, 'the repeat pull from the cache');
  // a cached copy that no longer matches is not passed off as the blob: the transfer breaks
  const fd = openSync(cached, 'r+');
  writeSync(fd, Buffer.from('tampered'), 0, 8, 1000);
  closeSync(fd);
  await assert.rejects(bytes(url), 'the client sees a broken transfer, not wrong bytes');
});

test('layers whose blobs csreg holds (pushed) do not wait for their recipes: those are found in the background', async () => {
  const store = Store.open(fx.stores.pulled);
  const snap = await store.snapshot();
  const p = fx.pushed.find((x) => x.format === 'oci' && x.compression === 'gzip')!;
  const image = snap.imagesWithDigest(p.manifestDigest)[0];
  const digests = snap.layerChain(image.topLayer).layers.map((l) => l.compressedDigest!);
  const found = (state: string) => (existsSync(join(state, 'recipes.json')) ? digests.filter((d) => verdicts(state)[d]?.profile) : []);
  // held (as the blob cache holds pushed blobs): answered before any detection is done
  const held = join(work, 'state-held');
  await new Recipes(held, store).ensureImages([image], snap, () => true);
  assert.ok(found(held).length < digests.length, 'the held layers were not awaited');
  for (let i = 0; i < 600 && found(held).length < digests.length; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(found(held).length, digests.length, 'their recipes were found in the background');
  // not held: awaited
  const awaited = join(work, 'state-awaited');
  await new Recipes(awaited, store).ensureImages([image], snap);
  assert.equal(found(awaited).length, digests.length);
});

test('recipes of layers deleted meanwhile (an image deleted just after its push or pull, or during a scan) are no failure: nothing to find, nothing logged', async (t) => {
  const f = fx.recipes.find((r) => r.variant === 'py9')!;
  const copy = join(work, 'store-deleted');
  execFileSync('cp', ['-a', join(f.store.root, '..'), copy]);
  rmSync(join(copy, 'root', 'libpod'), { recursive: true, force: true }); // (podman's database names the original's paths)
  const s: FixtureStore = { root: join(copy, 'root'), runroot: join(copy, 'run'), driver: f.store.driver };
  t.after(() => rmSync(copy, { recursive: true, force: true }));
  const store = Store.open(s);
  const snap = await store.snapshot();
  const image = snap.imagesWithDigest(f.manifestDigest)[0];
  assert.ok(snap.layerChain(image.topLayer).layers.some((l) => l.compressedDigest && l.compressedDigest !== l.diffDigest), 'a recompressible layer');
  execFileSync('podman', [...storeArgs(s), 'rmi', '-f', image.id]);
  assert.equal((await store.snapshot()).layer(image.topLayer!), undefined, 'its layers are gone');
  const r = new Recipes(join(work, 'state-deleted'), store);
  const errors: Error[] = [];
  // held blobs: detection in the background; not held: awaited (the same detection)
  await r.ensureImages([image], snap, () => true, (e) => errors.push(e));
  await r.ensureImages([image], snap);
  await new Promise((res) => setTimeout(res, 300));
  assert.deepEqual(errors.map((e) => e.message), [], 'the background detection reported nothing');
  // a scan (--scan-recipes) over a snapshot from before the deletion goes on past those layers;
  // with --synthesize gzip, so does compressing them for synthesized manifests
  await new Recipes(join(work, 'state-deleted-scan'), store).scan(snap);
  await new Recipes(join(work, 'state-deleted-gzip'), store, 'gzip').ensureImages([image], snap);
  await new Recipes(join(work, 'state-deleted-gzip-scan'), store, 'gzip').scan(snap);
});

test('a "not reproducible" verdict from before a profile existed is tried again with the new profiles only', async () => {
  const f = fx.recipes.find((r) => r.variant === 'gnu6')!;
  const state = join(work, 'state-stale');
  const layers = (await Store.open(f.store).snapshot()).layers.filter((l) => l.compressedDigest && l.compressedDigest !== l.diffDigest);
  // what an older csreg without GNU gzip profiles would have recorded
  const old = Object.fromEntries(layers.map((l) => [l.compressedDigest!, { profile: null, diffDigest: l.diffDigest, size: l.compressedSize, tried: ['pgzip-1.2.5/flate-1.15.12/default', 'go1.19-gzip/6'], at: '2026-01-01T00:00:00Z' }]));
  mkdirSync(state, { recursive: true });
  writeFileSync(join(state, 'recipes.json'), JSON.stringify(old));
  const scan = JSON.parse(await run(process.execPath, [main, ...storeArgs(f.store), 'recipes', 'scan', '--state-dir', state, '--json'])) as { summary: { layers: number; reproduced: number } };
  assert.equal(scan.summary.reproduced, scan.summary.layers);
  for (const v of Object.values(verdicts(state)) as unknown as { profile: string; tried: string[] }[]) {
    assert.equal(v.profile, 'gnu-gzip-1.12/6');
    assert.ok(!v.tried.slice(2).includes('go1.19-gzip/6'), 'profiles tried before are not tried again');
  }
});

test('--synthesize gzip: a buildah image is served with the layer digests a push by skopeo gives, and podman pulls it', async (t) => {
  const s = fx.stores.overlay;
  const ref = 'localhost/csreg/base:1';
  const state = join(work, 'state-synth');
  const reg = await startRegistry({ store: Store.open(s), log: createLogger({ out: new Writable({ write(_c, _e, cb) { cb(); } }) }), addr: '127.0.0.1:0', stateDir: state, synthesize: 'gzip', servedCacheMaxBytes: 1 << 30 });
  servers.push(reg);
  const host = reg.url.slice('http://'.length);
  // what a push compresses: skopeo writes an OCI layout with the layers compressed as it pushes them
  const pushed = join(work, 'synth-pushed');
  await run('skopeo', ['copy', '-q', `containers-storage:[${s.driver}@${s.root}+${s.runroot}]${ref}`, `oci:${pushed}:x`]);
  const index = JSON.parse(readFileSync(join(pushed, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const want = JSON.parse(readFileSync(join(pushed, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8')) as { layers: { digest: string; size: number; mediaType: string }[] };
  assert.ok(want.layers.every((l) => l.mediaType.endsWith('+gzip')), 'skopeo compressed the layers');
  // the manifest's first request compresses each layer once to learn its digest, and keeps what
  // it wrote: the first pull reads those files instead of compressing again
  assert.equal((await bytes(`${reg.url}/v2/localhost/csreg/base/manifests/1`, { Accept: 'application/vnd.oci.image.manifest.v1+json' })).status, 200);
  const noRoom = roomToKeep(work);
  if (noRoom) t.diagnostic(`kept files not checked: ${noRoom}`);
  else for (const l of want.layers) assert.equal(sha(readFileSync(join(state, 'served', 'blobs', 'sha256', l.digest.slice(7)))), l.digest, 'kept, before any blob request');
  const dir = join(work, 'synth-pulled');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${host}/localhost/csreg/base:1`, `dir:${dir}`]);
  const got = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { layers: { digest: string; size: number; mediaType: string }[] };
  assert.deepEqual(got.layers.map((l) => [l.digest, l.size]), want.layers.map((l) => [l.digest, l.size]), 'the digests and sizes of a push');
  assert.ok(got.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+gzip'));
  for (const l of got.layers) assert.equal(sha(readFileSync(join(dir, l.digest.slice(7)))), l.digest, 'skopeo verified and kept the blob');
  const byDigest = join(work, 'synth-by-digest');
  const digest = sha(readFileSync(join(dir, 'manifest.json')));
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${host}/localhost/csreg/base@${digest}`, `dir:${byDigest}`]);
  assert.equal(sha(readFileSync(join(byDigest, 'manifest.json'))), digest, 'the compressed form is served by its digest too');
  const verdict = verdicts(state) as Record<string, { made?: boolean }>;
  assert.ok(got.layers.every((l) => verdict[l.digest]?.made), 'recorded as forms csreg made');
  const into = freshStore('overlay');
  try {
    await run('podman', [...storeArgs(into), 'pull', '-q', '--tls-verify=false', `${host}/localhost/csreg/base:1`]);
    const images = await run('podman', [...storeArgs(into), 'images', '--format', '{{.ID}}', '--no-trunc']);
    const id = (await Store.open(s).snapshot()).image(ref)!.id;
    assert.equal(images.replace(/^sha256:/, ''), id, 'podman has the same image (same config)');
  } finally {
    removeStore(into);
  }
});

test('--scan-recipes with --synthesize gzip makes every layer\'s compressed form at start: the first pull starts no compression and gets those forms', { skip: roomToKeep(work) }, async () => {
  const s = fx.stores.overlay;
  const state = join(work, 'state-synth-scan');
  // the scan's log: it goes on to the store's other images after this one's layers, and its
  // last "compressed form made" (layer n/n) says it is done
  let log = '';
  const scanDone = () => log.split('\n').some((l) => /compressed form made".*"layer":"(\d+)\/\1"/.test(l));
  const reg = await startRegistry({ store: Store.open(s), log: createLogger({ out: new Writable({ write(c, _e, cb) { log += String(c); cb(); } }) }), addr: '127.0.0.1:0', stateDir: state, synthesize: 'gzip', servedCacheMaxBytes: 1 << 30, scanRecipes: true });
  servers.push(reg);
  const snap = await Store.open(s).snapshot();
  const image = snap.image('localhost/csreg/derived:1')!;
  const diffs = snap.layerChain(image.topLayer).layers.map((l) => l.diffDigest!);
  const made = () => {
    try {
      const v = verdicts(state) as Record<string, { made?: boolean; diffDigest?: string }>;
      return new Map(Object.entries(v).filter(([, x]) => x.made).map(([d, x]) => [x.diffDigest!, d]));
    } catch {
      return new Map<string, string>();
    }
  };
  for (let i = 0; i < 600 && !diffs.every((d) => made().has(d)); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(diffs.every((d) => made().has(d)), 'every layer of the image made without any request');
  for (let i = 0; i < 600 && !scanDone(); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(scanDone(), 'the scan ended');
  const before = recompressionThreads();
  const dir = join(work, 'synth-scan-pulled');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${reg.url.slice('http://'.length)}/localhost/csreg/derived:1`, `dir:${dir}`]);
  const after = recompressionThreads();
  assert.equal(after.started + after.reused, before.started + before.reused, 'no compression job for the pull');
  const got = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { layers: { digest: string; mediaType: string }[] };
  assert.deepEqual(got.layers.map((l) => l.digest), diffs.map((d) => made().get(d)), 'the forms the scan made');
  assert.ok(got.layers.every((l) => l.mediaType.endsWith('+gzip')));
  for (const l of got.layers) assert.equal(sha(readFileSync(join(dir, l.digest.slice(7)))), l.digest);
});

test('a csreg serve stopped mid-scan ends at once: no recipe job goes on after SIGTERM, nothing half-made is left', async () => {
  const f = fx.recipes.find((r) => r.variant === 'go6')!;
  const state = join(work, 'state-stopped');
  const layers = (await Store.open(f.store).snapshot()).layers.filter((l) => l.compressedDigest && l.compressedDigest !== l.diffDigest);
  const p = spawn(process.execPath, [main, 'serve', ...storeArgs(f.store), '--addr', '127.0.0.1:0', '--state-dir', state, '--scan-recipes', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  // SIGTERM the moment "listening on" arrives (as a supervisor might): the scan's first job (a
  // Go level-6 layer) has just started, and the handlers must already be in place
  p.stdout.on('data', (c: Buffer) => {
    out += c;
    if (out.includes('listening on') && !p.killed) p.kill('SIGTERM'); // (once: a second would meet Node's default)
  });
  p.stderr.on('data', (c: Buffer) => (err += c));
  const exited = new Promise<number | string | null>((r) => p.on('exit', (code, signal) => r(code ?? signal))); // (a signal's name: ended by it, unhandled)
  for (let i = 0; i < 300 && !out.includes('listening on'); i++) await new Promise((r) => setTimeout(r, 20));
  assert.match(out, /listening on/, err);
  assert.equal(await exited, 0, err);
  const lines = err.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string });
  const stop = lines.findIndex((l) => l.msg.startsWith('shutting down'));
  assert.ok(stop >= 0, err);
  assert.ok(lines.slice(0, stop).filter((l) => l.msg === 'recipe scan').length < layers.length, 'the scan was still running when stopped');
  assert.deepEqual(lines.slice(stop + 1).filter((l) => l.msg.startsWith('recipe')), [], 'no recipe work after the signal');
  assert.deepEqual(existsSync(join(state, 'served', 'tmp')) ? readdirSync(join(state, 'served', 'tmp')) : [], [], 'no half-made blob left');
  if (existsSync(join(state, 'recipes.json'))) verdicts(state); // whole JSON
});
