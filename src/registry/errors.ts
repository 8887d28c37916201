// The distribution spec's error codes and their HTTP statuses.
import type { ServerResponse } from 'node:http';

export const ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  TAG_INVALID: 400,
  RANGE_INVALID: 416,
  /** OpenShift's signature API extension (signatures.ts) */
  SIGNATURE_INVALID: 400,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class RegistryError extends Error {
  override name = 'RegistryError';
  constructor(readonly code: ErrorCode, message: string, readonly detail?: unknown, readonly status: number = ERROR_STATUS[code]) {
    super(message);
  }
}

export function sendError(res: ServerResponse, err: RegistryError, head = false): void {
  const body = Buffer.from(JSON.stringify({ errors: [{ code: err.code, message: err.message, detail: err.detail ?? null }] }));
  res.writeHead(err.status, {
    'Content-Type': 'application/json',
    'Content-Length': body.length,
    'Docker-Distribution-API-Version': 'registry/2.0',
  });
  res.end(head ? undefined : body);
}
