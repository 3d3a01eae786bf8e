import { permissionsOf } from '../../tenancy/index.ts';
import type { DirectoryTx } from '../directory.repo.ts';
import type { DirectoryDeps, ScimCaller } from './deps.ts';

/** The role a directory user gets when none of their groups is mapped. */
export const DEFAULT_ROLE = 'member';

/** The mapped role with the most permissions among the user's groups (ties by name), else DEFAULT_ROLE. */
export function roleForGroups(groups: string[], mappings: Array<{ group: string; role: string }>): string {
  const byGroup = new Map(mappings.map((m) => [m.group.toLowerCase(), m.role]));
  const roles = groups.map((g) => byGroup.get(g.toLowerCase())).filter((r): r is string => r !== undefined);
  if (roles.length === 0) return DEFAULT_ROLE;
  return roles.sort((a, b) => permissionsOf(b).size - permissionsOf(a).size || a.localeCompare(b))[0]!;
}

/**
 * Brings memberships in line with the directory inside the SCIM transaction, and does what must follow
 * the commit: cached roles dropped on every instance (tenancy), and the sessions of every deprovisioned
 * user revoked and invalidated on every instance (identity).
 */
export function createMemberSync({ repo, tenancy, identity }: Pick<DirectoryDeps, 'repo' | 'tenancy' | 'identity'>) {
  return (caller: ScimCaller) => {
    const touched = new Set<string>();
    const deprovisioned = new Set<string>();
    return {
      /** An active user gets the role their groups map to; an inactive one loses the membership (and API keys). */
      async sync(trx: DirectoryTx, u: { id: string; userId: string; active: boolean }): Promise<void> {
        if (!u.active) {
          await tenancy.deprovisionMember(trx, caller.orgId, u.userId, caller.ctx);
          touched.add(u.userId);
          return;
        }
        const role = roleForGroups(await repo.groupNamesOf(trx, u.id), await repo.groupRoles(trx));
        if ((await tenancy.provisionMember(trx, caller.orgId, u.userId, role, { syncRole: true, via: 'directory' }, caller.ctx)).outcome !== 'unchanged') touched.add(u.userId);
      },
      /** The user was deactivated or deleted in this transaction: their sessions end after commit. */
      deprovisioned(userId: string): void {
        deprovisioned.add(userId);
      },
      async afterCommit(): Promise<void> {
        for (const userId of touched) await tenancy.invalidateMember(caller.orgId, userId);
        for (const userId of deprovisioned) await identity.revokeAllSessions(userId, caller.ctx);
      },
    };
  };
}

export type MemberSync = ReturnType<ReturnType<typeof createMemberSync>>;
