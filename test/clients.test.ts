// Clients other than the containers tools: containerd (ctr) and Docker (dockerd 20.10, its own
// puller and pusher) pull from csreg and push into it. Each daemon runs as root in a temporary
// directory of its own (its socket, state and images there), dockerd on that containerd.
// Both treat a registry on 127.0.0.1 as plain HTTP (ctr with --plain-http).
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import { Store } from '../src/storage/store.js';
import { startRegistry, type RegistryOptions, type RunningRegistry } from '../src/registry/server.js';
import { createLogger } from '../src/log.js';
import { loadFixtures, run, sha, storeArgs, type FixtureStore } from './fixtures.js';

const fx = loadFixtures();
const work = mkdtempSync(join(tmpdir(), 'csreg-clients-'));
const CTR_SOCK = join(work, 'containerd.sock');
const DOCKER_SOCK = join(work, 'docker.sock');
const daemons: ChildProcess[] = [];
const registries: RunningRegistry[] = [];
/** a daemon that stops answering fails the test instead of holding the run */
const LIMIT = { timeout: 180_000 };
/** why a daemon could not run here (its tests then skip, saying so) */
const cannot: { containerd?: string; docker?: string } = {};

const ctr = (...args: string[]) => run('ctr', ['--address', CTR_SOCK, ...args]);
// Debian's client, not whatever else is first on PATH; no credential helpers from the machine
const DOCKER_ENV = { ...process.env, DOCKER_CONFIG: join(work, 'docker-config') };
const docker = (...args: string[]) => run('/usr/bin/docker', ['-H', `unix://${DOCKER_SOCK}`, ...args], DOCKER_ENV);
/** The digests Docker recorded for an image in one repository (an image pulled from several has one per repository). */
const repoDigests = async (ref: string, repo: string) =>
  (JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', ref)) as string[]).filter((d) => d.startsWith(repo + '@'));
/** A file of a (created, never started) container, as `docker cp` gives it. */
const dockerCat = (box: string, path: string) => run('sh', ['-c', `/usr/bin/docker -H unix://${DOCKER_SOCK} cp ${box}:${path} - | tar -xO`], DOCKER_ENV);

/** Start a daemon and wait (up to 30 s) until `ready` succeeds; the reason it cannot run, if so. */
async function startDaemon(name: string, cmd: string, args: string[], ready: () => Promise<unknown>): Promise<string | undefined> {
  if (!existsSync(cmd)) return `${cmd} is not installed (scripts/setup.sh installs it)`;
  const logFile = join(work, `${name}.log`);
  const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines: Buffer[] = [];
  p.stderr!.on('data', (c: Buffer) => lines.push(c));
  daemons.push(p);
  let exited = false;
  p.on('exit', () => (exited = true));
  for (let i = 0; i < 300 && !exited; i++) {
    try {
      await ready();
      return undefined;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  writeFileSync(logFile, Buffer.concat(lines));
  return `${name} did not start${exited ? ` (exit ${p.exitCode})` : ''}; last log: ${Buffer.concat(lines).toString().trim().split('\n').slice(-3).join(' | ')}`;
}

before(async () => {
  writeFileSync(join(work, 'containerd.toml'), [
    'version = 2',
    `root = "${work}/containerd-root"`,
    `state = "${work}/containerd-state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = "${CTR_SOCK}"`,
  ].join('\n') + '\n');
  cannot.containerd = await startDaemon('containerd', '/usr/bin/containerd', ['--config', join(work, 'containerd.toml')], () => ctr('version'));
  if (cannot.containerd) {
    cannot.docker = 'needs the containerd above';
    return;
  }
  cannot.docker = await startDaemon('dockerd', '/usr/sbin/dockerd', [
    '--data-root', join(work, 'docker-root'), '--exec-root', join(work, 'docker-exec'), '--pidfile', join(work, 'docker.pid'),
    '-H', `unix://${DOCKER_SOCK}`, '--containerd', CTR_SOCK,
    // no networks or iptables rules (nothing runs); vfs works on any file system
    '--iptables=false', '--ip6tables=false', '--bridge=none', '--storage-driver=vfs',
  ], () => docker('version'));
});

after(async () => {
  for (const r of registries) await r.close(100);
  for (const p of [...daemons].reverse()) {
    if (p.exitCode !== null) continue;
    p.kill('SIGTERM');
    await new Promise((r) => { p.once('exit', r); setTimeout(r, 10_000); });
  }
  // dockerd and containerd may leave mounts below their directories
  const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(work + '/'));
  for (const m of mounts.sort().reverse()) await run('umount', ['-l', m]).catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});

function skipUnless(t: TestContext, daemon: keyof typeof cannot): boolean {
  const why = cannot[daemon];
  if (why) {
    t.skip(`${daemon} cannot run here: ${why}`);
  }
  return !why;
}

async function serve(s: FixtureStore, opts: Partial<RegistryOptions> = {}): Promise<string> {
  const out = new Writable({ write(_c, _e, cb) { cb(); } });
  const reg = await startRegistry({ store: Store.open(s), log: createLogger({ out }), addr: '127.0.0.1:0', ...opts });
  registries.push(reg);
  return reg.url.slice('http://'.length);
}

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** The manifest csreg answers for repo:ref, its digest computed from its bytes. */
async function manifest(host: string, repo: string, ref: string, headers: Record<string, string> = {}): Promise<{ digest: string; json: { config: { digest: string }; layers: { digest: string; mediaType: string }[] } }> {
  const r = await fetch(`http://${host}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT, ...headers } });
  assert.equal(r.status, 200, `${repo}:${ref}`);
  const body = Buffer.from(await r.arrayBuffer());
  return { digest: sha(body), json: JSON.parse(body.toString()) };
}

/** A blob as containerd keeps it (its bytes, for hashing here). */
function contentGet(digest: string): Promise<Buffer> {
  return new Promise((ok, fail) => {
    const p = spawn('ctr', ['--address', CTR_SOCK, 'content', 'get', digest], { stdio: ['ignore', 'pipe', 'inherit'] });
    const parts: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => parts.push(c));
    p.on('error', fail);
    p.on('close', (code) => (code === 0 ? ok(Buffer.concat(parts)) : fail(new Error(`ctr content get ${digest}: exit ${code}`))));
  });
}

/** containerd's name for the snapshot of a stack of layers: the chain ID of their diff IDs. */
function chainId(diffIds: string[]): string {
  return diffIds.reduce((chain, d) => (chain ? 'sha256:' + createHash('sha256').update(`${chain} ${d}`).digest('hex') : d), '');
}

/** The image's layer diff IDs as podman (the Go library) reads them from the store. */
async function podmanDiffIds(s: FixtureStore, name: string): Promise<string[]> {
  return JSON.parse(await run('podman', [...storeArgs(s), 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', name])) as string[];
}

/** The manifest digests the fixture registry had for an image name's tags (what podman pulled). */
function originalDigests(path: string): string[] {
  return fx.pushed.filter((p) => p.ref.split('/').slice(1).join('/').replace(/:[^:]*$/, '') === path).map((p) => p.manifestDigest);
}

test('containerd pulls tar and gzip layers, by tag and by digest, a whole multi-platform index, and original digests; each layer unpacked against its diff ID', LIMIT, async (t) => {
  if (!skipUnless(t, 'containerd')) return;
  const tars = await serve(fx.stores.overlay);
  const gzips = await serve(fx.stores.overlay, { synthesize: 'gzip', stateDir: join(work, 'state-gzip') });
  const diffIds = await podmanDiffIds(fx.stores.overlay, 'localhost/csreg/derived:1');
  for (const host of [tars, gzips]) {
    const m = await manifest(host, 'csreg/derived', '1');
    const ref = `${host}/csreg/derived:1`;
    // the native snapshotter unpacks each layer and checks its uncompressed digest against the config's diff IDs
    await ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', ref);
    const listed = await ctr('images', 'ls');
    assert.ok(listed.split('\n').some((l) => l.startsWith(ref + ' ') && l.includes(m.digest)), `${ref} as ${m.digest}:\n${listed}`);
    assert.equal(m.json.layers.length, diffIds.length);
    assert.ok(m.json.layers.every((l) => l.mediaType.endsWith(host === gzips ? '.tar+gzip' : '.tar')), JSON.stringify(m.json.layers));
    // every blob containerd kept, hashed here
    for (const d of [m.json.config.digest, ...m.json.layers.map((l) => l.digest)]) {
      assert.equal(sha(await contentGet(d)), d);
    }
    const snapshots = await ctr('snapshots', '--snapshotter', 'native', 'ls');
    assert.ok(snapshots.includes(chainId(diffIds)), `no snapshot ${chainId(diffIds)} (the chain of podman's diff IDs):\n${snapshots}`);
  }

  // by digest
  const base = await manifest(tars, 'csreg/base', '1');
  await ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', `${tars}/csreg/base@${base.digest}`);

  // an index whose every platform is in the store: all of them
  const index = await manifest(tars, 'csreg/multi', '1');
  await ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', '--all-platforms', `${tars}/csreg/multi:1`);
  const children = (index.json as unknown as { manifests: { digest: string }[] }).manifests;
  assert.equal(children.length, 2);
  for (const c of children) assert.equal(sha(await contentGet(c.digest)), c.digest);

  // a store of pulled images: the registry's own manifest and gzip blobs, reproduced bit for bit
  const pulled = await serve(fx.stores.pulled, { stateDir: join(work, 'state-pulled'), servedCacheMaxBytes: 1 << 30 });
  const derived = await manifest(pulled, '127.0.0.1_5701/csreg/derived', 'oci');
  assert.ok(originalDigests('csreg/derived').includes(derived.digest), `${derived.digest} is not one the registry had`);
  await ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', `${pulled}/127.0.0.1_5701/csreg/derived:oci`);
  assert.match(await ctr('images', 'ls'), new RegExp(`${pulled}/127.0.0.1_5701/csreg/derived:oci .*${derived.digest}`));
});

test('Docker pulls by tag and by digest with whiteouts applied, and original digests of pulled images', LIMIT, async (t) => {
  if (!skipUnless(t, 'docker')) return;
  const host = await serve(fx.stores.overlay);
  const ref = `${host}/csreg/derived:1`;
  const m = await manifest(host, 'csreg/derived', '1');
  await docker('pull', ref);
  // Docker computes the diff IDs as it extracts each layer: they must be the store's
  assert.deepEqual(JSON.parse(await docker('image', 'inspect', '--format', '{{json .RootFS.Layers}}', ref)), await podmanDiffIds(fx.stores.overlay, 'localhost/csreg/derived:1'));
  assert.deepEqual(await repoDigests(ref, `${host}/csreg/derived`), [`${host}/csreg/derived@${m.digest}`]);

  // the files as Docker's layers made them: a file of the last layer, a file and a directory deleted by whiteouts
  const box = await docker('create', ref, '/bin/true');
  try {
    assert.equal(await dockerCat(box, '/etc/derived'), 'derived');
    for (const gone of ['/data/gone-file', '/data/gone-dir', '/data/opaque/old', '/data/small/f1.txt']) {
      await assert.rejects(docker('cp', `${box}:${gone}`, join(work, 'out')), /No such container:path|Could not find the file/, gone);
    }
    assert.equal(await dockerCat(box, '/data/opaque/new'), 'new');
  } finally {
    await docker('rm', box);
  }

  // by digest
  const base = await manifest(host, 'csreg/base', '1');
  await docker('pull', `${host}/csreg/base@${base.digest}`);

  // a store of pulled images: the registry's own digests
  const pulled = await serve(fx.stores.pulled, { stateDir: join(work, 'state-docker-pulled'), servedCacheMaxBytes: 1 << 30 });
  await docker('pull', `${pulled}/127.0.0.1_5701/csreg/derived:v2s2`);
  const digests = await repoDigests(`${pulled}/127.0.0.1_5701/csreg/derived:v2s2`, `${pulled}/127.0.0.1_5701/csreg/derived`);
  assert.equal(digests.length, 1);
  assert.ok(originalDigests('csreg/derived').includes(digests[0].split('@')[1]), `${digests[0]} is not a digest the registry had`);
});

test('Docker pushes into csreg: the image is in podman images with the same layers, and pulls back by the pushed digest', LIMIT, async (t) => {
  if (!skipUnless(t, 'docker')) return;
  const from = await serve(fx.stores.overlay);
  await docker('pull', `${from}/csreg/derived:1`);
  const dir = join(work, 'pushed');
  const s: FixtureStore = { root: join(dir, 'root'), runroot: join(dir, 'run'), driver: 'overlay' };
  await run('mkdir', ['-p', s.root]);
  const host = await serve(s, { push: true, stateDir: join(dir, 'state') });
  const ref = `${host}/fromdocker/derived:1`;
  await docker('tag', `${from}/csreg/derived:1`, ref);
  const out = await docker('push', ref);
  const pushed = /digest: (sha256:[a-f0-9]{64})/.exec(out)?.[1];
  assert.ok(pushed, out);
  try {
    // podman, on the store csreg wrote: the name, and the layers Docker had
    assert.match(await run('podman', [...storeArgs(s), 'images', '--format', '{{.Repository}}:{{.Tag}}']), /^localhost\/fromdocker\/derived:1$/m);
    assert.deepEqual(await podmanDiffIds(s, 'localhost/fromdocker/derived:1'), JSON.parse(await docker('image', 'inspect', '--format', '{{json .RootFS.Layers}}', ref)));
    assert.equal((await manifest(host, 'fromdocker/derived', '1')).digest, pushed);

    await docker('rmi', ref);
    await docker('pull', `${host}/fromdocker/derived@${pushed}`);
    assert.deepEqual(await repoDigests(`${host}/fromdocker/derived@${pushed}`, `${host}/fromdocker/derived`), [`${host}/fromdocker/derived@${pushed}`]);
  } finally {
    await run('umount', ['-l', join(s.root, 'overlay')]).catch(() => undefined);
  }
});

test('with htpasswd logins: Docker logs in and pulls, containerd pulls with --user; neither pulls without credentials', LIMIT, async (t) => {
  if (!skipUnless(t, 'docker')) return;
  const htpasswd = join(work, 'htpasswd');
  await run('htpasswd', ['-Bbc', htpasswd, 'alice', 's3cret']);
  const host = await serve(fx.stores.overlay, { auth: { htpasswd: { realm: 'csreg clients', path: htpasswd } } });
  const ref = `${host}/csreg/base:1`;
  await assert.rejects(ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', ref), /401|unauthorized|authorization/i);
  await assert.rejects(docker('pull', ref), /unauthorized|no basic auth credentials|authentication required/i);
  await run('sh', ['-c', `printf s3cret | /usr/bin/docker -H unix://${DOCKER_SOCK} login -u alice --password-stdin ${host}`], DOCKER_ENV);
  await docker('pull', ref);
  const m = await manifest(host, 'csreg/base', '1', { authorization: 'Basic ' + Buffer.from('alice:s3cret').toString('base64') });
  assert.deepEqual(await repoDigests(ref, `${host}/csreg/base`), [`${host}/csreg/base@${m.digest}`]);
  await ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', '--user', 'alice:s3cret', ref);
  assert.match(await ctr('images', 'ls'), new RegExp(`${ref} .*${m.digest}`));
});
