// A registry pull client for the concurrency benchmark, run as its own process so that its
// CPU use is the same whichever server it pulls from: C clients start together, each fetches
// one manifest and then every blob it references (config, then layers, one at a time, as a
// cautious client would), discarding the bytes but counting them against the descriptors.
//   node dist/bench/client.js '{"base":"http://127.0.0.1:5000","pulls":["bench/a:1",...],"timeoutMs":600000}'
// Prints one JSON line: { wallMs, bytes, pulls, errors, ttfbMs: [...], manifestMs: [...] }.
import http from 'node:http';

export interface ClientJob {
  base: string;
  /** one entry per concurrent client: "repo:tag" */
  pulls: string[];
  timeoutMs: number;
}

export interface ClientResult {
  wallMs: number;
  bytes: number;
  pulls: number;
  errors: string[];
  /** request sent → first body byte, per blob */
  ttfbMs: number[];
  /** request sent → whole manifest received */
  manifestMs: number[];
}

const ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const now = () => Number(process.hrtime.bigint()) / 1e6;

function get(url: string, accept: string | undefined, signal: AbortSignal, onFirst: () => void, keep: boolean): Promise<{ status: number; bytes: number; body?: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, signal, headers: accept ? { Accept: accept } : {} }, (res) => {
      let bytes = 0;
      let first = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        if (first) {
          first = false;
          onFirst();
        }
        bytes += c.length;
        if (keep) chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, body: keep ? Buffer.concat(chunks) : undefined }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`${url}: aborted`)));
    });
    req.on('error', reject);
  });
}

async function pullOne(base: string, ref: string, signal: AbortSignal, out: ClientResult): Promise<void> {
  const i = ref.lastIndexOf(':');
  const repo = ref.slice(0, i);
  const tag = ref.slice(i + 1);
  const t0 = now();
  const m = await get(`${base}/v2/${repo}/manifests/${tag}`, ACCEPT, signal, () => {}, true);
  if (m.status !== 200) throw new Error(`${ref}: manifest status ${m.status}`);
  out.manifestMs.push(now() - t0);
  out.bytes += m.bytes;
  const manifest = JSON.parse(m.body!.toString('utf8')) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
  for (const d of [manifest.config, ...manifest.layers]) {
    const t = now();
    let ttfb = -1;
    const r = await get(`${base}/v2/${repo}/blobs/${d.digest}`, undefined, signal, () => { ttfb = now() - t; }, false);
    if (r.status !== 200) throw new Error(`${ref}: blob ${d.digest} status ${r.status}`);
    if (r.bytes !== d.size) throw new Error(`${ref}: blob ${d.digest}: ${r.bytes} bytes, expected ${d.size}`);
    if (ttfb >= 0) out.ttfbMs.push(ttfb);
    out.bytes += r.bytes;
  }
  out.pulls++;
}

export async function runClients(job: ClientJob): Promise<ClientResult> {
  const out: ClientResult = { wallMs: 0, bytes: 0, pulls: 0, errors: [], ttfbMs: [], manifestMs: [] };
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error('timeout')), job.timeoutMs);
  const t0 = now();
  await Promise.all(job.pulls.map((ref) => pullOne(job.base, ref, ac.signal, out).catch((e: Error) => { out.errors.push(e.message); })));
  out.wallMs = now() - t0;
  clearTimeout(timer);
  agent.destroy();
  return out;
}

if (process.argv[1]?.endsWith('client.js')) {
  runClients(JSON.parse(process.argv[2]) as ClientJob).then(
    (r) => process.stdout.write(JSON.stringify(r) + '\n'),
    (e: Error) => {
      process.stderr.write(`client: ${e.message}\n`);
      process.exitCode = 1;
    },
  );
}
