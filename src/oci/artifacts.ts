// Pushed artifacts (manifests whose config is not an image config: signatures, SBOMs,
// attestations). containers-storage has no place for them — podman refuses to list a store
// holding an image record it cannot read as an image — so csreg keeps them itself: the
// manifest and its blobs in the blob cache, and this index (repository → entries) in its
// state directory. They are served by digest and tag, and listed by the referrers API.
import { join } from 'node:path';
import type { BlobCache } from './blob-cache.js';
import type { ParsedManifest } from './manifest.js';
import { StateFile } from './state-file.js';
import { writeFile } from 'node:fs/promises';

export interface Artifact {
  digest: string;
  mediaType: string;
  size: number;
  artifactType?: string;
  subject?: string;
  annotations?: Record<string, string>;
  /** config and layer digests, kept in the blob cache */
  blobs: string[];
  tags: string[];
}

export class Artifacts {
  private readonly file: StateFile<Record<string, Artifact[]>>;

  constructor(stateDir: string, private readonly cache: BlobCache) {
    this.file = new StateFile(join(stateDir, 'artifacts.json'), () => ({}));
  }

  /** An artifact of the repository by digest or tag, with its manifest still cached. */
  get(repo: string, ref: string): Artifact | undefined {
    const a = (this.file.get()[repo] ?? []).find((x) => x.digest === ref || x.tags.includes(ref));
    return a && this.cache.size(a.digest) !== undefined ? a : undefined;
  }

  /** Does some repository keep an artifact with this manifest digest (still cached)? */
  has(digest: string): boolean {
    return Object.values(this.file.get()).some((list) => list.some((a) => a.digest === digest)) && this.cache.size(digest) !== undefined;
  }

  all(repo: string): Artifact[] {
    return this.file.get()[repo] ?? [];
  }

  repositories(): string[] {
    return Object.keys(this.file.get()).filter((r) => this.all(r).length);
  }

  /** Every digest the artifacts keep in the cache (their manifests and blobs). */
  referenced(): Set<string> {
    return new Set(Object.values(this.file.get()).flat().flatMap((a) => [a.digest, ...a.blobs]));
  }

  async put(repo: string, tag: string | undefined, bytes: Buffer, digest: string, m: ParsedManifest): Promise<void> {
    if (this.cache.size(digest) === undefined) {
      const tmp = await this.cache.scratch();
      await writeFile(tmp, bytes, { mode: 0o600 });
      if (!(await this.cache.adopt(tmp, digest))) throw new Error(`manifest bytes do not have digest ${digest}`);
    }
    await this.file.update((doc) => {
      const list = (doc[repo] ??= []);
      if (tag) for (const a of list) a.tags = a.tags.filter((t) => t !== tag);
      let a = list.find((x) => x.digest === digest);
      if (!a) {
        a = {
          digest, mediaType: m.mediaType, size: bytes.length, artifactType: m.artifactType ?? m.config?.mediaType,
          subject: m.subject?.digest, annotations: m.annotations, blobs: [...(m.config ? [m.config.digest] : []), ...m.layers.map((l) => l.digest)], tags: [],
        };
        list.push(a);
      }
      if (tag) a.tags.push(tag);
    });
  }

  /** Untag (a tag) or forget (a digest); false when the repository has no such artifact. */
  async remove(repo: string, ref: string): Promise<boolean> {
    const a = this.get(repo, ref);
    if (!a) return false;
    await this.file.update((doc) => {
      if (a.digest === ref) doc[repo] = doc[repo].filter((x) => x.digest !== ref);
      else a.tags = a.tags.filter((t) => t !== ref);
      if (!doc[repo].length) delete doc[repo];
    });
    return true;
  }
}
