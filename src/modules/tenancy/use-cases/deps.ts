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
}
