// Image signatures through csreg: the simple-signing signatures a store keeps (here made by
// skopeo --sign-by with a GPG key made for the test) are served by the signature API extension
// containers/image uses, and pulls by skopeo and podman verify them under a policy that
// requires them; signed pushes land in the store where the Go tools read them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Store } from '../src/storage/store.js';
import { startRegistry, type RunningRegistry } from '../src/registry/server.js';
import { createLogger } from '../src/log.js';
import { csRef, exportImage, freshStore, loadFixtures, removeStore, run, storeArgs } from './fixtures.js';

const fx = loadFixtures();
const work = mkdtempSync(join(tmpdir(), 'csreg-sig-'));
const env = { ...process.env, GNUPGHOME: join(work, 'gnupg') };
/** an empty registries.d: no lookaside, so signatures go through the registry alone */
const regd = join(work, 'registries.d');
const pubKey = join(work, 'key.gpg');
const signedStore = freshStore('overlay');
const pushStore = freshStore('overlay');
const podmanStore = freshStore('overlay');
const log = createLogger({ out: new Writable({ write(_c, _e, cb) { cb(); } }) });
let fpr: string;
let reg: RunningRegistry;
let pushReg: RunningRegistry;
const hostOf = (r: RunningRegistry) => r.url.slice('http://'.length);
const open = async (s: { root: string; runroot: string; driver: string }) => Store.open(s).snapshot();
const skopeo = (args: string[]) => run('skopeo', ['--registries.d', regd, ...args], env);

/** A policy requiring a signature by the test key for the registry's images (identity remapped: signed as localhost/...). */
function policy(host: string, remap: boolean): string {
  const file = join(work, `policy-${host.replace(/\W/g, '_')}-${remap}.json`);
  const identity = remap ? { signedIdentity: { type: 'remapIdentity', prefix: host, signedPrefix: 'localhost' } } : {};
  writeFileSync(file, JSON.stringify({
    default: [{ type: 'reject' }],
    transports: {
      docker: { [host]: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: pubKey, ...identity }] },
      dir: { '': [{ type: 'insecureAcceptAnything' }] },
      'containers-storage': { '': [{ type: 'insecureAcceptAnything' }] },
    },
  }));
  return file;
}

/** The signatures a dir: copy holds (signature-1, -2, ...). */
const dirSignatures = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('signature-')).sort().map((f) => readFileSync(join(dir, f)));

before(async () => {
  mkdirSync(env.GNUPGHOME, { mode: 0o700 });
  mkdirSync(regd);
  await run('gpg', ['--batch', '--passphrase', '', '--quick-gen-key', 'csreg test <csreg-test@example.invalid>', 'default', 'default', 'never'], env);
  fpr = (await run('gpg', ['--list-secret-keys', '--with-colons'], env)).split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9];
  writeFileSync(pubKey, await run('gpg', ['--export', '--armor', fpr], env));
  const overlay = fx.stores.overlay;
  await skopeo(['copy', '-q', '--sign-by', fpr, csRef(overlay, 'localhost/csreg/tiny:1'), csRef(signedStore, 'localhost/signed/tiny:1')]);
  await skopeo(['copy', '-q', csRef(overlay, 'localhost/csreg/derived:1'), csRef(signedStore, 'localhost/signed/plain:1')]);
  mkdirSync(pushStore.root, { recursive: true });
  reg = await startRegistry({ store: Store.open(signedStore), log, addr: '127.0.0.1:0', stateDir: join(work, 'state') });
  pushReg = await startRegistry({ store: Store.open(pushStore), log, addr: '127.0.0.1:0', stateDir: join(work, 'push-state'), push: true });
});

after(async () => {
  await reg?.close(100);
  await pushReg?.close(100);
  for (const s of [signedStore, pushStore, podmanStore]) removeStore(s);
  rmSync(work, { recursive: true, force: true });
});

test('skopeo and podman pull with the signatures the store keeps, verified by a policy that requires them; an unsigned image is refused', async () => {
  const host = hostOf(reg);
  assert.equal((await fetch(`${reg.url}/v2/`)).headers.get('x-registry-supports-signatures'), '1');
  const p = policy(host, true);
  // the Go tools' own reading of the store's signatures
  const fromStore = join(work, 'from-store');
  await skopeo(['copy', '-q', csRef(signedStore, 'localhost/signed/tiny:1'), `dir:${fromStore}`]);
  const stored = dirSignatures(fromStore);
  assert.equal(stored.length, 1);

  const pulled = join(work, 'pulled');
  await skopeo(['--policy', p, 'copy', '-q', '--src-tls-verify=false', `docker://${host}/signed/tiny:1`, `dir:${pulled}`]);
  assert.deepEqual(dirSignatures(pulled), stored);
  const digest = (await run('skopeo', ['manifest-digest', join(pulled, 'manifest.json')])).trim();
  const list = await (await fetch(`${reg.url}/extensions/v2/signed/tiny/signatures/${digest}`)).json() as { signatures: { schemaVersion: number; name: string; type: string; content: string }[] };
  assert.equal(list.signatures.length, 1);
  assert.equal(list.signatures[0].schemaVersion, 2);
  assert.equal(list.signatures[0].type, 'atomic');
  assert.ok(list.signatures[0].name.startsWith(digest + '@'), list.signatures[0].name);
  assert.deepEqual(Buffer.from(list.signatures[0].content, 'base64'), stored[0]);

  await assert.rejects(skopeo(['--policy', p, 'copy', '-q', '--src-tls-verify=false', `docker://${host}/signed/plain:1`, `dir:${join(work, 'plain')}`]),
    /A signature was required, but no signature exists/);
  // unknown manifests are 404, not an empty list
  const unknown = await fetch(`${reg.url}/extensions/v2/signed/tiny/signatures/sha256:${'0'.repeat(64)}`);
  assert.equal(unknown.status, 404);
  assert.equal(((await unknown.json()) as { errors: { code: string }[] }).errors[0].code, 'MANIFEST_UNKNOWN');
  assert.equal((await fetch(`${reg.url}/extensions/v2/signed/tiny/signatures/sha256:xyz`)).status, 400);

  // with --synthesize gzip a tag serves a compressed form of a manifest of uncompressed layers,
  // but not of a signed one: the signature covers that manifest only
  const gz = await startRegistry({ store: Store.open(signedStore), log, addr: '127.0.0.1:0', stateDir: join(work, 'state-gzip'), synthesize: 'gzip' });
  try {
    const tagDigest = async (repo: string) => (await fetch(`${gz.url}/v2/${repo}/manifests/1`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).headers.get('docker-content-digest');
    assert.equal(await tagDigest('signed/tiny'), digest);
    const plain = (await open(signedStore)).images.find((i) => i.names.includes('localhost/signed/plain:1'))!;
    assert.notEqual(await tagDigest('signed/plain'), plain.bigDataDigests.manifest, 'an unsigned image of tar layers is served compressed');
    const viaGzip = join(work, 'pulled-gzip');
    await skopeo(['--policy', policy(hostOf(gz), true), 'copy', '-q', '--src-tls-verify=false', `docker://${hostOf(gz)}/signed/tiny:1`, `dir:${viaGzip}`]);
    assert.deepEqual(dirSignatures(viaGzip), stored);
  } finally {
    await gz.close(100);
  }

  // podman verifies too, and keeps the signature in its own store
  await run('podman', [...storeArgs(podmanStore), 'pull', '-q', '--signature-policy', p, '--tls-verify=false', `${host}/signed/tiny:1`]);
  const inPodman = join(work, 'in-podman');
  await skopeo(['copy', '-q', csRef(podmanStore, `${host}/signed/tiny:1`), `dir:${inPodman}`]);
  assert.deepEqual(dirSignatures(inPodman), stored);
});

test('a store without signatures, served read-only, does not advertise the extension (no extra request per pull)', async () => {
  const plain = await startRegistry({ store: Store.open(fx.stores.vfs), log, addr: '127.0.0.1:0', stateDir: join(work, 'state-vfs') });
  try {
    const res = await fetch(`${plain.url}/v2/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-registry-supports-signatures'), null);
  } finally {
    await plain.close(100);
  }
});

test('signed pushes are kept where the Go tools read them, each signature once; bad signature uploads are refused and change nothing', async () => {
  const host = hostOf(pushReg);
  const img = exportImage(fx.stores.overlay, 'localhost/csreg/tiny-arm64:1');
  try {
    // (--preserve-digests: the manifest as it is, uncompressed layers, which a copy out of the store can then keep)
    await skopeo(['copy', '-q', '--preserve-digests', '--sign-by', fpr, '--dest-tls-verify=false', `dir:${img.dir}`, `docker://${host}/pushed/arm:1`]);
    const out = join(work, 'pushed-out');
    await skopeo(['copy', '-q', csRef(pushStore, 'localhost/pushed/arm:1'), `dir:${out}`]);
    const sigs = dirSignatures(out);
    assert.equal(sigs.length, 1);
    assert.match(await run('skopeo', ['standalone-verify', join(out, 'manifest.json'), `${host}/pushed/arm:1`, fpr, join(out, 'signature-1')], env), /Signature verified/);
    await skopeo(['--policy', policy(host, false), 'copy', '-q', '--src-tls-verify=false', `docker://${host}/pushed/arm:1`, `dir:${join(work, 'pushed-pull')}`]);

    const digest = (await run('skopeo', ['manifest-digest', join(out, 'manifest.json')])).trim();
    const images = join(pushStore.root, 'overlay-images', 'images.json');
    const before = readFileSync(images);
    const sig = sigs[0].toString('base64');
    const put = (repo: string, d: string, body: unknown) => fetch(`${pushReg.url}/extensions/v2/${repo}/signatures/${d}`, { method: 'PUT', body: typeof body === 'string' ? body : JSON.stringify(body) });
    const refused: [string, string, unknown, number, string][] = [
      ['pushed/arm', digest, '{"schemaVersion": 2, "name": ', 400, 'SIGNATURE_INVALID'],
      ['pushed/arm', digest, { schemaVersion: 1, name: `${digest}@x`, type: 'atomic', content: sig }, 400, 'SIGNATURE_INVALID'],
      ['pushed/arm', digest, { schemaVersion: 2, name: `sha256:${'1'.repeat(64)}@x`, type: 'atomic', content: sig }, 400, 'SIGNATURE_INVALID'],
      ['pushed/arm', digest, { schemaVersion: 2, name: `${digest}@x`, type: 'atomic', content: Buffer.from('\0sigstore-json\n{}').toString('base64') }, 400, 'SIGNATURE_INVALID'],
      ['pushed/arm', digest, { schemaVersion: 2, name: `${digest}@x`, type: 'atomic', content: 'not base64!' }, 400, 'SIGNATURE_INVALID'],
      ['pushed/arm', `sha256:${'2'.repeat(64)}`, { schemaVersion: 2, name: `sha256:${'2'.repeat(64)}@x`, type: 'atomic', content: sig }, 404, 'MANIFEST_UNKNOWN'],
      ['pushed/other', digest, { schemaVersion: 2, name: `${digest}@x`, type: 'atomic', content: sig }, 404, 'NAME_UNKNOWN'],
    ];
    for (const [repo, d, body, status, code] of refused) {
      const res = await put(repo, d, body);
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(((await res.json()) as { errors: { code: string }[] }).errors[0].code, code);
    }
    assert.deepEqual(readFileSync(images), before, 'images.json unchanged by refused uploads');
    // the same signature under another name is taken and adds nothing
    assert.equal((await put('pushed/arm', digest, { schemaVersion: 2, name: `${digest}@again`, type: 'atomic', content: sig })).status, 201);
    assert.deepEqual(readFileSync(images), before, 'images.json unchanged by a signature it has');
    // more signatures go after the first, where the Go tools find them all, also when sent at
    // once (other identities: signed in the same second, the same one would be the same bytes)
    const more: Buffer[] = [];
    for (let i = 0; i < 4; i++) {
      const file = join(work, `more-${i}.sig`);
      await run('skopeo', ['standalone-sign', '-o', file, join(out, 'manifest.json'), `${host}/pushed/arm:more-${i}`, fpr], env);
      more.push(readFileSync(file));
    }
    const statuses = await Promise.all(more.map(async (m, i) => (await put('pushed/arm', digest, { schemaVersion: 2, name: `${digest}@more-${i}`, type: 'atomic', content: m.toString('base64') })).status));
    assert.deepEqual(statuses, [201, 201, 201, 201]);
    const all = join(work, 'pushed-out-2');
    await skopeo(['copy', '-q', csRef(pushStore, 'localhost/pushed/arm:1'), `dir:${all}`]);
    const found = dirSignatures(all);
    assert.equal(found.length, 5);
    assert.deepEqual(found[0], sigs[0]);
    assert.deepEqual(new Set(found.slice(1).map((b) => b.toString('base64'))), new Set(more.map((b) => b.toString('base64'))));
    // csreg's view of the image counts them per manifest
    const view = JSON.parse(await run('node', ['dist/src/cli/main.js', ...storeArgs(pushStore), 'storage', 'image', 'localhost/pushed/arm:1', '--json'])) as { signatures: Record<string, number> };
    assert.deepEqual(view.signatures, { [digest]: 5 });
    // the store as skopeo signed it and as csreg added to it passes csreg's check
    for (const st of [signedStore, pushStore]) {
      const r = spawnSync('node', ['dist/src/cli/main.js', ...storeArgs(st), 'storage', 'check'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
    }
    // an image whose metadata containers/image could not read takes none (409), and stays as it was
    await run('node', ['dist/src/cli/main.js', ...storeArgs(pushStore), 'storage', 'set-metadata', '-m', 'not json', 'localhost/pushed/arm:1']);
    const unreadable = readFileSync(images);
    const bad = await put('pushed/arm', digest, { schemaVersion: 2, name: `${digest}@bad`, type: 'atomic', content: sig });
    assert.equal(bad.status, 409);
    assert.equal(((await bad.json()) as { errors: { code: string }[] }).errors[0].code, 'SIGNATURE_INVALID');
    assert.deepEqual(readFileSync(images), unreadable);
    // a registry that takes no pushes takes no signatures either
    const ro = await fetch(`${reg.url}/extensions/v2/signed/tiny/signatures/${digest}`, { method: 'PUT', body: '{}' });
    assert.equal(ro.status, 405);
  } finally {
    rmSync(img.dir, { recursive: true, force: true });
  }
});
