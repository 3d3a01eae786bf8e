import type { EventPublisher } from '../../../platform/outbox/publisher.ts';
import type { Audit } from '../../audit/index.ts';
import type { Identity } from '../../identity/index.ts';
import type { MembershipCache } from '../tenancy.membership-cache.ts';
import type { TenancyRepo } from '../tenancy.repo.ts';

/** What every tenancy use case is given (built once in index.ts). */
export interface UseCaseDeps {
  repo: TenancyRepo;
  audit: Audit;
  identity: Identity;
  events: EventPublisher;
  /** The Authenticator's cache of members' roles: invalidated after a role change or removal commits. */
  memberships: Pick<MembershipCache, 'invalidate'>;
  /**
   * Billing's member limit: asked before the joining transaction (answered from billing's cache), the check
   * runs on the count taken under the org's lock; it throws billing's 402 when one more would not fit.
   */
  memberLimit: MemberLimit;
}

export type MemberLimit = (orgId: string) => Promise<(current: number) => void>;

/** No member limit (compositions without billing). */
export const noMemberLimit: MemberLimit = async () => () => {};
