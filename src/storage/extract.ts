// Applying a layer tar to a driver directory the way containers/storage's archive.Unpack
// does: same ownership, modes, times, xattrs, links, devices and fifos, whiteouts in the
// driver's form. Stricter than Go on one point: Go relies on a chroot to contain symlink
// tricks; we have none, so any entry whose path goes through a symlink, contains "..", is
// absolute, or whose link target leaves the layer is refused.
// Everything here is synchronous: it runs on a thread of its own (extract-thread.ts), where a
// call that waits for the disk holds nothing else up.
import {
  chmodSync, closeSync, constants, fchmodSync, fchownSync, fstatSync, futimesSync, linkSync, lchownSync, lstatSync, lutimesSync, mkdirSync, openSync, readdirSync,
  rmSync, symlinkSync, utimesSync, writeSync,
} from 'node:fs';
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
  | 'delete'
  /** overlay with a mount program (fuse-overlayfs, which reads AUFS whiteouts): the `.wh.` files made as they are */
  | 'keep';

const WH_PREFIX = '.wh.';
const WH_OPAQUE = '.wh..wh..opq';
const XATTRS_TO_IGNORE = new Set(['security.selinux']);
const ENOTDIR = 20;
const S_ISGID = 0o2000;
/** The regular file being written; its metadata is set once its data is in. */
interface OpenFile {
  h: TarHeader;
  path: Buffer;
  /** its directory, layer-relative */
  dir: string;
  fd: number;
}

/** A whiteout may name a whole tree (vfs keeps the parent's copy). */
const rmAll = (path: Buffer) => rmSync(path, { recursive: true, force: true });

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
  private file: OpenFile | undefined;
  private readonly safeDirs = new Set<string>(['']);
  /**
   * Directories that hold only what this extractor put there (made by it, or the root when it
   * started empty, as an overlay layer's does): a name in them not made here needs no lstat
   * to know it is absent (a 34k-file layer: a tenth of the time was such lstats).
   */
  private readonly fresh = new Set<string>();
  /**
   * Directories without the set-group-ID bit: what is created in them belongs to this process's
   * user and group, so an entry of that owner needs no chown (a 34k-file layer of root's
   * files: a tenth of the extraction's time was chowns that changed nothing).
   */
  private readonly plainDirs = new Set<string>();
  private readonly uid = process.geteuid?.() ?? -1;
  private readonly gid = process.getegid?.() ?? -1;
  /** what open, mkdir and mknod take from the mode they are given */
  private readonly umask = process.umask();
  /**
   * Does a new entry get this process's user and group as plainDirs says? Checked on the first
   * that would skip its chown (a file system mounted `grpid` gives new files their directory's
   * group); false: every entry is chowned.
   */
  private ownerAsInferred: boolean | undefined;

  /**
   * userNS: extracting in a rootless store's user namespace, as c/storage does there (InUserNS):
   * opaque directories are marked with user.overlay.opaque (trusted.* needs real root; the
   * overlay mount reads user.* with userxattr); devices, which no user namespace may make, and
   * xattrs it may not set (trusted.*) are left out (the tar-split keeps them).
   */
  constructor(readonly root: string, readonly whiteouts: WhiteoutFormat, readonly userNS = false) {
    if (readdirSync(root).length === 0) this.fresh.add('');
    this.setgidIs('', (lstatSync(root).mode & S_ISGID) !== 0);
  }

  private setgidIs(rel: string, setgid: boolean): void {
    if (setgid) this.plainDirs.delete(rel);
    else this.plainDirs.add(rel);
  }

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
    for (const d of this.fresh) if (under(d)) this.fresh.delete(d);
    for (const d of this.plainDirs) if (under(d)) this.plainDirs.delete(d);
    this.dirs = this.dirs.filter((d) => !under(d.rel));
  }

  /**
   * Make sure every parent of rel is a real directory inside the root, creating missing ones
   * 0755 root (or, with create false, refusing a path whose parents are missing).
   */
  private parents(rel: string, create = true): void {
    const parts = rel.split('/');
    parts.pop();
    let cur = '';
    for (const p of parts) {
      cur = cur ? `${cur}/${p}` : p;
      if (this.safeDirs.has(cur)) continue;
      const st = lstatSync(this.abs(cur), { throwIfNoEntry: false });
      if (!st) {
        if (!create) throw new ExtractError(`${JSON.stringify(rel)}: ${JSON.stringify(cur)} is not in the layer`);
        mkdirSync(this.abs(cur), { mode: 0o755 });
        this.createdHere.add(cur);
        this.fresh.add(cur);
        // (a new directory takes its parent's set-group-ID bit)
        this.setgidIs(cur, !this.plainDirs.has(cur.includes('/') ? cur.slice(0, cur.lastIndexOf('/')) : ''));
      } else if (st.isSymbolicLink()) {
        throw new ExtractError(`${JSON.stringify(rel)} goes through the symlink ${JSON.stringify(cur)}`);
      } else if (!st.isDirectory()) {
        throw new ExtractError(`${JSON.stringify(rel)}: ${JSON.stringify(cur)} is not a directory`);
      } else {
        this.setgidIs(cur, (st.mode & S_ISGID) !== 0);
      }
      this.safeDirs.add(cur);
    }
  }

  /** Begin an entry; its data (if any) follows through write(), then end(). */
  begin(h: TarHeader): void {
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
    this.parents(rel);
    const dir = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);
    if (base === WH_OPAQUE && this.whiteouts !== 'keep') return this.opaque(dir);
    if (base.startsWith(WH_PREFIX) && this.whiteouts !== 'keep') {
      const target = base.slice(WH_PREFIX.length);
      // ".wh.", ".wh.." and ".wh..." would remove the directory itself or its parent (the layer root's parent)
      if (target === '' || target === '.' || target === '..') throw new ExtractError(`whiteout ${JSON.stringify(rel)} names no file`);
      return this.whiteout(h, dir ? `${dir}/${target}` : target);
    }

    const path = this.abs(rel);
    const existing = this.fresh.has(dir) && !this.createdHere.has(rel) ? undefined : lstatSync(path, { throwIfNoEntry: false });
    if (existing && !(existing.isDirectory() && h.type === '5')) return this.replace(h, rel, dir, path);
    this.make(h, rel, dir, path, existing?.isDirectory() ?? false);
  }

  private replace(h: TarHeader, rel: string, dir: string, path: Buffer): void {
    rmAll(path);
    this.forget(rel);
    this.make(h, rel, dir, path, false);
  }

  /** Make the entry at path (nothing there, or the directory it names: `isDir`). */
  private make(h: TarHeader, rel: string, dir: string, path: Buffer, isDir: boolean): void {
    const mode = h.mode & 0o7777;
    this.createdHere.add(rel);
    switch (h.type) {
      case '5':
        if (!isDir) {
          mkdirSync(path, { mode });
          this.fresh.add(rel);
        }
        this.dirs.push({ rel, path, atime: h.atime ?? h.mtime, mtime: h.mtime });
        break;
      case '0':
      case '7':
        this.file = { h, path, dir, fd: openSync(path, constants.O_CREAT | constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW, mode) };
        break;
      case '3':
      case '4':
      case '6': {
        if (this.userNS && h.type !== '6') return;
        const kind = h.type === '3' ? S_IFCHR : h.type === '4' ? S_IFBLK : S_IFIFO;
        mknod(path, kind | mode, h.type === '6' ? 0n : makedev(h.devmajor, h.devminor));
        break;
      }
      case '1': {
        const target = relPath(h.linkname, 'hard link target');
        // link(2) follows symlinks in the target's directories: they must be real ones inside the layer
        this.parents(target, false);
        if (!lstatSync(this.abs(target), { throwIfNoEntry: false })) throw new ExtractError(`hard link ${JSON.stringify(rel)} points to ${JSON.stringify(h.linkname.toString())}, which is not in the layer`);
        linkSync(this.abs(target), path);
        return; // a hard link shares its target's metadata
      }
      case '2': {
        // Absolute targets are fine (they resolve inside the container); relative ones must stay inside.
        const link = h.linkname.toString('latin1');
        if (!link.startsWith('/') && posix.normalize(posix.join(dir, link)).split('/')[0] === '..') {
          throw new ExtractError(`symlink ${JSON.stringify(rel)} points out of the layer: ${JSON.stringify(h.linkname.toString())}`);
        }
        symlinkSync(h.linkname, path);
        break;
      }
      default:
        throw new ExtractError(`entry ${JSON.stringify(rel)} has unsupported type ${JSON.stringify(h.type)}`);
    }
    if (h.type === '0' || h.type === '7') return; // its metadata once its data is in (end)
    this.finishMetadata(h, dir, path, undefined, !isDir);
    if (h.type === '5') this.setgidIs(rel, (mode & S_ISGID) !== 0);
  }

  /** The next bytes of the regular file begun last. */
  write(data: Buffer): void {
    const f = this.file;
    if (!f) return;
    for (let off = 0; off < data.length; ) off += writeSync(f.fd, data, off, data.length - off);
  }

  /** A failed apply: the open file's descriptor is closed; what was written stays, as in Go. */
  abort(): void {
    const f = this.file;
    this.file = undefined;
    if (f) closeSync(f.fd);
  }

  /** The entry is complete: its file closed, its metadata set. */
  end(): void {
    const f = this.file;
    if (!f) return;
    this.file = undefined;
    try {
      this.finishMetadata(f.h, f.dir, f.path, f.fd);
    } finally {
      closeSync(f.fd);
    }
  }

  /**
   * Owner, then mode (chown clears setuid), then xattrs and times, in Go's order; through the
   * descriptor of a regular file still open (no path to resolve again). `made`: path was just
   * made in `dir` (so it has this process's user, and its group unless dir is set-group-ID).
   */
  private finishMetadata(h: TarHeader, dir: string, path: Buffer, fd?: number, made = true): void {
    let chown = !made || h.uid !== this.uid || h.gid !== this.gid || !this.plainDirs.has(dir) || this.ownerAsInferred === false;
    if (!chown && this.ownerAsInferred === undefined) {
      const st = fd === undefined ? lstatSync(path) : fstatSync(fd);
      this.ownerAsInferred = st.uid === this.uid && st.gid === this.gid;
      chown = !this.ownerAsInferred;
    }
    // made with its mode already, when the umask took no bit of it and no chown cleared a
    // set-ID bit (one of the five calls of a small file of root's; ~4% of the extraction thread)
    const modeSet = made && !chown && (h.mode & (this.umask | 0o7000)) === 0;
    if (fd !== undefined) {
      if (chown) fchownSync(fd, h.uid, h.gid);
      if (!modeSet) fchmodSync(fd, h.mode & 0o7777);
    } else {
      if (chown) lchownSync(path, h.uid, h.gid);
      if (h.type !== '2' && !modeSet) chmodSync(path, h.mode & 0o7777);
    }
    for (const [k, v] of h.xattrs) {
      if (XATTRS_TO_IGNORE.has(k)) continue;
      try {
        lsetxattr(path, k, v);
      } catch (e) {
        // (in a user namespace, trusted.* and security.* are refused: left out, as Go does)
        if (!(e instanceof SyscallError && (e.errno === 95 /* ENOTSUP */ || (this.userNS && e.errno === 1) /* EPERM */))) throw e;
      }
    }
    if (h.type !== '5') {
      const atime = Math.max(h.atime ?? h.mtime, h.mtime);
      if (fd === undefined) lutimesSync(path, atime, h.mtime);
      else futimesSync(fd, atime, h.mtime);
    }
  }

  private whiteout(h: TarHeader, rel: string): void {
    const path = this.abs(rel);
    rmAll(path);
    this.forget(rel);
    if (this.whiteouts === 'delete') return;
    try {
      mknod(path, S_IFCHR, 0n);
    } catch (e) {
      // "rm -rf /foo/bar" can give /.wh.foo and then /foo/.wh.bar: the second is moot.
      if (e instanceof SyscallError && e.errno === ENOTDIR) return;
      throw e;
    }
    lchownSync(path, h.uid, h.gid);
  }

  private opaque(dir: string): void {
    if (this.whiteouts === 'overlay') {
      lsetxattr(this.abs(dir), this.userNS ? 'user.overlay.opaque' : 'trusted.overlay.opaque', Buffer.from('y'));
      return;
    }
    // vfs holds a full copy of the parent: drop what did not come from this layer.
    for (const name of readdirSync(this.abs(dir), { encoding: 'latin1' })) {
      const rel = dir ? `${dir}/${name}` : name;
      if (!this.createdHere.has(rel)) {
        rmAll(this.abs(rel));
        this.forget(rel);
      }
    }
  }

  /** Directory times last, so creating files inside them does not change them. */
  finish(): void {
    this.end();
    for (const d of this.dirs) utimesSync(d.path, d.atime, d.mtime);
  }
}
