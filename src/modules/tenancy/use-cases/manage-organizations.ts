import type { ActorContext } from '../../../platform/http/actor.ts';
import { AppError } from '../../../platform/http/errors.ts';
import { newId } from '../../../platform/ids.ts';
import { MEMBER_JOINED, ORG_CREATED, type MemberJoinedPayload, type OrgCreatedPayload } from '../tenancy.events.ts';
import type { Membership, Organization, TenancyTx } from '../tenancy.repo.ts';
import type { UseCaseDeps } from './deps.ts';

/** Creates an org with `ownerId` as its owner, and audits both, in the caller's transaction (orgId's context). */
export async function insertOrgWithOwner(
  deps: Pick<UseCaseDeps, 'repo' | 'audit' | 'events'>,
  trx: TenancyTx,
  orgId: string,
  name: string,
  ownerId: string,
  ctx: ActorContext,
  signup = false,
): Promise<Organization> {
  const { repo, audit, events } = deps;
  const org = await repo.insertOrg(trx, { id: orgId, name: name.trim(), createdBy: ownerId });
  await repo.insertMembership(trx, { orgId, id: newId(), userId: ownerId, role: 'owner' });
  await audit.record(trx, { orgId, action: 'org.created', target: { type: 'organization', id: orgId }, changes: { name: { to: org.name } }, context: ctx });
  await audit.record(trx, { orgId, action: 'member.added', target: { type: 'user', id: ownerId }, changes: { role: { to: 'owner' } }, context: ctx });
  await events.add<OrgCreatedPayload>(trx, { name: ORG_CREATED, tenantId: orgId, payload: { orgId, name: org.name, createdBy: ownerId, signup } });
  await events.add<MemberJoinedPayload>(trx, { name: MEMBER_JOINED, tenantId: orgId, payload: { userId: ownerId, role: 'owner', via: signup ? 'signup' : 'org_created', actorId: ownerId } });
  return org;
}

export function manageOrganizations(deps: UseCaseDeps) {
  const { repo, audit } = deps;
  return {
    async createOrg(userId: string, name: string, ctx: ActorContext): Promise<Organization> {
      const orgId = newId();
      return repo.withTenant(orgId, (trx) => insertOrgWithOwner(deps, trx, orgId, name, userId, ctx));
    },

    async getOrg(orgId: string): Promise<Organization> {
      const org = await repo.withTenant(orgId, (trx) => repo.orgById(trx, orgId));
      if (!org) throw new AppError('ORG.NOT_FOUND', 404, 'Organization not found');
      return org;
    },

    async renameOrg(orgId: string, name: string, ctx: ActorContext): Promise<Organization> {
      return repo.withTenant(orgId, async (trx) => {
        const before = await repo.lockOrgName(trx, orgId);
        const org = await repo.renameOrg(trx, orgId, name.trim());
        await audit.record(trx, { orgId, action: 'org.updated', target: { type: 'organization', id: orgId }, changes: { name: { from: before, to: org.name } }, context: ctx });
        return org;
      });
    },

    /** A user's memberships in every org (GET /v1/me). */
    membershipsOf: (userId: string): Promise<Membership[]> => repo.membershipsOf(userId),
  };
}
