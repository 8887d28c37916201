// The registry against real clients: skopeo and podman pull from csreg serving stores that
// buildah, skopeo and podman wrote; skopeo verifies every digest it receives.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { Store } from '../src/storage/store.js';
import { readTar } from '../src/storage/tar.js';
import { startRegistry, type RunningRegistry } from '../src/registry/server.js';
import { createLogger } from '../src/log.js';
import { copyStore, loadFixtures, repoRoot, startServe, storeArgs, csRef, writerCouldLock, type FixtureStore } from './fixtures.js';

const fx = loadFixtures();
const temps: string[] = [];
after(() => {
  for (const t of temps) rmSync(t, { recursive: true, force: true });
});
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
}

interface Served extends RunningRegistry { host: string; logs: string[]; store: Store }
const servers: Served[] = [];
after(async () => {
  for (const s of servers) await s.close(100);
});

async function serve(s: FixtureStore, wireGzip: 'on' | 'off' | 'auto' = 'off'): Promise<Served> {
  const logs: string[] = [];
  const out = new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } });
  const store = Store.open(s);
  const reg = await startRegistry({ store, log: createLogger({ out, level: 'debug' }), addr: '127.0.0.1:0', wireGzip });
  const served = { ...reg, host: reg.url.slice('http://'.length), logs, store };
  servers.push(served);
  return served;
}

/** Repository and tag of a store name as csreg serves it (host ":port" → "_port"). */
function repoTag(name: string): { repo: string; tag: string } {
  const i = name.lastIndexOf(':');
  return { repo: name.slice(0, i).replace(/^([^/]*):(\d+)\//, '$1_$2/'), tag: name.slice(i + 1) };
}

/** Commands that talk to the in-process registry must not block its event loop. */
const execAsync = promisify(execFile);
async function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await execAsync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, env: env ?? process.env });
  return stdout.trim();
}

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

function emptyStore(): FixtureStore {
  const d = tmp('csreg-dst-');
  return { root: join(d, 'root'), runroot: join(d, 'run'), driver: 'overlay' };
}

const servedStores: Record<string, Served> = {};
async function server(name: keyof typeof fx.stores): Promise<Served> {
  return (servedStores[name] ??= await serve(fx.stores[name]));
}

test('skopeo copies every fixture image from csreg to oci:, dir: and containers-storage:, keeping the image ID', async () => {
  let copied = 0;
  for (const storeName of ['overlay', 'vfs', 'pulled', 'zstd'] as const) {
    const srv = await server(storeName);
    const snap = await srv.store.snapshot();
    const seen = new Set<string>();
    for (const img of fx.images.filter((i) => i.store === storeName)) {
      const image = snap.image(img.name)!;
      if (!image.topLayer || seen.has(image.id)) continue; // lists are covered below; one name per image
      seen.add(image.id);
      const { repo, tag } = repoTag(img.name);
      const ref = `docker://${srv.host}/${repo}:${tag}`;
      const inspect = JSON.parse(await run('skopeo', ['inspect', '--tls-verify=false', ref]));
      assert.equal(inspect.Name, `${srv.host}/${repo}`);
      const d = tmp('csreg-copy-');
      await run('skopeo', ['copy', '-q', '--src-tls-verify=false', ref, `oci:${join(d, 'oci')}`]);
      await run('skopeo', ['copy', '-q', '--src-tls-verify=false', ref, `dir:${join(d, 'dir')}`]);
      const dst = emptyStore();
      await run('skopeo', ['copy', '-q', '--src-tls-verify=false', ref, csRef(dst, 'localhost/copied:1')]);
      const id = execFileSync('podman', [...storeArgs(dst), 'image', 'inspect', '--format', '{{.Id}}', 'localhost/copied:1'], { encoding: 'utf8' }).trim();
      assert.equal(id, image.id, `${storeName} ${img.name}: image ID (config digest) kept`);
      copied++;
    }
  }
  assert.ok(copied >= 6, `copied ${copied} images`);
});

test('podman pulls by tag, by the synthesized digest and by the original digest', async () => {
  const srv = await server('pulled');
  const snap = await srv.store.snapshot();
  const name = fx.images.find((i) => i.store === 'pulled' && i.name.endsWith(':v2s2'))!.name;
  const image = snap.image(name)!;
  const { repo, tag } = repoTag(name);
  const dst = emptyStore();
  assert.equal(await run('podman', [...storeArgs(dst), 'pull', '-q', '--tls-verify=false', `${srv.host}/${repo}:${tag}`]), image.id);
  // The pulled (gzip) image is served through the synthesized manifest: its digest is computed here.
  const res = await fetch(`${srv.url}/v2/${repo}/manifests/${tag}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(res.headers.get('docker-content-digest'), sha(body));
  const m = JSON.parse(body.toString());
  assert.deepEqual(m.layers.map((l: { digest: string }) => l.digest), snap.layerChain(image.topLayer).layers.map((l) => l.diffDigest));
  assert.equal(m.layers[0].mediaType, 'application/vnd.oci.image.layer.v1.tar');
  rmSync(dst.root, { recursive: true, force: true });
  const dst2 = emptyStore();
  const id2 = await run('podman', [...storeArgs(dst2), 'pull', '-q', '--tls-verify=false', `${srv.host}/${repo}@${sha(body)}`]);
  assert.equal(id2, image.id);

  // A buildah-built image's layers are stored uncompressed: its original manifest is servable.
  const local = await server('overlay');
  const lsnap = await local.store.snapshot();
  const base = lsnap.image('localhost/csreg/base:1')!;
  const original = await local.store.imageBigData(base, 'manifest');
  const r = await fetch(`${local.url}/v2/localhost/csreg/base/manifests/1`);
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(original), 'the tag serves the original manifest bytes');
  const dst3 = emptyStore();
  const id3 = await run('podman', [...storeArgs(dst3), 'pull', '-q', '--tls-verify=false', `${local.host}/localhost/csreg/base@${sha(original)}`]);
  assert.equal(id3, base.id);
});

test('manifest lists: served when their children are, refused when a child cannot be produced', async () => {
  // A local list (buildah manifest create/add): both platforms' images are in the store.
  const local = await server('overlay');
  const r = await fetch(`${local.url}/v2/localhost/csreg/multi/manifests/1`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
  const body = Buffer.from(await r.arrayBuffer());
  assert.equal(r.headers.get('docker-content-digest'), sha(body));
  const children = JSON.parse(body.toString()).manifests as { digest: string; platform: { architecture: string } }[];
  assert.deepEqual(children.map((c) => c.platform.architecture).sort(), ['amd64', 'arm64']);
  for (const c of children) assert.equal((await fetch(`${local.url}/v2/localhost/csreg/multi/manifests/${c.digest}`)).status, 200);
  assert.equal((await fetch(`${local.url}/v2/localhost/csreg/multi/manifests/${sha(body)}`)).status, 200);
  const dst = emptyStore();
  const id = await run('podman', [...storeArgs(dst), 'pull', '-q', '--tls-verify=false', `${local.host}/localhost/csreg/multi:1`]);
  assert.equal(id, (await local.store.snapshot()).image('localhost/csreg/base:1')!.id, 'podman picks the amd64 child');

  // A list pulled from a registry: the store holds it and its amd64 child, whose layers are
  // gzip blobs csreg cannot produce (yet): never a 200 for a manifest whose blobs would fail.
  const pulled = await server('pulled');
  const list = fx.pushed.find((p) => p.format === 'list')!;
  const res = await fetch(`${pulled.url}/v2/${repoTag(list.ref).repo}/manifests/${list.manifestDigest}`);
  assert.equal(res.status, 404);
  assert.equal(((await res.json()) as { errors: { code: string }[] }).errors[0].code, 'MANIFEST_UNKNOWN');
});

test('Range requests return the same bytes as a full download; past the end is 416', async () => {
  const srv = await server('overlay');
  const snap = await srv.store.snapshot();
  const layer = [...snap.layers].filter((l) => l.diffSize).sort((a, b) => b.diffSize! - a.diffSize!)[0];
  const url = `${srv.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`;
  const full = Buffer.from(await (await fetch(url)).arrayBuffer());
  assert.equal(sha(full), layer.diffDigest);
  const size = full.length;
  for (const [range, start, end] of [['bytes=0-99', 0, 100], [`bytes=${size >> 1}-${(size >> 1) + 70000}`, size >> 1, (size >> 1) + 70001], [`bytes=${size - 10}-`, size - 10, size], ['bytes=-512', size - 512, size]] as const) {
    const r = await fetch(url, { headers: { Range: range } });
    assert.equal(r.status, 206, range);
    assert.equal(r.headers.get('content-range'), `bytes ${start}-${end - 1}/${size}`);
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(full.subarray(start, end)), range);
  }
  const past = await fetch(url, { headers: { Range: `bytes=${size}-` } });
  assert.equal(past.status, 416);
  assert.equal(past.headers.get('content-range'), `bytes */${size}`);
  await past.arrayBuffer();
});

test('names: docker.io short forms, the _port form, invalid names and digests', async (t) => {
  // A store holding an image under a docker.io name, made by skopeo from a fixture.
  const s = emptyStore();
  execFileSync('skopeo', ['copy', '-q', csRef(fx.stores.overlay, 'localhost/csreg/base:1'), csRef(s, 'docker.io/library/csregmirror:1')]);
  const srv = await serve(s);
  for (const repo of ['docker.io/library/csregmirror', 'library/csregmirror', 'csregmirror']) {
    const r = await fetch(`${srv.url}/v2/${repo}/manifests/1`);
    assert.equal(r.status, 200, repo);
    await r.arrayBuffer();
  }
  const pulled = await server('pulled');
  assert.equal((await fetch(`${pulled.url}/v2/127.0.0.1_5701/csreg/base/tags/list`)).status, 200);
  const errors = async (url: string) => {
    const r = await fetch(url);
    return { status: r.status, code: ((await r.json()) as { errors: { code: string }[] }).errors[0].code };
  };
  assert.deepEqual(await errors(`${srv.url}/v2/Bad..Name/manifests/1`), { status: 400, code: 'NAME_INVALID' });
  assert.deepEqual(await errors(`${srv.url}/v2/csregmirror/manifests/sha256:1234`), { status: 400, code: 'DIGEST_INVALID' });
  assert.deepEqual(await errors(`${srv.url}/v2/csregmirror/blobs/sha256:zz`), { status: 400, code: 'DIGEST_INVALID' });
  assert.deepEqual(await errors(`${srv.url}/v2/nothere/manifests/1`), { status: 404, code: 'NAME_UNKNOWN' });
  assert.deepEqual(await errors(`${srv.url}/v2/csregmirror/manifests/nope`), { status: 404, code: 'MANIFEST_UNKNOWN' });
  assert.deepEqual(await errors(`${srv.url}/v2/csregmirror/blobs/sha256:${'0'.repeat(64)}`), { status: 404, code: 'BLOB_UNKNOWN' });
  const put = await fetch(`${srv.url}/v2/csregmirror/manifests/2`, { method: 'PUT', body: '{}' });
  assert.equal(put.status, 405);
  assert.equal(((await put.json()) as { errors: { code: string }[] }).errors[0].code, 'UNSUPPORTED');

  await t.test('a registries.conf mirror for docker.io resolves through csreg', async () => {
    for (const location of [srv.host, `${srv.host}/docker.io`]) {
      const conf = join(tmp('csreg-regconf-'), 'registries.conf');
      writeFileSync(conf, `unqualified-search-registries = []\n[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "${location}"\ninsecure = true\n`);
      const dst = emptyStore();
      const id = await run('podman', [...storeArgs(dst), 'pull', '-q', 'docker.io/library/csregmirror:1'], { ...process.env, CONTAINERS_REGISTRIES_CONF: conf });
      assert.equal(id, await run('podman', [...storeArgs(s), 'image', 'inspect', '--format', '{{.Id}}', 'docker.io/library/csregmirror:1']), location);
    }
  });
});

test('tags/list and _catalog paginate with n, last and Link', async () => {
  const srv = await server('pulled');
  const all = (await (await fetch(`${srv.url}/v2/_catalog`)).json()) as { repositories: string[] };
  assert.ok(all.repositories.length >= 4);
  const first = await fetch(`${srv.url}/v2/_catalog?n=2`);
  const page = (await first.json()) as { repositories: string[] };
  assert.deepEqual(page.repositories, all.repositories.slice(0, 2));
  const link = first.headers.get('link')!;
  assert.match(link, /^<\/v2\/_catalog\?n=2&last=[^>]+>; rel="next"$/);
  const next = (await (await fetch(srv.url + link.slice(1, link.indexOf('>')))).json()) as { repositories: string[] };
  assert.deepEqual(next.repositories, all.repositories.slice(2, 4));
  const tags = (await (await fetch(`${srv.url}/v2/csreg/base/tags/list?n=1`)).json()) as { tags: string[] };
  assert.equal(tags.tags.length, 1);
  const rest = (await (await fetch(`${srv.url}/v2/csreg/base/tags/list?last=${tags.tags[0]}`)).json()) as { tags: string[] };
  assert.ok(!rest.tags.includes(tags.tags[0]) && rest.tags.length >= 1);
});

test('podman search, skopeo list-tags and skopeo sync see the repositories and tags podman has', async () => {
  const srv = await server('overlay');
  const tagsOf = async (repo: string) => (await run('podman', [...storeArgs(fx.stores.overlay), 'images', '--format', '{{.Repository}} {{.Tag}}']))
    .split('\n').map((l) => l.split(' ')).filter(([r, t]) => r === repo && t !== '<none>').map(([, t]) => t).sort();
  const tags = await tagsOf('localhost/csreg/derived');
  assert.ok(tags.length >= 2, tags.join());
  const listed = JSON.parse(await run('skopeo', ['list-tags', '--tls-verify=false', `docker://${srv.host}/localhost/csreg/derived`])) as { Tags: string[] };
  assert.deepEqual([...listed.Tags].sort(), tags);
  // (podman 4.3's --list-tags prints its NAME TAG table whatever --format says)
  const searched = (await run('podman', ['search', '--list-tags', '--tls-verify=false', `${srv.host}/localhost/csreg/derived`])).split('\n').slice(1);
  assert.deepEqual(searched.map((l) => l.split(/\s+/)).map(([name, tag]) => { assert.equal(name, `${srv.host}/localhost/csreg/derived`); return tag; }).sort(), tags);
  const repos = (await run('podman', ['search', '--tls-verify=false', '--format', '{{.Name}}', `${srv.host}/csreg`])).split('\n');
  for (const r of ['localhost/csreg/base', 'localhost/csreg/derived', 'csreg/base']) assert.ok(repos.includes(`${srv.host}/${r}`), `${r} in ${repos.join()}`);
  // sync: every tag of the repository, as csreg serves it, every blob hashed
  const dir = tmp('csreg-sync-');
  await run('skopeo', ['sync', '--src-tls-verify=false', '--src', 'docker', '--dest', 'dir', `${srv.host}/localhost/csreg/derived`, dir]);
  for (const tag of tags) {
    const d = join(dir, `derived:${tag}`);
    const m = readFileSync(join(d, 'manifest.json'));
    const served = await fetch(`${srv.url}/v2/localhost/csreg/derived/manifests/${tag}`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(sha(m), served.headers.get('docker-content-digest'), tag);
    const parsed = JSON.parse(m.toString()) as { config: { digest: string }; layers: { digest: string }[] };
    for (const b of [parsed.config, ...parsed.layers]) assert.equal(sha(readFileSync(join(d, b.digest.slice(7)))), b.digest);
  }
});

test('referrers: an empty OCI index when none', async () => {
  const srv = await server('overlay');
  const snap = await srv.store.snapshot();
  const d = snap.image('localhost/csreg/base:1')!.digest!;
  const r = await fetch(`${srv.url}/v2/localhost/csreg/base/referrers/${d}?artifactType=application/x-test`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
  assert.equal(r.headers.get('oci-filters-applied'), 'artifactType');
  assert.deepEqual(await r.json(), { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
});

test('a client that leaves a layer download halfway: the rebuild stops and the layer store\'s read lock is given back', async () => {
  const s = fx.stores.vfs;
  const srv = await server('vfs');
  const snap = await srv.store.snapshot();
  const layer = snap.layerChain(snap.image('localhost/csreg/base:1')!.topLayer).layers[0]; // (the 24 MiB file)
  const writerCould = () => writerCouldLock(join(s.root, 'vfs-layers', 'layers.lock'));
  const ac = new AbortController();
  const r = await fetch(`${srv.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`, { signal: ac.signal });
  assert.equal(r.status, 200);
  const reader = r.body!.getReader();
  let got = 0;
  while (got < 2 << 20) got += (await reader.read()).value!.length;
  assert.equal(writerCould(), false, 'locked while the layer is sent');
  ac.abort();
  let free = false;
  for (let i = 0; i < 100 && !free; i++) {
    await new Promise((res) => setTimeout(res, 20));
    free = writerCould();
  }
  assert.ok(free, 'the lock is given back once the client has left');
});

/** A private copy of the vfs fixture store (its files may be damaged), served; the base image's first layer. */
async function servedCopyBaseLayer() {
  const s = copyStore(fx.stores.vfs);
  temps.push(s.dir);
  const srv = await serve(s);
  const snap = await srv.store.snapshot();
  return { srv, layer: snap.layerChain(snap.image('localhost/csreg/base:1')!.topLayer).layers[0] };
}

test('a layer file changed on disk: the download is aborted and the log names the layer', async () => {
  const { srv, layer } = await servedCopyBaseLayer();
  const dir = srv.store.contentRoots(layer)[0];
  const victim = join(dir, 'data', 'large.bin');
  const buf = readFileSync(victim);
  buf[buf.length - 5] ^= 1;
  writeFileSync(victim, buf);
  const r = await fetch(`${srv.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`);
  assert.equal(r.status, 200);
  await assert.rejects(r.arrayBuffer(), 'the body must fail, not end cleanly');
  await new Promise((res) => setTimeout(res, 50));
  assert.ok(srv.logs.some((l) => l.includes('did not verify') && l.includes(layer.id)), 'log names the layer');
});

test('a small layer file changed on disk, asked for by a range that starts in it: an error status naming the layer, before any byte', async () => {
  const { srv, layer } = await servedCopyBaseLayer();
  // where data/small/f1.txt's bytes are in the layer's tar
  let at = 0;
  let fileAt = -1;
  for await (const ev of readTar(await srv.store.layerTar(layer.id))) {
    if (ev.kind === 'entry' && ev.header.name.toString() === 'data/small/f1.txt') fileAt = at;
    else if (ev.kind !== 'entry') at += ev.bytes.length;
    if (fileAt >= 0 && ev.kind !== 'entry') break;
  }
  assert.ok(fileAt > 0, 'the file is in the layer');
  const victim = join(srv.store.contentRoots(layer)[0], 'data', 'small', 'f1.txt');
  assert.equal(readFileSync(victim, 'utf8'), 'file 1\n');
  writeFileSync(victim, 'fiXe 1\n'); // same size: only its tar-split CRC-64 tells
  const r = await fetch(`${srv.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`, { headers: { Range: `bytes=${fileAt}-${fileAt + 3}` } });
  assert.equal(r.status, 500);
  const err = (await r.json()) as { errors: { message: string }[] };
  assert.ok(err.errors[0].message.includes(layer.id) && err.errors[0].message.includes('f1.txt'), err.errors[0].message);
  assert.ok(srv.logs.some((l) => l.includes('did not verify') && l.includes(layer.id)), 'log names the layer');
});

test('images pulled and removed by podman while csreg runs are served and gone without a restart', async () => {
  const s = emptyStore();
  execFileSync('skopeo', ['copy', '-q', csRef(fx.stores.overlay, 'localhost/csreg/base:1'), csRef(s, 'localhost/fresh/one:1')]);
  const srv = await serve(s);
  assert.equal((await fetch(`${srv.url}/v2/localhost/fresh/two/manifests/1`)).status, 404);
  await run('skopeo', ['copy', '-q', csRef(fx.stores.overlay, 'localhost/csreg/derived:1'), csRef(s, 'localhost/fresh/two:1')]);
  const r = await fetch(`${srv.url}/v2/localhost/fresh/two/manifests/1`);
  assert.equal(r.status, 200);
  await r.arrayBuffer();
  await run('podman', [...storeArgs(s), 'rmi', 'localhost/fresh/two:1']);
  assert.equal((await fetch(`${srv.url}/v2/localhost/fresh/two/manifests/1`)).status, 404);
  assert.equal((await fetch(`${srv.url}/v2/localhost/fresh/one/manifests/1`)).status, 200);
});

test('wire gzip: layers compressed in transit still verify, for skopeo and for plain HTTP', async () => {
  const srv = await serve(fx.stores.overlay, 'on');
  const snap = await srv.store.snapshot();
  const layer = snap.layerChain(snap.image('localhost/csreg/base:1')!.topLayer).layers[0];
  const raw = await new Promise<{ encoding?: string; body: Buffer }>((resolve, reject) => {
    // node:http does not decompress: this sees the wire
    import('node:http').then(({ get }) => get(`${srv.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`, { headers: { 'Accept-Encoding': 'gzip' } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c)).on('end', () => resolve({ encoding: res.headers['content-encoding'], body: Buffer.concat(parts) })).on('error', reject);
    }).on('error', reject), reject);
  });
  assert.equal(raw.encoding, 'gzip');
  assert.equal(sha(gunzipSync(raw.body)), layer.diffDigest);
  const plain = await fetch(`${srv.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`, { headers: { 'Accept-Encoding': 'identity' } });
  assert.equal(plain.headers.get('content-encoding'), null);
  assert.equal(sha(Buffer.from(await plain.arrayBuffer())), layer.diffDigest);
  const d = tmp('csreg-wire-');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${srv.host}/localhost/csreg/derived:1`, `dir:${d}`]);
  assert.ok(readFileSync(join(d, 'manifest.json')).length > 0);
  // auto: loopback clients get the raw tar
  const auto = await serve(fx.stores.overlay, 'auto');
  const r = await fetch(`${auto.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`, { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(r.headers.get('content-encoding'), null);
  await r.arrayBuffer();
});

test('a blob is served only in the repositories whose images use it, as distribution links blobs per repository', async () => {
  const srv = await server('overlay');
  const snap = await srv.store.snapshot();
  const tiny = snap.image('localhost/csreg/tiny:1')!;
  const layer = snap.layerChain(tiny.topLayer).layers[0];
  const own = await fetch(`${srv.url}/v2/localhost/csreg/tiny/blobs/${layer.diffDigest}`);
  assert.equal(own.status, 200);
  assert.equal(sha(Buffer.from(await own.arrayBuffer())), layer.diffDigest);
  const other = await fetch(`${srv.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`);
  assert.equal(other.status, 404);
  assert.equal(((await other.json()) as { errors: { code: string }[] }).errors[0].code, 'BLOB_UNKNOWN');
});

/** A Prometheus text exposition, parsed: each sample line `name{labels} value` (checked to be one). */
function samples(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*)\})? (-?[0-9.e+]+|\+Inf)$/.exec(l);
    assert.ok(m, `an exposition line: ${l}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    return { name: m[1], labels, value: Number(m[3]) };
  });
}

test('Prometheus metrics on their own address (csreg serve --config with http.debug, as distribution): a skopeo pull counted by route, method and status, durations, bytes, the store\'s size', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-metrics-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const conf = join(dir, 'csreg.yml');
  writeFileSync(conf, 'http:\n  debug:\n    addr: 127.0.0.1:0\n    prometheus:\n      enabled: true\n      path: /prom\n');
  const c = await startServe(process.execPath, [join(repoRoot(), 'dist/src/cli/main.js'), ...storeArgs(fx.stores.overlay), 'serve', '--addr', '127.0.0.1:0', '--config', conf, '--state-dir', join(dir, 'state')]);
  t.after(() => c.proc.kill('SIGKILL'));
  const metricsUrl = /metrics at (http:\/\/\S+)/.exec(c.output())?.[1];
  assert.ok(metricsUrl?.endsWith('/prom'), c.output());
  assert.equal((await fetch(`${c.url}/prom`)).status, 404, 'not on the registry\'s address');

  const snap = await Store.open(fx.stores.overlay).snapshot();
  const { repo, tag } = repoTag('localhost/csreg/derived:1');
  await execAsync('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${c.host}/${repo}:${tag}`, `dir:${join(dir, 'pulled')}`]);
  const m = JSON.parse(readFileSync(join(dir, 'pulled', 'manifest.json'), 'utf8')) as { config: { size: number }; layers: { size: number }[] };
  assert.equal((await fetch(`${c.url}/v2/${repo}/manifests/no-such-tag`)).status, 404);
  await fetch(`${c.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' }); // (refused: push is off; still an upload request)

  const text = await (await fetch(metricsUrl!)).text();
  const all = samples(text);
  const value = (name: string, labels: Record<string, string>) => all.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0);
  assert.ok(value('csreg_http_requests_total', { route: 'manifest', method: 'GET', code: '200' }) >= 1);
  assert.ok(value('csreg_http_requests_total', { route: 'blob', method: 'GET', code: '200' }) >= 1 + m.layers.length);
  assert.equal(value('csreg_http_requests_total', { route: 'manifest', method: 'GET', code: '404' }), 1);
  assert.equal(value('csreg_http_requests_total', { route: 'blob_upload', method: 'POST' }), 1);
  assert.ok(value('csreg_http_response_bytes_total', { route: 'blob', method: 'GET' }) >= m.config.size + m.layers.reduce((a, l) => a + l.size, 0), 'every blob byte sent is counted');
  // each histogram: cumulative buckets, +Inf = count = the requests counted for its route and method
  for (const h of all.filter((x) => x.name === 'csreg_http_request_duration_seconds_count')) {
    const { route, method } = h.labels;
    const buckets = all.filter((x) => x.name === 'csreg_http_request_duration_seconds_bucket' && x.labels.route === route && x.labels.method === method);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, `${route} ${method} buckets cumulative`);
    assert.equal(buckets.at(-1)!.labels.le, '+Inf');
    assert.equal(buckets.at(-1)!.value, h.value);
    assert.equal(value('csreg_http_requests_total', { route, method }), h.value, `${route} ${method}: count = requests`);
  }
  assert.equal(value('csreg_store_images', {}), snap.images.length);
  assert.equal(value('csreg_store_layers', {}), snap.layers.length);
  assert.ok(value('process_resident_memory_bytes', {}) > 0 && value('process_cpu_seconds_total', {}) > 0);
  assert.match(text, /^# TYPE csreg_http_request_duration_seconds histogram$/m);
});
