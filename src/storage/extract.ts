// Applying a layer tar to a driver directory the way containers/storage's archive.Unpack
// does: same ownership, modes, times, xattrs, links, devices and fifos, whiteouts in the
// driver's form. Stricter than Go on one point: Go relies on a chroot to contain symlink
// tricks; we have none, so any entry whose path goes through a symlink, contains "..", is
// absolute, or whose link target leaves the layer is refused.
import { promises as fsp, constants } from 'node:fs';
import { posix } from 'node:path';
import { lsetxattr, makedev, mknod, S_IFBLK, S_IFCHR, S_IFIFO, SyscallError } from './syscalls.js';
import type { TarHeader } from './tar.js';

export class ExtractError extends Error {
  override name = 'ExtractError';
}

export type WhiteoutFormat =
  /** overlay native: `.wh.x` → char device 0:0 `x`, `.wh..wh..opq` → opaque xattr on the dir */
  | 'overlay'
  /** vfs (AUFS semantics applied to a full copy): `.wh.x` deletes `x`, `.wh..wh..opq` empties the dir of lower content */
  | 'delete';

const WH_PREFIX = '.wh.';
const WH_OPAQUE = '.wh..wh..opq';
const XATTRS_TO_IGNORE = new Set(['security.selinux']);
const ENOTDIR = 20;

/** A layer-relative path as latin1 (one char per byte, so non-UTF-8 names survive). */
function relPath(name: Buffer, what: string): string {
  const s = name.toString('latin1');
  if (s.includes('\0')) throw new ExtractError(`${what} ${JSON.stringify(name.toString())} contains a NUL byte`);
  if (s.startsWith('/')) throw new ExtractError(`${what} ${JSON.stringify(name.toString())} is an absolute path`);
  const parts = s.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new ExtractError(`${what} ${JSON.stringify(name.toString())} leaves the layer ("..")`);
  return parts.join('/');
}

const bytes = (latin1: string) => Buffer.from(latin1, 'latin1');

export class LayerExtractor {
  readonly uids = new Set<number>();
  readonly gids = new Set<number>();
  private dirs: { rel: string; path: Buffer; atime: number; mtime: number }[] = [];
  /** directories this layer created or replaced: `.wh..wh..opq` in vfs keeps those */
  private readonly createdHere = new Set<string>();
  private file: fsp.FileHandle | undefined;
  /** the regular file being written, whose metadata is set once its data is in */
  private pending: { h: TarHeader; path: Buffer } | undefined;
  private readonly safeDirs = new Set<string>(['']);

  constructor(readonly root: string, readonly whiteouts: WhiteoutFormat, readonly opaqueXattr = 'trusted.overlay.opaque') {}

  private abs(rel: string): Buffer {
    return bytes(rel ? `${this.root}/${rel}` : this.root);
  }

  /**
   * rel (and everything under it) was removed or replaced: its cached "safe directory" verdicts
   * and pending directory times no longer hold (a symlink may stand there now).
   */
  private forget(rel: string): void {
    const under = (p: string) => p === rel || p.startsWith(rel + '/') || rel === '';
    for (const d of this.safeDirs) if (d !== '' && under(d)) this.safeDirs.delete(d);
    this.dirs = this.dirs.filter((d) => !under(d.rel));
  }

  /**
   * Make sure every parent of rel is a real directory inside the root, creating missing ones
   * 0755 root (or, with create false, refusing a path whose parents are missing).
   */
  private async parents(rel: string, create = true): Promise<void> {
    const parts = rel.split('/');
    parts.pop();
    let cur = '';
    for (const p of parts) {
      cur = cur ? `${cur}/${p}` : p;
      if (this.safeDirs.has(cur)) continue;
      const st = await fsp.lstat(this.abs(cur)).catch(() => undefined);
      if (!st) {
        if (!create) throw new ExtractError(`${JSON.stringify(rel)}: ${JSON.stringify(cur)} is not in the layer`);
        await fsp.mkdir(this.abs(cur), { mode: 0o755 });
        this.createdHere.add(cur);
      } else if (st.isSymbolicLink()) {
        throw new ExtractError(`${JSON.stringify(rel)} goes through the symlink ${JSON.stringify(cur)}`);
      } else if (!st.isDirectory()) {
        throw new ExtractError(`${JSON.stringify(rel)}: ${JSON.stringify(cur)} is not a directory`);
      }
      this.safeDirs.add(cur);
    }
  }

  /** Begin an entry; its data (if any) follows through write(), then end(). */
  async begin(h: TarHeader): Promise<void> {
    if (h.type === 'g') return; // PAX global headers are ignored, as Go does
    const rel = relPath(h.name, 'entry');
    // lchown takes 0..2^32-2 (2^32-1 means "unchanged"); anything else would be a RangeError
    for (const id of [h.uid, h.gid]) if (!Number.isInteger(id) || id < 0 || id >= 0xffffffff) throw new ExtractError(`entry ${JSON.stringify(rel)}: owner ${id} is out of range`);
    const base = posix.basename(rel);
    if (!base.startsWith(WH_PREFIX)) {
      this.uids.add(h.uid);
      this.gids.add(h.gid);
    }
    if (rel === '') return; // the root entry: Unpack skips it when the directory exists
    await this.parents(rel);
    const dir = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);
    if (base === WH_OPAQUE) return this.opaque(dir);
    if (base.startsWith(WH_PREFIX)) {
      const target = base.slice(WH_PREFIX.length);
      // ".wh.", ".wh.." and ".wh..." would remove the directory itself or its parent (the layer root's parent)
      if (target === '' || target === '.' || target === '..') throw new ExtractError(`whiteout ${JSON.stringify(rel)} names no file`);
      return this.whiteout(h, dir ? `${dir}/${target}` : target);
    }

    const path = this.abs(rel);
    const existing = await fsp.lstat(path).catch(() => undefined);
    if (existing && !(existing.isDirectory() && h.type === '5')) {
      await fsp.rm(path, { recursive: true, force: true });
      this.forget(rel);
    }
    const mode = h.mode & 0o7777;
    this.createdHere.add(rel);
    switch (h.type) {
      case '5':
        if (!existing?.isDirectory()) await fsp.mkdir(path, { mode });
        this.dirs.push({ rel, path, atime: h.atime ?? h.mtime, mtime: h.mtime });
        break;
      case '0':
      case '7':
        this.file = await fsp.open(path, constants.O_CREAT | constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW, mode);
        break;
      case '3':
      case '4':
      case '6': {
        const kind = h.type === '3' ? S_IFCHR : h.type === '4' ? S_IFBLK : S_IFIFO;
        mknod(path, kind | mode, h.type === '6' ? 0n : makedev(h.devmajor, h.devminor));
        break;
      }
      case '1': {
        const target = relPath(h.linkname, 'hard link target');
        // link(2) follows symlinks in the target's directories: they must be real ones inside the layer
        await this.parents(target, false);
        const st = await fsp.lstat(this.abs(target)).catch(() => undefined);
        if (!st) throw new ExtractError(`hard link ${JSON.stringify(rel)} points to ${JSON.stringify(h.linkname.toString())}, which is not in the layer`);
        await fsp.link(this.abs(target), path);
        return; // a hard link shares its target's metadata
      }
      case '2': {
        // Absolute targets are fine (they resolve inside the container); relative ones must stay inside.
        const link = h.linkname.toString('latin1');
        if (!link.startsWith('/') && posix.normalize(posix.join(dir, link)).split('/')[0] === '..') {
          throw new ExtractError(`symlink ${JSON.stringify(rel)} points out of the layer: ${JSON.stringify(h.linkname.toString())}`);
        }
        await fsp.symlink(h.linkname, path);
        break;
      }
      default:
        throw new ExtractError(`entry ${JSON.stringify(rel)} has unsupported type ${JSON.stringify(h.type)}`);
    }
    if (h.type === '0' || h.type === '7') {
      this.pending = { h, path };
      return;
    }
    await this.finishMetadata(h, path);
  }

  async write(data: Buffer): Promise<void> {
    if (!this.file) return;
    let off = 0;
    while (off < data.length) off += (await this.file.write(data, off, data.length - off)).bytesWritten;
  }

  async end(): Promise<void> {
    if (this.file) {
      await this.file.close();
      this.file = undefined;
    }
    if (this.pending) {
      const { h, path } = this.pending;
      this.pending = undefined;
      await this.finishMetadata(h, path);
    }
  }

  /** Owner, then mode (chown clears setuid), then xattrs and times, in Go's order. */
  private async finishMetadata(h: TarHeader, path: Buffer): Promise<void> {
    await fsp.lchown(path, h.uid, h.gid);
    if (h.type !== '2') await fsp.chmod(path, h.mode & 0o7777);
    for (const [k, v] of h.xattrs) {
      if (XATTRS_TO_IGNORE.has(k)) continue;
      try {
        lsetxattr(path, k, v);
      } catch (e) {
        if (!(e instanceof SyscallError && e.errno === 95 /* ENOTSUP */)) throw e;
      }
    }
    if (h.type !== '5') {
      const atime = Math.max(h.atime ?? h.mtime, h.mtime);
      await fsp.lutimes(path, atime, h.mtime);
    }
  }

  private async whiteout(h: TarHeader, rel: string): Promise<void> {
    const path = this.abs(rel);
    await fsp.rm(path, { recursive: true, force: true });
    this.forget(rel);
    if (this.whiteouts === 'delete') return;
    try {
      mknod(path, S_IFCHR, 0n);
    } catch (e) {
      // "rm -rf /foo/bar" can give /.wh.foo and then /foo/.wh.bar: the second is moot.
      if (e instanceof SyscallError && e.errno === ENOTDIR) return;
      throw e;
    }
    await fsp.lchown(path, h.uid, h.gid);
  }

  private async opaque(dir: string): Promise<void> {
    if (this.whiteouts === 'overlay') {
      lsetxattr(this.abs(dir), this.opaqueXattr, Buffer.from('y'));
      return;
    }
    // vfs holds a full copy of the parent: drop what did not come from this layer.
    for (const name of await fsp.readdir(this.abs(dir), { encoding: 'latin1' })) {
      const rel = dir ? `${dir}/${name}` : name;
      if (!this.createdHere.has(rel)) {
        await fsp.rm(this.abs(rel), { recursive: true, force: true });
        this.forget(rel);
      }
    }
  }

  /** Directory times last, so creating files inside them does not change them. */
  async finish(): Promise<void> {
    await this.end();
    for (const d of this.dirs) await fsp.utimes(d.path, d.atime, d.mtime);
  }
}
