// TLS, authentication (htpasswd and tokens), access rules, limits and the audit log, against
// the real clients: skopeo and podman log in, push and pull; a tiny token service signs JWTs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, sign as cryptoSign, X509Certificate, type KeyObject } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Store } from '../src/storage/store.js';
import { DownloadSlots } from '../src/registry/limits.js';
import { startRegistry, type RegistryOptions, type RunningRegistry } from '../src/registry/server.js';
import { createLogger } from '../src/log.js';
import { loadFixtures, storeArgs, csRef, run, sha, freshStore, removeStore, type FixtureStore } from './fixtures.js';

const fx = loadFixtures();
const work = mkdtempSync(join(tmpdir(), 'csreg-auth-'));
const src = fx.stores.overlay;
const IMAGE = 'localhost/csreg/base:1';
const stores: (FixtureStore & { dir: string })[] = [];
const running: RunningRegistry[] = [];

interface Served { reg: RunningRegistry; host: string; logs: string[] }

async function serve(opts: Partial<Omit<RegistryOptions, 'store'>> & { store?: FixtureStore }): Promise<Served> {
  const logs: string[] = [];
  const out = new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } });
  const { store, ...rest } = opts;
  const reg = await startRegistry({ store: Store.open(store ?? src), log: createLogger({ out }), addr: '127.0.0.1:0', ...rest });
  running.push(reg);
  return { reg, host: reg.url.replace(/^https?:\/\//, ''), logs };
}

function pushStore(): FixtureStore & { dir: string } {
  const s = freshStore('overlay');
  mkdirSync(s.root, { recursive: true });
  stores.push(s);
  return s;
}

const basic = (u: string, p: string) => ({ Authorization: 'Basic ' + Buffer.from(`${u}:${p}`).toString('base64') });
const errCode = async (r: Response) => ((await r.json()) as { errors: { code: string }[] }).errors[0].code;
const fails = (p: Promise<unknown>) => p.then(() => false, () => true);

let htpasswd: string;
before(async () => {
  htpasswd = join(work, 'htpasswd');
  await run('htpasswd', ['-Bbc', htpasswd, 'alice', 's3cret']);
  await run('htpasswd', ['-Bb', htpasswd, 'bob', 'hunter2']);
});

after(async () => {
  for (const r of running) await r.close(100);
  for (const s of stores) removeStore(s);
  rmSync(work, { recursive: true, force: true });
});

test('htpasswd (bcrypt from htpasswd -B): 401 with challenge, skopeo and podman pull with --creds', async () => {
  assert.match(readFileSync(htpasswd, 'utf8'), /^alice:\$2y\$/m);
  const { reg, host, logs } = await serve({ auth: { htpasswd: { realm: 'csreg test', path: htpasswd } } });
  const base = await fetch(`${reg.url}/v2/`);
  assert.equal(base.status, 401, '/v2/ needs a login, so clients learn the realm');
  assert.equal(base.headers.get('www-authenticate'), 'Basic realm="csreg test"');
  assert.equal(await errCode(base), 'UNAUTHORIZED');
  const wrong = await fetch(`${reg.url}/v2/csreg/base/manifests/1`, { headers: basic('alice', 'nope') });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.headers.get('www-authenticate'), 'Basic realm="csreg test"');
  assert.equal(await errCode(wrong), 'UNAUTHORIZED');
  assert.equal((await fetch(`${reg.url}/v2/csreg/base/manifests/1`)).status, 401, 'no anonymous pull unless configured');
  assert.equal((await fetch(`${reg.url}/v2/`, { headers: basic('alice', 's3cret') })).status, 200);

  const out = join(work, 'pulled-basic');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', 'alice:s3cret', `docker://${host}/csreg/base:1`, `dir:${out}`]);
  const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { config: { digest: string } };
  assert.equal(sha(readFileSync(join(out, m.config.digest.slice(7)))), m.config.digest);
  assert.ok(await fails(run('skopeo', ['inspect', '--tls-verify=false', '--creds', 'alice:wrong', `docker://${host}/csreg/base:1`])), 'a wrong password fails');
  assert.ok(await fails(run('skopeo', ['inspect', '--tls-verify=false', '--no-creds', `docker://${host}/csreg/base:1`])), 'no credentials fail');

  const dst = pushStore();
  await run('podman', [...storeArgs(dst), 'pull', '-q', '--tls-verify=false', '--creds', 'bob:hunter2', `${host}/csreg/base:1`]);
  const id = await run('podman', [...storeArgs(dst), 'image', 'inspect', '--format', '{{.Id}}', `${host}/csreg/base:1`]);
  assert.equal(id, (await Store.open(src).snapshot()).image(IMAGE)!.id);
  assert.ok(logs.some((l) => l.includes('"identity":"bob"')), 'requests log the identity');
});

test('anonymous pull only when configured: reads without credentials, /v2/ still challenges, writes need a login', async () => {
  const dst = pushStore();
  const { reg, host } = await serve({
    store: dst, push: true, stateDir: join(dst.dir, 'state'),
    auth: { htpasswd: { realm: 'anon', path: htpasswd }, anonymousPull: true },
  });
  await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', 'alice:s3cret', csRef(src, IMAGE), `docker://${host}/open/app:1`]);
  assert.equal((await fetch(`${reg.url}/v2/`)).status, 401, 'clients still learn the realm');
  assert.equal((await fetch(`${reg.url}/v2/open/app/manifests/1`)).status, 200);
  assert.equal((await fetch(`${reg.url}/v2/open/app/manifests/1`, { method: 'DELETE' })).status, 401);
  const out = join(work, 'pulled-anon');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-no-creds', `docker://${host}/open/app:1`, `dir:${out}`]);
  assert.ok(await fails(run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-no-creds', csRef(src, IMAGE), `docker://${host}/open/app:2`])), 'anonymous push fails');
});

test('push with htpasswd and access rules: 403 for a user without push, catalog filtered, audit lines', async () => {
  const dst = pushStore();
  const { reg, host, logs } = await serve({
    store: dst, push: true, stateDir: join(dst.dir, 'state'),
    auth: { htpasswd: { realm: 'csreg', path: htpasswd } },
    access: [
      { repository: 'secret/**', pull: ['alice'], push: ['alice'], delete: ['alice'] },
      { repository: 'team/*', pull: ['*'], push: ['alice'], delete: ['alice'] },
    ],
  });
  const push = (creds: string, dest: string) => run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', creds, csRef(src, IMAGE), `docker://${host}/${dest}`]);
  await push('alice:s3cret', 'team/app:1');
  await push('alice:s3cret', 'secret/app:1');
  assert.ok(await fails(push('bob:hunter2', 'team/app:2')), 'bob may not push');
  const post = await fetch(`${reg.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: basic('bob', 'hunter2') });
  assert.equal(post.status, 403);
  assert.equal(await errCode(post), 'DENIED');
  const anon = await fetch(`${reg.url}/v2/team/app/blobs/uploads/`, { method: 'POST' });
  assert.equal(anon.status, 401, 'anonymous writes get the challenge');
  assert.equal((await fetch(`${reg.url}/v2/other/app/manifests/1`, { headers: basic('alice', 's3cret') })).status, 403, 'no rule matching: denied');

  const names = JSON.parse(await run('podman', [...storeArgs(dst), 'images', '--format', 'json'])).flatMap((i: { Names?: string[] }) => i.Names ?? []);
  assert.ok(names.includes('localhost/team/app:1') && names.includes('localhost/secret/app:1'));
  // bob pulls team/app (rule "*"), not secret/app, and the catalog shows him only what he may pull
  assert.equal((await fetch(`${reg.url}/v2/team/app/manifests/1`, { headers: basic('bob', 'hunter2') })).status, 200);
  const denied = await fetch(`${reg.url}/v2/secret/app/manifests/1`, { headers: basic('bob', 'hunter2') });
  assert.equal(denied.status, 403);
  assert.equal(await errCode(denied), 'DENIED');
  assert.equal((await fetch(`${reg.url}/v2/localhost/secret/app/manifests/1`, { headers: basic('bob', 'hunter2') })).status, 403, 'the full name is covered by the rule too');
  const cat = async (u: string, p: string) => ((await (await fetch(`${reg.url}/v2/_catalog`, { headers: basic(u, p) })).json()) as { repositories: string[] }).repositories;
  assert.deepEqual(await cat('bob', 'hunter2'), ['localhost/team/app', 'team/app']);
  assert.deepEqual(await cat('alice', 's3cret'), ['localhost/secret/app', 'localhost/team/app', 'secret/app', 'team/app']);

  // signatures (registry/signatures.ts): adding one is a push, reading them a pull; the ping's
  // 401 tells clients the extension is there (containers/image reads it from that answer)
  const ping = await fetch(`${reg.url}/v2/`);
  assert.equal(ping.status, 401);
  assert.equal(ping.headers.get('x-registry-supports-signatures'), '1');
  const digest = (await fetch(`${reg.url}/v2/team/app/manifests/1`, { method: 'HEAD', headers: basic('alice', 's3cret') })).headers.get('docker-content-digest');
  const sigs = `${reg.url}/extensions/v2/team/app/signatures/${digest}`;
  assert.equal((await fetch(sigs, { headers: basic('bob', 'hunter2') })).status, 200);
  const bobSig = await fetch(sigs, { method: 'PUT', headers: basic('bob', 'hunter2'), body: '{}' });
  assert.equal(bobSig.status, 403);
  assert.equal(await errCode(bobSig), 'DENIED');
  assert.equal((await fetch(sigs, { method: 'PUT', body: '{}' })).status, 401);
  const aliceSig = await fetch(sigs, { method: 'PUT', headers: basic('alice', 's3cret'), body: '{}' });
  assert.equal(await errCode(aliceSig), 'SIGNATURE_INVALID', 'alice gets past the gate to the body check');
  assert.equal((await fetch(`${reg.url}/extensions/v2/secret/app/signatures/${digest}`, { headers: basic('bob', 'hunter2') })).status, 403);

  assert.equal((await fetch(`${reg.url}/v2/team/app/manifests/1`, { method: 'DELETE', headers: basic('bob', 'hunter2') })).status, 403);
  assert.equal((await fetch(`${reg.url}/v2/team/app/manifests/1`, { method: 'DELETE', headers: basic('alice', 's3cret') })).status, 202);
  const audits = logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'audit');
  assert.ok(audits.some((a) => a.action === 'blob upload' && a.identity === 'alice' && a.repository === 'team/app' && String(a.digest).startsWith('sha256:') && a.remote === '127.0.0.1'));
  assert.ok(audits.some((a) => a.action === 'manifest push' && a.identity === 'alice' && a.repository === 'secret/app' && a.reference === '1' && String(a.digest).startsWith('sha256:')));
  assert.ok(audits.some((a) => a.action === 'manifest delete' && a.identity === 'alice' && a.repository === 'team/app' && a.reference === '1'));
  assert.ok(!audits.some((a) => a.identity === 'bob'), 'refused writes are no audit lines');
});

// ---------------------------------------------------------------- tokens

interface Keys { rsaKey: KeyObject; rsaCert: X509Certificate; ecKey: KeyObject; ecCert: X509Certificate; bundle: string }
async function signingKeys(): Promise<Keys> {
  const dir = join(work, 'token-keys');
  mkdirSync(dir, { recursive: true });
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'rsa.key'), '-out', join(dir, 'rsa.crt'), '-subj', '/CN=token-rsa', '-days', '2']);
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'ec.key'), '-out', join(dir, 'ec.crt'), '-subj', '/CN=token-ec', '-days', '2']);
  const bundle = join(dir, 'bundle.pem');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(bundle, readFileSync(join(dir, 'rsa.crt'), 'utf8') + readFileSync(join(dir, 'ec.crt'), 'utf8'));
  return {
    rsaKey: createPrivateKey(readFileSync(join(dir, 'rsa.key'))), rsaCert: new X509Certificate(readFileSync(join(dir, 'rsa.crt'))),
    ecKey: createPrivateKey(readFileSync(join(dir, 'ec.key'))), ecCert: new X509Certificate(readFileSync(join(dir, 'ec.crt'))),
    bundle,
  };
}

/** RFC 7638 thumbprint, written here independently of the code under test. */
function thumbprint(cert: X509Certificate): string {
  const j = cert.publicKey.export({ format: 'jwk' }) as Record<string, string>;
  const canon = j.kty === 'RSA' ? `{"e":"${j.e}","kty":"RSA","n":"${j.n}"}` : `{"crv":"${j.crv}","kty":"EC","x":"${j.x}","y":"${j.y}"}`;
  return createHash('sha256').update(canon).digest('base64url');
}

type Access = { type: string; name: string; actions: string[] }[];
function jwt(keys: Keys, alg: 'RS256' | 'ES256', claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  const h = alg === 'RS256' ? { alg, typ: 'JWT', kid: thumbprint(keys.rsaCert), ...header } : { alg, typ: 'JWT', x5c: [keys.ecCert.raw.toString('base64')], ...header };
  const data = `${Buffer.from(JSON.stringify(h)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const sig = alg === 'RS256' ? cryptoSign('sha256', Buffer.from(data), keys.rsaKey) : cryptoSign('sha256', Buffer.from(data), { key: keys.ecKey, dsaEncoding: 'ieee-p1363' });
  return `${data}.${sig.toString('base64url')}`;
}

const SERVICE = 'csreg-test';
const ISSUER = 'test-issuer';
const claims = (sub: string, access: Access, extra: Record<string, unknown> = {}) => {
  const now = Math.floor(Date.now() / 1000);
  return { iss: ISSUER, sub, aud: SERVICE, exp: now + 300, nbf: now - 1, iat: now, jti: String(Math.random()), access, ...extra };
};

/** A token service as distribution expects one: Basic login, scopes in, RS256 JWT out. */
function tokenIssuer(keys: Keys): Promise<{ server: Server; realm: string; requests: string[] }> {
  const users: Record<string, string> = { alice: 'pw-a', puller: 'pw-p', other: 'pw-o' };
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://issuer');
    requests.push(url.search);
    const [u, p] = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString().split(':');
    if (!u || users[u] !== p || url.searchParams.get('service') !== SERVICE) {
      res.writeHead(401).end();
      return;
    }
    const access: Access = [];
    for (const scope of url.searchParams.getAll('scope').flatMap((s) => s.split(' '))) {
      const [type, name, actions] = scope.split(':');
      if (u === 'alice') access.push({ type, name, actions: actions.split(',') });
      if (u === 'puller') access.push({ type, name, actions: actions.split(',').filter((a) => a === 'pull') });
      if (u === 'other') access.push({ type, name: 'some/other', actions: ['pull'] });
    }
    const token = jwt(keys, 'RS256', claims(u, access));
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const a = server.address() as { port: number };
    resolve({ server, realm: `http://127.0.0.1:${a.port}/token`, requests });
  }));
}

test('token auth: skopeo pushes and pulls with scoped JWTs (RS256, ES256); wrong scope → 401 insufficient_scope', async () => {
  const keys = await signingKeys();
  const issuer = await tokenIssuer(keys);
  try {
    const dst = pushStore();
    const { reg, host, logs } = await serve({
      store: dst, push: true, stateDir: join(dst.dir, 'state'),
      auth: { token: { realm: issuer.realm, service: SERVICE, issuer: ISSUER, rootcertbundle: keys.bundle } },
    });
    const base = await fetch(`${reg.url}/v2/`);
    assert.equal(base.status, 401);
    assert.equal(base.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="${SERVICE}"`);
    const anon = await fetch(`${reg.url}/v2/tok/app/manifests/1`);
    assert.equal(anon.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="${SERVICE}",scope="repository:tok/app:pull"`);
    const anonPush = await fetch(`${reg.url}/v2/tok/app/blobs/uploads/`, { method: 'POST' });
    assert.equal(anonPush.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="${SERVICE}",scope="repository:tok/app:pull,push"`);

    // push scope
    await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', 'alice:pw-a', csRef(src, IMAGE), `docker://${host}/tok/app:1`]);
    assert.ok(issuer.requests.some((q) => q.includes('scope=repository%3Atok%2Fapp%3Apull%2Cpush') || q.includes('scope=repository:tok/app:pull,push')), 'skopeo asked for pull,push');
    assert.ok(logs.some((l) => l.includes('"msg":"audit"') && l.includes('"identity":"alice"') && l.includes('"action":"manifest push"')));
    // pull scope only: pulls work, a push does not
    const out = join(work, 'pulled-token');
    await run('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', 'puller:pw-p', `docker://${host}/tok/app:1`, `dir:${out}`]);
    assert.ok(await fails(run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', 'puller:pw-p', csRef(src, IMAGE), `docker://${host}/tok/app:2`])));

    // a token for another repository: 401 with the insufficient_scope challenge, as distribution
    const otherTok = jwt(keys, 'RS256', claims('other', [{ type: 'repository', name: 'some/other', actions: ['pull', 'push'] }]));
    const r = await fetch(`${reg.url}/v2/tok/app/manifests/1`, { headers: { Authorization: `Bearer ${otherTok}` } });
    assert.equal(r.status, 401);
    assert.equal(r.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="${SERVICE}",scope="repository:tok/app:pull",error="insufficient_scope"`);
    assert.equal(await errCode(r), 'UNAUTHORIZED');
    const pullTok = jwt(keys, 'RS256', claims('puller', [{ type: 'repository', name: 'tok/app', actions: ['pull'] }]));
    const del = await fetch(`${reg.url}/v2/tok/app/manifests/1`, { method: 'DELETE', headers: { Authorization: `Bearer ${pullTok}` } });
    assert.equal(del.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="${SERVICE}",scope="repository:tok/app:delete",error="insufficient_scope"`);

    // ES256 with an x5c chain; the catalog scope
    const es = jwt(keys, 'ES256', claims('alice', [{ type: 'repository', name: 'tok/app', actions: ['*'] }, { type: 'registry', name: 'catalog', actions: ['*'] }]));
    assert.equal((await fetch(`${reg.url}/v2/tok/app/manifests/1`, { headers: { Authorization: `Bearer ${es}` } })).status, 200);
    assert.deepEqual(((await (await fetch(`${reg.url}/v2/_catalog`, { headers: { Authorization: `Bearer ${es}` } })).json()) as { repositories: string[] }).repositories, ['localhost/tok/app', 'tok/app']);
    assert.equal((await fetch(`${reg.url}/v2/_catalog`, { headers: { Authorization: `Bearer ${pullTok}` } })).status, 401, 'the catalog needs registry:catalog:*');

    // invalid tokens: bad signature, expired, wrong audience, wrong issuer, alg confusion, unknown key
    const good = claims('alice', [{ type: 'repository', name: 'tok/app', actions: ['pull'] }]);
    const bad = [
      jwt(keys, 'RS256', good).replace(/.{4}$/, 'AAAA'),
      jwt(keys, 'RS256', { ...good, exp: Math.floor(Date.now() / 1000) - 120 }),
      jwt(keys, 'RS256', { ...good, aud: 'another-service' }),
      jwt(keys, 'RS256', { ...good, iss: 'someone-else' }),
      jwt(keys, 'RS256', good, { alg: 'ES256' }),
      jwt(keys, 'RS256', good, { kid: 'ABCD:EFGH' }),
      jwt(keys, 'RS256', good, { alg: 'none' }),
    ];
    for (const [i, t] of bad.entries()) {
      const b = await fetch(`${reg.url}/v2/tok/app/manifests/1`, { headers: { Authorization: `Bearer ${t}` } });
      assert.equal(b.status, 401, `bad token ${i}`);
      assert.match(b.headers.get('www-authenticate') ?? '', /,error="invalid_token"$/, `bad token ${i}`);
    }
    assert.equal((await fetch(`${reg.url}/v2/tok/app/manifests/1`, { headers: { Authorization: `Bearer ${jwt(keys, 'RS256', good)}` } })).status, 200);
  } finally {
    issuer.server.close();
  }
});

// ---------------------------------------------------------------- TLS

test('TLS: skopeo trusting a test CA pulls over https; plain HTTP on a non-loopback address is refused', async () => {
  const dir = join(work, 'tls');
  const certs = join(work, 'certs.d');
  mkdirSync(dir, { recursive: true });
  mkdirSync(certs, { recursive: true });
  const o = (args: string[]) => run('openssl', args);
  await o(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-subj', '/CN=csreg test CA', '-days', '2']);
  await o(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.csr'), '-subj', '/CN=127.0.0.1']);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await o(['x509', '-req', '-in', join(dir, 'server.csr'), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-out', join(dir, 'server.crt'), '-days', '2', '-extfile', join(dir, 'ext.cnf')]);
  copyFileSync(join(dir, 'ca.crt'), join(certs, 'ca.crt'));

  const { reg, host } = await serve({ tls: { certificate: join(dir, 'server.crt'), key: join(dir, 'server.key') }, auth: { htpasswd: { realm: 'tls', path: htpasswd } } });
  assert.match(reg.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const out = join(work, 'pulled-tls');
  await run('skopeo', ['copy', '-q', '--src-cert-dir', certs, '--src-creds', 'alice:s3cret', `docker://${host}/csreg/base:1`, `dir:${out}`]);
  assert.ok(readFileSync(join(out, 'manifest.json')).length > 0);
  assert.ok(await fails(run('skopeo', ['inspect', '--creds', 'alice:s3cret', `docker://${host}/csreg/base:1`])), 'without the CA the certificate is not trusted');

  await assert.rejects(startRegistry({ store: Store.open(src), log: createLogger({ out: new Writable({ write(_c, _e, cb) { cb(); } }) }), addr: '0.0.0.0:0' }),
    /refusing to listen on 0\.0\.0\.0 without TLS.*--insecure-listen/);
});

// ---------------------------------------------------------------- limits

function rawRequest(port: number, head: string, body?: Buffer): Promise<{ status: number; body: string; socketClosed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(buf);
      if (end >= 0 && len && buf.length >= end + 4 + Number(len[1])) resolve({ status: Number(buf.slice(9, 12)), body: buf.slice(end + 4), socketClosed: closed });
    });
    sock.on('error', () => undefined);
    sock.on('close', () => reject(new Error('closed before a whole answer: ' + buf.slice(0, 200))));
    sock.write(head);
    if (body) sock.write(body);
  });
}

test('limits: 5 MiB manifest → 413 unread, upload sessions and staging quota → 429/413, stalled bodies and downloads cut, per-client downloads', async () => {
  const dst = pushStore();
  const { reg } = await serve({
    store: dst, push: true, stateDir: join(dst.dir, 'state'),
    limits: { maxUploadSessions: 3, stagingMaxBytes: 64 << 20, bodyIdleTimeoutMs: 1500, maxDownloadsPerClient: 1 },
  });
  const port = Number(new URL(reg.url).port);
  // a manifest declared 5 MiB: refused after the first bytes, the rest never read
  const big = await rawRequest(port, `PUT /v2/lim/app/manifests/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: ${5 << 20}\r\n\r\n`, Buffer.alloc(1024, 0x20));
  assert.equal(big.status, 413);
  assert.equal(JSON.parse(big.body).errors[0].code, 'MANIFEST_INVALID');
  // chunked, no length: refused once past 4 MiB
  const chunked = await new Promise<{ status: number; code: string }>((resolve, reject) => {
    const req = request(`${reg.url}/v2/lim/app/manifests/1`, { method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode!, code: JSON.parse(b).errors[0].code }));
    });
    req.on('error', reject);
    const chunk = Buffer.alloc(256 << 10, 0x20);
    let sent = 0;
    const more = () => {
      while (sent < 5 << 20) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', more);
      }
      req.end();
    };
    more();
  }).catch((e: Error) => ({ status: 0, code: e.message }));
  assert.equal(chunked.status, 413, `chunked 5 MiB manifest: ${chunked.code}`);

  // upload sessions: 3 at most
  const sessions: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await fetch(`${reg.url}/v2/lim/app/blobs/uploads/`, { method: 'POST' });
    assert.equal(r.status, 202);
    sessions.push(r.headers.get('location')!);
  }
  const fourth = await fetch(`${reg.url}/v2/lim/app/blobs/uploads/`, { method: 'POST' });
  assert.equal(fourth.status, 429);
  assert.equal(await errCode(fourth), 'TOOMANYREQUESTS');
  // staging: one chunk larger than all of it → 413; staging full → 429, and the session keeps its last good size
  const tooBig = await rawRequest(port, `PATCH ${sessions[0]} HTTP/1.1\r\nHost: x\r\nContent-Length: ${70 << 20}\r\n\r\n`);
  assert.equal(tooBig.status, 413);
  // bigger than what the loopback socket buffers take (rmem up to 32 MiB here), so a client that stops reading stalls the server
  const blob = Buffer.alloc(48 << 20, 7);
  assert.equal((await fetch(reg.url + sessions[1], { method: 'PATCH', body: blob })).status, 202);
  const full = await fetch(reg.url + sessions[2], { method: 'PATCH', body: new Blob([blob.subarray(0, 20 << 20)]).stream(), duplex: 'half' } as RequestInit);
  assert.equal(full.status, 429);
  assert.equal((await fetch(reg.url + sessions[2])).headers.get('range'), '0-0');
  // a body that stalls is cut off after the idle timeout
  const t0 = Date.now();
  const stall = connect(port, '127.0.0.1');
  stall.write(`PATCH ${sessions[0]} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789`);
  stall.on('error', () => undefined);
  await new Promise((r) => stall.on('close', r));
  const took = Date.now() - t0;
  assert.ok(took >= 1400 && took < 5000, `stalled body cut after ${took} ms`);

  // finish the 48 MiB blob; a client that does not read its download holds its one slot, then is cut off
  const digest = sha(blob);
  assert.equal((await fetch(`${reg.url}${sessions[1]}?digest=${digest}`, { method: 'PUT' })).status, 201);
  const slow = connect(port, '127.0.0.1');
  slow.on('error', () => undefined);
  const slowClosed = new Promise((r) => slow.on('close', r));
  slow.write(`GET /v2/lim/app/blobs/${digest} HTTP/1.1\r\nHost: x\r\n\r\n`);
  await new Promise((r) => slow.once('data', r));
  slow.pause();
  const second = await fetch(`${reg.url}/v2/lim/app/blobs/${digest}`);
  assert.equal(second.status, 429, 'one download per client at once');
  await second.body?.cancel();
  // the server gives up on it after the idle timeout; the paused client sees that once it reads again
  await new Promise((r) => setTimeout(r, 3500));
  let got = 0;
  slow.on('data', (d: Buffer) => (got += d.length));
  slow.resume();
  await Promise.race([slowClosed, new Promise((_, rej) => setTimeout(() => rej(new Error('the unread download was not cut off')), 5000))]);
  assert.ok(got < blob.length, `a download the client does not read is cut off (${got} bytes arrived)`);
  const third = await fetch(`${reg.url}/v2/lim/app/blobs/${digest}`);
  assert.equal(third.status, 200);
  assert.equal(sha(Buffer.from(await third.arrayBuffer())), digest);
});

test('200 connections sending headers one byte per second do not stop a skopeo pull, and are cut off', async () => {
  const { reg, host } = await serve({ limits: { headerTimeoutMs: 3000 } });
  const port = Number(new URL(reg.url).port);
  const head = 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nX-Pad: ' + 'a'.repeat(100) + '\r\n\r\n';
  const socks: Socket[] = [];
  const closed: Promise<number>[] = [];
  const t0 = Date.now();
  const timers: NodeJS.Timeout[] = [];
  for (let i = 0; i < 200; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    socks.push(s);
    closed.push(new Promise((r) => s.on('close', () => r(Date.now() - t0))));
    let k = 0;
    const t = setInterval(() => {
      if (s.destroyed || k >= head.length) return clearInterval(t);
      s.write(head[k++]);
    }, 1000);
    timers.push(t);
  }
  try {
    const out = join(work, 'pulled-slowloris');
    await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${host}/csreg/base:1`, `dir:${out}`]);
    assert.ok(Date.now() - t0 < 20_000, 'the pull was not held up');
    const times = await Promise.race([Promise.all(closed), new Promise<never>((_, rej) => setTimeout(() => rej(new Error('slow connections still open after 15 s')), 15_000))]);
    assert.ok(Math.max(...times) < 12_000, `all slow connections closed by the header timeout (last after ${Math.max(...times)} ms)`);
  } finally {
    for (const t of timers) clearInterval(t);
    for (const s of socks) s.destroy();
  }
});

test('download slots: a new request on a connection ends that connection\'s last download, another connection still waits', () => {
  const slots = new DownloadSlots(1);
  const conn = {};
  const first = slots.acquire('10.0.0.1', conn);
  assert.ok(first);
  assert.equal(slots.acquire('10.0.0.1', {}), undefined, 'a second connection of the client is refused while the first downloads');
  // keep-alive: the client read the last response whole and asks again before its end is seen here
  const next = slots.acquire('10.0.0.1', conn);
  assert.ok(next, 'the same connection gets a slot: its last download is over');
  first();
  assert.equal(slots.acquire('10.0.0.1', {}), undefined, 'releasing the old download late does not free the new one\'s slot');
  next!();
  assert.ok(slots.acquire('10.0.0.1', {}));
});
