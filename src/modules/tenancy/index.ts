import type { InvalidationBus } from '../../platform/cache/invalidation-bus.ts';
import type { Database, TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import type { Authenticator } from '../../platform/http/auth.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { Audit } from '../audit/index.ts';
import type { Identity, NewSession, RequestMeta, User } from '../identity/index.ts';
import { accessRoutes } from './tenancy.access.routes.ts';
import { createAuthenticator } from './tenancy.authenticator.ts';
import { createMembershipCache } from './tenancy.membership-cache.ts';
import { registerTenancyJobs } from './tenancy.jobs.ts';
import { createTenancyRepo, type Membership, type Organization } from './tenancy.repo.ts';
import { tenancyRoutes } from './tenancy.routes.ts';
import { createTenancyUseCases } from './use-cases/index.ts';
import { provisionMembers } from './use-cases/provision-members.ts';
import { registerTenancyDataRights } from './use-cases/data-rights.ts';
import { revokeKeysOnDisable } from './use-cases/revoke-keys.ts';
import type { Member } from './use-cases/manage-members.ts';
import type { SignupInput } from './use-cases/sign-up.ts';
import type { MemberLimit } from './use-cases/deps.ts';

export { ALL_PERMISSIONS, PERMISSIONS, permissionsOf, ROLE_PERMISSIONS, ROLES, type Permission, type Role } from './tenancy.roles.ts';
export {
  INVITATION_CREATED,
  MEMBER_JOINED,
  MEMBER_REMOVED,
  MEMBER_ROLE_CHANGED,
  MEMBERSHIP_EVENTS,
  ORG_CREATED,
  USER_SIGNED_UP,
  type InvitationCreatedPayload,
  type MemberJoinedPayload,
  type MemberRemovedPayload,
  type MemberRoleChangedPayload,
  type MembershipVia,
  type OrgCreatedPayload,
  type UserSignedUpPayload,
} from './tenancy.events.ts';
export { API_KEY_PREFIX } from './use-cases/issue-api-keys.ts';
export { INVITATION_PREFIX } from './use-cases/invite-members.ts';
export type { Membership, Organization } from './tenancy.repo.ts';
export type { Member } from './use-cases/manage-members.ts';
export type { SignupInput } from './use-cases/sign-up.ts';
export { noMemberLimit, type MemberLimit } from './use-cases/deps.ts';

export interface TenancyDeps {
  db: Database;
  audit: Audit;
  identity: Identity;
  /** platform.events: tenancy.invitation_created commits with its invitation. */
  events: EventPublisher;
  /** platform.invalidations: role changes and removals reach every instance's membership cache. */
  invalidations: InvalidationBus;
  /** Longest a cached role is used (CACHE_L1_TTL_MS): the bound when an invalidation is lost. */
  accessCacheMaxAgeMs: number;
  /** billing's member limit (`billing.limitCheck(orgId, 'members')`), or `noMemberLimit`. */
  memberLimit: MemberLimit;
}

/** Organizations (the tenants), memberships and roles, invitations, API keys, and the Authenticator. */
export interface Tenancy extends ModuleSurface {
  /** Tenancy's Authenticator for the kernel's authorization hook (sessions via identity + API keys → org access). */
  readonly authenticator: Authenticator;
  /**
   * User + first org + owner membership + first session in ONE transaction: tenancy opens it and passes
   * it to identity's facade (`identity.createUser(trx, …)`, `identity.startSession(trx, …)`).
   */
  signup(input: SignupInput, meta: RequestMeta): Promise<{ user: User; organization: Organization; session: NewSession }>;
  getOrg(orgId: string): Promise<Organization>;
  /** 404 TENANCY.MEMBER_NOT_FOUND when the user is not a member of the org. */
  getMember(orgId: string, userId: string): Promise<Member>;
  /** One page of the org's members (oldest first), e.g. for an integration's backfill. */
  listMembers(orgId: string, q: { cursor?: string; limit: number }): Promise<{ data: Member[]; nextCursor: string | null }>;
  /**
   * The roles of those users who are members, read in the caller's transaction, which must be in the org's
   * tenant context (a job's: the embedded database's one connection is held by it).
   */
  rolesIn(trx: TxHandle, orgId: string, userIds: string[]): Promise<Map<string, string>>;
  /** The user's role in the org, or null (not a member / no such org). */
  roleOf(orgId: string, userId: string): Promise<string | null>;
  membershipsOf(userId: string): Promise<Membership[]>;
  /** How many members the org has (billing's seats). */
  countMembers(orgId: string): Promise<number>;
  createOrg(userId: string, name: string, ctx: ActorContext): Promise<Organization>;
  /**
   * Membership set by an IdP (SSO just-in-time) or a directory (SCIM), in the caller's org transaction: adds
   * the user with `role`, or with `syncRole` moves an existing non-owner member to it. Audited.
   */
  provisionMember(trx: TxHandle, orgId: string, userId: string, role: string, opts: { syncRole: boolean; via: 'sso' | 'directory' }, ctx: ActorContext): Promise<{ role: string; outcome: 'added' | 'changed' | 'unchanged' }>;
  /** Directory sync: removes the member and revokes their API keys in the org, in the caller's transaction (409 for the last owner). */
  deprovisionMember(trx: TxHandle, orgId: string, userId: string, ctx: ActorContext): Promise<boolean>;
  /** After the provisioning transaction commits: drops the cached role on every instance. */
  invalidateMember(orgId: string, userId: string): Promise<void>;
}

export function createTenancy(deps: TenancyDeps): Tenancy {
  const repo = createTenancyRepo(deps.db);
  const memberships = createMembershipCache({ invalidations: deps.invalidations, maxAgeMs: deps.accessCacheMaxAgeMs });
  const useCases = createTenancyUseCases({ repo, audit: deps.audit, identity: deps.identity, events: deps.events, memberships, memberLimit: deps.memberLimit });
  // A disabled user's API keys die with the disabling transaction, in every org.
  deps.identity.onDisabled(revokeKeysOnDisable({ repo, audit: deps.audit }));
  // Data rights: the export section, the erasure guard, and the memberships' erasure (identity.user_erased).
  const registerDataRightsJobs = registerTenancyDataRights({ repo, audit: deps.audit, identity: deps.identity });
  const provisioning = provisionMembers({ repo, audit: deps.audit, memberships, events: deps.events });
  return {
    name: 'tenancy',
    ...provisioning,
    authenticator: createAuthenticator({ identity: deps.identity, roleOf: useCases.roleOf, memberships, apiKeys: useCases.apiKeys }),
    signup: useCases.signup,
    getOrg: useCases.getOrg,
    getMember: useCases.getMember,
    listMembers: useCases.listMembers,
    roleOf: useCases.roleOf,
    rolesIn: (trx, _orgId, userIds) => repo.rolesOf(repo.join(trx), userIds),
    membershipsOf: useCases.membershipsOf,
    countMembers: repo.countMembers,
    createOrg: useCases.createOrg,
    routes: [
      { name: 'tenancy', prefix: '/v1', plugin: asPlugin(tenancyRoutes({ tenancy: useCases, identity: deps.identity })) },
      { name: 'tenancy-access', prefix: '/v1', plugin: asPlugin(accessRoutes(useCases)) },
    ],
    registerJobs: (jobs) => {
      registerTenancyJobs(jobs);
      registerDataRightsJobs(jobs);
    },
  };
}
