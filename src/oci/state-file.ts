// A small JSON document in csreg's state directory, read once and rewritten atomically on
// each change (changes are serialized, so the file always holds a whole document).
import { promises as fsp, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { atomicWrite } from '../storage/writer.js';

export class StateFile<T> {
  private doc: T | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(readonly path: string, private readonly empty: () => T) {}

  get(): T {
    if (this.doc === undefined) {
      try {
        this.doc = JSON.parse(readFileSync(this.path, 'utf8')) as T;
      } catch {
        this.doc = this.empty();
      }
    }
    return this.doc;
  }

  /** Resolves once every change so far is in the file. */
  written(): Promise<void> {
    return this.writing.catch(() => undefined);
  }

  /** Change the document in memory, then persist it. */
  update(change: (doc: T) => void): Promise<void> {
    change(this.get());
    const data = JSON.stringify(this.doc);
    this.writing = this.writing.then(async () => {
      await fsp.mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      await atomicWrite(this.path, data);
    });
    return this.writing;
  }
}
