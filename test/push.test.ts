// Pushes into csreg land in the store podman uses: skopeo copies from a real docker-registry
// into csreg, then podman, buildah and skopeo use the images, and pulls by the pushed digests work.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, openSync, rmSync, readFileSync, readdirSync, existsSync, writeFileSync, utimesSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { Store } from '../src/storage/store.js';
import { startRegistry, type RunningRegistry } from '../src/registry/server.js';
import { createLogger } from '../src/log.js';
import { buildahRun, checkedDirLayers, exportImage, loadFixtures, openDescriptors, storeArgs, csRef, run, sha, tarEntry, startFixtureRegistries, repoOf, repoRoot, type FixtureStore } from './fixtures.js';
import { BlobCache, KeptFile, referencedBlobs } from '../src/oci/blob-cache.js';
import { fileChunks } from '../src/storage/file-chunks.js';
import { BLOB_READ_CHUNK } from '../src/storage/writer.js';

const fx = loadFixtures();
const work = mkdtempSync(join(tmpdir(), 'csreg-push-'));
const s: FixtureStore = { root: join(work, 'root'), runroot: join(work, 'run'), driver: 'overlay' };
const stateDir = join(work, 'state');
let reg: RunningRegistry;
let host: string;
const registries: ChildProcess[] = [];
const logs: string[] = [];
/** every registry's log lines (the extra ones of a few tests too) go to `logs` */
const log = createLogger({ out: new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } }) });

before(async () => {
  registries.push(...(await startFixtureRegistries()));
  await run('mkdir', ['-p', s.root]);
  reg = await startRegistry({ store: Store.open(s), log, addr: '127.0.0.1:0', stateDir, push: true });
  host = reg.url.slice('http://'.length);
});

after(async () => {
  await reg?.close(100);
  for (const r of registries) r.kill();
  try {
    await run('umount', ['-l', join(s.root, 'overlay')]);
  } catch { /* not mounted */ }
  rmSync(work, { recursive: true, force: true });
});

/** what skopeo actually pushed to csreg, per source ref (it may rewrite a manifest while copying) */
const pushedDigests = new Map<string, string>();
const podmanId = (name: string) => run('podman', [...storeArgs(s), 'image', 'inspect', '--format', '{{.Id}}', name]);

test('skopeo pushes v2s2, OCI, zstd and a multi-arch list; podman, buildah and skopeo use them', async () => {
  const pushes = fx.pushed.map((p) => ({ ...p, dest: p.ref.replace(/^127\.0\.0\.1:\d+\//, '') }));
  for (const p of pushes) {
    const digestFile = join(work, 'digest');
    await run('skopeo', ['copy', '-q', ...(p.format === 'list' ? ['--all'] : []), '--src-tls-verify=false', '--dest-tls-verify=false', '--digestfile', digestFile, `docker://${p.ref}`, `docker://${host}/${p.dest}`]);
    pushedDigests.set(p.ref, readFileSync(digestFile, 'utf8').trim());
  }
  const images = JSON.parse(await run('podman', [...storeArgs(s), 'images', '--format', 'json'])) as { Id: string; Names?: string[] }[];
  const names = images.flatMap((i) => i.Names ?? []);
  for (const p of pushes) assert.ok(names.includes(`localhost/${p.dest}`), `podman lists localhost/${p.dest}`);
  // same image IDs as the source (config digests), whatever the layer compression was
  const baseId = (await Store.open(fx.stores.pulled).snapshot()).image(fx.pushed[0].ref)!.id;
  assert.equal(await podmanId('localhost/csreg/base:zstd'), baseId);
  assert.equal(await podmanId('localhost/csreg/base:v2s2'), baseId);
  // buildah runs a command in a pushed image; skopeo reads it back with the config's diff IDs
  const ctr = await run('buildah', [...storeArgs(s), 'from', '-q', 'localhost/csreg/derived:zstd']);
  assert.equal(await buildahRun(s, ctr, ['cat', '/etc/derived']), 'derived');
  await run('buildah', [...storeArgs(s), 'rm', ctr]);
  const out = join(work, 'oci-out');
  await run('skopeo', ['copy', '-q', `containers-storage:[overlay@${s.root}+${s.runroot}]localhost/csreg/derived:oci`, `oci:${out}`]);
  const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8'));
  const m = JSON.parse(readFileSync(join(out, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
  const config = JSON.parse(readFileSync(join(out, 'blobs', 'sha256', m.config.digest.slice(7)), 'utf8'));
  assert.equal(config.rootfs.diff_ids.length, m.layers.length);
});

test('a pull right after a push returns the exact pushed manifest digest and every blob by its pushed digest', async () => {
  for (const p of fx.pushed.filter((x) => x.format !== 'list')) {
    const repo = p.ref.replace(/^127\.0\.0\.1:\d+\//, '').replace(/:[^:/]+$/, '');
    const tag = p.ref.slice(p.ref.lastIndexOf(':') + 1);
    const r = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`);
    assert.equal(r.status, 200);
    const body = Buffer.from(await r.arrayBuffer());
    assert.equal(sha(body), pushedDigests.get(p.ref), `${p.ref}: the pushed manifest comes back`);
    const m = JSON.parse(body.toString()) as { config: { digest: string }; layers: { digest: string }[] };
    for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
      const b = Buffer.from(await (await fetch(`${reg.url}/v2/${repo}/blobs/${d}`)).arrayBuffer());
      assert.equal(sha(b), d, `${p.ref}: blob ${d}`);
    }
    const dir = join(work, `pull-${tag}`);
    await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${host}/${repo}@${pushedDigests.get(p.ref)}`, `dir:${dir}`]);
  }
  const list = fx.pushed.find((p) => p.format === 'list')!;
  const r = await fetch(`${reg.url}/v2/csreg/multi/manifests/1`);
  assert.equal(sha(Buffer.from(await r.arrayBuffer())), pushedDigests.get(list.ref), 'the pushed list comes back by tag');
});

test('uploads: chunked with Content-Range, status, cancel, mount, and refusals that leave nothing', async () => {
  const data = Buffer.from('chunked upload '.repeat(1000));
  const digest = sha(data);
  const start = await fetch(`${reg.url}/v2/csreg/chunks/blobs/uploads/`, { method: 'POST' });
  assert.equal(start.status, 202);
  const loc = start.headers.get('location')!;
  const p1 = await fetch(reg.url + loc, { method: 'PATCH', body: data.subarray(0, 5000), headers: { 'Content-Range': '0-4999' } });
  assert.equal(p1.status, 202);
  assert.equal(p1.headers.get('range'), '0-4999');
  const bad = await fetch(reg.url + loc, { method: 'PATCH', body: data.subarray(6000), headers: { 'Content-Range': '6000-14999' } });
  assert.equal(bad.status, 416, 'a chunk out of order is refused');
  const status = await fetch(reg.url + loc);
  assert.equal(status.status, 204);
  assert.equal(status.headers.get('range'), '0-4999');
  const wrong = await fetch(`${reg.url}${loc}?digest=sha256:${'1'.repeat(64)}`, { method: 'PUT', body: data.subarray(5000), headers: { 'Content-Range': '5000-14999' } });
  assert.equal(wrong.status, 400);
  assert.equal(((await wrong.json()) as { errors: { code: string }[] }).errors[0].code, 'DIGEST_INVALID');
  assert.equal((await fetch(`${reg.url}/v2/csreg/chunks/blobs/sha256:${'1'.repeat(64)}`, { method: 'HEAD' })).status, 404);
  // a fresh session, done right after a chunk cut off halfway (the session keeps its last good
  // size, and the digest it computes as chunks arrive forgets the cut chunk's bytes too)
  const again = await fetch(`${reg.url}/v2/csreg/chunks/blobs/uploads/`, { method: 'POST' });
  const loc2 = again.headers.get('location')!;
  await fetch(reg.url + loc2, { method: 'PATCH', body: data.subarray(0, 5000), headers: { 'Content-Range': '0-4999' } });
  const cut = request(reg.url + loc2, { method: 'PATCH', headers: { 'Content-Range': '5000-14999', 'Content-Length': '10000' } });
  cut.on('error', () => undefined);
  cut.write(Buffer.alloc(3000, 9));
  const tmp = join(stateDir, 'blobs', 'tmp');
  const stagedSize = () => Math.max(0, ...readdirSync(tmp).map((f) => statSync(join(tmp, f)).size));
  const waitFor = async (ok: () => boolean, what: string) => {
    for (let i = 0; i < 250 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(ok(), what);
  };
  await waitFor(() => stagedSize() > 5000, 'part of the cut chunk was staged');
  cut.destroy();
  await waitFor(() => stagedSize() === 5000, 'the staging file went back to its last good size');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await fetch(reg.url + loc2)).headers.get('range'), '0-4999', 'the cut chunk left nothing');
  const done = await fetch(`${reg.url}${loc2}?digest=${digest}`, { method: 'PUT', body: data.subarray(5000), headers: { 'Content-Range': '5000-14999' } });
  assert.equal(done.status, 201);
  assert.equal(done.headers.get('docker-content-digest'), digest);
  const head = await fetch(`${reg.url}/v2/csreg/chunks/blobs/${digest}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(data.length));
  const mount = await fetch(`${reg.url}/v2/other/repo/blobs/uploads/?mount=${digest}&from=csreg/chunks`, { method: 'POST' });
  assert.equal(mount.status, 201);
  const cancel = await fetch(`${reg.url}/v2/csreg/chunks/blobs/uploads/`, { method: 'POST' });
  const loc3 = cancel.headers.get('location')!;
  assert.equal((await fetch(reg.url + loc3, { method: 'DELETE' })).status, 204);
  assert.equal((await fetch(reg.url + loc3)).status, 404);
  // a manifest naming a blob that was never pushed
  const man = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'2'.repeat(64)}`, size: 2 }, layers: [] });
  const put = await fetch(`${reg.url}/v2/csreg/chunks/manifests/x`, { method: 'PUT', body: man, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(put.status, 404);
  assert.equal(((await put.json()) as { errors: { code: string }[] }).errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
  assert.equal(readdirSync(join(stateDir, 'blobs', 'tmp')).length, 0, 'no staging file left behind');
  assert.ok(!existsSync(join(stateDir, 'blobs', 'sha256', '1'.repeat(64))));
});

test('DELETE by tag removes the name; by digest takes the image out of the repository, and deletes it once nothing else names it', async () => {
  const before = JSON.parse(await run('podman', [...storeArgs(s), 'images', '--format', 'json'])) as { Id: string; Names?: string[] }[];
  assert.ok(before.some((i) => i.Names?.includes('localhost/csreg/base:oci')));
  // the same tag in a repository whose path ends the same way is another repository's
  await run('podman', [...storeArgs(s), 'tag', 'localhost/csreg/base:oci', 'localhost/mirror/csreg/base:oci']);
  assert.equal((await fetch(`${reg.url}/v2/csreg/base/manifests/oci`, { method: 'DELETE' })).status, 202);
  const afterTag = JSON.parse(await run('podman', [...storeArgs(s), 'images', '--format', 'json'])) as { Names?: string[] }[];
  assert.ok(!afterTag.some((i) => i.Names?.includes('localhost/csreg/base:oci')));
  assert.ok(afterTag.some((i) => i.Names?.includes('localhost/csreg/base:v2s2')), 'other tags stay');
  assert.ok(afterTag.some((i) => i.Names?.includes('localhost/mirror/csreg/base:oci')), "another repository's tag stays");
  const d = fx.pushed.find((p) => p.ref.endsWith('derived:v2s2'))!.manifestDigest;
  const id = await podmanId('localhost/csreg/derived:v2s2');
  // a podman user's own tag of it, in another repository: a registry's repositories are
  // independent, so a DELETE in csreg/derived must leave the image to that name
  await run('podman', [...storeArgs(s), 'tag', id, 'localhost/elsewhere/kept:1']);
  const manifest = (repo: string) => fetch(`${reg.url}/v2/${repo}/manifests/${d}`, { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
  assert.equal((await manifest('elsewhere/kept')).status, 200);
  assert.equal((await fetch(`${reg.url}/v2/csreg/derived/manifests/${d}`, { method: 'DELETE' })).status, 202);
  assert.equal(await podmanId(id), id, 'the image another repository names stays');
  const names = JSON.parse(await run('podman', [...storeArgs(s), 'image', 'inspect', '--format', 'json', id])) as { RepoTags: string[] }[];
  assert.deepEqual(names[0].RepoTags, ['localhost/elsewhere/kept:1'], 'its names in csreg/derived are gone, the other stays');
  assert.equal((await manifest('csreg/derived')).status, 404, 'the manifest left csreg/derived');
  const kept = await manifest('elsewhere/kept');
  assert.equal(kept.status, 200, 'and is still served in the other repository');
  assert.equal(sha(Buffer.from(await kept.arrayBuffer())), d);
  assert.equal((await fetch(`${reg.url}/v2/elsewhere/kept/manifests/${d}`, { method: 'DELETE' })).status, 202);
  await assert.rejects(podmanId(id), 'the image is gone from the store once no name is left');
  assert.ok(logs.some((l) => l.includes('manifest deleted')), 'deletes are logged');
});

/** A monolithic blob upload (POST with ?digest=). */
const rawPushBlob = (repo: string, b: Buffer) =>
  fetch(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${sha(b)}`, { method: 'POST', body: new Uint8Array(b), headers: { 'Content-Type': 'application/octet-stream' } });

/** A plain OCI client's push (as crane or oras do it): monolithic blob uploads, then the manifest. */
async function rawPush(repo: string, tag: string, blobs: Buffer[], manifest: Buffer, mediaType: string): Promise<Response> {
  for (const b of blobs) assert.equal((await rawPushBlob(repo, b)).status, 201, `blob ${sha(b)} accepted`);
  // (a commit that hangs fails the test rather than stalling the run)
  return fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: new Uint8Array(manifest), headers: { 'Content-Type': mediaType }, signal: AbortSignal.timeout(120_000) });
}

test('an image with uncompressed layers (an OCI layout skopeo wrote) is pushed, used by buildah, and rebuilt from the store', async () => {
  const layout = join(work, 'layout');
  await run('skopeo', ['copy', '-q', '--dest-oci-accept-uncompressed-layers', csRef(fx.stores.overlay, 'localhost/csreg/derived:1'), `oci:${layout}:x`]);
  const blob = (d: string) => readFileSync(join(layout, 'blobs', 'sha256', d.slice(7)));
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = blob(index.manifests[0].digest);
  const m = JSON.parse(manifest.toString()) as { mediaType: string; config: { digest: string }; layers: { digest: string; mediaType: string }[] };
  assert.ok(m.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar'), 'the layers are uncompressed');
  const put = await rawPush('plain/derived', 'u1', [blob(m.config.digest), ...m.layers.map((l) => blob(l.digest))], manifest, m.mediaType);
  assert.equal(put.status, 201);
  assert.equal(put.headers.get('docker-content-digest'), sha(manifest));
  const ctr = await run('buildah', [...storeArgs(s), 'from', '-q', 'localhost/plain/derived:u1']);
  assert.equal(await buildahRun(s, ctr, ['cat', '/etc/derived']), 'derived');
  await run('buildah', [...storeArgs(s), 'rm', ctr]);
  // the layers now come from the store's tar-split, not from a second copy in the blob cache
  for (const l of m.layers) {
    assert.ok(!existsSync(join(stateDir, 'blobs', 'sha256', l.digest.slice(7))), 'no cached copy of an uncompressed layer');
    const got = Buffer.from(await (await fetch(`${reg.url}/v2/plain/derived/blobs/${l.digest}`)).arrayBuffer());
    assert.equal(sha(got), l.digest);
  }
  const again = Buffer.from(await (await fetch(`${reg.url}/v2/plain/derived/manifests/u1`)).arrayBuffer());
  assert.equal(sha(again), sha(manifest), 'the pushed manifest comes back');
});

test('a hostile or mismatched layer pushed through the API is refused and leaves nothing in the store', async () => {
  const end = Buffer.alloc(1024);
  const cases: [string, Buffer][] = [
    ['dot-dot', Buffer.concat([tarEntry('../evil', '0', Buffer.from('x')), end])],
    ['absolute', Buffer.concat([tarEntry('/etc/evil', '0', Buffer.from('x')), end])],
    ['symlink then write through it', Buffer.concat([tarEntry('lnk', '2', Buffer.alloc(0), '/tmp'), tarEntry('lnk/evil', '0', Buffer.from('x')), end])],
    ['wrong diff_id', Buffer.concat([tarEntry('ok', '0', Buffer.from('x')), end])],
    // (more than the pipes between the blob and the tar parser hold: the reading must stop)
    ['a corrupt header after a file, then 4 MiB more', Buffer.concat([tarEntry('ok', '0', Buffer.from('x')), Buffer.alloc(512, 'A'), randomBytes(4 << 20)])],
  ];
  const layersBefore = readFileSync(join(s.root, 'overlay-layers', 'layers.json'), 'utf8');
  const imagesBefore = readFileSync(join(s.root, 'overlay-images', 'images.json'), 'utf8');
  const dirsBefore = readdirSync(join(s.root, 'overlay')).sort();
  for (const [what, tar] of cases) {
    const diffId = what === 'wrong diff_id' ? `sha256:${'3'.repeat(64)}` : sha(tar);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] }, config: {} }));
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(tar), size: tar.length }],
    }));
    const put = await rawPush('hostile/img', 'x', [config, tar], manifest, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(put.status, 400, what);
    assert.equal(((await put.json()) as { errors: { code: string }[] }).errors[0].code, 'MANIFEST_INVALID', what);
  }
  assert.ok(!existsSync('/tmp/evil') && !existsSync(join(s.root, 'evil')), 'nothing was written outside a layer');
  assert.equal(readFileSync(join(s.root, 'overlay-layers', 'layers.json'), 'utf8'), layersBefore, 'no layer record changed');
  assert.equal(readFileSync(join(s.root, 'overlay-images', 'images.json'), 'utf8'), imagesBefore, 'no image record changed');
  assert.deepEqual(readdirSync(join(s.root, 'overlay')).sort(), dirsBefore, 'no layer directory left');
  await run('podman', [...storeArgs(s), 'images']);
});

test('blob cache: accounting, least-recently-used eviction beyond the limit, pruning of unreferenced blobs', async () => {
  const store = Store.open(s);
  const inUse = await referencedBlobs(store, await store.snapshot());
  const zm = JSON.parse(Buffer.from(await (await fetch(`${reg.url}/v2/csreg/base/manifests/zstd`)).arrayBuffer()).toString()) as { layers: { digest: string }[] };
  assert.ok(zm.layers.length && zm.layers.every((l) => inUse.has(l.digest)), 'pushed compressed layers are referenced by a stored manifest');
  const dir = join(work, 'cache-test');
  const cache = new BlobCache(dir, { maxBytes: 2500, graceMs: 1000 });
  const blobs = [Buffer.alloc(1000, 1), Buffer.alloc(1000, 2), Buffer.alloc(1000, 3)];
  for (const [i, b] of blobs.entries()) {
    const f = await cache.scratch();
    writeFileSync(f, b);
    assert.ok(await cache.adopt(f, sha(b)));
    const t = new Date(Date.now() - (10 - i) * 60_000); // oldest first
    utimesSync(cache.file(sha(b))!, t, t);
  }
  assert.deepEqual(await cache.usage(), { blobs: 3, bytes: 3000, maxBytes: 2500 });
  const read = cache.open(sha(blobs[0])); // a read makes the oldest the most recently used
  if (read && !(read instanceof KeptFile)) read.destroy();
  await new Promise((r) => setTimeout(r, 50));
  const evicted = await cache.enforceLimit(Date.now() + 5000);
  assert.deepEqual(evicted.map((b) => b.digest), [sha(blobs[1])], 'the least recently used goes');
  assert.equal((await cache.usage()).bytes, 2000);
  const pruned = await cache.prune(new Set([sha(blobs[2])]), Date.now() + 5000);
  assert.deepEqual(pruned.map((b) => b.digest), [sha(blobs[0])], 'unreferenced blobs go once past the grace period');
  const fresh = Buffer.alloc(10, 4);
  const f = await cache.scratch();
  writeFileSync(f, fresh);
  assert.ok(await cache.adopt(f, sha(fresh)));
  assert.deepEqual((await cache.prune(new Set())).map((b) => b.digest), [sha(blobs[2])], 'a blob within its grace period (a push in flight) stays');
  assert.ok(cache.file(sha(fresh)));
});

test('blob cache: a blob read and verified as it goes (not yet trusted here), stopped early, leaves no descriptor open', async () => {
  const dir = join(work, 'cache-stop-test');
  const blob = Buffer.alloc(4 << 20, 7);
  const f = await new BlobCache(dir).scratch();
  writeFileSync(f, blob);
  assert.ok(await new BlobCache(dir).adopt(f, sha(blob)));
  const fds = openDescriptors;
  const before = fds();
  for (let i = 0; i < 30; i++) {
    const r = new BlobCache(dir).open(sha(blob)); // (a new instance, as after a restart: it verifies)
    assert.ok(r && !(r instanceof KeptFile), 'a verifying stream');
    for await (const c of r) if ((c as Buffer).length) break; // (the for-await's break destroys it)
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(fds() - before < 5, `descriptors open before ${before}, after 30 reads stopped early ${fds()}`);
});

test('a pushed blob is read for extraction whole, in memory at 64-byte boundaries, and its descriptor closes at the end, unread, or mid-read', async () => {
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const f = join(work, 'file-chunks');
  const data = randomBytes((3 << 20) + 17);
  writeFileSync(f, data);
  const fds = openDescriptors;
  const before = fds();
  const got: Buffer[] = [];
  const misplaced: number[] = [];
  for await (const c of fileChunks(openSync(f, 'r'), BLOB_READ_CHUNK)) {
    if (koffi.address(c) % 64n) misplaced.push(got.length);
    got.push(Buffer.from(c as Buffer));
  }
  assert.ok(Buffer.concat(got).equals(data), 'the file\'s bytes');
  assert.deepEqual(misplaced, [], 'chunks not at a 64-byte boundary');
  for (let i = 0; i < 20; i++) {
    const s = fileChunks(openSync(f, 'r'), BLOB_READ_CHUNK);
    if (i % 2) s.destroy(); // (never read: a layer the store already had)
    else for await (const c of s) if ((c as Buffer).length) break; // (destroyed with its next read in flight)
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(fds() - before < 3, `descriptors open before ${before}, after 21 readers ${fds()}`);
});

test('an artifact pushed by digest with a subject is listed by the referrers API and answered with OCI-Subject', async () => {
  const subjectRef = fx.pushed.find((p) => p.ref.endsWith('/csreg/base:v2s2'))!.ref;
  const subject = Buffer.from(await (await fetch(`${reg.url}/v2/csreg/base/manifests/${pushedDigests.get(subjectRef)}`)).arrayBuffer());
  assert.equal(sha(subject), pushedDigests.get(subjectRef));
  const config = Buffer.from('{}');
  const sig = Buffer.from('a signature, say');
  const artifact = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/vnd.example.sig',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/octet-stream', digest: sha(sig), size: sig.length }],
    subject: { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: sha(subject), size: subject.length },
  }));
  const put = await rawPush('csreg/base', sha(artifact), [config, sig], artifact, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(put.status, 201);
  assert.equal(put.headers.get('oci-subject'), sha(subject));
  const list = (await (await fetch(`${reg.url}/v2/csreg/base/referrers/${sha(subject)}`)).json()) as { manifests: { digest: string; artifactType?: string }[] };
  assert.deepEqual(list.manifests.map((d) => [d.digest, d.artifactType]), [[sha(artifact), 'application/vnd.example.sig']]);
  const back = Buffer.from(await (await fetch(`${reg.url}/v2/csreg/base/manifests/${sha(artifact)}`)).arrayBuffer());
  assert.equal(sha(back), sha(artifact));
  assert.equal(sha(Buffer.from(await (await fetch(`${reg.url}/v2/csreg/base/blobs/${sha(sig)}`)).arrayBuffer())), sha(sig));
  await run('podman', [...storeArgs(s), 'images']);
  const tags = (await (await fetch(`${reg.url}/v2/csreg/base/tags/list`)).json()) as { tags: string[] };
  assert.ok(!tags.tags.some((t) => t.startsWith('sha256')), 'a push by digest adds no tag');
  // by tag, in a repository of its own: listed, served, and deleted
  assert.equal((await rawPush('csreg/sigs', 'sig-1', [config, sig], artifact, 'application/vnd.oci.image.manifest.v1+json')).status, 201);
  assert.deepEqual(((await (await fetch(`${reg.url}/v2/csreg/sigs/tags/list`)).json()) as { tags: string[] }).tags, ['sig-1']);
  assert.ok(((await (await fetch(`${reg.url}/v2/_catalog`)).json()) as { repositories: string[] }).repositories.includes('csreg/sigs'));
  assert.equal((await fetch(`${reg.url}/v2/csreg/sigs/manifests/sig-1`)).headers.get('docker-content-digest'), sha(artifact));
  assert.equal((await fetch(`${reg.url}/v2/csreg/base/manifests/${sha(artifact)}`, { method: 'DELETE' })).status, 202);
  const after = (await (await fetch(`${reg.url}/v2/csreg/base/referrers/${sha(subject)}`)).json()) as { manifests: unknown[] };
  assert.deepEqual(after.manifests, [], 'a deleted artifact is no longer a referrer');
  assert.equal((await fetch(`${reg.url}/v2/csreg/sigs/manifests/sig-1`)).status, 200, 'the other repository keeps its copy');
});

test('blobs are linked per repository: no reading, mounting or referencing another repository’s blob', async () => {
  const secret = Buffer.from('only in secret/repo');
  assert.equal((await rawPushBlob('secret/repo', secret)).status, 201);
  assert.equal((await fetch(`${reg.url}/v2/secret/repo/blobs/${sha(secret)}`)).status, 200);
  assert.equal((await fetch(`${reg.url}/v2/csreg/base/blobs/${sha(secret)}`)).status, 404, 'not through another repository');
  const mount = await fetch(`${reg.url}/v2/thief/repo/blobs/uploads/?mount=${sha(secret)}&from=csreg/base`, { method: 'POST' });
  assert.equal(mount.status, 202, 'a mount from a repository without the blob starts an upload instead');
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, config: {} }));
  assert.equal((await rawPushBlob('thief/repo', config)).status, 201);
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(secret), size: secret.length }],
  });
  const put = await fetch(`${reg.url}/v2/thief/repo/manifests/x`, { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(put.status, 404);
  assert.equal(((await put.json()) as { errors: { code: string }[] }).errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
  const ok = await fetch(`${reg.url}/v2/other/place/blobs/uploads/?mount=${sha(secret)}&from=secret/repo`, { method: 'POST' });
  assert.equal(ok.status, 201, 'a mount from the repository that has it');
  assert.equal((await fetch(`${reg.url}/v2/other/place/blobs/${sha(secret)}`)).status, 200);
});

test('a blob mounted from a store image’s repository (a layer the store rebuilds, an original blob its recipe makes) is in the new repository, and manifests naming it are accepted, in a new chain too', async () => {
  const manifest = Buffer.from(await (await fetch(`${reg.url}/v2/plain/derived/manifests/u1`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).arrayBuffer());
  const m = JSON.parse(manifest.toString()) as { mediaType: string; config: { digest: string }; layers: { digest: string; size: number; mediaType: string }[] };
  for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
    if (d !== m.config.digest) assert.ok(!existsSync(join(stateDir, 'blobs', 'sha256', d.slice(7))), 'the store serves it (no file in the blob cache)');
    const mount = await fetch(`${reg.url}/v2/plain/mounted/blobs/uploads/?mount=${d}&from=plain/derived`, { method: 'POST' });
    assert.equal(mount.status, 201);
    assert.equal((await fetch(`${reg.url}/v2/plain/mounted/blobs/${d}`, { method: 'HEAD' })).status, 200, `${d} is in the repository it was mounted to`);
  }
  const put = await fetch(`${reg.url}/v2/plain/mounted/manifests/m`, { method: 'PUT', body: manifest, headers: { 'Content-Type': m.mediaType } });
  assert.equal(put.status, 201, await put.text());
  assert.equal(await podmanId('localhost/plain/mounted:m'), await podmanId('localhost/plain/derived:u1'));
  // the top layer alone, as the base of another image: a new layer in the store, made from the mounted blob
  const top = m.layers[m.layers.length - 1];
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [top.digest] }, config: {} }));
  assert.equal((await rawPushBlob('plain/top', config)).status, 201);
  assert.equal((await fetch(`${reg.url}/v2/plain/top/blobs/uploads/?mount=${top.digest}&from=plain/mounted`, { method: 'POST' })).status, 201, 'mounted from the repository it was mounted to');
  const alone = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length }, layers: [top] });
  const put2 = await fetch(`${reg.url}/v2/plain/top/manifests/t`, { method: 'PUT', body: alone, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(put2.status, 201, await put2.text());
  // the Go tools rebuild the new layer from the store and check it against the config's diff_ids
  const out = join(work, 'top-dir');
  await run('skopeo', ['copy', '-q', csRef(s, 'localhost/plain/top:t'), `dir:${out}`]);
  assert.equal(sha(readFileSync(join(out, top.digest.slice(7)))), top.digest);
  // an original gzip blob the store keeps no copy of (made again by its recipe) of an image
  // podman pulled, mounted and made the base of another image
  const go6 = fx.recipes.find((r) => r.variant === 'go6')!;
  await run('podman', [...storeArgs(s), 'pull', '-q', '--tls-verify=false', go6.ref]);
  const from = repoOf(go6.ref);
  const gm = JSON.parse(Buffer.from(await (await fetch(`${reg.url}/v2/${from}/manifests/${go6.manifestDigest}`)).arrayBuffer()).toString()) as { config: { digest: string }; layers: { digest: string; size: number; mediaType: string }[] };
  const gc = (await (await fetch(`${reg.url}/v2/${from}/blobs/${gm.config.digest}`)).json()) as { rootfs: { diff_ids: string[] } };
  const second = gm.layers[1];
  assert.ok(!existsSync(join(stateDir, 'blobs', 'sha256', second.digest.slice(7))), 'not in the blob cache');
  assert.equal((await fetch(`${reg.url}/v2/plain/made/blobs/uploads/?mount=${second.digest}&from=${from}`, { method: 'POST' })).status, 201);
  const config2 = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [gc.rootfs.diff_ids[1]] }, config: {} }));
  assert.equal((await rawPushBlob('plain/made', config2)).status, 201);
  const made = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config2), size: config2.length }, layers: [second] });
  const put3 = await fetch(`${reg.url}/v2/plain/made/manifests/m`, { method: 'PUT', body: made, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(put3.status, 201, await put3.text());
  const out2 = join(work, 'made-dir');
  await run('skopeo', ['copy', '-q', csRef(s, 'localhost/plain/made:m'), `dir:${out2}`]);
  const tars = readdirSync(out2).map((f) => readFileSync(join(out2, f))).map((b) => (b[0] === 0x1f && b[1] === 0x8b ? gunzipSync(b) : b));
  assert.ok(tars.some((t) => sha(t) === gc.rootfs.diff_ids[1]), 'the new layer holds the mounted blob\'s tar');
});

test('pushing an image the store already has, with another manifest, changes nothing its other names serve', async () => {
  // the image podman pulled (the previous test): its tag serves the manifest it was pulled with
  const go6 = fx.recipes.find((r) => r.variant === 'go6')!;
  const from = repoOf(go6.ref);
  const tag = go6.ref.slice(go6.ref.lastIndexOf(':') + 1);
  const served = async (repo: string, ref: string) => (await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } })).headers.get('docker-content-digest');
  assert.equal(await served(from, tag), go6.manifestDigest);
  const original = Buffer.from(await (await fetch(`${reg.url}/v2/${from}/manifests/${go6.manifestDigest}`)).arrayBuffer());
  // the same image (same config, same blobs) under another manifest: its fields in another order
  const m = JSON.parse(original.toString()) as Record<string, unknown>;
  const other = Buffer.from(JSON.stringify(Object.fromEntries(Object.entries(m).reverse())));
  assert.notEqual(sha(other), go6.manifestDigest);
  const blobs = [(m.config as { digest: string }).digest, ...(m.layers as { digest: string }[]).map((l) => l.digest)];
  for (const d of blobs) assert.equal((await fetch(`${reg.url}/v2/other/same/blobs/uploads/?mount=${d}&from=${from}`, { method: 'POST' })).status, 201, `mount of ${d} (${blobs.indexOf(d)})`);
  const put = await fetch(`${reg.url}/v2/other/same/manifests/1`, { method: 'PUT', body: new Uint8Array(other), headers: { 'Content-Type': m.mediaType as string } });
  assert.equal(put.status, 201, await put.text());
  const id = await podmanId(go6.ref);
  assert.equal(await podmanId('localhost/other/same:1'), id, 'one image, two names');
  assert.equal(await served('other/same', '1'), sha(other), 'the pushed tag serves what was pushed');
  assert.equal(await served(from, tag), go6.manifestDigest, 'the tag podman pulled still serves its manifest');
  assert.equal((await run('podman', [...storeArgs(s), 'image', 'inspect', '--format', '{{.Digest}}', go6.ref])).trim(), go6.manifestDigest, 'and podman still reports it');
  assert.equal(await served(from, sha(other)), sha(other), 'both are reachable by digest');
  // the go6 image names its second layer's blob by reuse, and the layer made from it (above) records it: one blob
  const listed = JSON.parse(await run(join(repoRoot(), 'bin', 'csreg'), ['--root', s.root, '--runroot', s.runroot, '--storage-driver', s.driver, 'recipes', 'list', '--json', '--state-dir', stateDir])) as { layers: { digest: string }[] };
  const digests = listed.layers.map((l) => l.digest);
  assert.ok(digests.includes(blobs[2]));
  assert.deepEqual(digests, [...new Set(digests)], 'each blob listed once');
});

test('a mount of an original blob csreg has not served yet finds its recipe first, as a pull would, and the blob is then in both repositories', async () => {
  const go1 = fx.recipes.find((r) => r.variant === 'go1')!;
  await run('podman', [...storeArgs(s), 'pull', '-q', '--tls-verify=false', go1.ref]);
  // its layers as the registry podman pulled from lists them: csreg has served nothing of it
  const upstream = `http://${fx.registry.addr}/v2/${go1.ref.slice(go1.ref.indexOf('/') + 1).replace(/:([^:]*)$/, '/manifests/$1')}`;
  const m = (await (await fetch(upstream, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } })).json()) as { layers: { digest: string }[] };
  for (const { digest } of m.layers) {
    assert.equal((await fetch(`${reg.url}/v2/other/go1/blobs/uploads/?mount=${digest}&from=${repoOf(go1.ref)}`, { method: 'POST' })).status, 201, `mount of ${digest}`);
    assert.equal(sha(Buffer.from(await (await fetch(`${reg.url}/v2/other/go1/blobs/${digest}`)).arrayBuffer())), digest);
  }
});

test('DELETE by the digest a tag serves works when that manifest is synthesized (a buildah image served with --synthesize gzip, as skopeo delete does it)', async () => {
  const ctr = await run('buildah', [...storeArgs(s), 'from', '-q', 'scratch']);
  const file = join(work, 'built.txt');
  writeFileSync(file, 'built here');
  await run('buildah', [...storeArgs(s), 'copy', ctr, file, '/built.txt']);
  await run('buildah', [...storeArgs(s), 'commit', '-q', ctr, 'localhost/built/here:1']);
  await run('buildah', [...storeArgs(s), 'rm', ctr]);
  const gz = await startRegistry({ store: Store.open(s), log, addr: '127.0.0.1:0', stateDir: join(work, 'state-gzip'), push: true, synthesize: 'gzip' });
  try {
    const stored = (await run('podman', [...storeArgs(s), 'image', 'inspect', '--format', '{{.Digest}}', 'localhost/built/here:1'])).trim();
    const head = await fetch(`${gz.url}/v2/built/here/manifests/1`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const digest = head.headers.get('docker-content-digest')!;
    assert.notEqual(digest, stored, 'the tag serves a synthesized manifest (gzip layers), not buildah\'s');
    await run('skopeo', ['delete', '--tls-verify=false', `docker://${gz.url.slice('http://'.length)}/built/here:1`]);
    await assert.rejects(podmanId('localhost/built/here:1'), 'the image is gone');
  } finally {
    await gz.close(100);
  }
});

test('DELETE of an image only an additional (read-only) image store holds is refused, naming that store, and changes nothing there; a push to its tag wins the tag', async () => {
  const ro = fx.stores.overlay;
  const conf = join(work, 'storage-ro.conf');
  writeFileSync(conf, `[storage]\ndriver = "overlay"\ngraphroot = "${s.root}"\nrunroot = "${s.runroot}"\n[storage.options]\nadditionalimagestores = ["${ro.root}"]\n`);
  const images = join(ro.root, 'overlay-images', 'images.json');
  const before = readFileSync(images);
  const r = await startRegistry({ store: Store.open({}, { CONTAINERS_STORAGE_CONF: conf }), log, addr: '127.0.0.1:0', stateDir: join(work, 'state-ro'), push: true });
  try {
    const digest = (await fetch(`${r.url}/v2/csreg/tiny/manifests/1`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).headers.get('docker-content-digest');
    assert.ok(digest, 'the read-only store\'s image is served');
    for (const ref of ['1', digest]) {
      const del = await fetch(`${r.url}/v2/csreg/tiny/manifests/${ref}`, { method: 'DELETE' });
      assert.equal(del.status, 409);
      const e = ((await del.json()) as { errors: { code: string; message: string }[] }).errors[0];
      assert.equal(e.code, 'DENIED');
      assert.ok(e.message.includes(ro.root) && e.message.includes('read-only'), e.message);
    }
    assert.ok(readFileSync(images).equals(before), 'the read-only store is untouched');
    // a push of another image to that tag: the primary store's image wins it, as in c/storage
    const digestFile = join(work, 'ro-pushed-digest');
    await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--digestfile', digestFile, csRef(ro, 'localhost/csreg/base:1'), `docker://${r.url.slice('http://'.length)}/csreg/tiny:1`]);
    const pushed = readFileSync(digestFile, 'utf8').trim();
    assert.notEqual(pushed, digest);
    const now = async () => (await fetch(`${r.url}/v2/csreg/tiny/manifests/1`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } })).headers.get('docker-content-digest');
    assert.equal(await now(), pushed, 'the tag serves what was pushed');
    assert.equal((await fetch(`${r.url}/v2/csreg/tiny/manifests/1`, { method: 'DELETE' })).status, 202);
    assert.equal(await now(), digest, 'its tag deleted, the read-only store\'s image has the tag again');
    assert.ok(readFileSync(images).equals(before), 'the read-only store is untouched');
  } finally {
    await r.close(100);
  }
});

test('a store made for a mount program (fuse-overlayfs): csreg serves what skopeo put there, and writes a pushed image\'s whiteouts as AUFS files, which fuse-overlayfs applies', async (t) => {
  if (!existsSync('/usr/bin/fuse-overlayfs') || !existsSync('/dev/fuse')) return t.skip('no fuse-overlayfs or /dev/fuse here (Debian package fuse-overlayfs)');
  const dir = mkdtempSync(join(tmpdir(), 'csreg-mount-program-'));
  const mp: FixtureStore = { root: join(dir, 'root'), runroot: join(dir, 'run'), driver: 'overlay' };
  const conf = join(dir, 'storage.conf');
  writeFileSync(conf, `[storage]\ndriver = "overlay"\ngraphroot = "${mp.root}"\nrunroot = "${mp.runroot}"\n[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n`);
  const env = { ...process.env, CONTAINERS_STORAGE_CONF: conf };
  const base = exportImage(fx.stores.overlay, 'localhost/csreg/base:1');
  const derived = exportImage(fx.stores.overlay, 'localhost/csreg/derived:1');
  let r: RunningRegistry | undefined;
  t.after(async () => {
    await r?.close(100);
    for (const e of [base, derived]) rmSync(e.dir, { recursive: true, force: true });
    try { await run('umount', ['-l', join(mp.root, 'overlay')]); } catch { /* not mounted */ }
    rmSync(dir, { recursive: true, force: true });
  });
  await run('skopeo', ['copy', '-q', `dir:${base.dir}`, 'containers-storage:localhost/mp/base:1'], env);
  assert.equal(readFileSync(join(mp.root, 'overlay', '.has-mount-program'), 'utf8'), 'true');
  r = await startRegistry({ store: Store.open(mp), log, addr: '127.0.0.1:0', stateDir: join(dir, 'state'), push: true });
  const mpHost = r.url.slice('http://'.length);
  const pulled = join(dir, 'pulled');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${mpHost}/mp/base:1`, `dir:${pulled}`]);
  assert.equal(checkedDirLayers(pulled).length, base.layers.length);

  await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `dir:${derived.dir}`, `docker://${mpHost}/mp/derived:1`]);
  const diffs = readdirSync(join(mp.root, 'overlay')).filter((d) => /^[0-9a-f]{64}$/.test(d)).map((d) => join(mp.root, 'overlay', d, 'diff'));
  const isFile = (p: string) => statSync(p, { throwIfNoEntry: false })?.isFile() ?? false;
  assert.ok(diffs.some((d) => isFile(join(d, 'data/.wh.gone-file'))) && diffs.some((d) => isFile(join(d, 'data/.wh.gone-dir'))), 'whiteouts are the tar\'s .wh. files');
  assert.ok(diffs.some((d) => isFile(join(d, 'data/opaque/.wh..wh..opq'))), 'the opaque directory keeps its .wh..wh..opq');
  assert.ok(!diffs.some((d) => statSync(join(d, 'data/gone-file'), { throwIfNoEntry: false })?.isCharacterDevice()), 'no overlay whiteout devices');
  // podman mounts it with fuse-overlayfs: the whiteouts and the opaque directory hold
  const view = await run('sh', ['-c', 'm=$(podman image mount localhost/mp/derived:1) && ls -A "$m/data" && echo -- && ls -A "$m/data/opaque"; r=$?; podman image unmount localhost/mp/derived:1 >/dev/null; exit $r'], env);
  const [data, inOpaque] = view.split('--\n').map((x) => x.trim().split('\n'));
  assert.ok(data.includes('opaque') && !data.includes('gone-file') && !data.includes('gone-dir') && !data.includes('.wh.gone-file'));
  assert.deepEqual(inOpaque, ['new']);
  const rebuilt = join(dir, 'rebuilt');
  await run('skopeo', ['copy', '-q', 'containers-storage:localhost/mp/derived:1', `dir:${rebuilt}`], env);
  assert.equal(checkedDirLayers(rebuilt).length, derived.layers.length, 'Go rebuilds every layer from csreg\'s tar-split');
});

/**
 * The OCI image skopeo pushed for csreg/base (csreg/base: an earlier test deletes csreg/derived's
 * images), fetched back from csreg: its manifest (checked against the pushed digest), config and layers.
 */
async function pushedBaseImage(): Promise<{ manifest: Buffer; blobs: Buffer[] }> {
  const src = fx.pushed.find((p) => p.ref.endsWith('/csreg/base:oci'))!;
  const got = await fetch(`${reg.url}/v2/csreg/base/manifests/${pushedDigests.get(src.ref)}`, { headers: { Accept: MT_MANIFEST } });
  assert.equal(got.status, 200);
  const manifest = Buffer.from(await got.arrayBuffer());
  assert.equal(sha(manifest), pushedDigests.get(src.ref));
  const m = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  const blobOf = async (d: string) => Buffer.from(await (await fetch(`${reg.url}/v2/csreg/base/blobs/${d}`)).arrayBuffer());
  return { manifest, blobs: [await blobOf(m.config.digest), ...(await Promise.all(m.layers.map((l) => blobOf(l.digest))))] };
}

const MT_INDEX = 'application/vnd.oci.image.index.v1+json';
const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

test('indexes as the OCI conformance suite pushes them: empty, of artifacts, of indexes; each served back by tag and digest; referrers of a repository not known yet are an empty index', async () => {
  const put = (repo: string, ref: string, body: Buffer, mediaType: string) =>
    fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'Content-Type': mediaType } });
  const servedBack = async (repo: string, ref: string, body: Buffer) => {
    const r = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { headers: { Accept: MT_INDEX } });
    assert.equal(r.status, 200, `${repo}:${ref}`);
    assert.equal(sha(Buffer.from(await r.arrayBuffer())), sha(body), `${repo}:${ref} comes back as pushed`);
    assert.equal((await fetch(`${reg.url}/v2/${repo}/manifests/${sha(body)}`, { method: 'HEAD', headers: { Accept: MT_INDEX } })).status, 200);
  };
  const index = (manifests: { mediaType: string; digest: string; size: number }[]) => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT_INDEX, manifests }));
  const desc = (mediaType: string, b: Buffer) => ({ mediaType, digest: sha(b), size: b.length });

  const empty = index([]);
  assert.equal((await put('conf/idx', 'empty', empty, MT_INDEX)).status, 201);
  await servedBack('conf/idx', 'empty', empty);

  // artifacts (kept by csreg, not in the store) and an index of them
  const config = Buffer.from('{}');
  const blob = Buffer.from('an attestation');
  const artifact = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT_MANIFEST, artifactType: 'application/vnd.example.att', config: desc('application/vnd.oci.empty.v1+json', config), layers: [desc('application/octet-stream', blob)] }));
  assert.equal((await rawPush('conf/idx', sha(artifact), [config, blob], artifact, MT_MANIFEST)).status, 201);
  const ofArtifacts = index([desc(MT_MANIFEST, artifact)]);
  assert.equal((await put('conf/idx', 'artifacts', ofArtifacts, MT_INDEX)).status, 201);
  await servedBack('conf/idx', 'artifacts', ofArtifacts);

  // an image's index, and an index of that index
  const { manifest: imageManifest, blobs } = await pushedBaseImage();
  assert.equal((await rawPush('conf/nested', 'image', blobs, imageManifest, MT_MANIFEST)).status, 201);
  const inner = index([desc(MT_MANIFEST, imageManifest)]);
  assert.equal((await put('conf/nested', sha(inner), inner, MT_INDEX)).status, 201);
  const outer = index([desc(MT_INDEX, inner)]);
  assert.equal((await put('conf/nested', 'index-of-index', outer, MT_INDEX)).status, 201);
  await servedBack('conf/nested', 'index-of-index', outer);
  await servedBack('conf/nested', sha(inner), inner);
  await run('podman', [...storeArgs(s), 'images']);

  const none = await fetch(`${reg.url}/v2/conf/never-pushed/referrers/${sha(artifact)}`);
  assert.equal(none.status, 200);
  assert.equal(none.headers.get('content-type'), MT_INDEX);
  assert.deepEqual(((await none.json()) as { manifests: unknown[] }).manifests, []);
});

test('a push by digest with ?tag= parameters also tags it (OCI-Tag), for an image and an index; a bad tag is refused before anything is written', async () => {
  const { manifest, blobs } = await pushedBaseImage();
  for (const b of blobs) assert.equal((await rawPushBlob('conf/tagged', b)).status, 201);
  const put = (ref: string, body: Buffer, mediaType: string) => fetch(`${reg.url}/v2/conf/tagged/manifests/${ref}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'Content-Type': mediaType } });

  const refused = await put(`${sha(manifest)}?tag=ok&tag=${encodeURIComponent('-bad')}`, manifest, MT_MANIFEST);
  assert.equal(refused.status, 400);
  assert.equal(((await refused.json()) as { errors: { code: string }[] }).errors[0].code, 'TAG_INVALID');
  assert.equal((await fetch(`${reg.url}/v2/conf/tagged/manifests/${sha(manifest)}`)).status, 404, 'nothing written');

  const r = await put(`${sha(manifest)}?tag=1.2.3&tag=1.2&tag=latest`, manifest, MT_MANIFEST);
  assert.equal(r.status, 201);
  assert.equal(r.headers.get('oci-tag'), '1.2.3, 1.2, latest');
  assert.equal(r.headers.get('docker-content-digest'), sha(manifest));
  const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT_INDEX, manifests: [{ mediaType: MT_MANIFEST, digest: sha(manifest), size: manifest.length }] }));
  const ri = await put(`${sha(idx)}?tag=multi`, idx, MT_INDEX);
  assert.equal(ri.status, 201);
  assert.equal(ri.headers.get('oci-tag'), 'multi');
  assert.deepEqual(((await (await fetch(`${reg.url}/v2/conf/tagged/tags/list`)).json()) as { tags: string[] }).tags.sort(), ['1.2', '1.2.3', 'latest', 'multi']);
  for (const [tag, body] of [['1.2.3', manifest], ['latest', manifest], ['multi', idx]] as const) {
    const got = await fetch(`${reg.url}/v2/conf/tagged/manifests/${tag}`, { headers: { Accept: `${MT_MANIFEST}, ${MT_INDEX}` } });
    assert.equal(sha(Buffer.from(await got.arrayBuffer())), sha(body), tag);
  }
  const names = (await run('podman', [...storeArgs(s), 'images', '--format', '{{.Repository}}:{{.Tag}}'])).split('\n');
  for (const t of ['1.2.3', '1.2', 'latest']) assert.ok(names.includes(`localhost/conf/tagged:${t}`), `podman lists localhost/conf/tagged:${t}`);
});
