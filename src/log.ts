// Structured logs: one JSON object per line, or a human-readable line in text mode.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(opts: { level?: LogLevel; format?: 'json' | 'text'; out?: NodeJS.WritableStream } = {}): Logger {
  const min = ORDER[opts.level ?? 'info'];
  const out = opts.out ?? process.stderr;
  const format = opts.format ?? 'json';
  const write = (level: LogLevel, msg: string, fields: Record<string, unknown> = {}) => {
    if (ORDER[level] < min) return;
    const time = new Date().toISOString();
    if (format === 'json') {
      out.write(JSON.stringify({ time, level, msg, ...fields }) + '\n');
    } else {
      const kv = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
      out.write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${kv ? ' ' + kv : ''}\n`);
    }
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

export const isLogLevel = (s: string): s is LogLevel => s in ORDER;
