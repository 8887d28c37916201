// Terminal output for the CLI: aligned tables, JSON, and a progress line on stderr.

export function printTable(headers: string[], rows: string[][], out: NodeJS.WritableStream = process.stdout): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  out.write(line(headers) + '\n');
  for (const r of rows) out.write(line(r) + '\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function humanBytes(n: number | undefined): string {
  if (n === undefined || n < 0) return '-';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** A progress line on stderr, redrawn at most ~10 times a second; silent when stderr is not a TTY. */
export class Progress {
  private last = 0;
  private readonly started = Date.now();
  readonly enabled: boolean;

  constructor(private readonly label: string, private readonly total?: number, force = false) {
    this.enabled = force || process.stderr.isTTY === true;
  }

  update(done: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    this.draw(done);
  }

  private draw(done: number): void {
    const secs = Math.max((Date.now() - this.started) / 1000, 0.001);
    const rate = `${humanBytes(done / secs)}/s`;
    let bar = '';
    if (this.total) {
      const frac = Math.min(done / this.total, 1);
      const w = 30;
      bar = `[${'#'.repeat(Math.round(frac * w)).padEnd(w, '.')}] ${(frac * 100).toFixed(0).padStart(3)}% `;
    }
    process.stderr.write(`\r${this.label} ${bar}${humanBytes(done)}${this.total ? ' / ' + humanBytes(this.total) : ''} ${rate}   `);
  }

  finish(done: number): void {
    if (!this.enabled) return;
    this.draw(done);
    process.stderr.write('\n');
  }
}
