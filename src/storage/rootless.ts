// Rootless stores, as containers/storage's pkg/unshare sees them. A user who is not root keeps
// a store (~/.local/share/containers/storage) whose files belong to their subordinate IDs
// (/etc/subuid): readable and writable as the image's users only inside a user namespace that
// maps them, as podman's does (0 = the user, 1... = the subordinate range). bin/csreg enters
// such a namespace; podman, buildah and bin/csreg mark it in the environment.

/** the variable podman, buildah and bin/csreg set inside the user namespace they made */
const USERNS_CONFIGURED = '_CONTAINERS_USERNS_CONFIGURED';

/** The user's own ID outside any such namespace (for /run/user/UID and $UID in storage.conf). */
export function rootlessUid(env: NodeJS.ProcessEnv = process.env): number {
  const u = Number(env._CONTAINERS_ROOTLESS_UID);
  return env._CONTAINERS_ROOTLESS_UID && Number.isInteger(u) ? u : (process.geteuid?.() ?? 0);
}

/** Rootless: not root, or root only inside such a namespace (then the rootless defaults apply). */
export function isRootless(env: NodeJS.ProcessEnv = process.env): boolean {
  return rootlessUid(env) !== 0 || !!env[USERNS_CONFIGURED];
}

/**
 * Not root and not in such a namespace: files of the image's other users (a 0600 file owned by
 * its uid 1000, on disk 100999) cannot be read, nor written with their owners.
 */
export function outsideUserNamespace(env: NodeJS.ProcessEnv = process.env): boolean {
  return (process.geteuid?.() ?? 0) !== 0 && !env[USERNS_CONFIGURED];
}
