// Which manifest a tag was pushed with. c/storage keeps one record per image (per config), so
// the same image pushed as v2s2 and as OCI under two tags has one `manifest` item: csreg
// remembers, in its own state directory, the digest each tag was pushed with, and the tag
// serves that manifest (kept as `manifest-<digest>` big data) while the image still has it.
import { join } from 'node:path';
import { StateFile } from './state-file.js';

export class TagManifests {
  private readonly file: StateFile<Record<string, string>>;

  constructor(stateDir: string) {
    this.file = new StateFile(join(stateDir, 'tag-manifests.json'), () => ({}));
  }

  /** The digest a store name (`repo:tag`) was last pushed with. */
  get(storeName: string): string | undefined {
    return this.file.get()[storeName];
  }

  set(storeName: string, digest: string): Promise<void> {
    return this.file.update((m) => {
      m[storeName] = digest;
    });
  }
}
