// Big-data keys become file names as store.go's makeBigDataBaseName does: scan the key rune by
// rune and stop at the first one that is not [.0-9a-z] (multi-byte runes stop it too). The
// stopping rune itself is consumed, so only when bytes remain *after* it is the name
// "=" + padded base64 of the key; a bad last character goes unnoticed ("abc:" stays "abc:").
// Copied exactly, or podman would not find the file.
export function bigDataFileName(key: string): string {
  const total = Buffer.byteLength(key, 'utf8');
  let consumed = 0;
  for (const ch of key) {
    const size = Buffer.byteLength(ch, 'utf8');
    consumed += size;
    const ok = size === 1 && (ch === '.' || (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z'));
    if (!ok) break;
  }
  return consumed < total ? '=' + Buffer.from(key, 'utf8').toString('base64') : key;
}
