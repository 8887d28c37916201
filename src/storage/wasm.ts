// The WebAssembly parts (src/*/wasm/*.c, compiled by scripts/build-wasm.sh into dist/ beside the
// modules that load them): each compiled once per thread; where one is missing, its caller
// runs its TypeScript version, which stays the reference (tests require both to agree).
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const modules = new Map<string, WebAssembly.Module | undefined>();
const made = new Map<string, number>();
let enabled = true;

const nameOf = (url: URL) => basename(fileURLToPath(url), '.wasm');

/** Instances of NAME.wasm made so far (tests check that callers use them, not only that they load). */
export const wasmInstancesMade = (name: string): number => made.get(name) ?? 0;

/** The compiled module at url (a .wasm file), if built and WebAssembly is on. */
export function wasmModule(url: URL): WebAssembly.Module | undefined {
  if (!enabled) return undefined;
  if (!modules.has(url.href)) {
    try {
      modules.set(url.href, new WebAssembly.Module(readFileSync(url)));
    } catch {
      modules.set(url.href, undefined);
    }
  }
  return modules.get(url.href);
}

/** A new instance of the module at url (its own memory), if built and WebAssembly is on. */
export function wasmInstance<T>(url: URL): (T & { memory: WebAssembly.Memory }) | undefined {
  const m = wasmModule(url);
  if (!m) return undefined;
  made.set(nameOf(url), wasmInstancesMade(nameOf(url)) + 1);
  return new WebAssembly.Instance(m, {}).exports as unknown as T & { memory: WebAssembly.Memory };
}

/** Whether callers from now on use WebAssembly; off: their TypeScript versions (tests compare the two). */
export function useWasm(on: boolean): void {
  enabled = on;
}
