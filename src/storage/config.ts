// Finding the store the way containers/storage 1.43–1.62 does (types/options.go):
// exactly one storage.conf is read, rootful and rootless defaults differ, and flags override.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { isRootless, rootlessUid } from './rootless.js';

export interface StoreLocation {
  graphRoot: string;
  runRoot: string;
  driver: string;
  /** read-only roots laid out like a graphroot, merged into listings */
  additionalImageStores: string[];
  /** [storage] imagestore (1.48+): a separate read-write root for images and their layers */
  imageStore?: string;
  transientStore: boolean;
  /** the storage.conf that was read, if any */
  configFile?: string;
}

export interface StoreOverrides {
  root?: string;
  runroot?: string;
  driver?: string;
}

type Env = NodeJS.ProcessEnv;

export class StorageConfigError extends Error {
  override name = 'StorageConfigError';
}

const SYSTEM_CONF = '/etc/containers/storage.conf';
const DEFAULT_CONF = '/usr/share/containers/storage.conf';

function userConfDir(env: Env): string {
  return env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
}

/** Which storage.conf the Go library reads, and whether it is the rootless user's own file. */
export function storageConfPath(env: Env = process.env, rootless = isRootless(env)): { path?: string; userFile: boolean } {
  if (env.CONTAINERS_STORAGE_CONF) return { path: env.CONTAINERS_STORAGE_CONF, userFile: false };
  if (rootless) {
    const user = join(userConfDir(env), 'containers', 'storage.conf');
    if (existsSync(user)) return { path: user, userFile: true };
  } else if (env.XDG_CONFIG_HOME) {
    // Quirk of types/options.go: with XDG_CONFIG_HOME set, its storage.conf replaces /etc's, even for root.
    const xdg = join(env.XDG_CONFIG_HOME, 'containers', 'storage.conf');
    if (existsSync(xdg)) return { path: xdg, userFile: false };
  }
  if (existsSync(SYSTEM_CONF)) return { path: SYSTEM_CONF, userFile: false };
  if (existsSync(DEFAULT_CONF)) return { path: DEFAULT_CONF, userFile: false };
  return { userFile: false };
}

function rootlessRunRoot(env: Env): string {
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'containers');
  const u = rootlessUid(env);
  const dir = `/run/user/${u}`;
  try {
    // (owned by this process: the user, or root inside the user's namespace)
    const st = statSync(dir);
    if (st.isDirectory() && st.uid === process.geteuid?.() && (st.mode & 0o022) === 0) return join(dir, 'containers');
  } catch { /* fall through */ }
  return join(env.TMPDIR || tmpdir(), `storage-run-${u}`, 'containers');
}

function rootlessGraphRoot(env: Env): string {
  const data = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return join(data, 'containers', 'storage');
}

/** `$UID` first, then environment variables, as the Go code expands paths in storage.conf. */
function expandPath(p: string, env: Env): string {
  return p.replace(/\$UID\b/g, String(rootlessUid(env))).replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => env[a ?? b] ?? '');
}

function readConf(path: string): Record<string, any> {
  try {
    // loaded only when there is a storage.conf to read (every CLI run pays its loading otherwise)
    const toml = createRequire(import.meta.url)('smol-toml') as typeof import('smol-toml');
    return toml.parse(readFileSync(path, 'utf8')) as Record<string, any>;
  } catch (e) {
    throw new StorageConfigError(`${path}: ${(e as Error).message}`);
  }
}

const DRIVER_DIRS = ['overlay', 'vfs', 'btrfs', 'zfs', 'aufs', 'devmapper'];

function normalizeDriver(d: string): string {
  return d === 'overlay2' ? 'overlay' : d;
}

/** The store location the Go tools would use, with `--root`/`--runroot`/`--storage-driver` applied on top. */
export function resolveStoreLocation(over: StoreOverrides = {}, env: Env = process.env): StoreLocation {
  const rootless = isRootless(env);
  const { path, userFile } = storageConfPath(env, rootless);
  const conf = path && existsSync(path) ? readConf(path) : {};
  const storage = (conf.storage ?? {}) as Record<string, any>;
  const options = (storage.options ?? {}) as Record<string, any>;

  let graphRoot = typeof storage.graphroot === 'string' && storage.graphroot ? storage.graphroot : '';
  let runRoot = typeof storage.runroot === 'string' && storage.runroot ? storage.runroot : '';
  let driver = typeof storage.driver === 'string' ? storage.driver : '';
  if (rootless && !userFile) {
    // System file read by a rootless user: its roots do not apply, only rootless_storage_path.
    graphRoot = typeof storage.rootless_storage_path === 'string' && storage.rootless_storage_path ? storage.rootless_storage_path : '';
    runRoot = '';
    if (!['overlay', 'overlay2', 'vfs', 'btrfs'].includes(driver)) driver = '';
  }
  if (!graphRoot) graphRoot = rootless ? rootlessGraphRoot(env) : '/var/lib/containers/storage';
  if (!runRoot) runRoot = rootless ? rootlessRunRoot(env) : '/run/containers/storage';
  graphRoot = over.root ?? expandPath(graphRoot, env);
  runRoot = over.runroot ?? expandPath(runRoot, env);

  driver = over.driver ?? env.STORAGE_DRIVER ?? driver;
  if (!driver && Array.isArray(storage.driver_priority)) {
    driver = (storage.driver_priority as unknown[]).find((d) => typeof d === 'string' && existsSync(join(graphRoot, `${normalizeDriver(d)}-layers`))) as string ?? '';
  }
  // A reader only needs the driver whose records exist; fall back to the Go default.
  if (!driver) driver = DRIVER_DIRS.find((d) => existsSync(join(graphRoot, `${d}-layers`))) ?? 'overlay';
  driver = normalizeDriver(driver);

  const ais = options.additionalimagestores;
  return {
    graphRoot,
    runRoot,
    driver,
    additionalImageStores: Array.isArray(ais) ? ais.filter((s): s is string => typeof s === 'string').map((s) => expandPath(s, env)) : [],
    imageStore: typeof storage.imagestore === 'string' && storage.imagestore ? expandPath(storage.imagestore, env) : undefined,
    transientStore: storage.transient_store === true,
    configFile: path,
  };
}
