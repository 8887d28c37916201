// Prometheus metrics, as distribution serves them on its debug listener (http.debug.addr with
// prometheus enabled): on an address of their own, never the registry's, in the text
// exposition format (0.0.4). Requests by route, method and status, their durations and the
// bytes sent; requests in flight; what the store and the caches hold; the process's CPU and
// memory. Counted where each request's log line is written (server.ts).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** request duration buckets, in seconds (a manifest in milliseconds, a large layer in seconds) */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const METHODS = new Set(['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE']);

interface Histogram { buckets: number[]; sum: number; count: number }

/** Gauges read at each scrape: name → [help, value] (undefined: left out). */
export type Gauges = () => Promise<Record<string, [string, number | undefined]>>;

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly durations = new Map<string, Histogram>();
  private readonly sent = new Map<string, number>();
  inFlight = 0;

  /** One finished (or cut off) request; route: the API it belongs to (server.ts apiRoute), a bounded label. */
  observe(method: string | undefined, route: string, status: number, seconds: number, bytes: number): void {
    const m = method && METHODS.has(method) ? method : 'OTHER';
    const key = `route="${route}",method="${m}"`;
    const counted = `${key},code="${status}"`;
    this.requests.set(counted, (this.requests.get(counted) ?? 0) + 1);
    let h = this.durations.get(key);
    if (!h) this.durations.set(key, (h = { buckets: BUCKETS.map(() => 0), sum: 0, count: 0 }));
    BUCKETS.forEach((le, i) => { if (seconds <= le) h!.buckets[i]++; });
    h.sum += seconds;
    h.count++;
    this.sent.set(key, (this.sent.get(key) ?? 0) + bytes);
  }

  /** The exposition: these counters, then the gauges, then the process's. */
  async render(gauges: Gauges): Promise<string> {
    const out: string[] = [];
    const head = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    head('csreg_http_requests_total', 'counter', 'HTTP requests answered, by API route, method and status code.');
    for (const [k, v] of this.requests) out.push(`csreg_http_requests_total{${k}} ${v}`);
    head('csreg_http_request_duration_seconds', 'histogram', 'Time from a request\'s arrival to its response\'s end, by API route and method.');
    for (const [k, h] of this.durations) {
      BUCKETS.forEach((le, i) => out.push(`csreg_http_request_duration_seconds_bucket{${k},le="${le}"} ${h.buckets[i]}`));
      out.push(`csreg_http_request_duration_seconds_bucket{${k},le="+Inf"} ${h.count}`);
      out.push(`csreg_http_request_duration_seconds_sum{${k}} ${h.sum}`, `csreg_http_request_duration_seconds_count{${k}} ${h.count}`);
    }
    head('csreg_http_response_bytes_total', 'counter', 'Bytes sent (headers and bodies), by API route and method.');
    for (const [k, v] of this.sent) out.push(`csreg_http_response_bytes_total{${k}} ${v}`);
    head('csreg_http_requests_in_flight', 'gauge', 'Requests being answered now.');
    out.push(`csreg_http_requests_in_flight ${this.inFlight}`);
    for (const [name, [help, v]] of Object.entries(await gauges())) {
      if (v === undefined) continue;
      head(name, 'gauge', help);
      out.push(`${name} ${v}`);
    }
    const cpu = process.cpuUsage();
    const mem = process.memoryUsage();
    head('process_cpu_seconds_total', 'counter', 'User and system CPU time spent, in seconds.');
    out.push(`process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`);
    head('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.');
    out.push(`process_resident_memory_bytes ${mem.rss}`);
    head('process_start_time_seconds', 'gauge', 'Start time of the process since the Unix epoch, in seconds.');
    out.push(`process_start_time_seconds ${Math.round(Date.now() / 1000 - process.uptime())}`);
    head('nodejs_heap_used_bytes', 'gauge', 'V8 heap in use, in bytes.');
    out.push(`nodejs_heap_used_bytes ${mem.heapUsed}`);
    return out.join('\n') + '\n';
  }
}

/** The metrics listener: GET `path` answers the exposition, anything else 404. */
export function startMetricsServer(addr: [host: string, port: string], path: string, metrics: Metrics, gauges: Gauges): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://metrics');
    if (url.pathname !== path || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    metrics.render(gauges).then((body) => {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    }, (e: Error) => {
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`${e.message}\n`);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(addr[1]), addr[0], () => {
      const a = server.address() as AddressInfo;
      resolve({ url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}${path}`, server });
    });
  });
}
