// Where the time goes in a V8 CPU profile (node --cpu-prof): self time by function and by
// file, largest first.
//   node dist/bench/profile-top.js FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
interface Profile { nodes: ProfileNode[]; startTime: number; endTime: number; samples?: number[] }

export function summarize(p: Profile, top = 20): string {
  const total = p.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0) || 1;
  const ms = (p.endTime - p.startTime) / 1000;
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const n of p.nodes) {
    const hits = n.hitCount ?? 0;
    if (!hits) continue;
    const url = n.callFrame.url.replace(/^file:\/\/.*?\/(dist\/|node_modules\/)/, '$1') || '(native)';
    const fn = `${n.callFrame.functionName || '(anonymous)'} ${url}${n.callFrame.url ? ':' + (n.callFrame.lineNumber + 1) : ''}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + hits);
    byFile.set(url, (byFile.get(url) ?? 0) + hits);
  }
  const lines = [`profile: ${Math.round(ms)} ms, ${total} samples`, '', 'self time by function:'];
  const pct = (h: number) => `${((h / total) * 100).toFixed(1).padStart(5)}%`;
  for (const [k, h] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(h)}  ${k}`);
  lines.push('', 'self time by file:');
  for (const [k, h] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, Math.min(top, 12))) lines.push(`  ${pct(h)}  ${k}`);
  return lines.join('\n');
}

if (process.argv[1]?.endsWith('profile-top.js')) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: profile-top FILE.cpuprofile [N]\n');
    process.exitCode = 2;
  } else {
    process.stdout.write(summarize(JSON.parse(readFileSync(file, 'utf8')) as Profile, Number(process.argv[3] ?? 20)) + '\n');
  }
}
