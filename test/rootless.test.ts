// csreg on a rootless store: a user's own (~/.local/share/containers/storage), written by
// rootless skopeo, served and pushed into by csreg run as that user through bin/csreg, and read
// back by rootless podman and skopeo. The store's files belong to the user's subordinate IDs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkedDirLayers, exportImage, freshStore, loadFixtures, removeStore, repoRoot, startServe, type ServeProcess } from './fixtures.js';

const fx = loadFixtures();
const USER = 'csreg-rootless';
const LIMIT = { timeout: 240_000 };

interface User { uid: number; gid: number; subuid: number; env: NodeJS.ProcessEnv }

/** The test user (made once per machine), with subordinate IDs and a fresh home; or why not. */
function testUser(dir: string): User | string {
  if (process.getuid?.() !== 0) return 'the tests are not running as root (they make a user)';
  try {
    execFileSync('id', ['-u', USER], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--no-create-home', '--shell', '/bin/sh', USER]);
  }
  const range = (file: string) => readFileSync(file, 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[0] === USER);
  if (!range('/etc/subuid') || !range('/etc/subgid')) execFileSync('usermod', ['--add-subuids', '400000-465535', '--add-subgids', '400000-465535', USER]);
  const uid = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' }));
  const home = join(dir, 'home');
  const runtime = join(dir, 'run');
  for (const d of [home, runtime]) {
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, uid, gid);
  }
  chmodSync(dir, 0o755);
  const env = { PATH: process.env.PATH, HOME: home, XDG_RUNTIME_DIR: runtime, LANG: 'C.UTF-8' };
  return { uid, gid, subuid: Number(range('/etc/subuid')![1]), env };
}

function asUser(u: User, cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { uid: u.uid, gid: u.gid, env: u.env, cwd: u.env.HOME, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
}

/** `csreg serve` as the user (through bin/csreg unless told otherwise), on its default store. */
function serveAsUser(u: User, args: string[], command = [join(repoRoot(), 'bin', 'csreg')]): Promise<ServeProcess> {
  return startServe(command[0], [...command.slice(1), 'serve', '--addr', '127.0.0.1:0', '--log-format', 'text', ...args], { uid: u.uid, gid: u.gid, env: u.env, cwd: u.env.HOME });
}

/** A pulled dir: image's layers, checked (checkedDirLayers); their listings. */
function checkedLayers(dir: string): string[] {
  return checkedDirLayers(dir).map((tar, i) => {
    const file = join(dir, `layer-${i}.tar`);
    writeFileSync(file, tar);
    return execFileSync('tar', ['--numeric-owner', '-tvf', file], { encoding: 'utf8' });
  });
}

test('a rootless store: csreg, run by its user, serves files only the image\'s users may read, and takes a push that rootless podman mounts and skopeo rebuilds', LIMIT, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-rootless-'));
  const build = freshStore('overlay');
  let csreg: ChildProcess | undefined;
  t.after(() => {
    csreg?.kill('SIGKILL');
    try { execFileSync('pkill', ['-KILL', '-u', USER]); } catch { /* nothing left */ }
    removeStore(build);
    rmSync(dir, { recursive: true, force: true });
  });
  const u = testUser(dir);
  if (typeof u === 'string') return t.skip(u);
  try {
    asUser(u, 'podman', ['info']);
  } catch (e) {
    return t.skip(`rootless podman cannot run here: ${(e as { stderr?: string }).stderr ?? e}`);
  }

  // Image A, by buildah (as root): a 0700 directory and 0600 file of the image's uid 1000, a
  // 0600 file of its root, a device (no user namespace can make one: left out on disk)
  const bld = (...a: string[]) => execFileSync('buildah', ['--root', build.root, '--runroot', build.runroot, '--storage-driver', 'overlay', ...a], { encoding: 'utf8' }).trim();
  const c = bld('from', 'scratch');
  const mnt = bld('mount', c);
  mkdirSync(join(mnt, 'home/u'), { recursive: true });
  writeFileSync(join(mnt, 'home/u/secret'), 'only uid 1000\n', { mode: 0o600 });
  chownSync(join(mnt, 'home/u/secret'), 1000, 1000);
  chownSync(join(mnt, 'home/u'), 1000, 1000);
  chmodSync(join(mnt, 'home/u'), 0o700);
  writeFileSync(join(mnt, 'rootonly'), 'only root\n', { mode: 0o600 });
  execFileSync('mknod', [join(mnt, 'null'), 'c', '1', '3']);
  bld('umount', c);
  bld('commit', '-q', c, 'localhost/rootless/app:1');
  const layoutA = join(dir, 'app');
  execFileSync('skopeo', ['copy', '-q', `containers-storage:[overlay@${build.root}+${build.runroot}]localhost/rootless/app:1`, `oci:${layoutA}:1`]);
  execFileSync('chmod', ['-R', 'a+rX', layoutA]);
  // ...written into the user's store by rootless skopeo (its files: the user's subordinate IDs)
  asUser(u, 'skopeo', ['copy', '-q', `oci:${layoutA}:1`, 'containers-storage:localhost/rootless/app:1']);
  // the store csreg finds inside its namespace is rootless podman's, mapped as podman's is
  const info = JSON.parse(asUser(u, 'podman', ['info', '--format', 'json'])).store as { graphRoot: string; runRoot: string; graphDriverName: string };
  const graphRoot = info.graphRoot;
  assert.equal(graphRoot, join(u.env.HOME!, '.local/share/containers/storage'));
  const status = JSON.parse(asUser(u, join(repoRoot(), 'bin', 'csreg'), ['storage', 'status', '--json'])) as Record<string, unknown>;
  assert.deepEqual([status.graphRoot, status.runRoot, status.driver, status.rootless, status.images], [info.graphRoot, info.runRoot, info.graphDriverName, true, 1]);
  const podmanMap = asUser(u, 'podman', ['unshare', 'cat', '/proc/self/uid_map']).trim().split('\n').map((l) => l.trim().split(/\s+/).join(' ')).join(', ');
  assert.equal(status.uidMap, podmanMap);
  const outsideStatus = JSON.parse(asUser(u, process.execPath, [join(repoRoot(), 'dist/src/cli/main.js'), 'storage', 'status', '--json'])) as Record<string, unknown>;
  assert.match(String(outsideStatus.uidMap), /^none: /);

  const s = await serveAsUser(u, ['--allow-push']);
  csreg = s.proc;
  assert.match(s.output(), new RegExp(`csreg serving ${graphRoot} \\(driver overlay\\)`), 'the rootless default store, found inside the user namespace');

  // node without the launcher stays outside any user namespace, and says what that costs
  const outside = await serveAsUser(u, [], [process.execPath, join(repoRoot(), 'dist/src/cli/main.js')]);
  outside.proc.kill('SIGKILL');
  await outside.exited;
  assert.match(outside.output(), /not root and not in a user namespace: layers holding files of the images' own users .* cannot be served/);

  const pulled = join(dir, 'pulled');
  execFileSync('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${s.host}/rootless/app:1`, `dir:${pulled}`]);
  const [listing] = checkedLayers(pulled);
  assert.match(listing, /^-rw------- 1000\/1000 +14 .* home\/u\/secret$/m);
  assert.match(listing, /^-rw------- 0\/0 +10 .* rootonly$/m);
  assert.match(listing, /^crw-r--r-- 0\/0 +1,3 .* null$/m);

  // Image B pushed into the rootless store: whiteouts, an opaque directory, a file of uid 1000
  // (the fixture's derived image), and a device on top
  const fixture = fx.stores.overlay;
  const cb = bld('from', '-q', `containers-storage:[overlay@${fixture.root}+${fixture.runroot}]localhost/csreg/derived:1`);
  execFileSync('mknod', [join(bld('mount', cb), 'null'), 'c', '1', '3']);
  bld('umount', cb);
  bld('commit', '-q', cb, 'localhost/rootless/derived:1');
  const derived = exportImage(build, 'localhost/rootless/derived:1');
  t.after(() => rmSync(derived.dir, { recursive: true, force: true }));
  execFileSync('chmod', ['-R', 'a+rX', derived.dir]);
  execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `dir:${derived.dir}`, `docker://${s.host}/rootless/derived:1`]);
  assert.match(asUser(u, 'podman', ['images', '--format', '{{.Repository}}:{{.Tag}}']), /^localhost\/rootless\/derived:1$/m);
  const diffs = readdirSync(join(graphRoot, 'overlay')).filter((d) => /^[0-9a-f]{64}$/.test(d)).map((d) => join(graphRoot, 'overlay', d, 'diff'));
  const owned = diffs.map((d) => statSync(join(d, 'data/owned'), { throwIfNoEntry: false })).find(Boolean)!;
  assert.equal(owned.uid, u.subuid + 999, 'uid 1000 of the image is the user\'s subordinate ID 999 on disk');
  const opaque = diffs.filter((d) => {
    try {
      return execFileSync('getfattr', ['--only-values', '-n', 'user.overlay.opaque', join(d, 'data/opaque')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }) === 'y';
    } catch { return false; }
  });
  assert.equal(opaque.length, 1, 'the opaque directory is marked with user.overlay.opaque');
  assert.ok(diffs.every((d) => !statSync(join(d, 'null'), { throwIfNoEntry: false })), 'no device made (none can be in a user namespace)');
  // the kernel's view, as a rootless container sees it: podman mounts the image in its namespace
  const view = asUser(u, 'podman', ['unshare', 'sh', '-c', 'm=$(podman image mount localhost/rootless/derived:1) && ls -A "$m/data" && echo -- && ls -A "$m/data/opaque"; r=$?; podman image unmount localhost/rootless/derived:1 >/dev/null; exit $r']);
  const [data, inOpaque] = view.split('--\n').map((x) => x.trim().split('\n'));
  assert.ok(data.includes('owned') && data.includes('opaque'));
  assert.ok(!data.includes('gone-file') && !data.includes('gone-dir'), 'whiteouts hide what they delete');
  assert.deepEqual(inOpaque, ['new'], 'the opaque directory hides the lower layer\'s files');
  // Go's rebuild of the pushed layers from csreg's tar-split files, by rootless skopeo
  const rebuilt = join(u.env.HOME!, 'rebuilt');
  asUser(u, 'skopeo', ['copy', '-q', 'containers-storage:localhost/rootless/derived:1', `dir:${rebuilt}`]);
  const rebuiltListings = checkedLayers(rebuilt);
  assert.equal(rebuiltListings.length, derived.layers.length);
  assert.match(rebuiltListings.at(-1)!, /^crw-r--r-- 0\/0 +1,3 .* null$/m, 'the device is in the layer\'s tar-split');
});
