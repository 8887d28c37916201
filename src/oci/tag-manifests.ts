// Which manifest a tag was pushed with. c/storage keeps one record per image (per config), so
// the same image pushed as v2s2 and as OCI under two tags has one `manifest` item: csreg
// remembers, in its own state directory, the digest each tag was pushed with, and the tag
// serves that manifest (kept as `manifest-<digest>` big data) while the image still has it.
import { promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWrite } from '../storage/writer.js';

export class TagManifests {
  private readonly file: string;
  private map: Record<string, string> | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(stateDir: string) {
    this.file = join(stateDir, 'tag-manifests.json');
  }

  private load(): Record<string, string> {
    if (!this.map) {
      try {
        this.map = JSON.parse(readFileSync(this.file, 'utf8')) as Record<string, string>;
      } catch {
        this.map = {};
      }
    }
    return this.map;
  }

  /** The digest a store name (`repo:tag`) was last pushed with. */
  get(storeName: string): string | undefined {
    return this.load()[storeName];
  }

  set(storeName: string, digest: string): Promise<void> {
    this.load()[storeName] = digest;
    const data = JSON.stringify(this.map);
    this.writing = this.writing.then(async () => {
      await fsp.mkdir(join(this.file, '..'), { recursive: true, mode: 0o700 });
      await atomicWrite(this.file, data);
    });
    return this.writing;
  }
}
