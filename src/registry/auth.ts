// Authentication as distribution/registry does it: htpasswd files with bcrypt entries (Basic
// auth), or bearer tokens (JWT) from a token service whose signing keys come from a PEM
// certificate bundle. This module only says who a request is and what a token grants; what
// an identity may do is access.ts, and the HTTP answers are built by the caller.
import { createHash, createPublicKey, verify as cryptoVerify, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import bcrypt from 'bcryptjs';

export type Action = 'pull' | 'push' | 'delete';

/** One resource scope of the token spec: `repository:NAME:pull,push`, `registry:catalog:*`. */
export interface ResourceScope {
  type: string;
  name: string;
  actions: string[];
}

export interface AuthConfig {
  htpasswd?: { realm: string; path: string };
  token?: { realm: string; service: string; issuer: string; rootcertbundle: string };
  /** clients without credentials may pull (what access rules allow "*" to pull) */
  anonymousPull?: boolean;
}

export type Credential =
  | { kind: 'anonymous' }
  | { kind: 'user'; name: string; grants?: ResourceScope[] }
  | { kind: 'invalid'; reason: string };

/** Go's %q for the ASCII strings realms and scopes are made of. */
const quote = (s: string): string => JSON.stringify(s);

/** Scopes as distribution writes them in a challenge: actions sorted, scopes separated by a space. */
export function scopeParam(scopes: ResourceScope[]): string {
  return scopes.map((s) => `${s.type}:${s.name}:${[...new Set(s.actions)].sort().join(',')}`).join(' ');
}

// ---------------------------------------------------------------- htpasswd

let dummyHash: string | undefined;

interface HtpasswdEntries { mtimeMs: number; size: number; users: Map<string, string> }

/** An htpasswd file, re-read when it changes (as distribution does). Only bcrypt entries count. */
export class Htpasswd {
  private entries?: HtpasswdEntries;
  /** credentials that verified, by hash of user, password and the entry: bcrypt costs tens of ms */
  private readonly good = new Map<string, number>();
  warnings: string[] = [];

  constructor(readonly path: string, private readonly cacheMs = 5 * 60_000) {
    this.load(); // fail at start, not at the first request, when the file is unreadable
  }

  private load(): Map<string, string> {
    const st = statSync(this.path);
    if (this.entries && this.entries.mtimeMs === st.mtimeMs && this.entries.size === st.size) return this.entries.users;
    const users = new Map<string, string>();
    const warnings: string[] = [];
    for (const [i, raw] of readFileSync(this.path, 'utf8').split('\n').entries()) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      const colon = line.indexOf(':');
      if (colon <= 0) {
        warnings.push(`${this.path}:${i + 1}: not "user:hash"`);
        continue;
      }
      const hash = line.slice(colon + 1);
      if (!/^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
        warnings.push(`${this.path}:${i + 1}: user ${line.slice(0, colon)} is not a bcrypt entry (htpasswd -B): ignored`);
        continue;
      }
      users.set(line.slice(0, colon), hash);
    }
    this.entries = { mtimeMs: st.mtimeMs, size: st.size, users };
    this.warnings = warnings;
    this.good.clear();
    return users;
  }

  async verify(user: string, password: string): Promise<boolean> {
    let users: Map<string, string>;
    try {
      users = this.load();
    } catch {
      users = this.entries?.users ?? new Map(); // a file being replaced: keep the last good copy
    }
    const hash = users.get(user);
    if (!hash) {
      // the same work as a real check, so a missing user does not answer faster
      await bcrypt.compare(password, (dummyHash ??= bcrypt.hashSync('csreg', 5)));
      return false;
    }
    const key = createHash('sha256').update(`${user}\0${password}\0${hash}`).digest('hex');
    const now = Date.now();
    const until = this.good.get(key);
    if (until && until > now) return true;
    if (!(await bcrypt.compare(password, hash))) return false;
    if (this.good.size > 10_000) this.good.clear();
    this.good.set(key, now + this.cacheMs);
    return true;
  }
}

// ---------------------------------------------------------------- tokens

export class TokenError extends Error {
  override name = 'TokenError';
}

interface Claims {
  iss?: string;
  sub?: string;
  aud?: string | string[];
  exp?: number;
  nbf?: number;
  access?: { type?: string; name?: string; actions?: string[] }[];
}

/** clock skew allowed on exp and nbf, as distribution's Leeway */
export const TOKEN_LEEWAY_S = 60;

const ALGS: Record<string, { hash: string | null; kty: string; pss?: boolean; curve?: string }> = {
  RS256: { hash: 'sha256', kty: 'rsa' }, RS384: { hash: 'sha384', kty: 'rsa' }, RS512: { hash: 'sha512', kty: 'rsa' },
  PS256: { hash: 'sha256', kty: 'rsa', pss: true }, PS384: { hash: 'sha384', kty: 'rsa', pss: true }, PS512: { hash: 'sha512', kty: 'rsa', pss: true },
  ES256: { hash: 'sha256', kty: 'ec', curve: 'prime256v1' }, ES384: { hash: 'sha384', kty: 'ec', curve: 'secp384r1' }, ES512: { hash: 'sha512', kty: 'ec', curve: 'secp521r1' },
  EdDSA: { hash: null, kty: 'ed25519' },
};

const b64url = (s: string): Buffer => {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new TokenError('malformed token');
  return Buffer.from(s, 'base64url');
};

/** RFC 7638 thumbprint (what distribution 3 uses as a trusted key's ID). */
export function jwkThumbprint(key: KeyObject): string {
  const j = key.export({ format: 'jwk' }) as Record<string, string>;
  const members = j.kty === 'RSA' ? { e: j.e, kty: j.kty, n: j.n } : j.kty === 'EC' ? { crv: j.crv, kty: j.kty, x: j.x, y: j.y } : { crv: j.crv, kty: j.kty, x: j.x };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

/** libtrust's key ID (distribution 2, docker_auth, Harbor): base32 of sha256(SPKI)[:30], in groups of 4. */
export function libtrustKeyId(key: KeyObject): string {
  const sum = createHash('sha256').update(key.export({ format: 'der', type: 'spki' })).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of sum) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out.match(/.{4}/g)!.join(':');
}

function certValidNow(c: X509Certificate, now: number): boolean {
  return Date.parse(c.validFrom) <= now + TOKEN_LEEWAY_S * 1000 && now - TOKEN_LEEWAY_S * 1000 <= Date.parse(c.validTo);
}

/** Verifies JWTs the way distribution's token access controller does. */
export class TokenVerifier {
  readonly roots: X509Certificate[];
  private readonly trusted = new Map<string, KeyObject>();

  constructor(readonly opts: { service: string; issuer: string; rootcertbundle: string }) {
    const pem = readFileSync(opts.rootcertbundle, 'utf8');
    this.roots = (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));
    if (!this.roots.length) throw new Error(`${opts.rootcertbundle}: token auth needs at least one PEM certificate (the token signer's)`);
    for (const c of this.roots) {
      this.trusted.set(jwkThumbprint(c.publicKey), c.publicKey);
      this.trusted.set(libtrustKeyId(c.publicKey), c.publicKey);
    }
  }

  /** The key that signed the token: from an x5c chain up to a root, a trusted jwk, or a trusted kid. */
  private signingKey(header: { x5c?: unknown; jwk?: unknown; kid?: unknown }): KeyObject {
    const now = Date.now();
    let x5c = header.x5c;
    let jwkKey: KeyObject | undefined;
    if (x5c === undefined && header.jwk && typeof header.jwk === 'object') {
      const jwk = header.jwk as Record<string, unknown>;
      x5c = jwk.x5c;
      try {
        const { x5c: _chain, ...rest } = jwk;
        jwkKey = createPublicKey({ key: rest as never, format: 'jwk' });
      } catch {
        throw new TokenError('token header jwk is not a public key');
      }
      if (x5c === undefined) {
        const k = this.trusted.get(jwkThumbprint(jwkKey));
        if (!k) throw new TokenError('untrusted JWK with no certificate chain');
        return k;
      }
    }
    if (x5c !== undefined) {
      if (!Array.isArray(x5c) || !x5c.length || !x5c.every((c) => typeof c === 'string')) throw new TokenError('malformed x5c');
      let chain: X509Certificate[];
      try {
        chain = (x5c as string[]).map((c) => new X509Certificate(Buffer.from(c, 'base64')));
      } catch {
        throw new TokenError('x5c certificate does not parse');
      }
      for (const c of chain) if (!certValidNow(c, now)) throw new TokenError('x5c certificate expired or not yet valid');
      for (let i = 0; i + 1 < chain.length; i++) {
        if (!chain[i].checkIssued(chain[i + 1]) || !chain[i].verify(chain[i + 1].publicKey)) throw new TokenError('x5c chain does not verify');
      }
      const top = chain[chain.length - 1];
      const anchored = this.roots.some((r) => r.fingerprint256 === top.fingerprint256
        || (certValidNow(r, now) && top.checkIssued(r) && top.verify(r.publicKey)));
      if (!anchored) throw new TokenError('x5c chain does not lead to a certificate of the root bundle');
      const leaf = chain[0].publicKey;
      if (jwkKey && jwkThumbprint(jwkKey) !== jwkThumbprint(leaf)) throw new TokenError('jwk does not match its certificate');
      return leaf;
    }
    if (typeof header.kid === 'string' && header.kid) {
      const k = this.trusted.get(header.kid);
      if (!k) throw new TokenError(`token signed by untrusted key with ID ${JSON.stringify(header.kid)}`);
      return k;
    }
    throw new TokenError('token names no signing key (x5c, jwk or kid)');
  }

  /** The verified claims, or a TokenError. */
  verify(raw: string, nowMs = Date.now()): Claims {
    const parts = raw.split('.');
    if (parts.length !== 3) throw new TokenError('malformed token');
    let header: { alg?: unknown; x5c?: unknown; jwk?: unknown; kid?: unknown };
    let claims: Claims;
    try {
      header = JSON.parse(b64url(parts[0]).toString('utf8'));
      claims = JSON.parse(b64url(parts[1]).toString('utf8'));
    } catch {
      throw new TokenError('malformed token');
    }
    if (!header || typeof header !== 'object' || !claims || typeof claims !== 'object') throw new TokenError('malformed token');
    const alg = typeof header.alg === 'string' ? ALGS[header.alg] : undefined;
    if (!alg) throw new TokenError(`unsupported token algorithm ${JSON.stringify(header.alg)}`);
    const key = this.signingKey(header);
    // the algorithm must fit the key: no RS/ES confusion, no HMAC with a public key
    const kty = key.asymmetricKeyType;
    if (kty !== alg.kty && !(alg.kty === 'rsa' && alg.pss && kty === 'rsa-pss')) throw new TokenError(`token algorithm ${String(header.alg)} does not fit a ${kty} key`);
    if (alg.curve && key.asymmetricKeyDetails?.namedCurve !== alg.curve) throw new TokenError(`token algorithm ${String(header.alg)} does not fit the key's curve`);
    const sig = b64url(parts[2]);
    const data = Buffer.from(`${parts[0]}.${parts[1]}`);
    const ok = alg.kty === 'rsa'
      ? cryptoVerify(alg.hash, data, alg.pss ? { key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: -1 } : key, sig)
      : alg.kty === 'ec'
        ? cryptoVerify(alg.hash, data, { key, dsaEncoding: 'ieee-p1363' }, sig)
        : cryptoVerify(null, data, key, sig);
    if (!ok) throw new TokenError('token signature does not verify');
    if (claims.iss !== this.opts.issuer) throw new TokenError(`token from untrusted issuer ${JSON.stringify(claims.iss)}`);
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(this.opts.service)) throw new TokenError(`token intended for another audience ${JSON.stringify(claims.aud)}`);
    const now = nowMs / 1000;
    if (typeof claims.exp !== 'number' || now > claims.exp + TOKEN_LEEWAY_S) throw new TokenError('token expired');
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || now < claims.nbf - TOKEN_LEEWAY_S)) throw new TokenError('token not valid yet');
    if (claims.access !== undefined && !Array.isArray(claims.access)) throw new TokenError('malformed access claim');
    return claims;
  }
}

/** Whether what a token grants covers every scope needed ("*" stands for every action). */
export function grantsCover(grants: ResourceScope[], needed: ResourceScope[]): boolean {
  return needed.every((n) => n.actions.every((a) => grants.some((g) => g.type === n.type && g.name === n.name && (g.actions.includes(a) || g.actions.includes('*')))));
}

// ---------------------------------------------------------------- the authenticator

export class Authenticator {
  readonly htpasswd?: Htpasswd;
  readonly tokens?: TokenVerifier;
  readonly anonymousPull: boolean;

  constructor(readonly config: AuthConfig) {
    if (config.htpasswd && config.token) throw new Error('auth: configure either htpasswd or token, not both (as distribution)');
    if (config.htpasswd) {
      if (!config.htpasswd.realm) throw new Error('auth.htpasswd.realm must be set');
      if (!config.htpasswd.path) throw new Error('auth.htpasswd.path must be set');
      this.htpasswd = new Htpasswd(config.htpasswd.path);
    } else if (config.token) {
      for (const k of ['realm', 'service', 'issuer', 'rootcertbundle'] as const) if (!config.token[k]) throw new Error(`auth.token.${k} must be set`);
      this.tokens = new TokenVerifier(config.token);
    } else {
      throw new Error('auth: neither htpasswd nor token is configured');
    }
    this.anonymousPull = config.anonymousPull === true;
  }

  get scheme(): 'basic' | 'bearer' {
    return this.tokens ? 'bearer' : 'basic';
  }

  /** Who the request is. Empty Basic credentials (what containers/image sends without --creds) are anonymous. */
  async identify(req: IncomingMessage): Promise<Credential> {
    const header = req.headers.authorization;
    if (!header) return { kind: 'anonymous' };
    const sp = header.indexOf(' ');
    const scheme = (sp < 0 ? header : header.slice(0, sp)).toLowerCase();
    const value = sp < 0 ? '' : header.slice(sp + 1).trim();
    if (this.htpasswd) {
      if (scheme !== 'basic') return { kind: 'invalid', reason: 'Basic credentials expected' };
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return { kind: 'invalid', reason: 'malformed Basic credentials' };
      const user = decoded.slice(0, colon);
      const password = decoded.slice(colon + 1);
      if (!user && !password) return { kind: 'anonymous' };
      if (await this.htpasswd.verify(user, password)) return { kind: 'user', name: user };
      return { kind: 'invalid', reason: `authentication failed for user ${JSON.stringify(user)}` };
    }
    if (scheme !== 'bearer' || !value) return { kind: 'anonymous' }; // as distribution: "token required" challenge
    try {
      const claims = this.tokens!.verify(value);
      const grants = (claims.access ?? []).filter((a) => a && typeof a.type === 'string' && typeof a.name === 'string' && Array.isArray(a.actions))
        .map((a) => ({ type: a.type!, name: a.name!, actions: a.actions!.filter((x) => typeof x === 'string') }));
      if (!claims.sub) return { kind: 'anonymous' };
      return { kind: 'user', name: claims.sub, grants };
    } catch (e) {
      if (e instanceof TokenError) return { kind: 'invalid', reason: e.message };
      throw e;
    }
  }

  /** The WWW-Authenticate value, exactly as distribution formats it. */
  challenge(scopes: ResourceScope[], error?: 'invalid_token' | 'insufficient_scope'): string {
    if (this.htpasswd) return `Basic realm=${quote(this.config.htpasswd!.realm)}`;
    const t = this.config.token!;
    let s = `Bearer realm=${quote(t.realm)},service=${quote(t.service)}`;
    const scope = scopeParam(scopes);
    if (scope) s += `,scope=${quote(scope)}`;
    if (error) s += `,error=${quote(error)}`;
    return s;
  }
}
