// Who may do what: access rules per repository glob (first match wins), combined with the
// authenticator (auth.ts) into one check the router makes before dispatching a request.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RepositoryIndex } from '../oci/names.js';
import { hostToRepo } from '../oci/names.js';
import { storeNameFor } from '../oci/commit.js';
import { RegistryError } from './errors.js';
import { grantsCover, type Action, type Authenticator, type ResourceScope } from './auth.js';

export interface AccessRule {
  /** a glob over repository names: `*` within one path segment, `**` across segments, `?` one character */
  repository: string;
  pull?: string[];
  push?: string[];
  delete?: string[];
}

/** What a request needs: nothing but a login (/v2/), the catalog, or an action on a repository. */
export type Need =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'repo'; name: string; action: Action; from?: string };

export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Check a parsed `access:` list from the config; throws with the offending entry. */
export function parseAccessRules(raw: unknown): AccessRule[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new Error('access must be a list of { repository, pull, push, delete }');
  return raw.map((r, i) => {
    if (!r || typeof r !== 'object' || typeof (r as AccessRule).repository !== 'string') throw new Error(`access[${i}]: repository (a glob) is required`);
    const rule = r as Record<string, unknown>;
    for (const k of Object.keys(rule)) if (!['repository', 'pull', 'push', 'delete'].includes(k)) throw new Error(`access[${i}]: unknown key ${k}`);
    for (const k of ['pull', 'push', 'delete']) {
      const v = rule[k];
      if (v !== undefined && (!Array.isArray(v) || !v.every((x) => typeof x === 'string'))) throw new Error(`access[${i}].${k} must be a list of identities or "*"`);
    }
    return rule as unknown as AccessRule;
  });
}

export class AccessPolicy {
  private readonly compiled: { re: RegExp; rule: AccessRule }[];

  /**
   * `authOn`: identities come from an authenticator; `anonymousPull`: anonymous clients may pull
   * (where a rule lists "*"). With auth off every client is anonymous and "*" means everyone.
   */
  constructor(readonly rules: AccessRule[], private readonly authOn: boolean, private readonly anonymousPull: boolean) {
    this.compiled = rules.map((rule) => ({ re: globToRegExp(rule.repository), rule }));
  }

  /**
   * The first rule whose glob matches any name the repository goes by (the name in the
   * request, and its full HOST/PATH name) decides, so a short alias cannot get around a rule
   * written for the full name, and a rule for the short name covers the full one. No rule
   * matching: denied (when there are rules).
   */
  allows(identity: string | undefined, names: string[], action: Action): boolean {
    const anonymousOk = !this.authOn || (action === 'pull' && this.anonymousPull);
    if (identity === undefined && !anonymousOk) return false;
    if (!this.compiled.length) return true;
    const hit = this.compiled.find((c) => names.some((n) => c.re.test(n)));
    if (!hit) return false;
    const who = hit.rule[action] ?? [];
    if (who.includes('*')) return true;
    return identity !== undefined && who.includes(identity);
  }
}

/** The names a request's repository goes by: as requested, its full name (existing, or where a push would put it), its short aliases. */
export function repositoryNames(repos: RepositoryIndex, name: string): string[] {
  const known = repos.get(name)?.name;
  let full = known;
  if (!full) {
    const storeName = storeNameFor(name, 'latest');
    const slash = storeName.indexOf('/');
    full = `${hostToRepo(storeName.slice(0, slash))}/${storeName.slice(slash + 1, storeName.lastIndexOf(':'))}`;
  }
  const names = new Set([name, full]);
  // and the short names that lead to it: PATH for HOST/PATH, and NAME for docker.io/library/NAME
  const path = full.slice(full.indexOf('/') + 1);
  for (const alias of [path, path.startsWith('library/') && full.startsWith('docker.io/') ? path.slice('library/'.length) : '']) {
    if (alias && (repos.get(alias)?.name === full || (!known && alias === name))) names.add(alias);
  }
  return [...names];
}

const ACTIONS: Record<Action, string[]> = { pull: ['pull'], push: ['pull', 'push'], delete: ['delete'] };

/** The token scopes distribution asks for: pull; pull+push for writes; delete; registry:catalog:*. */
export function scopesFor(need: Need): ResourceScope[] {
  if (need.kind === 'base') return [];
  if (need.kind === 'catalog') return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
  const s: ResourceScope[] = [{ type: 'repository', name: need.name, actions: ACTIONS[need.action] }];
  if (need.from && need.from !== need.name) s.push({ type: 'repository', name: need.from, actions: ['pull'] });
  return s;
}

export interface Grant {
  /** the authenticated identity; undefined = anonymous */
  identity?: string;
  /** whether this identity may pull a repository (the catalog shows only those) */
  canPull(name: string): boolean;
}

/** The error body's detail, shaped like distribution's (its auth.Access records). */
function accessDetail(scopes: ResourceScope[]): unknown {
  return scopes.flatMap((s) => s.actions.map((a) => ({ Type: s.type, Class: '', Name: s.name, Action: a })));
}

/** Authentication and access rules together: the one check before a request is dispatched. */
export class Gate {
  constructor(readonly auth: Authenticator | undefined, readonly policy: AccessPolicy) {}

  private unauthorized(res: ServerResponse, scopes: ResourceScope[], error?: 'invalid_token' | 'insufficient_scope', message = 'authentication required'): RegistryError {
    res.setHeader('WWW-Authenticate', this.auth!.challenge(scopes, error));
    return new RegistryError('UNAUTHORIZED', message, accessDetail(scopes));
  }

  /** Throws UNAUTHORIZED (401 with a challenge) or DENIED (403); else who the client is. */
  async check(req: IncomingMessage, res: ServerResponse, need: Need, repos: RepositoryIndex): Promise<Grant> {
    const scopes = scopesFor(need);
    let identity: string | undefined;
    if (this.auth) {
      const cred = await this.auth.identify(req);
      if (cred.kind === 'invalid') {
        throw this.unauthorized(res, scopes, this.auth.scheme === 'bearer' ? 'invalid_token' : undefined, `authentication required (${cred.reason})`);
      }
      if (cred.kind === 'anonymous') {
        // anonymous pulls, when enabled; /v2/ always answers 401 so clients learn the realm
        const anonymousOk = this.auth.anonymousPull && (need.kind === 'catalog' || (need.kind === 'repo' && need.action === 'pull'));
        if (!anonymousOk) throw this.unauthorized(res, scopes);
      } else {
        if (cred.grants && !grantsCover(cred.grants, scopes)) {
          // distribution answers a token without the needed scope with 401 + insufficient_scope
          throw this.unauthorized(res, scopes, 'insufficient_scope', 'authentication required: the token does not grant ' + scopes.map((s) => `${s.type}:${s.name}:${s.actions.join(',')}`).join(' '));
        }
        identity = cred.name;
      }
    }
    const canPull = (name: string) => this.policy.allows(identity, repositoryNames(repos, name), 'pull');
    if (need.kind === 'repo') {
      const ok = this.policy.allows(identity, repositoryNames(repos, need.name), need.action)
        && (!need.from || need.from === need.name || canPull(need.from));
      if (!ok) {
        if (identity === undefined && this.auth) throw this.unauthorized(res, scopes);
        throw new RegistryError('DENIED', 'requested access to the resource is denied', accessDetail(scopes));
      }
    }
    return { identity, canPull };
  }
}
