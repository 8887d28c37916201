// Pushes under faults and contention, with csreg as its own process (as users run it): a
// SIGKILL mid-blob or mid-commit leaves a store podman uses, and a retried push succeeds;
// podman pulling and removing images in the same store while csreg accepts pushes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { readFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildahRun, loadFixtures, storeArgs, run, sha, repoRoot, freshStore, removeStore, startFixtureRegistries, startServe, type FixtureStore, type ServeProcess } from './fixtures.js';

const fx = loadFixtures();
const main = join(repoRoot(), 'dist', 'src', 'cli', 'main.js');
const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups.reverse()) c();
});
const registries = startFixtureRegistries();
cleanups.push(() => void registries.then((rs) => rs.forEach((r) => r.kill())));

type Csreg = ServeProcess;

/** `csreg serve --allow-push` on a store, as a child process; resolves once it listens. */
async function startCsreg(s: FixtureStore, state: string): Promise<Csreg> {
  const c = await startServe(process.execPath, [main, ...storeArgs(s), 'serve', '--addr', '127.0.0.1:0', '--state-dir', state, '--allow-push']);
  cleanups.push(() => c.proc.kill('SIGKILL'));
  return c;
}

async function kill(c: Csreg): Promise<void> {
  c.proc.kill('SIGKILL');
  await c.exited;
}

function store(): FixtureStore & { dir: string } {
  const s = freshStore('overlay');
  cleanups.push(() => removeStore(s));
  return s;
}

/** Poll until cond() holds (every few ms, at most `ms`). */
async function until(cond: () => boolean, ms: number, every = 5): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, every))) if (cond()) return true;
  return cond();
}

const layersJson = (s: FixtureStore) => join(s.root, 'overlay-layers', 'layers.json');
function layerRecords(s: FixtureStore): { id: string; flags?: { incomplete?: boolean } }[] {
  try {
    return JSON.parse(readFileSync(layersJson(s), 'utf8')) ?? [];
  } catch {
    return [];
  }
}

const skopeoPush = (from: string, to: string, digestFile?: string) =>
  run('skopeo', ['copy', '-q', '--src-tls-verify=false', '--dest-tls-verify=false', ...(digestFile ? ['--digestfile', digestFile] : []), `docker://${from}`, `docker://${to}`]);

/** An image is intact when skopeo, reading it from the store, finds each layer's digest equal to the config's DiffID. */
async function assertIntact(s: FixtureStore & { dir: string }, name: string): Promise<void> {
  const out = join(s.dir, `check-${sha(Buffer.from(name)).slice(7, 19)}`);
  await run('skopeo', ['copy', '-q', `containers-storage:[overlay@${s.root}+${s.runroot}]${name}`, `dir:${out}`]);
  const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  const config = JSON.parse(readFileSync(join(out, m.config.digest.slice(7)), 'utf8')) as { rootfs: { diff_ids: string[] } };
  const got = m.layers.map((l) => sha(readFileSync(join(out, l.digest.slice(7)))));
  assert.deepEqual(got, config.rootfs.diff_ids, `${name}: every layer's content matches its DiffID`);
  await run('rm', ['-rf', out]);
}

test('a push killed mid-blob leaves a usable store; staging is cleaned at restart and the retried push succeeds', async () => {
  await registries;
  const s = store();
  const state = join(s.dir, 'state');
  let c = await startCsreg(s, state);
  const post = await fetch(`${c.url}/v2/faults/blob/blobs/uploads/`, { method: 'POST' });
  assert.equal(post.status, 202);
  // a chunk whose body never ends
  const req = request(c.url + post.headers.get('location'), { method: 'PATCH', headers: { 'Content-Type': 'application/octet-stream' } });
  req.on('error', () => undefined);
  req.write(Buffer.alloc(1 << 20, 7));
  const tmp = join(state, 'blobs', 'tmp');
  const staged = () => existsSync(tmp) && readdirSync(tmp).some((f) => statSync(join(tmp, f)).size > 0);
  assert.ok(await until(staged, 10_000), 'the upload is being staged');
  await kill(c);
  req.destroy();
  c = await startCsreg(s, state);
  assert.deepEqual(existsSync(tmp) ? readdirSync(tmp) : [], [], 'staging is cleaned at start');
  await run('podman', [...storeArgs(s), 'images']);
  const digestFile = join(s.dir, 'digest');
  await skopeoPush(`${fx.registry.addr}/csreg/base:v2s2`, `${c.host}/faults/blob:1`, digestFile);
  assert.match(await run('podman', [...storeArgs(s), 'image', 'inspect', '--format', '{{.Id}}', 'localhost/faults/blob:1']), /^[0-9a-f]{64}$/);
  await assertIntact(s, 'localhost/faults/blob:1');
  await kill(c);
});

test('csreg killed mid-commit leaves a store podman lists and uses; the retried push succeeds', async () => {
  await registries;
  const s = store();
  const state = join(s.dir, 'state');
  let c = await startCsreg(s, state);
  const push = skopeoPush(`${fx.registry.addr}/csreg/base:oci`, `${c.host}/faults/commit:1`).then(() => 'pushed', (e: Error) => e.message);
  // a layer record flagged incomplete: csreg is extracting the layer under layers.lock
  const extracting = await until(() => layerRecords(s).some((l) => l.flags?.incomplete), 120_000, 2);
  await kill(c);
  assert.ok(extracting, 'csreg was killed while a layer was being extracted');
  assert.notEqual(await push, 'pushed', 'the push failed with csreg');
  // podman reads the store without error (and, as c/storage does, drops the incomplete layer)
  await run('podman', [...storeArgs(s), 'images']);
  assert.ok(!layerRecords(s).some((l) => l.flags?.incomplete), 'no incomplete layer is left');
  c = await startCsreg(s, state);
  const digestFile = join(s.dir, 'digest');
  await skopeoPush(`${fx.registry.addr}/csreg/base:oci`, `${c.host}/faults/commit:1`, digestFile);
  await assertIntact(s, 'localhost/faults/commit:1');
  const ctr = await run('buildah', [...storeArgs(s), 'from', '-q', 'localhost/faults/commit:1']);
  assert.equal(await buildahRun(s, ctr, ['cat', '/etc/motd']), 'hello');
  await run('buildah', [...storeArgs(s), 'rm', ctr]);
  // and csreg serves exactly what was pushed
  const pulled = join(s.dir, 'pulled');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${c.host}/faults/commit@${readFileSync(digestFile, 'utf8').trim()}`, `dir:${pulled}`]);
  await kill(c);
  // `csreg cache` accounts for the pushed gzip layers it keeps, each referenced by the manifest
  const m = JSON.parse(readFileSync(join(pulled, 'manifest.json'), 'utf8')) as { layers: { digest: string; size: number }[] };
  const cache = JSON.parse(await run(process.execPath, [main, ...storeArgs(s), 'cache', '--state-dir', state, '--json'])) as { bytes: number; items: { digest: string; referenced: boolean }[] };
  for (const l of m.layers) assert.ok(cache.items.some((b) => b.digest === l.digest && b.referenced), `cache lists ${l.digest} as referenced`);
  assert.ok(cache.bytes >= m.layers.reduce((n, l) => n + l.size, 0));
});

test('podman pulls and removes images while csreg accepts pushes into the same store: no errors, everything intact', async () => {
  await registries;
  const s = store();
  const state = join(s.dir, 'state');
  const c = await startCsreg(s, state);
  const rounds = 3;
  const upstream = `${fx.registry.addr}/csreg/base:v2s2`;
  const podman = async () => {
    for (let i = 0; i < rounds; i++) {
      await run('podman', [...storeArgs(s), 'pull', '-q', '--tls-verify=false', upstream]);
      await run('podman', [...storeArgs(s), 'rmi', upstream]);
    }
    await run('podman', [...storeArgs(s), 'pull', '-q', '--tls-verify=false', upstream]);
  };
  const digests: string[] = [];
  const pushes = async () => {
    // derived shares base's layers: the same layer IDs podman creates and deletes meanwhile.
    // (Not base itself: one image ID for both sides would meet podman's own race, where an
    // `rmi` decides from names read before another process adds one, then deletes the ID.)
    for (let i = 1; i <= rounds; i++) {
      const digestFile = join(s.dir, `digest-${i}`);
      await skopeoPush(`${fx.registry.addr}/csreg/derived:${i % 2 ? 'oci' : 'v2s2'}`, `${c.host}/contend/img:${i}`, digestFile);
      digests.push(readFileSync(digestFile, 'utf8').trim());
    }
  };
  await Promise.all([podman(), pushes()]);
  const names = (JSON.parse(await run('podman', [...storeArgs(s), 'images', '--format', 'json'])) as { Names?: string[] }[]).flatMap((i) => i.Names ?? []);
  assert.ok(names.includes(upstream), 'podman’s last pull is there');
  await assertIntact(s, upstream);
  for (let i = 1; i <= rounds; i++) {
    assert.ok(names.includes(`localhost/contend/img:${i}`), `push ${i} is listed by podman`);
    await assertIntact(s, `localhost/contend/img:${i}`);
    await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${c.host}/contend/img@${digests[i - 1]}`, `dir:${join(s.dir, `pull-${i}`)}`]);
  }
  await kill(c);
});

test('SIGKILL during 20 parallel pulls and pushes: the store stays whole, staging is cleaned, the pushes succeed on retry', async () => {
  await registries;
  const s = store();
  const state = join(s.dir, 'state');
  let c = await startCsreg(s, state);
  await skopeoPush(`${fx.registry.addr}/csreg/base:v2s2`, `${c.host}/storm/seed:1`);
  const sources = fx.pushed.filter((p) => p.format !== 'list').map((p) => p.ref);
  const jobs: Promise<string>[] = [];
  for (let i = 0; i < 10; i++) {
    jobs.push(skopeoPush(sources[i % sources.length], `${c.host}/storm/img:${i}`).then(() => 'ok', () => 'failed'));
    jobs.push(run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${c.host}/storm/seed:1`, `dir:${join(s.dir, `pull-${i}`)}`]).then(() => 'ok', () => 'failed'));
  }
  // kill once a commit is extracting or after a moment, whichever comes first
  await until(() => layerRecords(s).some((l) => l.flags?.incomplete), 3000, 5);
  await kill(c);
  const outcomes = await Promise.all(jobs);
  assert.ok(outcomes.includes('failed'), 'the kill interrupted transfers');
  await run('podman', [...storeArgs(s), 'images']);
  c = await startCsreg(s, state);
  const tmp = join(state, 'blobs', 'tmp');
  assert.deepEqual(existsSync(tmp) ? readdirSync(tmp) : [], [], 'staging is cleaned at start');
  assert.ok(!layerRecords(s).some((l) => l.flags?.incomplete), 'no incomplete layer is left');
  for (let i = 0; i < 10; i++) await skopeoPush(sources[i % sources.length], `${c.host}/storm/img:${i}`);
  const names = (JSON.parse(await run('podman', [...storeArgs(s), 'images', '--format', 'json'])) as { Names?: string[] }[]).flatMap((x) => x.Names ?? []);
  for (let i = 0; i < 10; i++) {
    assert.ok(names.includes(`localhost/storm/img:${i}`), `push ${i} is listed`);
    await assertIntact(s, `localhost/storm/img:${i}`);
  }
  await kill(c);
});
